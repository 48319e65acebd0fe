import { afterAll, describe, expect, it } from 'vitest';
import { runAdmin } from '../../local/admin-cli.js';
import { emitEvent } from '../../shared/webhooks/outbox.js';
import { givenAccount } from '../support/factories.js';
import { startStackForTest } from '../support/local-stack.js';
import { waitFor } from '../support/stripe.js';
import { startWebhookReceiver } from '../support/webhook-receiver.js';

// The sweeper every second: the event below is committed without a post-commit flush, as a crash leaves it.
const { db, signed, admin } = await startStackForTest({ sweepIntervalSeconds: 1 });
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
});
