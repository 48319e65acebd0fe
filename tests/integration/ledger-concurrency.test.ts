import { describe, expect, it } from 'vitest';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import { InsufficientCreditsError } from '../../shared/errors.js';
import { adjustCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { creditPurchase } from '../../shared/payments/payments.js';
import { createTestDatabase } from '../support/database.js';
import {
  ADMIN_ARN,
  givenAccount,
  givenFundedAccount,
  givenPayment,
  reloadAccount,
} from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 40 });

describe('ledger under concurrency', () => {
  it('credits 200 concurrent deliveries of the same purchase exactly once', async () => {
    // Prepare
    const account = await givenAccount(db);
    const payment = await givenPayment(db, account, { credits: 500 });
    // Act
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        inAccountTransaction(db, account.id, (trx, locked) =>
          creditPurchase(trx, locked, { paymentId: payment.id, credits: 500, reference: `delivery_${i}` }),
        ),
      ),
    );
    // Assess
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    const entries = await db
      .selectFrom('ledger_entries')
      .selectAll()
      .where('account_id', '=', account.id)
      .execute();
    expect(entries).toHaveLength(1);
    expect((await reloadAccount(db, account.id)).balance).toBe(500);
    await expectInvariantsHold(db);
  });

  it('lets exactly 50 of 100 concurrent spends of 1 through on a balance of 50', async () => {
    const { account } = await givenFundedAccount(db, 50);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) =>
        inAccountTransaction(db, account.id, (trx, locked) =>
          spendCredits(trx, locked, { amount: 1, idempotencyKey: `spend_${i}` }),
        ),
      ),
    );
    const succeeded = outcomes.filter((o) => o.status === 'fulfilled');
    const refused = outcomes.filter((o) => o.status === 'rejected');
    expect(succeeded).toHaveLength(50);
    expect(refused).toHaveLength(50);
    for (const r of refused)
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InsufficientCreditsError);
    expect((await reloadAccount(db, account.id)).balance).toBe(0);
    await expectInvariantsHold(db);
  });

  it('applies 200 concurrent mixed credits, spends and adjustments on one hot account without a lost update', async () => {
    const { account } = await givenFundedAccount(db, 1_000);
    const ops = Array.from({ length: 200 }, (_, i) => i);
    const expected = { credited: 0, spent: 0, adjusted: 0 };
    const outcomes = await Promise.allSettled(
      ops.map(async (i) => {
        if (i % 3 === 0) {
          const payment = await givenPayment(db, account, { credits: 7 });
          await inAccountTransaction(db, account.id, async (trx, locked) => {
            await creditPurchase(trx, locked, { paymentId: payment.id, credits: 7, reference: payment.id });
          });
          expected.credited += 7;
        } else if (i % 3 === 1) {
          await inAccountTransaction(db, account.id, (trx, locked) =>
            spendCredits(trx, locked, { amount: 5, idempotencyKey: `mixed_${i}` }),
          );
          expected.spent += 5;
        } else {
          const amount = i % 2 === 0 ? 3 : -2;
          await inAccountTransaction(db, account.id, (trx, locked) =>
            adjustCredits(trx, locked, { amount, reason: `mixed ${i}`, actorArn: ADMIN_ARN }),
          );
          expected.adjusted += amount;
        }
      }),
    );
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
    const final = await reloadAccount(db, account.id);
    expect(final.balance).toBe(1_000 + expected.credited - expected.spent + expected.adjusted);
    const count = await db
      .selectFrom('ledger_entries')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('account_id', '=', account.id)
      .executeTakeFirstOrThrow();
    expect(Number(count.n)).toBe(201);
    expect(final.version).toBe(201);
    await expectInvariantsHold(db);
  });
});
