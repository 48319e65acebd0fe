import { readFileSync } from 'node:fs';
import { calcPrice } from '@pydantic/genai-prices';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { ServiceError, ValidationError } from '../../shared/errors.js';
import { quoteUsage } from '../../shared/pricing/cost.js';
import { importFromGenaiPrices } from '../../shared/pricing/import.js';
import {
  activatePriceBook,
  createPriceBookDraft,
  ensureActivePriceBook,
  findActivePriceBook,
  findPrice,
  findPriceBook,
  findPriceBookAt,
  type NewPriceBook,
  type PriceItemInput,
} from '../../shared/pricing/price-book.js';
import { createTestDatabase } from '../support/database.js';
import { ADMIN_ARN, testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db, owner } = await createTestDatabase({ max: 6 });
const actor = { actorArn: ADMIN_ARN, reason: 'pricing test' };
/** One clock for the file: activations move forward in time, as they do in production. */
const clock = testClock();
const MINUTE = 60_000;

const gpt = (input: string, output: string): PriceItemInput => ({
  sku: 'openai/gpt-4o',
  kind: 'tokens',
  rates: { input, output },
});
const image: PriceItemInput = { sku: 'image.generate', kind: 'unit', unitCredits: '4' };

let versions = 0;
/** A draft with a fresh version name. */
function draft(items: PriceItemInput[]) {
  versions += 1;
  return createPriceBookDraft(db, { version: `test-${versions}`, items }, actor);
}

/** A draft activated a minute after the last activation. */
async function activated(items: PriceItemInput[]) {
  const book = await draft(items);
  clock.advance(MINUTE);
  return activatePriceBook(db, book.version, actor, clock.now());
}

/** Rows in the price tables and audit actions: what a refused call must leave as it was. */
async function counts() {
  const { rows } = await sql<{ books: string; items: string; actions: string }>`
    SELECT (SELECT count(*) FROM price_books) AS books, (SELECT count(*) FROM price_items) AS items,
      (SELECT count(*) FROM admin_actions) AS actions`.execute(db);
  return rows[0];
}

async function rejection(promise: Promise<unknown>): Promise<ServiceError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ServiceError);
  return error as ServiceError;
}

describe('price book versions', () => {
  it('prices nothing with a draft; activating retires the active version at the same instant, audited', async () => {
    const first = await activated([gpt('100', '400')]);
    const second = await draft([gpt('200', '800'), image]);

    const beforeActivation = await quoteUsage(db, 'image.generate', { units: 1 }).catch((e: unknown) => e);
    clock.advance(MINUTE);
    const activation = await activatePriceBook(db, second.version, actor, clock.now());

    expect(beforeActivation).toMatchObject({ code: 'unknown_sku', status: 422 });
    expect(activation.retired).toBe(first.book.version);
    expect(activation.book).toMatchObject({ status: 'active', activatedAt: clock.now(), retiredAt: null });
    expect(await findPriceBook(db, first.book.version)).toMatchObject({
      status: 'retired',
      activatedAt: first.book.activatedAt,
      retiredAt: clock.now(),
    });
    expect((await findActivePriceBook(db))?.version).toBe(second.version);
    expect(await quoteUsage(db, 'image.generate', { units: 3 })).toMatchObject({
      credits: 12,
      priceVersion: second.version,
    });
    const audit = await db
      .selectFrom('admin_actions')
      .select(['action', 'actor_arn', 'reason', 'payload'])
      .where('action', 'in', ['create_prices', 'activate_prices'])
      .where(sql<boolean>`payload->>'version' = ${second.version}`)
      .orderBy('created_at')
      .execute();
    expect(audit).toEqual([
      {
        action: 'create_prices',
        actor_arn: ADMIN_ARN,
        reason: 'pricing test',
        payload: { version: second.version, items: 2 },
      },
      {
        action: 'activate_prices',
        actor_arn: ADMIN_ARN,
        reason: 'pricing test',
        payload: { version: second.version, retired: first.book.version },
      },
    ]);
    await expectInvariantsHold(db);
  });

  it('prices usage with the version active at an instant: the old price before the new activation', async () => {
    const old = await activated([gpt('100', '400')]);
    const current = await activated([gpt('1000', '4000')]);
    const activatedAt = current.book.activatedAt!;
    const justBefore = new Date(activatedAt.getTime() - 1);
    const usage = { inputTokens: 10_000, outputTokens: 1_000 };

    const then = await quoteUsage(db, 'openai/gpt-4o', usage, justBefore);
    const atActivation = await quoteUsage(db, 'openai/gpt-4o', usage, activatedAt);
    const now = await quoteUsage(db, 'openai/gpt-4o', usage);

    // 10,000 x 100 + 1,000 x 400 = 1,400,000 per million; ten times that at the new rates.
    expect(then).toMatchObject({ credits: 2, exact: '1.4', priceVersion: old.book.version });
    expect(atActivation).toMatchObject({ credits: 14, exact: '14', priceVersion: current.book.version });
    expect(now.priceVersion).toBe(current.book.version);
    expect((await findPriceBookAt(db, justBefore))?.version).toBe(old.book.version);
    expect(await findPriceBookAt(db, new Date(0))).toBeUndefined();
    expect(await findPrice(db, 'openai/gpt-4o', new Date(0))).toBeUndefined();
    await expect(quoteUsage(db, 'openai/gpt-4o', usage, new Date(0))).rejects.toMatchObject({
      code: 'unknown_sku',
    });
    await expect(quoteUsage(db, 'anthropic/none', usage)).rejects.toMatchObject({ code: 'unknown_sku' });
  });

  it('refuses to activate an active, a retired or an unknown version, and writes nothing', async () => {
    const retired = await activated([gpt('1', '1')]);
    const active = await activated([gpt('2', '2')]);
    const before = await counts();

    const twice = await rejection(activatePriceBook(db, active.book.version, actor, clock.now()));
    const again = await rejection(activatePriceBook(db, retired.book.version, actor, clock.now()));
    const unknown = await rejection(activatePriceBook(db, 'never-created', actor, clock.now()));

    expect([twice.code, twice.status, twice.message]).toEqual([
      'price_book_not_draft',
      409,
      `price book ${active.book.version} is active: only a draft can be activated`,
    ]);
    expect([again.code, again.status]).toEqual(['price_book_not_draft', 409]);
    expect([unknown.code, unknown.status]).toEqual(['price_book_not_found', 404]);
    expect(await counts()).toEqual(before);
    expect((await findActivePriceBook(db))?.version).toBe(active.book.version);
    await expectInvariantsHold(db);
  });

  it('refuses a bad draft and writes nothing: negative rate, duplicate SKU, bad version name, a taken version', async () => {
    const taken = await draft([gpt('1', '1')]);
    const before = await counts();
    const create = (book: NewPriceBook) => rejection(createPriceBookDraft(db, book, actor));

    const negative = await create({ version: 'bad-1', items: [gpt('-0.5', '1')] });
    const duplicate = await create({ version: 'bad-2', items: [gpt('1', '1'), image, gpt('2', '2')] });
    const badName = await create({ version: 'bad/name', items: [image] });
    const again = await create({ version: taken.version, items: [image] });

    expect(negative).toMatchObject({ code: 'validation_error', field: 'items.0.rates.input' });
    expect(negative.message).toBe('items.0.rates.input: must not be negative');
    expect(duplicate).toMatchObject({ code: 'validation_error', field: 'items.2.sku' });
    expect(badName).toMatchObject({ code: 'validation_error', field: 'version' });
    expect(again).toMatchObject({ code: 'price_book_exists', status: 409 });
    expect(await counts()).toEqual(before);
    await expectInvariantsHold(db);
  });

  it("keeps a version's items and history frozen once it leaves draft, even for the owner", async () => {
    const { book } = await activated([gpt('5', '5')]);
    const asOwner = owner();
    const refused = (statement: ReturnType<typeof sql>) =>
      statement.execute(asOwner).then(
        () => 'allowed',
        (e: unknown) => (e as Error).message,
      );

    expect(await refused(sql`UPDATE price_items SET input = 0 WHERE version = ${book.version}`)).toBe(
      `price book ${book.version} is active: its items never change`,
    );
    expect(await refused(sql`DELETE FROM price_items WHERE version = ${book.version}`)).toMatch(
      /its items never change/,
    );
    expect(
      await refused(
        sql`INSERT INTO price_items (version, sku, kind, unit_credits) VALUES (${book.version}, 'late.sku', 'unit', 1)`,
      ),
    ).toMatch(/its items never change/);
    expect(
      await refused(sql`UPDATE price_books SET status = 'draft' WHERE version = ${book.version}`),
    ).toMatch(/refused \(active -> draft\)/);
    expect(
      await refused(
        sql`UPDATE price_books SET activated_at = activated_at - interval '1 day' WHERE version = ${book.version}`,
      ),
    ).toMatch(/UPDATE refused/);
    // A second active version: the database refuses it whatever the path (its interval would overlap).
    const other = await draft([image]);
    expect(
      await refused(
        sql`UPDATE price_books SET status = 'active', activated_at = now() + interval '1 day',
          activated_action_id = created_action_id WHERE version = ${other.version}`,
      ),
    ).toMatch(/price_books_no_overlap/);
    // And the application role may not even try to change an item.
    expect(
      await sql`UPDATE price_items SET input = 0 WHERE version = ${book.version}`.execute(db).then(
        () => 'allowed',
        (e: unknown) => (e as Error).message,
      ),
    ).toMatch(/permission denied for table price_items/);
    expect((await findPriceBook(db, book.version))?.items).toEqual([
      { sku: 'openai/gpt-4o', kind: 'tokens', rates: { input: '5', output: '5' } },
    ]);
    await expectInvariantsHold(db);
  });

  it('serializes concurrent activations: one ends active, the other retired, their intervals contiguous', async () => {
    const a = await draft([gpt('1', '1')]);
    const b = await draft([gpt('2', '2')]);
    clock.advance(MINUTE);

    const results = await Promise.all([
      activatePriceBook(db, a.version, actor, clock.now()),
      activatePriceBook(db, b.version, actor, clock.now()),
    ]);

    const [firstDone, lastDone] = results[0].retired === b.version ? [results[1], results[0]] : results;
    expect(lastDone.retired).toBe(firstDone.book.version);
    const rows = await db
      .selectFrom('price_books')
      .select(['version', 'status', 'activated_at', 'retired_at'])
      .where('version', 'in', [a.version, b.version])
      .execute();
    expect(rows.filter((r) => r.status === 'active').map((r) => r.version)).toEqual([lastDone.book.version]);
    const retired = rows.find((r) => r.version === firstDone.book.version)!;
    expect(retired.retired_at).toEqual(lastDone.book.activatedAt);
    await expectInvariantsHold(db);
  });
});

describe('the local stack sample prices', () => {
  it('activates local/sample-prices.json when no version is active, and leaves an active one alone', async () => {
    const fresh = await createTestDatabase({ max: 2 });
    const sample = JSON.parse(
      readFileSync(new URL('../../local/sample-prices.json', import.meta.url), 'utf8'),
    ) as NewPriceBook;

    const first = await ensureActivePriceBook(fresh.db, sample, actor);
    const second = await ensureActivePriceBook(fresh.db, { ...sample, version: 'other' }, actor);

    expect(first?.book).toMatchObject({
      version: sample.version,
      status: 'active',
      itemCount: sample.items.length,
    });
    expect(second).toBeUndefined();
    expect(await findPriceBook(fresh.db, 'other')).toBeUndefined();
    // 1,000 input tokens at 625 credits per million and 500 output at 2,500: 0.625 + 1.25.
    expect(
      await quoteUsage(fresh.db, 'openai/gpt-4o', { inputTokens: 1_000, outputTokens: 500 }),
    ).toMatchObject({ credits: 2, exact: '1.875' });
    expect(await quoteUsage(fresh.db, 'image.generate', { units: 2 })).toMatchObject({ credits: 20 });
    await expectInvariantsHold(fresh.db);
  });
});

describe('importing from genai-prices', () => {
  it('converts openai/gpt-4o at 200 credits per USD x 1.2 to hand-checked rates, costing what genai-prices says', async () => {
    const result = await importFromGenaiPrices({
      creditsPerUsd: 200,
      markup: '1.2',
      models: ['openai/gpt-4o'],
    });

    // genai-prices: USD 2.5 input, 1.25 cache read, 10 output per million tokens; x 240.
    expect(result.items).toEqual([
      { sku: 'openai/gpt-4o', kind: 'tokens', rates: { input: '600', cacheRead: '300', output: '2400' } },
    ]);
    expect(result.skipped).toEqual([]);
    expect(result.notes).toEqual([
      { sku: 'openai/gpt-4o', note: 'not priced here: storage_searches_kcount, web_searches_kcount' },
    ]);
    const usage = { inputTokens: 1_000, cacheReadTokens: 200, outputTokens: 500 };
    const cost = await activated([...result.items]).then(() => quoteUsage(db, 'openai/gpt-4o', usage));
    // 800 x 600 + 200 x 300 + 500 x 2,400 = 1,740,000 per million.
    expect(cost).toMatchObject({ credits: 2, exact: '1.74' });
    const usd = calcPrice({ input_tokens: 1_000, cache_read_tokens: 200, output_tokens: 500 }, 'gpt-4o', {
      providerId: 'openai',
    });
    expect(usd!.total_price * 240).toBeCloseTo(1.74, 9);
    await expectInvariantsHold(db);
  });

  it('takes cache writes and the price in force at the given instant', async () => {
    const before = await importFromGenaiPrices({
      creditsPerUsd: '1000',
      markup: 1,
      models: ['o3', 'claude-3-5-haiku-latest'],
      providers: ['openai', 'anthropic'],
      at: new Date('2025-06-01T00:00:00Z'),
    });
    const after = await importFromGenaiPrices({
      creditsPerUsd: '1000',
      markup: 1,
      models: ['openai/o3'],
      at: new Date('2025-06-10T00:00:00Z'),
    });

    // o3 was USD 10 / 40 per million until 2025-06-10, then 2 / 8; Claude Haiku 3.5 writes its cache at USD 1.
    expect(before.items).toEqual([
      {
        sku: 'anthropic/claude-3-5-haiku-latest',
        kind: 'tokens',
        rates: { input: '800', cacheRead: '80', cacheWrite: '1000', output: '4000' },
      },
      { sku: 'openai/o3', kind: 'tokens', rates: { input: '10000', cacheRead: '500', output: '40000' } },
    ]);
    expect(after.items).toEqual([
      { sku: 'openai/o3', kind: 'tokens', rates: { input: '2000', cacheRead: '500', output: '8000' } },
    ]);
  });

  it('refuses unknown providers and models and non-positive factors, naming them', async () => {
    const refusal = (options: Parameters<typeof importFromGenaiPrices>[0]) =>
      importFromGenaiPrices(options).then(
        () => undefined,
        (e: unknown) => e as ValidationError,
      );

    const provider = await refusal({ creditsPerUsd: 1, markup: 1, providers: ['nope'] });
    const model = await refusal({ creditsPerUsd: 1, markup: 1, models: ['gpt-4o', 'gpt-nope'] });
    const zero = await refusal({ creditsPerUsd: 0, markup: 1 });
    const negative = await refusal({ creditsPerUsd: 1, markup: '-1.2' });

    expect(provider).toBeInstanceOf(ValidationError);
    expect(provider?.message).toBe('providers: genai-prices has no provider "nope"');
    expect(model?.message).toBe('models: genai-prices has no model "gpt-nope"');
    expect(zero?.field).toBe('creditsPerUsd');
    expect(negative?.field).toBe('markup');
  });

  it('imports a whole provider as a draft that activates, with per-request prices where the data set has them', async () => {
    const result = await importFromGenaiPrices({ creditsPerUsd: 200, markup: 1, providers: ['perplexity'] });

    const { book } = await activated([...result.items]);

    expect(book.itemCount).toBe(result.items.length);
    // sonar: USD 1 per million tokens each way, and USD 12 per 1,000 requests.
    expect(book.items.find((i) => i.sku === 'perplexity/sonar')).toEqual({
      sku: 'perplexity/sonar',
      kind: 'tokens',
      rates: { input: '200', output: '200' },
      perRequest: '2.4',
    });
    expect(
      await quoteUsage(db, 'perplexity/sonar', { inputTokens: 1_000, outputTokens: 1_000 }),
    ).toMatchObject({ credits: 3, exact: '2.8' });
    await expectInvariantsHold(db);
  });
});
