import { type Kysely, Migrator, sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { migrationProvider } from '../../migrations/index.js';
import { inAccountTransaction, setAccountStatus } from '../../shared/accounts/accounts.js';
import type { Database } from '../../shared/db/schema.js';
import type { DebitCall } from '../../shared/ledger/debit.js';
import { adjustCredits, debitUsage } from '../../shared/ledger/ledger.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { parsePlans } from '../../shared/plan-catalog.js';
import { planGuard } from '../../shared/plans/plans.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
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
const actor = { actorArn: ADMIN_ARN, reason: 'test' };
// One SKU priced by tokens (0.1 credit an input token, 0.3 an output token) in both, from 40 days back.
for (const { db } of [current, previous]) {
  await createPriceBookDraft(
    db,
    {
      version: 'eq-v1',
      items: [{ sku: 'eq/chat', kind: 'tokens', rates: { input: '100000', output: '300000' } }],
    },
    actor,
  );
  await activatePriceBook(db, 'eq-v1', actor, new Date(Date.now() - 40 * 24 * 3_600_000));
}

const PLANS = parsePlans(
  JSON.stringify([
    { id: 'open', name: 'Open', default: true },
    { id: 'capped', name: 'Capped', caps: { daily: 150, monthly: 260 }, lowBalanceThreshold: 60 },
    { id: 'allowance', name: 'Allowance', monthlyAllowance: 40, caps: { monthly: 500 } },
  ]),
);
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

/** A usage event of a history; `at`: its occurredAt, in ms from the history's start. */
interface Sent {
  eventId: string;
  userId: string;
  at: number;
  credits?: number;
  sku?: string;
  usage?: { inputTokens: number; outputTokens: number };
}

type Step =
  | { kind: 'batch'; events: Sent[] }
  | { kind: 'direct'; calls: Array<{ eventId: string; userId: string; credits: number; unpriced: boolean }> }
  | { kind: 'advance'; ms: number }
  | { kind: 'hold'; user: string; credits: number };

interface Setup {
  users: string[];
  grants: Array<{ user: string; amount: number; expiresInMs: number | null; promotional: boolean }>;
  plans: Array<{ user: string; planId: string }>;
  budgets: Array<{ user: string; monthlyBudget: number }>;
  alerts: Array<{ user: string; lowBalance: number }>;
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
    alerts: users.filter(() => next() < 0.3).map((user) => ({ user, lowBalance: 40 })),
    frozen: users.filter(() => next() < 0.1),
  };
  // Most events are new: raw credits, or tokens of the priced SKU or of one no book prices, at some instant of
  // the last 30 hours. Some resend an earlier one as it was (a duplicate, within the batch or across
  // batches), with other credits or tokens (a conflict, or a new event when the earlier one was refused),
  // or under its id for another user (a new event of that user).
  const sent: Sent[] = [];
  const steps: Step[] = [];
  let elapsed = 0;
  for (let b = 0; b < 6; b++) {
    const advance = b === 4 ? 31 * 24 * HOUR : 40 * 60_000;
    elapsed += advance;
    steps.push({ kind: 'advance', ms: advance });
    if (next() < 0.5) steps.push({ kind: 'hold', user: pick(users), credits: 1 + Math.floor(next() * 30) });
    const fresh = (): Sent => {
      const userId = next() < 0.05 ? `eq-${seed}-nobody` : pick(users);
      const at = elapsed - Math.floor(next() * 30 * HOUR);
      const roll = next();
      if (roll < 0.6) return { eventId: `ev-${sent.length}`, userId, at, credits: Math.floor(next() * 45) };
      const usage = { inputTokens: Math.floor(next() * 200), outputTokens: Math.floor(next() * 40) };
      return {
        eventId: `ev-${sent.length}`,
        userId,
        at,
        sku: roll < 0.95 ? 'eq/chat' : 'eq/unpriced',
        usage,
      };
    };
    const events = Array.from({ length: 40 + Math.floor(next() * 40) }, () => {
      const roll = next();
      const earlier = sent.length > 0 ? pick(sent) : undefined;
      const event: Sent =
        earlier === undefined
          ? fresh()
          : roll < 0.1
            ? { ...earlier }
            : roll < 0.15
              ? earlier.usage
                ? { ...earlier, usage: { ...earlier.usage, inputTokens: earlier.usage.inputTokens + 1 } }
                : { ...earlier, credits: earlier.credits! + 1 }
              : roll < 0.18
                ? { ...fresh(), eventId: earlier.eventId }
                : fresh();
      sent.push(event);
      return event;
    });
    steps.push({ kind: 'batch', events });
    // The same debits called directly (shared/ledger's debitUsage), answers compared whole.
    steps.push({
      kind: 'direct',
      calls: Array.from({ length: 15 }, (_, i) => ({
        eventId: `direct-${b}-${i % 12}`,
        userId: pick(users),
        credits: Math.floor(next() * 30),
        unpriced: next() < 0.1,
      })),
    });
  }
  return { setup, steps };
}

/** Runs a history on one database; answers every response body, in order. */
async function run(db: Kysely<Database>, { setup, steps }: ReturnType<typeof history>, start: number) {
  let at = start;
  const clock = () => new Date(at);
  const api = testApi(db, { clock, config: { plans: PLANS } });
  const service = { iam: SERVICE_ARN };
  const admin = { iam: ADMIN_ARN };
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
  for (const { user, lowBalance } of setup.alerts) {
    await answered(api.call('PUT /v1/me/alerts', { auth: { user }, body: { lowBalance } }));
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
    } else if (step.kind === 'batch') {
      const events = step.events.map(({ at: offset, ...event }) => ({
        ...event,
        occurredAt: new Date(start + offset).toISOString(),
      }));
      await answered(api.call('POST /v1/usage', { auth: service, body: { events } }));
    } else {
      const now = clock();
      const calls: DebitCall[] = step.calls.map((call) => ({
        kind: 'usage',
        userId: call.userId,
        reference: call.eventId,
        credits: call.credits,
        ...(call.unpriced && { unpriced: true }),
        hash: `h-${call.credits}`,
        item: { sku: null, priceVersion: null, occurredAt: now.toISOString(), usage: null },
        now,
      }));
      // The events each debit says it wrote to the outbox, counted.
      const guard = planGuard(PLANS, now, DEFAULT_PACKAGES);
      let emitted = 0;
      const outcomes = await debitUsage(
        db,
        calls,
        {
          ...guard,
          noteEmitted: (count) => {
            emitted += count;
            guard.noteEmitted(count);
          },
        },
        now,
      );
      answers.push({ emitted });
      const users = new Map([...accounts].map(([user, id]) => [id, user]));
      answers.push(
        outcomes.map((outcome) =>
          outcome instanceof Error
            ? { error: outcome.constructor.name, message: outcome.message }
            : {
                ...outcome,
                accountId: users.get(outcome.accountId),
                entry: outcome.entry && {
                  amount: outcome.entry.amount,
                  balanceAfter: outcome.entry.balanceAfter,
                },
              },
        ),
      );
    }
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
    rollups:
      await of(sql`SELECT a.user, r.hour, r.sku, r.credits, r.events, r.input_tokens, r.cache_read_tokens,
        r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, r.units
      FROM usage_rollups r JOIN (${accounts}) a ON a.id = r.account_id ORDER BY 1, 2, 3`),
    days: await of(sql`SELECT a.user, d.day::text, d.credits FROM debit_days d JOIN (${accounts}) a ON a.id = d.account_id
      ORDER BY 1, 2`),
    // Without the ids of the grants and holds the events name (each database makes its own).
    outbox:
      await of(sql`SELECT a.user, o.type, (o.payload::jsonb -> 'data') - 'grantId'::text - 'holdId'::text AS data
      FROM webhook_outbox o JOIN (${accounts}) a ON a.id = o.account_id ORDER BY 1, 2, 3`),
  };
}

/** What the histories reached, over every seed: the answers, the entries and events written. */
const reached = new Set<string>();

describe('debit_usage by set against debit_usage by event (2026-12-12)', () => {
  it.each([1, 2, 3, 4, 5, 6])('seed %i: the same answers and the same rows', async (seed) => {
    const story = history(seed);
    // The 10th of next month at 08:00 UTC: in the future, and the same place in the calendar (the caps' days
    // and months, the allowance's month) whenever the test runs, so a seed's history is the same every time.
    const now = new Date();
    const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 10, 8);
    const ours = await run(current.db, story, start);
    const theirs = await run(previous.db, story, start);
    expect(ours.answers).toEqual(theirs.answers);
    const [a, b] = [await rows(current.db, story.setup.users), await rows(previous.db, story.setup.users)];
    for (const answer of ours.answers as Array<{
      body?: { results?: Array<{ status: string; code?: string }> };
    }>) {
      for (const result of answer.body?.results ?? []) reached.add(result.code ?? result.status);
    }
    for (const entry of a.entries as Array<{ kind: string }>) reached.add(`entry ${entry.kind}`);
    for (const event of a.outbox as Array<{ type: string }>) reached.add(`event ${event.type}`);
    for (const answer of ours.answers as Array<Array<{ error?: string }> | object>) {
      if (Array.isArray(answer))
        for (const outcome of answer) reached.add(`direct ${outcome.error ?? 'debited'}`);
    }
    expect(a.draws.length).toBeGreaterThan(20);
    expect(a).toEqual(b);
    await expectInvariantsHold(current.db, new Date(ours.at));
    await expectInvariantsHold(previous.db, new Date(theirs.at));
  });

  it('the histories reach every answer, entry and event they are for', () => {
    expect([...reached].sort()).toEqual([
      'account_frozen',
      'account_not_found',
      'applied',
      'direct AccountFrozenError',
      'direct InsufficientCreditsError',
      'direct ServiceError', // another payload under the event's id
      'direct UnpricedError',
      'direct debited',
      'duplicate',
      'entry admin_adjustment',
      'entry allowance',
      'entry grant_expiry',
      'entry usage',
      'event balance.depleted',
      'event balance.low',
      'event credits.granted',
      'event spend_cap.reached',
      'idempotency_conflict',
      'insufficient_credits',
      'spend_cap_reached',
      'unknown_sku',
    ]);
  });
});
