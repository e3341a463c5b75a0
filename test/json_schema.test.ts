/**
 * The schema builder: the JSON Schema each constructor gives (what Ajv validates, and what the
 * routes and the config declared with TypeBox before), and the static types it gives them,
 * checked by the compiler (`@ts-expect-error` fails the typecheck when the line compiles).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Type, type Static } from "../src/json_schema.js";

describe("JSON Schema builder", () => {
  test("each constructor gives plain JSON Schema, options merged in", () => {
    assert.deepEqual(Type.String({ minLength: 1 }), { type: "string", minLength: 1 });
    assert.deepEqual(Type.Integer({ minimum: 0, description: "d" }), { type: "integer", minimum: 0, description: "d" });
    assert.deepEqual(Type.Number(), { type: "number" });
    assert.deepEqual(Type.Boolean({ default: true }), { type: "boolean", default: true });
    assert.deepEqual(Type.Null(), { type: "null" });
    assert.deepEqual(Type.Unknown(), {});
    assert.deepEqual(Type.Literal("x"), { type: "string", const: "x" });
    assert.deepEqual(Type.Literal(3), { type: "number", const: 3 });
    assert.deepEqual(Type.Literal(false), { type: "boolean", const: false });
    assert.deepEqual(Type.Array(Type.String(), { minItems: 1 }), { type: "array", items: { type: "string" }, minItems: 1 });
    assert.deepEqual(Type.Union([Type.Literal("a"), Type.Null()]), { anyOf: [{ type: "string", const: "a" }, { type: "null" }] });
    assert.deepEqual(Type.Record(Type.String(), Type.Boolean()), { type: "object", patternProperties: { "^.*$": { type: "boolean" } } });
    assert.deepEqual(Type.Record(Type.String({ pattern: "^ed25519:" }), Type.String()), {
      type: "object",
      patternProperties: { "^ed25519:": { type: "string" } },
    });
  });

  test("an object requires what is not optional, in declaration order, and leaves `required` out when nothing is", () => {
    const shared = Type.String();
    const schema = Type.Object({ a: shared, b: Type.Optional(shared), c: Type.Integer() }, { additionalProperties: false });
    assert.deepEqual(schema, {
      type: "object",
      required: ["a", "c"],
      properties: { a: { type: "string" }, b: { type: "string" }, c: { type: "integer" } },
      additionalProperties: false,
    });
    // Optional marks a copy: the shared schema stays required where it is used as is.
    assert.deepEqual(Type.Object({ x: shared }).required, ["x"]);
    assert.equal("required" in Type.Object({ x: Type.Optional(Type.Null()) }), false);
  });

  test("the static types follow the schema", () => {
    const BodySchema = Type.Object({
      name: Type.String(),
      count: Type.Optional(Type.Integer()),
      kind: Type.Union([Type.Literal("a"), Type.Literal("b"), Type.Null()]),
      tags: Type.Record(Type.String(), Type.Array(Type.Boolean())),
      extra: Type.Unknown(),
    });
    type Body = Static<typeof BodySchema>;
    assert.deepEqual(BodySchema.required, ["name", "kind", "tags", "extra"]);
    const ok: Body = { name: "n", kind: null, tags: { t: [true] }, extra: 1 };
    const full: Body = { name: "n", count: 2, kind: "b", tags: {}, extra: undefined };
    // @ts-expect-error `name` is required
    const noName: Body = { kind: "a", tags: {}, extra: 1 };
    // @ts-expect-error `kind` is one of the literals
    const badKind: Body = { name: "n", kind: "c", tags: {}, extra: 1 };
    // @ts-expect-error `count` is a number
    const badCount: Body = { name: "n", count: "2", kind: null, tags: {}, extra: 1 };
    assert.ok([ok, full, noName, badKind, badCount].length === 5);
  });
});
