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
