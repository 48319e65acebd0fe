import type { Kysely } from 'kysely';
import { requireText } from '../credits.js';
import type { AdminAction, AdminActionKind, Database } from '../db/schema.js';

/** Who did an admin operation and why; recorded in `admin_actions` in the same transaction as its effect. */
export interface AdminActor {
  readonly actorArn: string;
  readonly reason: string;
}

/** The only writer of `admin_actions`: one audit row, in the caller's transaction. Returns its id. */
export async function recordAdminAction(
  db: Kysely<Database>,
  action: AdminActionKind,
  actor: AdminActor,
  target: { readonly accountId?: string | null; readonly payload?: Record<string, unknown> } = {},
): Promise<string> {
  const row = await db
    .insertInto('admin_actions')
    .values({
      actor_arn: requireText(actor.actorArn, 'actorArn', 2048),
      action,
      account_id: target.accountId ?? null,
      reason: requireText(actor.reason, 'reason', 2000),
      payload: JSON.stringify(target.payload ?? {}),
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

/** An account's admin actions, newest first. */
export function listAdminActions(
  db: Kysely<Database>,
  accountId: string,
  limit = 50,
): Promise<AdminAction[]> {
  return db
    .selectFrom('admin_actions')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .limit(limit)
    .execute();
}
