import { type Kysely, sql } from 'kysely';
import { findAccountByUserId, heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { requestHashOf } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database } from '../db/schema.js';
import { AccountFrozenError, type ErrorCode, InsufficientCreditsError, ServiceError } from '../errors.js';
import { type DebitGuard, debitMetered, expireDueGrants, UNLIMITED } from '../ledger/ledger.js';
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

const TOKEN_COLUMNS = {
  inputTokens: 'input_tokens',
  cacheReadTokens: 'cache_read_tokens',
  cacheWriteTokens: 'cache_write_tokens',
  outputTokens: 'output_tokens',
  reasoningTokens: 'reasoning_tokens',
  units: 'units',
} as const;

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
  const found = await findAccountByUserId(db, input.userId);
  if (!found)
    throw new ServiceError('account_not_found', `no account for user ${JSON.stringify(input.userId)}`);
  const payloadHash = requestHashOf({
    sku: input.sku ?? null,
    usage: input.usage ?? null,
    credits: input.credits ?? null,
    occurredAt: input.occurredAt.toISOString(),
    metadata: input.metadata ?? null,
  });
  return inAccountTransaction(db, found.id, async (trx, account) => {
    const previous = await trx
      .selectFrom('usage_events')
      .selectAll()
      .where('account_id', '=', account.id)
      .where('event_id', '=', input.eventId)
      .executeTakeFirst();
    if (previous) {
      if (previous.payload_hash !== payloadHash) {
        throw new ServiceError(
          'idempotency_conflict',
          `event ${input.eventId} was recorded with another payload`,
        );
      }
      return {
        eventId: input.eventId,
        status: 'duplicate',
        credits: previous.credits,
        balance: account.balance,
      };
    }
    if (account.status === 'frozen') throw new AccountFrozenError();
    const { credits, priceVersion } = await priceOf(trx, input);
    const held = await heldCredits(trx, account.id, now);
    if (credits > 0) await guard.admit(trx, account, { credits, held, kind: 'usage' });
    const { live } = await expireDueGrants(trx, account, now);
    if (account.balance - held < credits) throw new InsufficientCreditsError(account.balance, credits, held);
    const availableBefore = account.balance - held;
    const entry =
      credits > 0 ? await debitMetered(trx, account, 'usage', input.eventId, credits, live, now) : null;
    if (entry) {
      await guard.settled(trx, account, { credits, availableBefore, availableAfter: account.balance - held });
    }
    await trx
      .insertInto('usage_events')
      .values({
        account_id: account.id,
        event_id: input.eventId,
        payload_hash: payloadHash,
        sku: input.sku ?? null,
        price_version: priceVersion,
        credits,
        entry_id: entry?.id ?? null,
        occurred_at: input.occurredAt,
      })
      .execute();
    await countInRollup(trx, account, input, credits);
    return { eventId: input.eventId, status: 'applied', credits, balance: account.balance };
  });
}

/** Explicit credits, or the usage priced with the version active when it occurred. */
async function priceOf(
  trx: Trx,
  input: UsageEventInput,
): Promise<{ credits: number; priceVersion: string | null }> {
  if (input.credits !== undefined) return { credits: input.credits, priceVersion: null };
  const price = await findPrice(trx, input.sku!, input.occurredAt);
  if (!price) {
    throw new ServiceError(
      'unknown_sku',
      `the price book active at ${input.occurredAt.toISOString()} has no SKU ${JSON.stringify(input.sku)}`,
    );
  }
  const cost = costOf(price, input.usage!);
  return { credits: cost.credits, priceVersion: cost.priceVersion };
}

async function countInRollup(trx: Trx, account: Account, input: UsageEventInput, credits: number) {
  const counts = Object.fromEntries(
    Object.entries(TOKEN_COLUMNS).map(([field, column]) => [
      column,
      input.usage?.[field as keyof Usage] ?? 0,
    ]),
  ) as Record<(typeof TOKEN_COLUMNS)[keyof typeof TOKEN_COLUMNS], number>;
  const hour = new Date(Math.floor(input.occurredAt.getTime() / 3_600_000) * 3_600_000);
  await trx
    .insertInto('usage_rollups')
    .values({ account_id: account.id, hour, sku: input.sku ?? '', credits, events: 1, ...counts })
    .onConflict((oc) =>
      oc.columns(['account_id', 'hour', 'sku']).doUpdateSet({
        credits: sql`usage_rollups.credits + excluded.credits`,
        events: sql`usage_rollups.events + 1`,
        input_tokens: sql`usage_rollups.input_tokens + excluded.input_tokens`,
        cache_read_tokens: sql`usage_rollups.cache_read_tokens + excluded.cache_read_tokens`,
        cache_write_tokens: sql`usage_rollups.cache_write_tokens + excluded.cache_write_tokens`,
        output_tokens: sql`usage_rollups.output_tokens + excluded.output_tokens`,
        reasoning_tokens: sql`usage_rollups.reasoning_tokens + excluded.reasoning_tokens`,
        units: sql`usage_rollups.units + excluded.units`,
      }),
    )
    .execute();
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
