/**
 * Renders the configuration reference (the generated part of
 * docs/configuration.md) from the schema, so the docs cannot drift from what
 * the loader accepts. Pure and deterministic: same schema, same text.
 */
import { ConfigSchema, SECTIONS } from "./schema.js";
import type { SchemaWithMeta } from "./types.js";
import { describeAllowed } from "./validate.js";

type Node = Record<string, unknown>;

/** A default that comes from an enclosing mapping's default rather than the key's own. */
interface Inherited {
  from: string;
  value: unknown;
}

interface Entry {
  path: string;
  schema: Node;
  required: boolean;
  inherited?: Inherited;
}

const node = (s: unknown): Node => (s && typeof s === "object" ? (s as Node) : {});
const isPlainObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/** Inline code that survives backticks inside the text. */
function code(text: string): string {
  const runs = text.match(/`+/g) ?? [];
  const fence = "`".repeat(Math.max(0, ...runs.map((r) => r.length)) + 1);
  const pad = text.startsWith("`") || text.endsWith("`") ? " " : "";
  return `${fence}${pad}${text}${pad}${fence}`;
}

const json = (value: unknown): string => code(JSON.stringify(value));

function properties(s: Node): Record<string, Node> | undefined {
  return isPlainObject(s.properties) ? (s.properties as Record<string, Node>) : undefined;
}

function requiredKeys(s: Node): string[] {
  return Array.isArray(s.required) ? (s.required as string[]) : [];
}

/** Lists every key under `props`, depth first, in schema order. */
function collect(props: Record<string, Node>, required: string[], prefix: string, inherited: Inherited | undefined, out: Entry[]): void {
  for (const [key, raw] of Object.entries(props)) {
    const schema = node(raw);
    const path = prefix ? `${prefix}.${key}` : key;
    const fromParent =
      inherited && isPlainObject(inherited.value) && key in inherited.value
        ? { from: inherited.from, value: inherited.value[key] }
        : undefined;
    out.push({ path, schema, required: required.includes(key), inherited: fromParent });

    const children = properties(schema);
    if (schema.type === "object" && children) {
      // The outermost default wins: it is what a file that leaves the whole mapping out gets.
      const next = fromParent ?? (schema.default !== undefined ? { from: path, value: schema.default } : undefined);
      collect(children, requiredKeys(schema), path, next, out);
    }
    const items = node(schema.items);
    const itemProps = properties(items);
    if (schema.type === "array" && items.type === "object" && itemProps) {
      // An array's default is an example list, not a default for each item.
      collect(itemProps, requiredKeys(items), `${path}[]`, undefined, out);
    }
  }
}

function plural(s: Node): string {
  const t = typeName(s);
  if (t === "mapping") return "mappings";
  if (t.startsWith("list of")) return "lists";
  if (t === "string (secret)") return "secret strings";
  return t.endsWith("s") ? t : `${t}s`;
}

function typeName(s: Node): string {
  // A key the schema leaves open (checked later, by type) says what it is for the reader.
  if (typeof s["x-doc-type"] === "string") return s["x-doc-type"];
  if (s["x-kind"] === "duration") return "duration";
  if (s["x-kind"] === "size") return "size";
  if (s["x-secret"] === true) return "string (secret)";
  if ("const" in s) return typeof s.const === "boolean" ? "boolean" : typeof s.const === "number" ? "number" : "string";
  if (Array.isArray(s.anyOf)) {
    const names = [...new Set((s.anyOf as unknown[]).map((b) => typeName(node(b))))];
    return names.join(" or ");
  }
  switch (s.type) {
    case "boolean":
    case "integer":
    case "number":
    case "string":
      return s.type;
    case "array":
      return `list of ${plural(node(s.items))}`;
    case "object":
      return "mapping";
    default:
      return "any value";
  }
}

/** What the schema allows beyond the bare type, or undefined when the type says it all. */
function allowedText(s: Node): string | undefined {
  if (typeof s.allowed === "string") return s.allowed;
  if (s.type === "array") {
    const parts: string[] = [];
    if (typeof s.minItems === "number" && s.minItems > 0) parts.push(`at least ${s.minItems} item${s.minItems === 1 ? "" : "s"}`);
    const each = allowedText(node(s.items));
    if (each) parts.push(`each item must be ${each}`);
    return parts.length ? parts.join("; ") : undefined;
  }
  if (s.type === "object") {
    const props = properties(s);
    if (!props && isPlainObject(s.patternProperties)) return "any keys and values";
    if (props && s.additionalProperties === true) {
      const keys = requiredKeys(s).map(code).join(", ");
      return keys ? `a mapping with ${keys}, and further keys` : "a mapping with any keys";
    }
    return undefined;
  }
  const constrained =
    "const" in s ||
    Array.isArray(s.anyOf) ||
    typeof s.minimum === "number" ||
    typeof s.maximum === "number" ||
    typeof s.pattern === "string";
  return constrained ? describeAllowed(s as SchemaWithMeta) : undefined;
}

function defaultText(e: Entry): string {
  const s = e.schema;
  if (typeof s.docDefault === "string") return s.docDefault;
  if (s.default !== undefined) {
    const props = properties(s);
    const everyChildDefaults =
      props && Object.values(props).every((c) => node(c).default !== undefined || typeof node(c).docDefault === "string");
    if (isPlainObject(s.default) && Object.keys(s.default).length === 0 && everyChildDefaults) {
      return "each key below takes its own default";
    }
    return json(s.default);
  }
  if (e.inherited) {
    const where = code(e.inherited.from);
    return e.required
      ? `${json(e.inherited.value)} when ${where} is left out; required when ${where} is written`
      : `${json(e.inherited.value)} (part of the default of ${where})`;
  }
  return e.required ? "required" : "unset";
}

function renderEntry(e: Entry): string {
  const s = e.schema;
  const lines = [`#### ${code(e.path)}`, ""];
  const description = typeof s.description === "string" ? s.description.trim() : "";
  lines.push(description || "_No description in the schema yet._", "");
  lines.push(`- Type: ${typeName(s)}`);
  lines.push(`- Default: ${defaultText(e)}`);
  const allowed = allowedText(s);
  if (allowed) lines.push(`- Allowed: ${allowed}`);
  return lines.join("\n") + "\n";
}

/** The Markdown reference for every config key, grouped by section. */
export function renderConfigDocs(): string {
  const root = node(ConfigSchema);
  const rootProps = properties(root) ?? {};
  const rootRequired = requiredKeys(root);
  const groups: { title: string; keys: string[] }[] = SECTIONS.map((section) => ({
    title: section.title,
    keys: Object.keys(section.fields),
  }));
  const grouped = new Set(groups.flatMap((g) => g.keys));
  const rest = Object.keys(rootProps).filter((k) => !grouped.has(k));
  if (rest.length) groups.push({ title: "Other", keys: rest });

  const out: string[] = [
    "<!-- Generated from the schema by renderConfigDocs() in src/config/docs.ts. Do not edit by hand: run `UPDATE_DOCS=1 npm test`. -->",
    "",
  ];
  for (const group of groups) {
    const props: Record<string, Node> = {};
    for (const key of group.keys) if (rootProps[key]) props[key] = rootProps[key];
    const entries: Entry[] = [];
    collect(props, rootRequired, "", undefined, entries);
    if (!entries.length) continue;
    out.push(`### ${group.title}`, "");
    for (const e of entries) out.push(renderEntry(e));
  }
  return out.join("\n").replace(/\n+$/, "\n");
}
