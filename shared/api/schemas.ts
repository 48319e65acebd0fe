import * as z from 'zod';
import { isStorableText } from '../credits.js';

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
