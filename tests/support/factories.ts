import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { findOrCreateAccount, inAccountTransaction } from '../../shared/accounts/accounts.js';
import type { Account, Database, Payment } from '../../shared/db/schema.js';
import { EMPTY_FACTS } from '../../shared/payments/facts.js';
import { creditPurchase, settlePayment } from '../../shared/payments/payments.js';

export const ADMIN_ARN = 'arn:aws:iam::123456789012:role/credits-admin';

/** A new account for a fresh external user id. */
export function givenAccount(db: Kysely<Database>, userId = `user_${randomUUID()}`): Promise<Account> {
  return findOrCreateAccount(db, userId);
}

/** A payment row in INIT for `account`, for a pack of `credits` credits. */
export function givenPayment(
  db: Kysely<Database>,
  account: Account,
  overrides: Partial<{ credits: number; amountTotal: number; currency: string; packageId: string }> = {},
): Promise<Payment> {
  return db
    .insertInto('payments')
    .values({
      account_id: account.id,
      package_id: overrides.packageId ?? 'pack_small',
      credits: overrides.credits ?? 100,
      amount_total: overrides.amountTotal ?? 1000,
      currency: overrides.currency ?? 'usd',
      stripe_checkout_session_id: `cs_test_${randomUUID().replaceAll('-', '')}`,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** An account holding `credits` credits from one credited purchase. */
export async function givenFundedAccount(
  db: Kysely<Database>,
  credits: number,
): Promise<{ account: Account; payment: Payment }> {
  const account = await givenAccount(db);
  const payment = await givenPayment(db, account, { credits });
  await inAccountTransaction(db, account.id, async (trx, locked) => {
    await creditPurchase(trx, locked, { paymentId: payment.id, credits, reference: payment.id });
  });
  return { account, payment };
}

/** Settles `payment` with Stripe's charge refunded by `amountRefunded` (minor units): a partial clawback. */
export async function givenRefund(
  db: Kysely<Database>,
  payment: Payment,
  amountRefunded: number,
  reference: string,
): Promise<void> {
  await inAccountTransaction(db, payment.account_id, async (trx, locked) => {
    const current = await trx
      .selectFrom('payments')
      .selectAll()
      .where('id', '=', payment.id)
      .executeTakeFirstOrThrow();
    await settlePayment(
      trx,
      locked,
      current,
      { ...EMPTY_FACTS, chargeAmountRefunded: amountRefunded },
      reference,
    );
  });
}

/** The account row as stored now. */
export function reloadAccount(db: Kysely<Database>, accountId: string): Promise<Account> {
  return db.selectFrom('accounts').selectAll().where('id', '=', accountId).executeTakeFirstOrThrow();
}

/**
 * A clock that stands still until the test moves it forward. It starts an hour ahead of the real time, so
 * the times the database stamps on entries are never later than what it says.
 */
export function testClock() {
  let at = Date.now() + 3_600_000;
  return {
    now: () => new Date(at),
    advance(ms: number) {
      at += ms;
    },
  };
}
