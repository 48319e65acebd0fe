import { type Kysely, sql } from 'kysely';
import { heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { requestHashOf } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, Hold } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import { type DebitGuard, UNLIMITED } from '../ledger/debit.js';
import { debit } from '../ledger/ledger.js';

/**
 * The only writer of `holds`: credits reserved before a long call and settled after it. A hold counts against
 * `available` while active and before `expires_at`, exact to the millisecond, whether or not the sweeper has
 * marked it expired. Every change happens in its account's transaction, under the account lock.
 */

export const HOLD_TTL = { min: 1, max: 24 * 3600, default: 600 } as const;

export interface NewHold {
  readonly credits: number;
  readonly idempotencyKey: string;
  /** What identifies the request for replays (the body as the caller sent it). */
  readonly request: unknown;
  readonly ttlSeconds: number;
  readonly sku?: string | null;
  readonly priceVersion?: string | null;
  readonly description?: string | null;
  readonly metadata?: Record<string, unknown> | null;
}

/** The effective status at `now`: an active hold past its expiry is expired, sweeper or not. */
export const statusAt = (hold: Hold, now: Date) =>
  hold.status === 'active' && hold.expires_at.getTime() <= now.getTime() ? 'expired' : hold.status;

/**
 * Reserves credits of a user's account, in one round trip of its own. Same key and request: the first hold
 * again (`replayed`). Same key, other request: 409. More than `available`: 402, nothing written. A frozen
 * account: 403. The plan's rate limit and caps apply (429, 403).
 */
export async function createHold(
  db: Kysely<Database>,
  userId: string,
  input: NewHold,
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<{ hold: Hold; replayed: boolean; balance: number; available: number }> {
  const debited = await debit(
    db,
    {
      kind: 'hold',
      userId,
      reference: input.idempotencyKey,
      credits: input.credits,
      hash: requestHashOf(input.request),
      item: {
        sku: input.sku ?? null,
        priceVersion: input.priceVersion ?? null,
        description: input.description ?? null,
        metadata: input.metadata ?? null,
        ttlSeconds: input.ttlSeconds,
      },
      now,
    },
    guard,
  );
  return {
    hold: debited.hold!,
    replayed: debited.replayed,
    balance: debited.balance,
    available: debited.available,
  };
}

export function findHold(db: Kysely<Database>, holdId: string): Promise<Hold | undefined> {
  return db.selectFrom('holds').selectAll().where('id', '=', holdId).executeTakeFirst();
}

/** Runs `work` in the hold's account transaction, with the hold's row locked and read after the lock. */
async function inHoldTransaction<T>(
  db: Kysely<Database>,
  holdId: string,
  work: (trx: Trx, account: Account, hold: Hold) => Promise<T>,
): Promise<T> {
  const found = await findHold(db, holdId);
  if (!found) throw new ServiceError('not_found', `no hold ${holdId}`);
  return inAccountTransaction(db, found.account_id, async (trx, account) => {
    const hold = await trx
      .selectFrom('holds')
      .selectAll()
      .where('id', '=', holdId)
      .forUpdate()
      .executeTakeFirstOrThrow();
    return work(trx, account, hold);
  });
}

export interface Settlement {
  readonly hold: Hold;
  readonly balance: number;
  readonly available: number;
  /** true when this answer replays an earlier identical capture (or a void of a settled hold). */
  readonly replayed: boolean;
}

/**
 * Captures a hold with its actual cost (`cost`: explicit credits, or a function of the hold pricing its usage
 * at the hold's price version), once, in one round trip of its own. Up to the hold, the rest is released;
 * above it, it takes what `available` and the plan's caps allow and reports the `shortfall`. A capture after
 * the expiry charges like a spend (what is available) and says so. The same request again replays; another
 * request, or a voided hold, is 409.
 */
export async function captureHold(
  db: Kysely<Database>,
  holdId: string,
  request: unknown,
  cost: number | ((hold: Hold) => Promise<number>),
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<Settlement> {
  let credits = typeof cost === 'number' ? cost : 0;
  if (typeof cost === 'function') {
    const hold = await findHold(db, holdId);
    if (!hold) throw new ServiceError('not_found', `no hold ${holdId}`);
    // A settled hold is answered (replay, 409) before its cost: the function never reads it then.
    if (hold.status === 'active' || hold.status === 'expired') credits = await cost(hold);
  }
  const debited = await debit(
    db,
    { kind: 'capture', holdId, credits, hash: requestHashOf(request), now },
    guard,
  );
  return {
    hold: debited.hold!,
    balance: debited.balance,
    available: debited.available,
    replayed: debited.replayed,
  };
}

/** Releases an active hold. Voiding it again, or voiding an expired hold, changes nothing; a captured one is 409. */
export async function voidHold(db: Kysely<Database>, holdId: string, now: Date): Promise<Settlement> {
  return inHoldTransaction(db, holdId, async (trx, account, hold) => {
    if (hold.status === 'captured')
      throw new ServiceError('hold_already_captured', `hold ${holdId} was captured`);
    if (statusAt(hold, now) !== 'active') return settled(trx, account, hold, now, true);
    const voided = await trx
      .updateTable('holds')
      .set({ status: 'voided', settled_at: now, released: hold.credits })
      .where('id', '=', hold.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    return settled(trx, account, voided, now, false);
  });
}

async function settled(
  trx: Trx,
  account: Account,
  hold: Hold,
  now: Date,
  replayed: boolean,
): Promise<Settlement> {
  const held = await heldCredits(trx, account.id, now);
  return { hold, balance: account.balance, available: account.balance - held, replayed };
}

/** The sweeper's part: marks active holds past their expiry expired (they stopped counting already). */
export async function expireDueHolds(db: Kysely<Database>, now: Date): Promise<number> {
  const result = await db
    .updateTable('holds')
    .set({ status: 'expired', settled_at: now })
    .where('status', '=', 'active')
    .where('expires_at', '<=', now)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/**
 * After a clawback took the balance below what active holds reserve, shrinks them (newest first) to what the
 * balance still covers: a reservation cannot outlive the credits it reserved. Their captures then report
 * the shortfall.
 */
export async function shrinkHoldsToBalance(trx: Trx, account: Account, now: Date): Promise<void> {
  let excess = (await heldCredits(trx, account.id, now)) - Math.max(account.balance, 0);
  if (excess <= 0) return;
  const active = await trx
    .selectFrom('holds')
    .select(['id', 'credits'])
    .where('account_id', '=', account.id)
    .where('status', '=', 'active')
    .where('expires_at', '>', now)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
  for (const hold of active) {
    if (excess <= 0) break;
    const cut = Math.min(hold.credits, excess);
    await trx
      .updateTable('holds')
      .set({ credits: sql`credits - ${cut}::bigint` })
      .where('id', '=', hold.id)
      .execute();
    excess -= cut;
  }
}
