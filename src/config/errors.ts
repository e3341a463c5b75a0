/** A config problem that stops the server; main prints it and exits 2. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

/** Where a value sits in the config: keys and list indexes from the top. */
export type ConfigPath = (string | number)[];

/** A path as messages show it: `a.b[0].c`, with a key that holds dots quoted (`a["x.y"]`). */
export function dottedPath(segments: ConfigPath): string {
  let out = "";
  for (const s of segments) {
    if (typeof s === "number" || /^[0-9]+$/.test(s)) out += `[${s}]`;
    else if (s.includes(".")) out += `[${JSON.stringify(s)}]`;
    else out += out ? `.${s}` : s;
  }
  return out || "(top level)";
}

/** Problems with their lines (0 when unknown), in file order, each prefixed `line N: ` where known. */
export function inFileOrder(located: { line: number | undefined; text: string }[]): string[] {
  return [...located].sort((a, b) => (a.line ?? 0) - (b.line ?? 0)).map((p) => (p.line ? `line ${p.line}: ${p.text}` : p.text));
}

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
