import type { Selectable } from 'kysely';
import { type Kysely, sql } from 'kysely';
import { heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type { Account, AccountPlansTable, Database } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import { creditEntry, creditsUsed, type DebitGuard } from '../ledger/ledger.js';
import type { CreditPackage } from '../packages.js';
import { findPlan, type Plan, type PlanCatalog, planOfId } from '../plan-catalog.js';
import { maybeTopUp } from '../topup/topup.js';
import type { WebhookEventType } from '../webhooks/events.js';
import { emitEvent } from '../webhooks/outbox.js';

/**
 * The only writer of `account_plans`: which plan an account is on, its own monthly budget, the month's
 * allowance granted, and the recent debits its rate limit counts. Everything here runs under the account
 * lock, in the transaction of the debit or change it belongs to, so caps, allowances and rate limits hold
 * under any concurrency and across Lambda instances.
 */

type PlanRow = Omit<Selectable<AccountPlansTable>, 'account_id' | 'updated_at'>;

const MINUTE_MS = 60_000;

/** The UTC month of `at` as `YYYY-MM`. */
export const monthOf = (at: Date) => at.toISOString().slice(0, 7);
/** The first instant of the UTC month after `at`'s. */
export const nextMonthStart = (at: Date) => new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1));
/** The first instant of the UTC day after `at`'s. */
export const nextDayStart = (at: Date) =>
  new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate() + 1));

function readPlanRow(db: Kysely<Database>, accountId: string): Promise<PlanRow | undefined> {
  return db
    .selectFrom('account_plans')
    .select([
      'plan_id',
      'monthly_budget',
      'low_balance_threshold',
      'allowance_month',
      'allowance_granted',
      'recent_debits',
    ])
    .where('account_id', '=', accountId)
    .executeTakeFirst();
}

async function writePlanRow(trx: Trx, accountId: string, changes: Partial<PlanRow>): Promise<void> {
  await trx
    .insertInto('account_plans')
    .values({ account_id: accountId, ...changes })
    .onConflict((oc) => oc.column('account_id').doUpdateSet({ ...changes, updated_at: sql`now()` }))
    .execute();
}

/** The plan an account is on now (no row, or a plan since removed from `PLANS`: the default). */
export async function planOf(db: Kysely<Database>, catalog: PlanCatalog, accountId: string): Promise<Plan> {
  return planOfId(catalog, (await readPlanRow(db, accountId))?.plan_id);
}

/** Credits of the allowance the account received in the UTC month of `now`. */
const grantedThisMonth = (row: PlanRow | undefined, now: Date) =>
  row?.allowance_month === monthOf(now) ? row.allowance_granted : 0;

/** Credits of this month's allowance still to grant on `plan`: the allowance less what the month received. */
function allowanceDue(plan: Plan, row: PlanRow | undefined, now: Date): number {
  return Math.max((plan.monthlyAllowance ?? 0) - grantedThisMonth(row, now), 0);
}

/**
 * Grants what is due of the month's allowance (a promotional grant expiring at the month's end, reference
 * `allowance:<plan>:<YYYY-MM>`) and returns the row changes that record it. Caller holds the account lock.
 */
async function grantAllowance(
  trx: Trx,
  account: Account,
  plan: Plan,
  row: PlanRow | undefined,
  now: Date,
): Promise<{ granted: number; changes: Partial<PlanRow> }> {
  const due = allowanceDue(plan, row, now);
  if (due === 0) return { granted: 0, changes: {} };
  const month = monthOf(now);
  await creditEntry(
    trx,
    account,
    {
      amount: due,
      kind: 'allowance',
      reference: `allowance:${plan.id}:${month}`,
      description: `${plan.name} allowance for ${month}`,
    },
    { category: 'promotional', source: 'allowance', expiresAt: nextMonthStart(now) },
  );
  return {
    granted: due,
    changes: { allowance_month: month, allowance_granted: plan.monthlyAllowance ?? 0 },
  };
}

/**
 * Under the account lock: reads the plan row, grants what is due of the month's allowance on the account's
 * plan, and records it. `row` is the row as it was read (before the grant).
 */
async function grantAllowanceDue(
  trx: Trx,
  catalog: PlanCatalog,
  account: Account,
  now: Date,
): Promise<{ plan: Plan; row: PlanRow | undefined; granted: number }> {
  const row = await readPlanRow(trx, account.id);
  const plan = planOfId(catalog, row?.plan_id);
  const { granted, changes } = await grantAllowance(trx, account, plan, row, now);
  if (granted > 0) await writePlanRow(trx, account.id, changes);
  return { plan, row, granted };
}

/** One cap on an account now: what it allows, what is used and held against it, and when it resets. */
export interface CapState {
  readonly period: 'day' | 'month';
  readonly limit: number;
  readonly used: number;
  readonly held: number;
  readonly remaining: number;
  readonly resetsAt: Date;
  readonly source: 'plan' | 'budget';
}

/** The plan's monthly cap, or the user's lower budget. */
function monthlyLimit(plan: Plan, budget: number | null | undefined) {
  const planCap = plan.caps.monthly;
  if (budget != null && (planCap === undefined || budget < planCap)) {
    return { limit: budget, source: 'budget' as const };
  }
  return planCap === undefined ? undefined : { limit: planCap, source: 'plan' as const };
}

const hasCaps = (plan: Plan, row: PlanRow | undefined) =>
  plan.caps.daily !== undefined || monthlyLimit(plan, row?.monthly_budget) !== undefined;

async function capsOf(
  trx: Kysely<Database>,
  account: Account,
  plan: Plan,
  row: PlanRow | undefined,
  held: number,
  now: Date,
): Promise<CapState[]> {
  if (!hasCaps(plan, row)) return [];
  const used = await creditsUsed(trx, account.id, now);
  const cap = (period: 'day' | 'month', limit: number, source: 'plan' | 'budget'): CapState => ({
    period,
    limit,
    used: used[period],
    held,
    remaining: Math.max(limit - used[period] - held, 0),
    resetsAt: period === 'day' ? nextDayStart(now) : nextMonthStart(now),
    source,
  });
  const month = monthlyLimit(plan, row?.monthly_budget);
  return [
    ...(plan.caps.daily !== undefined ? [cap('day', plan.caps.daily, 'plan')] : []),
    ...(month ? [cap('month', month.limit, month.source)] : []),
  ];
}

/** 403 spend_cap_reached for the cap a debit of `credits` would pass. */
function capReached(cap: CapState, credits: number): ServiceError {
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

/**
 * The sliding-window rate limit: at most `rateLimitPerMinute` admitted in any 60 seconds. Returns the
 * window with this debit in it, or throws 429 rate_limited with the seconds until the oldest leaves it.
 */
function admitRate(plan: Plan, row: PlanRow | undefined, now: Date): Date[] | undefined {
  const limit = plan.rateLimitPerMinute;
  if (limit === undefined) return undefined;
  const recent = (row?.recent_debits ?? [])
    .filter((at) => at.getTime() > now.getTime() - MINUTE_MS)
    .sort((a, b) => a.getTime() - b.getTime());
  if (recent.length >= limit) {
    const frees = recent[recent.length - limit]!.getTime() + MINUTE_MS;
    const retryAfterSeconds = Math.max(Math.ceil((frees - now.getTime()) / 1000), 1);
    throw new ServiceError(
      'rate_limited',
      `plan ${plan.id} admits ${limit} spends and holds per minute; retry in ${retryAfterSeconds} s`,
      { limit, retryAfterSeconds },
    );
  }
  return [...recent, now].slice(-limit);
}

/**
 * A DebitGuard that also says whether it wrote events, so the caller flushes the outbox after commit, and
 * which auto top-ups it started, so the caller charges them after commit (`afterDebitCommit`).
 */
export interface PlanGuard extends DebitGuard {
  readonly emitted: boolean;
  readonly topUpPaymentIds: readonly string[];
}

/**
 * The plan's part in every debit (a DebitGuard for the ledger, holds and usage): under the account lock,
 * grants the month's allowance if it is due, applies the rate limit to spends and hold creations, and checks
 * every cap over the month's (day's) debits plus active holds. One read of the plan row; one write only
 * when the allowance or the rate window changed; a read of the day totals only when a cap applies.
 * Once the debit is written, it sends `balance.low` (available fell below the threshold: once per crossing),
 * `balance.depleted` (available reached zero) and `spend_cap.reached` (a cap has nothing left), through the
 * outbox in the debit's transaction, and starts the account's auto top-up when the debit calls for one.
 */
export function planGuard(
  catalog: PlanCatalog,
  now: Date,
  /** The packs on sale: an auto top-up buys one of them. */
  packages: readonly CreditPackage[],
): PlanGuard {
  // What admit saw, per account, for settled (a usage batch spans accounts, one transaction each).
  const seen = new Map<string, { plan: Plan; row: PlanRow | undefined; caps: CapState[] }>();
  let emitted = false;
  const topUpPaymentIds: string[] = [];
  const emit = async (trx: Trx, account: Account, type: WebhookEventType, data: Record<string, unknown>) => {
    await emitEvent(trx, {
      type,
      accountId: account.id,
      data: { userId: account.external_user_id, ...data },
    });
    emitted = true;
  };
  return {
    get emitted() {
      return emitted;
    },
    get topUpPaymentIds() {
      return topUpPaymentIds;
    },
    async admit(trx, account, debit) {
      const row = await readPlanRow(trx, account.id);
      const plan = planOfId(catalog, row?.plan_id);
      const { changes } = await grantAllowance(trx, account, plan, row, now);
      const recent = debit.kind === 'spend' || debit.kind === 'hold' ? admitRate(plan, row, now) : undefined;
      const caps = await capsOf(trx, account, plan, row, debit.held, now);
      const room = Math.min(Number.MAX_SAFE_INTEGER, ...caps.map((c) => c.remaining));
      if (debit.kind !== 'capture' && debit.credits > room) {
        throw capReached(caps.find((c) => c.remaining === room)!, debit.credits);
      }
      if (recent) Object.assign(changes, { recent_debits: recent });
      if (Object.keys(changes).length > 0) await writePlanRow(trx, account.id, changes);
      seen.set(account.id, { plan, row: row && { ...row, ...changes }, caps });
      return Math.min(debit.credits, room);
    },
    async settled(trx, account, change) {
      const state = seen.get(account.id);
      if (!state) return;
      const { availableBefore: before, availableAfter: after } = change;
      const threshold = lowBalanceThresholdOf(state.plan, state.row);
      const balance = { available: after, balance: account.balance };
      if (threshold !== null && before >= threshold && after < threshold) {
        await emit(trx, account, 'balance.low', { ...balance, threshold });
      }
      if (before > 0 && after <= 0) await emit(trx, account, 'balance.depleted', balance);
      for (const cap of state.caps) {
        if (cap.remaining > 0 && cap.remaining - change.credits <= 0) {
          await emit(trx, account, 'spend_cap.reached', {
            period: cap.period,
            source: cap.source,
            cap: cap.limit,
            resetsAt: cap.resetsAt.toISOString(),
          });
        }
      }
      const topUp = await maybeTopUp(trx, account, after, packages, now);
      if (topUp) topUpPaymentIds.push(topUp.id);
    },
  };
}

/** What `GET /v1/me/limits` shows: the plan, its caps now, the user's budget and the rate limit. */
export interface Limits {
  readonly plan: Plan;
  readonly caps: readonly CapState[];
  readonly monthlyBudget: number | null;
  readonly rateLimitPerMinute: number | null;
  /** This month's allowance: credits granted and when they expire; null on a plan without one. */
  readonly allowance: { readonly credits: number; readonly month: string; readonly expiresAt: Date } | null;
}

/**
 * The account's plan, first granting the month's allowance if it is due, so it is there from the month's
 * first second for readers too (the sweeper grants ahead; a debit grants it if neither has). After a grant,
 * `account` holds its row as the grant left it.
 */
export async function currentPlan(
  db: Kysely<Database>,
  catalog: PlanCatalog,
  account: Account,
  now: Date,
): Promise<{ plan: Plan; row: PlanRow | undefined; granted: number }> {
  const row = await readPlanRow(db, account.id);
  const plan = planOfId(catalog, row?.plan_id);
  if (allowanceDue(plan, row, now) === 0) return { plan, row, granted: 0 };
  return inAccountTransaction(db, account.id, async (trx, locked) => {
    const { plan: onPlan, granted } = await grantAllowanceDue(trx, catalog, locked, now);
    Object.assign(account, locked);
    return { plan: onPlan, row: await readPlanRow(trx, locked.id), granted };
  });
}

export async function limitsOf(
  db: Kysely<Database>,
  catalog: PlanCatalog,
  account: Account,
  now: Date,
): Promise<Limits> {
  const { plan, row } = await currentPlan(db, catalog, account, now);
  const held = await heldCredits(db, account.id, now);
  const month = monthOf(now);
  return {
    plan,
    caps: await capsOf(db, account, plan, row, held, now),
    monthlyBudget: row?.monthly_budget ?? null,
    rateLimitPerMinute: plan.rateLimitPerMinute ?? null,
    allowance: plan.monthlyAllowance
      ? {
          credits: grantedThisMonth(row, now),
          month,
          expiresAt: nextMonthStart(now),
        }
      : null,
  };
}

/**
 * Sets (or, with null, clears) the user's own monthly budget. A budget above the plan's monthly cap is
 * refused (400): it could never apply.
 */
export async function setMonthlyBudget(
  db: Kysely<Database>,
  catalog: PlanCatalog,
  account: Account,
  monthlyBudget: number | null,
): Promise<void> {
  await inAccountTransaction(db, account.id, async (trx, locked) => {
    const plan = planOfId(catalog, (await readPlanRow(trx, locked.id))?.plan_id);
    const planCap = plan.caps.monthly;
    if (monthlyBudget !== null && planCap !== undefined && monthlyBudget > planCap) {
      throw new ValidationError(
        'monthlyBudget',
        `must not exceed the monthly cap of plan ${plan.id} (${planCap} credits)`,
      );
    }
    await writePlanRow(trx, locked.id, { monthly_budget: monthlyBudget });
  });
}

/** The low-balance threshold that applies: the user's own, else the plan's; null when neither sets one. */
export const lowBalanceThresholdOf = (plan: Plan, row: Pick<PlanRow, 'low_balance_threshold'> | undefined) =>
  row?.low_balance_threshold ?? plan.lowBalanceThreshold ?? null;

/** The account's balance alerts: its own threshold, the plan's, and the one that applies. */
export async function alertsOf(db: Kysely<Database>, catalog: PlanCatalog, account: Account) {
  const row = await readPlanRow(db, account.id);
  const plan = planOfId(catalog, row?.plan_id);
  return {
    lowBalance: row?.low_balance_threshold ?? null,
    planLowBalance: plan.lowBalanceThreshold ?? null,
    effectiveLowBalance: lowBalanceThresholdOf(plan, row),
  };
}

/** Sets (or, with null, clears: the plan's applies again) the user's own low-balance threshold. */
export async function setLowBalanceThreshold(
  db: Kysely<Database>,
  account: Account,
  lowBalance: number | null,
): Promise<void> {
  await inAccountTransaction(db, account.id, (trx, locked) =>
    writePlanRow(trx, locked.id, { low_balance_threshold: lowBalance }),
  );
}

/**
 * Moves an account to another plan, audited (`change_plan`). Moving up mid-month grants the difference of
 * the allowances at once (once: the month's allowance is tracked, not the moves); moving down keeps what
 * was granted and lowers the caps at once. Moving to the plan it is on changes nothing and audits nothing.
 */
export async function changePlan(
  db: Kysely<Database>,
  catalog: PlanCatalog,
  account: Account,
  planId: string,
  actor: AdminActor,
  now: Date,
): Promise<{ from: Plan; to: Plan; changed: boolean; allowanceGranted: number }> {
  const to = findPlan(catalog, planId);
  if (!to) {
    throw new ServiceError(
      'plan_not_found',
      `no plan ${JSON.stringify(planId)}; plans: ${catalog.plans.map((p) => p.id).join(', ')}`,
    );
  }
  return inAccountTransaction(db, account.id, async (trx, locked) => {
    const row = await readPlanRow(trx, locked.id);
    const from = planOfId(catalog, row?.plan_id);
    if (from.id === to.id) return { from, to, changed: false, allowanceGranted: 0 };
    await recordAdminAction(trx, 'change_plan', actor, {
      accountId: locked.id,
      payload: { from: from.id, to: to.id },
    });
    const { granted, changes } = await grantAllowance(trx, locked, to, row, now);
    await writePlanRow(trx, locked.id, { ...changes, plan_id: to.id });
    return { from, to, changed: true, allowanceGranted: granted };
  });
}

/**
 * The sweeper's part: grants this month's allowance ahead to accounts whose plan has one and whose month has
 * not had it yet (anonymised accounts excepted), a batch at a time, until none is left or `budgetMs` passes.
 */
export async function grantDueAllowances(
  db: Kysely<Database>,
  catalog: PlanCatalog,
  now: Date,
  options: { readonly budgetMs: number; readonly batch?: number },
): Promise<{ granted: number; unfinished: boolean }> {
  const withAllowance = catalog.plans.filter((p) => (p.monthlyAllowance ?? 0) > 0).map((p) => p.id);
  if (withAllowance.length === 0) return { granted: 0, unfinished: false };
  const known = catalog.plans.map((p) => p.id);
  const started = Date.now();
  let granted = 0;
  for (;;) {
    const due = await db
      .selectFrom('accounts')
      .leftJoin('account_plans', 'account_plans.account_id', 'accounts.id')
      .select('accounts.id')
      .where('accounts.external_user_id', 'is not', null)
      .where(
        sql<boolean>`CASE WHEN account_plans.plan_id = ANY(${known}::text[]) THEN account_plans.plan_id
          ELSE ${catalog.defaultPlan.id} END = ANY(${withAllowance}::text[])`,
      )
      .where(sql<boolean>`account_plans.allowance_month IS DISTINCT FROM ${monthOf(now)}`)
      .orderBy('accounts.id')
      .limit(options.batch ?? 200)
      .execute();
    if (due.length === 0) return { granted, unfinished: false };
    for (const { id } of due) {
      await inAccountTransaction(db, id, async (trx, account) => {
        const result = await grantAllowanceDue(trx, catalog, account, now);
        if (result.granted > 0) {
          granted += 1;
        } else if (result.row?.allowance_month !== monthOf(now)) {
          // Its plan has no allowance now (it changed since the query): mark the month so the sweep moves on.
          await writePlanRow(trx, account.id, { allowance_month: monthOf(now), allowance_granted: 0 });
        }
      });
      if (Date.now() - started > options.budgetMs) return { granted, unfinished: true };
    }
  }
}
