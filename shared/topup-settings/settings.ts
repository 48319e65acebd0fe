import { type Kysely, sql } from 'kysely';
import { inAccountTransaction } from '../accounts/accounts.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, Payment } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import type { CreditPackage } from '../packages.js';
import { emitEvent } from '../webhooks/outbox.js';

/**
 * The only writer of `auto_topup_settings`: what an account asked for (the pack, the threshold, the monthly
 * cap) and what its top-ups came to (failures in a row; three turn it off, with the reason). Outcomes are
 * recorded in the transaction that settles the top-up's payment, with their outbound event.
 */

/** Failed top-ups in a row that turn auto top-up off. */
export const DISABLE_AFTER_FAILURES = 3;

/** Why the service turned auto top-up off (the user turns it on again with PUT). */
export const DISABLED_THREE_FAILURES = 'three_failed_top_ups_in_a_row';

export interface AutoTopUpSettings {
  readonly enabled: boolean;
  readonly packageId: string;
  readonly thresholdCredits: number;
  readonly maxPerMonth: number;
  readonly consecutiveDeclines: number;
  readonly disabledReason: string | null;
}

export interface AutoTopUpInput {
  readonly enabled: boolean;
  readonly packageId: string;
  readonly thresholdCredits: number;
  readonly maxPerMonth: number;
}

/** An account's settings; undefined when it never set any (auto top-up is off). */
export async function readAutoTopUpSettings(
  db: Kysely<Database>,
  accountId: string,
): Promise<AutoTopUpSettings | undefined> {
  const row = await db
    .selectFrom('auto_topup_settings')
    .selectAll()
    .where('account_id', '=', accountId)
    .executeTakeFirst();
  return (
    row && {
      enabled: row.enabled,
      packageId: row.package_id,
      thresholdCredits: row.threshold_credits,
      maxPerMonth: row.max_per_month,
      consecutiveDeclines: row.consecutive_declines,
      disabledReason: row.disabled_reason,
    }
  );
}

/**
 * What the settings are refused for: 400 unknown_package for a pack not on sale, then 409 no_saved_card when
 * enabling for an account with no saved card (or no account yet: `account` undefined). Throws; writes nothing.
 */
export function checkAutoTopUpInput(
  packages: readonly CreditPackage[],
  input: AutoTopUpInput,
  account: Account | undefined,
): void {
  if (!packages.some((p) => p.id === input.packageId)) {
    throw new ServiceError(
      'unknown_package',
      `no package ${JSON.stringify(input.packageId)}; packages: ${packages.map((p) => p.id).join(', ')}`,
      { field: 'packageId' },
    );
  }
  if (input.enabled && !(account && hasSavedCard(account))) {
    throw new ServiceError(
      'no_saved_card',
      'auto top-up needs a saved card: buy a pack at checkout with saveCard: true first',
    );
  }
}

/**
 * Saves the settings under the account lock, refused as checkAutoTopUpInput says (nothing written then).
 * Enabling clears the failure count and the reason the service turned it off.
 */
export async function saveAutoTopUpSettings(
  db: Kysely<Database>,
  packages: readonly CreditPackage[],
  accountId: string,
  input: AutoTopUpInput,
): Promise<void> {
  await inAccountTransaction(db, accountId, async (trx, account) => {
    checkAutoTopUpInput(packages, input, account);
    const columns = {
      enabled: input.enabled,
      package_id: input.packageId,
      threshold_credits: input.thresholdCredits,
      max_per_month: input.maxPerMonth,
    };
    const reset = input.enabled ? { consecutive_declines: 0, disabled_reason: null } : {};
    await trx
      .insertInto('auto_topup_settings')
      .values({ account_id: account.id, ...columns })
      .onConflict((oc) =>
        oc.column('account_id').doUpdateSet({ ...columns, ...reset, updated_at: sql`now()` }),
      )
      .execute();
  });
}

/** Whether the account has a card Stripe can charge off-session. */
export const hasSavedCard = (account: Account) =>
  account.stripe_customer_id !== null && account.stripe_payment_method_id !== null;

/** The account's latest top-ups, newest first. */
export function recentTopUps(db: Kysely<Database>, accountId: string, limit = 10): Promise<Payment[]> {
  return db
    .selectFrom('payments')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('kind', '=', 'auto_topup')
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

const paymentData = (payment: Payment) => ({
  paymentId: payment.id,
  packageId: payment.package_id,
  credits: payment.credits,
  amount: payment.amount_total,
  currency: payment.currency,
});

/**
 * In the transaction that credits a top-up's payment (once): the failure count starts over and
 * `auto_topup.succeeded` goes to the outbox.
 */
export async function recordTopUpCredited(trx: Trx, account: Account, payment: Payment): Promise<void> {
  await trx
    .updateTable('auto_topup_settings')
    .set({ consecutive_declines: 0, updated_at: sql`now()` })
    .where('account_id', '=', account.id)
    .where('consecutive_declines', '>', 0)
    .execute();
  await emitEvent(trx, {
    type: 'auto_topup.succeeded',
    accountId: account.id,
    data: { userId: account.external_user_id, ...paymentData(payment), balance: account.balance },
  });
}

/**
 * In the transaction that moved a top-up's payment to FAILED (once, whoever was first: the charge's answer
 * or the payment_intent.payment_failed webhook): one more failure in a row, auto top-up off at the third,
 * and `auto_topup.requires_action` (the bank wants the customer: authentication_required) or
 * `auto_topup.failed` (a decline, or any other refusal) to the outbox.
 */
export async function recordTopUpFailed(
  trx: Trx,
  paymentId: string,
  failure: { readonly code: string; readonly message: string | null },
): Promise<void> {
  const payment = await trx
    .selectFrom('payments')
    .innerJoin('accounts', 'accounts.id', 'payments.account_id')
    .selectAll('payments')
    .select('accounts.external_user_id')
    .where('payments.id', '=', paymentId)
    .executeTakeFirstOrThrow();
  const counted = await trx
    .updateTable('auto_topup_settings')
    .set({
      consecutive_declines: sql`consecutive_declines + 1`,
      enabled: sql`enabled AND consecutive_declines + 1 < ${DISABLE_AFTER_FAILURES}`,
      disabled_reason: sql`CASE WHEN enabled AND consecutive_declines + 1 >= ${DISABLE_AFTER_FAILURES}
        THEN ${DISABLED_THREE_FAILURES} ELSE disabled_reason END`,
      updated_at: sql`now()`,
    })
    .where('account_id', '=', payment.account_id)
    .returning(['consecutive_declines', 'enabled'])
    .executeTakeFirst();
  await emitEvent(trx, {
    type: failure.code === 'authentication_required' ? 'auto_topup.requires_action' : 'auto_topup.failed',
    accountId: payment.account_id,
    data: {
      userId: payment.external_user_id,
      ...paymentData(payment),
      code: failure.code,
      message: failure.message,
      consecutiveFailures: counted?.consecutive_declines ?? null,
      autoTopUpEnabled: counted?.enabled ?? false,
    },
  });
}
