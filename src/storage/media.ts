/**
 * The media repository's records. The bytes live in files (services/media/files.ts); the
 * database says which media IDs exist, whose they are, whether their upload has arrived,
 * and which thumbnails have been made, so every process on the database serves them alike.
 */

export interface MediaRecord {
  mediaId: string;
  userId: string;
  /** Null while the ID is reserved (`/create`) and its upload has not arrived. */
  contentType: string | null;
  uploadName: string | null;
  size: number | null;
  sha256: string | null;
  createdTs: number;
  /** When the bytes arrived; null while pending. */
  uploadedTs: number | null;
  /** A pending ID is unusable after this. */
  unusedExpiresTs: number | null;
  /** Picture dimensions, once probed; 0 × 0 when the file is not a picture that can be read. */
  width: number | null;
  height: number | null;
  animated: boolean;
}

export interface ThumbnailRecord {
  width: number;
  height: number;
  method: "crop" | "scale";
  contentType: string;
  animated: boolean;
  size: number;
}

export interface UploadedMedia {
  contentType: string;
  uploadName: string | null;
  size: number;
  sha256: string;
}

export interface MediaStore {
  /** Records media whose bytes are already in place. */
  createUploaded(mediaId: string, userId: string, media: UploadedMedia, now: number): Promise<void>;
  /**
   * Reserves an ID for a later upload, unless the user already holds `maxPending` unexpired
   * ones (false then). Also forgets the user's reservations that expired unused.
   */
  createPending(mediaId: string, userId: string, now: number, expiresTs: number, maxPending: number): Promise<boolean>;
  /** Fills in a pending ID's upload; false if it is no longer pending (or never was). */
  completePending(mediaId: string, media: UploadedMedia, now: number): Promise<boolean>;
  get(mediaId: string): Promise<MediaRecord | undefined>;
  setDimensions(mediaId: string, width: number, height: number, animated: boolean): Promise<void>;
  thumbnails(mediaId: string): Promise<ThumbnailRecord[]>;
  addThumbnail(mediaId: string, thumbnail: ThumbnailRecord): Promise<void>;
}
