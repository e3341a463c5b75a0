/** Messages between the benchmark driver (bench/run.ts) and the servers it forks. */

/** A child tells the driver where it listens. */
export interface ReadyMessage {
  type: "ready";
  url: string;
}

/** The driver asks a child to close its server and exit. */
export interface StopMessage {
  type: "stop";
}

/** The driver asks a child how much CPU time it has used so far. */
export interface UsageRequest {
  type: "usage";
}

/** A child's answer: process.cpuUsage(), microseconds. */
export interface UsageMessage {
  type: "usage";
  user: number;
  system: number;
}

/** One response the baseline replays byte for byte. */
export interface CannedResponse {
  /** What the request must match: see `routeKey`. */
  key: string;
  status: number;
  statusMessage: string;
  /** Header names and values, alternating, in wire order and case. */
  headers: string[];
  bodyBase64: string;
}

/** The driver tells the baseline what to answer. */
export interface ConfigureMessage {
  type: "configure";
  /** So the baseline's `Keep-Alive: timeout=` header matches Switchboard's. */
  keepAliveTimeoutMs: number;
  responses: CannedResponse[];
  /**
   * When set, a PUT that matches no canned response has its body read, then is answered 200 with
   * this JSON (bench/sends.ts: the trivial server a send is compared with).
   */
  putReply?: string;
}

export type ToChild = StopMessage | ConfigureMessage | UsageRequest;

/** What every benchmark child does besides serving: report CPU use, stop when told or orphaned. */
export function handleCommonMessages(stop: () => void): void {
  process.on("message", (m: unknown) => {
    if (isMessage<UsageRequest>(m, "usage")) {
      const { user, system } = process.cpuUsage();
      process.send!({ type: "usage", user, system } satisfies UsageMessage);
    } else if (isMessage<StopMessage>(m, "stop")) {
      stop();
    }
  });
  process.on("disconnect", stop);
}

/** Requests are told apart by method, URL and Authorization header. */
export function routeKey(method: string, url: string, authorization: string | undefined): string {
  return `${method} ${url} ${authorization ?? ""}`;
}

export function isMessage<T extends { type: string }>(m: unknown, type: T["type"]): m is T {
  return typeof m === "object" && m !== null && (m as { type?: unknown }).type === type;
}
