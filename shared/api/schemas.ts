import * as z from 'zod';
import { isStorableText } from '../credits.js';
import type { EntryKind } from '../db/schema.js';

/** A string of 1..max characters that Postgres stores and returns exactly. */
export const storableText = (max: number) =>
  z.string().min(1).max(max).refine(isStorableText, 'must not contain NUL or unpaired surrogate characters');

export const credits = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
export const signedCredits = z
  .number()
  .int()
  .min(-Number.MAX_SAFE_INTEGER)
  .max(Number.MAX_SAFE_INTEGER)
  .refine((n) => n !== 0, 'must not be zero');

/** Free-form metadata the app attaches to a spend: up to 20 keys, short scalar values. */
export const metadata = z
  .record(storableText(40), z.union([storableText(500), z.number().finite(), z.boolean(), z.null()]))
  .refine((m) => Object.keys(m).length <= 20, 'must have at most 20 keys');

export const userIdParams = z.object({ userId: storableText(255) }).strict();
export const reasonBody = z.object({ reason: storableText(2000) }).strict();

export const problemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    code: z.string(),
    detail: z.string(),
    field: z.string().optional(),
    errors: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
    balance: z.number().int().optional(),
    requested: z.number().int().optional(),
  })
  .loose();

export const entrySchema = z.object({
  id: z.number().int(),
  amount: z.number().int(),
  balanceAfter: z.number().int(),
  kind: z.string(),
  description: z.string().nullable(),
  metadata: z.unknown().nullable(),
  createdAt: z.string(),
});

export const paymentSchema = z.object({
  id: z.string(),
  packageId: z.string(),
  credits: z.number().int(),
  amount: z.number().int(),
  currency: z.string(),
  status: z.string(),
  createdAt: z.string(),
});

export const accountSchema = z.object({
  accountId: z.string(),
  userId: z.string().nullable(),
  balance: z.number().int(),
  status: z.enum(['active', 'frozen']),
  anonymized: z.boolean(),
  updatedAt: z.string(),
});

export const creditsSchema = accountSchema.extend({
  available: z.number().int(),
  held: z.number().int(),
  grants: z.object({
    paid: z.number().int(),
    promotional: z.number().int(),
    nextExpiry: z.string().nullable(),
  }),
});

export const grantSchema = z.object({
  id: z.string(),
  category: z.enum(['paid', 'promotional']),
  source: z.string(),
  amount: z.number().int(),
  remaining: z.number().int(),
  expiresAt: z.string().nullable(),
  createdAt: z.string(),
});

/** An ISO 8601 date-time with its offset, as a Date. */
export const instant = z.iso.datetime({ offset: true }).transform((s) => new Date(s));

/** Every entry kind, for filters. */
export const ENTRY_KINDS = [
  'purchase',
  'spend',
  'refund_clawback',
  'refund_reversal',
  'dispute_clawback',
  'dispute_reinstatement',
  'admin_adjustment',
  'grant_expiry',
  'coupon_redemption',
] as const satisfies readonly EntryKind[];

/** A coupon code: 3-64 of A-Z, a-z, 0-9, _ and - (compared case-insensitively). */
export const couponCode = z.string().regex(/^[A-Za-z0-9_-]{3,64}$/, 'must be 3-64 of A-Z, a-z, 0-9, _ and -');
