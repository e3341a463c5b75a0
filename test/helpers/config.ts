/** Config files that must be refused. */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/errors.js";
import { parseConfig } from "../../src/config/load.js";

/** The problems a config file is refused with; fails the test if the file is accepted. */
export function refusedProblems(yaml: string, file?: string): string[] {
  try {
    parseConfig(yaml, file);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail("the config was accepted");
}
