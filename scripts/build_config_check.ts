/**
 * Build step (`npm run build`, after tsc): generates the config's compiled check into `dist`, so
 * a server loads it instead of running Ajv's code generator at start (src/config/compiled_check.ts).
 */
import { PREBUILT_FILE, writePrebuiltCheck } from "../src/config/compiled_check.js";
import { ConfigSchema } from "../src/config/schema.js";

await writePrebuiltCheck(ConfigSchema);
console.error(`wrote ${PREBUILT_FILE}`);
