/**
 * The floor under push delivery, for bench/push.ts: what the HTTP request alone costs a client,
 * with nothing else. A child process posts the body it is given (a push Switchboard sent) to the
 * gateway in bursts of BARE_BURST requests at once over keep-alive connections (as a room's
 * pushes go out), and prints its own CPU time per request as JSON.
 *
 * Environment: BARE_URL, BARE_BODY, BARE_BURST, BARE_BURSTS (measured), BARE_WARM (unmeasured).
 */
import http from "node:http";

const url = new URL(process.env.BARE_URL!);
const body = Buffer.from(process.env.BARE_BODY!);
const burst = Number(process.env.BARE_BURST);
const bursts = Number(process.env.BARE_BURSTS);
const warm = Number(process.env.BARE_WARM);
// As Switchboard's pusher pool: up to 64 connections to one gateway.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64, scheduling: "lifo" });

function post(): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent, headers: { "content-type": "application/json", "content-length": body.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          JSON.parse(Buffer.concat(chunks).toString("utf8"));
          if (res.statusCode === 200) resolve();
          else reject(new Error(`the gateway answered ${res.statusCode}`));
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const run = async (n: number) => {
  for (let i = 0; i < n; i++) await Promise.all(Array.from({ length: burst }, post));
};
await run(warm);
const c0 = process.cpuUsage();
await run(bursts);
const c = process.cpuUsage(c0);
agent.destroy();
process.stdout.write(JSON.stringify({ requests: bursts * burst, cpu_us_per_request: (c.user + c.system) / (bursts * burst) }));
