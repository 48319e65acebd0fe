import * as z from 'zod';
import type { Hold } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import {
  captureHold,
  createHold,
  findHold,
  HOLD_TTL,
  type Settlement,
  statusAt,
  voidHold,
} from '../holds/holds.js';
import { pricedAgainIfChanged } from '../ledger/debit.js';
import { planGuard } from '../plans/plans.js';
import { costAtPrice, priceUsageAt } from '../pricing/cost.js';
import { findPriceInVersion } from '../pricing/price-book.js';
import { afterDebitCommit, defineEndpoint, nowOf, ok } from './endpoint.js';
import { credits, metadata, sku, storableText, usageSchema, userIdParams } from './schemas.js';
import { idempotencyKeyOf } from './spend.js';

const holdView = (hold: Hold, now: Date) => ({
  holdId: hold.id,
  status: statusAt(hold, now),
  credits: hold.credits,
  requestedCredits: hold.requested_credits,
  sku: hold.sku,
  priceVersion: hold.price_version,
  expiresAt: hold.expires_at.toISOString(),
  createdAt: hold.created_at.toISOString(),
  capturedCredits: hold.captured_credits,
  released: hold.released,
  shortfall: hold.shortfall,
});

const holdSchema = z.object({
  holdId: z.string(),
  status: z.enum(['active', 'captured', 'voided', 'expired']),
  credits: z.number().int(),
  requestedCredits: z.number().int(),
  sku: z.string().nullable(),
  priceVersion: z.string().nullable(),
  expiresAt: z.string(),
  createdAt: z.string(),
  capturedCredits: z.number().int().nullable(),
  released: z.number().int().nullable(),
  shortfall: z.number().int().nullable(),
});

/** `{credits}` or `{sku, usage}`, never both or neither. */
const amountOf = <T extends { credits?: number; sku?: string; usage?: unknown }>(body: T) => {
  const priced = body.sku !== undefined || body.usage !== undefined;
  if (body.credits !== undefined && priced)
    throw new ValidationError('credits', 'give credits or sku and usage, not both');
  if (body.credits === undefined && !(body.sku !== undefined && body.usage !== undefined)) {
    throw new ValidationError('credits', 'give credits, or sku and usage');
  }
};

const serviceErrors = { 401: 'no IAM identity', 403: 'not an IAM caller' } as const;

export const createHoldEndpoint = defineEndpoint({
  route: 'POST /v1/accounts/{userId}/holds',
  summary:
    'Reserves credits before a long call: {credits}, or {sku, usage} priced now. The same Idempotency-Key and body replay the first hold',
  params: userIdParams,
  headers: {
    'idempotency-key': {
      required: true,
      description: '1-255 visible ASCII characters; the same key and body replay the first answer',
    },
  },
  body: z
    .object({
      credits: credits.optional(),
      sku: sku.optional(),
      usage: usageSchema.optional(),
      ttlSeconds: z.number().int().min(HOLD_TTL.min).max(HOLD_TTL.max).default(HOLD_TTL.default),
      description: storableText(500).optional(),
      metadata: metadata.optional(),
    })
    .strict(),
  responses: {
    201: {
      description: 'the hold (or the replay of the first request with this key: Idempotent-Replayed: true)',
      schema: z.object({
        holdId: z.string(),
        credits: z.number().int(),
        status: z.enum(['active', 'captured', 'voided', 'expired']),
        expiresAt: z.string(),
        priceVersion: z.string().nullable(),
        balance: z.number().int(),
        available: z.number().int(),
      }),
    },
  },
  errors: {
    ...serviceErrors,
    400: 'invalid body or Idempotency-Key; a TTL outside 1 s to 24 h',
    402: 'not enough credits available (the body carries the balance and what is available)',
    403: "account frozen, the plan's spend cap or the user's budget reached (spend_cap_reached), or not an IAM caller",
    404: 'no account for this user',
    409: 'Idempotency-Key used before with another body',
    429: "the plan's rate limit (rate_limited; Retry-After says when)",
    422: 'a SKU the active price book does not list (unknown_sku)',
  },
  async handle({ params, body, headers }, deps) {
    const key = idempotencyKeyOf(headers);
    amountOf(body);
    const now = nowOf(deps);
    const guard = planGuard(deps.config.plans, now, deps.config.packages);
    const create = async (fresh: boolean) => {
      const cost =
        body.sku && body.usage ? await priceUsageAt(deps.db, body.sku, body.usage, now, fresh) : undefined;
      return createHold(
        deps.db,
        params.userId,
        {
          credits: cost?.credits ?? body.credits!,
          idempotencyKey: key,
          request: body,
          ttlSeconds: body.ttlSeconds,
          sku: body.sku ?? null,
          priceVersion: cost?.priceVersion ?? null,
          description: body.description ?? null,
          metadata: body.metadata ?? null,
        },
        now,
        guard,
      );
    };
    // Priced from what this process read of the price books; once more from the database if a version was
    // activated since (the debit checks it).
    const result = await pricedAgainIfChanged(create);
    await afterDebitCommit(deps, guard);
    return ok(
      {
        holdId: result.hold.id,
        credits: result.hold.credits,
        status: statusAt(result.hold, now),
        expiresAt: result.hold.expires_at.toISOString(),
        priceVersion: result.hold.price_version,
        balance: result.balance,
        available: result.available,
      },
      201,
      result.replayed ? { 'idempotent-replayed': 'true' } : undefined,
    );
  },
});

const holdParams = z.object({ holdId: z.uuid() }).strict();

export const getHold = defineEndpoint({
  route: 'GET /v1/holds/{holdId}',
  summary: 'A hold, with its status at this moment (an active hold past its expiry is expired)',
  params: holdParams,
  responses: { 200: { description: 'the hold', schema: holdSchema } },
  errors: { ...serviceErrors, 400: 'not a hold id', 404: 'no such hold' },
  async handle({ params }, deps) {
    const hold = await findHold(deps.db, params.holdId);
    if (!hold) throw new ServiceError('not_found', `no hold ${params.holdId}`);
    return ok(holdView(hold, nowOf(deps)));
  },
});

const settlementSchema = z.object({
  holdId: z.string(),
  status: z.enum(['active', 'captured', 'voided', 'expired']),
  credits: z.number().int(),
  released: z.number().int(),
  shortfall: z.number().int(),
  expired: z.boolean(),
  balance: z.number().int(),
  available: z.number().int(),
});

const settlementView = (s: Settlement, now: Date) => ({
  holdId: s.hold.id,
  status: statusAt(s.hold, now),
  credits: s.hold.captured_credits ?? 0,
  released: s.hold.released ?? 0,
  shortfall: s.hold.shortfall ?? 0,
  expired: s.hold.captured_after_expiry ?? statusAt(s.hold, now) === 'expired',
  balance: s.balance,
  available: s.available,
});

export const captureHoldEndpoint = defineEndpoint({
  route: 'POST /v1/holds/{holdId}/capture',
  summary:
    "Settles a hold with the actual cost ({credits}, or {usage} at the hold's price version): the rest is released; above the hold it takes what is available and reports the shortfall",
  params: holdParams,
  body: z.object({ credits: credits.optional(), usage: usageSchema.optional() }).strict(),
  responses: {
    200: {
      description: 'captured (the same body again replays: Idempotent-Replayed: true)',
      schema: settlementSchema,
    },
  },
  errors: {
    ...serviceErrors,
    400: 'invalid body: credits or usage, one of them; usage for a hold without a SKU',
    404: 'no such hold',
    409: 'captured before with another body, or voided',
    422: "the SKU is not in the hold's price book",
  },
  async handle({ params, body }, deps) {
    if ((body.credits === undefined) === (body.usage === undefined)) {
      throw new ValidationError('credits', 'give credits or usage, one of them');
    }
    const now = nowOf(deps);
    const guard = planGuard(deps.config.plans, now, deps.config.packages);
    const settlement = await captureHold(
      deps.db,
      params.holdId,
      body,
      body.credits ??
        (async (hold) => {
          if (!hold.sku || !hold.price_version) {
            throw new ValidationError('usage', 'this hold has no SKU: capture it with credits');
          }
          const price = await findPriceInVersion(deps.db, hold.sku, hold.price_version);
          return costAtPrice(price, hold.sku, body.usage!, `price book ${hold.price_version}`).credits;
        }),
      now,
      guard,
    );
    await afterDebitCommit(deps, guard);
    return ok(
      settlementView(settlement, now),
      200,
      settlement.replayed ? { 'idempotent-replayed': 'true' } : undefined,
    );
  },
});

export const voidHoldEndpoint = defineEndpoint({
  route: 'POST /v1/holds/{holdId}/void',
  summary: 'Releases a hold; voiding a voided or expired hold changes nothing',
  params: holdParams,
  responses: { 200: { description: 'the hold, released', schema: settlementSchema } },
  errors: {
    ...serviceErrors,
    400: 'not a hold id, or a body sent (this route takes none)',
    404: 'no such hold',
    409: 'the hold was captured',
  },
  async handle({ params }, deps) {
    const now = nowOf(deps);
    return ok(settlementView(await voidHold(deps.db, params.holdId, now), now));
  },
});
