/** One schema step: text both dialects read, or a text for each. */
export type Migration = string | { readonly sqlite: string; readonly postgres: string };
