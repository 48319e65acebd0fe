import * as z from 'zod';
import { createCoupon, disableCoupon, listCoupons } from '../coupons/coupons.js';
import type { Coupon } from '../db/schema.js';
import { ValidationError } from '../errors.js';
import { findPlan } from '../plan-catalog.js';
import { adminActor, defineEndpoint, nowOf, ok } from './endpoint.js';
import { couponCode, credits, instant, storableText } from './schemas.js';

const couponSchema = z.object({
  code: z.string(),
  credits: z.number().int(),
  grantExpiresInDays: z.number().int().nullable(),
  redeemBy: z.string().nullable(),
  maxRedemptions: z.number().int().nullable(),
  plans: z.array(z.string()).nullable(),
  redemptions: z.number().int(),
  disabled: z.boolean(),
  createdAt: z.string(),
});

const couponView = (c: Coupon) => ({
  code: c.code,
  credits: c.credits,
  grantExpiresInDays: c.grant_expires_in_days,
  redeemBy: c.redeem_by?.toISOString() ?? null,
  maxRedemptions: c.max_redemptions,
  plans: c.plans,
  redemptions: c.redemptions,
  disabled: c.disabled_at !== null,
  createdAt: c.created_at.toISOString(),
});

const adminErrors = { 401: 'no IAM identity', 403: 'not an admin principal' } as const;

export const listAdminCoupons = defineEndpoint({
  route: 'GET /v1/admin/coupons',
  summary: 'Coupons, newest first, with their redemption counts',
  responses: { 200: { description: 'the coupons', schema: z.object({ data: z.array(couponSchema) }) } },
  errors: adminErrors,
  async handle(_request, { db }) {
    return ok({ data: (await listCoupons(db, 500)).map(couponView) });
  },
});

export const createAdminCoupon = defineEndpoint({
  route: 'POST /v1/admin/coupons',
  summary: 'Creates a coupon: each account may redeem it once for a promotional grant',
  body: z
    .object({
      code: couponCode,
      credits,
      grantExpiresInDays: z.number().int().min(1).max(3650).optional(),
      redeemBy: instant.optional(),
      maxRedemptions: z.number().int().min(1).max(1_000_000_000).optional(),
      plans: z.array(storableText(64)).min(1).max(50).optional(),
      reason: storableText(2000).optional(),
    })
    .strict(),
  responses: { 201: { description: 'the coupon', schema: couponSchema } },
  errors: { ...adminErrors, 400: 'invalid body', 409: 'a coupon with this code exists' },
  async handle({ body, caller }, deps) {
    if (body.redeemBy && body.redeemBy <= nowOf(deps))
      throw new ValidationError('redeemBy', 'must be in the future');
    // A coupon for a plan the catalog does not have could never be redeemed.
    const unknownPlans = (body.plans ?? []).filter((id) => !findPlan(deps.config.plans, id));
    if (unknownPlans.length > 0) {
      throw new ValidationError(
        'plans',
        `unknown plan ${unknownPlans.map((id) => JSON.stringify(id)).join(', ')}; plans: ${deps.config.plans.plans.map((p) => p.id).join(', ')}`,
      );
    }
    const coupon = await createCoupon(
      deps.db,
      {
        code: body.code,
        credits: body.credits,
        grantExpiresInDays: body.grantExpiresInDays ?? null,
        redeemBy: body.redeemBy ?? null,
        maxRedemptions: body.maxRedemptions ?? null,
        plans: body.plans ?? null,
      },
      adminActor(caller, body.reason ?? 'created a coupon'),
    );
    return ok(couponView(coupon), 201);
  },
});

export const disableAdminCoupon = defineEndpoint({
  route: 'POST /v1/admin/coupons/{code}/disable',
  summary: 'Disables a coupon: later redemptions answer 410; the grants already made stay',
  params: z.object({ code: couponCode }).strict(),
  body: z.object({ reason: storableText(2000) }).strict(),
  responses: { 200: { description: 'the coupon', schema: couponSchema } },
  errors: { ...adminErrors, 400: 'invalid code or body', 404: 'no such coupon' },
  async handle({ params, body, caller }, { db }) {
    return ok(couponView(await disableCoupon(db, params.code, adminActor(caller, body.reason))));
  },
});
