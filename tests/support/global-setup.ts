import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startLocalPostgres } from '../../local/postgres.js';
import { createDb } from '../../shared/db/client.js';
import { migrateToLatest } from '../../shared/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Server URL (any database) on which test files create their own databases. */
    postgresServerUrl: string;
    /** The migrated database each test file's database is copied from. */
    templateDatabase: string;
  }
}

/**
 * Starts one embedded Postgres for the whole run (or uses DATABASE_URL's server) and migrates a template
 * database; each test file then gets its own copy (tests/support/database.ts).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = process.env.DATABASE_URL;
  let stopServer = async () => {};
  let serverUrl: string;
  let dataDir: string | undefined;
  if (external) {
    serverUrl = external;
  } else {
    dataDir = await mkdtemp(path.join(tmpdir(), 'credits-test-pg-'));
    await chmod(dataDir, 0o755); // as root, the server runs as the `postgres` user and must reach its data
    const server = await startLocalPostgres({ dataDir: path.join(dataDir, 'data'), ephemeral: true });
    serverUrl = server.url;
    stopServer = () => server.stop();
  }
  const templateDatabase = `credits_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${templateDatabase}`);
  await admin.query(`CREATE DATABASE ${templateDatabase}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${templateDatabase}`;
  const db = createDb(url.toString(), { max: 1 });
  await migrateToLatest(db);
  await db.destroy();

  project.provide('postgresServerUrl', serverUrl);
  project.provide('templateDatabase', templateDatabase);

  return async () => {
    await stopServer();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  };
}
