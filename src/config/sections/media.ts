import { Type } from "../../json_schema.js";
import { duration, ratelimit, size } from "../types.js";

const thumbnailSize = Type.Object(
  {
    width: Type.Integer({ minimum: 1, maximum: 4096, description: "Width in pixels." }),
    height: Type.Integer({ minimum: 1, maximum: 4096, description: "Height in pixels." }),
    method: Type.Union([Type.Literal("crop"), Type.Literal("scale")], {
      description: "`crop` fills the box exactly; `scale` fits the picture inside it.",
      allowed: "crop or scale",
    }),
  },
  { additionalProperties: false, description: "A thumbnail size." },
);

/** The sizes the spec recommends generating ahead, as Synapse does by default. */
export const DEFAULT_THUMBNAIL_SIZES = [
  { width: 32, height: 32, method: "crop" as const },
  { width: 96, height: 96, method: "crop" as const },
  { width: 320, height: 240, method: "scale" as const },
  { width: 640, height: 480, method: "scale" as const },
  { width: 800, height: 600, method: "scale" as const },
];

export const mediaFields = {
  enable_media_repo: Type.Boolean({
    default: true,
    description:
      "Serve the media repository (uploads, downloads, thumbnails). Off, every media endpoint answers 404 `M_UNRECOGNIZED`, for deployments that route `/_matrix/media` and `/_matrix/client/v1/media` elsewhere.",
  }),
  media_store_path: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "Folder for uploaded files and their thumbnails, relative to the config file. Every process serving this homeserver must see the same folder.",
      docDefault: "`data/media_store`",
    }),
  ),
  max_upload_size: size({ default: "50M", description: "Largest upload accepted; larger ones are refused with 413 `M_TOO_LARGE` before their body is read." }),
  max_image_pixels: size({
    default: "32M",
    description: "Pictures with more pixels than this are not thumbnailed (protection against decompression bombs).",
    allowed: "a pixel count: an integer, or a string like 32M",
  }),
  dynamic_thumbnails: Type.Boolean({
    default: false,
    description: "Make thumbnails of exactly the requested size on demand, rather than the nearest of `thumbnail_sizes`.",
  }),
  thumbnail_sizes: Type.Array(thumbnailSize, {
    default: DEFAULT_THUMBNAIL_SIZES,
    description: "Thumbnails generated ahead for every uploaded picture; a request gets the best fit among them.",
  }),
  max_pending_media_uploads: Type.Integer({
    minimum: 1,
    default: 5,
    description: "Media IDs a user may hold from `POST /_matrix/media/v1/create` without having uploaded to them yet.",
  }),
  unused_expiration_time: duration({
    default: "24h",
    description: "How long a media ID from `/create` stays usable before its upload; clients are told as `unused_expires_at`.",
  }),
  rc_media_create: ratelimit({
    default: { per_second: 10, burst_count: 50 },
    description: "New media per user: uploads and `/create` calls.",
  }),
  url_preview_enabled: Type.Boolean({
    default: false,
    description:
      "Serve URL previews (`/media/preview_url`). The server then fetches the pages users link to; private, loopback and link-local addresses are always refused (see docs/media.md).",
  }),
  url_preview_ip_range_blacklist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description:
      "Address ranges (CIDR) URL previews never fetch from, added to the private, loopback and link-local ranges that are always refused.",
  }),
  url_preview_ip_range_whitelist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description: "Address ranges (CIDR) URL previews may fetch from even though a blacklist covers them.",
  }),
  url_preview_url_blacklist: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description: "Host names (a leading `*.` matches subdomains) that are never previewed.",
  }),
  max_spider_size: size({ default: "10M", description: "Largest page or image fetched for a URL preview (`max_upload_size` caps it too)." }),
};
