import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { afterAll, inject } from 'vitest';
import { createDatabase, dropDatabase } from '../../local/postgres.js';
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
  const url = await createDatabase(serverUrl, name, inject('templateDatabase'));
  const db = createDb(url, { max: options.max ?? 20, applicationName: 'credits-test' });
  afterAll(async () => {
    await db.destroy();
    await dropDatabase(serverUrl, name);
  });
  return { db, url };
}
