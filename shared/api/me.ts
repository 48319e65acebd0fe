import * as z from 'zod';
import { findOrCreateAccount, heldCredits } from '../accounts/accounts.js';
import { ValidationError } from '../errors.js';
import { grantTotals } from '../grants/grants.js';
import { listEntries } from '../ledger/ledger.js';
import { listPayments } from '../payments/payments.js';
import { currentPlan } from '../plans/plans.js';
import { type Caller, defineEndpoint, nowOf, ok } from './endpoint.js';
import { decodeCursor, encodeCursor, isUuid, pageOf, pageQuery } from './paging.js';
import { planView } from './plans.js';
import { creditsSchema, ENTRY_KINDS, entrySchema, instant, paymentSchema } from './schemas.js';
import { accountView, balanceView, entryView, paymentView } from './views.js';

const userId = (caller: Caller) => (caller.kind === 'user' ? caller.userId : '');

export const getMyCredits = defineEndpoint({
  route: 'GET /v1/me/credits',
  summary:
    "The caller's balance (expired credits excluded from the second they expire), what is available, the plan, the grants by category and the next expiry; creates the account on first sight (and grants the month's allowance if it is due)",
  responses: { 200: { description: 'the account', schema: creditsSchema } },
  errors: { 401: 'no user token' },
  async handle({ caller }, deps) {
    const account = await findOrCreateAccount(deps.db, userId(caller));
    const now = nowOf(deps);
    const { plan } = await currentPlan(deps.db, deps.config.plans, account, now);
    const [totals, held] = await Promise.all([
      grantTotals(deps.db, account.id, now),
      heldCredits(deps.db, account.id, now),
    ]);
    return ok({ ...accountView(account), plan: planView(plan), ...balanceView(account, totals, held) });
  },
});

const ENTRY_CURSOR = 'e1.';
const isEntryId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

export const listMyTransactions = defineEndpoint({
  route: 'GET /v1/me/transactions',
  summary:
    "The caller's ledger, newest first, keyset-paginated (stable while new entries arrive); filter by kind and by time [from, to)",
  query: pageQuery.extend({
    kind: z.enum(ENTRY_KINDS).optional(),
    from: instant.optional(),
    to: instant.optional(),
  }),
  responses: {
    200: {
      description: 'one page; pass nextCursor back as cursor for the next (older) page',
      schema: z.object({ data: z.array(entrySchema), nextCursor: z.string().nullable() }),
    },
  },
  errors: { 400: 'bad limit, cursor, kind or time', 401: 'no user token' },
  async handle({ caller, query }, { db }) {
    const account = await findOrCreateAccount(db, userId(caller));
    if (query.from && query.to && !(query.from < query.to))
      throw new ValidationError('from', 'must be before to');
    const beforeId = query.cursor ? decodeCursor(ENTRY_CURSOR, query.cursor, isEntryId) : undefined;
    const rows = await listEntries(db, account.id, {
      limit: query.limit + 1,
      beforeId,
      kind: query.kind,
      from: query.from,
      to: query.to,
    });
    const { page, nextCursor } = pageOf(rows, query.limit, (e) => encodeCursor(ENTRY_CURSOR, e.id));
    return ok({ data: page.map(entryView), nextCursor });
  },
});

const PAYMENT_CURSOR = 'p1.';
const isPaymentId = isUuid;

export const listMyPayments = defineEndpoint({
  route: 'GET /v1/me/payments',
  summary: "The caller's purchases and their states, newest first, keyset-paginated",
  query: pageQuery,
  responses: {
    200: {
      description: 'one page; pass nextCursor back as cursor for the next (older) page',
      schema: z.object({ data: z.array(paymentSchema), nextCursor: z.string().nullable() }),
    },
  },
  errors: { 400: 'bad limit or cursor', 401: 'no user token' },
  async handle({ caller, query }, { db }) {
    const account = await findOrCreateAccount(db, userId(caller));
    const afterId = query.cursor ? decodeCursor(PAYMENT_CURSOR, query.cursor, isPaymentId) : undefined;
    const rows = await listPayments(db, account.id, { limit: query.limit + 1, afterId });
    const { page, nextCursor } = pageOf(rows, query.limit, (p) => encodeCursor(PAYMENT_CURSOR, p.id));
    return ok({ data: page.map(paymentView), nextCursor });
  },
});
