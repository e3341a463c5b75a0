/**
 * Ports for servers whose address must be known before they start (a server name, a public URL,
 * a config file for another program). Such a port can only be probed, then listened on later.
 *
 * Why not the kernel's `listen(0)`: it hands out ports from the ephemeral range, the same range
 * every outgoing connection on the machine takes its local port from. Between the probe and the
 * real listen, any connection (to PostgreSQL, to a fake SFU, Chromium's fetches) may take that
 * port, and the listen fails with EADDRINUSE, as a CI run once showed. Ports below the ephemeral
 * range are never taken by outgoing connections, so only another probe could race for one, and
 * picking at random among thousands makes that negligible.
 */
import { readFileSync } from "node:fs";
import net from "node:net";

/** Linux's default when /proc says nothing (other systems: a safe guess). */
const DEFAULT_EPHEMERAL_LOW = 32768;
/** Below this, ports belong to well-known services more often than not. */
const LOWEST = 10000;
const ATTEMPTS = 200;

function ephemeralLow(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : DEFAULT_EPHEMERAL_LOW;
  } catch {
    return DEFAULT_EPHEMERAL_LOW;
  }
}

/** Whether `port` on `host` can be listened on now (TCP). */
export function portIsFree(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, host, () => probe.close(() => resolve(true)));
  });
}

function kernelPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** A port on `host` that was free a moment ago, outside the ephemeral range where there is room. */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const high = ephemeralLow() - 1;
  if (high - LOWEST >= 1000) {
    for (let i = 0; i < ATTEMPTS; i++) {
      const port = LOWEST + Math.floor(Math.random() * (high - LOWEST + 1));
      if (await portIsFree(port, host)) return port;
    }
  }
  return kernelPort(host);
}
