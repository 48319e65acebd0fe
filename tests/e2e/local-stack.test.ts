import { sql } from 'kysely';
import { describe, expect, inject, it } from 'vitest';
import { createDb } from '../../shared/db/client.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';
import { waitFor } from '../support/stripe.js';

const { stack, db, databaseUrl, asUser, signed, admin } = await startStackForTest();
const emulator = stack.emulator!;
const control = async (path: string, body: unknown = {}) => {
  const response = await fetch(`${emulator.url}/_emulator/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  expect(response.ok).toBe(true);
};
const balance = async (userId: string) =>
  Number((await asUser(userId, 'GET', '/v1/me/credits')).body.balance);

/** Buys a pack the way the demo page does: checkout, then the emulator's hosted page. */
async function buy(userId: string, method = 'card') {
  const checkout = await asUser(userId, 'POST', '/v1/checkout', { packageId: 'pack_small' });
  expect(checkout.status).toBe(201);
  const paid = await fetch(`${checkout.body.checkoutUrl}/pay`, {
    method: 'POST',
    body: new URLSearchParams({ method }),
    redirect: 'manual',
  });
  expect(paid.status).toBe(303);
  expect(paid.headers.get('location')).toBe(`${stack.url}/?checkout=success`);
  return checkout.body;
}

describe('the local stack over HTTP', () => {
  it('serves the demo page, the OpenAPI document and public routes', async () => {
    expect(await (await fetch(`${stack.url}/`)).text()).toContain('Credits demo');
    expect(((await (await fetch(`${stack.url}/openapi.json`)).json()) as { openapi: string }).openapi).toBe(
      '3.1.0',
    );
    expect(await (await fetch(`${stack.url}/health`)).json()).toEqual({ status: 'ok' });
  });

  it('plays the authorizers: no token 401, a forged token 401, unsigned IAM 403, the wrong principal 403', async () => {
    expect((await fetch(`${stack.url}/v1/me/credits`)).status).toBe(401);
    expect(
      (
        await fetch(`${stack.url}/v1/me/credits`, {
          headers: { authorization: 'Bearer eyJhbGciOiJub25lIn0.e30.' },
        })
      ).status,
    ).toBe(401);
    expect((await fetch(`${stack.url}/v1/admin/invariants`)).status).toBe(403);
    expect((await signed('service', 'GET', '/v1/admin/invariants')).status).toBe(403);
    expect((await signed('admin', 'GET', '/v1/admin/invariants')).status).toBe(200);
  });

  it('purchase → webhook → credit → spend → admin adjustment', async () => {
    const user = 'e2e-buyer';
    expect(await balance(user)).toBe(0);
    await buy(user);
    await waitFor(async () => (await balance(user)) === 1000, 'the webhook credits the purchase');

    const spend = await signed(
      'service',
      'POST',
      `/v1/accounts/${user}/spend`,
      { amount: 100, description: 'e2e' },
      { 'idempotency-key': 'e2e-1' },
    );
    expect(spend).toMatchObject({ status: 200, body: { balance: 900, replayed: false } });
    const replay = await signed(
      'service',
      'POST',
      `/v1/accounts/${user}/spend`,
      { amount: 100, description: 'e2e' },
      { 'idempotency-key': 'e2e-1' },
    );
    expect(replay.body).toMatchObject({ balance: 900, replayed: true });

    const adjusted = await admin('adjust', user, '50', '--reason', 'goodwill, ticket 9');
    expect(adjusted.code).toBe(0);
    expect(adjusted.json).toMatchObject({ entry: { amount: 50, balanceAfter: 950 } });
    const account = await admin('account', user);
    expect(account.json.adminActions[0]).toMatchObject({
      actorArn: expect.stringContaining('credits-local-admin'),
      reason: 'goodwill, ticket 9',
    });
    expect(await balance(user)).toBe(950);
  });

  it('reconciliation credits a purchase whose webhooks were paused, once', async () => {
    const user = 'e2e-paused';
    await control('webhooks/pause');
    await buy(user);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await balance(user)).toBe(0);
    const run = await admin('reconcile', '--window-hours', '1');
    expect(run.code).toBe(0);
    expect(run.json).toMatchObject({ status: 'succeeded' });
    expect(run.json.healed).toBeGreaterThanOrEqual(1);
    expect(await balance(user)).toBe(1000);
    await control('webhooks/resume');
    await waitFor(
      () =>
        emulator.webhooks.status().pending === 0 &&
        emulator.webhooks.status().inFlight === 0 &&
        stack.queue.main.length === 0,
      'the late webhooks to be delivered and processed',
    );
    expect(await balance(user)).toBe(1000);
  });

  it('parks events in the DLQ after 5 failed receives while the database is away, and a redrive credits them', async () => {
    const user = 'e2e-dlq';
    // Only this test's events may be in flight when the database goes away.
    await waitFor(() => stack.queue.main.length === 0, 'earlier events to be processed');
    const checkout = await asUser(user, 'POST', '/v1/checkout', { packageId: 'pack_small' });
    const name = new URL(databaseUrl).pathname.slice(1);
    const admins = createDb(inject('postgresServerUrl'), { max: 1 });
    await sql`ALTER DATABASE ${sql.id(name)} WITH ALLOW_CONNECTIONS false`.execute(admins);
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${name}`.execute(admins);
    try {
      const paid = await fetch(`${checkout.body.checkoutUrl}/pay`, {
        method: 'POST',
        body: new URLSearchParams({ method: 'card' }),
        redirect: 'manual',
      });
      expect(paid.status).toBe(303);
      await waitFor(() => stack.queue.dlq.length === 2, 'two events in the DLQ', 20_000);
    } finally {
      await sql`ALTER DATABASE ${sql.id(name)} WITH ALLOW_CONNECTIONS true`.execute(admins);
      await admins.destroy();
    }
    const inspected = await admin('dlq');
    expect(inspected.json.messages).toBe(2);
    expect(inspected.json.sample.map((m: { eventType: string }) => m.eventType).sort()).toEqual([
      'checkout.session.completed',
      'payment_intent.succeeded',
    ]);
    expect(await balance(user)).toBe(0);
    const redrive = await admin('dlq', 'redrive');
    expect(redrive.json).toMatchObject({ redrive: 'started', messages: 2 });
    await waitFor(async () => (await balance(user)) === 1000, 'the redriven events credit the purchase');
    expect(stack.queue.dlq).toHaveLength(0);
    await expectInvariantsHold(db);
  });
});
