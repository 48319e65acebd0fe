import type { CompiledQuery } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createDb } from '../../shared/db/client.js';
import { applyStripeEvent } from '../../shared/events/apply-event.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { type StripeEvent, stripeEventSchema } from '../../shared/stripe/events.js';
import { createTestDatabase } from '../support/database.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { givenCheckout } from '../support/purchase.js';

const { db, url } = await createTestDatabase({ max: 2 });

const balanceOf = async (accountId: string) =>
  (await db.selectFrom('accounts').select('balance').where('id', '=', accountId).executeTakeFirstOrThrow())
    .balance;

/** Every statement `run` sends to Postgres through kysely, in order. */
async function statementsOf(run: (db: ReturnType<typeof createDb>) => Promise<unknown>): Promise<string[]> {
  const statements: string[] = [];
  const logged = createDb(url, {
    max: 1,
    log: (event) => {
      if (event.level === 'query') statements.push(event.query.sql);
    },
  });
  await run(logged);
  await logged.destroy();
  return statements;
}

describe('query plans', () => {
  it('credits a purchase in 13 statements with its grant and its credits.granted event (17 before the domain layout), reading back nothing', async () => {
    const checkout = await givenCheckout(db);
    const statements = await statementsOf((logged) =>
      applyStripeEvent(logged, stripeEventSchema.parse(checkout.completed()) as StripeEvent, {
        packages: DEFAULT_PACKAGES,
      }),
    );
    expect(statements.length).toBeLessThanOrEqual(13);
    const written = new Set<string>();
    const readBack: string[] = [];
    for (const statement of statements) {
      const write = /^(?:insert into|update)\s+"(\w+)"/i.exec(statement)?.[1];
      if (write) written.add(write);
      const read = /^select\b[\s\S]*?\bfrom\s+"(\w+)"/i.exec(statement)?.[1];
      if (read && written.has(read)) readBack.push(statement);
    }
    expect(readBack).toEqual([]);
    expect(await balanceOf(checkout.account.id)).toBe(checkout.payment.credits);
    await expectInvariantsHold(db);
  });

  it('serves every query the worker runs for a purchase, refund and dispute from an index', async () => {
    const checkout = await givenCheckout(db);
    const queries: CompiledQuery[] = [];
    const logged = createDb(url, {
      max: 1,
      log: (event) => {
        if (event.level === 'query') queries.push(event.query);
      },
    });
    const history = [
      checkout.completed(),
      checkout.intentSucceeded(),
      checkout.chargeRefunded(100),
      checkout.refundEvent('refund.updated', `re_${checkout.ids.charge}`, 100, 'succeeded'),
      checkout.disputeEvent('charge.dispute.created', `dp_${checkout.ids.charge}`, 'needs_response'),
    ];
    for (const event of history) {
      await applyStripeEvent(logged, stripeEventSchema.parse(event) as StripeEvent, {
        packages: DEFAULT_PACKAGES,
      });
    }
    await logged.destroy();

    const touchingTables = queries.filter((q) => /\b(from|update|into)\s+"/i.test(q.sql));
    expect(touchingTables.length).toBeGreaterThan(20);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const scans: string[] = [];
    await client.query('BEGIN');
    await client.query('SET LOCAL enable_seqscan = off');
    for (const query of touchingTables) {
      const plan = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${query.sql}`, [
        ...query.parameters,
      ]);
      const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
      // With sequential scans disabled, a plan that still shows one has no index to use.
      if (/Seq Scan/.test(text)) scans.push(`${query.sql}\n${text}`);
    }
    await client.query('ROLLBACK');
    await client.end();
    expect(scans).toEqual([]);
    await expectInvariantsHold(db);
  });
});
