import { type Kysely, type MigrationResultSet, Migrator } from 'kysely';
import { migrationProvider } from '../../migrations/index.js';
import type { Database } from './schema.js';

/** Applies every pending migration; throws with the failing migration's name when one fails. */
export async function migrateToLatest(db: Kysely<Database>): Promise<MigrationResultSet> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const result = await migrator.migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`migration ${failed} failed`, { cause: result.error });
  }
  return result;
}
