import { createHash } from 'node:crypto';
import { ValidationError } from './errors.js';

/** Returns `value` when it is a positive safe integer; otherwise throws a ValidationError naming `field`. */
export function requirePositiveCredits(value: unknown, field = 'amount'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new ValidationError(field, 'must be a positive integer no greater than 9007199254740991');
  }
  return value;
}

/** Returns `value` when it is a non-zero safe integer (a signed adjustment); otherwise throws. */
export function requireNonZeroCredits(value: unknown, field = 'amount'): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value === 0) {
    throw new ValidationError(field, 'must be a non-zero integer within ±9007199254740991');
  }
  return value;
}

/** NUL cannot be stored in Postgres text or jsonb, and a lone surrogate cannot be stored exactly in UTF-8. */
const UNSTORABLE = /[\0\p{Cs}]/u;

/** true when Postgres stores `value` and returns it exactly. */
export const isStorableText = (value: string) => !UNSTORABLE.test(value);

/** Returns `value` when it is storable text of 1..max characters; otherwise throws a ValidationError. */
export function requireText(value: unknown, field: string, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw new ValidationError(field, `must be a string of 1 to ${max} characters`);
  }
  if (!isStorableText(value)) {
    throw new ValidationError(field, 'must not contain NUL or unpaired surrogate characters');
  }
  return value;
}

/** JSON with object keys sorted, so equal requests serialize equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The hash an idempotent request is remembered by: equal requests (any key order) hash equally. */
export function requestHashOf(request: unknown): string {
  return createHash('sha256').update(canonicalJson(request)).digest('base64url');
}
