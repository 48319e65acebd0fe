import { type Kysely, Migrator, sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { migrationProvider } from '../../migrations/index.js';
import { inAccountTransaction, setAccountStatus } from '../../shared/accounts/accounts.js';
import type { Database } from '../../shared/db/schema.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import { parsePlans } from '../../shared/plan-catalog.js';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenAccount } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

// debit_usage decides a batch in memory and writes it by set (migration 2026-12-13). Before, it called
// debit_credits once per event (2026-12-12). These run the same random histories through both, one database
// each (the second migrated down to 2026-12-12), and require the same answers and the same rows: balances,
// versions, entries in order, their draws on grants, grants, usage events, rollups, the day's totals and the
// outbox. Entry ids and instants are left out (the two databases stamp their own).
const current = await createTestDatabase();
const previous = await createTestDatabase();
const migrated = await new Migrator({ db: previous.owner(), provider: migrationProvider }).migrateTo(
  '2026-12-12-debit-function',
);
if (migrated.error) throw migrated.error;

const PLANS = parsePlans(
  JSON.stringify([
    { id: 'open', name: 'Open', default: true },
    { id: 'capped', name: 'Capped', caps: { daily: 150, monthly: 260 }, lowBalanceThreshold: 60 },
    { id: 'allowance', name: 'Allowance', monthlyAllowance: 40, caps: { monthly: 500 } },
  ]),
);
const actor = { actorArn: ADMIN_ARN, reason: 'test' };
const HOUR = 3_600_000;

/** A small seeded generator (mulberry32), so a failing seed can be run again. */
function random(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Step =
  | { kind: 'batch'; events: Array<Record<string, unknown>> }
  | { kind: 'advance'; ms: number }
  | { kind: 'hold'; user: string; credits: number };

interface Setup {
  users: string[];
  grants: Array<{ user: string; amount: number; expiresInMs: number | null; promotional: boolean }>;
  plans: Array<{ user: string; planId: string }>;
  budgets: Array<{ user: string; monthlyBudget: number }>;
  frozen: string[];
}

function history(seed: number): { setup: Setup; steps: Step[] } {
  const next = random(seed);
  const pick = <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!;
  const users = Array.from({ length: 8 }, (_, i) => `eq-${seed}-${i}`);
  const setup: Setup = {
    users,
    grants: users.flatMap((user) =>
      Array.from({ length: 1 + Math.floor(next() * 3) }, () => ({
        user,
        amount: 20 + Math.floor(next() * 200),
        // Some expire between the batches (the clock moves 40 minutes before each), some never.
        expiresInMs: next() < 0.4 ? Math.floor(next() * 4 * HOUR) : null,
        promotional: next() < 0.5,
      })),
    ),
    plans: users.filter(() => next() < 0.6).map((user) => ({ user, planId: pick(['capped', 'allowance']) })),
    budgets: users.filter(() => next() < 0.2).map((user) => ({ user, monthlyBudget: 100 })),
    frozen: users.filter(() => next() < 0.1),
  };
  // Most events are new; some resend an earlier one as it was (a duplicate, within the batch or across
  // batches) or with other credits (a conflict, or a new event when the earlier one was refused).
  const sent: Array<{ eventId: string; userId: string; credits: number }> = [];
  const steps: Step[] = [];
  for (let b = 0; b < 6; b++) {
    steps.push({ kind: 'advance', ms: b === 4 ? 31 * 24 * HOUR : 40 * 60_000 });
    if (next() < 0.5) steps.push({ kind: 'hold', user: pick(users), credits: 1 + Math.floor(next() * 30) });
    const events = Array.from({ length: 40 + Math.floor(next() * 40) }, () => {
      const roll = next();
      const event =
        sent.length > 0 && roll < 0.1
          ? { ...pick(sent) }
          : sent.length > 0 && roll < 0.15
            ? (({ credits, ...rest }) => ({ ...rest, credits: credits + 1 }))(pick(sent))
            : {
                eventId: `ev-${sent.length}`,
                userId: next() < 0.05 ? `eq-${seed}-nobody` : pick(users),
                credits: Math.floor(next() * 45),
              };
      sent.push(event);
      return event;
    });
    steps.push({ kind: 'batch', events });
  }
  return { setup, steps };
}

/** Runs a history on one database; answers every response body, in order. */
async function run(db: Kysely<Database>, { setup, steps }: ReturnType<typeof history>, start: number) {
  let at = start;
  const clock = () => new Date(at);
  const api = testApi(db, { clock, config: { plans: PLANS } });
  const service = { iam: SERVICE_ARN };
  const admin = { iam: 'arn:aws:sts::123456789012:assumed-role/credits-admin/alice' };
  const accounts = new Map<string, string>();
  for (const user of setup.users) accounts.set(user, (await givenAccount(db, user)).id);
  for (const grant of setup.grants) {
    await inAccountTransaction(db, accounts.get(grant.user)!, (trx, locked) =>
      adjustCredits(
        trx,
        locked,
        {
          ...actor,
          amount: grant.amount,
          category: grant.promotional ? 'promotional' : 'paid',
          expiresAt: grant.expiresInMs === null ? null : new Date(at + grant.expiresInMs),
        },
        clock(),
      ),
    );
  }
  const answers: unknown[] = [];
  const answered = async (response: Promise<{ status: number; body: Record<string, unknown> }>) => {
    const { status, body } = await response;
    answers.push({ status, body });
  };
  const held = async (response: Promise<{ status: number }>) =>
    answers.push({ status: (await response).status });
  for (const { user, planId } of setup.plans) {
    await answered(
      api.call('PUT /v1/admin/accounts/{userId}/plan', {
        auth: admin,
        params: { userId: user },
        body: { planId, reason: 'test' },
      }),
    );
  }
  for (const { user, monthlyBudget } of setup.budgets) {
    await answered(api.call('PUT /v1/me/limits', { auth: { user }, body: { monthlyBudget } }));
  }
  for (const user of setup.frozen) {
    await inAccountTransaction(db, accounts.get(user)!, (trx, locked) =>
      setAccountStatus(trx, locked, 'frozen', actor),
    );
  }
  let holds = 0;
  for (const step of steps) {
    if (step.kind === 'advance') at += step.ms;
    else if (step.kind === 'hold') {
      await held(
        api.call('POST /v1/accounts/{userId}/holds', {
          auth: service,
          params: { userId: step.user },
          headers: { 'idempotency-key': `hold-${++holds}` },
          body: { credits: step.credits, ttlSeconds: 3600 },
        }),
      );
    } else await answered(api.call('POST /v1/usage', { auth: service, body: { events: step.events } }));
  }
  // Without the instants the API stamps (a plan's change).
  return { answers: JSON.parse(JSON.stringify(answers, (k, v) => (k.endsWith('At') ? undefined : v))), at };
}

/** Every row a usage debit writes, for these users, without ids and instants. */
async function rows(db: Kysely<Database>, users: string[]) {
  const of = async (query: ReturnType<typeof sql>) => (await query.execute(db)).rows;
  const accounts = sql`SELECT id, external_user_id AS user FROM accounts WHERE external_user_id IN (${sql.join(users)})`;
  const grants = sql`SELECT g.id, a.user, row_number() OVER (PARTITION BY g.account_id ORDER BY g.created_at, g.id) AS n
    FROM credit_grants g JOIN (${accounts}) a ON a.id = g.account_id`;
  return {
    accounts: await of(sql`SELECT external_user_id, balance, version, status FROM accounts
      WHERE external_user_id IN (${sql.join(users)}) ORDER BY 1`),
    entries: await of(sql`SELECT a.user, e.kind, e.amount, e.balance_after,
        CASE WHEN e.kind IN ('usage', 'spend') THEN e.reference END AS reference
      FROM ledger_entries e JOIN (${accounts}) a ON a.id = e.account_id ORDER BY a.user, e.id`),
    draws: await of(sql`SELECT g.user, CASE WHEN e.kind = 'usage' THEN e.reference END AS reference, e.kind,
        g.n AS grant, d.amount
      FROM grant_allocations d JOIN ledger_entries e ON e.id = d.entry_id JOIN (${grants}) g ON g.id = d.grant_id
      ORDER BY 1, 2, 3, 4, 5`),
    grants: await of(sql`SELECT g.user, g.n, c.amount, c.remaining, c.category, c.source
      FROM credit_grants c JOIN (${grants}) g ON g.id = c.id ORDER BY 1, 2`),
    usage: await of(sql`SELECT a.user, u.event_id, u.payload_hash, u.sku, u.price_version, u.credits,
        e.kind AS entry_kind, e.reference AS entry_reference
      FROM usage_events u JOIN (${accounts}) a ON a.id = u.account_id LEFT JOIN ledger_entries e ON e.id = u.entry_id
      ORDER BY 1, 2`),
    rollups: await of(sql`SELECT a.user, r.sku, r.credits, r.events, r.input_tokens, r.output_tokens, r.units
      FROM usage_rollups r JOIN (${accounts}) a ON a.id = r.account_id ORDER BY 1, r.hour, 2`),
    days: await of(sql`SELECT a.user, d.credits FROM debit_days d JOIN (${accounts}) a ON a.id = d.account_id
      ORDER BY 1, d.day`),
    // Without the ids of the grants and holds the events name (each database makes its own).
    outbox:
      await of(sql`SELECT a.user, o.type, (o.payload::jsonb -> 'data') - 'grantId'::text - 'holdId'::text AS data
      FROM webhook_outbox o JOIN (${accounts}) a ON a.id = o.account_id ORDER BY 1, 2, 3`),
  };
}

/** What the histories' events were answered, over every seed. */
const reached = new Set<string>();

describe('debit_usage by set against debit_usage by event (2026-12-12)', () => {
  it.each([1, 2, 3, 4, 5, 6])('seed %i: the same answers and the same rows', async (seed) => {
    const story = history(seed);
    const start = Date.now() + HOUR;
    const ours = await run(current.db, story, start);
    const theirs = await run(previous.db, story, start);
    expect(ours.answers).toEqual(theirs.answers);
    const [a, b] = [await rows(current.db, story.setup.users), await rows(previous.db, story.setup.users)];
    for (const answer of ours.answers as Array<{
      body?: { results?: Array<{ status: string; code?: string }> };
    }>) {
      for (const result of answer.body?.results ?? []) reached.add(result.code ?? result.status);
    }
    expect(a.draws.length).toBeGreaterThan(20);
    expect(a).toEqual(b);
    await expectInvariantsHold(current.db, new Date(ours.at));
    await expectInvariantsHold(previous.db, new Date(theirs.at));
  });

  it('the histories reach every answer a usage event can have here', () => {
    expect([...reached].sort()).toEqual([
      'account_frozen',
      'account_not_found',
      'applied',
      'duplicate',
      'idempotency_conflict',
      'insufficient_credits',
      'spend_cap_reached',
    ]);
  });
});
