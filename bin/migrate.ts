import { createDb } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';

/**
 * `npm run db:migrate`: applies every pending migration to DATABASE_URL, whose role must be the owner (it
 * creates the tables and grants the application role its privileges).
 */
const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL is not set: point it at the Postgres database to migrate, as its owner');
  process.exit(2);
}
const db = createDb(url, { max: 1, applicationName: 'credits-migrate' });
try {
  const { results = [] } = await migrateToLatest(db);
  for (const r of results) console.log(`${r.status.toLowerCase()}: ${r.migrationName}`);
  if (results.length === 0) console.log('already at the latest migration');
} catch (error: unknown) {
  console.error(error instanceof Error ? `${error.message}: ${String(error.cause)}` : error);
  process.exitCode = 1;
} finally {
  await db.destroy();
}
