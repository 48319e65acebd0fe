import { describe, expect, it } from 'vitest';
import { ADMIN_ARN, FRONTEND, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';
import { givenAccount } from '../support/factories.js';
import { control, startEmulatorForTest } from '../support/stripe.js';

const { db } = await createTestDatabase();
const { emulator, stripe } = await startEmulatorForTest();
const { call } = testApi(db, { stripe });

describe('POST /v1/checkout: happy', () => {
  it('creates the payment and a Stripe Checkout Session naming the payment, the user and the pack', async () => {
    const response = await call('POST /v1/checkout', {
      auth: { user: 'buyer-1' },
      body: { packageId: 'pack_medium' },
    });
    expect(response.status).toBe(201);
    const paymentId = String(response.body.paymentId);
    const payment = await db
      .selectFrom('payments')
      .selectAll()
      .where('id', '=', paymentId)
      .executeTakeFirstOrThrow();
    expect(payment).toMatchObject({
      status: 'INIT',
      package_id: 'pack_medium',
      credits: 5_000,
      amount_total: 2_000,
      currency: 'usd',
    });
    const session = await stripe.checkout.sessions.retrieve(payment.stripe_checkout_session_id!);
    expect(response.body.checkoutUrl).toBe(session.url);
    expect(session).toMatchObject({
      amount_total: 2_000,
      client_reference_id: 'buyer-1',
      metadata: { payment_id: paymentId, user_id: 'buyer-1', package_id: 'pack_medium' },
      success_url: `${FRONTEND}/?checkout=success`,
    });
    const intentMetadata = emulator.emulator.session(session.id)._payment_intent_metadata;
    expect(intentMetadata).toEqual({ payment_id: paymentId, user_id: 'buyer-1', package_id: 'pack_medium' });
  });
});

describe('POST /v1/checkout: error', () => {
  it('refuses an unknown pack and extra fields, naming the field', async () => {
    expect(
      (await call('POST /v1/checkout', { auth: { user: 'buyer-2' }, body: { packageId: 'pack_free' } })).body,
    ).toMatchObject({
      status: 400,
      field: 'packageId',
    });
    const extra = await call('POST /v1/checkout', {
      auth: { user: 'buyer-2' },
      body: { packageId: 'pack_small', amount: 1 },
    });
    expect(extra.body).toMatchObject({ status: 400, field: 'amount' });
  });

  it('answers 429 past the bound on open checkouts', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      statuses.push(
        (
          await call('POST /v1/checkout', {
            auth: { user: 'eager-buyer' },
            body: { packageId: 'pack_small' },
          })
        ).status,
      );
    }
    expect(statuses).toEqual([201, 201, 201, 429]);
  });

  it('answers 502 when Stripe fails, and the payment does not stay open', async () => {
    await control(emulator, 'faults', { status: 500, count: 1 });
    const response = await call('POST /v1/checkout', {
      auth: { user: 'unlucky-buyer' },
      body: { packageId: 'pack_small' },
    });
    expect(response).toMatchObject({ status: 502, body: { code: 'stripe_unavailable' } });
    const account = await db
      .selectFrom('accounts')
      .select('id')
      .where('external_user_id', '=', 'unlucky-buyer')
      .executeTakeFirstOrThrow();
    const payments = await db
      .selectFrom('payments')
      .select('status')
      .where('account_id', '=', account.id)
      .execute();
    expect(payments).toEqual([{ status: 'FAILED' }]);
  });
});

describe('POST /v1/checkout: security', () => {
  it('refuses a frozen account and a request without a user', async () => {
    const account = await givenAccount(db);
    await call('POST /v1/admin/accounts/{userId}/freeze', {
      auth: { iam: ADMIN_ARN },
      params: { userId: account.external_user_id! },
      body: { reason: 'chargebacks' },
    });
    const frozen = await call('POST /v1/checkout', {
      auth: { user: account.external_user_id! },
      body: { packageId: 'pack_small' },
    });
    expect(frozen).toMatchObject({ status: 403, body: { code: 'account_frozen' } });
    expect((await call('POST /v1/checkout', { body: { packageId: 'pack_small' } })).status).toBe(401);
  });
});
