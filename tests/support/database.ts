import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { createDb } from '../../shared/db/client.js';
import type { Database } from '../../shared/db/schema.js';

export interface TestDatabase {
  readonly db: Kysely<Database>;
  readonly url: string;
}

/**
 * A fresh database copied from the migrated template, private to the calling test file, dropped after it.
 * Call once at the top of a test file.
 */
export async function createTestDatabase(options: { max?: number } = {}): Promise<TestDatabase> {
  const serverUrl = inject('postgresServerUrl');
  const name = `credits_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name} TEMPLATE ${inject('templateDatabase')}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const db = createDb(url.toString(), { max: options.max ?? 20, applicationName: 'credits-test' });
  afterAll(async () => {
    await db.destroy();
    const cleanup = new pg.Client({ connectionString: serverUrl });
    await cleanup.connect();
    await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await cleanup.end();
  });
  return { db, url: url.toString() };
}
