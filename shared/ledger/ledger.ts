import { type Kysely, sql } from 'kysely';
import { heldCredits, moveBalance } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import { requestHashOf, requireNonZeroCredits, requirePositiveCredits, requireText } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, CreditGrant, Database, EntryKind, GrantCategory, LedgerEntry } from '../db/schema.js';
import {
  AccountFrozenError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  LedgerRuleError,
} from '../errors.js';
import {
  createGrant,
  type GrantSpec,
  isExpired,
  loadOpenGrants,
  planAllocation,
  purchaseGrantId,
  recordAllocations,
} from '../grants/grants.js';
import { emitEvent } from '../webhooks/outbox.js';

/**
 * The only writer of `ledger_entries` (append-only) and, through `moveBalance`, of the cached balance.
 * Every positive entry brings in a grant; every negative entry draws on grants in burn order, recording
 * its allocations; all in the caller's transaction, under the account lock.
 */

export interface NewEntry {
  readonly amount: number;
  readonly kind: EntryKind;
  readonly reference: string;
  readonly paymentId?: string | null;
  readonly adminActionId?: string | null;
  readonly stripeEventId?: string | null;
  readonly requestHash?: string | null;
  readonly description?: string | null;
  readonly metadata?: unknown;
}

/** Appends one entry and moves the cached balance and version with it. Caller holds the account lock. */
async function writeEntry(trx: Trx, account: Account, entry: NewEntry): Promise<LedgerEntry> {
  const balanceAfter = await moveBalance(trx, account, entry.amount);
  return trx
    .insertInto('ledger_entries')
    .values({
      account_id: account.id,
      amount: entry.amount,
      balance_after: balanceAfter,
      kind: entry.kind,
      reference: entry.reference,
      payment_id: entry.paymentId ?? null,
      admin_action_id: entry.adminActionId ?? null,
      stripe_event_id: entry.stripeEventId ?? null,
      request_hash: entry.requestHash ?? null,
      description: entry.description ?? null,
      metadata: entry.metadata === undefined ? null : JSON.stringify(entry.metadata),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * Appends a positive entry and the grant it brings in, which pays any debt first, and tells the app
 * (`credits.granted`, through the outbox in the same transaction).
 */
export async function creditEntry(
  trx: Trx,
  account: Account,
  entry: NewEntry,
  spec: GrantSpec,
): Promise<{ entry: LedgerEntry; grant: CreditGrant }> {
  const debt = -account.balance;
  const written = await writeEntry(trx, account, entry);
  const grant = await createGrant(trx, account, written, spec, debt);
  await emitEvent(trx, {
    type: 'credits.granted',
    accountId: account.id,
    data: {
      userId: account.external_user_id,
      grantId: grant.id,
      credits: grant.amount,
      category: grant.category,
      source: grant.source,
      expiresAt: grant.expires_at?.toISOString() ?? null,
      balance: account.balance,
    },
  });
  return { entry: written, grant };
}

/**
 * Writes off every grant of the account expired at `now` with credits left (one `grant_expiry` entry each,
 * idempotent per grant) and returns the grants still spendable, in burn order. Debits call it first, so a
 * debit never draws on an expired grant and its `balance_after` is exact; the sweeper calls it for the rest.
 */
export async function expireDueGrants(
  trx: Trx,
  account: Account,
  now: Date,
): Promise<{ live: CreditGrant[]; expired: number }> {
  const open = await loadOpenGrants(trx, account.id);
  const due = open.filter((g) => isExpired(g, now));
  for (const grant of due) {
    const entry = await writeEntry(trx, account, {
      amount: -grant.remaining,
      kind: 'grant_expiry',
      reference: grant.id,
    });
    await recordAllocations(trx, entry.id, [{ grantId: grant.id, amount: grant.remaining }]);
  }
  return { live: open.filter((g) => !isExpired(g, now)), expired: due.length };
}

/**
 * A metered debit: one `hold_capture` (reference: the hold) or `usage` (reference: the event id) entry of
 * `credits`, drawing on `live` (what expireDueGrants returned) in burn order. The caller (shared/holds,
 * shared/usage) has bounded `credits` by what is available and admitted it through its DebitGuard.
 */
export function debitMetered(
  trx: Trx,
  account: Account,
  kind: 'hold_capture' | 'usage',
  reference: string,
  credits: number,
  live: readonly CreditGrant[],
  now: Date,
): Promise<LedgerEntry> {
  return debitEntry(trx, account, { amount: -credits, kind, reference }, live, now);
}

/** The kinds that are the app's use of credits: what caps count, per UTC day, in `debit_days`. */
const USE_KINDS: ReadonlySet<EntryKind> = new Set(['spend', 'hold_capture', 'usage']);

/** A UTC day as `debit_days` keys it. */
const utcDay = (at: Date) => at.toISOString().slice(0, 10);

/**
 * Appends a negative entry drawing on `live` (the grants expireDueGrants returned): `preferGrantId` first,
 * then burn order. The caller has checked the balance; what the grants cannot cover is debt (clawbacks only).
 * A use of credits (spend, capture, usage) is counted in its UTC day (at `now`) for the caps.
 */
async function debitEntry(
  trx: Trx,
  account: Account,
  entry: NewEntry,
  live: readonly CreditGrant[],
  now: Date,
  preferGrantId?: string,
): Promise<LedgerEntry> {
  const written = await writeEntry(trx, account, entry);
  await recordAllocations(trx, written.id, planAllocation(live, -entry.amount, preferGrantId).allocations);
  if (USE_KINDS.has(entry.kind)) {
    await trx
      .insertInto('debit_days')
      .values({ account_id: account.id, day: utcDay(now), credits: -entry.amount })
      .onConflict((oc) =>
        oc
          .columns(['account_id', 'day'])
          .doUpdateSet({ credits: sql`debit_days.credits + excluded.credits` }),
      )
      .execute();
  }
  return written;
}

/** Credits the account used (spends, captures, usage) in the UTC month of `now`, and on its UTC day. */
export async function creditsUsed(
  db: Kysely<Database>,
  accountId: string,
  now: Date,
): Promise<{ month: number; day: number }> {
  const today = utcDay(now);
  const row = await db
    .selectFrom('debit_days')
    .select([
      sql<number>`coalesce(sum(credits), 0)::bigint`.as('month'),
      sql<number>`coalesce(sum(credits) FILTER (WHERE day = ${today}::date), 0)::bigint`.as('day'),
    ])
    .where('account_id', '=', accountId)
    .where('day', '>=', `${today.slice(0, 7)}-01`)
    .executeTakeFirstOrThrow();
  return row;
}

/**
 * What a debit asks of the account's plan before its balance check, under the account lock: grant what is
 * due (the month's allowance), refuse what must not pass (rate limit, caps), and say how many of `credits`
 * the caps admit. `shared/plans` implements it; the ledger, holds and usage call it without knowing plans.
 */
export interface DebitGuard {
  admit(
    trx: Trx,
    account: Account,
    debit: {
      readonly credits: number;
      /** Credits active holds reserve, this debit's own hold excluded. */
      readonly held: number;
      /**
       * `spend` and `hold` are rate-limited and refused past a cap; `usage` is refused past a cap; `capture`
       * is admitted up to what the caps leave (its hold was admitted already).
       */
      readonly kind: 'spend' | 'hold' | 'usage' | 'capture';
    },
  ): Promise<number>;
  /**
   * After the debit's writes, in its transaction: what it took and `available` before and after it, for
   * what follows from that (balance and cap events, an auto top-up).
   */
  settled(
    trx: Trx,
    account: Account,
    change: { readonly credits: number; readonly availableBefore: number; readonly availableAfter: number },
  ): Promise<void>;
}

/** No plan: every debit admitted as asked (direct callers: the tests of the ledger itself, scripts). */
export const UNLIMITED: DebitGuard = {
  admit: async (_trx, _account, debit) => debit.credits,
  settled: async () => {},
};

function findEntry(trx: Trx, accountId: string, kind: EntryKind, reference: string) {
  return trx
    .selectFrom('ledger_entries')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('kind', '=', kind)
    .where('reference', '=', reference)
    .executeTakeFirst();
}

/** The purchase entry of a payment, if it was credited. */
export function findPurchaseEntry(trx: Trx, paymentId: string): Promise<LedgerEntry | undefined> {
  return trx
    .selectFrom('ledger_entries')
    .selectAll()
    .where('payment_id', '=', paymentId)
    .where('kind', '=', 'purchase')
    .executeTakeFirst();
}

/** The outcome of an idempotent write: the entry, and whether it already existed. */
export interface EntryResult {
  readonly entry: LedgerEntry;
  readonly duplicate: boolean;
}

/** Net credits taken back from a payment, per direction (clawback minus its reversal). */
export async function paymentClawbacks(
  trx: Trx,
  paymentId: string,
): Promise<{ refund: number; dispute: number }> {
  const rows = await trx
    .selectFrom('ledger_entries')
    .select(['kind', (eb) => eb.fn.sum<string>('amount').as('total')])
    .where('payment_id', '=', paymentId)
    .where('kind', '<>', 'purchase')
    .groupBy('kind')
    .execute();
  const total = (kind: EntryKind) => Number(rows.find((r) => r.kind === kind)?.total ?? 0);
  return {
    refund: 0 - (total('refund_clawback') + total('refund_reversal')),
    dispute: 0 - (total('dispute_clawback') + total('dispute_reinstatement')),
  };
}

export interface PaymentMovement {
  readonly paymentId: string;
  /** refund_clawback / dispute_clawback take credits; refund_reversal / dispute_reinstatement give back. */
  readonly kind: 'refund_clawback' | 'refund_reversal' | 'dispute_clawback' | 'dispute_reinstatement';
  readonly credits: number;
  readonly reference: string;
  readonly stripeEventId?: string | null;
}

/**
 * Takes credits back for a refund or dispute, or gives them back when that is reversed. Idempotent per
 * (kind, reference). Never takes back more than the payment credited, nor returns more than was taken.
 * A clawback may leave the balance negative; spending then stops until it is positive again.
 */
export async function movePaymentCredits(
  trx: Trx,
  account: Account,
  input: PaymentMovement,
  now = new Date(),
): Promise<EntryResult> {
  const credits = requirePositiveCredits(input.credits, 'credits');
  const reference = requireText(input.reference, 'reference', 255);
  const existing = await findEntry(trx, account.id, input.kind, reference);
  if (existing) return { entry: existing, duplicate: true };
  const purchase = await findPurchaseEntry(trx, input.paymentId);
  if (purchase?.account_id !== account.id) {
    throw new LedgerRuleError(`payment ${input.paymentId} was never credited to this account`);
  }
  const taken = await paymentClawbacks(trx, input.paymentId);
  const direction = input.kind === 'refund_clawback' || input.kind === 'dispute_clawback' ? -1 : 1;
  const side = input.kind.startsWith('refund') ? 'refund' : 'dispute';
  if (direction < 0 && taken.refund + taken.dispute + credits > purchase.amount) {
    throw new LedgerRuleError(
      `clawing back ${credits} would exceed the ${purchase.amount} credits of the payment`,
    );
  }
  if (direction > 0 && credits > taken[side]) {
    throw new LedgerRuleError(
      `returning ${credits} would exceed the ${taken[side]} credits taken by ${side}`,
    );
  }
  const movement: NewEntry = {
    amount: direction * credits,
    kind: input.kind,
    reference,
    paymentId: input.paymentId,
    stripeEventId: input.stripeEventId ?? null,
  };
  if (direction > 0) {
    // A reversed refund or a won dispute: the credits come back as a new paid grant.
    const { entry } = await creditEntry(trx, account, movement, {
      category: 'paid',
      source: 'reinstatement',
    });
    return { entry, duplicate: false };
  }
  // A clawback takes from the purchase's own grant first, then burn order, then into debt.
  const { live } = await expireDueGrants(trx, account, now);
  await emitEvent(trx, {
    type: input.kind === 'refund_clawback' ? 'payment.refunded' : 'payment.disputed',
    accountId: account.id,
    data: {
      userId: account.external_user_id,
      paymentId: input.paymentId,
      credits,
      balance: account.balance - credits,
    },
  });
  const entry = await debitEntry(
    trx,
    account,
    movement,
    live,
    now,
    await purchaseGrantId(trx, input.paymentId),
  );
  return { entry, duplicate: false };
}

export interface SpendRequest {
  readonly amount: number;
  readonly idempotencyKey: string;
  readonly description?: string | null;
  readonly metadata?: Record<string, unknown> | null;
}

export interface SpendResult {
  readonly entryId: number;
  readonly amount: number;
  readonly balance: number;
  readonly createdAt: Date;
  /** true when this answer replays the first request with the same key. */
  readonly replayed: boolean;
}

function spendResult(entry: LedgerEntry, replayed: boolean): SpendResult {
  return {
    entryId: entry.id,
    amount: -entry.amount,
    balance: entry.balance_after,
    createdAt: entry.created_at,
    replayed,
  };
}

/**
 * Spends credits. Same key and same request: the first result again. Same key, other request:
 * IdempotencyConflictError. A short balance: InsufficientCreditsError, and nothing is written.
 */
export async function spendCredits(
  trx: Trx,
  account: Account,
  request: SpendRequest,
  now = new Date(),
  guard: DebitGuard = UNLIMITED,
): Promise<SpendResult> {
  const amount = requirePositiveCredits(request.amount, 'amount');
  const key = requireText(request.idempotencyKey, 'idempotencyKey', 255);
  const description =
    request.description == null ? null : requireText(request.description, 'description', 500);
  const metadata = request.metadata ?? null;
  const requestHash = requestHashOf({ amount, description, metadata });
  const previous = await findEntry(trx, account.id, 'spend', key);
  if (previous) {
    if (previous.request_hash !== requestHash) throw new IdempotencyConflictError(key);
    return spendResult(previous, true);
  }
  if (account.status === 'frozen') throw new AccountFrozenError();
  const held = await heldCredits(trx, account.id, now);
  await guard.admit(trx, account, { credits: amount, held, kind: 'spend' });
  const { live } = await expireDueGrants(trx, account, now);
  if (account.balance - held < amount) throw new InsufficientCreditsError(account.balance, amount, held);
  const availableBefore = account.balance - held;
  const entry = await debitEntry(
    trx,
    account,
    {
      amount: -amount,
      kind: 'spend',
      reference: key,
      requestHash,
      description,
      metadata: metadata ?? undefined,
    },
    live,
    now,
  );
  await guard.settled(trx, account, {
    credits: amount,
    availableBefore,
    availableAfter: account.balance - held,
  });
  return spendResult(entry, false);
}

export interface Adjustment extends AdminActor {
  /** Signed: positive grants credits, negative removes them (never below zero). */
  readonly amount: number;
  /** What the user sees in their history; null shows the kind alone. The reason is never shown to them. */
  readonly description?: string | null;
  /** A grant's category. @default 'promotional' */
  readonly category?: GrantCategory;
  /** When a grant expires; null or absent: never. */
  readonly expiresAt?: Date | null;
  /** The audit row already written for it (an approved grant); otherwise one `adjust` row is written. */
  readonly adminActionId?: string;
}

/**
 * An admin's correction, in the caller's transaction: a positive amount is a grant (category, expiry), a
 * negative one draws on grants in burn order and never takes the balance below zero. One entry plus its
 * audit row.
 */
export async function adjustCredits(
  trx: Trx,
  account: Account,
  input: Adjustment,
  now = new Date(),
): Promise<LedgerEntry> {
  const amount = requireNonZeroCredits(input.amount, 'amount');
  const description = input.description == null ? null : requireText(input.description, 'description', 500);
  const live = amount < 0 ? (await expireDueGrants(trx, account, now)).live : [];
  // A removal never takes what active holds reserve: available stays non-negative.
  const held = amount < 0 ? await heldCredits(trx, account.id, now) : 0;
  if (amount < 0 && account.balance - held + amount < 0) {
    throw new InsufficientCreditsError(account.balance, -amount, held);
  }
  const actionId =
    input.adminActionId ??
    (await recordAdminAction(trx, 'adjust', input, {
      accountId: account.id,
      payload: {
        amount,
        ...(input.category && { category: input.category }),
        ...(input.expiresAt && { expiresAt: input.expiresAt.toISOString() }),
      },
    }));
  const entry: NewEntry = {
    amount,
    kind: 'admin_adjustment',
    reference: actionId,
    adminActionId: actionId,
    description,
  };
  if (amount < 0) return debitEntry(trx, account, entry, live, now);
  const credited = await creditEntry(trx, account, entry, {
    category: input.category ?? 'promotional',
    source: 'admin',
    expiresAt: input.expiresAt ?? null,
  });
  return credited.entry;
}

/**
 * GDPR: erases the free text (description, metadata) of an account's entries; amounts and the chain stay.
 * The application role may not UPDATE entries: the owner's function does it (see the database-roles
 * migration), and only for an account whose anonymisation is audited.
 */
export async function eraseEntryText(trx: Trx, accountId: string): Promise<void> {
  await sql`SELECT anonymize_ledger_entries(${accountId}::uuid)`.execute(trx);
}

/** An account's entries, newest first, one keyset page: ids below `beforeId`, of one kind, in [from, to). */
export function listEntries(
  db: Kysely<Database>,
  accountId: string,
  page: {
    readonly limit: number;
    readonly beforeId?: number;
    readonly kind?: EntryKind;
    readonly from?: Date;
    readonly to?: Date;
  },
): Promise<LedgerEntry[]> {
  let query = db
    .selectFrom('ledger_entries')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('id', 'desc')
    .limit(page.limit);
  if (page.beforeId !== undefined) query = query.where('id', '<', page.beforeId);
  if (page.kind) query = query.where('kind', '=', page.kind);
  if (page.from) query = query.where('created_at', '>=', page.from);
  if (page.to) query = query.where('created_at', '<', page.to);
  return query.execute();
}
