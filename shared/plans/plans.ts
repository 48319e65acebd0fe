import type { Selectable } from 'kysely';
import { type Kysely, sql } from 'kysely';
import { heldCredits, inAccountTransaction } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type { Account, AccountPlansTable, Database } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import type { CapState, DebitGuard } from '../ledger/debit.js';
import { creditEntry, creditsUsed } from '../ledger/ledger.js';
import type { CreditPackage } from '../packages.js';
import { findPlan, type Plan, type PlanCatalog, planOfId } from '../plan-catalog.js';
import { maybeTopUp } from '../topup/topup.js';

/**
 * The only writer of `account_plans`: which plan an account is on, its own monthly budget, the month's
 * allowance granted, and the recent debits its rate limit counts. Everything here runs under the account
 * lock, in the transaction of the debit or change it belongs to, so caps, allowances and rate limits hold
 * under any concurrency and across Lambda instances.
 */

type PlanRow = Omit<Selectable<AccountPlansTable>, 'account_id' | 'updated_at'>;

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

/**
 * A DebitGuard that also says whether it wrote events, so the caller flushes the outbox after commit, and
 * which auto top-ups it started, so the caller charges them after commit (`afterDebitCommit`).
 */
export interface PlanGuard extends DebitGuard {
  readonly emitted: boolean;
  /** Auto top-ups that could not be started after their debit committed (the caller reports them). */
  readonly topUpFailures: readonly unknown[];
  readonly topUpPaymentIds: readonly string[];
}

/** The catalog as `debit_credits` reads it, built once per catalog. */
const plansJsonOf = (() => {
  const built = new WeakMap<PlanCatalog, string>();
  return (catalog: PlanCatalog) => {
    let json = built.get(catalog);
    if (json === undefined) {
      json = JSON.stringify({
        default: catalog.defaultPlan.id,
        plans: Object.fromEntries(catalog.plans.map((plan) => [plan.id, plan])),
      });
      built.set(catalog, json);
    }
    return json;
  };
})();

/**
 * The plan's part in every debit (a DebitGuard for the ledger, holds and usage). The database's debit function
 * applies the catalog under the account lock: the rate limit on spends and hold creations, every cap over the
 * month's (day's) debits plus active holds, and once the debit is written `balance.low` (available fell below
 * the threshold: once per crossing), `balance.depleted` (available reached zero) and `spend_cap.reached` (a
 * cap has nothing left), through the outbox in the debit's transaction. It asks this guard to grant the
 * month's allowance when one is due (then admits the debit), and to start the account's auto top-up after a
 * debit of an account with a saved card.
 */
export function planGuard(
  catalog: PlanCatalog,
  now: Date,
  /** The packs on sale: an auto top-up buys one of them. */
  packages: readonly CreditPackage[],
): PlanGuard {
  let emitted = false;
  const topUpPaymentIds: string[] = [];
  const topUpFailures: unknown[] = [];
  return {
    plansJson: plansJsonOf(catalog),
    topUpFailures,
    get emitted() {
      return emitted;
    },
    get topUpPaymentIds() {
      return topUpPaymentIds;
    },
    async grantAllowance(trx, account) {
      await grantAllowanceDue(trx, catalog, account, now);
    },
    async topUp(trx, account, available) {
      const topUp = await maybeTopUp(trx, account, available, packages, now);
      if (topUp) topUpPaymentIds.push(topUp.id);
    },
    noteTopUpFailure(error) {
      topUpFailures.push(error);
    },
    noteEmitted(count) {
      if (count > 0) emitted = true;
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

/** The catalog's plan `planId`; 404 plan_not_found (listing the plans) when there is none. */
export function requirePlan(catalog: PlanCatalog, planId: string): Plan {
  const plan = findPlan(catalog, planId);
  if (!plan) {
    throw new ServiceError(
      'plan_not_found',
      `no plan ${JSON.stringify(planId)}; plans: ${catalog.plans.map((p) => p.id).join(', ')}`,
    );
  }
  return plan;
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
  const to = requirePlan(catalog, planId);
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
