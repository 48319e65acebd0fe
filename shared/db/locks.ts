import { sql, type Transaction } from 'kysely';
import type { Database } from './schema.js';

export type Trx = Transaction<Database>;

/** Advisory lock namespaces: the first key of `pg_advisory_xact_lock(int4, int4)`. */
const LOCK_SCOPES = { account: 1, payment: 2 } as const;

/**
 * Takes a transaction-level advisory lock (released at commit or rollback; never a session lock, which
 * would pin RDS Proxy connections). Unrelated keys that hash alike only serialize, never corrupt.
 * Locks are always taken payment first, then account.
 */
export async function lockKey(trx: Trx, scope: keyof typeof LOCK_SCOPES, key: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${LOCK_SCOPES[scope]}::int4, hashtext(${key}))`.execute(trx);
}

/**
 * Takes the locks of several accounts in one statement, in the order of their keys, as `debit_usage` does:
 * two writers of several accounts, or one of them and a writer of one, never deadlock.
 */
export async function lockAccounts(trx: Trx, accountIds: readonly string[]): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${LOCK_SCOPES.account}::int4, key) FROM (
      SELECT DISTINCT hashtext(id::text) AS key FROM unnest(${accountIds}::uuid[]) AS id ORDER BY 1) AS keys`.execute(
    trx,
  );
}
