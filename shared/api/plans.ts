import * as z from 'zod';
import { findOrCreateAccount } from '../accounts/accounts.js';
import type { Plan } from '../plan-catalog.js';
import {
  alertsOf,
  changePlan,
  type Limits,
  limitsOf,
  requirePlan,
  setLowBalanceThreshold,
  setMonthlyBudget,
} from '../plans/plans.js';
import { adminActor, type Caller, defineEndpoint, nowOf, ok } from './endpoint.js';
import { planSchema, reasonBody, storableText, userIdParams } from './schemas.js';

const userId = (caller: Caller) => (caller.kind === 'user' ? caller.userId : '');

export const planView = (plan: Plan) => ({ id: plan.id, name: plan.name });

const limitsSchema = z.object({
  plan: planSchema,
  caps: z.array(
    z.object({
      period: z.enum(['day', 'month']),
      limit: z.number().int(),
      used: z.number().int(),
      held: z.number().int(),
      remaining: z.number().int(),
      resetsAt: z.string(),
      source: z.enum(['plan', 'budget']),
    }),
  ),
  monthlyBudget: z.number().int().nullable(),
  rateLimitPerMinute: z.number().int().nullable(),
  allowance: z
    .object({ credits: z.number().int(), month: z.string(), expiresAt: z.string() })
    .nullable()
    .describe("this month's allowance granted and its expiry; null on a plan without one"),
});

const limitsView = (limits: Limits) => ({
  plan: planView(limits.plan),
  caps: limits.caps.map((c) => ({ ...c, resetsAt: c.resetsAt.toISOString() })),
  monthlyBudget: limits.monthlyBudget,
  rateLimitPerMinute: limits.rateLimitPerMinute,
  allowance: limits.allowance && {
    ...limits.allowance,
    expiresAt: limits.allowance.expiresAt.toISOString(),
  },
});

export const getMyLimits = defineEndpoint({
  route: 'GET /v1/me/limits',
  summary:
    "The caller's plan, its caps (UTC day and month) with what is used, held and remaining and when each resets, the caller's own monthly budget, the rate limit and this month's allowance",
  responses: { 200: { description: 'the limits', schema: limitsSchema } },
  errors: { 401: 'no user token' },
  async handle({ caller }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    return ok(limitsView(await limitsOf(deps.db, deps.config.plans, account, nowOf(deps))));
  },
});

export const putMyLimits = defineEndpoint({
  route: 'PUT /v1/me/limits',
  summary:
    "Sets the caller's own monthly budget (credits per UTC month, spends, captures and usage plus active holds), at most the plan's monthly cap; null removes it",
  body: z.object({ monthlyBudget: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable() }).strict(),
  responses: { 200: { description: 'the limits with the budget applied', schema: limitsSchema } },
  errors: {
    400: "monthlyBudget negative, fractional or above the plan's monthly cap",
    401: 'no user token',
  },
  async handle({ caller, body }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    await setMonthlyBudget(deps.db, deps.config.plans, account, body.monthlyBudget);
    return ok(limitsView(await limitsOf(deps.db, deps.config.plans, account, nowOf(deps))));
  },
});

const alertsSchema = z.object({
  lowBalance: z.number().int().nullable().describe("the caller's own threshold; null: the plan's applies"),
  planLowBalance: z.number().int().nullable(),
  effectiveLowBalance: z
    .number()
    .int()
    .nullable()
    .describe('balance.low fires when available falls below this; null: never'),
});

export const getMyAlerts = defineEndpoint({
  route: 'GET /v1/me/alerts',
  summary: "The caller's low-balance threshold, the plan's, and the one that applies",
  responses: { 200: { description: 'the alert settings', schema: alertsSchema } },
  errors: { 401: 'no user token' },
  async handle({ caller }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    return ok(await alertsOf(deps.db, deps.config.plans, account));
  },
});

export const putMyAlerts = defineEndpoint({
  route: 'PUT /v1/me/alerts',
  summary:
    "Sets the caller's own low-balance threshold: the app is sent balance.low once each time available falls below it; null returns to the plan's",
  body: z.object({ lowBalance: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable() }).strict(),
  responses: { 200: { description: 'the alert settings now', schema: alertsSchema } },
  errors: { 400: 'lowBalance negative or not an integer', 401: 'no user token' },
  async handle({ caller, body }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    await setLowBalanceThreshold(deps.db, account, body.lowBalance);
    return ok(await alertsOf(deps.db, deps.config.plans, account));
  },
});

export const changeAccountPlan = defineEndpoint({
  route: 'PUT /v1/admin/accounts/{userId}/plan',
  summary:
    "Moves an account to a plan (audited). Moving up mid-month grants the difference of the month's allowances, once; moving down keeps what was granted and lowers the caps at once. Creates the account if unseen",
  params: userIdParams,
  body: reasonBody.extend({ planId: storableText(64) }).strict(),
  responses: {
    200: {
      description: 'the account is on the plan (changed: false when it already was: nothing audited)',
      schema: z.object({
        userId: z.string(),
        plan: planSchema,
        previousPlan: planSchema,
        changed: z.boolean(),
        allowanceGranted: z.number().int(),
      }),
    },
  },
  errors: { 400: 'invalid body', 401: 'no IAM identity', 403: 'not an admin', 404: 'no such plan' },
  async handle({ params, body, caller }, deps) {
    // An unknown plan is refused before the account of a user never seen is created.
    requirePlan(deps.config.plans, body.planId);
    const account = await findOrCreateAccount(deps.db, params.userId);
    const result = await changePlan(
      deps.db,
      deps.config.plans,
      account,
      body.planId,
      adminActor(caller, body.reason),
      nowOf(deps),
    );
    return ok({
      userId: params.userId,
      plan: planView(result.to),
      previousPlan: planView(result.from),
      changed: result.changed,
      allowanceGranted: result.allowanceGranted,
    });
  },
});
