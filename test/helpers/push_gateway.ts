/** A recording push gateway (Push Gateway API) on loopback, for the pusher suites. */
import http from "node:http";

/** The loopback gateway is a private address: tests allow it as an operator would. */
export const ALLOW_LOOPBACK = { ip_range_whitelist: ["127.0.0.1/32"] };

export interface Notification {
  event_id: string;
  room_id: string;
  type?: string;
  sender?: string;
  sender_display_name?: string;
  room_name?: string;
  prio: string;
  content?: Record<string, unknown>;
  counts: { unread: number };
  devices: { app_id: string; pushkey: string; pushkey_ts: number; data: Record<string, unknown>; tweaks?: Record<string, unknown> }[];
  [key: string]: unknown;
}

export type Answer = { status: number; body?: unknown };

/** Serves `server` on a loopback port: the push gateway URL on it, and how to stop it (open connections too). */
export async function serveGateway(server: http.Server): Promise<{ url: string; stop: () => Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  return {
    url: `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}/_matrix/push/v1/notify`,
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A push gateway that records every request and answers as `answer` says (200 `{rejected: []}` by default). */
export class Gateway {
  readonly received: Notification[] = [];
  /** What was answered with a 2xx, in order. */
  readonly accepted: Notification[] = [];
  answer: (n: Notification, index: number) => Answer | Promise<Answer> = () => ({ status: 200, body: { rejected: [] } });
  readonly #server = http.createServer((req, res) => {
    let text = "";
    req.on("data", (c: Buffer) => (text += c.toString()));
    req.on("end", () => {
      const n = (JSON.parse(text) as { notification: Notification }).notification;
      const index = this.received.push(n) - 1;
      void Promise.resolve(this.answer(n, index)).then((a) => {
        if (a.status >= 200 && a.status < 300) this.accepted.push(n);
        res.writeHead(a.status, { "content-type": "application/json" }).end(JSON.stringify(a.body ?? {}));
      });
    });
  });

  url = "";
  stop: () => Promise<void> = async () => undefined;

  async start(): Promise<this> {
    ({ url: this.url, stop: this.stop } = await serveGateway(this.#server));
    return this;
  }

  eventIds(list: Notification[] = this.accepted): string[] {
    return list.map((n) => n.event_id);
  }
}

/** A valid `/pushers/set` body for an http pusher to `url`, with `over` replacing fields. */
export function pusherBody(url: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    kind: "http",
    app_id: "org.example.app.android",
    pushkey: "key-1",
    app_display_name: "Example",
    device_display_name: "Phone",
    lang: "en",
    data: { url },
    ...over,
  };
}
