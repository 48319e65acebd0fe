import type { Context } from 'aws-lambda';
import { loadDatabaseConfig } from '../shared/config.js';
import { createDb, type DatabaseTarget } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';

const obs = createObservability('migrate');

/** Runs every pending migration as the table owner. */
export async function runMigrations(target: DatabaseTarget) {
  const db = createDb(target, { max: 1, applicationName: 'migrate' });
  try {
    const { results = [] } = await migrateToLatest(db);
    const applied = results.map((r) => r.migrationName);
    obs.logger.info('migrations applied', { applied });
    return { applied };
  } finally {
    await db.destroy();
  }
}

/** Run by a CDK Trigger on every deploy that changes it, before the new code takes traffic. */
export const handler = coldStart(() => {
  const { database } = loadDatabaseConfig();
  return wrapHandler(obs, (_event: unknown, _context: Context) => runMigrations(database));
});
