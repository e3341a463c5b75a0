/**
 * The compiled check of a config schema. Ajv compiles a schema by generating JavaScript: for the
 * whole config that is about 200 KB of source and some 70 ms of code generation, paid by every
 * process at every start. So the build generates the check once (`scripts/build_config_check.ts`,
 * through Ajv's standalone code), and a process loads that file instead of compiling. The file
 * names the schema and options it was built from by a hash; a schema that hashes otherwise (a
 * build step skipped, a schema built at run time) is compiled here as before, so a stale file can
 * cost time but never a wrong answer.
 */
import { Ajv, type Options, type ValidateFunction } from "ajv";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { SchemaWithMeta } from "./types.js";

/**
 * Every error, not the first: an operator fixing a file wants every problem in one go. Defaults
 * fill in what the file leaves out, as the schema's `default`s say.
 */
const OPTIONS: Options = { allErrors: true, useDefaults: true, coerceTypes: false, strict: true, strictTypes: false, strictRequired: false };
/** The annotations the config schema carries for its docs and messages: declared, so a misspelt keyword still fails. */
const ANNOTATIONS = ["allowed", "docDefault", "x-doc-type", "x-kind", "x-secret"];

/** Where the build writes the generated check: beside this module in `dist`. */
export const PREBUILT_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), "config_check.generated.cjs");

function newAjv(extra: Options = {}): Ajv {
  const ajv = new Ajv({ ...OPTIONS, ...extra });
  ajv.addVocabulary(ANNOTATIONS);
  return ajv;
}

const fingerprints = new WeakMap<object, string>();

/** Names a schema together with everything else that shapes its generated check. */
function fingerprint(schema: SchemaWithMeta): string {
  let print = fingerprints.get(schema);
  if (print === undefined) {
    print = createHash("sha256").update(JSON.stringify({ OPTIONS, ANNOTATIONS, schema })).digest("hex");
    fingerprints.set(schema, print);
  }
  return print;
}

interface PrebuiltModule {
  (data: unknown): boolean;
  fingerprint?: string;
}

let prebuilt: PrebuiltModule | null | undefined;

function loadPrebuilt(): PrebuiltModule | null {
  if (prebuilt === undefined) {
    try {
      prebuilt = createRequire(import.meta.url)(PREBUILT_FILE) as PrebuiltModule;
    } catch {
      prebuilt = null;
    }
  }
  return prebuilt;
}

/**
 * A process checks its config once, and a compiled check of the whole config is large: held
 * weakly, it is garbage once the config is loaded, yet reused by a process that loads configs often
 * (the tests) for as long as it survives.
 */
const compiled = new WeakMap<object, WeakRef<ValidateFunction>>();

/** The check for `schema`: the build's, when it was built from this very schema, else compiled now. */
export function configCheck(schema: SchemaWithMeta): ValidateFunction {
  const built = loadPrebuilt();
  if (built && built.fingerprint === fingerprint(schema)) return built as unknown as ValidateFunction;
  let validate = compiled.get(schema)?.deref();
  if (!validate) {
    validate = newAjv().compile(schema);
    compiled.set(schema, new WeakRef(validate));
  }
  return validate;
}

/**
 * Writes the standalone check of `schema` to `file` (CommonJS, as Ajv's standalone code requires
 * its runtime helpers). Ajv's standalone generator is loaded here only: a server never needs it.
 */
export async function writePrebuiltCheck(schema: SchemaWithMeta, file: string = PREBUILT_FILE): Promise<void> {
  // A CommonJS module whose exports are the function itself, which also carries itself as `default`.
  const standaloneCode = (await import("ajv/dist/standalone/index.js")).default.default;
  const ajv = newAjv({ code: { source: true } });
  const code = standaloneCode(ajv, ajv.compile(schema));
  writeFileSync(file, `${code}\nmodule.exports.fingerprint = ${JSON.stringify(fingerprint(schema))};\n`);
}
