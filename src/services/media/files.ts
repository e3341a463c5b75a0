/**
 * Where media bytes live on disk. Every file is written under a temporary name first, made
 * durable, and only then renamed to its real name, so a crash never leaves half a file under a
 * media ID. Temporary names carry the writing process's instance, so a sweep can tell the
 * leftovers of a dead process from uploads still arriving in a live one.
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { link, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";

/** A body ended before its declared length, or went on past it. */
export class BodyLengthError extends Error {}
/** A body went past the size limit while streaming in. */
export class BodyTooLargeError extends Error {}

export interface WrittenFile {
  /** The temporary path; `commit` moves it to its real name. */
  temp: string;
  size: number;
  sha256: string;
}

/** Instance names as file-name prefixes: no dot, which ends the prefix. Media IDs are safe already. */
const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, "_");

export class MediaFiles {
  readonly #tempDir: string;
  #counter = 0;

  constructor(
    private readonly root: string,
    private readonly instance: string,
  ) {
    this.#tempDir = path.join(root, "tmp");
  }

  async init(): Promise<void> {
    await mkdir(this.#tempDir, { recursive: true });
  }

  /** Synapse's layout: two levels of two characters, so no folder holds millions of files. */
  contentPath(mediaId: string): string {
    return path.join(this.root, "local_content", mediaId.slice(0, 2), mediaId.slice(2, 4), mediaId.slice(4));
  }

  thumbnailPath(mediaId: string, name: string): string {
    return path.join(this.root, "local_thumbnails", mediaId.slice(0, 2), mediaId.slice(2, 4), mediaId.slice(4), name);
  }

  newTempPath(): string {
    return path.join(this.#tempDir, `${safe(this.instance)}.${++this.#counter}`);
  }

  /**
   * Streams `body` into a temporary file, hashing it on the way, and makes it durable. Refuses
   * (and removes the file) if the body is longer than `limit` or differs from `expectedLength`.
   */
  async receive(body: Readable, limit: number, expectedLength?: number): Promise<WrittenFile> {
    const temp = this.newTempPath();
    const hash = createHash("sha256");
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > limit) return done(new BodyTooLargeError());
        hash.update(chunk);
        done(null, chunk);
      },
    });
    try {
      const out = createWriteStream(temp, { flags: "wx", mode: 0o600 });
      await pipeline(body, meter, out);
      if (expectedLength !== undefined && size !== expectedLength) throw new BodyLengthError();
      await syncFile(temp);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    return { temp, size, sha256: hash.digest("hex") };
  }

  /** Writes bytes made here (a thumbnail) to a durable temporary file. */
  async writeTemp(data: Buffer): Promise<string> {
    const temp = this.newTempPath();
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } catch (err) {
      await handle.close();
      await rm(temp, { force: true });
      throw err;
    }
    await handle.close();
    return temp;
  }

  /** Moves a durable temporary file to its real name. */
  async commit(temp: string, finalPath: string): Promise<void> {
    await mkdir(path.dirname(finalPath), { recursive: true });
    await rename(temp, finalPath);
    await syncDir(path.dirname(finalPath));
  }

  /**
   * Like `commit`, but never replaces a file already there: of two uploads racing to fill one
   * reserved ID, exactly one gets its bytes in place. False for the other.
   */
  async commitNew(temp: string, finalPath: string): Promise<boolean> {
    await mkdir(path.dirname(finalPath), { recursive: true });
    try {
      await link(temp, finalPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    } finally {
      await rm(temp, { force: true });
    }
    await syncDir(path.dirname(finalPath));
    return true;
  }

  async discard(temp: string): Promise<void> {
    await rm(temp, { force: true });
  }

  /**
   * Removes temporary files whose process is not among `live` instances: the remains of
   * uploads cut off by a crash. Returns how many went.
   */
  async sweep(live: readonly string[]): Promise<number> {
    const owners = new Set(live.map(safe));
    let removed = 0;
    for (const name of await readdir(this.#tempDir).catch(() => [] as string[])) {
      if (owners.has(name.slice(0, name.indexOf(".")))) continue;
      await rm(path.join(this.#tempDir, name), { force: true });
      removed++;
    }
    return removed;
  }
}

async function syncFile(file: string): Promise<void> {
  const handle = await open(file, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The rename itself survives a crash only once its folder is synced. */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
