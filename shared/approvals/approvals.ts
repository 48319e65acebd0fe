import { type Kysely, sql } from 'kysely';
import { inAccountTransaction } from '../accounts/accounts.js';
import { type AdminActor, recordAdminAction } from '../audit/audit.js';
import type { Trx } from '../db/locks.js';
import type { Account, Database, GrantApproval, GrantCategory, LedgerEntry } from '../db/schema.js';
import { ServiceError, ValidationError } from '../errors.js';
import { adjustCredits } from '../ledger/ledger.js';

/** The only writer of `grant_approvals`: four-eyes admin grants, requested by one admin, decided by another. */

export interface GrantRequest {
  readonly amount: number;
  readonly category: GrantCategory;
  readonly expiresAt: Date | null;
  readonly description: string | null;
}

/** An approval with who asked, why, and who decided. */
export type ApprovalWithActors = GrantApproval & {
  readonly requested_by: string;
  readonly reason: string;
  readonly decided_by: string | null;
  readonly user_id: string | null;
};

/** Records a grant above the approval threshold as pending (audited); nothing reaches the ledger yet. */
export async function requestGrant(
  trx: Trx,
  account: Account,
  request: GrantRequest,
  actor: AdminActor,
): Promise<GrantApproval> {
  const actionId = await recordAdminAction(trx, 'request_grant', actor, {
    accountId: account.id,
    payload: {
      amount: request.amount,
      category: request.category,
      ...(request.expiresAt && { expiresAt: request.expiresAt.toISOString() }),
    },
  });
  return trx
    .insertInto('grant_approvals')
    .values({
      account_id: account.id,
      amount: request.amount,
      category: request.category,
      expires_at: request.expiresAt,
      description: request.description,
      requested_action_id: actionId,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

function approvals(db: Kysely<Database>) {
  return db
    .selectFrom('grant_approvals as g')
    .innerJoin('admin_actions as r', 'r.id', 'g.requested_action_id')
    .leftJoin('admin_actions as d', 'd.id', 'g.decided_action_id')
    .innerJoin('accounts as a', 'a.id', 'g.account_id')
    .selectAll('g')
    .select([
      'r.actor_arn as requested_by',
      'r.reason',
      'd.actor_arn as decided_by',
      'a.external_user_id as user_id',
    ]);
}

/** Approvals in one status, oldest first. */
export function listApprovals(db: Kysely<Database>, status: GrantApproval['status'], limit: number) {
  return approvals(db).where('g.status', '=', status).orderBy('g.created_at').limit(limit).execute();
}

export async function findApproval(
  db: Kysely<Database>,
  id: string,
): Promise<ApprovalWithActors | undefined> {
  return approvals(db).where('g.id', '=', id).executeTakeFirst();
}

/**
 * Approves or rejects a pending grant, once: the deciding admin must not be the one who asked (403). A
 * second identical decision changes nothing and answers the same; the opposite decision is 409. Approving
 * writes the grant (its entry points at the approval's audit row) in the same transaction.
 */
export async function decideGrant(
  db: Kysely<Database>,
  id: string,
  decision: 'approve' | 'reject',
  actor: AdminActor,
  now = new Date(),
): Promise<{ approval: ApprovalWithActors; entry: LedgerEntry | null }> {
  const found = await findApproval(db, id);
  if (!found) throw new ServiceError('not_found', `no approval ${id}`);
  await inAccountTransaction(db, found.account_id, async (trx, account) => {
    const current = await trx
      .selectFrom('grant_approvals')
      .selectAll()
      .where('id', '=', id)
      .forUpdate()
      .executeTakeFirstOrThrow();
    // The requester never decides their own grant, whatever its state.
    if (found.requested_by === actor.actorArn) {
      throw new ServiceError(
        'four_eyes_required',
        'a grant must be decided by an admin other than the one who asked',
      );
    }
    const wanted = decision === 'approve' ? 'approved' : 'rejected';
    if (current.status === wanted) return;
    if (current.status !== 'pending') {
      throw new ServiceError('approval_decided', `approval ${id} was already ${current.status}`);
    }
    if (decision === 'approve' && current.expires_at && current.expires_at <= now) {
      throw new ValidationError(
        'expiresAt',
        'has passed since the request: reject it and request the grant again',
      );
    }
    const actionId = await recordAdminAction(
      trx,
      decision === 'approve' ? 'approve_grant' : 'reject_grant',
      actor,
      {
        accountId: account.id,
        payload: { approvalId: id, amount: current.amount },
      },
    );
    const entry =
      decision === 'approve'
        ? await adjustCredits(
            trx,
            account,
            {
              amount: current.amount,
              reason: actor.reason,
              actorArn: actor.actorArn,
              description: current.description,
              category: current.category,
              expiresAt: current.expires_at,
              adminActionId: actionId,
            },
            now,
          )
        : null;
    await trx
      .updateTable('grant_approvals')
      .set({
        status: wanted,
        decided_action_id: actionId,
        entry_id: entry?.id ?? null,
        decided_at: sql`now()`,
      })
      .where('id', '=', id)
      .execute();
  });
  const approval = (await findApproval(db, id))!;
  const entry = approval.entry_id
    ? ((await db
        .selectFrom('ledger_entries')
        .selectAll()
        .where('id', '=', approval.entry_id)
        .executeTakeFirst()) ?? null)
    : null;
  return { approval, entry };
}
