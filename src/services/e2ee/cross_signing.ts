/**
 * Cross-signing (spec: "Cross-signing"): a user's master key vouches for their self-signing
 * key, which signs their devices, and for their user-signing key, which signs other users'
 * master keys. Clients upload the keys and then signatures; this server checks every signature
 * it stores, and merges the signatures into what `/keys/query` returns.
 */
import { canonicalJson, isRecord } from "../../events/index.js";
import { verifyJsonSignature, verifyKeyFromBase64 } from "../../events/signing.js";
import { Errors, MatrixError } from "../../errors.js";
import type { CrossSignature, CrossSigningKey, CrossSigningKeyType, StoredCrossSigningKey } from "../../storage/e2ee.js";
import type { Storage } from "../../storage/interfaces.js";
import type { Requester } from "../auth.js";
import type { AuthDict } from "../uia.js";
import type { DeviceKeyService, KeysQueryBody } from "./keys.js";

export interface DeviceSigningUploadBody {
  master_key?: Record<string, unknown>;
  self_signing_key?: Record<string, unknown>;
  user_signing_key?: Record<string, unknown>;
  auth?: AuthDict;
}

/** `{user_id: {key_id: signed object}}`, as `/keys/signatures/upload` takes it. */
export type SignaturesUploadBody = Record<string, Record<string, Record<string, unknown>>>;

/** Asks the user to prove who they are (UIA with their password) before `purpose`. */
export type RequireAuth = (requester: Requester, purpose: string, auth: AuthDict | undefined) => Promise<void>;

type Json = Record<string, unknown>;
type Failure = { errcode: string; error: string };

const BODY_FIELDS: [keyof DeviceSigningUploadBody, CrossSigningKeyType][] = [
  ["master_key", "master"],
  ["self_signing_key", "self_signing"],
  ["user_signing_key", "user_signing"],
];

/** Replacing keys that exist needs UIA; the same keys again do not (a retried upload). */
const REPLACE_PURPOSE = "reset the device signing keys";

/** The part of a key object a signature covers, in a form two copies can be compared in. */
function signedPart(obj: Json): string {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return canonical(rest);
}

/** True when `obj` carries a valid signature by the ed25519 key `publicKey` (unpadded Base64) under `userId`. */
function signedBy(obj: Json, userId: string, publicKey: string, keyId = `ed25519:${publicKey}`): boolean {
  try {
    return verifyJsonSignature(obj, userId, keyId, verifyKeyFromBase64(publicKey));
  } catch {
    return false;
  }
}

/** Checks a cross-signing key object's shape (spec: CrossSigningKey) and returns what is stored. */
function parseKey(obj: Json, userId: string, keyType: CrossSigningKeyType): CrossSigningKey & { obj: Json } {
  const invalid = (why: string) => Errors.invalidParam(`Invalid ${keyType} key: ${why}`);
  if (obj.user_id !== userId) throw invalid("`user_id` must be your user ID");
  if (!Array.isArray(obj.usage) || !obj.usage.includes(keyType)) throw invalid(`\`usage\` must include ${keyType}`);
  const keys = isRecord(obj.keys) ? Object.entries(obj.keys) : [];
  if (keys.length !== 1) throw invalid("`keys` must hold exactly one key");
  const [keyId, publicKey] = keys[0]!;
  if (typeof publicKey !== "string" || keyId !== `ed25519:${publicKey}`) throw invalid("the key must be `ed25519:<public key>`");
  try {
    verifyKeyFromBase64(publicKey);
  } catch {
    throw invalid("not an ed25519 public key");
  }
  if (obj.signatures !== undefined && !isRecord(obj.signatures)) throw invalid("`signatures` must be an object");
  return { keyType, publicKey, json: JSON.stringify(obj), obj };
}

const failure = (errcode: string, error: string): Failure => ({ errcode, error });

/** Thrown inside signature checks to fail one key of the upload, not the request. */
class KeyFailure extends Error {
  constructor(readonly failure: Failure) {
    super(failure.error);
  }
}

export class CrossSigningService {
  constructor(
    private readonly storage: Storage,
    private readonly deviceKeys: DeviceKeyService,
    private readonly requireAuth: RequireAuth,
  ) {}

  /** `POST /keys/device_signing/upload`: the first upload needs no UIA (MSC3967), replacing keys does. */
  async uploadKeys(requester: Requester, body: DeviceSigningUploadBody): Promise<Record<string, never>> {
    const { userId } = requester;
    const given = BODY_FIELDS.filter(([field]) => body[field] !== undefined).map(([field, type]) =>
      parseKey(body[field] as Json, userId, type),
    );
    let authenticated = false;
    // A concurrent upload that changed the master key meanwhile makes the decision again.
    for (;;) {
      const stored = new Map((await this.storage.crossSigning.keys([userId])).map((k) => [k.keyType, k]));
      const differs = given.some((k) => {
        const old = stored.get(k.keyType);
        return old === undefined || !sameJson(old.json, k.json);
      });
      if (!differs) return {};
      const storedMaster = stored.get("master");
      if (storedMaster && !authenticated) {
        await this.requireAuth(requester, REPLACE_PURPOSE, body.auth);
        authenticated = true;
      }
      const masterKey = given.find((k) => k.keyType === "master")?.publicKey ?? storedMaster?.publicKey;
      if (masterKey === undefined) throw Errors.missingParam("No master key available");
      for (const key of given) {
        if (key.keyType !== "master" && !signedBy(key.obj, userId, masterKey)) {
          throw new MatrixError(400, "M_INVALID_SIGNATURE", `Invalid signature on ${key.keyType} key`);
        }
      }
      const keys = given.map(({ keyType, publicKey, json }) => ({ keyType, publicKey, json }));
      if (await this.storage.crossSigning.setKeys(userId, keys, storedMaster?.publicKey ?? null)) {
        await this.deviceKeys.announceDeviceChange(userId);
        return {};
      }
    }
  }

  /** `POST /keys/signatures/upload`: checks and stores each signature; a bad one fails only its key. */
  async uploadSignatures(requester: Requester, body: SignaturesUploadBody): Promise<{ failures: Record<string, Record<string, Failure>> }> {
    const { userId } = requester;
    // Maps, not objects: user IDs and key IDs are the client's, and may be "constructor" or "__proto__".
    const failures = new Map<string, Map<string, Failure>>();
    const accepted: CrossSignature[] = [];
    const users = Object.keys(body);
    const keys = keysByUser(await this.storage.crossSigning.keys([...new Set([...users, userId])]));
    const own = keys.get(userId) ?? new Map<CrossSigningKeyType, StoredCrossSigningKey>();
    const devices = new Map(
      (body[userId] ? await this.storage.deviceKeys.deviceKeys(userId) : []).map((d) => [d.deviceId, JSON.parse(d.json) as Json]),
    );
    for (const [targetUser, signed] of Object.entries(body)) {
      for (const [keyId, obj] of Object.entries(signed)) {
        try {
          const sigs = isRecord(obj.signatures) ? obj.signatures[userId] : undefined;
          if (!isRecord(sigs) || Object.keys(sigs).length === 0) throw new KeyFailure(failure("M_INVALID_SIGNATURE", "No signature by you"));
          if (targetUser === userId) {
            accepted.push(...this.checkOwnSignature(userId, keyId, obj, sigs, own, devices));
          } else {
            accepted.push(checkOtherUserSignature(userId, targetUser, keyId, obj, own.get("user_signing"), keys.get(targetUser)?.get("master")));
          }
        } catch (err) {
          if (!(err instanceof KeyFailure)) throw err;
          const forUser = failures.get(targetUser) ?? new Map<string, Failure>();
          failures.set(targetUser, forUser.set(keyId, err.failure));
        }
      }
    }
    // Signatures change what other users see of the signed user's devices or master key.
    const changed = [...new Set(accepted.map((s) => s.targetUserId))];
    await this.storage.crossSigning.addSignatures(accepted, changed);
    for (const user of changed) await this.deviceKeys.announceDeviceChange(user);
    return { failures: Object.fromEntries([...failures].map(([user, byKey]) => [user, Object.fromEntries(byKey)])) };
  }

  /** A signature of one of the user's devices by their self-signing key, or of their master key by their devices. */
  private checkOwnSignature(
    userId: string,
    keyId: string,
    obj: Json,
    sigs: Json,
    own: Map<CrossSigningKeyType, StoredCrossSigningKey>,
    devices: Map<string, Json>,
  ): CrossSignature[] {
    const master = own.get("master");
    if (master && keyId === master.publicKey) {
      mustMatch(obj, JSON.parse(master.json) as Json);
      const out: CrossSignature[] = [];
      for (const [signingKeyId, signature] of Object.entries(sigs)) {
        if (signingKeyId === `ed25519:${master.publicKey}`) continue;
        const deviceId = signingKeyId.startsWith("ed25519:") ? signingKeyId.slice("ed25519:".length) : undefined;
        const device = deviceId === undefined ? undefined : devices.get(deviceId);
        const devicePublicKey = isRecord(device?.keys) ? device.keys[signingKeyId] : undefined;
        if (typeof devicePublicKey !== "string" || typeof signature !== "string" || !signedBy(obj, userId, devicePublicKey, signingKeyId)) {
          throw new KeyFailure(failure("M_INVALID_SIGNATURE", `Invalid signature ${signingKeyId}`));
        }
        out.push({ signerUserId: userId, signingKeyId, targetUserId: userId, targetKeyId: keyId, signature });
      }
      return out;
    }
    const device = devices.get(keyId);
    if (!device) throw new KeyFailure(failure("M_NOT_FOUND", "Unknown device"));
    const selfSigning = own.get("self_signing");
    if (!selfSigning) throw new KeyFailure(failure("M_NOT_FOUND", "No self-signing key"));
    const signingKeyId = `ed25519:${selfSigning.publicKey}`;
    const signature = sigs[signingKeyId];
    mustMatch(obj, device);
    if (typeof signature !== "string" || !signedBy(obj, userId, selfSigning.publicKey)) {
      throw new KeyFailure(failure("M_INVALID_SIGNATURE", "Invalid signature by the self-signing key"));
    }
    return [{ signerUserId: userId, signingKeyId, targetUserId: userId, targetKeyId: keyId, signature }];
  }

  /**
   * `POST /keys/query` with cross-signing: device keys with the signatures uploaded for them,
   * the users' master and self-signing keys, and the requester's own user-signing key.
   */
  async query(requester: Requester, body: KeysQueryBody) {
    return this.queryAs(requester.userId, body);
  }

  /**
   * The same for `viewer`; null for another server, which sees only the signatures users made
   * of their own keys, and no user-signing key.
   */
  async queryAs(viewer: string | null, body: KeysQueryBody) {
    const result = await this.deviceKeys.query(body);
    const users = Object.keys(result.device_keys);
    const keys = keysByUser(await this.storage.crossSigning.keys(users));
    const extra = new Map<string, Json>();
    for (const s of await this.storage.crossSigning.signaturesFor(users, viewer ?? "")) {
      const key = `${s.targetUserId}\u0000${s.targetKeyId}`;
      const bySigner = (extra.get(key) ?? {}) as Record<string, Record<string, string>>;
      (bySigner[s.signerUserId] ??= {})[s.signingKeyId] = s.signature;
      extra.set(key, bySigner);
    }
    const withSignatures = (obj: Json, targetUser: string, targetKeyId: string): Json => {
      const more = extra.get(`${targetUser}\u0000${targetKeyId}`) as Record<string, Json> | undefined;
      if (!more) return obj;
      const signatures = { ...(isRecord(obj.signatures) ? obj.signatures : {}) } as Record<string, Json>;
      for (const [signer, sigs] of Object.entries(more)) signatures[signer] = { ...(signatures[signer] ?? {}), ...sigs };
      return { ...obj, signatures };
    };
    const masterKeys: Record<string, Json> = {};
    const selfSigningKeys: Record<string, Json> = {};
    const userSigningKeys: Record<string, Json> = {};
    for (const userId of users) {
      const devices = result.device_keys[userId]!;
      for (const [deviceId, device] of Object.entries(devices)) devices[deviceId] = withSignatures(device as Json, userId, deviceId);
      const own = keys.get(userId);
      const master = own?.get("master");
      if (master) masterKeys[userId] = withSignatures(JSON.parse(master.json) as Json, userId, master.publicKey);
      const selfSigning = own?.get("self_signing");
      if (selfSigning) selfSigningKeys[userId] = JSON.parse(selfSigning.json) as Json;
      // The user-signing key is private to its owner: it reveals whom they verified.
      const userSigning = own?.get("user_signing");
      if (userSigning && userId === viewer) userSigningKeys[userId] = JSON.parse(userSigning.json) as Json;
    }
    return { ...result, master_keys: masterKeys, self_signing_keys: selfSigningKeys, user_signing_keys: userSigningKeys };
  }
}

/** A signature of another user's master key by the uploader's user-signing key. */
function checkOtherUserSignature(
  userId: string,
  targetUser: string,
  keyId: string,
  obj: Json,
  userSigning: StoredCrossSigningKey | undefined,
  targetMaster: StoredCrossSigningKey | undefined,
): CrossSignature {
  if (!userSigning) throw new KeyFailure(failure("M_NOT_FOUND", "No user-signing key"));
  if (!targetMaster || targetMaster.publicKey !== keyId) throw new KeyFailure(failure("M_NOT_FOUND", "Unknown master key"));
  mustMatch(obj, JSON.parse(targetMaster.json) as Json);
  const signingKeyId = `ed25519:${userSigning.publicKey}`;
  const signature = (obj.signatures as Record<string, Json>)[userId]![signingKeyId];
  if (typeof signature !== "string" || !signedBy(obj, userId, userSigning.publicKey)) {
    throw new KeyFailure(failure("M_INVALID_SIGNATURE", "Invalid signature by the user-signing key"));
  }
  return { signerUserId: userId, signingKeyId, targetUserId: targetUser, targetKeyId: keyId, signature };
}

/** The uploaded copy must be the stored key: a signature of anything else vouches for nothing stored. */
function mustMatch(uploaded: Json, stored: Json): void {
  if (signedPart(uploaded) !== signedPart(stored)) throw new KeyFailure(failure("M_INVALID_PARAM", "Key does not match the stored key"));
}

/** Canonical JSON where the value allows it (it may hold floats, which it does not), else plain JSON. */
function canonical(value: unknown): string {
  try {
    return canonicalJson(value);
  } catch {
    return JSON.stringify(value);
  }
}

const sameJson = (a: string, b: string): boolean => canonical(JSON.parse(a)) === canonical(JSON.parse(b));

function keysByUser(keys: StoredCrossSigningKey[]): Map<string, Map<CrossSigningKeyType, StoredCrossSigningKey>> {
  const out = new Map<string, Map<CrossSigningKeyType, StoredCrossSigningKey>>();
  for (const k of keys) {
    let m = out.get(k.userId);
    if (!m) out.set(k.userId, (m = new Map()));
    m.set(k.keyType, k);
  }
  return out;
}
