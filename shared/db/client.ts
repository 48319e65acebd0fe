import { Signer } from '@aws-sdk/rds-signer';
import { Kysely, type LogConfig, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';

const INT8_OID = 20;

/**
 * int8 (credits, amounts, entry ids) arrives as a JS number, exactly: a value outside the safe integer range
 * throws instead of silently rounding. Decided once, here, for every pool the service creates.
 */
export function parseInt8(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`int8 value ${text} is outside the safe integer range`);
  }
  return value;
}

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? parseInt8 : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Where the database is: a connection string (local), or an RDS Proxy reached with IAM auth over TLS (AWS). */
export type DatabaseTarget =
  | { readonly url: string }
  | {
      readonly host: string;
      readonly port: number;
      readonly database: string;
      readonly user: string;
      readonly iamAuth: true;
    };

/** pg connection settings for a target; IAM targets get a fresh auth token for every new connection. */
function connectionSettings(target: string | DatabaseTarget): pg.PoolConfig {
  if (typeof target === 'string') return { connectionString: target };
  if ('url' in target) return { connectionString: target.url };
  const signer = new Signer({ hostname: target.host, port: target.port, username: target.user });
  return {
    host: target.host,
    port: target.port,
    database: target.database,
    user: target.user,
    password: () => signer.getAuthToken(),
    ssl: { rejectUnauthorized: true },
  };
}

export interface DbOptions {
  /** Pool size. @default 10 */
  readonly max?: number;
  /** Name shown in pg_stat_activity. @default 'credits' */
  readonly applicationName?: string;
  /** kysely's query log (tests inspect the SQL a code path runs). @default none */
  readonly log?: LogConfig;
}

/** The kysely instance over a pg pool; every query goes to the writer given by `target`. */
export function createDb(target: string | DatabaseTarget, options: DbOptions = {}): Kysely<Database> {
  const pool = new pg.Pool({
    ...connectionSettings(target),
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'credits',
    types,
  });
  // A connection closed by the server (failover, restart, terminate) must not crash the process: its
  // queries fail with the error (and their transactions roll back), the pool drops it, and the next query
  // opens a new one. Without these listeners pg re-emits the error as an uncaught exception.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }), log: options.log });
}

/** true when the database answers a trivial query; never throws. */
export async function pingDatabase(db: Kysely<Database>): Promise<boolean> {
  try {
    await sql`SELECT 1`.execute(db);
    return true;
  } catch {
    return false;
  }
}
