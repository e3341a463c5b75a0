/**
 * The request bodies of the lk-jwt-service contract, decoded the way that
 * service's Go decoder does, because clients were written against it:
 *
 * - a body that is not JSON, a field of the wrong type, or a field the request
 *   does not know (at any depth) is 400 `M_NOT_JSON`;
 * - `null`, for the whole body or a field, means "not given";
 * - field names match exactly or, failing that, case-insensitively;
 * - a field that is missing or empty after decoding is 400 `M_BAD_JSON`.
 *
 * Switchboard's generic body validation answers some of these with other
 * errcodes, so these routes do not use it.
 */
import { Errors, MatrixError } from "../../errors.js";

type Kind = "string" | "int" | Shape;
interface Shape {
  [field: string]: Kind;
}

const OPENID_TOKEN: Shape = { access_token: "string", token_type: "string", matrix_server_name: "string", expires_in: "int" };
const MEMBER: Shape = { id: "string", claimed_user_id: "string", claimed_device_id: "string" };
const DELAY: Shape = { delay_id: "string", delay_timeout: "int", delay_cs_api_url: "string" };

const GET_TOKEN: Shape = { room_id: "string", slot_id: "string", openid_token: OPENID_TOKEN, member: MEMBER, ...DELAY };
const LEGACY: Shape = { room: "string", openid_token: OPENID_TOKEN, device_id: "string", ...DELAY };
const DELEGATE: Shape = GET_TOKEN;

export interface OpenIdTokenFields {
  access_token: string;
  token_type: string;
  matrix_server_name: string;
  expires_in: number;
}

export interface MemberFields {
  id: string;
  claimed_user_id: string;
  claimed_device_id: string;
}

interface DelayFields {
  delay_id: string;
  delay_timeout: number;
  /** Accepted and ignored, as in lk-jwt-service: the CS API is found by discovery instead. */
  delay_cs_api_url: string;
}

export interface GetTokenRequest extends DelayFields {
  room_id: string;
  slot_id: string;
  openid_token: OpenIdTokenFields;
  member: MemberFields;
}

export interface LegacyRequest extends DelayFields {
  room: string;
  openid_token: OpenIdTokenFields;
  device_id: string;
}

export type DelegateRequest = GetTokenRequest;

const notJson = () => Errors.notJson("The request body could not be read as this request");

function zero(kind: Kind): unknown {
  if (kind === "string") return "";
  if (kind === "int") return 0;
  return Object.fromEntries(Object.entries(kind).map(([k, v]) => [k, zero(v)]));
}

/** Finds the field a JSON key fills: an exact match first, then a case-insensitive one. */
function fieldFor(shape: Shape, key: string): string | undefined {
  if (Object.hasOwn(shape, key)) return key;
  const lower = key.toLowerCase();
  return Object.keys(shape).find((f) => f.toLowerCase() === lower);
}

function decodeInto(shape: Shape, value: unknown, target: Record<string, unknown>): void {
  if (value === null) return;
  if (typeof value !== "object" || Array.isArray(value)) throw notJson();
  for (const [key, v] of Object.entries(value)) {
    const field = fieldFor(shape, key);
    if (field === undefined) throw notJson();
    const kind = shape[field]!;
    if (v === null) continue;
    if (kind === "string") {
      if (typeof v !== "string") throw notJson();
      target[field] = v;
    } else if (kind === "int") {
      // Go's int is 64-bit; a fraction or an exponent form is a type error there.
      if (typeof v !== "number" || !Number.isSafeInteger(v)) throw notJson();
      target[field] = v;
    } else {
      decodeInto(kind, v, target[field] as Record<string, unknown>);
    }
  }
}

function decode(body: string | undefined, shape: Shape): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body ?? "");
  } catch {
    throw notJson();
  }
  const out = zero(shape) as Record<string, unknown>;
  decodeInto(shape, value, out);
  return out;
}

const badJson = (msg: string) => new MatrixError(400, "M_BAD_JSON", msg);

function checkOpenId(t: OpenIdTokenFields): void {
  if (t.access_token === "" || t.matrix_server_name === "") {
    throw badJson("`openid_token` needs `access_token` and `matrix_server_name`");
  }
}

/** Both delay fields or neither; the same rule lk-jwt-service applies (a timeout ≤ 0 counts as absent). */
function checkDelayPair(r: DelayFields): void {
  const hasId = r.delay_id !== "";
  const hasTimeout = r.delay_timeout > 0;
  if (hasId !== hasTimeout) throw badJson("`delay_id` and `delay_timeout` go together: send both or neither");
}

function checkRoomAndMember(r: GetTokenRequest): void {
  if (r.room_id === "" || r.slot_id === "") throw badJson("The request needs `room_id` and `slot_id`");
  const m = r.member;
  if (m.id === "" || m.claimed_user_id === "" || m.claimed_device_id === "") {
    throw badJson("`member` needs `id`, `claimed_user_id` and `claimed_device_id`");
  }
  checkOpenId(r.openid_token);
}

export function parseGetToken(body: string | undefined): GetTokenRequest {
  const r = decode(body, GET_TOKEN) as unknown as GetTokenRequest;
  checkRoomAndMember(r);
  checkDelayPair(r);
  return r;
}

export function parseLegacy(body: string | undefined): LegacyRequest {
  const r = decode(body, LEGACY) as unknown as LegacyRequest;
  if (r.room === "") throw badJson("The request needs `room`");
  checkOpenId(r.openid_token);
  checkDelayPair(r);
  return r;
}

export function parseDelegate(body: string | undefined): DelegateRequest {
  const r = decode(body, DELEGATE) as unknown as DelegateRequest;
  checkRoomAndMember(r);
  if (r.delay_id === "" || r.delay_timeout <= 0) throw badJson("The request needs `delay_id` and a positive `delay_timeout`");
  return r;
}
