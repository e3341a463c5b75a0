/**
 * Schema building blocks shared by the config sections. Every leaf carries a
 * `description` (rendered into docs/configuration.md) and, where the JSON type
 * alone does not say it, an `allowed` text used in validation errors.
 */
import { Type, type TSchema } from "../json_schema.js";

export interface DocMeta {
  description: string;
  /** Human text for "what is allowed", used in errors and docs. */
  allowed?: string;
  /** The default as the docs should show it, when the schema default is computed later. */
  docDefault?: string;
}

export const DURATION_PATTERN = "^[0-9]+(ms|s|m|h|d|w|y)?$";
const DURATION_ALLOWED = "a duration: milliseconds as an integer, or a string like 500ms, 30s, 5m, 24h, 7d";
export const SIZE_PATTERN = "^[0-9]+[KMG]?$";
const SIZE_ALLOWED = "a size: bytes as an integer, or a string like 64K, 10M, 1G";

export function duration(meta: DocMeta & { default?: string | number }) {
  return Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: DURATION_PATTERN })], {
    ...meta,
    allowed: meta.allowed ?? DURATION_ALLOWED,
    "x-kind": "duration",
  });
}

export function size(meta: DocMeta & { default?: string | number }) {
  return Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: SIZE_PATTERN })], {
    ...meta,
    allowed: meta.allowed ?? SIZE_ALLOWED,
    "x-kind": "size",
  });
}

/** A string that must never be logged or served; the loader wraps it in {@link Secret}. */
export function secretString(meta: DocMeta & { pattern?: string }) {
  return Type.String({ minLength: 1, ...meta, "x-secret": true });
}

export function ratelimit(meta: DocMeta & { default: { per_second: number; burst_count: number } }) {
  return Type.Object(
    {
      per_second: Type.Number({ minimum: 0, description: "Actions regained per second." }),
      burst_count: Type.Number({ minimum: 1, description: "Actions allowed in a burst." }),
    },
    { additionalProperties: false, ...meta },
  );
}

export type SchemaWithMeta = TSchema & Partial<DocMeta> & { default?: unknown };

/**
 * Wraps a secret value so that it prints as "[secret]" in logs, JSON and
 * util.inspect. Only `reveal()` gives the value, which makes each use greppable.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return "[secret]";
  }
  toJSON(): string {
    return "[secret]";
  }
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "[secret]";
  }
}

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  y: 365 * 86_400_000,
};

/** Synapse's duration forms: a plain number is milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === "number") return value;
  const match = /^([0-9]+)(ms|s|m|h|d|w|y)?$/.exec(value);
  if (!match) throw new Error(`not a duration: ${value}`);
  return Number(match[1]) * DURATION_UNITS[match[2] ?? "ms"]!;
}

export function parseSize(value: string | number): number {
  if (typeof value === "number") return value;
  const match = /^([0-9]+)([KMG])?$/.exec(value);
  if (!match) throw new Error(`not a size: ${value}`);
  const unit = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2] as "K" | "M" | "G"] ?? 1;
  return Number(match[1]) * unit;
}
