import { type Kysely, sql } from 'kysely';
import { heldCredits, lockAccount, moveBalance } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import { requestHashOf, requireNonZeroCredits, requirePositiveCredits, requireText } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, CreditGrant, Database, EntryKind, GrantCategory, LedgerEntry } from '../db/schema.js';
import { InsufficientCreditsError, LedgerRuleError } from '../errors.js';
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
import {
  type AccountJson,
  type Answer,
  callDebit,
  callUsageDebits,
  type DebitCall,
  type Debited,
  type DebitGuard,
  holdOf,
  refusal,
  UNLIMITED,
} from './debit.js';

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

/** A UTC day as `debit_days` keys it. */
const utcDay = (at: Date) => at.toISOString().slice(0, 10);

/**
 * Appends a negative entry that is not a use of credits (a clawback, an admin's removal; uses go through
 * `debit`) drawing on `live` (the grants expireDueGrants returned): `preferGrantId` first, then burn order.
 * The caller has checked the balance; what the grants cannot cover is debt (clawbacks only).
 */
async function debitEntry(
  trx: Trx,
  account: Account,
  entry: NewEntry,
  live: readonly CreditGrant[],
  preferGrantId?: string,
): Promise<LedgerEntry> {
  const written = await writeEntry(trx, account, entry);
  await recordAllocations(trx, written.id, planAllocation(live, -entry.amount, preferGrantId).allocations);
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
  const entry = await debitEntry(trx, account, movement, live, await purchaseGrantId(trx, input.paymentId));
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

/** The call of one spend, its request checked (400 for what is not a valid spend). */
function spendCall(request: SpendRequest, now: Date): DebitCall {
  const amount = requirePositiveCredits(request.amount, 'amount');
  const key = requireText(request.idempotencyKey, 'idempotencyKey', 255);
  const description =
    request.description == null ? null : requireText(request.description, 'description', 500);
  const metadata = request.metadata ?? null;
  return {
    kind: 'spend',
    reference: key,
    credits: amount,
    hash: requestHashOf({ amount, description, metadata }),
    item: { description, metadata },
    now,
  };
}

function spendResult(debited: Debited): SpendResult {
  const entry = debited.entry!;
  return {
    entryId: entry.id,
    amount: -entry.amount,
    balance: entry.balanceAfter,
    createdAt: entry.createdAt,
    replayed: debited.replayed,
  };
}

/**
 * Spends credits in the caller's transaction, which holds the account lock. Same key and same request: the
 * first result again. Same key, other request: IdempotencyConflictError. A short balance:
 * InsufficientCreditsError, and nothing is written.
 */
export async function spendCredits(
  trx: Trx,
  account: Account,
  request: SpendRequest,
  now = new Date(),
  guard: DebitGuard = UNLIMITED,
): Promise<SpendResult> {
  return spendResult(await debit(trx, { ...spendCall(request, now), accountId: account.id }, guard, account));
}

/** The same spend of a user's credits, in one round trip of its own (the api's spend). */
export async function spendUserCredits(
  db: Kysely<Database>,
  userId: string,
  request: SpendRequest,
  now: Date,
  guard: DebitGuard,
): Promise<SpendResult> {
  return spendResult(await debit(db, { ...spendCall(request, now), userId }, guard));
}

/** A grant expiring or an allowance falling due between two calls: more than this many rounds is a bug. */
const MAX_ROUNDS = 5;

/**
 * One debit: `debit_credits` on `db` (its own transaction) or on a caller's transaction holding the account
 * lock (`account` follows the balance). Throws the service's error for a refusal; nothing is written then.
 */
export async function debit(
  db: Kysely<Database>,
  call: DebitCall,
  guard: DebitGuard,
  account?: Account,
): Promise<Debited> {
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const answer = await callDebit(db, call, guard.plansJson);
    if (answer.status === 'allowance_due' || answer.status === 'expiry_due') {
      await prepare(db, answer, guard, call.now);
      continue;
    }
    if (answer.status !== 'applied' && answer.status !== 'replayed') throw refusal(call, answer);
    if (account) {
      account.balance = answer.account.balance;
      account.version = answer.account.version;
    }
    const debited = debitedOf(call, answer, guard);
    if (answer.topUp) await topUp(db, guard, debited, call.now);
    return debited;
  }
  throw new Error(`debit_credits still asked for a preparation after ${MAX_ROUNDS} rounds`);
}

/**
 * Usage events in one call of `debit_usage` (one transaction, the accounts locked in order): each event's
 * outcome, in order, what it debited or the error refusing it. The events of an account that asked for a
 * preparation are sent again, in their order, once it is done. Throws PricesChangedError, having written
 * nothing, when an event's price version was not active at its instant.
 */
export async function debitUsage(
  db: Kysely<Database>,
  calls: readonly DebitCall[],
  guard: DebitGuard,
  now: Date,
): Promise<Array<Debited | Error>> {
  const outcomes = new Array<Debited | Error>(calls.length);
  const toppedUp = new Map<string, Debited>();
  let pending = calls.map((_, at) => at);
  for (let round = 0; pending.length > 0; round++) {
    if (round === MAX_ROUNDS) throw new Error(`debit_usage still deferred events after ${MAX_ROUNDS} rounds`);
    // The prices are checked once: the deferred events were priced by versions checked a moment ago.
    const answers = await callUsageDebits(
      db,
      pending.map((at) => calls[at]!),
      guard.plansJson,
      now,
      round === 0,
    );
    const again: number[] = [];
    const prepared = new Set<string>();
    for (const [k, answer] of answers.entries()) {
      const at = pending[k]!;
      if (answer.status === 'allowance_due' || answer.status === 'expiry_due') {
        if (!prepared.has(answer.accountId)) await prepare(db, answer, guard, now);
        prepared.add(answer.accountId);
        again.push(at);
      } else if (answer.status === 'deferred') {
        again.push(at);
      } else if (answer.status === 'applied' || answer.status === 'replayed') {
        const debited = debitedOf(calls[at]!, answer, guard);
        if (answer.topUp) toppedUp.set(debited.accountId, debited);
        outcomes[at] = debited;
      } else {
        outcomes[at] = refusal(calls[at]!, answer);
      }
    }
    pending = again;
  }
  for (const debited of toppedUp.values()) await topUp(db, guard, debited, now);
  return outcomes;
}

/** Does what `debit_credits` asked before it admits the debit, under the account lock. */
function prepare(
  db: Kysely<Database>,
  answer: { readonly status: 'allowance_due' | 'expiry_due'; readonly accountId: string },
  guard: DebitGuard,
  now: Date,
): Promise<unknown> {
  return underLock<unknown>(db, answer.accountId, (trx, locked) =>
    answer.status === 'allowance_due' ? guard.grantAllowance(trx, locked) : expireDueGrants(trx, locked, now),
  );
}

/**
 * The auto top-up after a debit of an account with a saved card: in the caller's transaction when there is
 * one; otherwise in one of its own right after the debit's, `available` read again under the lock, and a
 * failure of it told to the guard, never thrown (the debit has committed).
 */
async function topUp(db: Kysely<Database>, guard: DebitGuard, debited: Debited, now: Date): Promise<void> {
  const check = () =>
    underLock(db, debited.accountId, async (trx, locked) =>
      guard.topUp(
        trx,
        locked,
        db.isTransaction ? debited.available : locked.balance - (await heldCredits(trx, locked.id, now)),
      ),
    );
  if (db.isTransaction) return check();
  try {
    await check();
  } catch (error: unknown) {
    guard.noteTopUpFailure(error);
  }
}

function debitedOf(
  call: DebitCall,
  answer: Extract<Answer, { account: AccountJson }>,
  guard: DebitGuard,
): Debited {
  if (answer.events) guard.noteEmitted(answer.events);
  const entry = answer.entry;
  return {
    replayed: answer.status === 'replayed',
    accountId: answer.account.id,
    balance: answer.account.balance,
    available: answer.availableAfter ?? answer.account.balance - (answer.held ?? 0),
    credits: answer.credits ?? call.credits,
    ...(entry && {
      entry: {
        id: entry.id,
        amount: entry.amount,
        balanceAfter: entry.balance_after,
        createdAt: new Date(entry.created_at),
      },
    }),
    ...(answer.hold && { hold: holdOf(answer.hold) }),
  };
}

/** `work` under the account lock: in the caller's transaction when `db` is one, else in a new one. */
async function underLock<T>(
  db: Kysely<Database>,
  accountId: string,
  work: (trx: Trx, account: Account) => Promise<T>,
): Promise<T> {
  if (db.isTransaction) return work(db as Trx, await lockAccount(db as Trx, accountId));
  return db.transaction().execute(async (trx) => work(trx, await lockAccount(trx, accountId)));
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
  if (amount < 0) return debitEntry(trx, account, entry, live);
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
