/** How each benchmark script ends: its exit status is what `main` returns, or 1 if it throws. */
export function runMain(main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}

/**
 * Prints a benchmark's report: the JSON document on stdout, then its warnings and problems
 * through `log` (stderr). Returns the exit status: 1 when there is any problem.
 */
export function printReport(report: object, warnings: string[], problems: string[], log: (msg: string) => void): number {
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  for (const w of warnings) log(`warning: ${w}`);
  for (const p of problems) log(`problem: ${p}`);
  return problems.length === 0 ? 0 : 1;
}

/** A positive integer from the environment (a benchmark's size), or `fallback`. */
export function envCount(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

/**
 * Clean-up steps (servers, clusters, folders), run last first by `run`, or on SIGINT/SIGTERM,
 * so that an interrupted benchmark leaves nothing behind.
 */
export class CleanUps {
  readonly #steps: (() => Promise<unknown>)[] = [];

  constructor(private readonly log: (msg: string) => void) {
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void this.run().finally(() => process.exit(130)));
  }

  push(step: () => Promise<unknown>): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.#steps.splice(0).reverse()) {
      await step().catch((err: unknown) => this.log(`clean-up: ${err instanceof Error ? err.message : String(err)}`));
    }
  }
}
