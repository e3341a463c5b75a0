/**
 * Schema validation for routes. Bodies are validated strictly (no coercion:
 * `"password": 123` is wrong, not "123"); path and query strings are coerced
 * to the declared scalar types, since they arrive as text.
 */
import { Ajv, type ErrorObject } from "ajv";
import type { FastifySchemaValidationError } from "fastify";
import { Errors, type MatrixError } from "../errors.js";

const strict = new Ajv({ allErrors: false, useDefaults: true, coerceTypes: false, strict: false });
const coercing = new Ajv({ allErrors: false, useDefaults: true, coerceTypes: "array", strict: false });

/** What Fastify calls: answers true or false, and leaves the reasons in `errors`. */
interface Validate {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}

/**
 * Each route's validator is compiled when the route is first called, not at start: most routes
 * of a server are never called in a given process's life, and each compiled validator costs
 * memory (generated code and its feedback) for as long as the process lives.
 */
export function validatorCompiler({ schema, httpPart }: { schema: object; httpPart?: string }): Validate {
  const ajv = httpPart === "body" ? strict : coercing;
  let compiled: Validate | undefined;
  const validate: Validate = (data) => {
    compiled ??= ajv.compile(schema);
    const ok = compiled(data);
    validate.errors = compiled.errors;
    return ok;
  };
  return validate;
}

function field(err: ErrorObject | FastifySchemaValidationError): string {
  const path = err.instancePath.replace(/^\//, "").replace(/\//g, ".");
  if (err.keyword === "required") {
    const missing = (err.params as { missingProperty?: string }).missingProperty ?? "";
    return path ? `${path}.${missing}` : missing;
  }
  return path;
}

/** Maps a schema failure to the errcode the spec uses for it. */
export function validationError(
  errors: (ErrorObject | FastifySchemaValidationError)[],
  context: string,
  body: unknown,
): MatrixError {
  const first = errors[0]!;
  if (context === "body") {
    // An empty body is no JSON at all; `null` is JSON, just not an object.
    if (body === undefined) return Errors.notJson("Content not JSON.");
    if (body === null || typeof body !== "object" || Array.isArray(body)) return Errors.badJson("Content must be a JSON object.");
    if (first.keyword === "required") return Errors.missingParam(`Missing parameter: ${field(first)}`);
    return Errors.badJson(`Invalid value for '${field(first)}': ${first.message ?? "invalid"}`);
  }
  if (first.keyword === "required") return Errors.missingParam(`Missing ${context} parameter: ${field(first)}`);
  const name = field(first) || context;
  return Errors.invalidParam(`Invalid ${context} parameter '${name}': ${first.message ?? "invalid"}`);
}
