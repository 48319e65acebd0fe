import fc from 'fast-check';
import type { Kysely } from 'kysely';
import { describe, expect, it } from 'vitest';
import { inAccountTransaction } from '../../shared/accounts/accounts.js';
import type { Database } from '../../shared/db/schema.js';
import { movePaymentCredits, spendCredits } from '../../shared/ledger/ledger.js';
import { creditPurchase } from '../../shared/payments/payments.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, givenPayment } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 16 });

const ACCOUNTS = 3;
const PAYMENTS_PER_ACCOUNT = 3;
const PACK = 40;
const OPENING_BALANCE = 10_000; // spends never run short, so every history commutes

/**
 * One operation of a history, addressed by position so the same history can be applied to two fresh sets
 * of accounts. Every kind is idempotent on its own key, like the real event sources.
 */
type Op =
  | { kind: 'purchase'; account: number; payment: number }
  | { kind: 'spend'; account: number; key: string }
  | { kind: 'refund'; account: number; payment: number; reference: string; credits: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('purchase' as const),
    account: fc.nat(ACCOUNTS - 1),
    payment: fc.nat(PAYMENTS_PER_ACCOUNT - 1),
  }),
  fc.record({
    kind: fc.constant('spend' as const),
    account: fc.nat(ACCOUNTS - 1),
    key: fc.string({ minLength: 1, maxLength: 4, unit: fc.constantFrom('a', 'b', 'c', 'd') }),
  }),
  fc.record({
    kind: fc.constant('refund' as const),
    account: fc.nat(ACCOUNTS - 1),
    payment: fc.nat(PAYMENTS_PER_ACCOUNT - 1),
    reference: fc.constantFrom('re_1', 're_2', 're_3', 're_4'),
    credits: fc.constant(10),
  }),
);

/** Keeps the first op per idempotency key: what the history means once each event is applied once. */
function uniqueHistory(ops: Op[]): Op[] {
  const seen = new Set<string>();
  return ops.filter((op) => {
    const key =
      op.kind === 'purchase'
        ? `p:${op.account}:${op.payment}`
        : op.kind === 'spend'
          ? `s:${op.account}:${op.key}`
          : `r:${op.account}:${op.payment}:${op.reference}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

interface World {
  accountIds: string[];
  paymentIds: string[][];
}

async function givenWorld(database: Kysely<Database>): Promise<World> {
  const accountIds: string[] = [];
  const paymentIds: string[][] = [];
  for (let a = 0; a < ACCOUNTS; a++) {
    const { account } = await givenFundedAccount(database, OPENING_BALANCE);
    accountIds.push(account.id);
    const payments: string[] = [];
    for (let p = 0; p < PAYMENTS_PER_ACCOUNT; p++)
      payments.push((await givenPayment(database, account, { credits: PACK })).id);
    paymentIds.push(payments);
  }
  return { accountIds, paymentIds };
}

/** Applies one op. The ledger refuses a refund of an uncredited payment, so every world credits first. */
async function apply(world: World, op: Op): Promise<void> {
  const accountId = world.accountIds[op.account]!;
  await inAccountTransaction(db, accountId, async (trx, account) => {
    if (op.kind === 'purchase') {
      const paymentId = world.paymentIds[op.account]![op.payment]!;
      await creditPurchase(trx, account, { paymentId, credits: PACK, reference: paymentId });
    } else if (op.kind === 'spend') {
      // The amount follows from the key: a repeated key is a retry of the same request, never a conflict.
      await spendCredits(trx, account, {
        amount: op.key.length * 7 + op.key.charCodeAt(0),
        idempotencyKey: op.key,
      });
    } else {
      const paymentId = world.paymentIds[op.account]![op.payment]!;
      await movePaymentCredits(trx, account, {
        paymentId,
        kind: 'refund_clawback',
        credits: op.credits,
        reference: `${paymentId}:${op.reference}`,
      });
    }
  });
}

async function snapshot(world: World) {
  const balances = await db
    .selectFrom('accounts')
    .select(['id', 'balance'])
    .where('id', 'in', world.accountIds)
    .execute();
  const entries = await db
    .selectFrom('ledger_entries')
    .select(['account_id', 'kind', 'amount', 'payment_id'])
    .where('account_id', 'in', world.accountIds)
    .execute();
  const position = (id: string) => world.accountIds.indexOf(id);
  const paymentPosition = (id: string | null) => (id ? world.paymentIds.flat().indexOf(id) : -1);
  return {
    balances: balances.map((b) => [position(b.id), b.balance]).sort(),
    entries: entries
      .map((e) => `${position(e.account_id)}:${e.kind}:${e.amount}:${paymentPosition(e.payment_id)}`)
      .sort(),
  };
}

describe('random operation histories', () => {
  it('end in the state of applying the history once in order, whatever the duplicates, order and concurrency', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 30 }),
        fc.array(fc.nat(29), { maxLength: 15 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        async (history, duplicates, seed) => {
          // Prepare: the same history twice over, on two fresh sets of accounts
          const inOrder = await givenWorld(db);
          const chaotic = await givenWorld(db);
          // Every payment is credited before the history runs, in both worlds.
          const purchases: Op[] = inOrder.accountIds.flatMap((_, account) =>
            Array.from({ length: PAYMENTS_PER_ACCOUNT }, (_, payment) => ({
              kind: 'purchase' as const,
              account,
              payment,
            })),
          );
          const once = uniqueHistory([...purchases, ...history]);
          const noisy = [...history, ...duplicates.map((i) => history[i % history.length]!)];
          const shuffled = fc.sample(fc.shuffledSubarray(noisy, { minLength: noisy.length }), {
            seed,
            numRuns: 1,
          })[0]!;
          // Act
          for (const op of once) await apply(inOrder, op);
          for (const op of purchases) await apply(chaotic, op);
          await Promise.all(
            [0, 1, 2, 3].map(async (lane) => {
              for (const op of shuffled.filter((_, i) => i % 4 === lane)) await apply(chaotic, op);
            }),
          );
          // Assess
          expect(await snapshot(chaotic)).toEqual(await snapshot(inOrder));
        },
      ),
      { numRuns: 25 },
    );
    await expectInvariantsHold(db);
  });
});
