import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { ADMIN_ARN, SERVICE_ARN, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { testClock } from '../support/factories.js';
import { expectInvariantsHold } from '../support/invariants.js';

const { db } = await createTestDatabase({ max: 4 });
const clock = testClock();
const { call } = testApi(db, { clock: clock.now });
const admin = { iam: ADMIN_ARN };
const service = { iam: SERVICE_ARN };
const MINUTE = 60_000;

const gpt = {
  sku: 'openai/gpt-4o',
  kind: 'tokens',
  rates: { input: 600, cacheRead: '300', cacheWrite: '750', output: 2400, reasoning: '3000' },
  perRequest: '0.5',
};
const image = { sku: 'image.generate', kind: 'unit', unitCredits: 2.5 };

let versions = 0;
const nextVersion = () => {
  versions += 1;
  return `2026-12-03.${versions}`;
};

/** Creates a draft through the API and activates it a minute after the last activation. */
async function givenActivePrices(items: unknown[] = [gpt, image]): Promise<string> {
  const version = nextVersion();
  const created = await call('POST /v1/admin/prices', {
    auth: admin,
    body: { version, items, reason: 'price update' },
  });
  expect(created.status).toBe(201);
  clock.advance(MINUTE);
  const activated = await call('POST /v1/admin/prices/{version}/activate', {
    auth: admin,
    params: { version },
    body: { reason: 'go live' },
  });
  expect(activated.status).toBe(200);
  return version;
}

/** Everything a refused or read-only call must leave as it was. */
async function counts() {
  const { rows } = await sql<Record<string, string>>`
    SELECT (SELECT count(*) FROM price_books) AS books, (SELECT count(*) FROM price_items) AS items,
      (SELECT count(*) FROM admin_actions) AS actions, (SELECT count(*) FROM ledger_entries) AS entries,
      (SELECT count(*) FROM accounts) AS accounts`.execute(db);
  return rows[0];
}

describe('prices: happy', () => {
  it('answers 404 for the public price book before any version is active, then serves the active one', async () => {
    const none = await call('GET /v1/prices');

    const version = await givenActivePrices();
    const prices = await call('GET /v1/prices');

    expect(none).toMatchObject({ status: 404, body: { code: 'price_book_not_found' } });
    expect(prices).toMatchObject({
      status: 200,
      body: {
        version,
        status: 'active',
        itemCount: 2,
        activatedAt: clock.now().toISOString(),
        retiredAt: null,
        // Rates come back as exact decimal strings, whichever JSON type they were sent as.
        items: [
          { sku: 'image.generate', kind: 'unit', unitCredits: '2.5' },
          {
            sku: 'openai/gpt-4o',
            kind: 'tokens',
            rates: { input: '600', cacheRead: '300', cacheWrite: '750', output: '2400', reasoning: '3000' },
            perRequest: '0.5',
          },
        ],
      },
    });
    await expectInvariantsHold(db);
  });

  it('creates a draft (201) that prices nothing until activated, then retires the version it replaces', async () => {
    const previous = await givenActivePrices();
    const version = nextVersion();

    const created = await call('POST /v1/admin/prices', {
      auth: admin,
      body: { version, items: [{ ...gpt, rates: { input: '1', output: '1' } }], reason: 'cheaper' },
    });
    const whileDraft = await call('GET /v1/prices');
    clock.advance(MINUTE);
    const activated = await call('POST /v1/admin/prices/{version}/activate', {
      auth: admin,
      params: { version },
      body: { reason: 'go live' },
    });
    const list = await call('GET /v1/admin/prices', { auth: admin });
    const old = await call('GET /v1/admin/prices/{version}', { auth: admin, params: { version: previous } });

    expect(created).toMatchObject({ status: 201, body: { version, status: 'draft', activatedAt: null } });
    expect(whileDraft.body.version).toBe(previous);
    expect(activated).toMatchObject({
      status: 200,
      body: { version, status: 'active', activatedAt: clock.now().toISOString(), replaced: previous },
    });
    expect((list.body.data as Array<{ version: string }>).slice(0, 2)).toEqual([
      expect.objectContaining({ version, status: 'active', itemCount: 1 }),
      expect.objectContaining({ version: previous, status: 'retired', retiredAt: clock.now().toISOString() }),
    ]);
    expect(old).toMatchObject({ status: 200, body: { version: previous, status: 'retired', itemCount: 2 } });
    await expectInvariantsHold(db);
  });

  it('accepts the served price book back as a new draft, unchanged', async () => {
    await givenActivePrices();
    const served = await call('GET /v1/prices');
    const version = nextVersion();

    const created = await call('POST /v1/admin/prices', {
      auth: admin,
      body: { version, items: served.body.items, reason: 'copy' },
    });

    expect(created.status).toBe(201);
    expect(created.body.items).toEqual(served.body.items);
    await expectInvariantsHold(db);
  });

  it('quotes each pool at its rate with the per-request credits, rounded up once, writing nothing', async () => {
    const version = await givenActivePrices();
    const before = await counts();

    const quote = await call('POST /v1/quotes', {
      auth: service,
      body: {
        sku: 'openai/gpt-4o',
        usage: {
          inputTokens: 1_000,
          cacheReadTokens: 200,
          cacheWriteTokens: 100,
          outputTokens: 500,
          reasoningTokens: 300,
        },
      },
    });
    const units = await call('POST /v1/quotes', {
      auth: service,
      body: { sku: 'image.generate', usage: { units: 3 } },
    });

    // 700 x 600 + 200 x 300 + 100 x 750 + 200 x 2,400 + 300 x 3,000 = 1,935,000 per million, + 0.5.
    expect(quote).toMatchObject({
      status: 200,
      body: {
        sku: 'openai/gpt-4o',
        provider: 'openai',
        credits: 3,
        exact: '2.435',
        priceVersion: version,
        breakdown: [
          { pool: 'input', quantity: 700, rate: '600', credits: '0.42' },
          { pool: 'cacheRead', quantity: 200, rate: '300', credits: '0.06' },
          { pool: 'cacheWrite', quantity: 100, rate: '750', credits: '0.075' },
          { pool: 'output', quantity: 200, rate: '2400', credits: '0.48' },
          { pool: 'reasoning', quantity: 300, rate: '3000', credits: '0.9' },
          { pool: 'request', quantity: 1, rate: '0.5', credits: '0.5' },
        ],
      },
    });
    expect(units).toMatchObject({ status: 200, body: { credits: 8, exact: '7.5', provider: null } });
    expect(await counts()).toEqual(before);
  });
});

describe('prices: error', () => {
  it('refuses a bad draft with the field named, writing nothing', async () => {
    const before = await counts();
    const create = (body: Record<string, unknown>) =>
      call('POST /v1/admin/prices', { auth: admin, body: { version: nextVersion(), reason: 'r', ...body } });

    const negative = await create({ items: [{ ...gpt, rates: { input: -1, output: 1 } }] });
    const decimals = await create({ items: [{ ...image, unitCredits: '0.0000000001' }] });
    const lossy = await create({ items: [{ ...image, unitCredits: 0.1234567890123456 }] });
    const duplicate = await create({ items: [gpt, image, { ...gpt, rates: { input: 1, output: 1 } }] });
    const noOutput = await create({ items: [{ sku: 'openai/gpt-4o', kind: 'tokens', rates: { input: 1 } }] });
    const unknownField = await create({ items: [{ ...image, discount: 1 }] });
    const badVersion = await create({ version: 'v 1', items: [image] });
    const empty = await create({ items: [] });

    expect(negative).toMatchObject({
      status: 400,
      body: {
        code: 'validation_error',
        field: 'items.0.rates.input',
        detail: 'items.0.rates.input: must not be negative',
      },
    });
    expect(decimals.body).toMatchObject({
      field: 'items.0.unitCredits',
      detail: expect.stringMatching(/9 decimal places/),
    });
    expect(lossy.body).toMatchObject({
      field: 'items.0.unitCredits',
      detail: expect.stringMatching(/decimal string/),
    });
    expect(duplicate).toMatchObject({
      status: 400,
      body: { field: 'items.2.sku', detail: 'items.2.sku: openai/gpt-4o appears more than once' },
    });
    expect(noOutput.body).toMatchObject({ code: 'validation_error', field: 'items.0.rates.output' });
    expect(unknownField.body).toMatchObject({
      field: 'items.0.discount',
      detail: expect.stringMatching(/not a recognised field/),
    });
    expect(badVersion.body).toMatchObject({ field: 'version' });
    expect(empty.body).toMatchObject({ field: 'items' });
    expect(await counts()).toEqual(before);
  });

  it('answers 409 for a taken version name and for activating a version twice, 404 for an unknown one', async () => {
    const version = await givenActivePrices();
    const before = await counts();

    const taken = await call('POST /v1/admin/prices', {
      auth: admin,
      body: { version, items: [image], reason: 'again' },
    });
    const twice = await call('POST /v1/admin/prices/{version}/activate', {
      auth: admin,
      params: { version },
      body: { reason: 'again' },
    });
    const unknown = await call('POST /v1/admin/prices/{version}/activate', {
      auth: admin,
      params: { version: 'never-created' },
      body: { reason: 'go' },
    });
    const unknownGet = await call('GET /v1/admin/prices/{version}', {
      auth: admin,
      params: { version: 'nope' },
    });

    expect(taken).toMatchObject({ status: 409, body: { code: 'price_book_exists' } });
    expect(twice).toMatchObject({
      status: 409,
      body: {
        code: 'price_book_not_draft',
        detail: `price book ${version} is active: only a draft can be activated`,
      },
    });
    expect(unknown).toMatchObject({ status: 404, body: { code: 'price_book_not_found' } });
    expect(unknownGet.status).toBe(404);
    expect(await counts()).toEqual(before);
  });

  it('refuses quotes for unknown SKUs (422, never a price of 0) and for invalid usage (400)', async () => {
    await givenActivePrices();
    const before = await counts();
    const quote = (body: unknown) => call('POST /v1/quotes', { auth: service, body });

    const unknown = await quote({ sku: 'openai/gpt-9', usage: { inputTokens: 1, outputTokens: 1 } });
    const cacheAbove = await quote({
      sku: 'openai/gpt-4o',
      usage: { inputTokens: 100, cacheReadTokens: 60, cacheWriteTokens: 41, outputTokens: 0 },
    });
    const reasoningAbove = await quote({
      sku: 'openai/gpt-4o',
      usage: { inputTokens: 0, outputTokens: 10, reasoningTokens: 11 },
    });
    const wrongKind = await quote({ sku: 'image.generate', usage: { inputTokens: 1, outputTokens: 1 } });
    const negative = await quote({ sku: 'openai/gpt-4o', usage: { inputTokens: -1, outputTokens: 1 } });
    const fractional = await quote({ sku: 'openai/gpt-4o', usage: { inputTokens: 1, outputTokens: 0.5 } });
    const unknownField = await quote({
      sku: 'openai/gpt-4o',
      usage: { inputTokens: 1, outputTokens: 1, audioTokens: 1 },
    });

    expect(unknown).toMatchObject({
      status: 422,
      body: { code: 'unknown_sku', detail: 'the active price book has no SKU "openai/gpt-9"' },
    });
    expect(cacheAbove).toMatchObject({
      status: 400,
      body: {
        code: 'invalid_usage',
        detail: 'cacheReadTokens + cacheWriteTokens (101) exceed inputTokens (100), which includes them',
      },
    });
    expect(reasoningAbove).toMatchObject({ status: 400, body: { code: 'invalid_usage' } });
    expect(wrongKind).toMatchObject({ status: 400, body: { code: 'invalid_usage' } });
    expect(negative).toMatchObject({
      status: 400,
      body: { code: 'validation_error', field: 'usage.inputTokens' },
    });
    expect(fractional).toMatchObject({
      status: 400,
      body: { code: 'validation_error', field: 'usage.outputTokens' },
    });
    expect(unknownField.body).toMatchObject({ code: 'validation_error', field: 'usage.audioTokens' });
    expect(await counts()).toEqual(before);
  });
});

describe('prices: security', () => {
  it('keeps the admin price routes to admin principals and quotes to IAM callers, writing nothing', async () => {
    const before = await counts();
    const version = nextVersion();
    const body = { version, items: [image], reason: 'sneaky' };

    const asService = await call('POST /v1/admin/prices', { auth: service, body });
    const asUser = await call('POST /v1/admin/prices', { auth: { user: 'user_1' }, body });
    const anonymous = await call('POST /v1/admin/prices', { body });
    const activateAsService = await call('POST /v1/admin/prices/{version}/activate', {
      auth: service,
      params: { version },
      body: { reason: 'x' },
    });
    const listAsService = await call('GET /v1/admin/prices', { auth: service });
    const quoteAsUser = await call('POST /v1/quotes', {
      auth: { user: 'user_1' },
      body: { sku: 'image.generate', usage: { units: 1 } },
    });

    expect([asService.status, asUser.status, anonymous.status]).toEqual([403, 403, 401]);
    expect([activateAsService.status, listAsService.status, quoteAsUser.status]).toEqual([403, 403, 403]);
    expect(await counts()).toEqual(before);
  });
});
