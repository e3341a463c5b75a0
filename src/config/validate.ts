/**
 * Turns schema errors into messages an operator can act on: the key's dotted
 * path, its line in the file, the offending value and what is allowed.
 */
import type { ErrorObject } from "ajv";
import { isMap, isScalar, isSeq, LineCounter, type Document } from "yaml";
import { configCheck } from "./compiled_check.js";
import { dottedPath, inFileOrder, type ConfigPath } from "./errors.js";
import type { SchemaWithMeta } from "./types.js";

function splitPointer(pointer: string): string[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** Finds the sub-schema that describes the value at `segments`. */
export function schemaAt(schema: SchemaWithMeta, segments: string[]): SchemaWithMeta | undefined {
  let current: SchemaWithMeta | undefined = schema;
  for (const seg of segments) {
    if (!current) return undefined;
    current = childSchema(current, seg);
  }
  return current;
}

function childSchema(schema: SchemaWithMeta, seg: string): SchemaWithMeta | undefined {
  const s = schema as Record<string, unknown>;
  const props = s.properties as Record<string, SchemaWithMeta> | undefined;
  if (props && props[seg]) return props[seg];
  if (s.items && /^[0-9]+$/.test(seg)) return s.items as SchemaWithMeta;
  if (Array.isArray(s.anyOf)) {
    for (const branch of s.anyOf as SchemaWithMeta[]) {
      const found = childSchema(branch, seg);
      if (found) return found;
    }
  }
  if (s.patternProperties) return Object.values(s.patternProperties as Record<string, SchemaWithMeta>)[0];
  return undefined;
}

export function describeAllowed(schema: SchemaWithMeta | undefined): string {
  if (!schema) return "nothing (remove it)";
  const s = schema as Record<string, unknown>;
  if (typeof s.allowed === "string") return s.allowed;
  if ("const" in s) return `exactly ${JSON.stringify(s.const)}`;
  if (Array.isArray(s.anyOf)) {
    const branches = s.anyOf as Record<string, unknown>[];
    if (branches.every((b) => "const" in b)) return `one of ${branches.map((b) => JSON.stringify(b.const)).join(", ")}`;
    return branches.map((b) => describeAllowed(b as SchemaWithMeta)).join(", or ");
  }
  const range = (noun: string) => {
    const min = s.minimum as number | undefined;
    const max = s.maximum as number | undefined;
    if (min !== undefined && max !== undefined) return `${noun} from ${min} to ${max}`;
    if (min !== undefined) return `${noun} of at least ${min}`;
    return noun;
  };
  switch (s.type) {
    case "integer":
      return range("an integer");
    case "number":
      return range("a number");
    case "boolean":
      return "true or false";
    case "string":
      return s.pattern ? `a string matching ${String(s.pattern)}` : s.minLength ? "a non-empty string" : "a string";
    case "array":
      return s.minItems ? `a list with at least ${String(s.minItems)} item(s)` : "a list";
    case "object":
      return "a mapping of keys to values";
    default:
      return "a valid value";
  }
}

/**
 * The line of the key or list item at `path`, or of its nearest ancestor that the file writes;
 * undefined when the file writes none of it (a default).
 */
export function lineInFile(doc: Document, counter: LineCounter, path: ConfigPath): number | undefined {
  // Walked by hand rather than with `getIn`: a key written `123:` is a number in the document
  // and `"123":` a string, while the path has a string either way.
  let node: unknown = doc.contents;
  let line: number | undefined;
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair || !isScalar(pair.key) || !pair.key.range) break;
      // The key's own line: a mapping value starts on the line of its first child.
      line = counter.linePos(pair.key.range[0]).line;
      node = pair.value;
    } else if (isSeq(node) && /^[0-9]+$/.test(String(segment))) {
      const item = node.items[Number(segment)] as { range?: [number, number, number] } | undefined;
      if (!item?.range) break;
      line = counter.linePos(item.range[0]).line;
      node = item;
    } else {
      break;
    }
  }
  return line;
}

function valueAt(root: unknown, segments: string[]): unknown {
  let v: unknown = root;
  for (const s of segments) v = (v as Record<string, unknown> | undefined)?.[s];
  return v;
}

function shown(value: unknown): string {
  const text = JSON.stringify(value);
  return text && text.length > 80 ? text.slice(0, 77) + "..." : String(text);
}

/**
 * Checks `value` against `schema`: the value with the schema's defaults filled in (a copy; the
 * argument is left as it was), and every way it fails the schema.
 */
export function validateWithDefaults(schema: SchemaWithMeta, value: unknown): { value: unknown; errors: ErrorObject[] } {
  const validate = configCheck(schema);
  const copy = structuredClone(value);
  return validate(copy) ? { value: copy, errors: [] } : { value: copy, errors: validate.errors ?? [] };
}

/** Returns one message per problem, in file order; empty when the value is valid. */
export function schemaProblems(
  schema: SchemaWithMeta,
  value: unknown,
  errors: ErrorObject[],
  doc: Document | undefined,
  counter: LineCounter | undefined,
): string[] {
  const problems: { line: number | undefined; text: string }[] = [];
  const seen = new Set<string>();
  const at = (segments: string[], key?: string) =>
    doc && counter ? lineInFile(doc, counter, key === undefined ? segments : [...segments, key]) : undefined;
  const push = (line: number | undefined, text: string) => {
    if (seen.has(text)) return;
    seen.add(text);
    problems.push({ line, text });
  };

  const handledPaths = new Set<string>();
  for (const err of errors) {
    const segments = splitPointer(err.instancePath);
    // Ajv reports each unknown or missing key as an error of its own.
    if (err.keyword === "additionalProperties") {
      const key = String((err.params as { additionalProperty: string }).additionalProperty);
      const allowed = Object.keys(((schemaAt(schema, segments) as Record<string, unknown>)?.properties ?? {}) as object);
      push(
        at(segments, key),
        `unknown key \`${dottedPath([...segments, key])}\`` + (allowed.length ? `; the keys allowed here are: ${allowed.join(", ")}` : ""),
      );
      continue;
    }
    if (err.keyword === "required") {
      const key = String((err.params as { missingProperty: string }).missingProperty);
      push(at(segments), `missing required key \`${dottedPath([...segments, key])}\`: ${describeAllowed(schemaAt(schema, [...segments, key]))}`);
      continue;
    }
    // Union branches report once per branch; report the value once, with the union's own description.
    const pathKey = segments.join("/");
    if (handledPaths.has(pathKey)) continue;
    if ([...handledPaths].some((p) => p.startsWith(pathKey + "/"))) continue;
    handledPaths.add(pathKey);
    const here = schemaAt(schema, segments) as Record<string, unknown> | undefined;
    // A secret's value is never repeated back, even a wrong one: it may be the real password.
    const what = here?.["x-secret"] === true ? "set to a value" : shown(valueAt(value, segments));
    push(at(segments), `\`${dottedPath(segments)}\` is ${what}, which is not allowed: expected ${describeAllowed(here as SchemaWithMeta | undefined)}`);
  }
  return inFileOrder(problems);
}
