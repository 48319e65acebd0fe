import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { afterAll, inject } from 'vitest';
import { createDatabase, dropDatabase, withAppRole } from '../../local/postgres.js';
import { createDb } from '../../shared/db/client.js';
import type { Database } from '../../shared/db/schema.js';

export interface TestDatabase {
  /** A pool connected as the application role, as every function connects. */
  readonly db: Kysely<Database>;
  /** The application role's connection string of this database. */
  readonly url: string;
  /**
   * The owner's connection string, for what only the owner may do (DDL a fault test injects, proving that
   * the database itself refuses what the owner could try). Never for what a function does.
   */
  readonly ownerUrl: string;
  /** A one-connection pool as the owner, opened on first use and closed after the file. */
  owner(): Kysely<Database>;
}

/**
 * A fresh database copied from the migrated template, private to the calling test file, dropped after it.
 * Call once at the top of a test file.
 */
export async function createTestDatabase(options: { max?: number } = {}): Promise<TestDatabase> {
  const serverUrl = inject('postgresServerUrl');
  const name = `credits_test_${randomBytes(6).toString('hex')}`;
  const ownerUrl = await createDatabase(serverUrl, name, inject('templateDatabase'));
  const url = withAppRole(ownerUrl);
  const db = createDb(url, { max: options.max ?? 20, applicationName: 'credits-test' });
  let ownerDb: Kysely<Database> | undefined;
  afterAll(async () => {
    await db.destroy();
    await ownerDb?.destroy();
    await dropDatabase(serverUrl, name);
  });
  const owner = () => {
    ownerDb ??= createDb(ownerUrl, { max: 1, applicationName: 'credits-test-owner' });
    return ownerDb;
  };
  return { db, url, ownerUrl, owner };
}
