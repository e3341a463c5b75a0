/**
 * How outgoing connections find their addresses: one seam for everything that calls other
 * servers (federation, the LiveKit service's OpenID and delayed-event calls), so tests can map
 * made-up names to local servers. The default asks the system's DNS.
 */

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

export interface Dialer {
  /** SRV records for `name`; an empty list when there are none. */
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** Where a TCP connection meant for `host:port` really goes. */
  resolveAddress(host: string, port: number): Promise<{ address: string; port: number }>;
}
