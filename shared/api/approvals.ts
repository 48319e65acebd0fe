import * as z from 'zod';
import { type ApprovalWithActors, decideGrant, listApprovals } from '../approvals/approvals.js';
import { adminActor, defineEndpoint, nowOf, ok } from './endpoint.js';
import { entrySchema, reasonBody } from './schemas.js';
import { entryView } from './views.js';

const approvalSchema = z.object({
  id: z.string(),
  userId: z.string().nullable(),
  accountId: z.string(),
  amount: z.number().int(),
  category: z.enum(['paid', 'promotional']),
  expiresAt: z.string().nullable(),
  description: z.string().nullable(),
  status: z.enum(['pending', 'approved', 'rejected']),
  requestedBy: z.string(),
  reason: z.string(),
  requestedAt: z.string(),
  decidedBy: z.string().nullable(),
  decidedAt: z.string().nullable(),
  entryId: z.number().int().nullable(),
});

export const approvalView = (a: ApprovalWithActors) => ({
  id: a.id,
  userId: a.user_id,
  accountId: a.account_id,
  amount: a.amount,
  category: a.category,
  expiresAt: a.expires_at?.toISOString() ?? null,
  description: a.description,
  status: a.status,
  requestedBy: a.requested_by,
  reason: a.reason,
  requestedAt: a.created_at.toISOString(),
  decidedBy: a.decided_by,
  decidedAt: a.decided_at?.toISOString() ?? null,
  entryId: a.entry_id,
});

const adminErrors = { 401: 'no IAM identity', 403: 'not an admin principal' } as const;

export const listGrantApprovals = defineEndpoint({
  route: 'GET /v1/admin/approvals',
  summary: 'Grants waiting for a second admin (or decided ones, by status), oldest first',
  query: z.object({ status: z.enum(['pending', 'approved', 'rejected']).default('pending') }).strict(),
  responses: { 200: { description: 'approvals', schema: z.object({ data: z.array(approvalSchema) }) } },
  errors: { ...adminErrors, 400: 'bad status' },
  async handle({ query }, { db }) {
    return ok({ data: (await listApprovals(db, query.status, 500)).map(approvalView) });
  },
});

const decision = (action: 'approve' | 'reject') =>
  defineEndpoint({
    route: `POST /v1/admin/approvals/{approvalId}/${action}`,
    summary:
      action === 'approve'
        ? 'Approves a pending grant (an admin other than the requester): the grant is written, once'
        : 'Rejects a pending grant (an admin other than the requester): nothing is written to the ledger',
    params: z.object({ approvalId: z.uuid() }).strict(),
    body: reasonBody,
    responses: {
      200: {
        description: 'the approval, decided (the same answer again for a repeated decision)',
        schema: z.object({ approval: approvalSchema, entry: entrySchema.nullable() }),
      },
    },
    errors: {
      ...adminErrors,
      400: 'invalid id or body, or the grant would already have expired',
      403: 'not an admin principal, or the requester deciding their own grant',
      404: 'no such approval',
      409: 'already decided the other way',
    },
    async handle({ params, body, caller }, deps) {
      const result = await decideGrant(
        deps.db,
        params.approvalId,
        action,
        adminActor(caller, body.reason),
        nowOf(deps),
      );
      return ok({ approval: approvalView(result.approval), entry: result.entry && entryView(result.entry) });
    },
  });
export const approveGrant = decision('approve');
export const rejectGrant = decision('reject');
