/**
 * Thumbnails: which pictures can have them, what size each requested box gives, which box best
 * answers a request (Synapse's choice, so clients see what they see there), and the rendering
 * itself with sharp. sharp is loaded on first use, so a server nobody sends pictures to never
 * pays for it; its work runs on libuv's thread pool, off the event loop.
 */
import type { ThumbnailSize } from "../../config/config.js";

type SharpModule = typeof import("sharp").default;
let sharpModule: Promise<SharpModule> | undefined;

function loadSharp(): Promise<SharpModule> {
  sharpModule ??= import("sharp").then((m) => {
    const sharp = m.default;
    // libvips's operation cache trades memory for repeated work on the same input; thumbnails
    // are made once each and then served from disk.
    sharp.cache(false);
    return sharp;
  });
  return sharpModule;
}

/** Source types thumbnails are made of, and the type each gives (Synapse's mapping). */
const OUTPUT_TYPE: Record<string, string> = {
  "image/jpeg": "image/jpeg",
  "image/jpg": "image/jpeg",
  "image/webp": "image/jpeg",
  "image/png": "image/png",
  "image/gif": "image/png",
};
const ANIMATED_TYPE = "image/webp";
const ANIMATABLE = new Set(["image/gif", "image/webp"]);

/** The media type without parameters, lower-cased. */
export function baseType(contentType: string): string {
  return contentType.split(";")[0]!.trim().toLowerCase();
}

export function canThumbnail(contentType: string): boolean {
  return baseType(contentType) in OUTPUT_TYPE;
}

export interface Dimensions {
  width: number;
  height: number;
  animated: boolean;
}

/** A box to make a thumbnail for: a configured size, or the request's own with dynamic thumbnails. */
export type Box = ThumbnailSize;

/** The size a box gives for a picture of `src`: never larger than the picture. */
export function outputSize(box: Box, src: { width: number; height: number }): { width: number; height: number } {
  if (box.method === "scale") {
    const f = Math.min(1, box.width / src.width, box.height / src.height);
    return { width: Math.max(1, Math.round(src.width * f)), height: Math.max(1, Math.round(src.height * f)) };
  }
  // Crop: the box's shape, shrunk until the picture covers it without being enlarged.
  const k = Math.min(1, src.width / box.width, src.height / box.height);
  return { width: Math.max(1, Math.round(box.width * k)), height: Math.max(1, Math.round(box.height * k)) };
}

/**
 * The box among `boxes` that best answers a request for `want`, as Synapse chooses among its
 * thumbnails: only boxes of the requested method; first those at least as large in one
 * dimension; for crop, the closest shape, then one covering the request, then the closest
 * size; for scale, the closest size. Ties go to the smaller output.
 */
export function chooseBox(want: Box, boxes: readonly Box[], src: { width: number; height: number }): Box | undefined {
  type Scored = { box: Box; score: number[] };
  const big: Scored[] = [];
  const small: Scored[] = [];
  const [dw, dh] = [want.width, want.height];
  for (const box of boxes) {
    if (box.method !== want.method) continue;
    const { width: tw, height: th } = outputSize(box, src);
    const sizeQuality = Math.abs((dw - tw) * (dh - th));
    const score =
      want.method === "crop"
        ? [Math.abs(dw * th - dh * tw), dw <= tw && dh <= th ? 0 : 1, sizeQuality, tw * th]
        : [sizeQuality, tw * th];
    (tw >= dw || th >= dh ? big : small).push({ box, score });
  }
  const best = (list: Scored[]) =>
    list.reduce<Scored | undefined>((a, b) => {
      if (!a) return b;
      for (let i = 0; i < a.score.length; i++) if (a.score[i] !== b.score[i]) return a.score[i]! <= b.score[i]! ? a : b;
      return a;
    }, undefined)?.box;
  return best(big) ?? best(small);
}

/**
 * Reads a picture's size from its header (without decoding it). Undefined when the file is
 * not a picture sharp can read.
 */
export async function probe(file: string): Promise<Dimensions | undefined> {
  const sharp = await loadSharp();
  try {
    const meta = await sharp(file, { limitInputPixels: false }).metadata();
    let width = meta.width;
    let height = meta.pageHeight ?? meta.height;
    if (!width || !height) return undefined;
    // EXIF orientations 5–8 turn the picture a quarter: its upright size is the other way round.
    if (meta.orientation !== undefined && meta.orientation >= 5) [width, height] = [height, width];
    return { width, height, animated: (meta.pages ?? 1) > 1 };
  } catch {
    return undefined;
  }
}

export interface Rendered {
  data: Buffer;
  contentType: string;
}

/**
 * Renders one thumbnail. `animated` keeps every frame (as animated WebP) when the source has
 * several; otherwise the first frame is used. Throws when the picture cannot be decoded or has
 * more than `maxPixels` pixels.
 */
export async function render(file: string, sourceType: string, box: Box, animated: boolean, maxPixels: number): Promise<Rendered> {
  const sharp = await loadSharp();
  const keepFrames = animated && ANIMATABLE.has(baseType(sourceType));
  let image = sharp(file, { animated: keepFrames, limitInputPixels: maxPixels, failOn: "error" });
  if (!keepFrames) image = image.rotate();
  const meta = await image.metadata();
  const src = { width: meta.width ?? 1, height: meta.pageHeight ?? meta.height ?? 1 };
  if (!keepFrames && meta.orientation !== undefined && meta.orientation >= 5) [src.width, src.height] = [src.height, src.width];
  const size = outputSize(box, src);
  image = image.resize(size.width, size.height, { fit: box.method === "crop" ? "cover" : "inside", withoutEnlargement: true });
  const contentType = keepFrames ? ANIMATED_TYPE : OUTPUT_TYPE[baseType(sourceType)]!;
  if (contentType === "image/webp") image = image.webp({ quality: 80 });
  else if (contentType === "image/png") image = image.png();
  else image = image.jpeg({ quality: 80, mozjpeg: true });
  return { data: await image.toBuffer(), contentType };
}
