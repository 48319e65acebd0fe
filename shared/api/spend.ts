import * as z from 'zod';
import { ValidationError } from '../errors.js';
import { spendUserCredits } from '../ledger/ledger.js';
import { planGuard } from '../plans/plans.js';
import { afterDebitCommit, defineEndpoint, nowOf, ok } from './endpoint.js';
import { credits, metadata, storableText, userIdParams } from './schemas.js';

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The Idempotency-Key header, required: 1-255 visible ASCII characters. */
export function idempotencyKeyOf(headers: Readonly<Record<string, string | undefined>>): string {
  const key = headers['idempotency-key'];
  if (!key || !IDEMPOTENCY_KEY.test(key)) {
    throw new ValidationError('Idempotency-Key', 'header is required: 1-255 visible ASCII characters');
  }
  return key;
}

export const spend = defineEndpoint({
  route: 'POST /v1/accounts/{userId}/spend',
  summary: "Spends a user's credits (service callers). Idempotency-Key makes retries safe",
  params: userIdParams,
  headers: {
    'idempotency-key': {
      required: true,
      description: '1-255 visible ASCII characters; the same key and body replay the first answer',
    },
  },
  body: z
    .object({ amount: credits, description: storableText(500).optional(), metadata: metadata.optional() })
    .strict(),
  responses: {
    200: {
      description: 'spent (or the replay of the first request with this key: Idempotent-Replayed: true)',
      schema: z.object({
        entryId: z.number().int(),
        amount: z.number().int(),
        balance: z.number().int(),
        createdAt: z.string(),
        replayed: z.boolean(),
      }),
    },
  },
  errors: {
    400: 'invalid body or Idempotency-Key',
    401: 'no IAM identity',
    402: 'insufficient credits (the body carries the balance)',
    403: "account frozen, the plan's spend cap or the user's budget reached (spend_cap_reached), or not an IAM caller",
    404: 'no account for this user',
    409: 'Idempotency-Key used before with another body',
    429: "the plan's rate limit (rate_limited; Retry-After says when)",
  },
  async handle({ params, body, headers }, deps) {
    const key = idempotencyKeyOf(headers);
    const now = nowOf(deps);
    const guard = planGuard(deps.config.plans, now, deps.config.packages);
    const result = await spendUserCredits(
      deps.db,
      params.userId,
      {
        amount: body.amount,
        idempotencyKey: key,
        description: body.description ?? null,
        metadata: body.metadata ?? null,
      },
      now,
      guard,
    );
    await afterDebitCommit(deps, guard);
    return ok(
      { ...result, createdAt: result.createdAt.toISOString() },
      200,
      result.replayed ? { 'idempotent-replayed': 'true' } : undefined,
    );
  },
});
