import * as z from 'zod';
import { isStorableText } from '../credits.js';
import type { EntryKind } from '../db/schema.js';
import { rateProblem } from '../pricing/decimal.js';
import { SKU_PATTERN, VERSION_PATTERN } from '../pricing/price-book.js';

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

export const planSchema = z.object({ id: z.string(), name: z.string() });

export const creditsSchema = accountSchema.extend({
  plan: planSchema,
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
  'hold_capture',
  'usage',
  'allowance',
] as const satisfies readonly EntryKind[];
// Every kind the ledger writes is filterable: a kind missing above fails to compile here.
const _everyKind: Exclude<EntryKind, (typeof ENTRY_KINDS)[number]> extends never ? true : never = true;
void _everyKind;

/** A coupon code: 3-64 of A-Z, a-z, 0-9, _ and - (compared case-insensitively). */
export const couponCode = z.string().regex(/^[A-Za-z0-9_-]{3,64}$/, 'must be 3-64 of A-Z, a-z, 0-9, _ and -');

/** A rate in credits: a decimal string ("2.5") or a JSON number of up to 15 significant digits. */
export const rateInput = z
  .union([z.string(), z.number()])
  .superRefine((value, ctx) => {
    const problem = rateProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .meta({ description: 'credits: non-negative, at most 9 decimal places; a string keeps every digit exact' });

/** A price book version name, as in paths. */
export const priceVersion = z
  .string()
  .regex(VERSION_PATTERN, 'must be 1-64 of A-Z, a-z, 0-9, ".", "_" and "-", starting with a letter or digit');

export const sku = z
  .string()
  .regex(SKU_PATTERN, 'must be 1-200 of A-Z, a-z, 0-9 and ._:/@~+- starting with a letter or digit');

const tokenRates = <R extends z.ZodType>(r: R) =>
  z
    .object({
      input: r,
      cacheRead: r.optional(),
      cacheWrite: r.optional(),
      output: r,
      reasoning: r.optional(),
    })
    .strict();

/** A price item as an admin writes it: per 1,000,000 tokens (token SKUs) or per unit (unit SKUs). */
export const priceItemInput = z.discriminatedUnion('kind', [
  z
    .object({
      sku,
      kind: z.literal('tokens'),
      rates: tokenRates(rateInput),
      perRequest: rateInput.optional(),
    })
    .strict(),
  z.object({ sku, kind: z.literal('unit'), unitCredits: rateInput }).strict(),
]);

/** A stored price item; rates are exact decimal strings. The same shape is accepted back as a new draft. */
export const priceItemSchema = z.discriminatedUnion('kind', [
  z.object({
    sku: z.string(),
    kind: z.literal('tokens'),
    rates: tokenRates(z.string()),
    perRequest: z.string().optional(),
  }),
  z.object({ sku: z.string(), kind: z.literal('unit'), unitCredits: z.string() }),
]);

export const priceBookSummarySchema = z.object({
  version: z.string(),
  status: z.enum(['draft', 'active', 'retired']),
  itemCount: z.number().int(),
  createdAt: z.string(),
  activatedAt: z.string().nullable(),
  retiredAt: z.string().nullable(),
});

export const priceBookSchema = priceBookSummarySchema.extend({ items: z.array(priceItemSchema) });

const tokenCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * Usage as genai-prices counts it: inputTokens is the whole input (cache reads and writes are parts of it),
 * reasoningTokens part of outputTokens; or units for a unit SKU. Which fields a SKU needs is checked with it.
 */
export const usageSchema = z
  .object({
    inputTokens: tokenCount.optional(),
    cacheReadTokens: tokenCount.optional(),
    cacheWriteTokens: tokenCount.optional(),
    outputTokens: tokenCount.optional(),
    reasoningTokens: tokenCount.optional(),
    units: tokenCount.optional(),
  })
  .strict();

export const costLineSchema = z.object({
  pool: z.enum(['input', 'cacheRead', 'cacheWrite', 'output', 'reasoning', 'request', 'units']),
  quantity: z.number().int(),
  rate: z.string(),
  credits: z.string(),
});

/** One group of usage statistics: credits, events and each token pool. */
export const usageRowSchema = z.object({
  key: z.string(),
  credits: z.number().int(),
  events: z.number().int(),
  inputTokens: z.number().int(),
  cacheReadTokens: z.number().int(),
  cacheWriteTokens: z.number().int(),
  outputTokens: z.number().int(),
  reasoningTokens: z.number().int(),
  units: z.number().int(),
});
