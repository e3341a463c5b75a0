/** Media records over SQL; see storage/media.ts. */
import type { MediaRecord, MediaStore, ThumbnailRecord, UploadedMedia } from "../media.js";
import type { Executor } from "./executor.js";

interface MediaRow {
  media_id: string;
  user_id: string;
  content_type: string | null;
  upload_name: string | null;
  size: number | null;
  sha256: string | null;
  created_ts: number;
  uploaded_ts: number | null;
  unused_expires_ts: number | null;
  width: number | null;
  height: number | null;
  animated: number;
}

interface ThumbnailRow {
  width: number;
  height: number;
  method: "crop" | "scale";
  content_type: string;
  animated: number;
  size: number;
}

// PostgreSQL's BIGINT columns come back as strings from some drivers' paths; numbers here.
const num = (v: number | null): number | null => (v === null ? null : Number(v));

const toRecord = (r: MediaRow): MediaRecord => ({
  mediaId: r.media_id,
  userId: r.user_id,
  contentType: r.content_type,
  uploadName: r.upload_name,
  size: num(r.size),
  sha256: r.sha256,
  createdTs: Number(r.created_ts),
  uploadedTs: num(r.uploaded_ts),
  unusedExpiresTs: num(r.unused_expires_ts),
  width: num(r.width),
  height: num(r.height),
  animated: Number(r.animated) === 1,
});

export class SqlMediaStore implements MediaStore {
  constructor(private readonly db: Executor) {}

  async createUploaded(mediaId: string, userId: string, m: UploadedMedia, now: number): Promise<void> {
    await this.db.run(
      `INSERT INTO local_media (media_id, user_id, content_type, upload_name, size, sha256, created_ts, uploaded_ts, animated)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)`,
      [mediaId, userId, m.contentType, m.uploadName, m.size, m.sha256, now, now],
    );
  }

  createPending(mediaId: string, userId: string, now: number, expiresTs: number, maxPending: number): Promise<boolean> {
    // Count, then insert: on PostgreSQL two of one user's requests at the same instant may both
    // see room for one more, so the cap can be passed by the requests in flight. It limits
    // abandoned reservations, not a resource, so that is not worth a lock on every /create.
    return this.db.transaction(async (tx) => {
      await tx.run("DELETE FROM local_media WHERE user_id = ? AND uploaded_ts IS NULL AND unused_expires_ts <= ?", [userId, now]);
      const held = await tx.get<{ n: number }>(
        "SELECT COUNT(*) AS n FROM local_media WHERE user_id = ? AND uploaded_ts IS NULL",
        [userId],
      );
      if (Number(held?.n ?? 0) >= maxPending) return false;
      await tx.run(
        "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_ts, animated) VALUES (?, ?, ?, ?, 0)",
        [mediaId, userId, now, expiresTs],
      );
      return true;
    });
  }

  async completePending(mediaId: string, m: UploadedMedia, now: number): Promise<boolean> {
    // One conditional update: of two uploads racing for one ID, exactly one lands.
    const changed = await this.db.run(
      `UPDATE local_media SET content_type = ?, upload_name = ?, size = ?, sha256 = ?, uploaded_ts = ?, unused_expires_ts = NULL
       WHERE media_id = ? AND uploaded_ts IS NULL AND unused_expires_ts > ?`,
      [m.contentType, m.uploadName, m.size, m.sha256, now, mediaId, now],
    );
    return changed === 1;
  }

  async get(mediaId: string): Promise<MediaRecord | undefined> {
    const row = await this.db.get<MediaRow>("SELECT * FROM local_media WHERE media_id = ?", [mediaId]);
    return row && toRecord(row);
  }

  async setDimensions(mediaId: string, width: number, height: number, animated: boolean): Promise<void> {
    await this.db.run("UPDATE local_media SET width = ?, height = ?, animated = ? WHERE media_id = ?", [width, height, animated ? 1 : 0, mediaId]);
  }

  async thumbnails(mediaId: string): Promise<ThumbnailRecord[]> {
    const rows = await this.db.all<ThumbnailRow>(
      "SELECT width, height, method, content_type, animated, size FROM local_media_thumbnails WHERE media_id = ?",
      [mediaId],
    );
    return rows.map((r) => ({
      width: Number(r.width),
      height: Number(r.height),
      method: r.method,
      contentType: r.content_type,
      animated: Number(r.animated) === 1,
      size: Number(r.size),
    }));
  }

  async addThumbnail(mediaId: string, t: ThumbnailRecord): Promise<void> {
    // Two processes may make the same thumbnail at once; they make the same bytes.
    await this.db.run(
      `INSERT INTO local_media_thumbnails (media_id, width, height, method, content_type, animated, size)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      [mediaId, t.width, t.height, t.method, t.contentType, t.animated ? 1 : 0, t.size],
    );
  }
}
