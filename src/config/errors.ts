/** A config problem that stops the server; main prints it and exits 2. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

/** Where a value sits in the config: keys and list indexes from the top. */
export type ConfigPath = (string | number)[];

/**
 * Problems found after the schema check (by the code that resolves sections), each with the
 * path of the value it is about, so that the message can give its line in the file.
 */
export class Problems {
  readonly found: { path: ConfigPath; text: string }[] = [];

  add(path: ConfigPath, text: string): void {
    this.found.push({ path, text });
  }

  get empty(): boolean {
    return this.found.length === 0;
  }
}
