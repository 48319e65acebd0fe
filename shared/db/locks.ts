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
