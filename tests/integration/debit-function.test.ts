import { describe, expect, it } from 'vitest';
import { inAccountTransaction, saveCard } from '../../shared/accounts/accounts.js';
import type { Account } from '../../shared/db/schema.js';
import { createHold } from '../../shared/holds/holds.js';
import { UNLIMITED } from '../../shared/ledger/debit.js';
import { movePaymentCredits, spendUserCredits } from '../../shared/ledger/ledger.js';
import { type CreditPackage, DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plan-catalog.js';
import { planGuard } from '../../shared/plans/plans.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { startMissedTopUps } from '../../shared/topup/topup.js';
import { saveAutoTopUpSettings } from '../../shared/topup-settings/settings.js';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, reloadAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// The TypeScript half of the debit function's contract: what it does around the one call.
const { db } = await createTestDatabase();

/** A funded account (100 credits) with a saved card and auto top-up on: below 50, buy `pack`. */
async function givenAutoTopUp(key: string, settings: { maxPerMonth?: number; pack?: CreditPackage } = {}) {
  const funded = await givenFundedAccount(db, 100);
  await inAccountTransaction(db, funded.account.id, (trx, locked) =>
    saveCard(trx, locked, { customerId: `cus_${key}`, paymentMethodId: 'pm_card_visa', savedAt: new Date() }),
  );
  await saveAutoTopUpSettings(db, DEFAULT_PACKAGES, funded.account.id, {
    enabled: true,
    packageId: (settings.pack ?? DEFAULT_PACKAGES[0]!).id,
    thresholdCredits: 50,
    maxPerMonth: settings.maxPerMonth ?? 5,
  });
  return funded;
}

/** A spend of 70 (leaving 30, below 50) whose step after the commit never runs: a crash. */
async function spendThenCrash(account: Account, key: string) {
  const guard = planGuard(DEFAULT_CATALOG, new Date(), DEFAULT_PACKAGES);
  await spendUserCredits(db, account.external_user_id!, { amount: 70, idempotencyKey: key }, new Date(), {
    ...guard,
    topUp: async () => {},
  });
}

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

  it('prices a hold by a version activated after this process read the books, at that version', async () => {
    const actor = { actorArn: ADMIN_ARN, reason: 'test' };
    const now = new Date();
    const { call } = testApi(db, { clock: () => now });
    const { account } = await givenFundedAccount(db, 1_000);
    const book = async (version: string, input: string, activeFrom: Date) => {
      await createPriceBookDraft(
        db,
        { version, items: [{ sku: 'acme/hold', kind: 'tokens', rates: { input, output: '0' } }] },
        actor,
      );
      await activatePriceBook(db, version, actor, activeFrom);
    };
    const hold = (key: string) =>
      call('POST /v1/accounts/{userId}/holds', {
        auth: { iam: SERVICE_ARN },
        params: { userId: account.external_user_id! },
        headers: { 'idempotency-key': key },
        body: { sku: 'acme/hold', usage: { inputTokens: 10, outputTokens: 0 } },
      });
    await book('h-v1', '1000000', new Date(now.getTime() - 3_600_000));
    expect((await hold('h-1')).body).toMatchObject({ credits: 10, priceVersion: 'h-v1' });
    // 5 credits per input token from a minute ago: what this process read of the books still says 1.
    await book('h-v2', '5000000', new Date(now.getTime() - 60_000));
    expect((await hold('h-2')).body).toMatchObject({ credits: 50, priceVersion: 'h-v2' });
    await expectInvariantsHold(db);
  });

  it('leaves a top-up a crash skipped after its debit (or hold) to the sweeper, which starts it once; none after a clawback', async () => {
    const skipped = await givenAutoTopUp('skipped');
    await spendThenCrash(skipped.account, 'crash-before-topup');
    // A hold's creation writes no entry: the sweeper finds it by the active hold.
    const held = await givenAutoTopUp('held');
    const guard = planGuard(DEFAULT_CATALOG, new Date(), DEFAULT_PACKAGES);
    await createHold(
      db,
      held.account.external_user_id!,
      { credits: 70, idempotencyKey: 'hold-crash', request: { credits: 70 }, ttlSeconds: 600 },
      new Date(),
      { ...guard, topUp: async () => {} },
    );
    const clawedBack = await givenAutoTopUp('clawed');
    await spendThenCrash(clawedBack.account, 'crash-then-refund');
    await inAccountTransaction(db, clawedBack.account.id, (trx, locked) =>
      movePaymentCredits(trx, locked, {
        paymentId: clawedBack.payment.id,
        kind: 'refund_clawback',
        credits: 10,
        reference: 're_missed_topup',
      }),
    );

    const started = await startMissedTopUps(db, DEFAULT_PACKAGES, new Date());
    expect(started).toHaveLength(2);
    const topUps = await db
      .selectFrom('payments')
      .select(['id', 'account_id', 'status'])
      .where('kind', '=', 'auto_topup')
      .where('account_id', 'in', [skipped.account.id, held.account.id, clawedBack.account.id])
      .execute();
    expect(new Set(topUps.map((p) => p.id))).toEqual(new Set(started));
    expect(topUps.map((p) => [p.account_id, p.status]).sort()).toEqual(
      [
        [skipped.account.id, 'INIT'],
        [held.account.id, 'INIT'],
      ].sort(),
    );
    // Once: the top-up is newer than the spend now (and in flight).
    expect(await startMissedTopUps(db, DEFAULT_PACKAGES, new Date())).toEqual([]);
    await expectInvariantsHold(db);
  });

  it("leaves out of the sweeper's net the accounts maybeTopUp would refuse, so they take no one's place", async () => {
    const missed = async (
      key: string,
      settings: { maxPerMonth: number; pack: CreditPackage },
      beforeSpend?: (account: Account) => Promise<unknown>,
    ) => {
      const { account } = await givenAutoTopUp(key, settings);
      await beforeSpend?.(account);
      await spendThenCrash(account, key);
      return account;
    };
    const [small, medium] = DEFAULT_PACKAGES as [CreditPackage, CreditPackage];
    const waiting = await missed('net-waiting', { maxPerMonth: 5, pack: small });
    // Newer, so first in the net's order: one whose month's top-ups are used up (its one top-up of the month
    // was credited before this spend), and one whose pack is no longer on sale.
    await missed('net-capped', { maxPerMonth: 1, pack: small }, (account) =>
      db
        .insertInto('payments')
        .values({
          account_id: account.id,
          kind: 'auto_topup',
          package_id: small.id,
          credits: small.credits,
          amount_total: small.amount,
          currency: small.currency,
          status: 'CREDITED',
        })
        .execute(),
    );
    await missed('net-off-sale', { maxPerMonth: 5, pack: medium });

    const started = await startMissedTopUps(db, [small], new Date(), 1);
    const topUps = await db
      .selectFrom('payments')
      .select(['id', 'account_id'])
      .where('id', 'in', started)
      .execute();
    expect(topUps.map((p) => p.account_id)).toEqual([waiting.id]);
  });
});
