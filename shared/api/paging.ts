import * as z from 'zod';
import { ValidationError } from '../errors.js';

/**
 * Keyset pagination, one way for every list: opaque cursors (a version prefix and base64url JSON, so a
 * cursor can change shape safely), a strict page size, and the page of rows fetched with limit + 1.
 */

export function encodeCursor(prefix: string, position: unknown): string {
  return prefix + Buffer.from(JSON.stringify(position)).toString('base64url');
}

/** The position in `cursor`, when it is one this API returned (`valid` says); a ValidationError otherwise. */
export function decodeCursor<T>(
  prefix: string,
  cursor: string,
  valid: (position: unknown) => position is T,
): T {
  let position: unknown;
  try {
    position = cursor.startsWith(prefix)
      ? JSON.parse(Buffer.from(cursor.slice(prefix.length), 'base64url').toString())
      : undefined;
  } catch {
    position = undefined;
  }
  if (!valid(position)) throw new ValidationError('cursor', 'is not a cursor this API returned');
  return position;
}

/** An instant as a cursor carries it: what `Date.toISOString` writes for years 0000-9999, nothing else. */
export const isCursorInstant = (v: unknown): v is string =>
  typeof v === 'string' &&
  /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(v) &&
  !Number.isNaN(new Date(v).getTime());

export const isUuid = (v: unknown): v is string =>
  typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v);

/** A page size in a query string: 1 to 100 written as plain digits (not `0x10`, ` 5` or `1e1`); 20 if absent. */
export const pageLimit = z
  .string()
  .regex(/^\d{1,3}$/, 'must be a whole number from 1 to 100')
  .transform(Number)
  .pipe(
    z
      .number()
      .min(1, 'must be a whole number from 1 to 100')
      .max(100, 'must be a whole number from 1 to 100'),
  )
  .default(20);

export const pageQuery = z.object({ limit: pageLimit, cursor: z.string().max(200).optional() }).strict();

/** One page of `rows` fetched with limit + 1: the page, and the cursor after its last row (null at the end). */
export function pageOf<R>(rows: R[], limit: number, cursorAfter: (row: R) => string) {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { page, nextCursor: rows.length > limit && last ? cursorAfter(last) : null };
}
