import { describe, expect, it } from 'vitest';
import { inAccountTransaction, saveCard } from '../../shared/accounts/accounts.js';
import { UNLIMITED } from '../../shared/ledger/debit.js';
import { spendUserCredits } from '../../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plan-catalog.js';
import { planGuard } from '../../shared/plans/plans.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, reloadAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// The TypeScript half of the debit function's contract: what it does around the one call.
const { db } = await createTestDatabase();

describe('the debit function, around its call', () => {
  it('answers a committed spend when the auto top-up step after it fails, and hands the failure on', async () => {
    const { account } = await givenFundedAccount(db, 100);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      saveCard(trx, locked, {
        customerId: 'cus_topup_fails',
        paymentMethodId: 'pm_card_visa',
        savedAt: new Date(),
      }),
    );
    const guard = planGuard(DEFAULT_CATALOG, new Date(), DEFAULT_PACKAGES);
    const failing = {
      ...guard,
      topUp: async () => {
        throw new Error('the database went away');
      },
    };
    const spent = await spendUserCredits(
      db,
      account.external_user_id!,
      { amount: 30, idempotencyKey: 'topup-fails' },
      new Date(),
      failing,
    );
    expect(spent).toMatchObject({ amount: 30, balance: 70, replayed: false });
    expect(guard.topUpFailures).toHaveLength(1);
    expect(String(guard.topUpFailures[0])).toContain('the database went away');
    expect((await reloadAccount(db, account.id)).balance).toBe(70);
    await expectInvariantsHold(db);
  });

  it('writes nothing for a refused spend on the pool, in one call', async () => {
    const { account } = await givenFundedAccount(db, 10);
    const count = async () =>
      Number(
        (
          await db
            .selectFrom('ledger_entries')
            .select((eb) => eb.fn.countAll().as('n'))
            .where('account_id', '=', account.id)
            .executeTakeFirstOrThrow()
        ).n,
      );
    const before = await count();
    await expect(
      spendUserCredits(
        db,
        account.external_user_id!,
        { amount: 11, idempotencyKey: 'too-much' },
        new Date(),
        UNLIMITED,
      ),
    ).rejects.toMatchObject({ code: 'insufficient_credits' });
    expect(await count()).toBe(before);
    expect((await reloadAccount(db, account.id)).balance).toBe(10);
  });
});
