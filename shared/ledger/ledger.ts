import { createHash } from 'node:crypto';
import { type Kysely, sql, type Transaction } from 'kysely';
import { requireNonZeroCredits, requirePositiveCredits, requireText } from '../credits.js';
import type {
  Account,
  AccountStatus,
  AdminActionKind,
  Database,
  EntryKind,
  LedgerEntry,
} from '../db/schema.js';
import {
  AccountFrozenError,
  AccountNotFoundError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  LedgerRuleError,
} from '../errors.js';

export type Trx = Transaction<Database>;

/** Advisory lock namespaces: the first key of `pg_advisory_xact_lock(int4, int4)`. */
const LOCK_SCOPES = { account: 1, payment: 2 } as const;

/**
 * Takes a transaction-level advisory lock (released at commit or rollback; never a session lock, which
 * would pin RDS Proxy connections). Unrelated keys that hash alike only serialize, never corrupt.
 */
export async function lockKey(trx: Trx, scope: keyof typeof LOCK_SCOPES, key: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${LOCK_SCOPES[scope]}::int4, hashtext(${key}))`.execute(trx);
}

/**
 * Locks the account for the rest of `trx` and returns its row read after the lock. The returned object is
 * the live view of the row inside the transaction: every entry appended through it updates it.
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

/** The account of an external user id; throws AccountNotFoundError when there is none. */
export async function requireAccountByUserId(db: Kysely<Database>, userId: string): Promise<Account> {
  const account = await findAccountByUserId(db, userId);
  if (!account) throw new AccountNotFoundError('this user');
  return account;
}

interface NewEntry {
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
async function appendEntry(trx: Trx, account: Account, entry: NewEntry): Promise<LedgerEntry> {
  const moved = await trx
    .updateTable('accounts')
    .set({
      balance: sql`balance + ${entry.amount}::bigint`,
      version: sql`version + 1`,
      updated_at: sql`now()`,
    })
    .where('id', '=', account.id)
    .returning(['balance', 'version'])
    .executeTakeFirstOrThrow();
  const row = await trx
    .insertInto('ledger_entries')
    .values({
      account_id: account.id,
      amount: entry.amount,
      balance_after: moved.balance,
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
  account.balance = moved.balance;
  account.version = moved.version;
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

async function recordAdminAction(
  trx: Trx,
  account: Account,
  action: AdminActionKind,
  actor: AdminActor,
  payload: Record<string, unknown> = {},
): Promise<string> {
  const row = await trx
    .insertInto('admin_actions')
    .values({
      actor_arn: requireText(actor.actorArn, 'actorArn', 2048),
      action,
      account_id: account.id,
      reason: requireText(actor.reason, 'reason', 2000),
      payload: JSON.stringify(payload),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

/** Who did an admin operation and why; recorded in `admin_actions` in the same transaction. */
export interface AdminActor {
  readonly actorArn: string;
  readonly reason: string;
}

/** The outcome of an idempotent write: the entry, and whether it already existed. */
export interface EntryResult {
  readonly entry: LedgerEntry;
  readonly duplicate: boolean;
}

export interface PurchaseCredit {
  readonly paymentId: string;
  readonly credits: number;
  /** Provenance: the Stripe object or event that proved the payment. */
  readonly reference: string;
  readonly stripeEventId?: string | null;
}

/**
 * Credits a paid purchase and moves its payment (INIT or PAID) to CREDITED. Idempotent: a payment is
 * credited at most once, whatever the reference.
 */
export async function creditPurchase(
  trx: Trx,
  account: Account,
  input: PurchaseCredit,
): Promise<EntryResult> {
  const credits = requirePositiveCredits(input.credits, 'credits');
  const existing = await trx
    .selectFrom('ledger_entries')
    .selectAll()
    .where('payment_id', '=', input.paymentId)
    .where('kind', '=', 'purchase')
    .executeTakeFirst();
  if (existing) return { entry: existing, duplicate: true };
  const moved = await trx
    .updateTable('payments')
    .set({ status: 'CREDITED', updated_at: sql`now()` })
    .where('id', '=', input.paymentId)
    .where('account_id', '=', account.id)
    .where('status', 'in', ['INIT', 'PAID'])
    .executeTakeFirst();
  if (moved.numUpdatedRows !== 1n) {
    throw new LedgerRuleError(`payment ${input.paymentId} of this account is not awaiting credit`);
  }
  const entry = await appendEntry(trx, account, {
    amount: credits,
    kind: 'purchase',
    reference: requireText(input.reference, 'reference', 255),
    paymentId: input.paymentId,
    stripeEventId: input.stripeEventId ?? null,
  });
  return { entry, duplicate: false };
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
  const purchase = await trx
    .selectFrom('ledger_entries')
    .select('amount')
    .where('payment_id', '=', input.paymentId)
    .where('kind', '=', 'purchase')
    .where('account_id', '=', account.id)
    .executeTakeFirst();
  if (!purchase) throw new LedgerRuleError(`payment ${input.paymentId} was never credited to this account`);
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
  const actionId = await recordAdminAction(trx, account, 'adjust', input, { amount });
  return appendEntry(trx, account, {
    amount,
    kind: 'admin_adjustment',
    reference: actionId,
    adminActionId: actionId,
    description: input.description == null ? null : requireText(input.description, 'description', 500),
  });
}

/** Freezes or unfreezes an account, audited. Idempotent: no audit row when nothing changes. */
export async function setAccountStatus(
  trx: Trx,
  account: Account,
  status: AccountStatus,
  actor: AdminActor,
): Promise<Account> {
  if (account.status === status) return account;
  await recordAdminAction(trx, account, status === 'frozen' ? 'freeze' : 'unfreeze', actor);
  const updated = await trx
    .updateTable('accounts')
    .set({ status, version: sql`version + 1`, updated_at: sql`now()` })
    .where('id', '=', account.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return Object.assign(account, updated);
}

/**
 * GDPR erasure: drops the external user id, the Stripe customer id and every free-text field of the
 * account's entries; amounts, balances and the chain stay. Idempotent: a second call changes nothing.
 */
export async function anonymizeAccount(trx: Trx, account: Account, actor: AdminActor): Promise<Account> {
  if (account.anonymized_at) return account;
  await recordAdminAction(trx, account, 'anonymize', actor);
  // The application role may not UPDATE entries: the owner's function erases their free text (see migrations).
  await sql`SELECT anonymize_ledger_entries(${account.id}::uuid)`.execute(trx);
  const updated = await trx
    .updateTable('accounts')
    .set({
      external_user_id: null,
      stripe_customer_id: null,
      anonymized_at: sql`now()`,
      version: sql`version + 1`,
      updated_at: sql`now()`,
    })
    .where('id', '=', account.id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return Object.assign(account, updated);
}
