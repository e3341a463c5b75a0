import type { ServerResponse } from "node:http";

/** The headers the Client-Server spec asks for on every response. */
export const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
  "access-control-allow-headers": "X-Requested-With, Content-Type, Authorization, Date",
} as const;

export function applyCors(res: ServerResponse): void {
  for (const name in CORS_HEADERS) res.setHeader(name, CORS_HEADERS[name as keyof typeof CORS_HEADERS]);
}
