import { afterAll, describe, expect, it } from 'vitest';
import { runAdmin } from '../../local/admin-cli.js';
import { emitEvent } from '../../shared/webhooks/outbox.js';
import { givenAccount } from '../support/factories.js';
import { startStackForTest } from '../support/local-stack.js';
import { waitFor } from '../support/stripe.js';
import { startWebhookReceiver } from '../support/webhook-receiver.js';

// The sweeper every second: the event below is committed without a post-commit flush, as a crash leaves it.
const { db, signed, admin, asUser } = await startStackForTest({ sweepIntervalSeconds: 1 });
const receiver = await startWebhookReceiver([200]);
afterAll(() => receiver.close());

describe('outbound webhooks through the local stack', () => {
  it('registers an endpoint through the admin API and delivers it a signed event', async () => {
    const created = await signed('admin', 'POST', '/v1/admin/webhook-endpoints', {
      url: receiver.url,
      events: ['credits.granted'],
      description: 'e2e receiver',
    });
    expect(created.status).toBe(201);
    const secret = String(created.body.secret);
    const account = await givenAccount(db);

    const event = await db.transaction().execute((trx) =>
      emitEvent(trx, {
        type: 'credits.granted',
        accountId: account.id,
        data: { userId: account.external_user_id, credits: 500 },
      }),
    );
    await waitFor(() => receiver.received.length > 0, 'the receiver to get the event');

    const [request] = receiver.received;
    expect(receiver.verify(request!, secret)).toEqual({
      id: event.id,
      type: 'credits.granted',
      createdAt: event.createdAt,
      data: { userId: account.external_user_id, credits: 500 },
    });
    await waitFor(async () => {
      const log = await admin(
        'deliveries',
        '--endpoint-id',
        String(created.body.id),
        '--status',
        'delivered',
      );
      return log.code === 0 && log.json.items.length === 1;
    }, 'the delivery log to show it delivered');
    const log = await admin('deliveries', '--endpoint-id', String(created.body.id));
    expect(log.json.items[0]).toMatchObject({
      webhookId: request!.headers['webhook-id'],
      eventId: event.id,
      status: 'delivered',
      attempts: 1,
      lastStatus: 200,
    });
  });

  it('manages endpoints from the admin CLI, and refuses bad input before calling the API', async () => {
    const added = await admin(
      'webhooks',
      'add',
      'http://localhost:9/hooks',
      '--events',
      'balance.low,balance.depleted',
    );
    expect(added.code).toBe(0);
    expect(added.json).toMatchObject({
      events: ['balance.low', 'balance.depleted'],
      secret: expect.stringMatching(/^whsec_/),
    });
    const listed = await admin('webhooks', 'list');
    expect(listed.json.items.map((e: { id: string }) => e.id)).toContain(added.json.id);
    expect(JSON.stringify(listed.json)).not.toContain('whsec_');

    const deleted = await admin('webhooks', 'delete', added.json.id);
    expect(deleted).toMatchObject({ code: 0, json: { id: added.json.id, deletedAt: expect.any(String) } });
    expect((await admin('webhooks')).json.items.map((e: { id: string }) => e.id)).not.toContain(
      added.json.id,
    );

    const unknownType = await admin(
      'webhooks',
      'add',
      'http://localhost:9/hooks',
      '--events',
      'balance.lower',
    );
    expect(unknownType.code).toBe(2);
    expect(unknownType.stderr).toContain('unknown event type balance.lower');
    const remote = await admin('webhooks', 'add', 'http://hooks.example.com/', '--events', 'balance.low');
    expect(remote.code).toBe(1);
    expect(remote.stderr).toContain('http is allowed only for loopback hosts');
    const help: string[] = [];
    expect(await runAdmin(['webhooks', 'add', '--help'], { out: (t) => help.push(t), err: () => {} })).toBe(
      0,
    );
    expect(help.join('\n')).toContain('--events a,b');
  });

  it('sends a signed balance.low once per crossing and balance.depleted at zero, right after the spends', async () => {
    const alerts = await startWebhookReceiver([200]);
    try {
      const created = await signed('admin', 'POST', '/v1/admin/webhook-endpoints', {
        url: alerts.url,
        events: ['balance.low', 'balance.depleted'],
      });
      const secret = String(created.body.secret);
      const user = 'e2e-low-balance';
      expect((await admin('adjust', user, '300', '--reason', 'setup')).code).toBe(0);
      expect((await asUser(user, 'PUT', '/v1/me/alerts', { lowBalance: 100 })).status).toBe(200);
      let key = 0;
      const spend = async (amount: number) => {
        const response = await signed(
          'service',
          'POST',
          `/v1/accounts/${user}/spend`,
          { amount },
          { 'idempotency-key': `e2e-low-${++key}` },
        );
        expect(response.status).toBe(200);
      };
      await spend(150); // 150: above the threshold
      await spend(60); // 90: crosses it
      await spend(10); // 80: below already
      expect((await admin('adjust', user, '200', '--reason', 'top up')).code).toBe(0); // 280: re-armed
      await spend(200); // 80: crosses again
      await spend(80); // 0: depleted
      await waitFor(() => alerts.received.length >= 3, 'three balance events');
      // Nothing more arrives: no event for the spend below the threshold.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const events = alerts.received.map((r) => alerts.verify(r, secret) as { type: string; data: unknown });
      expect(events.map((e) => e.type).sort()).toEqual(['balance.depleted', 'balance.low', 'balance.low']);
      expect(events.filter((e) => e.type === 'balance.low').map((e) => e.data)).toEqual(
        expect.arrayContaining([
          { userId: user, available: 90, balance: 90, threshold: 100 },
          { userId: user, available: 80, balance: 80, threshold: 100 },
        ]),
      );
      expect(new Set(alerts.received.map((r) => r.headers['webhook-id'])).size).toBe(3);
    } finally {
      await alerts.close();
    }
  });
});
