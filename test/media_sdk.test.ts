/**
 * The media repository as matrix-js-sdk clients (and so Element) use it: the upload limit,
 * uploads, authenticated downloads and thumbnails through the URLs the SDK builds, avatars,
 * an encrypted attachment sent in a room, and an asynchronous upload (`/create`, then `PUT`).
 */
import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { IRequestOpts, MatrixClient } from "matrix-js-sdk";
import type { EncryptedFile, FileContent } from "matrix-js-sdk/lib/types.js";
import sharp from "sharp";
import { quietSdkLogs } from "./helpers/matrix-sdk.js";
import { User } from "./helpers/rooms.js";
import { SdkClients } from "./helpers/sdk_clients.js";
import { startServer, type TestServer } from "./helpers/server.js";

/** `max_upload_size`'s default, 50M. */
const DEFAULT_LIMIT = 50 * 1024 * 1024;

interface Fetched {
  status: number;
  type: string | null;
  disposition: string | null;
  bytes: Buffer;
}

/** GETs a media URL the way Element's service worker does: the access token as a bearer header. */
async function fetchMedia(url: string | null, token?: string): Promise<Fetched> {
  assert.ok(url, "the SDK built a URL");
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, type: res.headers.get("content-type"), disposition: res.headers.get("content-disposition"), bytes };
}

/** A PNG of noise, so that it does not compress to almost nothing and every pixel matters. */
function png(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: "#336699", noise: { type: "gaussian", mean: 128, sigma: 40 } } })
    .png()
    .toBuffer();
}

/** The authenticated (v1.11) download URL the SDK builds: `useAuthentication` is its last argument. */
const downloadUrl = (client: MatrixClient, mxc: string) => client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
const thumbnailUrl = (client: MatrixClient, mxc: string, w: number, h: number, method: "crop" | "scale") =>
  client.mxcUrlToHttp(mxc, w, h, method, false, true, true);

const unpadded = (b: Buffer) => b.toString("base64").replace(/=+$/, "");
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest();

/**
 * Encrypts an attachment as Element does (matrix-encrypt-attachment, v2): AES-256-CTR with a
 * random key, an IV whose low 64 bits (the counter) start at zero, and the SHA-256 of the
 * ciphertext, so a receiver can tell that the server gave back what was sent.
 */
function encryptAttachment(plain: Buffer): { data: Buffer; file: Omit<EncryptedFile, "url"> } {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const data = Buffer.concat([cipher.update(plain), cipher.final()]);
  const jwk = { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: key.toString("base64url"), ext: true };
  return { data, file: { key: jwk, iv: unpadded(iv), hashes: { sha256: unpadded(sha256(data)) }, v: "v2" } };
}

function decryptAttachment(data: Buffer, file: EncryptedFile): Buffer {
  assert.equal(file.v, "v2");
  assert.equal(unpadded(sha256(data)), file.hashes.sha256, "the ciphertext is the one that was uploaded");
  const decipher = createDecipheriv("aes-256-ctr", Buffer.from(file.key.k, "base64url"), Buffer.from(file.iv, "base64"));
  return Buffer.concat([decipher.update(data), decipher.final()]);
}

describe("media through matrix-js-sdk", () => {
  let server: TestServer;
  let clients: SdkClients;
  let n = 0;

  before(async () => {
    server = await startServer();
    clients = await SdkClients.create(server.baseUrl);
    // The sync loop's debug lines would bury the test output.
    await quietSdkLogs();
  });
  after(async () => {
    clients?.stopAll();
    await server?.stop();
  });

  /** A registered user and an SDK client of theirs, syncing. */
  async function login(): Promise<{ user: User; client: MatrixClient }> {
    const user = await User.register(server.baseUrl, `media${++n}`);
    const client = await clients.start({ user_id: user.userId, access_token: user.token, device_id: user.deviceId });
    return { user, client };
  }

  test("getMediaConfig, authenticated and legacy, both give the upload limit", async () => {
    const { client } = await login();
    // Element X asks the v1 path and refuses to upload without the key; Element Web asks the legacy one.
    assert.equal((await client.getMediaConfig(true))["m.upload.size"], DEFAULT_LIMIT);
    assert.equal((await client.getMediaConfig())["m.upload.size"], DEFAULT_LIMIT);
  });

  test("uploadContent, then the authenticated download and a thumbnail the SDK's URLs point at", async () => {
    const { user, client } = await login();
    const picture = await png(400, 300);
    const { content_uri: mxc } = await client.uploadContent(picture, { name: "kitten photo.png", type: "image/png" });
    assert.match(mxc, /^mxc:\/\/localhost\/[A-Za-z0-9_-]+$/);

    const url = downloadUrl(client, mxc)!;
    assert.ok(url.startsWith(`${server.baseUrl}/_matrix/client/v1/media/download/`), url);
    const got = await fetchMedia(url, user.token);
    assert.equal(got.status, 200);
    assert.ok(got.bytes.equals(picture), "the same bytes");
    assert.equal(got.type, "image/png");
    // The name has a space, so it travels in RFC 5987 form; a PNG may be shown in place.
    assert.equal(got.disposition, "inline; filename*=utf-8''kitten%20photo.png");

    // Authenticated media is exactly that: without the token it is refused.
    const anonymous = await fetchMedia(url);
    assert.equal(anonymous.status, 401);
    // The legacy URL the SDK builds without `useAuthentication` is frozen (v1.11): nothing there.
    assert.equal((await fetchMedia(client.mxcUrlToHttp(mxc), user.token)).status, 404);

    // 64x64 crop: of the preset sizes (32 and 96 crop), the smallest that is at least as large.
    const thumb = await fetchMedia(thumbnailUrl(client, mxc, 64, 64, "crop"), user.token);
    assert.equal(thumb.status, 200);
    assert.equal(thumb.type, "image/png", "a PNG gives a PNG thumbnail");
    const meta = await sharp(thumb.bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 96, 96]);
    // Scale keeps the shape: 400x300 fits 320x240 exactly.
    const scaled = await sharp((await fetchMedia(thumbnailUrl(client, mxc, 300, 200, "scale"), user.token)).bytes).metadata();
    assert.deepEqual([scaled.width, scaled.height], [320, 240]);
  });

  test("an avatar: Alice sets it, Bob reads her profile and fetches it and its thumbnail with his own token", async () => {
    const [alice, bob] = [await login(), await login()];
    const avatar = await png(128, 128);
    const { content_uri: mxc } = await alice.client.uploadContent(avatar, { name: "avatar.png", type: "image/png" });
    await alice.client.setAvatarUrl(mxc);

    const profile = await bob.client.getProfileInfo(alice.user.userId);
    assert.equal(profile.avatar_url, mxc);
    const got = await fetchMedia(downloadUrl(bob.client, profile.avatar_url!), bob.user.token);
    assert.equal(got.status, 200);
    assert.ok(got.bytes.equals(avatar), "the same bytes");
    assert.equal(got.type, "image/png");

    // Element draws avatars from 32x32 crop thumbnails.
    const thumb = await fetchMedia(thumbnailUrl(bob.client, mxc, 32, 32, "crop"), bob.user.token);
    assert.equal(thumb.status, 200);
    const meta = await sharp(thumb.bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 32, 32]);
  });

  test("an encrypted attachment: ciphertext uploaded, sent in m.file, received, downloaded, checked and decrypted", async () => {
    const [alice, bob] = [await login(), await login()];
    const roomId = await alice.user.createRoom({ preset: "public_chat" });
    await bob.client.joinRoom(roomId);

    const plain = Buffer.concat([Buffer.from("%PDF-1.7 secret report\n"), randomBytes(70_000)]);
    const { data, file } = encryptAttachment(plain);
    // As Element uploads ciphertext: opaque bytes, and no filename to leak what they are.
    const { content_uri: url } = await alice.client.uploadContent(data, { type: "application/octet-stream", includeFilename: false });
    const content: FileContent = {
      msgtype: clients.sdk.MsgType.File,
      body: "report.pdf",
      info: { mimetype: "application/pdf", size: plain.length },
      file: { url, ...file },
    };
    const { event_id: eventId } = await alice.client.sendMessage(roomId, content);

    await clients.until(bob.client, "the m.file event", () => bob.client.getRoom(roomId)?.findEventById(eventId) !== undefined);
    const received = bob.client.getRoom(roomId)!.findEventById(eventId)!.getContent<FileContent>();
    assert.equal(received.url, undefined, "an encrypted file has no plain url");
    assert.ok(received.file);
    const got = await fetchMedia(downloadUrl(bob.client, received.file.url), bob.user.token);
    assert.equal(got.status, 200);
    assert.equal(got.type, "application/octet-stream");
    assert.equal(got.disposition, "attachment", "no name, and not a type a browser may show in place");
    assert.ok(decryptAttachment(got.bytes, received.file).equals(plain), "the original bytes");
  });

  test("an asynchronous upload: /create, PUT to the ID by its owner only, then the download", async () => {
    const [alice, bob] = [await login(), await login()];
    const { MediaPrefix, Method } = clients.sdk;
    // matrix-js-sdk has no createContentUri: its own HTTP layer makes the calls instead. Its
    // options type picks RequestInit's `priority`, which Node 20's fetch types lack, hence the cast.
    const opts = (o: Omit<IRequestOpts, "priority">) => o as IRequestOpts;
    const created = await alice.client.http.authedRequest<{ content_uri: string; unused_expires_at: number }>(
      Method.Post,
      "/create",
      undefined,
      undefined,
      opts({ prefix: MediaPrefix.V1 }),
    );
    assert.equal(typeof created.unused_expires_at, "number");
    const [serverName, mediaId] = created.content_uri.slice("mxc://".length).split("/") as [string, string];
    const uploadPath = `/upload/${encodeURIComponent(serverName)}/${encodeURIComponent(mediaId)}`;
    const put = (client: MatrixClient, body: Buffer) =>
      client.http.authedRequest(
        Method.Put,
        uploadPath,
        { filename: "notes.txt" },
        body,
        opts({ prefix: MediaPrefix.V3, headers: { "Content-Type": "text/plain" } }),
      );

    // Not uploaded yet: a download that will not wait is told so.
    const noWait = new URL(downloadUrl(bob.client, created.content_uri)!);
    noWait.searchParams.set("timeout_ms", "0");
    const early = await fetchMedia(noWait.href, bob.user.token);
    assert.equal(early.status, 504);
    assert.equal(JSON.parse(early.bytes.toString()).errcode, "M_NOT_YET_UPLOADED");
    // A download that waits (the default) gets the bytes whenever they come, before or after it asked.
    const waiting = fetchMedia(downloadUrl(bob.client, created.content_uri), bob.user.token);
    // Should an assertion below fail first, the server's stop ends this request: no unhandled rejection.
    waiting.catch(() => undefined);

    const text = Buffer.from("uploaded later, to an ID reserved earlier\n");
    await assert.rejects(put(bob.client, text), { httpStatus: 403, errcode: "M_FORBIDDEN" }, "the ID is Alice's");
    assert.deepEqual(await put(alice.client, text), {});
    await assert.rejects(put(alice.client, Buffer.from("again")), { httpStatus: 409, errcode: "M_CANNOT_OVERWRITE_MEDIA" });

    for (const got of [await waiting, await fetchMedia(downloadUrl(bob.client, created.content_uri), bob.user.token)]) {
      assert.equal(got.status, 200);
      assert.ok(got.bytes.equals(text), "the bytes of the first PUT");
      assert.equal(got.type, "text/plain; charset=UTF-8", "text without a charset is served as UTF-8");
      assert.equal(got.disposition, "inline; filename=notes.txt");
    }
  });
});
