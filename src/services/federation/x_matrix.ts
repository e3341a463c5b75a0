/**
 * The `X-Matrix` Authorization scheme of the Server-Server API ("Request Authentication"): the
 * origin signs `{method, uri, origin, destination, content?}` with its server key and sends
 * `X-Matrix origin="…",destination="…",key="…",sig="…"`. Pure functions; keys come from callers.
 */
import type { KeyObject } from "node:crypto";
import { signJson, verifyJsonSignature } from "../../events/signing.js";

export interface XMatrixParams {
  origin: string;
  /** Absent in requests from servers older than spec v1.3. */
  destination?: string;
  key: string;
  sig: string;
}

/** What the signature covers. `uri` is the path and query exactly as sent. */
export function requestJson(method: string, uri: string, origin: string, destination: string, content: unknown): Record<string, unknown> {
  const json: Record<string, unknown> = { method, uri, origin, destination };
  if (content !== undefined) json.content = content;
  return json;
}

/** The Authorization header value for a request this server sends. */
export function authorizationHeader(
  signer: { serverName: string; keyId: string; privateKey: KeyObject },
  method: string,
  uri: string,
  destination: string,
  content: unknown,
): string {
  const signed = signJson(requestJson(method, uri, signer.serverName, destination, content), signer.serverName, signer.keyId, signer.privateKey);
  const sig = (signed.signatures as Record<string, Record<string, string>>)[signer.serverName]![signer.keyId]!;
  return `X-Matrix origin="${signer.serverName}",destination="${destination}",key="${signer.keyId}",sig="${sig}"`;
}

/**
 * Parses `X-Matrix k=v,k="v",…`. Values may be quoted (with backslash escapes) or bare tokens, as
 * older servers send them. Undefined when the scheme or a required parameter is missing.
 */
export function parseXMatrix(header: string): XMatrixParams | undefined {
  const m = /^\s*X-Matrix\s+(.*)$/is.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const text = m[1]!;
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /[\s,]/.test(text[i]!)) i++;
    const eq = text.indexOf("=", i);
    if (eq < 0) break;
    const name = text.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    let value = "";
    if (text[i] === '"') {
      i++;
      while (i < text.length && text[i] !== '"') {
        if (text[i] === "\\" && i + 1 < text.length) i++;
        value += text[i];
        i++;
      }
      if (text[i] !== '"') return undefined;
      i++;
    } else {
      const end = text.indexOf(",", i);
      value = (end < 0 ? text.slice(i) : text.slice(i, end)).trim();
      i = end < 0 ? text.length : end;
    }
    if (name && !(name in params)) params[name] = value;
  }
  const { origin, destination, key, sig } = params;
  if (!origin || !key || !sig) return undefined;
  return { origin, destination, key, sig };
}

/** Whether `params.sig` is the origin's valid signature over the request, by `publicKey`. */
export function verifyRequestSignature(params: XMatrixParams, method: string, uri: string, destination: string, content: unknown, publicKey: KeyObject): boolean {
  const json = requestJson(method, uri, params.origin, destination, content);
  json.signatures = { [params.origin]: { [params.key]: params.sig } };
  return verifyJsonSignature(json, params.origin, params.key, publicKey);
}
