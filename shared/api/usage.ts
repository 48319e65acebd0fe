import * as z from 'zod';
import { findOrCreateAccount, requireAccountByUserId } from '../accounts/accounts.js';
import { ValidationError } from '../errors.js';
import { planGuard } from '../plans/plans.js';
import { recordUsageEvents, usageOf } from '../usage/usage.js';
import { afterDebitCommit, type Caller, defineEndpoint, nowOf, ok } from './endpoint.js';
import {
  credits,
  instant,
  metadata,
  sku,
  storableText,
  usageRowSchema,
  usageSchema,
  userIdParams,
} from './schemas.js';

/** How far ahead of the server's clock an event may say it occurred, and how far back. */
const AHEAD_MS = 5 * 60_000;
const BACK_MS = 35 * 86_400_000;
const MAX_EVENTS = 500;

const eventSchema = z
  .object({
    eventId: storableText(255),
    userId: storableText(255),
    sku: sku.optional(),
    usage: usageSchema.optional(),
    credits: credits.optional(),
    occurredAt: instant.optional(),
    metadata: metadata.optional(),
  })
  .strict();

const resultSchema = z.object({
  eventId: z.string(),
  status: z.enum(['applied', 'duplicate', 'rejected']),
  code: z.string().optional(),
  message: z.string().optional(),
  credits: z.number().int().optional(),
  balance: z.number().int().optional(),
});

export const recordUsage = defineEndpoint({
  route: 'POST /v1/usage',
  summary:
    'Records 1-500 usage events: each priced at its occurredAt, the batch debited in one transaction, answered item by item',
  body: z.object({ events: z.array(eventSchema).min(1).max(MAX_EVENTS) }).strict(),
  responses: {
    200: {
      description:
        'one result per event, in order: applied, duplicate (same eventId and payload) or rejected with a code',
      schema: z.object({ results: z.array(resultSchema) }),
    },
  },
  errors: {
    400: 'invalid body: more than 500 events, a malformed event, an occurredAt more than 5 minutes ahead or 35 days back',
    401: 'no IAM identity',
    403: 'not an IAM caller',
  },
  async handle({ body }, deps) {
    const now = nowOf(deps);
    const events = body.events.map((event, i) => {
      const field = `events.${i}`;
      const priced = event.sku !== undefined && event.usage !== undefined;
      if (event.credits !== undefined ? event.usage !== undefined : !priced) {
        throw new ValidationError(`${field}.credits`, 'give credits (a raw debit), or sku and usage');
      }
      const occurredAt = event.occurredAt ?? now;
      if (occurredAt.getTime() > now.getTime() + AHEAD_MS) {
        throw new ValidationError(`${field}.occurredAt`, 'is more than 5 minutes ahead of the server clock');
      }
      if (occurredAt.getTime() < now.getTime() - BACK_MS) {
        throw new ValidationError(`${field}.occurredAt`, 'is more than 35 days back');
      }
      return { ...event, occurredAt };
    });
    const guard = planGuard(deps.config.plans, now, deps.config.packages);
    const results = await recordUsageEvents(deps.db, events, now, guard);
    await afterDebitCommit(deps, guard);
    return ok({ results });
  },
});

const usageQuery = z
  .object({
    from: instant.optional(),
    to: instant.optional(),
    groupBy: z.enum(['day', 'hour', 'sku', 'provider']).default('day'),
    /** Only this SKU (for a chart per model over time). */
    sku: sku.optional(),
    // An IANA name, Area/Location or UTC: offsets (+05:00) and abbreviations (IST) are refused, as Postgres
    // reads them otherwise than Intl does (POSIX signs; IST is Israel to one and India to the other).
    tz: z
      .string()
      .max(64)
      .default('UTC')
      .refine((tz) => {
        if (!/^(UTC|[A-Za-z]+(\/[A-Za-z0-9_+-]+)+)$/.test(tz)) return false;
        try {
          new Intl.DateTimeFormat('en', { timeZone: tz });
          return true;
        } catch {
          return false;
        }
      }, 'must be an IANA time zone name (Area/Location, e.g. Europe/Berlin) or UTC'),
  })
  .strict();

const usageResponse = z.object({
  from: z.string(),
  to: z.string(),
  groupBy: z.enum(['day', 'hour', 'sku', 'provider']),
  tz: z.string(),
  items: z.array(usageRowSchema),
});

async function usageAnswer(
  db: Parameters<typeof usageOf>[0],
  accountId: string,
  query: z.infer<typeof usageQuery>,
  now: Date,
) {
  const to = query.to ?? now;
  const from = query.from ?? new Date(to.getTime() - 30 * 86_400_000);
  if (!(from < to)) throw new ValidationError('from', 'must be before to');
  const items = await usageOf(db, accountId, {
    from,
    to,
    groupBy: query.groupBy,
    tz: query.tz,
    sku: query.sku,
  });
  return { from: from.toISOString(), to: to.toISOString(), groupBy: query.groupBy, tz: query.tz, items };
}

const userId = (caller: Caller) => (caller.kind === 'user' ? caller.userId : '');

export const getMyUsage = defineEndpoint({
  route: 'GET /v1/me/usage',
  summary:
    "The caller's usage from the hourly rollups in [from, to) (default: the last 30 days), by day or hour in tz, SKU or provider; optionally of one SKU",
  query: usageQuery,
  responses: { 200: { description: 'usage', schema: usageResponse } },
  errors: { 400: 'bad range, groupBy or tz', 401: 'no user token' },
  async handle({ caller, query }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    return ok(await usageAnswer(deps.db, account.id, query, nowOf(deps)));
  },
});

export const getAccountUsage = defineEndpoint({
  route: 'GET /v1/admin/accounts/{userId}/usage',
  summary: "An account's usage, as GET /v1/me/usage answers it",
  params: userIdParams,
  query: usageQuery,
  responses: { 200: { description: 'usage', schema: usageResponse } },
  errors: {
    400: 'bad range, groupBy or tz',
    401: 'no IAM identity',
    403: 'not an admin principal',
    404: 'no such account',
  },
  async handle({ params, query }, deps) {
    const account = await requireAccountByUserId(deps.db, params.userId);
    return ok(await usageAnswer(deps.db, account.id, query, nowOf(deps)));
  },
});
