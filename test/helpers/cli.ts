/**
 * Running the real `switchboard` binary in tests: temporary folders, a served instance and its
 * log, generated configs (on PostgreSQL with SWITCHBOARD_TEST_POSTGRES, see helpers/database.ts).
 * Every child, folder and database is cleaned up after the test file.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";
import { databaseYaml, removeTestData, TEST_POSTGRES } from "./database.js";

export const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src/main.js");
export const TIMEOUT = { timeout: 90_000 };

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Serving {
  child: ChildProcess;
  /** The URLs from the "Switchboard is running" log line. */
  listening: string[];
  exited: Promise<Result>;
  stderr(): string;
  stdout(): string;
}

export const children = new Set<ChildProcess>();
const dirs: string[] = [];

after(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const dir of dirs) await removeTestData(dir);
});

export function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-cli-"));
  dirs.push(dir);
  return dir;
}

export function start(args: string[], cwd: string): { child: ChildProcess; exited: Promise<Result>; out: { stdout: string; stderr: string } } {
  // The spawn timeout only stops a process that should have exited but kept serving.
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 });
  children.add(child);
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out.stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out.stderr += d));
  const exited = new Promise<Result>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, ...out }));
  });
  return { child, exited, out };
}

/** Runs a command that is expected to finish on its own. */
export function run(args: string[], cwd: string): Promise<Result> {
  return start(args, cwd).exited;
}

/** Starts `switchboard [args]` and waits for its "Switchboard is running" log line. */
export async function serve(args: string[], cwd: string): Promise<Serving> {
  const { child, exited, out } = start(args, cwd);
  const listening = await new Promise<string[]>((resolve, reject) => {
    let buffer = "";
    child.stdout!.on("data", (d: string) => {
      buffer += d;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let entry: { msg?: string; listening?: string[] } = {};
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          continue;
        }
        if (entry.msg === "Switchboard is running") resolve(entry.listening ?? []);
      }
    });
    exited.then((r) => reject(new Error(`switchboard exited (${r.code}/${r.signal}) before it was ready:\n${r.stderr}`)), reject);
  });
  return { child, listening, exited, stderr: () => out.stderr, stdout: () => out.stdout };
}

async function postJson(url: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export async function getJson(url: string, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export const login = (baseUrl: string, user: string, password: string) =>
  postJson(`${baseUrl}/_matrix/client/v3/login`, { type: "m.login.password", identifier: { type: "m.id.user", user }, password });

/**
 * generate-config into dir/switchboard.yaml with its data under dir/data, listening on `port`;
 * with SWITCHBOARD_TEST_POSTGRES, its `database` block then points at dir's own database.
 */
export async function generated(dir: string, serverName: string, port: number): Promise<string> {
  const file = path.join(dir, "switchboard.yaml");
  const r = await run(["generate-config", "--server-name", serverName, "--output", file, "--data-dir", path.join(dir, "data")], dir);
  assert.equal(r.code, 0, r.stderr);
  let text = readFileSync(file, "utf8");
  assert.match(text, /^ {2}- port: 8008$/m);
  text = text.replace(/^ {2}- port: 8008$/m, `  - port: ${port}`);
  if (TEST_POSTGRES) {
    const sqlite = /^database:\n {2}name: sqlite3\n {2}args:\n {4}database: .*\n/m;
    assert.match(text, sqlite);
    const section = await databaseYaml(dir);
    text = text.replace(sqlite, () => section);
  }
  writeFileSync(file, text);
  return file;
}
