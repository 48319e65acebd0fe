import { describe, expect, it } from 'vitest';
import { CreditsApiError, createCreditsClient } from '../../shared/client/credits-client.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';

const { stack, db, admin } = await startStackForTest();
const service = stack.auth.principal('service');
const client = createCreditsClient({
  endpoint: stack.url,
  region: 'us-east-1',
  credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
  retryBaseMs: 1,
});

async function fundedUser(name: string, credits: number) {
  const granted = await admin('adjust', name, String(credits), '--reason', 'client test');
  expect(granted.code).toBe(0);
  return name;
}

describe('the typed client against the local stack', () => {
  it('wraps an LLM call in a hold and its capture, records usage, quotes and spends', async () => {
    const user = await fundedUser('client-llm-user', 100_000);
    const estimate = { inputTokens: 2000, outputTokens: 1000 };
    const quote = await client.quote({ sku: 'openai/gpt-4o', usage: estimate });
    expect(quote).toMatchObject({
      sku: 'openai/gpt-4o',
      provider: 'openai',
      priceVersion: expect.any(String),
    });
    const hold = await client.holds.create(user, { sku: 'openai/gpt-4o', usage: estimate });
    expect(hold).toMatchObject({
      status: 'active',
      credits: quote.credits,
      available: 100_000 - quote.credits,
    });
    // ... the model answers with fewer tokens than estimated ...
    const captured = await client.holds.capture(hold.holdId, {
      usage: { inputTokens: 1500, outputTokens: 200 },
    });
    expect(captured).toMatchObject({ status: 'captured', shortfall: 0 });
    expect(captured.credits + captured.released).toBe(hold.credits);
    const voided = await client.holds.create(user, { credits: 10 });
    expect(await client.holds.void(voided.holdId)).toMatchObject({ status: 'voided', released: 10 });
    const recorded = await client.usage.record([
      { eventId: 'client-ev-1', userId: user, sku: 'image.generate', usage: { units: 2 } },
    ]);
    expect(recorded.results).toEqual([expect.objectContaining({ status: 'applied', credits: 20 })]);
    const spent = await client.spend(user, { amount: 5, description: 'client spend' });
    expect(spent).toMatchObject({ amount: 5, replayed: false });
    await expectInvariantsHold(db);
  });

  it('reuses the idempotency key across its own retries, so a lost answer never spends twice', async () => {
    const user = await fundedUser('client-retry-user', 50);
    let calls = 0;
    // The first request reaches the API, but its answer is lost on the way back.
    const flaky = createCreditsClient({
      endpoint: stack.url,
      credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
      retryBaseMs: 1,
      fetch: async (input, init) => {
        calls++;
        const response = await fetch(input, init);
        if (calls === 1) throw new TypeError('fetch failed: the connection was reset');
        return response;
      },
    });
    const spent = await flaky.spend(user, { amount: 20 });
    expect(calls).toBe(2);
    expect(spent).toMatchObject({ amount: 20, balance: 30, replayed: true });
    const entries = await db
      .selectFrom('ledger_entries as e')
      .innerJoin('accounts as a', 'a.id', 'e.account_id')
      .select('e.amount')
      .where('a.external_user_id', '=', user)
      .where('e.kind', '=', 'spend')
      .execute();
    expect(entries).toEqual([{ amount: -20 }]);
    await expectInvariantsHold(db);
  });

  it('throws the API refusal as a CreditsApiError with its status, code and problem body', async () => {
    const user = await fundedUser('client-short-user', 3);
    const refused = await client.spend(user, { amount: 4 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(CreditsApiError);
    expect(refused).toMatchObject({ status: 402, code: 'insufficient_credits', body: { balance: 3 } });
    const stranger = createCreditsClient({
      endpoint: stack.url,
      credentials: { accessKeyId: 'AKIAUNKNOWN', secretAccessKey: 'nope' },
      maxAttempts: 1,
    });
    expect(await stranger.spend(user, { amount: 1 }).catch((error: unknown) => error)).toMatchObject({
      status: 403,
    });
    await expectInvariantsHold(db);
  });
});
