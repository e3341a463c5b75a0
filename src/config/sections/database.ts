import { Type } from "typebox";
import { secretString } from "../types.js";

export const databaseFields = {
  database: Type.Object(
    {
      name: Type.Union([Type.Literal("sqlite3"), Type.Literal("psycopg2"), Type.Literal("postgres")], {
        description: "`sqlite3`, or `psycopg2`/`postgres` for PostgreSQL (not supported yet).",
        allowed: "one of sqlite3, psycopg2, postgres",
      }),
      args: Type.Object(
        {
          database: Type.Optional(Type.String({ minLength: 1, description: "SQLite: path of the database file, relative to the config file.", docDefault: "`data/homeserver.db`" })),
          user: Type.Optional(Type.String({ description: "PostgreSQL user." })),
          password: Type.Optional(secretString({ description: "PostgreSQL password." })),
          host: Type.Optional(Type.String({ description: "PostgreSQL host or socket directory." })),
          port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: "PostgreSQL port." })),
          dbname: Type.Optional(Type.String({ description: "PostgreSQL database name." })),
          cp_min: Type.Optional(Type.Integer({ minimum: 0, description: "Accepted for Synapse compatibility." })),
          cp_max: Type.Optional(Type.Integer({ minimum: 1, description: "Accepted for Synapse compatibility." })),
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
