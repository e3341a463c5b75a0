import { Type } from "../../json_schema.js";
import { secretString } from "../types.js";

export const databaseFields = {
  database: Type.Object(
    {
      name: Type.Union([Type.Literal("sqlite3"), Type.Literal("psycopg2"), Type.Literal("postgres")], {
        description:
          "`sqlite3` (the default: one file, nothing to run beside Switchboard), or `psycopg2`/`postgres` for PostgreSQL, as Synapse names it. See docs/postgresql.md.",
        allowed: "one of sqlite3, psycopg2, postgres",
      }),
      args: Type.Object(
        {
          database: Type.Optional(
            Type.String({
              minLength: 1,
              description: "SQLite: path of the database file, relative to the config file. PostgreSQL: the database name.",
              docDefault: "`data/homeserver.db` (SQLite)",
            }),
          ),
          dsn: Type.Optional(
            secretString({
              pattern: "^postgres(ql)?://",
              description:
                "PostgreSQL: a connection URL (`postgres://user:password@host:port/database?sslmode=require`). The other keys override its parts.",
              allowed: "a postgres:// or postgresql:// URL",
            }),
          ),
          user: Type.Optional(Type.String({ minLength: 1, description: "PostgreSQL user." })),
          password: Type.Optional(secretString({ description: "PostgreSQL password." })),
          host: Type.Optional(Type.String({ minLength: 1, description: "PostgreSQL host name, address, or Unix socket folder (starting with `/`)." })),
          port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: "PostgreSQL port.", docDefault: "`5432`" })),
          dbname: Type.Optional(Type.String({ minLength: 1, description: "PostgreSQL database name (libpq's spelling of `database`)." })),
          sslmode: Type.Optional(
            Type.Union(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].map((m) => Type.Literal(m)), {
              description:
                "PostgreSQL TLS, as libpq's `sslmode`: `disable` never uses TLS; `allow` tries without TLS first, `prefer` with TLS first, each falling back to the other; `require` encrypts without checking the certificate; `verify-ca` checks the certificate's chain, `verify-full` its chain and host name (against `sslrootcert`, or Node's built-in CAs plus `NODE_EXTRA_CA_CERTS`). A `sslmode` in `dsn` means the same.",
              allowed: "one of disable, allow, prefer, require, verify-ca, verify-full",
              docDefault: "`prefer`",
            }),
          ),
          sslrootcert: Type.Optional(
            Type.String({
              minLength: 1,
              description: "PostgreSQL: a PEM file of the CAs that `verify-ca`/`verify-full` trust, relative to the config file (libpq's `sslrootcert`).",
            }),
          ),
          cp_min: Type.Optional(
            Type.Integer({ minimum: 0, description: "PostgreSQL: connections the pool keeps open when idle.", docDefault: "`1`" }),
          ),
          cp_max: Type.Optional(
            Type.Integer({ minimum: 1, description: "PostgreSQL: most connections the pool opens at once.", docDefault: "`10`" }),
          ),
          cache_size_mib: Type.Optional(
            Type.Number({
              minimum: 0.5,
              maximum: 65536,
              description:
                "SQLite: the page cache, in MiB, that the server keeps of the database file. Pages outside it are read back from the operating system's file cache, which holds the file as memory allows. A larger cache can help a large, read-heavy database; it is memory the server holds once it has filled.",
              allowed: "a number of MiB from 0.5 to 65536",
              docDefault: "`4`",
            }),
          ),
          synchronous: Type.Optional(
            Type.Union([Type.Literal("normal"), Type.Literal("full")], {
              description:
                "SQLite: `normal` (default) makes every answered write survive a crash or `kill -9` of the server; `full` also survives power loss or an OS crash, at the cost of an fsync per write (several times slower).",
              allowed: "normal or full",
              docDefault: "`normal`",
            }),
          ),
        },
        { additionalProperties: false, default: {}, description: "Connection arguments." },
      ),
    },
    {
      additionalProperties: false,
      default: { name: "sqlite3", args: { database: "data/homeserver.db" } },
      description: "Where state is kept.",
    },
  ),
};
