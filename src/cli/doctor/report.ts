/** What the doctor found: one line per check, in the order the clients make the requests. */

export type CheckStatus = "pass" | "fail" | "warn" | "skip";

export interface CheckResult {
  /** Stable name, for `--json` consumers and tests (`well-known`, `versions.msc4143`, …). */
  id: string;
  /** The short name shown in the table. */
  title: string;
  status: CheckStatus;
  /** What was asked: the request, without any secret. */
  asked: string;
  /** What came back, or why the check was skipped. */
  got: string;
  /** For a failure or a warning: the most likely cause … */
  cause?: string;
  /** … and how to fix it. */
  fix?: string;
}

export interface DoctorReport {
  server: string;
  baseUrl?: string;
  /** Whether credentials were given, and so whether the doctor changed anything on the server. */
  mutates: boolean;
  /** The signal (SIGINT, SIGTERM) that stopped the checks early; the clean-up ran all the same. */
  interrupted?: string;
  notes: string[];
  checks: CheckResult[];
  summary: Record<CheckStatus, number>;
}

/** Collects the checks as they finish, and tells the progress display what runs now. */
export class Recorder {
  readonly checks: CheckResult[] = [];
  constructor(private readonly onProgress: (what: string | undefined) => void = () => {}) {}

  add(check: CheckResult): CheckResult {
    this.onProgress(undefined);
    this.checks.push(check);
    return check;
  }

  progress(what: string): void {
    this.onProgress(what);
  }

  pass(id: string, title: string, asked: string, got: string): CheckResult {
    return this.add({ id, title, status: "pass", asked, got });
  }

  fail(id: string, title: string, asked: string, got: string, cause: string, fix: string): CheckResult {
    return this.add({ id, title, status: "fail", asked, got, cause, fix });
  }

  warn(id: string, title: string, asked: string, got: string, cause: string, fix?: string): CheckResult {
    return this.add({ id, title, status: "warn", asked, got, cause, ...(fix ? { fix } : {}) });
  }

  skip(id: string, title: string, asked: string, why: string): CheckResult {
    return this.add({ id, title, status: "skip", asked, got: why });
  }

  failed(id: string): boolean {
    return this.checks.some((c) => c.id === id && c.status === "fail");
  }
}

export function summarise(checks: CheckResult[]): Record<CheckStatus, number> {
  const summary: Record<CheckStatus, number> = { pass: 0, fail: 0, warn: 0, skip: 0 };
  for (const c of checks) summary[c.status]++;
  return summary;
}

/** A secret as the report may show it: its first few characters. */
export function redact(secret: string | undefined): string {
  if (!secret) return "(none)";
  return `${secret.slice(0, 6)}…`;
}
