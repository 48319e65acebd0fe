import { createHmac, timingSafeEqual } from 'node:crypto';
import { ServiceError } from '../errors.js';

export const SIGNATURE_TOLERANCE_SECONDS = 300;

/** A webhook whose Stripe-Signature does not prove it came from Stripe, recently, unaltered. */
export class SignatureError extends ServiceError {
  constructor(message: string) {
    super('invalid_signature', message);
  }
}

/**
 * Verifies `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]` over the exact raw bytes, against
 * every secret (rotation), within `toleranceSeconds` of `nowSeconds` in both directions. As Stripe's own
 * libraries do, the header passes when any one `v1` matches, whatever else it carries (other schemes,
 * malformed or foreign `v1` values). Throws a SignatureError saying precisely what is wrong; returns the
 * signed timestamp.
 */
export function verifyStripeSignature(
  rawBody: Buffer,
  header: string | undefined,
  secrets: readonly string[],
  nowSeconds = Math.floor(Date.now() / 1000),
  toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS,
): number {
  if (!header) throw new SignatureError('missing Stripe-Signature header');
  const pairs = header.split(',').map((part) => {
    const at = part.indexOf('=');
    return at < 0 ? [part.trim(), ''] : [part.slice(0, at).trim(), part.slice(at + 1).trim()];
  });
  const timestamps = pairs.filter(([key]) => key === 't').map(([, value]) => value!);
  if (timestamps.length !== 1)
    throw new SignatureError('Stripe-Signature must carry exactly one timestamp (t=)');
  const text = timestamps[0]!;
  if (!/^\d{1,12}$/.test(text))
    throw new SignatureError('Stripe-Signature timestamp (t=) is not a unix time in seconds');
  const timestamp = Number(text);
  const signatures = pairs.filter(([key]) => key === 'v1').map(([, value]) => value!);
  if (signatures.length === 0) throw new SignatureError('Stripe-Signature has no v1 signature');
  // A malformed v1 can never match; it is skipped, not fatal, so one bad value cannot hide a good one.
  const wellFormed = signatures.filter((s) => /^[0-9a-f]{64}$/.test(s));
  if (wellFormed.length === 0) {
    throw new SignatureError('Stripe-Signature v1 value is not a 64-character hex HMAC-SHA256 digest');
  }
  const age = nowSeconds - timestamp;
  if (age > toleranceSeconds) {
    throw new SignatureError(
      `Stripe-Signature timestamp is ${age} s old, beyond the ${toleranceSeconds} s tolerance`,
    );
  }
  if (-age > toleranceSeconds) {
    throw new SignatureError(
      `Stripe-Signature timestamp is ${-age} s in the future, beyond the ${toleranceSeconds} s tolerance`,
    );
  }
  const signedPayload = Buffer.concat([Buffer.from(`${text}.`, 'utf8'), rawBody]);
  const candidates = wellFormed.map((s) => Buffer.from(s, 'hex'));
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(signedPayload).digest();
    if (candidates.some((candidate) => timingSafeEqual(candidate, expected))) return timestamp;
  }
  throw new SignatureError('no v1 signature matches the payload for any configured signing secret');
}
