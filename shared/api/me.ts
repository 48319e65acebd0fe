import * as z from 'zod';
import { ValidationError } from '../errors.js';
import { findOrCreateAccount } from '../ledger/ledger.js';
import { defineEndpoint, ok } from './endpoint.js';
import { accountSchema, entrySchema, paymentSchema } from './schemas.js';
import { accountView, entryView, paymentView } from './views.js';

const userId = (caller: { kind: string; userId?: string }) => caller.userId!;

export const getMyCredits = defineEndpoint({
  route: 'GET /v1/me/credits',
  summary: "The caller's balance and account status; creates the account on first sight",
  responses: { 200: { description: 'the account', schema: accountSchema } },
  errors: { 401: 'no user token' },
  async handle({ caller }, { db }) {
    return ok(accountView(await findOrCreateAccount(db, userId(caller))));
  },
});

const CURSOR_PREFIX = 'e1.';
const encodeCursor = (id: number) => CURSOR_PREFIX + Buffer.from(String(id)).toString('base64url');
function decodeCursor(cursor: string): number {
  const id = cursor.startsWith(CURSOR_PREFIX)
    ? Number(Buffer.from(cursor.slice(CURSOR_PREFIX.length), 'base64url').toString())
    : Number.NaN;
  if (!Number.isSafeInteger(id) || id <= 0)
    throw new ValidationError('cursor', 'is not a cursor this API returned');
  return id;
}

export const listMyTransactions = defineEndpoint({
  route: 'GET /v1/me/transactions',
  summary: "The caller's ledger, newest first, keyset-paginated (stable while new entries arrive)",
  query: z
    .object({
      limit: z.coerce.number().int().min(1).max(100).default(20),
      cursor: z.string().max(100).optional(),
    })
    .strict(),
  responses: {
    200: {
      description: 'one page; pass nextCursor back as cursor for the next (older) page',
      schema: z.object({ data: z.array(entrySchema), nextCursor: z.string().nullable() }),
    },
  },
  errors: { 400: 'bad limit or cursor', 401: 'no user token' },
  async handle({ caller, query }, { db }) {
    const account = await findOrCreateAccount(db, userId(caller));
    const before = query.cursor ? decodeCursor(query.cursor) : undefined;
    let q = db
      .selectFrom('ledger_entries')
      .selectAll()
      .where('account_id', '=', account.id)
      .orderBy('id', 'desc')
      .limit(query.limit + 1);
    if (before !== undefined) q = q.where('id', '<', before);
    const rows = await q.execute();
    const page = rows.slice(0, query.limit);
    const last = page.at(-1);
    return ok({
      data: page.map(entryView),
      nextCursor: rows.length > query.limit && last ? encodeCursor(last.id) : null,
    });
  },
});

export const listMyPayments = defineEndpoint({
  route: 'GET /v1/me/payments',
  summary: "The caller's purchases and their states, newest first (last 100)",
  responses: { 200: { description: 'purchases', schema: z.object({ data: z.array(paymentSchema) }) } },
  errors: { 401: 'no user token' },
  async handle({ caller }, { db }) {
    const account = await findOrCreateAccount(db, userId(caller));
    const payments = await db
      .selectFrom('payments')
      .selectAll()
      .where('account_id', '=', account.id)
      .orderBy('created_at', 'desc')
      .limit(100)
      .execute();
    return ok({ data: payments.map(paymentView) });
  },
});
