import { describe, expect, it } from 'vitest';
import { inAccountTransaction, setAccountStatus } from '../../shared/accounts/accounts.js';
import type { Account } from '../../shared/db/schema.js';
import { adjustCredits } from '../../shared/ledger/ledger.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, givenAccount, reloadAccount, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 30 });
const actor = { actorArn: ADMIN_ARN, reason: 'test' };
const clock = testClock();
const { call } = testApi(db, { clock: clock.now });
const service = { iam: SERVICE_ARN };

async function funded(credits: number): Promise<Account> {
  const account = await givenAccount(db);
  await inAccountTransaction(db, account.id, (trx, locked) =>
    adjustCredits(trx, locked, { ...actor, amount: credits }),
  );
  return account;
}

const record = (events: Array<Record<string, unknown>>) =>
  call('POST /v1/usage', { auth: service, body: { events } });

// A price book: 1 credit per input token, 2 per output token (per million: 1e6, 2e6), 3 per image.
await createPriceBookDraft(
  db,
  {
    version: 'usage-v1',
    items: [
      { sku: 'acme/chat', kind: 'tokens', rates: { input: '1000000', output: '2000000' } },
      { sku: 'image.generate', kind: 'unit', unitCredits: '3' },
    ],
  },
  actor,
);
// Active since well before the 35 days an event may look back.
await activatePriceBook(db, 'usage-v1', actor, new Date(clock.now().getTime() - 40 * 86_400_000));

describe('usage events', () => {
  it('answers every item of a 500-event batch over 50 accounts: duplicates, conflicts, unknown SKUs, a frozen account', async () => {
    const accounts = await Promise.all(Array.from({ length: 50 }, () => funded(1_000_000)));
    const frozen = accounts[49]!;
    await inAccountTransaction(db, frozen.id, (trx, locked) =>
      setAccountStatus(trx, locked, 'frozen', actor),
    );
    const at = new Date(clock.now().getTime() - 3_600_000).toISOString();
    const event = (i: number) => ({
      eventId: `ev-${i}`,
      userId: accounts[i % 50]!.external_user_id!,
      sku: 'acme/chat',
      usage: { inputTokens: 1 + (i % 7), outputTokens: 2 },
      occurredAt: at,
    });
    const batch: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 440; i++) batch.push(event(i));
    for (let i = 0; i < 45; i++) batch.push(event(i)); // 10% duplicates: same id and payload
    for (let i = 50; i < 55; i++) batch.push({ ...event(i), usage: { inputTokens: 99, outputTokens: 0 } }); // conflicts
    for (let i = 0; i < 5; i++) batch.push({ ...event(1000 + i), sku: 'acme/unknown' }); // unknown SKUs
    for (let i = 0; i < 5; i++) batch.push({ ...event(2000 + i), userId: 'nobody-at-all' });
    const first = await record(batch);
    expect(first.status).toBe(200);
    const results = first.body.results as Array<{ eventId: string; status: string; code?: string }>;
    expect(results).toHaveLength(500);
    const of = (i: number) => results[i]!;
    for (let i = 0; i < 440; i++) {
      expect(of(i)).toMatchObject(
        i % 50 === 49 ? { status: 'rejected', code: 'account_frozen' } : { status: 'applied' },
      );
    }
    for (let i = 440; i < 485; i++) {
      expect(of(i).status).toBe((i - 440) % 50 === 49 ? 'rejected' : 'duplicate');
    }
    for (let i = 485; i < 490; i++)
      expect(of(i)).toMatchObject({ status: 'rejected', code: 'idempotency_conflict' });
    for (let i = 490; i < 495; i++) expect(of(i)).toMatchObject({ status: 'rejected', code: 'unknown_sku' });
    for (let i = 495; i < 500; i++)
      expect(of(i)).toMatchObject({ status: 'rejected', code: 'account_not_found' });

    const entries = async () =>
      (await db.selectFrom('ledger_entries').select('id').where('kind', '=', 'usage').execute()).length;
    const before = await entries();
    const replays = await Promise.all(Array.from({ length: 5 }, () => record(batch)));
    for (const replay of replays) {
      const replayed = replay.body.results as Array<{ status: string }>;
      expect(replayed.filter((r) => r.status === 'applied')).toEqual([]);
    }
    expect(await entries()).toBe(before);
    // Rollups equal the ledger's usage debits, per account, SKU and hour (the invariant checker says so too).
    const ledger = await db
      .selectFrom('ledger_entries')
      .select((eb) => eb.fn.sum<string>('amount').as('total'))
      .where('kind', '=', 'usage')
      .executeTakeFirstOrThrow();
    const rollups = await db
      .selectFrom('usage_rollups')
      .select((eb) => eb.fn.sum<string>('credits').as('total'))
      .executeTakeFirstOrThrow();
    expect(-Number(ledger.total)).toBe(Number(rollups.total));
    await expectInvariantsHold(db, clock.now());
  });

  it('prices an event at the version active when it occurred, and refuses what the balance cannot cover', async () => {
    const account = await funded(100);
    const userId = account.external_user_id!;
    const before = new Date(clock.now().getTime() - 1000).toISOString();
    clock.advance(1000);
    await createPriceBookDraft(
      db,
      {
        version: 'usage-v2',
        items: [{ sku: 'acme/chat', kind: 'tokens', rates: { input: '5000000', output: '5000000' } }],
      },
      actor,
    );
    await activatePriceBook(db, 'usage-v2', actor, clock.now());
    const results = (
      await record([
        {
          eventId: 'old-price',
          userId,
          sku: 'acme/chat',
          usage: { inputTokens: 10, outputTokens: 0 },
          occurredAt: before,
        },
        { eventId: 'new-price', userId, sku: 'acme/chat', usage: { inputTokens: 10, outputTokens: 0 } },
        { eventId: 'too-much', userId, credits: 1000 },
        { eventId: 'raw', userId, credits: 5 },
        {
          eventId: 'parts',
          userId,
          sku: 'acme/chat',
          usage: { inputTokens: 1, cacheReadTokens: 2, outputTokens: 0 },
        },
      ])
    ).body.results;
    expect(results).toMatchObject([
      { status: 'applied', credits: 10 },
      { status: 'applied', credits: 50 },
      { status: 'rejected', code: 'insufficient_credits' },
      { status: 'applied', credits: 5, balance: 35 },
      { status: 'rejected', code: 'invalid_usage' },
    ]);
    expect((await reloadAccount(db, account.id)).balance).toBe(35);
    await expectInvariantsHold(db, clock.now());
  });

  it('refuses a malformed batch with 400 naming the field, writing nothing', async () => {
    const account = await funded(10);
    const userId = account.external_user_id!;
    const ok = { eventId: 'fine', userId, credits: 1 };
    const ahead = new Date(clock.now().getTime() + 6 * 60_000).toISOString();
    const back = new Date(clock.now().getTime() - 36 * 86_400_000).toISOString();
    const cases: Array<[Array<Record<string, unknown>>, string]> = [
      [[ok, { ...ok, eventId: 'ahead', occurredAt: ahead }], 'events.1.occurredAt'],
      [[{ ...ok, occurredAt: back }], 'events.0.occurredAt'],
      [
        [{ eventId: 'neg', userId, sku: 'acme/chat', usage: { inputTokens: -1 } }],
        'events.0.usage.inputTokens',
      ],
      [
        [{ eventId: 'frac', userId, sku: 'acme/chat', usage: { inputTokens: 1.5 } }],
        'events.0.usage.inputTokens',
      ],
      [
        [{ eventId: 'both', userId, credits: 1, sku: 'acme/chat', usage: { inputTokens: 1 } }],
        'events.0.credits',
      ],
      [[{ eventId: 'none', userId }], 'events.0.credits'],
      [Array.from({ length: 501 }, (_, i) => ({ ...ok, eventId: `e${i}` })), 'events'],
      [[], 'events'],
    ];
    for (const [events, field] of cases) {
      expect({ field, body: (await record(events)).body }).toMatchObject({
        field,
        body: { status: 400, field },
      });
    }
    expect((await reloadAccount(db, account.id)).balance).toBe(10);
    await expectInvariantsHold(db, clock.now());
  });
});

describe('usage statistics', () => {
  it('groups by day in the caller’s time zone (23:30 UTC is the next day in Berlin), by hour, SKU and provider', async () => {
    const account = await funded(1000);
    const userId = account.external_user_id!;
    // 23:30 UTC on the day before the clock's day, within the last 35 days.
    const day = new Date(clock.now().getTime() - 2 * 86_400_000);
    const lateUtc = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate(), 23, 30));
    const noonUtc = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate(), 12, 0));
    const results = (
      await record([
        {
          eventId: 'late',
          userId,
          sku: 'acme/chat',
          usage: { inputTokens: 3, outputTokens: 1 },
          occurredAt: lateUtc.toISOString(),
        },
        {
          eventId: 'noon',
          userId,
          sku: 'image.generate',
          usage: { units: 2 },
          occurredAt: noonUtc.toISOString(),
        },
      ])
    ).body.results as Array<{ status: string }>;
    expect(results.map((r) => r.status)).toEqual(['applied', 'applied']);
    const usage = (query: Record<string, string>) =>
      call('GET /v1/me/usage', { auth: { user: userId }, query });
    const utcDay = lateUtc.toISOString().slice(0, 10);
    const nextDay = new Date(lateUtc.getTime() + 86_400_000).toISOString().slice(0, 10);
    const utc = (await usage({ groupBy: 'day' })).body.items as Array<{ key: string; credits: number }>;
    expect(utc).toEqual([expect.objectContaining({ key: utcDay, credits: 11, events: 2 })]);
    const berlin = (await usage({ groupBy: 'day', tz: 'Europe/Berlin' })).body.items as Array<{
      key: string;
    }>;
    expect(berlin.map((r) => r.key)).toEqual([utcDay, nextDay]);
    const bySku = (await usage({ groupBy: 'sku' })).body.items;
    expect(bySku).toEqual([
      expect.objectContaining({ key: 'acme/chat', credits: 5, inputTokens: 3, outputTokens: 1 }),
      expect.objectContaining({ key: 'image.generate', credits: 6, units: 2 }),
    ]);
    const byProvider = (await usage({ groupBy: 'provider' })).body.items as Array<{ key: string }>;
    expect(byProvider.map((r) => r.key)).toEqual(['(none)', 'acme']);
    const byHour = (await usage({ groupBy: 'hour' })).body.items as Array<{ key: string }>;
    expect(byHour.map((r) => r.key)).toEqual([`${utcDay}T12:00`, `${utcDay}T23:00`]);
    const admin = await call('GET /v1/admin/accounts/{userId}/usage', {
      auth: { iam: 'arn:aws:sts::123456789012:assumed-role/credits-admin/alice' },
      params: { userId },
      query: { groupBy: 'sku' },
    });
    expect(admin.body.items).toEqual(bySku);
    const view = await call('GET /v1/admin/accounts/{userId}', {
      auth: { iam: 'arn:aws:sts::123456789012:assumed-role/credits-admin/alice' },
      params: { userId },
    });
    expect(view.body.usage).toEqual(bySku);
    expect((await usage({ tz: 'Mars/Olympus' })).body).toMatchObject({ status: 400, field: 'tz' });
    // Forms Postgres reads otherwise than Intl (POSIX offsets, abbreviations) are refused at the edge; a name
    // Intl knows and the database does not is a 400 too, never a 500.
    for (const tz of ['+05:00', '-0130', 'UTC+5', 'IST', 'CTT']) {
      expect({ tz, body: (await usage({ groupBy: 'hour', tz })).body }).toMatchObject({
        tz,
        body: { status: 400, field: 'tz', detail: expect.stringContaining('IANA time zone name') },
      });
    }
    expect((await usage({ groupBy: 'hour', tz: 'US/Pacific-New' })).body).toMatchObject({
      status: 400,
      field: 'tz',
      detail: expect.stringContaining('is not a time zone this database knows'),
    });
    expect((await usage({ groupBy: 'week' })).body).toMatchObject({ status: 400, field: 'groupBy' });
    await expectInvariantsHold(db, clock.now());
  });
});
