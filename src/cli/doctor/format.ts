/** The report as a table for people (colours only on a terminal) or as one JSON object. */
import type { CheckStatus, DoctorReport } from "./report.js";

const SYMBOL: Record<CheckStatus, string> = { pass: "✔", fail: "✘", warn: "⚠", skip: "-" };
const COLOUR: Record<CheckStatus, string> = { pass: "32", fail: "31", warn: "33", skip: "2" };

export function formatJson(report: DoctorReport): string {
  return JSON.stringify(report, null, 2);
}

export function formatTable(report: DoctorReport, colour: boolean): string {
  const paint = (status: CheckStatus, text: string) => (colour ? `\x1b[${COLOUR[status]}m${text}\x1b[0m` : text);
  const width = Math.min(28, Math.max(...report.checks.map((c) => c.title.length), 8));
  const lines = [`switchboard doctor ${report.server}${report.baseUrl && report.baseUrl !== report.server ? ` (base URL ${report.baseUrl})` : ""}`, ...report.notes, ""];
  for (const c of report.checks) {
    const got = c.status === "skip" ? `skipped: ${c.got}` : c.got;
    lines.push(`${paint(c.status, SYMBOL[c.status])} ${c.title.padEnd(width)}  ${c.asked} → ${got}`);
    if (c.cause) lines.push(`  ${" ".repeat(width)}  cause: ${c.cause}`);
    if (c.fix) lines.push(`  ${" ".repeat(width)}  fix:   ${c.fix}`);
  }
  const s = report.summary;
  lines.push("", `${s.pass} passed, ${paint(s.fail ? "fail" : "pass", `${s.fail} failed`)}, ${s.warn} warning${s.warn === 1 ? "" : "s"}, ${s.skip} skipped`);
  return lines.join("\n");
}

/** A progress line on a terminal's stderr, rewritten in place and cleared when a check is done. */
export function progressLine(stream: NodeJS.WriteStream): (what: string | undefined) => void {
  if (!stream.isTTY) return () => {};
  let shown = false;
  return (what) => {
    if (shown) stream.write("\r\x1b[K");
    shown = Boolean(what);
    if (what) stream.write(`… ${what}`);
  };
}
