import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import {
  findOrCreateAccount,
  inAccountTransaction,
  setAccountStatus,
} from '../../shared/accounts/accounts.js';
import {
  AccountFrozenError,
  AccountNotFoundError,
  IdempotencyConflictError,
  InsufficientCreditsError,
  LedgerRuleError,
  ValidationError,
} from '../../shared/errors.js';
import { checkInvariants } from '../../shared/invariants.js';
import { anonymizeAccount } from '../../shared/ledger/erasure.js';
import { adjustCredits, movePaymentCredits, spendCredits } from '../../shared/ledger/ledger.js';
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

const { db, owner } = await createTestDatabase();
const actor = { actorArn: ADMIN_ARN, reason: 'support ticket 42' };

async function entriesOf(accountId: string) {
  return db
    .selectFrom('ledger_entries')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('id')
    .execute();
}

describe('append-only ledger', () => {
  it('rejects UPDATE, DELETE and TRUNCATE of entries in the database itself', async () => {
    const { account } = await givenFundedAccount(db, 10);
    // As the owner: the application role may not even try (tests/integration/database-roles.test.ts).
    await expect(
      sql`UPDATE ledger_entries SET amount = 1000000 WHERE account_id = ${account.id}`.execute(owner()),
    ).rejects.toThrow(/append-only: UPDATE refused/);
    await expect(
      sql`UPDATE ledger_entries SET reference = 'x' WHERE account_id = ${account.id}`.execute(owner()),
    ).rejects.toThrow(/append-only/);
    await expect(
      sql`DELETE FROM ledger_entries WHERE account_id = ${account.id}`.execute(owner()),
    ).rejects.toThrow(/append-only: DELETE refused/);
    await expect(sql`TRUNCATE ledger_entries CASCADE`.execute(owner())).rejects.toThrow(
      /append-only: TRUNCATE refused/,
    );
    expect((await entriesOf(account.id)).map((e) => e.amount)).toEqual([10]);
    await expectInvariantsHold(db);
  });

  it('refuses payment status moves off the state machine', async () => {
    const account = await givenAccount(db);
    const payment = await givenPayment(db, account);
    await db.updateTable('payments').set({ status: 'EXPIRED' }).where('id', '=', payment.id).execute();
    await expect(
      db.updateTable('payments').set({ status: 'CREDITED' }).where('id', '=', payment.id).execute(),
    ).rejects.toThrow(/cannot move from EXPIRED to CREDITED/);
  });
});

describe('bad input changes nothing', () => {
  const badAmounts: unknown[] = [
    0,
    -5,
    0.1,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    2 ** 53,
    '5',
    null,
    Number.MAX_VALUE,
  ];

  it.each(badAmounts)('rejects spend amount %s with a validation error', async (amount) => {
    const { account } = await givenFundedAccount(db, 100);
    const before = await entriesOf(account.id);
    const attempt = inAccountTransaction(db, account.id, (trx, locked) =>
      spendCredits(trx, locked, { amount: amount as number, idempotencyKey: 'k1' }),
    );
    await expect(attempt).rejects.toBeInstanceOf(ValidationError);
    await expect(attempt).rejects.toMatchObject({ code: 'validation_error', field: 'amount' });
    expect(await entriesOf(account.id)).toEqual(before);
    expect((await reloadAccount(db, account.id)).balance).toBe(100);
  });

  it.each(badAmounts)('rejects purchase credits %s with a validation error', async (credits) => {
    const account = await givenAccount(db);
    const payment = await givenPayment(db, account);
    const attempt = inAccountTransaction(db, account.id, (trx, locked) =>
      creditPurchase(trx, locked, {
        paymentId: payment.id,
        credits: credits as number,
        reference: payment.id,
      }),
    );
    await expect(attempt).rejects.toMatchObject({ code: 'validation_error', field: 'credits' });
    expect(await entriesOf(account.id)).toEqual([]);
  });

  it.each([0, 0.5, Number.NaN, -(2 ** 53), '3'])(
    'rejects adjustment %s and writes no audit row',
    async (amount) => {
      const { account } = await givenFundedAccount(db, 5);
      const attempt = inAccountTransaction(db, account.id, (trx, locked) =>
        adjustCredits(trx, locked, { amount: amount as number, ...actor }),
      );
      await expect(attempt).rejects.toMatchObject({ code: 'validation_error', field: 'amount' });
      const audits = await db
        .selectFrom('admin_actions')
        .selectAll()
        .where('account_id', '=', account.id)
        .execute();
      expect(audits).toEqual([]);
    },
  );

  it('rejects an unknown account with a typed error', async () => {
    const attempt = inAccountTransaction(db, '00000000-0000-4000-8000-000000000000', (trx, locked) =>
      spendCredits(trx, locked, { amount: 1, idempotencyKey: 'k' }),
    );
    await expect(attempt).rejects.toBeInstanceOf(AccountNotFoundError);
  });

  it('rejects user ids and keys that Postgres cannot store exactly', async () => {
    await expect(findOrCreateAccount(db, 'nul\u0000byte')).rejects.toMatchObject({ field: 'userId' });
    await expect(findOrCreateAccount(db, 'lone \ud800 surrogate')).rejects.toMatchObject({ field: 'userId' });
    await expect(findOrCreateAccount(db, 'x'.repeat(256))).rejects.toMatchObject({ field: 'userId' });
    const { account } = await givenFundedAccount(db, 5);
    await expect(
      inAccountTransaction(db, account.id, (trx, locked) =>
        spendCredits(trx, locked, { amount: 1, idempotencyKey: '' }),
      ),
    ).rejects.toMatchObject({ field: 'idempotencyKey' });
  });
});

describe('spend', () => {
  const spend = (accountId: string, request: Parameters<typeof spendCredits>[2]) =>
    inAccountTransaction(db, accountId, (trx, locked) => spendCredits(trx, locked, request));

  it('replays the first result for the same key and request, in any key order of metadata', async () => {
    const { account } = await givenFundedAccount(db, 100);
    const first = await spend(account.id, {
      amount: 30,
      idempotencyKey: 'job-1',
      metadata: { a: 1, b: [2] },
    });
    await spend(account.id, { amount: 10, idempotencyKey: 'job-2' });
    const again = await spend(account.id, {
      amount: 30,
      idempotencyKey: 'job-1',
      metadata: { b: [2], a: 1 },
    });
    expect(first).toMatchObject({ amount: 30, balance: 70, replayed: false });
    expect(again).toEqual({ ...first, replayed: true });
    expect((await reloadAccount(db, account.id)).balance).toBe(60);
  });

  it('answers a conflict for the same key with another request and writes nothing', async () => {
    const { account } = await givenFundedAccount(db, 100);
    await spend(account.id, { amount: 30, idempotencyKey: 'job-1' });
    await expect(spend(account.id, { amount: 31, idempotencyKey: 'job-1' })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    await expect(
      spend(account.id, { amount: 30, idempotencyKey: 'job-1', description: 'x' }),
    ).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect((await reloadAccount(db, account.id)).balance).toBe(70);
  });

  it('refuses a short balance with the current balance and writes nothing', async () => {
    const { account } = await givenFundedAccount(db, 10);
    const attempt = spend(account.id, { amount: 11, idempotencyKey: 'big' });
    await expect(attempt).rejects.toBeInstanceOf(InsufficientCreditsError);
    await expect(attempt).rejects.toMatchObject({ balance: 10, requested: 11 });
    expect(await entriesOf(account.id)).toHaveLength(1);
    // The key was not consumed: the same key succeeds once the balance allows it.
    await expect(spend(account.id, { amount: 10, idempotencyKey: 'big' })).resolves.toMatchObject({
      balance: 0,
    });
  });

  it('is refused while the account is frozen, and works again after unfreezing; both audited', async () => {
    const { account } = await givenFundedAccount(db, 10);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      setAccountStatus(trx, locked, 'frozen', actor),
    );
    await expect(spend(account.id, { amount: 1, idempotencyKey: 'f1' })).rejects.toBeInstanceOf(
      AccountFrozenError,
    );
    await inAccountTransaction(db, account.id, (trx, locked) =>
      setAccountStatus(trx, locked, 'active', actor),
    );
    await expect(spend(account.id, { amount: 1, idempotencyKey: 'f1' })).resolves.toMatchObject({
      balance: 9,
    });
    const audits = await db
      .selectFrom('admin_actions')
      .select('action')
      .where('account_id', '=', account.id)
      .execute();
    expect(audits.map((a) => a.action).sort()).toEqual(['freeze', 'unfreeze']);
  });
});

describe('clawbacks and reinstatements', () => {
  const move = (accountId: string, input: Parameters<typeof movePaymentCredits>[2]) =>
    inAccountTransaction(db, accountId, (trx, locked) => movePaymentCredits(trx, locked, input));

  it('may take the balance negative after spending, which then blocks spending until it is positive', async () => {
    const { account, payment } = await givenFundedAccount(db, 100);
    await inAccountTransaction(db, account.id, (trx, locked) =>
      spendCredits(trx, locked, { amount: 80, idempotencyKey: 'used' }),
    );
    await move(account.id, {
      paymentId: payment.id,
      kind: 'dispute_clawback',
      credits: 100,
      reference: 'dp_1',
    });
    expect((await reloadAccount(db, account.id)).balance).toBe(-80);
    await expect(
      inAccountTransaction(db, account.id, (trx, locked) =>
        spendCredits(trx, locked, { amount: 1, idempotencyKey: 'after' }),
      ),
    ).rejects.toMatchObject({ code: 'insufficient_credits', balance: -80 });
    await move(account.id, {
      paymentId: payment.id,
      kind: 'dispute_reinstatement',
      credits: 100,
      reference: 'dp_1',
    });
    expect((await reloadAccount(db, account.id)).balance).toBe(20);
    await expectInvariantsHold(db);
  });

  it('is idempotent per reference and never claws back more than was credited', async () => {
    const { account, payment } = await givenFundedAccount(db, 100);
    const first = await move(account.id, {
      paymentId: payment.id,
      kind: 'refund_clawback',
      credits: 60,
      reference: 're_1',
    });
    const again = await move(account.id, {
      paymentId: payment.id,
      kind: 'refund_clawback',
      credits: 60,
      reference: 're_1',
    });
    expect(again).toEqual({ entry: first.entry, duplicate: true });
    await expect(
      move(account.id, { paymentId: payment.id, kind: 'dispute_clawback', credits: 41, reference: 'dp_1' }),
    ).rejects.toBeInstanceOf(LedgerRuleError);
    await expect(
      move(account.id, { paymentId: payment.id, kind: 'refund_reversal', credits: 61, reference: 're_1' }),
    ).rejects.toBeInstanceOf(LedgerRuleError);
    expect((await reloadAccount(db, account.id)).balance).toBe(40);
    await expectInvariantsHold(db);
  });

  it('refuses to claw back a payment that was never credited', async () => {
    const account = await givenAccount(db);
    const payment = await givenPayment(db, account);
    await expect(
      move(account.id, { paymentId: payment.id, kind: 'refund_clawback', credits: 1, reference: 're_x' }),
    ).rejects.toBeInstanceOf(LedgerRuleError);
  });
});

describe('admin and GDPR', () => {
  it('writes an adjustment and its audit row in one transaction, never below zero', async () => {
    const { account } = await givenFundedAccount(db, 10);
    const entry = await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(trx, locked, { amount: -4, ...actor }),
    );
    const audit = await db
      .selectFrom('admin_actions')
      .selectAll()
      .where('id', '=', entry.admin_action_id)
      .executeTakeFirstOrThrow();
    expect(audit).toMatchObject({
      actor_arn: ADMIN_ARN,
      action: 'adjust',
      reason: actor.reason,
      payload: { amount: -4 },
    });
    await expect(
      inAccountTransaction(db, account.id, (trx, locked) =>
        adjustCredits(trx, locked, { amount: -7, ...actor }),
      ),
    ).rejects.toBeInstanceOf(InsufficientCreditsError);
    expect((await reloadAccount(db, account.id)).balance).toBe(6);
    await expectInvariantsHold(db);
  });

  it('anonymises personal data and keeps amounts and the chain, idempotently', async () => {
    const userId = 'gdpr-user@example.com';
    const account = await findOrCreateAccount(db, userId);
    const payment = await givenPayment(db, account, { credits: 50 });
    await inAccountTransaction(db, account.id, async (trx, locked) => {
      await creditPurchase(trx, locked, { paymentId: payment.id, credits: 50, reference: payment.id });
      await spendCredits(trx, locked, {
        amount: 5,
        idempotencyKey: 'k',
        description: 'report for Jane Doe',
        metadata: { email: 'jane@example.com' },
      });
    });
    const amountsBefore = (await entriesOf(account.id)).map((e) => [e.amount, e.balance_after]);
    for (let i = 0; i < 2; i++) {
      await inAccountTransaction(db, account.id, (trx, locked) => anonymizeAccount(trx, locked, actor));
    }
    const after = await reloadAccount(db, account.id);
    expect(after).toMatchObject({ external_user_id: null, stripe_customer_id: null, balance: 45 });
    expect(after.anonymized_at).toBeInstanceOf(Date);
    const entries = await entriesOf(account.id);
    expect(entries.map((e) => [e.amount, e.balance_after])).toEqual(amountsBefore);
    expect(entries.every((e) => e.description === null && e.metadata === null)).toBe(true);
    const audits = await db
      .selectFrom('admin_actions')
      .select('action')
      .where('account_id', '=', account.id)
      .execute();
    expect(audits).toEqual([{ action: 'anonymize' }]);
    // The same user id signing in again is a new, empty account.
    expect((await findOrCreateAccount(db, userId)).id).not.toBe(account.id);
    await expectInvariantsHold(db);
  });
});

describe('invariant checker', () => {
  it('reports a tampered balance, a broken chain and a disabled trigger', async () => {
    const tampered = await createTestDatabase({ max: 2 });
    const { account } = await givenFundedAccount(tampered.db, 10);
    await givenFundedAccount(tampered.db, 3);
    expect((await checkInvariants(tampered.db)).ok).toBe(true);
    await tampered.db.updateTable('accounts').set({ balance: 11 }).where('id', '=', account.id).execute();
    // Only the owner could do this; the application role may not (tests/integration/database-roles.test.ts).
    await sql`ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only`.execute(
      tampered.owner(),
    );
    await sql`UPDATE ledger_entries SET balance_after = 9 WHERE account_id = ${account.id}`.execute(
      tampered.owner(),
    );
    const report = await checkInvariants(tampered.db);
    expect(report.ok).toBe(false);
    expect(report.counts).toEqual({ accounts: 2, entries: 2, payments: 2 });
    expect(report.violations.map((v) => [v.invariant, v.accountId ?? null])).toEqual([
      [1, account.id],
      [1, account.id],
      [4, null],
      // The grants still hold the 10 credits the tampered balance no longer says.
      [10, account.id],
    ]);
  });
});
