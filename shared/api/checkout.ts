import type Stripe from 'stripe';
import * as z from 'zod';
import { findOrCreateAccount, inAccountTransaction, rememberStripeCustomer } from '../accounts/accounts.js';
import type { Account } from '../db/schema.js';
import { AccountFrozenError, ServiceError } from '../errors.js';
import {
  attachCheckoutSession,
  countOpenCheckouts,
  createPayment,
  failUnstartedPayment,
} from '../payments/payments.js';
import { defineEndpoint, ok } from './endpoint.js';
import { storableText } from './schemas.js';

/** Stripe's shortest Checkout Session lifetime; a short one keeps abandoned payments from piling up. */
const SESSION_LIFETIME_SECONDS = 30 * 60;

export const createCheckout = defineEndpoint({
  route: 'POST /v1/checkout',
  summary: 'Starts buying a credit pack: a payment (INIT) and a Stripe Checkout Session to redirect to',
  body: z
    .object({
      packageId: storableText(64),
      saveCard: z
        .boolean()
        .optional()
        .describe('save the card on the account for auto top-up (setup_future_usage: off_session)'),
    })
    .strict(),
  responses: {
    201: {
      description: 'redirect the user to checkoutUrl',
      schema: z.object({ paymentId: z.string(), checkoutUrl: z.string(), expiresAt: z.string() }),
    },
  },
  errors: {
    400: 'invalid body or unknown package',
    401: 'no user token',
    403: 'account frozen',
    429: 'too many open checkouts',
    502: 'Stripe did not answer',
  },
  async handle({ caller, body }, { db, config, stripe }) {
    const userId = caller.kind === 'user' ? caller.userId : '';
    const pack = config.packages.find((p) => p.id === body.packageId);
    if (!pack)
      throw new ServiceError('unknown_package', `no package ${body.packageId}`, { field: 'packageId' });
    const account = await findOrCreateAccount(db, userId);
    if (account.status === 'frozen') throw new AccountFrozenError();
    // A saved card lives on a Stripe customer: the account's own, created once.
    const customer = body.saveCard
      ? await ensureStripeCustomer(db, stripe, account)
      : account.stripe_customer_id;
    const payment = await inAccountTransaction(db, account.id, async (trx, locked) => {
      if (locked.status === 'frozen') throw new AccountFrozenError();
      const open = await countOpenCheckouts(trx, locked.id);
      if (open >= config.maxOpenCheckouts) {
        throw new ServiceError(
          'too_many_open_checkouts',
          `${open} checkouts are already open; finish or abandon one (they expire after 30 minutes)`,
        );
      }
      return createPayment(trx, locked, pack);
    });
    const metadata = { payment_id: payment.id, user_id: userId, package_id: pack.id };
    let session: { id: string; url: string | null; expires_at: number };
    try {
      session = await (await stripe()).checkout.sessions.create(
        {
          mode: 'payment',
          line_items: [
            {
              quantity: 1,
              price_data: {
                currency: pack.currency,
                unit_amount: pack.amount,
                product_data: { name: pack.name },
              },
            },
          ],
          client_reference_id: userId,
          ...(config.allowPromotionCodes && { allow_promotion_codes: true }),
          ...(customer && { customer }),
          metadata,
          payment_intent_data: {
            metadata,
            ...(body.saveCard && { setup_future_usage: 'off_session' as const }),
          },
          success_url: config.checkoutSuccessUrl,
          cancel_url: config.checkoutCancelUrl,
          expires_at: Math.floor(Date.now() / 1000) + SESSION_LIFETIME_SECONDS,
        },
        { idempotencyKey: `checkout-${payment.id}` },
      );
    } catch (error: unknown) {
      await failUnstartedPayment(db, payment.id);
      throw new ServiceError('stripe_unavailable', 'Stripe did not create the checkout; try again', {
        cause: error instanceof Error ? error.name : 'unknown',
      });
    }
    await attachCheckoutSession(db, payment.id, session.id);
    return ok(
      {
        paymentId: payment.id,
        checkoutUrl: session.url ?? '',
        expiresAt: new Date(session.expires_at * 1000).toISOString(),
      },
      201,
    );
  },
});

/**
 * The account's Stripe customer, created on first need (one per account: the account id is the idempotency
 * key, so concurrent checkouts agree on it). Throws ServiceError stripe_unavailable when Stripe does not answer.
 */
async function ensureStripeCustomer(
  db: Parameters<typeof rememberStripeCustomer>[0],
  stripe: () => Promise<Stripe>,
  account: Account,
): Promise<string> {
  if (account.stripe_customer_id) return account.stripe_customer_id;
  let created: Stripe.Customer;
  try {
    created = await (await stripe()).customers.create(
      { metadata: { user_id: account.external_user_id ?? '' } },
      { idempotencyKey: `customer-${account.id}` },
    );
  } catch (error: unknown) {
    throw new ServiceError('stripe_unavailable', 'Stripe did not create the customer; try again', {
      cause: error instanceof Error ? error.name : 'unknown',
    });
  }
  const remembered = await rememberStripeCustomer(db, account, created.id);
  if (!remembered) throw new Error(`Stripe customer ${created.id} is recorded on another account`);
  return remembered;
}
