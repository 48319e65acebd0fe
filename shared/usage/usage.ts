import { type Kysely, sql } from 'kysely';
import { requestHashOf } from '../credits.js';
import type { Database } from '../db/schema.js';
import { type ErrorCode, ServiceError } from '../errors.js';
import { type DebitGuard, UNLIMITED } from '../ledger/debit.js';
import { debit } from '../ledger/ledger.js';
import { costOf, type Usage } from '../pricing/cost.js';
import { findPrice } from '../pricing/price-book.js';

/**
 * The only writer of `usage_events` and `usage_rollups`. Each event is priced with the version active at its
 * `occurredAt`, debited in its own account's transaction (so a batch never holds two account locks) and
 * counted in its hour's rollup in that same transaction; an event id is applied at most once per account.
 */

export interface UsageEventInput {
  readonly eventId: string;
  readonly userId: string;
  readonly sku?: string;
  readonly usage?: Usage;
  /** A raw debit: these credits, no pricing. */
  readonly credits?: number;
  readonly occurredAt: Date;
  readonly metadata?: Record<string, unknown>;
}

export type UsageOutcome =
  | {
      readonly eventId: string;
      readonly status: 'applied' | 'duplicate';
      readonly credits: number;
      readonly balance: number;
    }
  | {
      readonly eventId: string;
      readonly status: 'rejected';
      readonly code: ErrorCode;
      readonly message: string;
    };

/** The item codes DESIGN names; anything else is a failure of the request, not of the item. */
const ITEM_CODES: readonly ErrorCode[] = [
  'idempotency_conflict',
  'unknown_sku',
  'insufficient_credits',
  'account_not_found',
  'account_frozen',
  'invalid_usage',
  'spend_cap_reached',
];

/** Applies one usage event and answers for it; never throws for what DESIGN answers item by item. */
export async function recordUsageEvent(
  db: Kysely<Database>,
  input: UsageEventInput,
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<UsageOutcome> {
  try {
    return await applyUsageEvent(db, input, now, guard);
  } catch (error: unknown) {
    if (error instanceof ServiceError && ITEM_CODES.includes(error.code)) {
      return { eventId: input.eventId, status: 'rejected', code: error.code, message: error.message };
    }
    throw error;
  }
}

async function applyUsageEvent(
  db: Kysely<Database>,
  input: UsageEventInput,
  now: Date,
  guard: DebitGuard,
): Promise<UsageOutcome> {
  const payloadHash = requestHashOf({
    sku: input.sku ?? null,
    usage: input.usage ?? null,
    credits: input.credits ?? null,
    occurredAt: input.occurredAt.toISOString(),
    metadata: input.metadata ?? null,
  });
  const { credits, priceVersion } = await priceOf(db, input);
  const debited = await debit(
    db,
    {
      kind: 'usage',
      userId: input.userId,
      reference: input.eventId,
      credits,
      hash: payloadHash,
      // What the event's rollup counts: its hour, its SKU ('' for none) and each token pool.
      item: {
        sku: input.sku ?? null,
        priceVersion,
        occurredAt: input.occurredAt.toISOString(),
        usage: input.usage ?? null,
      },
      now,
    },
    guard,
  );
  return {
    eventId: input.eventId,
    status: debited.replayed ? 'duplicate' : 'applied',
    credits: debited.credits,
    balance: debited.balance,
  };
}

/** Explicit credits, or the usage priced with the version active when it occurred. */
async function priceOf(
  db: Kysely<Database>,
  input: UsageEventInput,
): Promise<{ credits: number; priceVersion: string | null }> {
  if (input.credits !== undefined) return { credits: input.credits, priceVersion: null };
  const price = await findPrice(db, input.sku!, input.occurredAt);
  if (!price) {
    throw new ServiceError(
      'unknown_sku',
      `the price book active at ${input.occurredAt.toISOString()} has no SKU ${JSON.stringify(input.sku)}`,
    );
  }
  const cost = costOf(price, input.usage!);
  return { credits: cost.credits, priceVersion: cost.priceVersion };
}

export type UsageGrouping = 'day' | 'hour' | 'sku' | 'provider';

export interface UsageRow {
  readonly key: string;
  readonly credits: number;
  readonly events: number;
  readonly inputTokens: number;
  readonly cacheReadTokens: number;
  readonly cacheWriteTokens: number;
  readonly outputTokens: number;
  readonly reasoningTokens: number;
  readonly units: number;
}

/**
 * An account's usage from its rollups in [from, to), grouped by day or hour (in `tz`, any IANA zone), SKU or
 * provider (the SKU's part before its first `/`; `(none)` for product features).
 */
export async function usageOf(
  db: Kysely<Database>,
  accountId: string,
  range: {
    readonly from: Date;
    readonly to: Date;
    readonly groupBy: UsageGrouping;
    readonly tz: string;
    /** Only this SKU's rollups. */
    readonly sku?: string;
  },
): Promise<UsageRow[]> {
  const key = {
    hour: sql<string>`to_char(hour AT TIME ZONE ${range.tz}, 'YYYY-MM-DD"T"HH24:00')`,
    day: sql<string>`to_char(hour AT TIME ZONE ${range.tz}, 'YYYY-MM-DD')`,
    sku: sql<string>`CASE WHEN sku = '' THEN '(none)' ELSE sku END`,
    provider: sql<string>`CASE WHEN position('/' in sku) > 1 THEN split_part(sku, '/', 1) ELSE '(none)' END`,
  }[range.groupBy];
  const sum = (column: string) => sql<number>`sum(${sql.ref(column)})::bigint`;
  let query = db
    .selectFrom('usage_rollups')
    .select([
      key.as('key'),
      sum('credits').as('credits'),
      sum('events').as('events'),
      sum('input_tokens').as('inputTokens'),
      sum('cache_read_tokens').as('cacheReadTokens'),
      sum('cache_write_tokens').as('cacheWriteTokens'),
      sum('output_tokens').as('outputTokens'),
      sum('reasoning_tokens').as('reasoningTokens'),
      sum('units').as('units'),
    ])
    .where('account_id', '=', accountId)
    .where('hour', '>=', range.from)
    .where('hour', '<', range.to)
    .groupBy(sql`1`)
    .orderBy(sql`1`);
  if (range.sku !== undefined) query = query.where('sku', '=', range.sku);
  return query.execute();
}
