/**
 * The media repository over HTTP: uploads (direct and reserved), downloads, thumbnails, and
 * every error a client can run into, with the headers that keep uploaded content harmless.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { request as httpRequest } from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import sharp from "sharp";
import { assertError, ok } from "./helpers/rooms.js";
import { registerUser, request, startServer, type TestServer } from "./helpers/server.js";

const V1 = "/_matrix/client/v1/media";
const MAX_UPLOAD = 256 * 1024;

let server: TestServer;
let alice: { user_id: string; access_token: string };
let bob: { user_id: string; access_token: string };

before(async () => {
  server = await startServer({ max_upload_size: MAX_UPLOAD, max_image_pixels: "1M", max_pending_media_uploads: 3 });
  alice = await registerUser(server.baseUrl, "alice");
  bob = await registerUser(server.baseUrl, "bob");
});
after(() => server.stop());

interface Raw {
  status: number;
  headers: Headers;
  bytes: Buffer;
  json: Record<string, unknown>;
}

async function raw(method: string, path: string, opts: { token?: string; body?: Buffer | string; type?: string } = {}): Promise<Raw> {
  const headers: Record<string, string> = {};
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.type) headers["content-type"] = opts.type;
  const res = await fetch(server.baseUrl + path, { method, headers, body: opts.body });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
  } catch {
    // not JSON: media
  }
  return { status: res.status, headers: res.headers, bytes, json };
}

const asReply = (r: Raw) => ({ status: r.status, headers: r.headers, body: r.json });

async function upload(body: Buffer | string, type?: string, filename?: string, token = alice.access_token): Promise<string> {
  const query = filename === undefined ? "" : `?filename=${encodeURIComponent(filename)}`;
  const res = await raw("POST", `/_matrix/media/v3/upload${query}`, { token, body, type });
  assert.equal(res.status, 200, res.bytes.toString());
  const uri = res.json.content_uri as string;
  assert.match(uri, /^mxc:\/\/localhost\/[A-Za-z0-9_-]{24}$/);
  return uri.slice("mxc://localhost/".length);
}

const picture = (width: number, height: number, format: "png" | "jpeg" = "png") =>
  sharp({ create: { width, height, channels: 3, background: "#3366cc" } })[format]().toBuffer();

async function thumbnail(id: string, query: string, token = alice.access_token) {
  const res = await raw("GET", `${V1}/thumbnail/localhost/${id}?${query}`, { token });
  assert.equal(res.status, 200, res.bytes.toString());
  const meta = await sharp(res.bytes).metadata();
  return { res, width: meta.width, height: meta.height, pages: meta.pages ?? 1, format: meta.format };
}

describe("uploads and downloads", () => {
  test("the config endpoints give the upload limit, and /versions lists v1.11", async () => {
    for (const p of [`${V1}/config`, "/_matrix/media/v3/config", "/_matrix/media/r0/config"]) {
      assert.deepEqual(ok(await request(server.baseUrl, "GET", p, { token: bob.access_token })), { "m.upload.size": MAX_UPLOAD });
    }
    assertError(await request(server.baseUrl, "GET", `${V1}/config`), 401, "M_MISSING_TOKEN");
    const versions = ok(await request(server.baseUrl, "GET", "/_matrix/client/versions")) as { versions: string[] };
    assert.ok(versions.versions.includes("v1.11"));
  });

  test("an upload is downloaded by another user byte for byte, with its type, name and the safety headers", async () => {
    const png = await picture(40, 30);
    const id = await upload(png, "image/png", "cat.png");
    const res = await raw("GET", `${V1}/download/localhost/${id}`, { token: bob.access_token });
    assert.equal(res.status, 200);
    assert.deepEqual(res.bytes, png);
    assert.equal(res.headers.get("content-type"), "image/png");
    assert.equal(res.headers.get("content-length"), String(png.length));
    assert.equal(res.headers.get("content-disposition"), "inline; filename=cat.png");
    assert.equal(res.headers.get("cross-origin-resource-policy"), "cross-origin");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.match(res.headers.get("content-security-policy")!, /^sandbox; default-src 'none'; script-src 'none';/);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    // The name in the path wins, as the spec says; unknown query parameters change nothing.
    const named = await raw("GET", `${V1}/download/localhost/${id}/other%20name.png?allow_redirect=true`, { token: bob.access_token });
    assert.equal(named.headers.get("content-disposition"), "inline; filename*=utf-8''other%20name.png");
    assert.deepEqual(named.bytes, png);
    // HEAD: the headers, no body.
    const head = await fetch(`${server.baseUrl}${V1}/download/localhost/${id}`, { method: "HEAD", headers: { authorization: `Bearer ${bob.access_token}` } });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(png.length));
  });

  test("only safe types are shown inline; HTML and SVG are attachments; text gets a charset; names are encoded", async () => {
    const cases: [string, string, string][] = [
      ["text/html", "page.html", "attachment; filename=page.html"],
      ["image/svg+xml", "drawing.svg", "attachment; filename=drawing.svg"],
      ["text/plain", "notes.txt", "inline; filename=notes.txt"],
      ["application/pdf", "Ünïcode report.pdf", "attachment; filename*=utf-8''%C3%9Cn%C3%AFcode%20report.pdf"],
    ];
    for (const [type, name, disposition] of cases) {
      const id = await upload("<script>alert(1)</script>", type, name);
      const res = await raw("GET", `${V1}/download/localhost/${id}`, { token: alice.access_token });
      assert.equal(res.headers.get("content-disposition"), disposition, type);
    }
    const id = await upload("plain", "text/plain");
    const res = await raw("GET", `${V1}/download/localhost/${id}`, { token: alice.access_token });
    assert.equal(res.headers.get("content-type"), "text/plain; charset=UTF-8");
    assert.equal(res.headers.get("content-disposition"), "inline");
    // No type given: application/octet-stream, as Synapse stores it; an empty file is fine.
    const empty = await upload(Buffer.alloc(0));
    const got = await raw("GET", `${V1}/download/localhost/${empty}`, { token: alice.access_token });
    assert.equal(got.headers.get("content-type"), "application/octet-stream");
    assert.equal(got.bytes.length, 0);
  });

  test("errors: too large, no length, bad and unknown IDs, no token, wrong method, frozen legacy downloads", async () => {
    const tooBig = await raw("POST", "/_matrix/media/v3/upload", { token: alice.access_token, body: Buffer.alloc(MAX_UPLOAD + 1), type: "application/octet-stream" });
    assertError(asReply(tooBig), 413, "M_TOO_LARGE");
    // Exactly the limit is fine.
    await upload(Buffer.alloc(MAX_UPLOAD, 7), "application/octet-stream");
    assertError(asReply(await chunkedUpload()), 400, "M_UNKNOWN");
    assertError(asReply(await raw("POST", "/_matrix/media/v3/upload", { body: "x" })), 401, "M_MISSING_TOKEN");
    const id = await upload("hello", "text/plain");
    for (const [p, status, errcode] of [
      [`${V1}/download/localhost/bad!id`, 400, "M_INVALID_PARAM"],
      [`${V1}/download/not_a%20server/${id}`, 400, "M_INVALID_PARAM"],
      [`${V1}/download/localhost/unknownunknownunknown1`, 404, "M_NOT_FOUND"],
      [`${V1}/download/elsewhere.example/${id}`, 404, "M_NOT_FOUND"],
      [`${V1}/thumbnail/localhost/${id}?height=32`, 400, "M_MISSING_PARAM"],
      [`${V1}/thumbnail/localhost/${id}?width=32&height=32&method=stretch`, 400, "M_INVALID_PARAM"],
      [`${V1}/thumbnail/localhost/${id}?width=0&height=32`, 400, "M_INVALID_PARAM"],
      [`${V1}/thumbnail/localhost/${id}?width=32&height=32`, 400, "M_UNKNOWN"],
      [`/_matrix/media/v3/download/localhost/${id}`, 404, "M_NOT_FOUND"],
      [`/_matrix/media/v3/thumbnail/localhost/${id}?width=32&height=32`, 404, "M_NOT_FOUND"],
    ] as const) {
      const res = await raw("GET", p, { token: alice.access_token });
      assertError(asReply(res), status, errcode);
      assert.equal(res.headers.get("content-security-policy")?.startsWith("sandbox"), true, p);
    }
    assertError(asReply(await raw("GET", `${V1}/download/localhost/${id}`)), 401, "M_MISSING_TOKEN");
    assertError(asReply(await raw("POST", `${V1}/download/localhost/${id}`, { token: alice.access_token })), 405, "M_UNRECOGNIZED");
    assertError(asReply(await raw("GET", "/_matrix/media/v3/upload", { token: alice.access_token })), 405, "M_UNRECOGNIZED");
    assertError(asReply(await raw("DELETE", "/_matrix/media/v1/create", { token: alice.access_token })), 405, "M_UNRECOGNIZED");
  });
});

/** An upload without Content-Length (chunked), which Synapse refuses too. */
function chunkedUpload(): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const url = new URL(`${server.baseUrl}/_matrix/media/v3/upload`);
    const req = httpRequest(url, { method: "POST", headers: { authorization: `Bearer ${alice.access_token}`, "transfer-encoding": "chunked" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const bytes = Buffer.concat(chunks);
        const headers = new Headers(Object.entries(res.headers).map(([k, v]) => [k, String(v)]));
        resolve({ status: res.statusCode!, headers, bytes, json: JSON.parse(bytes.toString()) as Record<string, unknown> });
      });
    });
    req.on("error", reject);
    req.end("some bytes");
  });
}

describe("reserved uploads (POST /create)", () => {
  test("create, upload, download; a download waiting on the ID gets the bytes when they arrive", async () => {
    const created = ok(await request(server.baseUrl, "POST", "/_matrix/media/v1/create", { token: alice.access_token }));
    const uri = created.content_uri as string;
    assert.ok(typeof created.unused_expires_at === "number" && created.unused_expires_at > Date.now());
    const id = uri.slice("mxc://localhost/".length);
    // Not there yet: a short wait gives up with 504.
    assertError(asReply(await raw("GET", `${V1}/download/localhost/${id}?timeout_ms=50`, { token: bob.access_token })), 504, "M_NOT_YET_UPLOADED");
    const waiting = raw("GET", `${V1}/download/localhost/${id}?timeout_ms=30000`, { token: bob.access_token });
    // Only its creator may fill it.
    assertError(asReply(await raw("PUT", `/_matrix/media/v3/upload/localhost/${id}`, { token: bob.access_token, body: "x", type: "text/plain" })), 403, "M_FORBIDDEN");
    const put = await raw("PUT", `/_matrix/media/v3/upload/localhost/${id}?filename=later.txt`, { token: alice.access_token, body: "arrived", type: "text/plain" });
    assert.equal(put.status, 200);
    assert.deepEqual(put.json, {});
    const got = await waiting;
    assert.equal(got.status, 200);
    assert.equal(got.bytes.toString(), "arrived");
    assert.equal(got.headers.get("content-disposition"), "inline; filename=later.txt");
    // Once is all.
    assertError(asReply(await raw("PUT", `/_matrix/media/v3/upload/localhost/${id}`, { token: alice.access_token, body: "again", type: "text/plain" })), 409, "M_CANNOT_OVERWRITE_MEDIA");
    assertError(asReply(await raw("PUT", `/_matrix/media/v3/upload/localhost/neverreservedneverreserved`, { token: alice.access_token, body: "x" })), 404, "M_NOT_FOUND");
  });

  test("two uploads racing for one ID: exactly one lands, and its bytes are what is served", async () => {
    const id = (ok(await request(server.baseUrl, "POST", "/_matrix/media/v1/create", { token: alice.access_token })).content_uri as string).split("/").pop()!;
    const bodies = ["first body", "second body"];
    const results = await Promise.all(
      bodies.map((b) => raw("PUT", `/_matrix/media/v3/upload/localhost/${id}`, { token: alice.access_token, body: b, type: "text/plain" })),
    );
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 409]);
    const winner = bodies[results.findIndex((r) => r.status === 200)];
    assert.equal((await raw("GET", `${V1}/download/localhost/${id}`, { token: alice.access_token })).bytes.toString(), winner);
  });

  test("a user holds at most max_pending_media_uploads unused IDs", async () => {
    const carol = await registerUser(server.baseUrl, "carol");
    for (let i = 0; i < 3; i++) ok(await request(server.baseUrl, "POST", "/_matrix/media/v1/create", { token: carol.access_token }));
    assertError(await request(server.baseUrl, "POST", "/_matrix/media/v1/create", { token: carol.access_token }), 429, "M_LIMIT_EXCEEDED");
    // Others are not affected.
    ok(await request(server.baseUrl, "POST", "/_matrix/media/v1/create", { token: bob.access_token }));
  });
});

describe("thumbnails", () => {
  test("the best configured size answers a request, never larger than the picture, in the source's family of type", async () => {
    const id = await upload(await picture(1000, 500), "image/png", "wide.png");
    assert.deepEqual((await thumbnail(id, "width=32&height=32&method=crop")).width, 32);
    const crop = await thumbnail(id, "width=50&height=50&method=crop");
    assert.deepEqual([crop.width, crop.height, crop.format], [96, 96, "png"]);
    assert.equal(crop.res.headers.get("content-type"), "image/png");
    assert.equal(crop.res.headers.get("content-disposition"), "inline; filename=thumbnail.png");
    assert.equal(crop.res.headers.get("cross-origin-resource-policy"), "cross-origin");
    const scale = await thumbnail(id, "width=300&height=200&method=scale");
    assert.deepEqual([scale.width, scale.height], [320, 160]);
    // `scale` is the default method. Synapse's measure, |Δw·Δh|, is 0 for 800×400 (its height
    // is the one asked for), so that wins over 640×320.
    assert.deepEqual([(await thumbnail(id, "width=600&height=400")).width], [800]);
    // A small picture is never enlarged.
    const small = await upload(await picture(100, 80, "jpeg"), "image/jpeg");
    const big = await thumbnail(small, "width=800&height=600&method=scale");
    assert.deepEqual([big.width, big.height, big.format], [100, 80, "jpeg"]);
    const tinyCrop = await thumbnail(small, "width=96&height=96&method=crop");
    assert.deepEqual([tinyCrop.width, tinyCrop.height], [80, 80]);
  });

  test("an animated GIF gives animated WebP when asked, a still PNG otherwise", async () => {
    const frames = await Promise.all(
      ["#ff0000", "#00ff00", "#0000ff"].map((c) => sharp({ create: { width: 120, height: 90, channels: 3, background: c } }).raw().toBuffer()),
    );
    const gif = await sharp(Buffer.concat(frames), { raw: { width: 120, height: 270, channels: 3, pageHeight: 90 } }).gif().toBuffer();
    const id = await upload(gif, "image/gif", "anim.gif");
    const moving = await thumbnail(id, "width=96&height=96&method=crop&animated=true");
    assert.equal(moving.res.headers.get("content-type"), "image/webp");
    assert.equal(moving.pages, 3);
    const still = await thumbnail(id, "width=96&height=96&method=crop&animated=false");
    assert.equal(still.res.headers.get("content-type"), "image/png");
    assert.equal(still.pages, 1);
  });

  test("not a picture, a damaged one, or too many pixels: 400, and the server goes on", async () => {
    const damaged = await upload(Buffer.concat([(await picture(50, 50)).subarray(0, 60), Buffer.alloc(200, 1)]), "image/png");
    assertError(asReply(await raw("GET", `${V1}/thumbnail/localhost/${damaged}?width=32&height=32`, { token: alice.access_token })), 400, "M_UNKNOWN");
    const notPng = await upload("this is not a picture", "image/png");
    assertError(asReply(await raw("GET", `${V1}/thumbnail/localhost/${notPng}?width=32&height=32`, { token: alice.access_token })), 400, "M_UNKNOWN");
    // 2000 × 1000 is more than max_image_pixels (1M) here: a small file that decodes huge.
    const bomb = await upload(await picture(2000, 1000), "image/png");
    assertError(asReply(await raw("GET", `${V1}/thumbnail/localhost/${bomb}?width=32&height=32`, { token: alice.access_token })), 400, "M_UNKNOWN");
    // Its download is still fine, and so are other thumbnails.
    assert.equal((await raw("GET", `${V1}/download/localhost/${bomb}`, { token: alice.access_token })).status, 200);
    const fine = await upload(await picture(64, 64), "image/png");
    assert.equal((await thumbnail(fine, "width=32&height=32&method=crop")).width, 32);
  });

  test("thumbnails are made ahead, in the background, for every configured size", async () => {
    const id = await upload(await picture(900, 900), "image/png");
    const folder = path.join(server.dir, "data", "media_store", "local_thumbnails", id.slice(0, 2), id.slice(2, 4), id.slice(4));
    const want = ["32-32-crop", "96-96-crop", "320-240-scale", "640-480-scale", "800-600-scale"];
    for (let i = 0; i < 1500 && !(existsSync(folder) && want.every((n) => readdirSync(folder).includes(n))); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.deepEqual(readdirSync(folder).sort(), [...want].sort());
  });
});

describe("restarts", () => {
  test("media and thumbnails survive a restart; the stored hash is the file's", async () => {
    const { mkdtempSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-media-"));
    const { removeTestData } = await import("./helpers/database.js");
    let s = await startServer({}, { dir });
    try {
      const u = await registerUser(s.baseUrl, "dana");
      const png = await picture(300, 300);
      const res = await fetch(`${s.baseUrl}/_matrix/media/v3/upload?filename=keep.png`, {
        method: "POST",
        headers: { authorization: `Bearer ${u.access_token}`, "content-type": "image/png" },
        body: png,
      });
      const id = ((await res.json()) as { content_uri: string }).content_uri.split("/").pop()!;
      const thumbUrl = `${s.baseUrl}${V1}/thumbnail/localhost/${id}?width=96&height=96&method=crop`;
      const before = Buffer.from(await (await fetch(thumbUrl, { headers: { authorization: `Bearer ${u.access_token}` } })).arrayBuffer());
      await s.stop();
      s = await startServer({}, { dir });
      const again = await fetch(`${s.baseUrl}${V1}/download/localhost/${id}`, { headers: { authorization: `Bearer ${u.access_token}` } });
      const bytes = Buffer.from(await again.arrayBuffer());
      assert.deepEqual(bytes, png);
      const record = await s.homeserver.storage.media.get(id);
      assert.equal(record?.sha256, createHash("sha256").update(png).digest("hex"));
      const after = Buffer.from(await (await fetch(thumbUrl.replace(/^http:\/\/[^/]+/, s.baseUrl), { headers: { authorization: `Bearer ${u.access_token}` } })).arrayBuffer());
      assert.deepEqual(after, before);
    } finally {
      await s.stop();
      await removeTestData(dir);
    }
  });
});

describe("configuration", () => {
  test("rc_media_create limits new media per user, uploads and reservations alike", async () => {
    const s = await startServer({ rc_media_create: { per_second: 0.001, burst_count: 2 } });
    try {
      const u = await registerUser(s.baseUrl, "erin");
      const post = (p: string, body?: string) =>
        fetch(s.baseUrl + p, { method: "POST", headers: { authorization: `Bearer ${u.access_token}`, "content-type": "text/plain" }, body });
      assert.equal((await post("/_matrix/media/v3/upload", "one")).status, 200);
      assert.equal((await post("/_matrix/media/v1/create")).status, 200);
      const limited = await post("/_matrix/media/v3/upload", "three");
      assert.equal(limited.status, 429);
      const body = (await limited.json()) as { errcode: string; retry_after_ms: number };
      assert.equal(body.errcode, "M_LIMIT_EXCEEDED");
      assert.ok(body.retry_after_ms > 0);
      assert.equal((await post("/_matrix/media/v1/create")).status, 429);
    } finally {
      await s.stop();
    }
  });

  test("enable_media_repo: false serves no media endpoint and leaves v1.11 out of /versions", async () => {
    const s = await startServer({ enable_media_repo: false });
    try {
      const u = await registerUser(s.baseUrl, "fred");
      for (const [method, p] of [
        ["GET", `${V1}/config`],
        ["POST", "/_matrix/media/v3/upload"],
        ["GET", `${V1}/download/localhost/abcdef`],
      ] as const) {
        assertError(await request(s.baseUrl, method, p, { token: u.access_token }), 404, "M_UNRECOGNIZED");
      }
      const versions = ok(await request(s.baseUrl, "GET", "/_matrix/client/versions")) as { versions: string[] };
      assert.equal(versions.versions.includes("v1.11"), false);
    } finally {
      await s.stop();
    }
  });

  test("bad media settings are refused at start, naming the key", async () => {
    await assert.rejects(startServer({ url_preview_ip_range_blacklist: ["10.0.0.0/33"] }), /url_preview_ip_range_blacklist.*not an address range/s);
    await assert.rejects(
      startServer({ thumbnail_sizes: [{ width: 32, height: 32, method: "crop" }, { width: 32, height: 32, method: "crop" }] }),
      /thumbnail_sizes.*twice/s,
    );
    await assert.rejects(startServer({ max_upload_size: "lots" }), /max_upload_size/);
  });
});
