import { type Kysely, sql } from 'kysely';
import type { Trx } from '../db/locks.js';
import type { CreditGrant, Database, GrantCategory, GrantSource } from '../db/schema.js';
import { emitEvent } from '../webhooks/outbox.js';

/**
 * The only writer of `credit_grants` and `grant_allocations`. The ledger calls these in the same transaction
 * as the entry they belong to, under the account lock; nothing else moves a grant.
 */

/** Where a grant comes from and how long it lasts. */
export interface GrantSpec {
  readonly category: GrantCategory;
  readonly source: GrantSource;
  /** null or absent: never expires. */
  readonly expiresAt?: Date | null;
  readonly paymentId?: string | null;
}

/** One draw of a debit on one grant. */
export interface Allocation {
  readonly grantId: string;
  readonly amount: number;
}

/** The account's grants with credits left (expired ones included), in burn order: the one place it is defined. */
export function loadOpenGrants(db: Kysely<Database>, accountId: string): Promise<CreditGrant[]> {
  return db
    .selectFrom('credit_grants')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('open', '=', true)
    .orderBy(sql`expires_at ASC NULLS LAST`)
    .orderBy(sql`(category = 'paid') ASC`)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
}

/** true when the grant can no longer be spent at `now` (exact to the millisecond). */
export const isExpired = (grant: Pick<CreditGrant, 'expires_at'>, now: Date) =>
  grant.expires_at !== null && grant.expires_at.getTime() <= now.getTime();

/**
 * How a debit of `amount` draws on `grants` (already in burn order, none expired): the preferred grant first
 * (a refunded purchase's own grant), then burn order. What the grants cannot cover is `unallocated` (debt).
 */
export function planAllocation(
  grants: readonly Pick<CreditGrant, 'id' | 'remaining'>[],
  amount: number,
  preferGrantId?: string,
): { allocations: Allocation[]; unallocated: number } {
  const ordered = preferGrantId
    ? [...grants.filter((g) => g.id === preferGrantId), ...grants.filter((g) => g.id !== preferGrantId)]
    : grants;
  const { draws, left } = drawInOrder(ordered, (g) => g.remaining, amount);
  return { allocations: draws.map((d) => ({ grantId: d.item.id, amount: d.amount })), unallocated: left };
}

/** Takes `amount` from `items` in their order, each up to what it has; `left` is what they could not cover. */
function drawInOrder<T>(items: readonly T[], available: (item: T) => number, amount: number) {
  const draws: { item: T; amount: number }[] = [];
  let left = amount;
  for (const item of items) {
    if (left === 0) break;
    const take = Math.min(available(item), left);
    if (take > 0) draws.push({ item, amount: take });
    left -= take;
  }
  return { draws, left };
}

/** Records a debit entry's draws and lowers each grant's remaining by its draw (two statements at most). */
export async function recordAllocations(trx: Trx, entryId: number, allocations: readonly Allocation[]) {
  if (allocations.length === 0) return;
  await trx
    .insertInto('grant_allocations')
    .values(allocations.map((a) => ({ entry_id: entryId, grant_id: a.grantId, amount: a.amount })))
    .execute();
  const draws = sql.join(allocations.map((a) => sql`(${a.grantId}::uuid, ${a.amount}::bigint)`));
  await sql`
    UPDATE credit_grants g SET remaining = g.remaining - d.amount
    FROM (VALUES ${draws}) AS d (id, amount) WHERE g.id = d.id`.execute(trx);
}

/**
 * The grant a positive entry brings in. It pays the account's debt first (`debt`: what a clawback of
 * credits already spent left below zero), recorded as draws on the clawbacks still open; its remaining is
 * what is left after that.
 */
export async function createGrant(
  trx: Trx,
  account: { readonly id: string },
  entry: { readonly id: number; readonly amount: number; readonly reference: string },
  spec: GrantSpec,
  debt: number,
): Promise<CreditGrant> {
  const paysDebt = Math.min(entry.amount, Math.max(debt, 0));
  const grant = await trx
    .insertInto('credit_grants')
    .values({
      account_id: account.id,
      category: spec.category,
      source: spec.source,
      amount: entry.amount,
      remaining: entry.amount - paysDebt,
      expires_at: spec.expiresAt ?? null,
      payment_id: spec.paymentId ?? null,
      entry_id: entry.id,
      reference: entry.reference,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  if (paysDebt > 0) {
    const { draws } = drawInOrder(await openDebts(trx, account.id), (d) => d.open, paysDebt);
    await trx
      .insertInto('grant_allocations')
      .values(draws.map((d) => ({ entry_id: d.item.entryId, grant_id: grant.id, amount: d.amount })))
      .execute();
  }
  return grant;
}

/** Clawback entries not yet covered by any grant (the account's debt), oldest first. */
async function openDebts(trx: Trx, accountId: string): Promise<{ entryId: number; open: number }[]> {
  const rows = await trx
    .selectFrom('ledger_entries as e')
    .select([
      'e.id',
      sql<number>`-e.amount - coalesce((SELECT sum(a.amount) FROM grant_allocations a WHERE a.entry_id = e.id), 0)::bigint`.as(
        'open',
      ),
    ])
    .where('e.account_id', '=', accountId)
    .where('e.kind', 'in', ['refund_clawback', 'dispute_clawback'])
    .orderBy('e.id')
    .execute();
  return rows.filter((r) => r.open > 0).map((r) => ({ entryId: r.id, open: r.open }));
}

/** The grant a purchase brought in (refunds and disputes draw on it first). */
export async function purchaseGrantId(trx: Trx, paymentId: string): Promise<string | undefined> {
  const row = await trx
    .selectFrom('credit_grants')
    .select('id')
    .where('payment_id', '=', paymentId)
    .where('source', '=', 'purchase')
    .executeTakeFirst();
  return row?.id;
}

/** What an account holds at `now`: expired credits the sweeper has not written off yet do not count. */
export interface GrantTotals {
  /** Credits of grants expired at `now` whose expiry entry is not written yet. */
  readonly expiredUnswept: number;
  readonly paid: number;
  readonly promotional: number;
  readonly nextExpiry: Date | null;
}

export async function grantTotals(db: Kysely<Database>, accountId: string, now: Date): Promise<GrantTotals> {
  const row = await db
    .selectFrom('credit_grants')
    .select([
      sql<number>`coalesce(sum(remaining) FILTER (WHERE expires_at <= ${now}), 0)::bigint`.as('expired'),
      sql<number>`coalesce(sum(remaining) FILTER (WHERE (expires_at IS NULL OR expires_at > ${now}) AND category = 'paid'), 0)::bigint`.as(
        'paid',
      ),
      sql<number>`coalesce(sum(remaining) FILTER (WHERE (expires_at IS NULL OR expires_at > ${now}) AND category = 'promotional'), 0)::bigint`.as(
        'promotional',
      ),
      sql<Date | null>`min(expires_at) FILTER (WHERE expires_at > ${now})`.as('next_expiry'),
    ])
    .where('account_id', '=', accountId)
    .where('open', '=', true)
    .executeTakeFirstOrThrow();
  return {
    expiredUnswept: row.expired,
    paid: row.paid,
    promotional: row.promotional,
    nextExpiry: row.next_expiry,
  };
}

/** The account's spendable grants at `now`, in burn order (what `GET /v1/me/grants` shows). */
export async function listLiveGrants(
  db: Kysely<Database>,
  accountId: string,
  now: Date,
): Promise<CreditGrant[]> {
  return (await loadOpenGrants(db, accountId)).filter((g) => !isExpired(g, now));
}

/** Accounts holding grants expired at `now` with credits left: the sweeper's work, oldest expiry first. */
export async function accountsWithDueGrants(
  db: Kysely<Database>,
  now: Date,
  limit: number,
): Promise<string[]> {
  const rows = await db
    .selectFrom('credit_grants')
    .select('account_id')
    .where('open', '=', true)
    .where('expires_at', '<=', now)
    .groupBy('account_id')
    .orderBy(sql`min(expires_at)`)
    .limit(limit)
    .execute();
  return rows.map((r) => r.account_id);
}

/** Every grant of an account, spent and expired ones included, newest first (the admin view). */
export function listGrants(db: Kysely<Database>, accountId: string, limit: number): Promise<CreditGrant[]> {
  return db
    .selectFrom('credit_grants')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id')
    .limit(limit)
    .execute();
}

/** `grant.expiring` is sent this long before a grant expires. */
export const EXPIRING_NOTICE_MS = 3 * 86_400_000;

/**
 * The sweeper's part: tells the app, once per grant, of grants with credits left that expire within three
 * days of `now` (`grant.expiring`, through the outbox, in the transaction that marks them). A batch at a time.
 */
export async function notifyExpiringGrants(db: Kysely<Database>, now: Date, limit = 500): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const due = await trx
      .updateTable('credit_grants')
      .set({ expiring_notified_at: now })
      .where(
        'id',
        'in',
        trx
          .selectFrom('credit_grants')
          .select('id')
          .where('expiring_notified_at', 'is', null)
          .where('open', '=', true)
          .where('expires_at', '>', now)
          .where('expires_at', '<=', new Date(now.getTime() + EXPIRING_NOTICE_MS))
          .orderBy('expires_at')
          .limit(limit)
          .forUpdate()
          .skipLocked(),
      )
      .returning(['id', 'account_id', 'category', 'source', 'remaining', 'expires_at'])
      .execute();
    if (due.length === 0) return 0;
    const users = await trx
      .selectFrom('accounts')
      .select(['id', 'external_user_id'])
      .where(
        'id',
        'in',
        due.map((g) => g.account_id),
      )
      .execute();
    const userOf = new Map(users.map((u) => [u.id, u.external_user_id]));
    for (const grant of due) {
      await emitEvent(trx, {
        type: 'grant.expiring',
        accountId: grant.account_id,
        createdAt: now,
        data: {
          userId: userOf.get(grant.account_id) ?? null,
          grantId: grant.id,
          category: grant.category,
          source: grant.source,
          remaining: grant.remaining,
          expiresAt: grant.expires_at!.toISOString(),
        },
      });
    }
    return due.length;
  });
}
