/** Writes a commented starting config with fresh secrets. */
import { randomBytes } from "node:crypto";
import path from "node:path";

export interface GenerateOptions {
  serverName: string;
  /** Folder for the database and signing key, as it should appear in the file. */
  dataDir: string;
  /** Open registration; sensible only on a server that only this machine can reach. */
  openRegistration: boolean;
  port?: number;
}

const q = (s: string) => JSON.stringify(s);

export function generateConfig(opts: GenerateOptions): string {
  const port = opts.port ?? 8008;
  const local = opts.serverName === "localhost" || opts.serverName.startsWith("localhost:");
  // A server name with a port is reached there directly: nobody looks for its .well-known.
  const baseUrl = local ? `http://localhost:${port}/` : `https://${opts.serverName}/`;
  const dataPath = (file: string) => q(path.posix.join(opts.dataDir.split(path.sep).join("/"), file));
  const keyName = `${opts.serverName.replace(/[^A-Za-z0-9.-]/g, "_")}.signing.key`;
  return `# Switchboard configuration, generated ${new Date().toISOString()}.
# Every key is described in docs/configuration.md; names follow Synapse's.
# Relative paths are resolved from the folder this file is in.

# The domain in user IDs (@alice:${opts.serverName}). It cannot change once users exist.
server_name: ${q(opts.serverName)}

# The URL clients use to reach this server (your reverse proxy's URL, if you have one).
public_baseurl: ${q(baseUrl)}

listeners:
  - port: ${port}
    # Loopback only. Use ["::"] or ["0.0.0.0"] to accept connections from other machines.
    bind_addresses: ["127.0.0.1"]
    type: http
    # Set to true behind a reverse proxy, so client IPs come from X-Forwarded-For.
    x_forwarded: false
    resources:
      - names: [client, federation]

database:
  name: sqlite3
  args:
    database: ${dataPath("homeserver.db")}

signing_key_path: ${dataPath(keyName)}

# Uploaded files and their thumbnails (docs/media.md). Back this folder up with the database.
media_store_path: ${dataPath("media_store")}
max_upload_size: 50M
${
  local || opts.serverName.includes(":")
    ? ""
    : `
# Answer /.well-known/matrix/server with public_baseurl's host, so that the LiveKit JWT service
# (which checks OpenID tokens over federation) and other servers find this one on port 443.
# Proxy https://${opts.serverName}/.well-known/matrix/ to this server for it to be seen.
serve_server_wellknown: true
`
}
# Registration. "switchboard register-user" and the shared secret work either way.
enable_registration: ${opts.openRegistration}
enable_registration_without_verification: ${opts.openRegistration}
registration_requires_token: false
allow_guest_access: false
# Lets tools like register_new_matrix_user create accounts. Keep it secret.
registration_shared_secret: ${q(randomBytes(32).toString("base64url"))}

# MatrixRTC: where clients find the LiveKit JWT service for calls.
matrix_rtc:
  transports: []
  # transports:
  #   - type: livekit
  #     livekit_service_url: "https://livekit-jwt.example.com"

# LiveKit for group calls: Switchboard issues the LiveKit tokens itself (no lk-jwt-service)
# and advertises itself as the transport. Use the SFU's own key and secret.
# livekit:
#   url: "wss://livekit.example.com"
#   api_key: "APIkey"
#   api_secret_path: "livekit.secret"

# TURN, for 1:1 calls through NAT (coturn: use-auth-secret + static-auth-secret).
# turn_uris: ["turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:3478?transport=tcp"]
# turn_shared_secret: "${randomBytes(24).toString("base64url")}"
# turn_user_lifetime: 1h

log_level: info
`;
}
