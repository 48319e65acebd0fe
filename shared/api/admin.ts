import * as z from 'zod';
import {
  findAccountByUserId,
  findOrCreateAccount,
  heldCredits,
  inAccountTransaction,
  requireAccountByUserId,
  setAccountStatus,
} from '../accounts/accounts.js';
import { requestGrant } from '../approvals/approvals.js';
import { listAdminActions, recordAdminAction } from '../audit/audit.js';
import { ServiceError, ValidationError } from '../errors.js';
import { applyStripeEvent } from '../events/apply-event.js';
import { findParkedEvent, listParkedEvents as parkedEvents } from '../events/processed-events.js';
import { grantTotals, listGrants } from '../grants/grants.js';
import { checkInvariants } from '../invariants.js';
import { anonymizeAccount } from '../ledger/erasure.js';
import { adjustCredits, listEntries } from '../ledger/ledger.js';
import { listPayments } from '../payments/payments.js';
import { currentPlan } from '../plans/plans.js';
import { stripeEventSchema } from '../stripe/events.js';
import { usageOf } from '../usage/usage.js';
import { adminActor, type Caller, defineEndpoint, nowOf, ok } from './endpoint.js';
import { planView } from './plans.js';
import {
  accountSchema,
  creditsSchema,
  entrySchema,
  grantSchema,
  instant,
  paymentSchema,
  reasonBody,
  signedCredits,
  storableText,
  usageRowSchema,
  userIdParams,
} from './schemas.js';
import { accountView, balanceView, entryView, grantView, paymentView } from './views.js';

const arnOf = (caller: Caller) => (caller.kind === 'iam' ? caller.arn : '');
const adminErrors = { 401: 'no IAM identity', 403: 'not an IAM caller' } as const;

const auditSchema = z.object({
  id: z.string(),
  actorArn: z.string(),
  action: z.string(),
  reason: z.string(),
  payload: z.unknown(),
  createdAt: z.string(),
});

export const getAccount = defineEndpoint({
  route: 'GET /v1/admin/accounts/{userId}',
  summary:
    'An account with its balance by category, its grants (newest first), 50 latest entries, payments and admin actions',
  params: userIdParams,
  responses: {
    200: {
      description: 'the account',
      schema: z.object({
        account: creditsSchema.extend({
          /** The account's Stripe customer (cus_...), once a checkout created one. */
          stripeCustomerId: z.string().nullable(),
        }),
        grants: z.array(grantSchema),
        /** Usage of the last 30 days by SKU, as GET /v1/admin/accounts/{userId}/usage?groupBy=sku answers it. */
        usage: z.array(usageRowSchema),
        entries: z.array(entrySchema),
        payments: z.array(paymentSchema),
        adminActions: z.array(auditSchema),
      }),
    },
  },
  errors: { ...adminErrors, 404: 'no account for this user' },
  async handle({ params }, deps) {
    const { db } = deps;
    const account = await requireAccountByUserId(db, params.userId);
    const now = nowOf(deps);
    const { plan } = await currentPlan(db, deps.config.plans, account, now);
    const [totals, held, usage, grants, entries, payments, actions] = await Promise.all([
      grantTotals(db, account.id, now),
      heldCredits(db, account.id, now),
      usageOf(db, account.id, {
        from: new Date(now.getTime() - 30 * 86_400_000),
        to: now,
        groupBy: 'sku',
        tz: 'UTC',
      }),
      listGrants(db, account.id, 100),
      listEntries(db, account.id, { limit: 50 }),
      listPayments(db, account.id, { limit: 50 }),
      listAdminActions(db, account.id, 50),
    ]);
    return ok({
      account: {
        ...accountView(account),
        plan: planView(plan),
        ...balanceView(account, totals, held),
        stripeCustomerId: account.stripe_customer_id,
      },
      grants: grants.map(grantView),
      usage,
      entries: entries.map(entryView),
      payments: payments.map(paymentView),
      adminActions: actions.map((a) => ({
        id: a.id,
        actorArn: a.actor_arn,
        action: a.action,
        reason: a.reason,
        payload: a.payload,
        createdAt: a.created_at.toISOString(),
      })),
    });
  },
});

export const adjustAccount = defineEndpoint({
  route: 'POST /v1/admin/accounts/{userId}/adjustments',
  summary: 'Grants (positive) or removes (negative) credits, with the reason and the caller audited',
  params: userIdParams,
  body: z
    .object({
      amount: signedCredits,
      reason: storableText(2000),
      /** Shown to the user in their history; the reason stays internal (audit only). */
      description: storableText(500).optional(),
      /** A grant's category (positive amounts only). @default promotional */
      category: z.enum(['paid', 'promotional']).optional(),
      /** When a grant expires (positive amounts only); absent: never. */
      expiresAt: instant.optional(),
    })
    .strict(),
  responses: {
    201: {
      description: 'the adjustment entry and its audit row id',
      schema: z.object({ entry: entrySchema, adminActionId: z.string() }),
    },
    202: {
      description:
        'a grant above ADMIN_APPROVAL_THRESHOLD: pending until another admin approves it; nothing written yet',
      schema: z.object({ approvalId: z.string(), status: z.literal('pending') }),
    },
  },
  errors: {
    ...adminErrors,
    400: 'invalid body',
    402: 'would take the balance below zero',
    404: 'a removal (negative amount) for a user never seen: no account is created',
    422: 'would take the balance past 2^53 - 1 credits (limit_exceeded)',
  },
  async handle({ params, body, caller }, deps) {
    const { db, config } = deps;
    const now = nowOf(deps);
    if (body.amount < 0 && (body.category || body.expiresAt)) {
      throw new ValidationError(
        body.category ? 'category' : 'expiresAt',
        'applies to grants (positive amounts) only',
      );
    }
    if (body.expiresAt && body.expiresAt <= now)
      throw new ValidationError('expiresAt', 'must be in the future');
    // An operator may grant before the user's first sign-in (a welcome bonus): the account is created. A
    // removal from a user never seen is refused (404) before anything is written, the account included.
    const account =
      body.amount > 0
        ? await findOrCreateAccount(db, params.userId)
        : await requireAccountByUserId(db, params.userId);
    const actor = adminActor(caller, body.reason);
    const threshold = config.adminApprovalThreshold;
    if (threshold !== undefined && body.amount > threshold) {
      const approval = await inAccountTransaction(db, account.id, (trx, locked) =>
        requestGrant(
          trx,
          locked,
          {
            amount: body.amount,
            category: body.category ?? 'promotional',
            expiresAt: body.expiresAt ?? null,
            description: body.description ?? null,
          },
          actor,
        ),
      );
      return ok({ approvalId: approval.id, status: 'pending' }, 202);
    }
    const entry = await inAccountTransaction(db, account.id, (trx, locked) =>
      adjustCredits(
        trx,
        locked,
        {
          ...actor,
          amount: body.amount,
          description: body.description ?? null,
          category: body.category,
          expiresAt: body.expiresAt ?? null,
        },
        now,
      ),
    );
    return ok({ entry: entryView(entry), adminActionId: entry.admin_action_id }, 201);
  },
});

const statusEndpoint = (action: 'freeze' | 'unfreeze') =>
  defineEndpoint({
    route: `POST /v1/admin/accounts/{userId}/${action}`,
    summary:
      action === 'freeze'
        ? 'Freezes an account (suspected fraud): spend and checkout are refused until unfrozen'
        : 'Unfreezes an account',
    params: userIdParams,
    body: reasonBody,
    responses: { 200: { description: 'the account', schema: accountSchema } },
    errors: { ...adminErrors, 400: 'invalid body', 404: 'no account' },
    async handle({ params, body, caller }, { db }) {
      const account = await requireAccountByUserId(db, params.userId);
      const updated = await inAccountTransaction(db, account.id, (trx, locked) =>
        setAccountStatus(trx, locked, action === 'freeze' ? 'frozen' : 'active', {
          actorArn: arnOf(caller),
          reason: body.reason,
        }),
      );
      return ok(accountView(updated));
    },
  });
export const freezeAccount = statusEndpoint('freeze');
export const unfreezeAccount = statusEndpoint('unfreeze');

export const anonymize = defineEndpoint({
  route: 'POST /v1/admin/accounts/{userId}/anonymize',
  summary:
    'GDPR erasure: drops the personal data of the user, keeps amounts and the chain. Idempotent: afterwards no account carries this user id',
  params: userIdParams,
  body: reasonBody,
  responses: {
    200: {
      description:
        'accountId is null when no account carried this user id (never existed, or already anonymised)',
      schema: z.object({ anonymized: z.literal(true), accountId: z.string().nullable() }),
    },
  },
  errors: { ...adminErrors, 400: 'invalid body' },
  async handle({ params, body, caller }, { db }) {
    const account = await findAccountByUserId(db, params.userId);
    if (!account) return ok({ anonymized: true, accountId: null });
    await inAccountTransaction(db, account.id, (trx, locked) =>
      anonymizeAccount(trx, locked, { actorArn: arnOf(caller), reason: body.reason }),
    );
    return ok({ anonymized: true, accountId: account.id });
  },
});

const parkedSchema = z.object({
  eventId: z.string(),
  eventType: z.string(),
  reason: z.string(),
  parkedAt: z.string(),
});

export const listParkedEvents = defineEndpoint({
  route: 'GET /v1/admin/parked-events',
  summary: 'Stripe events that could not be applied, oldest first, with the reason',
  query: z.object({ limit: z.coerce.number().int().min(1).max(500).default(100) }).strict(),
  responses: { 200: { description: 'parked events', schema: z.object({ data: z.array(parkedSchema) }) } },
  errors: { ...adminErrors, 400: 'bad limit' },
  async handle({ query }, { db }) {
    const parked = await parkedEvents(db, query.limit);
    return ok({ data: parked.map((p) => ({ ...p, parkedAt: p.parkedAt.toISOString() })) });
  },
});

export const replayParkedEvent = defineEndpoint({
  route: 'POST /v1/admin/parked-events/{eventId}/replay',
  summary: 'Applies a parked event again (after fixing its cause); audited',
  params: z.object({ eventId: z.string().regex(/^evt_\w{1,250}$/) }).strict(),
  body: reasonBody,
  responses: {
    200: {
      description: 'applied, or parked again with the current reason',
      schema: z.object({
        eventId: z.string(),
        outcome: z.enum(['applied', 'ignored', 'parked', 'duplicate']),
        reason: z.string().nullable(),
      }),
    },
  },
  errors: {
    ...adminErrors,
    400: 'invalid body, or a parked payload this version no longer accepts as an event (malformed_event)',
    404: 'no parked event with this id',
  },
  async handle({ params, body, caller }, { db, config }) {
    const parked = await findParkedEvent(db, params.eventId);
    if (!parked) throw new ServiceError('not_found', `no parked event ${params.eventId}`);
    const stored = stripeEventSchema.safeParse(parked.payload);
    if (!stored.success) {
      throw new ServiceError(
        'malformed_event',
        `the parked payload is not a Stripe event this version accepts (${stored.error.issues.map((i) => i.message).join('; ')})`,
      );
    }
    const event = stored.data;
    const result = await applyStripeEvent(db, event, { packages: config.packages, replay: true });
    const reason =
      result.outcome === 'parked' ? ((await findParkedEvent(db, event.id))?.reason ?? null) : null;
    await recordAdminAction(
      db,
      'replay_event',
      { actorArn: arnOf(caller), reason: body.reason },
      { payload: { eventId: event.id, outcome: result.outcome } },
    );
    return ok({ eventId: event.id, outcome: result.outcome, reason });
  },
});

export const getInvariants = defineEndpoint({
  route: 'GET /v1/admin/invariants',
  summary: "The ledger invariant report (DESIGN's invariants over the whole database)",
  responses: {
    200: {
      description: 'ok is false when any invariant is violated; each violation names its invariant',
      schema: z.object({
        ok: z.boolean(),
        checkedAt: z.string(),
        counts: z.object({ accounts: z.number(), entries: z.number(), payments: z.number() }),
        violations: z.array(
          z.object({
            invariant: z.number(),
            rule: z.string(),
            accountId: z.string().nullable().optional(),
            paymentId: z.string().nullable().optional(),
            entryId: z.number().nullable().optional(),
            detail: z.string(),
          }),
        ),
      }),
    },
  },
  errors: adminErrors,
  async handle(_request, { db }) {
    return ok(await checkInvariants(db));
  },
});
