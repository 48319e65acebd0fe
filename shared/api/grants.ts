import * as z from 'zod';
import { findOrCreateAccount } from '../accounts/accounts.js';
import { redeemCoupon } from '../coupons/coupons.js';
import { listLiveGrants } from '../grants/grants.js';
import { currentPlan } from '../plans/plans.js';
import { type Caller, defineEndpoint, nowOf, ok } from './endpoint.js';
import { couponCode, grantSchema } from './schemas.js';
import { grantView } from './views.js';

const userId = (caller: Caller) => (caller.kind === 'user' ? caller.userId : '');

export const listMyGrants = defineEndpoint({
  route: 'GET /v1/me/grants',
  summary:
    "The caller's spendable grants (lots), in the order spends draw on them (the month's allowance granted first if it is due)",
  responses: {
    200: { description: 'grants in burn order', schema: z.object({ items: z.array(grantSchema) }) },
  },
  errors: { 401: 'no user token' },
  async handle({ caller }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    const now = nowOf(deps);
    await currentPlan(deps.db, deps.config.plans, account, now);
    return ok({ items: (await listLiveGrants(deps.db, account.id, now)).map(grantView) });
  },
});

export const redeemMyCoupon = defineEndpoint({
  route: 'POST /v1/me/coupons/redeem',
  summary: 'Redeems a coupon code once per account: a promotional grant',
  body: z.object({ code: couponCode }).strict(),
  responses: {
    201: {
      description: 'the grant the coupon brought in',
      schema: z.object({ grantId: z.string(), credits: z.number().int(), expiresAt: z.string().nullable() }),
    },
  },
  errors: {
    400: 'not a coupon code (3-64 of A-Z, a-z, 0-9, _ and -)',
    401: 'no user token',
    403: "the coupon is not for the account's plan",
    404: 'no such coupon',
    409: 'already redeemed by this account',
    410: 'the coupon is disabled, exhausted or past its redeemBy',
    429: 'too many failed attempts in the last hour',
  },
  async handle({ caller, body }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    const redemption = await redeemCoupon(deps.db, account, body.code, nowOf(deps), deps.config.plans);
    return ok({ ...redemption, expiresAt: redemption.expiresAt?.toISOString() ?? null }, 201);
  },
});
