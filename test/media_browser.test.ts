/**
 * Media in a real browser (Debian's headless Chromium): the response headers only matter
 * because a browser enforces them, so this is where they are shown to work.
 *
 * - A cross-origin page under `Cross-Origin-Embedder-Policy: require-corp` may embed
 *   thumbnails and downloads only because they carry `Cross-Origin-Resource-Policy:
 *   cross-origin`; the same page cannot embed an image from a server without it.
 * - The page may `fetch()` media with its own `Authorization` header (a CORS preflight).
 * - Opening uploaded HTML or SVG downloads it instead of rendering it (no script runs).
 * - Opening an inline type renders it in a sandbox: an opaque origin.
 *
 * The token reaches `<img>` requests and navigations as an extra header that Chromium adds
 * (`extraHTTPHeaders`), never through `page.route`: Playwright answers CORS preflights for
 * routed requests itself, which would hide the server's own answer.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import sharp from "sharp";
import { chromiumMissing, launchChromium, serveFixed, type StaticApp } from "./helpers/element_call.js";
import { registerUser, startServer, teardown, type TestServer } from "./helpers/server.js";

/** Guards against a hung browser; no assertion depends on how long anything takes. */
const GIVE_UP_MS = 20_000;
const CSP =
  "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";
const HTML_WITH_SCRIPT = "<!doctype html><title>uploaded</title><script>document.title = 'script ran'</script><p>hello</p>";
const SVG_WITH_SCRIPT = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>document.title = "script ran"</script></svg>';
const PLAIN_TEXT = "Just a note.\nSecond line.";

/** The few browser APIs the page scripts use; the project compiles without the DOM library. */
interface ImageElement {
  src: string;
  naturalWidth: number;
  naturalHeight: number;
  onload: (() => void) | null;
  onerror: (() => void) | null;
}
interface PageGlobals {
  document: { createElement(tag: "img"): ImageElement; body: { append(node: ImageElement): void; innerText: string }; contentType: string };
  origin: string;
  crossOriginIsolated: boolean;
  createImageBitmap(blob: Blob): Promise<{ width: number; height: number }>;
}

const png = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .png()
    .toBuffer();

/** Adds an `<img>` to the page and reports whether it decoded, and at what size. */
function embedImage(page: Page, src: string): Promise<{ decoded: boolean; width: number; height: number }> {
  return page.evaluate(
    (src) =>
      new Promise((resolve) => {
        const { document } = globalThis as unknown as PageGlobals;
        const img = document.createElement("img");
        const report = () => resolve({ decoded: img.naturalWidth > 0, width: img.naturalWidth, height: img.naturalHeight });
        img.onload = report;
        img.onerror = report;
        img.src = src;
        document.body.append(img);
      }),
    src,
  );
}

/** The headers every media response must carry, as the browser received them. */
function assertServedSafely(headers: Record<string, string>, contentType: string, disposition: string): void {
  assert.equal(headers["content-type"], contentType);
  assert.equal(headers["content-disposition"], disposition);
  assert.equal(headers["content-security-policy"], CSP);
  assert.equal(headers["cross-origin-resource-policy"], "cross-origin");
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["access-control-allow-origin"], "*");
}

const skip = chromiumMissing();

describe("media headers in headless Chromium", { skip, timeout: 120_000 }, () => {
  let server: TestServer;
  let browser: Browser;
  let token: string;
  /** The embedding page, served with COEP from an origin other than the homeserver's. */
  let embedder: StaticApp;
  /** Another origin serving a PNG with no CORP and no CORS headers: what COEP and CORS refuse. */
  let bareImageServer: StaticApp;
  let photo: Buffer;
  const contexts: BrowserContext[] = [];

  async function upload(contentType: string, filename: string, body: string | Buffer): Promise<string> {
    const res = await fetch(`${server.baseUrl}/_matrix/media/v3/upload?filename=${encodeURIComponent(filename)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": contentType },
      body,
    });
    const reply = (await res.json()) as { content_uri?: string };
    assert.equal(res.status, 200, `upload of ${filename}: ${JSON.stringify(reply)}`);
    const match = /^mxc:\/\/localhost\/([A-Za-z0-9_-]+)$/.exec(reply.content_uri ?? "");
    assert.ok(match, `unexpected content_uri ${reply.content_uri}`);
    return `${server.baseUrl}/_matrix/client/v1/media/download/localhost/${match[1]}`;
  }

  /** A fresh page; `withToken` makes Chromium add the bearer token to every request it sends. */
  async function newPage(withToken: boolean): Promise<Page> {
    const context = await browser.newContext(withToken ? { extraHTTPHeaders: { authorization: `Bearer ${token}` } } : {});
    contexts.push(context);
    context.setDefaultTimeout(GIVE_UP_MS);
    return context.newPage();
  }

  /** Uploads a document, opens it as a page, and expects a download rather than a rendered document. */
  async function expectDownloadInsteadOfPage(contentType: string, filename: string, uploaded: string): Promise<void> {
    const url = await upload(contentType, filename, uploaded);
    const page = await newPage(true);
    const response = page.waitForResponse(url);
    const download = page.waitForEvent("download");
    // Reported by the awaits below; this only keeps a failure of one from going unhandled.
    void Promise.allSettled([response, download]);
    const navigation = await page.goto(url).then(
      (res) => `rendered as a page (status ${res?.status()})`,
      (err: Error) => err.message,
    );
    assert.match(navigation, /Download is starting/, `opening ${filename} should download it`);
    const res = await response;
    assert.equal(res.status(), 200);
    assertServedSafely(await res.allHeaders(), `${contentType}; charset=UTF-8`, `attachment; filename=${filename}`);
    const file = await download;
    assert.equal(file.suggestedFilename(), filename);
    assert.equal(await readFile(await file.path(), "utf8"), uploaded);
    // The tab never left its blank page, so the uploaded document (and its script) never ran.
    assert.equal(page.url(), "about:blank");
    assert.notEqual(await page.title(), "script ran");
  }

  before(async () => {
    server = await startServer();
    token = (await registerUser(server.baseUrl, "media_browser")).access_token;
    photo = await png(600, 400);
    const coep = { "cross-origin-embedder-policy": "require-corp", "cross-origin-opener-policy": "same-origin" };
    embedder = await serveFixed({ "/": { headers: { "content-type": "text/html", ...coep }, body: "<!doctype html><title>embedder</title>" } });
    bareImageServer = await serveFixed({ "/bare.png": { headers: { "content-type": "image/png" }, body: photo } });
    browser = await launchChromium();
  });

  after(() =>
    teardown(
      () => Promise.all(contexts.splice(0).map((c) => c.close())),
      () => browser?.close(),
      () => embedder?.close(),
      () => bareImageServer?.close(),
      () => server?.stop(),
    ),
  );

  test("a cross-origin page under COEP require-corp embeds thumbnails and downloads, thanks to CORP", async () => {
    const download = await upload("image/png", "photo.png", photo);
    const thumbnail = `${download.replace("/download/", "/thumbnail/")}?width=96&height=96&method=crop`;
    const namedDownload = `${download}/renamed.png`;
    const page = await newPage(true);
    await page.goto(`${embedder.origin}/`);
    // COEP is in force only in a cross-origin isolated page; without it the check below proves nothing.
    assert.equal(await page.evaluate(() => (globalThis as unknown as PageGlobals).crossOriginIsolated), true);

    for (const [src, size, disposition] of [
      [thumbnail, { width: 96, height: 96 }, "inline; filename=thumbnail.png"],
      [namedDownload, { width: 600, height: 400 }, "inline; filename=renamed.png"],
    ] as const) {
      const response = page.waitForResponse(src);
      assert.deepEqual(await embedImage(page, src), { decoded: true, ...size }, `<img src=${src}> did not decode`);
      const res = await response;
      assert.equal(res.status(), 200);
      assertServedSafely(await res.allHeaders(), "image/png", disposition);
    }
    // The contrast: the same picture from an origin that sends no CORP is blocked by COEP.
    assert.deepEqual(await embedImage(page, `${bareImageServer.origin}/bare.png`), { decoded: false, width: 0, height: 0 });
  });

  test("a cross-origin page fetches a download with its own Authorization header (CORS preflight)", async () => {
    const download = await upload("image/png", "photo.png", photo);
    // No extra headers in this browser: the token below is the page's own, so Chromium preflights it.
    const page = await newPage(false);
    await page.goto(`${embedder.origin}/`);
    const fetched = await page.evaluate(
      async ({ url, token, bareUrl }) => {
        const g = globalThis as unknown as PageGlobals;
        // Error answers carry CORS headers too, so the page can read why it was refused. First,
        // because media is cacheable: once fetched, the browser's cache would answer this too.
        const anonymous = await fetch(url);
        const authorized = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
        const bitmap = await g.createImageBitmap(await authorized.blob());
        // A server that answers the preflight without CORS headers: the browser refuses the fetch.
        const bare = await fetch(bareUrl, { headers: { authorization: `Bearer ${token}` } }).then(
          () => "allowed",
          (err: Error) => err.name,
        );
        return {
          status: authorized.status,
          type: authorized.headers.get("content-type"),
          size: { width: bitmap.width, height: bitmap.height },
          anonymous: { status: anonymous.status, body: (await anonymous.json()) as { errcode?: string } },
          bare,
        };
      },
      { url: download, token, bareUrl: `${bareImageServer.origin}/bare.png` },
    );
    assert.equal(fetched.status, 200);
    assert.equal(fetched.type, "image/png");
    assert.deepEqual(fetched.size, { width: 600, height: 400 });
    assert.equal(fetched.anonymous.status, 401);
    assert.equal(fetched.anonymous.body.errcode, "M_MISSING_TOKEN");
    assert.equal(fetched.bare, "TypeError");
  });

  test("uploaded HTML is downloaded, never rendered", async () => {
    await expectDownloadInsteadOfPage("text/html", "page.html", HTML_WITH_SCRIPT);
  });

  test("uploaded SVG is downloaded, never rendered", async () => {
    await expectDownloadInsteadOfPage("image/svg+xml", "drawing.svg", SVG_WITH_SCRIPT);
  });

  test("an inline type renders in a sandbox: an opaque origin", async () => {
    const url = await upload("text/plain", "note.txt", PLAIN_TEXT);
    const page = await newPage(true);
    const res = await page.goto(url);
    assert.ok(res, "no response for the navigation");
    assert.equal(res.status(), 200);
    assertServedSafely(await res.allHeaders(), "text/plain; charset=UTF-8", "inline; filename=note.txt");
    const shown = await page.evaluate(() => {
      const g = globalThis as unknown as PageGlobals;
      return { origin: g.origin, type: g.document.contentType, text: g.document.body.innerText };
    });
    // "null": the CSP sandbox gives the document an opaque origin, with no access to the homeserver's.
    assert.deepEqual(shown, { origin: "null", type: "text/plain", text: PLAIN_TEXT });
  });
});
