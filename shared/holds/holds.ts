import { type Kysely, sql } from 'kysely';
import { heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { requestHashOf } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, Hold } from '../db/schema.js';
import {
  AccountFrozenError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  ServiceError,
} from '../errors.js';
import { type DebitGuard, debitMetered, expireDueGrants, UNLIMITED } from '../ledger/ledger.js';

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
 * Reserves credits. Same key and request: the first hold again (`replayed`). Same key, other request: 409.
 * More than `available`: 402, nothing written. A frozen account: 403.
 */
export async function createHold(
  trx: Trx,
  account: Account,
  input: NewHold,
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<{ hold: Hold; replayed: boolean; available: number }> {
  const requestHash = requestHashOf(input.request);
  const previous = await trx
    .selectFrom('holds')
    .selectAll()
    .where('account_id', '=', account.id)
    .where('idempotency_key', '=', input.idempotencyKey)
    .executeTakeFirst();
  if (previous) {
    if (previous.request_hash !== requestHash) throw new IdempotencyConflictError(input.idempotencyKey);
    return {
      hold: previous,
      replayed: true,
      available: account.balance - (await heldCredits(trx, account.id, now)),
    };
  }
  if (account.status === 'frozen') throw new AccountFrozenError();
  const held = await heldCredits(trx, account.id, now);
  await guard.admit(trx, account, { credits: input.credits, held, kind: 'hold' });
  await expireDueGrants(trx, account, now);
  if (account.balance - held < input.credits) {
    throw new InsufficientCreditsError(account.balance, input.credits, held);
  }
  const hold = await trx
    .insertInto('holds')
    .values({
      account_id: account.id,
      idempotency_key: input.idempotencyKey,
      request_hash: requestHash,
      sku: input.sku ?? null,
      price_version: input.priceVersion ?? null,
      requested_credits: input.credits,
      credits: input.credits,
      description: input.description ?? null,
      metadata: input.metadata ? JSON.stringify(input.metadata) : null,
      expires_at: new Date(now.getTime() + input.ttlSeconds * 1000),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  const available = account.balance - held - input.credits;
  await guard.settled(trx, account, {
    credits: input.credits,
    availableBefore: account.balance - held,
    availableAfter: available,
  });
  return { hold, replayed: false, available };
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
 * Captures a hold with its actual cost (`cost(hold)` resolves it: explicit credits, or usage priced at the
 * hold's price version), once. Up to the hold, the rest is released; above it, it takes what `available`
 * and the plan's caps allow and reports the `shortfall`. A capture after the expiry charges like a spend
 * (what is available) and says so. The same request again replays; another request, or a voided hold, is 409.
 */
export async function captureHold(
  db: Kysely<Database>,
  holdId: string,
  request: unknown,
  cost: (hold: Hold) => Promise<number>,
  now: Date,
  guard: DebitGuard = UNLIMITED,
): Promise<Settlement> {
  return inHoldTransaction(db, holdId, async (trx, account, hold) => {
    const captureHash = requestHashOf(request);
    if (hold.status === 'captured') {
      if (hold.capture_hash !== captureHash) {
        throw new ServiceError('hold_already_captured', `hold ${holdId} was captured with another request`);
      }
      return settled(trx, account, hold, now, true);
    }
    if (hold.status === 'voided') throw new ServiceError('hold_voided', `hold ${holdId} was voided`);
    const actual = await cost(hold);
    const expired = statusAt(hold, now) === 'expired';
    const heldByOthers = (await heldCredits(trx, account.id, now)) - (expired ? 0 : hold.credits);
    const admitted = await guard.admit(trx, account, {
      credits: actual,
      held: heldByOthers,
      kind: 'capture',
    });
    const { live } = await expireDueGrants(trx, account, now);
    const availableBefore = account.balance - heldByOthers - (expired ? 0 : hold.credits);
    const take = Math.min(admitted, Math.max(account.balance - heldByOthers, 0));
    const entry =
      take > 0 ? await debitMetered(trx, account, 'hold_capture', hold.id, take, live, now) : null;
    const captured = await trx
      .updateTable('holds')
      .set({
        status: 'captured',
        settled_at: now,
        capture_hash: captureHash,
        captured_credits: take,
        shortfall: actual - take,
        released: expired ? 0 : Math.max(hold.credits - take, 0),
        captured_after_expiry: expired,
        entry_id: entry?.id ?? null,
      })
      .where('id', '=', hold.id)
      .returningAll()
      .executeTakeFirstOrThrow();
    await guard.settled(trx, account, {
      credits: take,
      availableBefore,
      availableAfter: account.balance - heldByOthers,
    });
    return settled(trx, account, captured, now, false);
  });
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
