/** Config files and objects that must be refused. */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/errors.js";
import { parseConfig } from "../../src/config/load.js";

/** The problems `load` refuses a config with; fails the test if it is accepted. */
export function refusedWith(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail("the config was accepted");
}

/** The problems a config file is refused with. */
export const refusedProblems = (yaml: string, file?: string): string[] => refusedWith(() => parseConfig(yaml, file));
