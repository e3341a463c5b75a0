/**
 * The media repository (spec: Content repository, authenticated media v1.11, async uploads
 * v1.7): uploads streamed to disk, reserved IDs filled in later, downloads that wait for a
 * pending upload, and thumbnails made ahead in the background or on request.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, open as openWithCallback } from "node:fs";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import type { Readable } from "node:stream";
import type { Config, MediaConfig } from "../../config/config.js";
import { Errors, MatrixError } from "../../errors.js";
import { isValidServerName } from "../../events/ids.js";
import type { Storage } from "../../storage/interfaces.js";
import type { MediaRecord, ThumbnailRecord, UploadedMedia } from "../../storage/media.js";
import type { Clock } from "../clock.js";
import { BoundedMap } from "../bounded_map.js";
import type { RateLimiter } from "../ratelimiter.js";
import { BodyLengthError, BodyTooLargeError, MediaFiles } from "./files.js";
import { canThumbnail, chooseBox, probe, render, type Box, type Dimensions } from "./thumbnails.js";

const MEDIA_ID = /^[A-Za-z0-9_-]+$/;
const openFd = promisify(openWithCallback);
/** How long a download may wait for a pending upload: the spec's default and Synapse's cap. */
export const DEFAULT_WAIT_MS = 20_000;
export const MAX_WAIT_MS = 60_000;
/** Other processes hear of a finished upload on this topic, to wake their waiting downloads. */
const TOPIC = "media-uploaded";
const SWEEP_INTERVAL_MS = 3_600_000;
/**
 * Files up to this size are read whole and sent as one buffer: for thumbnails and avatars that
 * is about half the work of streaming them (open, read, read to find the end, close).
 */
const SEND_WHOLE_BYTES = 64 * 1024;
/**
 * Uploaded media and their thumbnails never change once made, so each process remembers the
 * records of this many media it served recently, sparing the database two reads a request.
 */
const CACHED_MEDIA = 10_000;

export interface UploadInput {
  body: Readable;
  contentType: string | undefined;
  filename: string | undefined;
  /** The declared length: the body must be exactly this long. Unknown: only the size limit holds. */
  length?: number;
}

/** What to send: small files as their bytes, larger ones as an open file to stream. */
export interface MediaContent {
  source: Buffer | Readable;
  size: number;
  contentType: string;
  /** The name to offer in `Content-Disposition`, if any. */
  filename: string | null;
}

export interface ThumbnailRequest {
  width: number;
  height: number;
  method: "crop" | "scale";
  animated: boolean;
  timeoutMs: number;
}

interface Logger {
  warn(obj: object, msg: string): void;
}

export class MediaService {
  readonly config: MediaConfig;
  readonly #serverName: string;
  readonly #files: MediaFiles;
  readonly #waiters = new Map<string, Set<() => void>>();
  readonly #making = new Map<string, Promise<ThumbnailRecord>>();
  readonly #records = new BoundedMap<string, MediaRecord>(CACHED_MEDIA);
  readonly #thumbnails = new BoundedMap<string, ThumbnailRecord[]>(CACHED_MEDIA);
  #background: Promise<void> = Promise.resolve();
  #stopped = false;
  #sweepTimers: NodeJS.Timeout[] = [];

  constructor(
    config: Config,
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly limiter: RateLimiter,
    private readonly logger: Logger,
  ) {
    this.config = config.media;
    this.#serverName = config.serverName;
    this.#files = new MediaFiles(config.media.storePath, storage.cluster.workerId);
    storage.cluster.subscribe(TOPIC, (body) => {
      if (typeof body === "string") this.#wake(body);
    });
  }

  /** Makes the store's folders and starts sweeping what crashed uploads left behind. */
  async start(): Promise<void> {
    await this.#files.init();
    const sweep = () => {
      this.#files.sweep(this.storage.cluster.workers()).catch((err: unknown) => this.logger.warn({ err }, "media: sweeping temporary files failed"));
    };
    // Alone on SQLite, at once; on PostgreSQL, once the other processes have said they are
    // there, so that their uploads in progress are not taken for leftovers.
    const firstSweepMs = this.storage.backend === "sqlite" ? 0 : 10_000;
    this.#sweepTimers.push(setTimeout(sweep, firstSweepMs).unref(), setInterval(sweep, SWEEP_INTERVAL_MS).unref());
  }

  /** Stops background work; a thumbnail being made is finished, queued ones are dropped. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#sweepTimers) clearTimeout(t);
    for (const wake of [...this.#waiters.values()].flatMap((s) => [...s])) wake();
    await this.#background;
  }

  /** `POST /upload`: the bytes, stored; returns the `mxc://` URI. */
  async upload(userId: string, input: UploadInput): Promise<string> {
    this.#checkLength(input.length);
    this.limiter.ratelimit(userId);
    return this.store(userId, input);
  }

  /**
   * Stores bytes as new media of `userId`, without the upload rate limit: for media the server
   * fetches on a user's behalf (URL preview images). Returns the `mxc://` URI.
   */
  async store(userId: string, input: UploadInput): Promise<string> {
    this.#checkLength(input.length);
    const mediaId = newMediaId();
    const written = await this.#receive(input);
    try {
      await this.#files.commit(written.temp, this.#files.contentPath(mediaId));
      await this.storage.media.createUploaded(mediaId, userId, this.#uploaded(input, written), this.clock.now());
    } catch (err) {
      await this.#files.discard(written.temp);
      throw err;
    }
    this.#afterUpload(mediaId, input.contentType);
    return this.#mxc(mediaId);
  }

  /** `POST /create`: an ID to upload to later. */
  async create(userId: string): Promise<{ content_uri: string; unused_expires_at: number }> {
    this.limiter.ratelimit(userId);
    const mediaId = newMediaId();
    const now = this.clock.now();
    const expires = now + this.config.unusedExpirationMs;
    if (!(await this.storage.media.createPending(mediaId, userId, now, expires, this.config.maxPendingUploads))) {
      throw new MatrixError(429, "M_LIMIT_EXCEEDED", `You already have ${this.config.maxPendingUploads} media IDs waiting for their upload`, {
        retry_after_ms: this.config.unusedExpirationMs,
      });
    }
    return { content_uri: this.#mxc(mediaId), unused_expires_at: expires };
  }

  /** `PUT /upload/{serverName}/{mediaId}`: the bytes for an ID from `create`. */
  async uploadTo(userId: string, serverName: string, mediaId: string, input: UploadInput): Promise<void> {
    this.#checkId(serverName, mediaId);
    this.#checkLength(input.length);
    const record = serverName === this.#serverName ? await this.storage.media.get(mediaId) : undefined;
    const now = this.clock.now();
    if (!record || (record.uploadedTs === null && (record.unusedExpiresTs ?? 0) <= now)) throw Errors.notFound("Unknown media ID");
    if (record.userId !== userId) throw Errors.forbidden("This media ID belongs to another user");
    if (record.uploadedTs !== null) throw cannotOverwrite();
    const written = await this.#receive(input);
    // Bytes first, then the row that says they are there. Linking (not renaming) into place
    // means a second upload racing for the same ID cannot replace the first one's bytes.
    let placed = false;
    try {
      placed = await this.#files.commitNew(written.temp, this.#files.contentPath(mediaId));
    } finally {
      if (!placed) await this.#files.discard(written.temp);
    }
    if (!placed || !(await this.storage.media.completePending(mediaId, this.#uploaded(input, written), this.clock.now()))) {
      throw cannotOverwrite();
    }
    this.#wake(mediaId);
    this.storage.cluster.publish(TOPIC, mediaId);
    this.#afterUpload(mediaId, input.contentType);
  }

  /** The original bytes, waiting up to `timeoutMs` for a pending upload. */
  async download(serverName: string, mediaId: string, timeoutMs: number): Promise<MediaContent> {
    const record = await this.#uploadedRecord(serverName, mediaId, timeoutMs);
    const size = record.size ?? 0;
    const source = await this.#read(this.#files.contentPath(mediaId), size);
    if (!source) throw Errors.notFound("Media not found");
    return { source, size, contentType: record.contentType ?? "application/octet-stream", filename: record.uploadName };
  }

  /** The thumbnail that best answers the request, made now if it has not been yet. */
  async thumbnail(serverName: string, mediaId: string, want: ThumbnailRequest): Promise<MediaContent> {
    const record = await this.#uploadedRecord(serverName, mediaId, want.timeoutMs);
    const contentType = record.contentType ?? "";
    if (!canThumbnail(contentType)) throw Errors.unknown(`Cannot make a thumbnail of ${contentType || "this media"}`);
    const dims = await this.#dimensions(record);
    if (!dims) throw Errors.unknown("The file is not a picture that can be read");
    if (dims.width * dims.height > this.config.maxImagePixels) {
      throw Errors.unknown(`The picture has more than ${this.config.maxImagePixels} pixels, the most this server thumbnails`);
    }
    const request: Box = { width: want.width, height: want.height, method: want.method };
    const box = this.config.dynamicThumbnails ? request : chooseBox(request, this.config.thumbnailSizes, dims);
    if (!box) throw Errors.notFound(`This server makes no ${want.method} thumbnails`);
    const animated = want.animated && dims.animated;
    const path = this.#files.thumbnailPath(mediaId, thumbnailName(box, animated));
    let made = await this.#thumbnailOf(record, box, animated);
    let source = await this.#read(path, made.size);
    if (!source) {
      // On record but not on disk (a restored backup without thumbnails): made again.
      made = await this.#make(record, box, animated);
      source = await this.#read(path, made.size);
      if (!source) throw Errors.notFound("Media not found");
    }
    return { source, size: made.size, contentType: made.contentType, filename: null };
  }

  #mxc(mediaId: string): string {
    return `mxc://${this.#serverName}/${mediaId}`;
  }

  #checkId(serverName: string, mediaId: string): void {
    if (!isValidServerName(serverName)) throw Errors.invalidParam("Not a valid server name");
    if (!MEDIA_ID.test(mediaId) || mediaId.length > 255) throw Errors.invalidParam("Not a valid media ID");
  }

  #checkLength(length: number | undefined): void {
    if (length !== undefined && length > this.config.maxUploadBytes) {
      throw Errors.tooLarge(`Uploads are limited to ${this.config.maxUploadBytes} bytes`);
    }
  }

  async #receive(input: UploadInput) {
    try {
      return await this.#files.receive(input.body, this.config.maxUploadBytes, input.length);
    } catch (err) {
      if (err instanceof BodyTooLargeError) throw Errors.tooLarge(`Uploads are limited to ${this.config.maxUploadBytes} bytes`);
      if (err instanceof BodyLengthError) throw Errors.unknown("The body is not as long as its Content-Length says");
      // The client went away mid-upload: nobody is left to answer, and it is not our fault.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ERR_STREAM_PREMATURE_CLOSE" || code === "ECONNRESET" || (err as Error).message === "aborted") {
        throw Errors.unknown("The upload was cut off before its end");
      }
      throw err;
    }
  }

  #uploaded(input: UploadInput, written: { size: number; sha256: string }): UploadedMedia {
    return {
      contentType: input.contentType ?? "application/octet-stream",
      uploadName: input.filename ?? null,
      size: written.size,
      sha256: written.sha256,
    };
  }

  async #uploadedRecord(serverName: string, mediaId: string, timeoutMs: number): Promise<MediaRecord> {
    this.#checkId(serverName, mediaId);
    // Remote media arrives with federation; until then only this server's media exists here.
    if (serverName !== this.#serverName) throw Errors.notFound("Media not found");
    const giveUp = this.clock.now() + Math.min(Math.max(timeoutMs, 0), MAX_WAIT_MS);
    const known = this.#records.get(mediaId);
    if (known) return known;
    for (;;) {
      const record = await this.storage.media.get(mediaId);
      const now = this.clock.now();
      if (!record || (record.uploadedTs === null && (record.unusedExpiresTs ?? 0) <= now)) throw Errors.notFound("Media not found");
      if (record.uploadedTs !== null) {
        this.#records.set(mediaId, record);
        return record;
      }
      if (now >= giveUp || this.#stopped) {
        throw new MatrixError(504, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet");
      }
      await this.#waitFor(mediaId, giveUp - now);
    }
  }

  #waitFor(mediaId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.#waiters.get(mediaId);
      if (!waiters) this.#waiters.set(mediaId, (waiters = new Set()));
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0) this.#waiters.delete(mediaId);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
    });
  }

  #wake(mediaId: string): void {
    for (const wake of [...(this.#waiters.get(mediaId) ?? [])]) wake();
  }

  /**
   * A file's bytes (small files) or a stream of it (larger ones), opened here so that a missing
   * file is known before anything is sent; undefined if it is missing. The stream reads through
   * a plain descriptor: `FileHandle` streams cost about twice the CPU per megabyte.
   */
  async #read(file: string, size: number): Promise<Buffer | Readable | undefined> {
    try {
      if (size <= SEND_WHOLE_BYTES) return await readFile(file);
      const fd = await openFd(file, "r");
      return createReadStream("", { fd });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.logger.warn({ file }, "media: a recorded file is missing from media_store_path");
        return undefined;
      }
      throw err;
    }
  }

  /** The picture's size, read once and remembered; undefined if it is not a readable picture. */
  async #dimensions(record: MediaRecord): Promise<Dimensions | undefined> {
    if (record.width === null || record.height === null) {
      const dims = await probe(this.#files.contentPath(record.mediaId));
      const found = dims ?? { width: 0, height: 0, animated: false };
      await this.storage.media.setDimensions(record.mediaId, found.width, found.height, found.animated);
      Object.assign(record, found);
    }
    return record.width && record.height ? { width: record.width, height: record.height, animated: record.animated } : undefined;
  }

  /** The thumbnail for a box, made (once per process at a time) if it is not on record. */
  async #thumbnailOf(record: MediaRecord, box: Box, animated: boolean): Promise<ThumbnailRecord> {
    const same = (t: ThumbnailRecord) => t.width === box.width && t.height === box.height && t.method === box.method && t.animated === animated;
    const cached = this.#thumbnails.get(record.mediaId)?.find(same);
    if (cached) return cached;
    // Another process may have made it since this one last looked.
    const stored = await this.storage.media.thumbnails(record.mediaId);
    this.#thumbnails.set(record.mediaId, stored);
    const existing = stored.find(same);
    if (existing) return existing;
    const key = `${record.mediaId}/${thumbnailName(box, animated)}`;
    let making = this.#making.get(key);
    if (!making) {
      making = this.#make(record, box, animated).finally(() => this.#making.delete(key));
      this.#making.set(key, making);
    }
    return making;
  }

  async #make(record: MediaRecord, box: Box, animated: boolean): Promise<ThumbnailRecord> {
    let rendered;
    try {
      rendered = await render(this.#files.contentPath(record.mediaId), record.contentType ?? "", box, animated, this.config.maxImagePixels);
    } catch (err) {
      this.logger.warn({ err, mediaId: record.mediaId }, "media: could not make a thumbnail");
      throw Errors.unknown("The picture could not be thumbnailed: it is damaged or too large");
    }
    const temp = await this.#files.writeTemp(rendered.data);
    await this.#files.commit(temp, this.#files.thumbnailPath(record.mediaId, thumbnailName(box, animated)));
    const made: ThumbnailRecord = { ...box, animated, contentType: rendered.contentType, size: rendered.data.length };
    await this.storage.media.addThumbnail(record.mediaId, made);
    const known = (this.#thumbnails.get(record.mediaId) ?? []).filter(
      (t) => !(t.width === made.width && t.height === made.height && t.method === made.method && t.animated === made.animated),
    );
    this.#thumbnails.set(record.mediaId, [...known, made]);
    return made;
  }

  /** Thumbnails of every configured size, made one upload at a time behind the responses. */
  #afterUpload(mediaId: string, contentType: string | undefined): void {
    if (!contentType || !canThumbnail(contentType)) return;
    this.#background = this.#background.then(async () => {
      if (this.#stopped) return;
      try {
        const record = await this.storage.media.get(mediaId);
        const dims = record && (await this.#dimensions(record));
        if (!record || !dims || dims.width * dims.height > this.config.maxImagePixels) return;
        for (const box of this.config.thumbnailSizes) {
          if (this.#stopped) return;
          await this.#thumbnailOf(record, box, false);
        }
      } catch (err) {
        if (!(err instanceof MatrixError)) this.logger.warn({ err, mediaId }, "media: making thumbnails ahead failed");
      }
    });
  }
}

function cannotOverwrite(): MatrixError {
  return new MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
}

/** 24 characters of `[A-Za-z0-9_-]`: 144 random bits, as Synapse's IDs have about that many. */
function newMediaId(): string {
  return randomBytes(18).toString("base64url");
}

function thumbnailName(box: Box, animated: boolean): string {
  return `${box.width}-${box.height}-${box.method}${animated ? "-animated" : ""}`;
}
