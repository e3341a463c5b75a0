/**
 * The config's check is generated at build time (scripts/build_config_check.ts) so that a server
 * does not run Ajv's code generator at start. These tests pin that the build's check is the one
 * used, that it answers exactly as a check compiled at run time does, and that a schema the file
 * was not built from is never checked by it.
 */
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { configCheck, PREBUILT_FILE } from "../src/config/compiled_check.js";
import { ConfigSchema } from "../src/config/schema.js";
import type { SchemaWithMeta } from "../src/config/types.js";

const prebuilt = createRequire(import.meta.url)(PREBUILT_FILE) as unknown;

/** The same schema under another fingerprint: a `$comment` changes no answer, only the hash. */
const sameSchemaCompiledNow = { ...structuredClone(ConfigSchema), $comment: "compiled at run time" } as SchemaWithMeta;

function answer(schema: SchemaWithMeta, raw: unknown) {
  const value = structuredClone(raw);
  const check = configCheck(schema);
  const ok = check(value);
  const errors = (check.errors ?? []).map((e) => ({ at: e.instancePath, keyword: e.keyword, params: e.params, schemaPath: e.schemaPath }));
  return { ok, value, errors: ok ? [] : errors };
}

/** Name, config, and whether it passes the check. */
const CONFIGS: [string, unknown, boolean][] = [
  ["the least a config needs", { server_name: "example.org" }, true],
  ["a listener and a database", { server_name: "example.org", listeners: [{ port: 8448, bind_addresses: ["::"] }], database: { name: "sqlite3", args: { database: "x.db" } } }, true],
  ["no server_name", {}, false],
  ["wrong types and an unknown key", { server_name: 7, enable_registration: "yes", rc_message: { per_second: -1 }, no_such_key: true }, false],
  ["a wrong value deep in a list", { server_name: "example.org", listeners: [{ port: "eighty" }, { port: 99999 }] }, false],
];

describe("the config's compiled check", () => {
  test("the build's generated check is the one a server uses", () => {
    assert.equal(typeof prebuilt, "function", `${PREBUILT_FILE} should be written by \`npm run build\``);
    assert.equal(configCheck(ConfigSchema), prebuilt);
  });

  test("a schema the file was not built from is compiled now, not checked by the file", () => {
    assert.notEqual(configCheck(sameSchemaCompiledNow), prebuilt);
  });

  for (const [name, raw, valid] of CONFIGS) {
    test(`answers as a check compiled at run time: ${name}`, () => {
      const built = answer(ConfigSchema, raw);
      const compiled = answer(sameSchemaCompiledNow, raw);
      assert.deepEqual(built, compiled);
      assert.equal(built.ok, valid);
      if (!valid) assert.ok(built.errors.length > 0, "a failed check should say why");
    });
  }
});
