/** `GET /_matrix/federation/v1/version`: the server's name and version; unauthenticated, as the spec has it. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { App } from "../../http/server.js";

function packageVersion(): string {
  // dist/src/api/federation/ → the package root; "unknown" rather than failing when run elsewhere.
  try {
    const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "package.json");
    return (JSON.parse(readFileSync(file, "utf8")) as { version?: string }).version ?? "unknown";
  } catch {
    return "unknown";
  }
}

export function registerFederationVersionRoutes(app: App): void {
  const body = { server: { name: "Switchboard", version: packageVersion() } };
  app.get("/_matrix/federation/v1/version", async () => body);
}
