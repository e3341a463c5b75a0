/** What the checks share: the options, the HTTP client, and what earlier checks learned. */
import type { Dialer } from "../../services/outbound/dialer.js";
import type { HttpClient } from "./http.js";
import type { Recorder } from "./report.js";

export interface DoctorOptions {
  /** SERVER as given: a server name (`example.com`, `example.com:8448`) or a base URL. */
  server: string;
  user?: string;
  password?: string;
  accessToken?: string;
  /** The local config file, to compare what is served with what is configured. */
  configFile?: string;
  /** Plain http allowed (for SERVER as a name, and wherever a URL says http://). */
  insecureHttp: boolean;
  /** PEM text of extra CAs to trust (`--ca-file`). */
  ca?: string;
  /** Per request; 10 s by default. */
  timeoutMs?: number;
  /** The throwaway delayed event's delay; 2 s by default. */
  delayMs?: number;
  /** Where names resolve to (SRV records and addresses); the system's DNS unless given. Not a CLI option: tests map made-up names to loopback. */
  dialer?: Dialer;
  /** Aborted on Ctrl-C (SIGINT) or SIGTERM: the checks stop, the clean-up still runs. Its reason names the signal. */
  signal?: AbortSignal;
}

export interface Session {
  accessToken: string;
  userId: string;
  deviceId?: string;
  /** True when the doctor logged in itself, so it logs that device out again at the end. */
  ownDevice: boolean;
}

/** An RTC transport as served; only `type` is known to be a string. */
export type Transport = Record<string, unknown> & { type: string };

export interface DoctorContext {
  opts: DoctorOptions;
  http: HttpClient;
  rec: Recorder;
  /** SERVER when it is a name; learned from the login otherwise. */
  serverName?: string;
  baseUrl?: string;
  /** `org.matrix.msc4143.rtc_foci` from `.well-known`, when it is there. */
  wellKnownFoci?: Transport[];
  /** `unstable_features` from /versions. */
  features: Record<string, boolean>;
  versionsReachable: boolean;
  session?: Session;
  /** The room the doctor creates for the token, delayed-event and sticky checks. */
  roomId?: string;
  /** The transports the clients would use: from `rtc/transports`, or the `.well-known` fallback. */
  transports?: Transport[];
  /** Delayed events the doctor scheduled that have not fired yet: the clean-up cancels them. */
  pendingDelays: string[];
  /** Set on Ctrl-C/SIGTERM: long waits stop early. */
  interrupted?: boolean;
}

/** `base` joined with `path` (which starts with `/`), without doubling the slash. */
export function join(base: string, path: string): string {
  return base.replace(/\/+$/, "") + path;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
