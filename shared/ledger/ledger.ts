import { createHash } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import { moveBalance } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import { requireNonZeroCredits, requirePositiveCredits, requireText } from '../credits.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, EntryKind, LedgerEntry } from '../db/schema.js';
import {
  AccountFrozenError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  LedgerRuleError,
} from '../errors.js';

/** The only writer of `ledger_entries` (append-only) and, through `moveBalance`, of the cached balance. */

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
export async function appendEntry(trx: Trx, account: Account, entry: NewEntry): Promise<LedgerEntry> {
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
  const entry = await appendEntry(trx, account, {
    amount: direction * credits,
    kind: input.kind,
    reference,
    paymentId: input.paymentId,
    stripeEventId: input.stripeEventId ?? null,
  });
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

/** JSON with object keys sorted, so equal requests hash equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
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
export async function spendCredits(trx: Trx, account: Account, request: SpendRequest): Promise<SpendResult> {
  const amount = requirePositiveCredits(request.amount, 'amount');
  const key = requireText(request.idempotencyKey, 'idempotencyKey', 255);
  const description =
    request.description == null ? null : requireText(request.description, 'description', 500);
  const metadata = request.metadata ?? null;
  const requestHash = createHash('sha256')
    .update(canonicalJson({ amount, description, metadata }))
    .digest('base64url');
  const previous = await findEntry(trx, account.id, 'spend', key);
  if (previous) {
    if (previous.request_hash !== requestHash) throw new IdempotencyConflictError(key);
    return spendResult(previous, true);
  }
  if (account.status === 'frozen') throw new AccountFrozenError();
  if (account.balance < amount) throw new InsufficientCreditsError(account.balance, amount);
  const entry = await appendEntry(trx, account, {
    amount: -amount,
    kind: 'spend',
    reference: key,
    requestHash,
    description,
    metadata: metadata ?? undefined,
  });
  return spendResult(entry, false);
}

export interface Adjustment extends AdminActor {
  /** Signed: positive grants credits, negative removes them (never below zero). */
  readonly amount: number;
  /** What the user sees in their history; null shows the kind alone. The reason is never shown to them. */
  readonly description?: string | null;
}

/** An admin's correction: one entry plus its audit row, in the caller's transaction. */
export async function adjustCredits(trx: Trx, account: Account, input: Adjustment): Promise<LedgerEntry> {
  const amount = requireNonZeroCredits(input.amount, 'amount');
  if (amount < 0 && account.balance + amount < 0)
    throw new InsufficientCreditsError(account.balance, -amount);
  const description = input.description == null ? null : requireText(input.description, 'description', 500);
  const actionId = await recordAdminAction(trx, 'adjust', input, {
    accountId: account.id,
    payload: { amount },
  });
  return appendEntry(trx, account, {
    amount,
    kind: 'admin_adjustment',
    reference: actionId,
    adminActionId: actionId,
    description,
  });
}

/**
 * GDPR: erases the free text (description, metadata) of an account's entries; amounts and the chain stay.
 * The application role may not UPDATE entries: the owner's function does it (see the database-roles
 * migration), and only for an account whose anonymisation is audited.
 */
export async function eraseEntryText(trx: Trx, accountId: string): Promise<void> {
  await sql`SELECT anonymize_ledger_entries(${accountId}::uuid)`.execute(trx);
}

/** An account's entries, newest first, one keyset page: ids below `beforeId`, optionally. */
export function listEntries(
  db: Kysely<Database>,
  accountId: string,
  page: { readonly limit: number; readonly beforeId?: number },
): Promise<LedgerEntry[]> {
  let query = db
    .selectFrom('ledger_entries')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('id', 'desc')
    .limit(page.limit);
  if (page.beforeId !== undefined) query = query.where('id', '<', page.beforeId);
  return query.execute();
}
