import { type Kysely, sql } from 'kysely';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import { requireText } from '../credits.js';
import { lockKey, type Trx } from '../db/locks.js';
import type { Account, AccountStatus, Database } from '../db/schema.js';
import { AccountNotFoundError, ServiceError } from '../errors.js';

/**
 * Locks the account for the rest of `trx` and returns its row read after the lock. The returned object is
 * the live view of the row inside the transaction: every balance move through it updates it.
 */
export async function lockAccount(trx: Trx, accountId: string): Promise<Account> {
  await lockKey(trx, 'account', accountId);
  const account = await trx.selectFrom('accounts').selectAll().where('id', '=', accountId).executeTakeFirst();
  if (!account) throw new AccountNotFoundError(`id ${accountId}`);
  return account;
}

/** Runs `work` in one transaction holding the account's lock: the unit of every ledger operation. */
export function inAccountTransaction<T>(
  db: Kysely<Database>,
  accountId: string,
  work: (trx: Trx, account: Account) => Promise<T>,
): Promise<T> {
  return db.transaction().execute(async (trx) => work(trx, await lockAccount(trx, accountId)));
}

/** The account of an external user id (the JWT `sub`), created on first sight. Idempotent under races. */
export async function findOrCreateAccount(db: Kysely<Database>, userId: string): Promise<Account> {
  requireText(userId, 'userId', 255);
  const existing = await findAccountByUserId(db, userId);
  if (existing) return existing;
  const created = await db
    .insertInto('accounts')
    .values({ external_user_id: userId })
    .onConflict((oc) => oc.column('external_user_id').doNothing())
    .returningAll()
    .executeTakeFirst();
  return created ?? (await requireAccountByUserId(db, userId));
}

/** The account of an external user id, or undefined. */
export function findAccountByUserId(db: Kysely<Database>, userId: string): Promise<Account | undefined> {
  return db.selectFrom('accounts').selectAll().where('external_user_id', '=', userId).executeTakeFirst();
}

/** The account of an external user id; throws AccountNotFoundError (naming the user) when there is none. */
export async function requireAccountByUserId(db: Kysely<Database>, userId: string): Promise<Account> {
  const account = await findAccountByUserId(db, userId);
  if (!account) throw new AccountNotFoundError(`user ${JSON.stringify(userId)}`);
  return account;
}

/**
 * Moves the cached balance by `amount` and bumps the version; `account` (the locked row) follows. Called by
 * the ledger for every entry it appends, in the same transaction, under the account lock.
 */
export async function moveBalance(trx: Trx, account: Account, amount: number): Promise<number> {
  const next = account.balance + amount;
  if (!Number.isSafeInteger(next)) {
    throw new ServiceError(
      'limit_exceeded',
      `the balance would pass ${Number.MAX_SAFE_INTEGER} credits, the largest this service keeps exactly`,
      { limit: Number.MAX_SAFE_INTEGER },
    );
  }
  const moved = await trx
    .updateTable('accounts')
    .set({
      balance: sql`balance + ${amount}::bigint`,
      version: sql`version + 1`,
      updated_at: sql`now()`,
    })
    .where('id', '=', account.id)
    .returning(['balance', 'version'])
    .executeTakeFirstOrThrow();
  account.balance = moved.balance;
  account.version = moved.version;
  return moved.balance;
}

/** Freezes or unfreezes an account, audited. Idempotent: no audit row when nothing changes. */
export async function setAccountStatus(
  trx: Trx,
  account: Account,
  status: AccountStatus,
  actor: AdminActor,
): Promise<Account> {
  if (account.status === status) return account;
  await recordAdminAction(trx, status === 'frozen' ? 'freeze' : 'unfreeze', actor, { accountId: account.id });
  const updated = await trx
    .updateTable('accounts')
    .set({ status, version: sql`version + 1`, updated_at: sql`now()` })
    .where('id', '=', account.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return Object.assign(account, updated);
}

/** Drops the account's personal data (user id, Stripe customer id) and marks it anonymised. */
export async function markAnonymized(trx: Trx, account: Account): Promise<Account> {
  const updated = await trx
    .updateTable('accounts')
    .set({
      external_user_id: null,
      stripe_customer_id: null,
      stripe_payment_method_id: null,
      payment_method_saved_at: null,
      anonymized_at: sql`now()`,
      version: sql`version + 1`,
      updated_at: sql`now()`,
    })
    .where('id', '=', account.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return Object.assign(account, updated);
}

/** Credits the account's active holds reserve at `now`: a hold past its expiry stops counting at once. */
export async function heldCredits(db: Kysely<Database>, accountId: string, now: Date): Promise<number> {
  const row = await db
    .selectFrom('holds')
    .select(sql<number>`coalesce(sum(credits), 0)::bigint`.as('held'))
    .where('account_id', '=', accountId)
    .where('status', '=', 'active')
    .where('expires_at', '>', now)
    .executeTakeFirstOrThrow();
  return row.held;
}

/** The account a Stripe customer id belongs to, if any. */
function findAccountByCustomer(db: Kysely<Database>, customerId: string) {
  return db
    .selectFrom('accounts')
    .select('id')
    .where('stripe_customer_id', '=', customerId)
    .executeTakeFirst();
}

/**
 * Remembers the account's Stripe customer when it has none yet (an account keeps its first customer) and
 * returns the one it has; null when it has none and `customerId` is already another account's (nothing is
 * written). Idempotent under races: the update only fills an empty column.
 */
export async function rememberStripeCustomer(
  db: Kysely<Database>,
  account: Account,
  customerId: string,
): Promise<string | null> {
  if (account.stripe_customer_id) return account.stripe_customer_id;
  const owner = await findAccountByCustomer(db, customerId);
  if (owner && owner.id !== account.id) return null;
  const updated = await db
    .updateTable('accounts')
    .set({ stripe_customer_id: customerId, updated_at: sql`now()` })
    .where('id', '=', account.id)
    .where('stripe_customer_id', 'is', null)
    .where('anonymized_at', 'is', null)
    .returning('stripe_customer_id')
    .executeTakeFirst();
  const current =
    updated?.stripe_customer_id ??
    (
      await db
        .selectFrom('accounts')
        .select('stripe_customer_id')
        .where('id', '=', account.id)
        .executeTakeFirst()
    )?.stripe_customer_id;
  if (current) account.stripe_customer_id = current;
  return current ?? null;
}

export interface SavedCard {
  readonly customerId: string;
  readonly paymentMethodId: string;
  /** When Stripe created the PaymentIntent that saved it: of two saved cards, the newer one wins. */
  readonly savedAt: Date;
}

/**
 * The only writer of an account's saved card: keeps `card` unless the account already has one saved by a
 * newer PaymentIntent, so any order and repetition of webhooks ends with the newest card. The card's customer
 * becomes the account's (it is the one the card is attached to). Saves nothing for a customer that is
 * another account's, or on an anonymised account. Returns whether the card is saved.
 */
export async function saveCard(trx: Trx, account: Account, card: SavedCard): Promise<boolean> {
  const owner = await findAccountByCustomer(trx, card.customerId);
  if (owner && owner.id !== account.id) return false;
  const saved = await trx
    .updateTable('accounts')
    .set({
      stripe_customer_id: card.customerId,
      stripe_payment_method_id: card.paymentMethodId,
      payment_method_saved_at: card.savedAt,
      updated_at: sql`now()`,
    })
    .where('id', '=', account.id)
    .where('anonymized_at', 'is', null)
    .where((eb) =>
      eb.or([eb('payment_method_saved_at', 'is', null), eb('payment_method_saved_at', '<=', card.savedAt)]),
    )
    .returningAll()
    .executeTakeFirst();
  if (saved) Object.assign(account, saved);
  return saved !== undefined;
}
