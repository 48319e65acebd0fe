import { type Kysely, sql } from 'kysely';
import type { Trx } from '../db/locks.js';
import type { Account, Database, Hold } from '../db/schema.js';
import {
  AccountFrozenError,
  AccountNotFoundError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  ServiceError,
} from '../errors.js';

/**
 * Every debit is one call of a database function: a spend, a hold's creation or a hold's capture of
 * `debit_credits` (migrations/2026-12-13-usage-batch.ts, first 2026-12-12-debit-function.ts), a batch of usage
 * events of `debit_usage` (the same migration). Each does the account lock, the idempotency check, the plan's
 * rate limit and caps, the balance check, the entry and its draws on grants, the day's total, the kind's own
 * row and the balance and cap events, in one round trip. On a pool (`db`) a call runs alone in its own
 * transaction, so the account lock is held for that call and its commit; in a caller's transaction (`trx`),
 * it joins it. This module holds the calls (`callDebit`, and `callUsageDebits` for `debit_usage`'s batches)
 * and what their answers mean; shared/ledger's `debit` and `debitUsage` run them with the preparations they
 * ask for, and are what the ledger, shared/holds and shared/usage call.
 */

export type DebitKind = 'spend' | 'hold' | 'capture' | 'usage';

/** What one debit asks of `debit_credits`. */
export interface DebitCall {
  readonly kind: DebitKind;
  /** The account: its id (a caller holding its lock), its user, or (capture) the hold's. */
  readonly accountId?: string;
  readonly userId?: string;
  readonly holdId?: string;
  /** spend: the Idempotency-Key; hold: the Idempotency-Key; usage: the event id. */
  readonly reference?: string;
  /** spend: the amount; hold: the credits reserved; capture: the actual cost; usage: the event's credits. */
  readonly credits: number;
  /**
   * usage: the event could not be priced. The function answers `unpriced` (UnpricedError) unless a refusal
   * that comes first applies (no account, another payload under its id, a frozen account).
   */
  readonly unpriced?: boolean;
  /** The hash of the request (spend, hold, capture) or the event's payload (usage) replays are checked by. */
  readonly hash: string;
  /** The kind's own fields (description, metadata, sku, priceVersion, ttlSeconds, occurredAt, usage). */
  readonly item?: Readonly<Record<string, unknown>>;
  readonly now: Date;
}

/**
 * What a debit asks of the account's plan (shared/plans implements it; the ledger, holds and usage pass it
 * without knowing plans): the catalog the database function applies, and the two steps that stay in
 * TypeScript, each under the account lock.
 */
export interface DebitGuard {
  /** The plans as `debit_credits` reads them (`{default, plans: {id: plan}}`, JSON text); null: no plan. */
  readonly plansJson: string | null;
  /** Grants the month's allowance that is due (the function asked for it before admitting the debit). */
  grantAllowance(trx: Trx, account: Account): Promise<void>;
  /** After a debit of an account with a saved card: starts its auto top-up when `available` calls for one. */
  topUp(trx: Trx, account: Account, available: number): Promise<void>;
  /**
   * That step failed after the debit had committed (its own transaction): the debit stands and is answered;
   * the next debit below the threshold starts the top-up.
   */
  noteTopUpFailure(error: unknown): void;
  /** Told how many events the debit wrote to the outbox (the caller flushes it after commit). */
  noteEmitted(count: number): void;
}

/** No plan: every debit admitted as asked (direct callers: the tests of the ledger itself, scripts). */
export const UNLIMITED: DebitGuard = {
  plansJson: null,
  grantAllowance: async () => {},
  topUp: async () => {},
  noteTopUpFailure: () => {},
  noteEmitted: () => {},
};

/** One cap on an account: what it allows, what is used and held against it, and when it resets. */
export interface CapState {
  readonly period: 'day' | 'month';
  readonly limit: number;
  readonly used: number;
  readonly held: number;
  readonly remaining: number;
  readonly resetsAt: Date;
  readonly source: 'plan' | 'budget';
}

/** 403 spend_cap_reached for the cap a debit of `credits` would pass. */
export function capReached(cap: CapState, credits: number): ServiceError {
  const what =
    cap.source === 'budget' ? 'monthly budget' : `${cap.period === 'day' ? 'daily' : 'monthly'} cap`;
  return new ServiceError(
    'spend_cap_reached',
    `${credits} credits would pass the ${what} of ${cap.limit}: ${cap.used} used and ${cap.held} held this ` +
      `${cap.period} leave ${cap.remaining}; it resets at ${cap.resetsAt.toISOString()}`,
    {
      cap: cap.limit,
      used: cap.used,
      held: cap.held,
      remaining: cap.remaining,
      requested: credits,
      period: cap.period,
      source: cap.source,
      resetsAt: cap.resetsAt.toISOString(),
    },
  );
}

export interface AccountJson {
  readonly id: string;
  readonly balance: number;
  readonly version: number;
}

type HoldJson = { readonly [K in keyof Hold]: Hold[K] extends Date | null ? string | null : Hold[K] };

interface EntryJson {
  readonly id: number;
  readonly amount: number;
  readonly balance_after: number;
  readonly created_at: string;
}

/** What `debit_credits` answers, and `debit_usage` for each event. */
export type Answer =
  | { readonly status: 'allowance_due' | 'expiry_due'; readonly accountId: string }
  /** debit_usage: a later event of an account that asked for a preparation; sent again after it. */
  | { readonly status: 'deferred' }
  | {
      readonly status:
        | 'account_not_found'
        | 'hold_not_found'
        | 'idempotency_conflict'
        | 'account_frozen'
        | 'hold_voided'
        | 'hold_already_captured'
        | 'unpriced'
        | 'prices_changed';
    }
  | { readonly status: 'insufficient_credits'; readonly balance: number; readonly held: number }
  | {
      readonly status: 'rate_limited';
      readonly planId: string;
      readonly limit: number;
      readonly retryAfterSeconds: number;
    }
  | { readonly status: 'spend_cap_reached'; readonly cap: Omit<CapState, 'resetsAt'> & { resetsAt: string } }
  | {
      readonly status: 'applied' | 'replayed';
      readonly account: AccountJson;
      /** Credits active holds reserve (a capture's own hold excluded). */
      readonly held?: number;
      readonly availableAfter?: number;
      readonly events?: number;
      /** Credits debited (a hold: reserved); a replayed usage event: what it debited the first time. */
      readonly credits?: number;
      readonly topUp?: boolean;
      /** The entry written, if any (debit_usage answers null for a usage event of no credits). */
      readonly entry?: EntryJson | null;
      readonly hold?: HoldJson;
    };

/** A debit done (or replayed): what the callers answer with. */
export interface Debited {
  readonly replayed: boolean;
  readonly accountId: string;
  readonly balance: number;
  /** `available` now: balance less what active holds reserve. */
  readonly available: number;
  readonly credits: number;
  readonly entry?: {
    readonly id: number;
    readonly amount: number;
    readonly balanceAfter: number;
    readonly createdAt: Date;
  };
  readonly hold?: Hold;
}

export function callDebit(db: Kysely<Database>, call: DebitCall, plansJson: string | null): Promise<Answer> {
  return sql<{ answer: Answer }>`SELECT debit_credits(${call.kind}, ${call.userId ?? null},
      ${call.accountId ?? null}::uuid, ${call.holdId ?? null}::uuid, ${call.reference ?? null},
      ${call.credits}::bigint, ${call.hash}, ${call.item ? JSON.stringify(call.item) : null}::jsonb,
      ${plansJson}::jsonb, ${call.now}::timestamptz) AS answer`
    .execute(db)
    .then((result) => result.rows[0]!.answer);
}

/** A usage event that could not be priced, and nothing refused it before that: the caller says why. */
export class UnpricedError extends Error {
  constructor() {
    super('the usage event could not be priced');
  }
}

/**
 * A debit priced by a price book version that was not active at its instant (a hold: now; a usage event: its
 * occurredAt), one activated since the caller last read the books: nothing was written; price it again from
 * the database.
 */
export class PricesChangedError extends Error {
  constructor() {
    super('a price book was activated since the batch was priced');
  }
}

/**
 * Runs `work` (pricing, then the debit) priced from what the process last read of the price books, and once
 * more priced from the database (`fresh`) when its debit answers PricesChangedError.
 */
export async function pricedAgainIfChanged<T>(work: (fresh: boolean) => Promise<T>): Promise<T> {
  try {
    return await work(false);
  } catch (error: unknown) {
    if (!(error instanceof PricesChangedError)) throw error;
    return work(true);
  }
}

/** `debit_usage` for usage calls (each naming its user): one answer per call, in order. */
export function callUsageDebits(
  db: Kysely<Database>,
  calls: readonly DebitCall[],
  plansJson: string | null,
  now: Date,
  checkPrices: boolean,
): Promise<Answer[]> {
  const events = calls.map((call) => ({
    user: call.userId,
    reference: call.reference,
    credits: call.unpriced ? null : call.credits,
    hash: call.hash,
    item: call.item ?? null,
  }));
  return sql<{ answers: Answer[] | 'prices_changed' }>`SELECT debit_usage(${JSON.stringify(events)}::jsonb,
      ${plansJson}::jsonb, ${now}::timestamptz, ${checkPrices}) AS answers`
    .execute(db)
    .then((result) => {
      const { answers } = result.rows[0]!;
      if (answers === 'prices_changed') throw new PricesChangedError();
      return answers;
    });
}

export function refusal(call: DebitCall, answer: Answer): Error {
  switch (answer.status) {
    case 'account_not_found':
      return new AccountNotFoundError(
        call.userId === undefined ? `id ${call.accountId}` : `user ${JSON.stringify(call.userId)}`,
      );
    case 'hold_not_found':
      return new ServiceError('not_found', `no hold ${call.holdId}`);
    case 'idempotency_conflict':
      return call.kind === 'usage'
        ? new ServiceError(
            'idempotency_conflict',
            `event ${call.reference} was recorded with another payload`,
          )
        : new IdempotencyConflictError(call.reference!);
    case 'account_frozen':
      return new AccountFrozenError();
    case 'hold_voided':
      return new ServiceError('hold_voided', `hold ${call.holdId} was voided`);
    case 'unpriced':
      return new UnpricedError();
    case 'prices_changed':
      return new PricesChangedError();
    case 'hold_already_captured':
      return new ServiceError(
        'hold_already_captured',
        `hold ${call.holdId} was captured with another request`,
      );
    case 'insufficient_credits':
      return new InsufficientCreditsError(answer.balance, call.credits, answer.held);
    case 'rate_limited':
      return new ServiceError(
        'rate_limited',
        `plan ${answer.planId} admits ${answer.limit} spends and holds per minute; retry in ${answer.retryAfterSeconds} s`,
        { limit: answer.limit, retryAfterSeconds: answer.retryAfterSeconds },
      );
    case 'spend_cap_reached':
      return capReached({ ...answer.cap, resetsAt: new Date(answer.cap.resetsAt) }, call.credits);
    default:
      return new Error(`debit_credits answered ${JSON.stringify(answer)}`);
  }
}

const dateOrNull = (value: string | null) => (value === null ? null : new Date(value));

export function holdOf(json: HoldJson): Hold {
  return {
    ...json,
    expires_at: new Date(json.expires_at!),
    created_at: new Date(json.created_at!),
    settled_at: dateOrNull(json.settled_at),
  } as Hold;
}
