/**
 * URL previews: the SSRF-safe fetcher and its address policy on their own, then
 * `/preview_url` over HTTP against a local site: refused on loopback by default (by address, by
 * name, through a redirect, in IPv6 forms), and with loopback whitelisted, OpenGraph answers
 * whose picture is stored as media.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import sharp from "sharp";
import { decodeEntities, decodeHtml, openGraph } from "../src/services/media/url_preview.js";
import { AddressPolicy } from "../src/services/outbound/address_policy.js";
import { SafeFetcher, SafeFetchError, type Resolver, type SafeFetchErrorKind } from "../src/services/outbound/safe_fetch.js";
import { makeTestCa } from "./helpers/livekit.js";
import { assertError, ok } from "./helpers/rooms.js";
import { NO_LIMIT, registerUser, request, startServer, teardown, type TestServer } from "./helpers/server.js";

const V1 = "/_matrix/client/v1/media/preview_url";
const LEGACY = ["/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url"];
const MAX_SPIDER = 64 * 1024;

let png: Buffer;
let site: Server;
let port: number;
const hits = new Map<string, number>();
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Not this title</title>
<script>document.write('<meta property="og:title" content="from a script">')</script>
<!-- <meta property="og:title" content="from a comment"> -->
<meta property="og:title" content="Switchboard &amp; friends">
<meta content='Calls that simply &#8220;work&#x201D;' property=og:description>
<meta property="og:image" content="/image.png"><meta property="og:image:width" content="9999">
</head><body><p>Hello</p></body></html>`;

/** Writes `total` bytes in chunks, without a Content-Length, stopping when the client hangs up. */
function stream(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(16 * 1024, 0x61);
  let sent = 0;
  const pump = () => {
    while (sent < total && !res.destroyed) {
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once("drain", pump);
    }
    res.end();
  };
  pump();
}

function route(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://site");
  hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1);
  res.on("error", () => undefined);
  const html = (body: string | Buffer, type = "text/html; charset=utf-8") => void res.writeHead(200, { "content-type": type }).end(body);
  const redirect = (to: string) => void res.writeHead(302, { location: to }).end();
  switch (url.pathname) {
    case "/page":
      return html(PAGE);
    case "/plain": // windows-1252 bytes, said so in the header
      return html(Buffer.from('<title>Caf\xe9\n  menu</title><meta name="description" content="Cr\xe8me &amp; more">', "latin1"), "text/html; charset=windows-1252");
    case "/meta-charset": // ... or only in the page
      return html(Buffer.from('<meta charset="iso-8859-1"><title>Na\xefve</title>', "latin1"), "text/html");
    case "/image.png":
      return void res.writeHead(200, { "content-type": "image/png", "content-length": png.length }).end(png);
    case "/redirect":
      return redirect("/page");
    case "/to":
      return redirect(url.searchParams.get("u") ?? "/");
    case "/loop":
      return redirect("/loop");
    case "/huge":
      res.writeHead(200, { "content-type": "text/html" });
      return stream(res, 4 * MAX_SPIDER);
    case "/huge.png":
      res.writeHead(200, { "content-type": "image/png" });
      return stream(res, 4 * MAX_SPIDER);
    case "/big-picture":
      return html('<meta property="og:title" content="Big picture"><meta property="og:image" content="/huge.png">');
    case "/text":
      return void res.writeHead(200, { "content-type": "text/plain" }).end("just text");
    case "/gzip":
      return void res.writeHead(200, { "content-type": "text/html", "content-encoding": "gzip" }).end(gzipSync(url.searchParams.has("bomb") ? Buffer.alloc(1 << 20) : PAGE));
    case "/echo": {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      return void req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ method: req.method, headers: req.headers, body: Buffer.concat(chunks).toString() })));
    }
    case "/hang":
      return; // never answers
    default:
      return void res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
}

before(async () => {
  png = await sharp({ create: { width: 40, height: 30, channels: 3, background: "#3366cc" } }).png().toBuffer();
  site = createServer(route);
  await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
  port = (site.address() as AddressInfo).port;
});
after(async () => {
  site.closeAllConnections();
  await new Promise<void>((resolve) => site.close(() => resolve()));
});

describe("address policy", () => {
  const defaults = new AddressPolicy();
  const table: [string, boolean][] = [
    ["8.8.8.8", true], ["1.1.1.1", true], ["2606:4700:4700::1111", true], ["::ffff:8.8.8.8", true], ["64:ff9b::808:808", true], ["2002:808:808::1", true],
    ["127.0.0.1", false], ["127.255.0.9", false], ["10.1.2.3", false], ["172.16.0.1", false], ["172.31.255.255", false], ["192.168.1.1", false],
    ["169.254.169.254", false], ["100.64.0.1", false], ["0.0.0.0", false], ["0.1.2.3", false], ["224.0.0.1", false], ["255.255.255.255", false],
    ["240.0.0.1", false], ["192.0.2.1", false], ["198.51.100.7", false], ["203.0.113.9", false], ["198.18.0.1", false], ["192.0.0.8", false],
    ["::1", false], ["::", false], ["fc00::1", false], ["fd12:3456::1", false], ["fe80::1", false], ["fe80::1%eth0", false], ["ff02::1", false],
    ["2001:db8::1", false], ["::ffff:127.0.0.1", false], ["::ffff:7f00:1", false], ["::ffff:10.0.0.1", false], ["::ffff:0:a00:1", false],
    ["::127.0.0.1", false], ["64:ff9b::a00:1", false], ["64:ff9b:1::1", false], ["2002:7f00:1::1", false], ["2002:c0a8:101::", false],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2", false], ["not-an-ip", false], ["", false],
  ];
  for (const [address, allowed] of table) {
    test(`${address || "(empty)"}: ${allowed ? "allowed" : "blocked"}`, () => assert.equal(defaults.check(address).allowed, allowed));
  }

  test("the blacklist adds ranges, the whitelist re-allows, and a mapped address connects as IPv4", () => {
    const policy = new AddressPolicy({ deny: ["8.8.0.0/16", "2606:4700::/32"], allow: ["127.0.0.1/32", "10.0.0.0/8"] });
    assert.equal(policy.check("8.8.8.8").allowed, false);
    assert.equal(policy.check("::ffff:8.8.4.4").allowed, false);
    assert.equal(policy.check("2606:4700:4700::1111").allowed, false);
    assert.equal(policy.check("8.9.0.1").allowed, true);
    assert.equal(policy.check("127.0.0.2").allowed, false);
    assert.deepEqual(policy.check("127.0.0.1"), { allowed: true, connectTo: "127.0.0.1", family: 4 });
    assert.deepEqual(policy.check("::ffff:127.0.0.1"), { allowed: true, connectTo: "127.0.0.1", family: 4 });
    assert.deepEqual(policy.check("10.9.8.7"), { allowed: true, connectTo: "10.9.8.7", family: 4 });
    // A NAT64 gateway is not the whitelisted host, even if the address it carries is.
    assert.equal(policy.check("64:ff9b::7f00:1").allowed, false);
  });
});

describe("safe fetcher", () => {
  const names: Record<string, string[]> = {
    "site.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "secure.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.1", "10.0.0.1"],
    "internal.test": ["192.168.1.1"],
  };
  let lookups: string[] = [];
  const resolve: Resolver = async (host) => {
    lookups.push(host);
    const found = names[host];
    if (!found) throw Object.assign(new Error(`${host} not found`), { code: "ENOTFOUND" });
    return found.map((address) => ({ address, family: 4 }));
  };
  const policy = new AddressPolicy({ allow: ["127.0.0.1/32"] });
  const fetcher = new SafeFetcher({ policy, resolve });
  const at = (host: string, path: string) => `http://${host}:${port}${path}`;
  async function fails(kind: SafeFetchErrorKind, promise: Promise<unknown>): Promise<SafeFetchError> {
    const err = await promise.then(
      () => assert.fail(`expected ${kind}`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof SafeFetchError, String(err));
    assert.equal(err.kind, kind, err.message);
    return err;
  }

  test("a name is resolved once and the connection goes to that address, with the name as Host", async () => {
    lookups = [];
    const res = await fetcher.fetch({ url: at("site.test", "/echo"), maxBytes: 10_000 });
    assert.deepEqual(lookups, ["site.test"]); // the system resolver, which knows no site.test, was never asked
    assert.equal((JSON.parse(res.body.toString()) as { headers: { host: string } }).headers.host, `site.test:${port}`);
  });

  test("a name with any blocked address, or none, is refused; so is a redirect to one", async () => {
    await fails("blocked_resolution", fetcher.fetch({ url: at("mixed.test", "/page"), maxBytes: 10_000 }));
    await fails("dns", fetcher.fetch({ url: at("nowhere.test", "/page"), maxBytes: 10_000 }));
    const before = hits.get("/page") ?? 0;
    await fails("blocked_resolution", fetcher.fetch({ url: at("site.test", `/to?u=${encodeURIComponent(at("internal.test", "/page"))}`), maxBytes: 10_000 }));
    await fails("blocked_address", fetcher.fetch({ url: at("site.test", `/to?u=${encodeURIComponent(at("127.0.0.2", "/page"))}`), maxBytes: 10_000 }));
    assert.equal(hits.get("/page") ?? 0, before);
  });

  test("redirects: followed up to the limit, returned with maxRedirects 0, credentials kept to their origin", async () => {
    const followed = await fetcher.fetch({ url: at("site.test", "/redirect"), maxBytes: 10_000 });
    assert.equal(followed.url.pathname, "/page");
    await fails("too_many_redirects", fetcher.fetch({ url: at("site.test", "/loop"), maxBytes: 10_000 }));
    assert.equal((await fetcher.fetch({ url: at("site.test", "/redirect"), maxBytes: 10_000, maxRedirects: 0 })).status, 302);
    const echoed = await fetcher.fetch({
      url: at("site.test", `/to?u=${encodeURIComponent(at("other.test", "/echo"))}`),
      headers: { authorization: "Bearer secret", "x-kept": "yes" },
      maxBytes: 10_000,
    });
    const { headers } = JSON.parse(echoed.body.toString()) as { headers: Record<string, string> };
    assert.equal(headers.authorization, undefined);
    assert.equal(headers["x-kept"], "yes");
    await fails("invalid_url", fetcher.fetch({ url: at("site.test", `/to?u=${encodeURIComponent("file:///etc/passwd")}`), maxBytes: 10_000 }));
    await fails("invalid_url", fetcher.fetch({ url: "gopher://site.test/", maxBytes: 10_000 }));
  });

  test("methods, bodies, compression, the byte limit and the deadline", async () => {
    const posted = await fetcher.fetch({ url: at("site.test", "/echo"), method: "POST", body: '{"a":1}', headers: { "content-type": "application/json" }, maxBytes: 10_000 });
    const echo = JSON.parse(posted.body.toString()) as { method: string; body: string; headers: Record<string, string> };
    assert.deepEqual([echo.method, echo.body, echo.headers["content-length"]], ["POST", '{"a":1}', "7"]);
    assert.equal((await fetcher.fetch({ url: at("site.test", "/gzip"), maxBytes: 10_000 })).body.toString(), PAGE);
    await fails("too_large", fetcher.fetch({ url: at("site.test", "/gzip?bomb"), maxBytes: 100_000 }));
    await fails("too_large", fetcher.fetch({ url: at("site.test", "/huge"), maxBytes: MAX_SPIDER }));
    const slow = await fails("timeout", fetcher.fetch({ url: at("site.test", "/hang"), maxBytes: 10_000, timeoutMs: 300 }));
    assert.equal(slow.detail.headersReceived, false);
  });

  test("TLS is checked against the host name, whatever address it resolved to", async () => {
    const { ca, key, cert } = makeTestCa(["secure.test"]);
    const server = createTlsServer({ key, cert }, (_req, res) => res.end("secret"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const tlsPort = (server.address() as AddressInfo).port;
    try {
      const secure = new SafeFetcher({ policy, resolve, ca: [ca] });
      assert.equal((await secure.fetch({ url: `https://secure.test:${tlsPort}/`, maxBytes: 100 })).body.toString(), "secret");
      await fails("network", secure.fetch({ url: `https://other.test:${tlsPort}/`, maxBytes: 100 }));
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe("OpenGraph from HTML", () => {
  test("og tags win over fallbacks; script, comment and quoting tricks are handled", () => {
    assert.deepEqual(openGraph(PAGE), {
      "og:title": "Switchboard & friends",
      "og:description": "Calls that simply “work”",
      "og:image": "/image.png",
      "og:image:width": "9999",
    });
    assert.deepEqual(openGraph('<title> A\n title </title><meta name="Description" content="d"><meta name="twitter:image" content="i.png">'), {
      "og:title": "A title",
      "og:description": "d",
      "og:image": "i.png",
    });
    assert.deepEqual(openGraph('<meta property="og:title" content="a > b">'), { "og:title": "a > b" });
    assert.deepEqual(openGraph("<meta property='og:title' content=\"x\" <title"), {});
    assert.equal(decodeEntities("&lt;&#65;&#x42;&unknown;&#0;&amp"), "<AB&unknown;\ufffd&amp");
    assert.equal(decodeHtml(Buffer.from("<title>caf\xe9</title>", "latin1"), "text/html; charset=windows-1252"), "<title>café</title>");
    assert.equal(decodeHtml(Buffer.from("<title>é</title>"), "text/html; charset=no-such-charset"), "<title>é</title>");
  });
});

describe("preview_url", () => {
  let disabled: TestServer;
  let guarded: TestServer;
  let open: TestServer;
  let token: string;
  let guardedToken: string;
  const preview = (server: TestServer, url: string, path = V1, auth: string | undefined = token) =>
    request(server.baseUrl, "GET", `${path}?url=${encodeURIComponent(url)}`, { token: auth });
  const local = (path: string, host = "127.0.0.1") => `http://${host}:${port}${path}`;

  before(async () => {
    disabled = await startServer();
    guarded = await startServer({ url_preview_enabled: true });
    open = await startServer({
      url_preview_enabled: true,
      url_preview_ip_range_whitelist: ["127.0.0.1/32"],
      url_preview_url_blacklist: ["blocked.example", "*.evil.example"],
      max_spider_size: MAX_SPIDER,
      rc_media_create: NO_LIMIT,
    });
    token = (await registerUser(open.baseUrl, "alice")).access_token;
    guardedToken = (await registerUser(guarded.baseUrl, "bob")).access_token;
  });
  after(() => teardown(() => disabled?.stop(), () => guarded?.stop(), () => open?.stop()));

  test("disabled by default: every path is unknown", async () => {
    const { access_token } = await registerUser(disabled.baseUrl, "carol");
    for (const path of [V1, ...LEGACY]) assertError(await preview(disabled, local("/page"), path, access_token), 404, "M_UNRECOGNIZED");
  });

  test("default ranges: loopback is refused by address, by name, in IPv6 forms and odd spellings", async () => {
    const before = hits.get("/page") ?? 0;
    for (const url of [local("/page"), local("/page", "[::1]"), local("/page", "[::ffff:127.0.0.1]"), local("/page", "0x7f.1"), "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/"]) {
      assertError(await preview(guarded, url, V1, guardedToken), 403, "M_UNKNOWN");
    }
    // A name resolving to a blocked address is a resolution failure, as on Synapse.
    assertError(await preview(guarded, local("/page", "localhost"), V1, guardedToken), 502, "M_UNKNOWN");
    assert.equal(hits.get("/page") ?? 0, before, "the site was never contacted");
  });

  test("requests are checked: token, url parameter, scheme", async () => {
    assertError(await preview(open, local("/page"), V1, ""), 401, "M_MISSING_TOKEN");
    assertError(await request(open.baseUrl, "GET", V1, { token }), 400, "M_MISSING_PARAM");
    assertError(await preview(open, "ftp://127.0.0.1/file"), 400, "M_INVALID_PARAM");
    assertError(await preview(open, "not a url"), 400, "M_INVALID_PARAM");
    assertError(await request(open.baseUrl, "GET", `${V1}?url=${encodeURIComponent(local("/page"))}&ts=soon`, { token }), 400, "M_INVALID_PARAM");
  });

  test("a whitelisted site is previewed; its picture is stored as media, and the answer is cached", async () => {
    const og = ok(await preview(open, local("/page")));
    assert.equal(og["og:title"], "Switchboard & friends");
    assert.equal(og["og:description"], "Calls that simply “work”");
    assert.deepEqual([og["og:image:type"], og["matrix:image:size"], og["og:image:width"], og["og:image:height"]], ["image/png", png.length, 40, 30]);
    const mxc = og["og:image"] as string;
    assert.match(mxc, /^mxc:\/\/localhost\/[A-Za-z0-9_-]+$/);
    const res = await fetch(`${open.baseUrl}/_matrix/client/v1/media/download/localhost/${mxc.split("/").pop()}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), png);
    const fetched = hits.get("/page");
    for (const path of LEGACY) assert.deepEqual(ok(await request(open.baseUrl, "GET", `${path}?url=${encodeURIComponent(local("/page"))}&ts=1700000000000`, { token })), og);
    assert.equal(hits.get("/page"), fetched, "answered from the cache");
  });

  test("redirects are followed and re-checked; blacklisted hosts are refused", async () => {
    assert.equal(ok(await preview(open, local("/redirect")))["og:title"], "Switchboard & friends");
    assertError(await preview(open, local(`/to?u=${encodeURIComponent(local("/page", "127.0.0.2"))}`)), 403, "M_UNKNOWN");
    assertError(await preview(open, local(`/to?u=${encodeURIComponent("http://localhost:1/")}`)), 502, "M_UNKNOWN");
    assertError(await preview(open, local("/loop")), 502, "M_UNKNOWN");
    assertError(await preview(open, "http://blocked.example/"), 403, "M_UNKNOWN");
    assertError(await preview(open, "https://deep.sub.evil.example/x"), 403, "M_UNKNOWN");
    assertError(await preview(open, local(`/to?u=${encodeURIComponent("http://BLOCKED.example./")}`)), 403, "M_UNKNOWN");
    // The whitelisted address in its mapped IPv6 form is the same host.
    assert.equal(ok(await preview(open, local("/plain", "[::ffff:127.0.0.1]")))["og:title"], "Café menu");
  });

  test("charsets, plain pictures, and pages without OpenGraph", async () => {
    assert.deepEqual(ok(await preview(open, local("/plain"))), { "og:title": "Café menu", "og:description": "Crème & more" });
    assert.deepEqual(ok(await preview(open, local("/meta-charset"))), { "og:title": "Naïve" });
    const og = ok(await preview(open, local("/image.png")));
    assert.match(og["og:image"] as string, /^mxc:\/\/localhost\//);
    assert.deepEqual([og["og:image:type"], og["matrix:image:size"], og["og:image:width"]], ["image/png", png.length, 40]);
  });

  test("too large, failing or unpreviewable content is an error, and the server carries on", async () => {
    assertError(await preview(open, local("/huge")), 502, "M_TOO_LARGE");
    assertError(await preview(open, local("/huge.png")), 502, "M_TOO_LARGE");
    assertError(await preview(open, local("/missing")), 502, "M_UNKNOWN");
    assertError(await preview(open, local("/text")), 502, "M_UNKNOWN");
    // A picture that cannot be had leaves the preview without one.
    assert.deepEqual(ok(await preview(open, local("/big-picture"))), { "og:title": "Big picture" });
    assert.equal((await request(open.baseUrl, "GET", "/_matrix/client/versions")).status, 200);
    assert.equal(ok(await preview(open, local("/redirect?again")))["og:title"], "Switchboard & friends");
  });
});
