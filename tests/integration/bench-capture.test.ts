import { describe, expect, it } from 'vitest';
import { connect, expectSameRowsWritten, replayWithPg } from '../../local/bench/captured-transaction.js';
import { captureSpend } from '../../local/bench/debit.js';
import { createTestDatabase } from '../support/database.js';
import { givenFundedAccount, reloadAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// The benchmark's baselines replay the service's own statements, captured from its query log: a replay
// that wrote to the captured accounts instead of its own would make every baseline figure a lie.
const { db, ownerUrl } = await createTestDatabase();

describe('bench: the captured spend', () => {
  it("replayed through raw pg for a third user, spends that user's credits only and writes the rows the router wrote", async () => {
    const [first, second, third] = await Promise.all([1, 2, 3].map(() => givenFundedAccount(db, 100)));
    const userOf = (a: typeof first) => a!.account.external_user_id!;
    const spend = await captureSpend(ownerUrl, userOf(first), userOf(second));
    const capturedBalances = await Promise.all([first, second].map((a) => reloadAccount(db, a!.account.id)));

    const client = await connect(ownerUrl);
    try {
      const item = { userId: userOf(third), key: 'bench-replay-1' };
      await replayWithPg(client, spend, item);
      await expectSameRowsWritten(client, spend, item, 'raw pg');
    } finally {
      await client.end();
    }

    expect((await reloadAccount(db, third!.account.id)).balance).toBe(99);
    const after = await Promise.all([first, second].map((a) => reloadAccount(db, a!.account.id)));
    expect(after.map((a) => a.balance)).toEqual(capturedBalances.map((a) => a.balance));
    await expectInvariantsHold(db);
  });
});
