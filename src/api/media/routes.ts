/**
 * The media repository's endpoints: uploads under `/_matrix/media` (the spec has no v1 upload),
 * downloads and thumbnails under `/_matrix/client/v1/media` (authenticated media, v1.11), and
 * the frozen unauthenticated downloads, which find nothing uploaded since the freeze, i.e.
 * nothing on this server.
 */
import { Readable } from "node:stream";
import type { FastifyReply, FastifyRequest } from "fastify";
import { Type } from "../../json_schema.js";
import { Errors } from "../../errors.js";
import type { App, SchemaTypeProvider } from "../../http/server.js";
import type { Services } from "../../services/index.js";
import { DEFAULT_WAIT_MS, type MediaContent, type UploadInput } from "../../services/media/repository.js";
import { authHook, requester } from "../auth.js";
import { contentDisposition, setContentHeaders, setSafetyHeaders } from "./headers.js";
import { registerUrlPreviewRoutes } from "./preview.js";

const CLIENT_V1 = "/_matrix/client/v1/media";
/** Legacy prefixes, where uploads still live and downloads are frozen. */
const LEGACY = ["/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/media/v1"];

const Digits = Type.String({ pattern: "^[0-9]{1,9}$" });
const MediaParams = Type.Object({ serverName: Type.String(), mediaId: Type.String() });
const DownloadQuery = Type.Object({ timeout_ms: Type.Optional(Digits) }, { additionalProperties: true });
const ThumbnailQuery = Type.Object(
  {
    width: Digits,
    height: Digits,
    method: Type.Optional(Type.Union([Type.Literal("crop"), Type.Literal("scale")])),
    animated: Type.Optional(Type.Union([Type.Literal("true"), Type.Literal("false")])),
    timeout_ms: Type.Optional(Digits),
  },
  // Clients add their own (`allow_redirect`, `allow_remote`); they change nothing here.
  { additionalProperties: true },
);
const UploadQuery = Type.Object({ filename: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: true });

export function registerMediaRoutes(app: App, services: Services): void {
  if (!services.config.media.enabled) return;
  const { media } = services;
  const reader = authHook(services.auth, "required", { allowGuest: true });
  const uploader = authHook(services.auth, "required");
  const safety = (_request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    setSafetyHeaders(reply);
    done();
  };

  // Element X's SDK refuses to upload without `m.upload.size`; Element Web reads the legacy path.
  const configBody = () => ({ "m.upload.size": media.config.maxUploadBytes });
  app.get(`${CLIENT_V1}/config`, { onRequest: reader }, configBody);
  for (const prefix of LEGACY.slice(0, 2)) app.get(`${prefix}/config`, { onRequest: reader }, configBody);

  const send = (reply: FastifyReply, content: MediaContent, disposition: string) => {
    setContentHeaders(reply, content.contentType, content.size, disposition);
    return reply.send(content.source);
  };
  const timeout = (q: { timeout_ms?: string }) => (q.timeout_ms === undefined ? DEFAULT_WAIT_MS : Number(q.timeout_ms));

  const downloadOpts = { onRequest: [safety, reader], schema: { params: MediaParams, querystring: DownloadQuery } };
  app.get(`${CLIENT_V1}/download/:serverName/:mediaId`, downloadOpts, async (request, reply) => {
    const { serverName, mediaId } = request.params;
    const content = await media.download(serverName, mediaId, timeout(request.query));
    return send(reply, content, contentDisposition(content.contentType, content.filename));
  });
  app.get(
    `${CLIENT_V1}/download/:serverName/:mediaId/:fileName`,
    { onRequest: [safety, reader], schema: { params: Type.Object({ ...MediaParams.properties, fileName: Type.String() }), querystring: DownloadQuery } },
    async (request, reply) => {
      const { serverName, mediaId, fileName } = request.params;
      const content = await media.download(serverName, mediaId, timeout(request.query));
      return send(reply, content, contentDisposition(content.contentType, fileName));
    },
  );
  app.get(
    `${CLIENT_V1}/thumbnail/:serverName/:mediaId`,
    { onRequest: [safety, reader], schema: { params: MediaParams, querystring: ThumbnailQuery } },
    async (request, reply) => {
      const { serverName, mediaId } = request.params;
      const q = request.query;
      const [width, height] = [Number(q.width), Number(q.height)];
      if (width < 1 || height < 1) throw Errors.invalidParam("width and height must be at least 1");
      const content = await media.thumbnail(serverName, mediaId, {
        width,
        height,
        method: q.method ?? "scale",
        animated: q.animated === "true",
        timeoutMs: timeout(q),
      });
      const ext = content.contentType.split("/")[1] ?? "bin";
      return send(reply, content, `inline; filename=thumbnail.${ext}`);
    },
  );

  // Frozen (spec v1.11): media uploaded after the freeze is never served here, and all of
  // this server's media was. Element Web's service worker moves to the v1 paths above once
  // `/versions` lists v1.11.
  const frozen = () => {
    throw Errors.notFound("Media is served only through the authenticated /_matrix/client/v1/media endpoints");
  };
  for (const prefix of LEGACY) {
    for (const path of ["download/:serverName/:mediaId", "download/:serverName/:mediaId/:fileName", "thumbnail/:serverName/:mediaId"]) {
      app.get(`${prefix}/${path}`, { onRequest: safety }, frozen);
    }
  }

  app.post(`/_matrix/media/v1/create`, { onRequest: uploader }, async (request) => media.create(requester(request).userId));

  // Uploads take the body as a stream, straight to disk: their own parser, in their own scope.
  void app.register(async (plugin) => {
    const scope = plugin.withTypeProvider<SchemaTypeProvider>();
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", (_request, payload, done) => done(null, payload));
    // Refused before its body was read (too large, no token): the rest of the body is not
    // worth receiving just to keep the connection open.
    scope.addHook("onSend", (request, reply, payload, done) => {
      if (reply.statusCode >= 400 && !request.raw.readableEnded) reply.header("connection", "close");
      done(null, payload);
    });
    const body = (request: FastifyRequest): Readable => (request.body instanceof Readable ? request.body : Readable.from([]));
    for (const prefix of LEGACY) {
      scope.post(`${prefix}/upload`, { onRequest: uploader, schema: { querystring: UploadQuery } }, async (request) => {
        const content_uri = await media.upload(requester(request).userId, uploadInput(request, body(request), request.query.filename));
        return { content_uri };
      });
    }
    for (const prefix of LEGACY.slice(0, 2)) {
      scope.put(
        `${prefix}/upload/:serverName/:mediaId`,
        { onRequest: uploader, schema: { params: MediaParams, querystring: UploadQuery } },
        async (request) => {
          const { serverName, mediaId } = request.params;
          await media.uploadTo(requester(request).userId, serverName, mediaId, uploadInput(request, body(request), request.query.filename));
          return {};
        },
      );
    }
  });

  registerUrlPreviewRoutes(app, services);
}

/** What an upload says about itself. Like Synapse, the length must be declared up front. */
function uploadInput(request: FastifyRequest, body: Readable, filename: string | undefined): UploadInput {
  const declared = request.headers["content-length"];
  if (declared === undefined) {
    body.resume();
    throw Errors.unknown("Request must specify a Content-Length", 400);
  }
  const contentType = request.headers["content-type"];
  return {
    body,
    length: Number(declared),
    contentType: contentType === undefined || contentType === "" ? undefined : contentType,
    filename: filename === undefined || filename === "" ? undefined : filename,
  };
}
