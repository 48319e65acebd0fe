import { type Kysely, sql } from 'kysely';
import { requestHashOf } from '../credits.js';
import type { Database } from '../db/schema.js';
import { type ErrorCode, ServiceError, ValidationError } from '../errors.js';
import {
  type DebitCall,
  type DebitGuard,
  pricedAgainIfChanged,
  UNLIMITED,
  UnpricedError,
} from '../ledger/debit.js';
import { debitUsage } from '../ledger/ledger.js';
import { costAtPrice, type Usage } from '../pricing/cost.js';
import { type Price, pricesAt } from '../pricing/price-book.js';

/**
 * The home of `usage_events` and `usage_rollups`: each event is priced with the version active at its
 * `occurredAt`, then debited and counted in its hour's rollup by the database's debit function, the batch in
 * one transaction (its accounts locked in one order, so batches never deadlock); an event id is applied at
 * most once per account.
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

/**
 * Applies a batch of usage events and answers for each, in order; never throws for what DESIGN answers item
 * by item. Priced from what this process knows of the price books (each at its occurredAt; `pricesAt`),
 * then debited in one call of the database's `debit_usage` (shared/ledger's debitUsage), which checks those
 * versions: one round trip and one transaction for the batch.
 */
export async function recordUsageEvents(
  db: Kysely<Database>,
  inputs: readonly UsageEventInput[],
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<UsageOutcome[]> {
  return pricedAgainIfChanged(async (fresh) =>
    debitPriced(db, inputs, await pricedAt(db, inputs, fresh), now, guard),
  );
}

/** Each event's price at its occurredAt (undefined for raw debits and for SKUs no version then had). */
async function pricedAt(
  db: Kysely<Database>,
  inputs: readonly UsageEventInput[],
  fresh: boolean,
): Promise<Map<UsageEventInput, Price | undefined>> {
  const priced = inputs.filter((input) => input.credits === undefined);
  const prices = await pricesAt(
    db,
    priced.map((input) => ({ sku: input.sku!, at: input.occurredAt })),
    { fresh },
  );
  return new Map(priced.map((input, at) => [input, prices[at]]));
}

async function debitPriced(
  db: Kysely<Database>,
  inputs: readonly UsageEventInput[],
  priceOf: ReadonlyMap<UsageEventInput, Price | undefined>,
  now: Date,
  guard: DebitGuard,
): Promise<UsageOutcome[]> {
  // An event that cannot be priced still goes to the database: a refusal that comes first (no account,
  // another payload under its id, a frozen account) is its answer; otherwise its pricing error is.
  const pricingErrors = new Map<number, unknown>();
  const calls = inputs.map((input, at) => {
    try {
      return usageCall(input, costOfEvent(input, priceOf.get(input)), now);
    } catch (error: unknown) {
      pricingErrors.set(at, error);
      return usageCall(input, undefined, now);
    }
  });
  const debited = await debitUsage(db, calls, guard, now);
  return debited.map((result, at) => {
    const input = inputs[at]!;
    if (result instanceof UnpricedError) return rejectedOrThrow(input, pricingErrors.get(at));
    if (result instanceof Error) return rejectedOrThrow(input, result);
    return {
      eventId: input.eventId,
      status: result.replayed ? 'duplicate' : 'applied',
      credits: result.credits,
      balance: result.balance,
    };
  });
}

/** The payload an event id is remembered by: the same id with another payload is a conflict. */
const hashOf = (input: UsageEventInput) =>
  requestHashOf({
    sku: input.sku ?? null,
    usage: input.usage ?? null,
    credits: input.credits ?? null,
    occurredAt: input.occurredAt.toISOString(),
    metadata: input.metadata ?? null,
  });

function rejectedOrThrow(input: UsageEventInput, error: unknown): UsageOutcome {
  if (error instanceof ServiceError && ITEM_CODES.includes(error.code)) {
    return { eventId: input.eventId, status: 'rejected', code: error.code, message: error.message };
  }
  throw error;
}

/** The event's credits: explicit, or its usage priced with the version active when it occurred. */
function costOfEvent(
  input: UsageEventInput,
  price: Price | undefined,
): { credits: number; priceVersion: string | null } {
  if (input.credits !== undefined) return { credits: input.credits, priceVersion: null };
  return costAtPrice(
    price,
    input.sku!,
    input.usage!,
    `the price book active at ${input.occurredAt.toISOString()}`,
  );
}

/** The debit of one event; without a cost, one the database answers `unpriced` unless it refuses it first. */
function usageCall(
  input: UsageEventInput,
  cost: { credits: number; priceVersion: string | null } | undefined,
  now: Date,
): DebitCall {
  return {
    kind: 'usage',
    userId: input.userId,
    reference: input.eventId,
    credits: cost?.credits ?? 0,
    ...(cost === undefined && { unpriced: true }),
    hash: hashOf(input),
    // What the event's rollup counts: its hour, its SKU ('' for none) and each token pool.
    item: {
      sku: input.sku ?? null,
      priceVersion: cost?.priceVersion ?? null,
      occurredAt: input.occurredAt.toISOString(),
      usage: input.usage ?? null,
    },
    now,
  };
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
  try {
    return await query.execute();
  } catch (error: unknown) {
    // A name Intl knows and this database's time zone data does not (US/Pacific-New, say).
    if ((error as { code?: string }).code === '22023' && /time zone/.test((error as Error).message)) {
      throw new ValidationError('tz', `is not a time zone this database knows: ${range.tz}`);
    }
    throw error;
  }
}
