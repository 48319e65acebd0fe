import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import pg from 'pg';
import { LocalAuth, type LocalPrincipal, signRequest } from '../auth.js';
import { connect, expectSameRowsWritten, replayWithPg } from './captured-transaction.js';
import { captureSpend } from './debit.js';
import { type BenchContext, latency, load } from './harness.js';

/** `npm start` (bin/start.ts) in a child process on free ports; resolves once it prints its URL. */
async function startStackProcess(databaseUrl: string, dataDir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/start.ts'], {
    env: {
      ...process.env,
      PORT: '0',
      STRIPE_EMULATOR_PORT: '0',
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      // One plan with no rate limit or caps: the sample plans' 120 spends a minute would refuse the load.
      PLANS: JSON.stringify([{ id: 'bench', name: 'Bench' }]),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /HTTP API\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`npm start exited with ${code}: ${out}`)));
  });
  return {
    url,
    auth: await LocalAuth.load(dataDir),
    async stop() {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** A SigV4-signed JSON POST to the stack; throws unless it answers `status`. */
async function postSigned(
  url: URL,
  body: unknown,
  principal: LocalPrincipal,
  status: number,
  headers: Record<string, string> = {},
): Promise<void> {
  const text = JSON.stringify(body);
  const signed = await signRequest(
    url,
    { method: 'POST', body: text, headers: { 'content-type': 'application/json', ...headers } },
    principal,
  );
  const response = await fetch(url, { method: 'POST', headers: signed, body: text });
  if (response.status !== status)
    throw new Error(`${url.pathname} answered ${response.status}: ${await response.text()}`);
  await response.arrayBuffer();
}

/**
 * Spends at 1, 16 and 64 clients and balance reads at 16 against `npm start`, beside the router's own
 * spend statements (captured) replayed through raw `pg`, and a raw SELECT.
 */
export async function benchHttp({ databaseUrl, scratch, scale, report }: BenchContext): Promise<void> {
  console.error(
    'HTTP: spend at 1, 16 and 64 clients, balance reads at 16, against npm start in its own process',
  );
  // The stack in its own process, as `npm start` runs it: the load generator must not share its event loop.
  const stack = await startStackProcess(databaseUrl, path.join(scratch, 'stack'));
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  try {
    const users = Array.from({ length: 64 }, (_, i) => `bench-user-${i}`);
    // Funded as an operator would: an admin adjustment creates each account.
    const admin = stack.auth.principal('admin');
    for (const user of users) {
      const url = new URL(`/v1/admin/accounts/${user}/adjustments`, stack.url);
      await postSigned(url, { amount: 100_000_000, reason: 'bench' }, admin, 201);
    }
    // The raw baseline: the router's own spend, captured from its query log (see debit.ts).
    const spend = await captureSpend(databaseUrl, users[0]!, users[1]!);
    const check = await connect(databaseUrl);
    try {
      const item = { userId: users[2]!, key: `check-${randomUUID()}` };
      await replayWithPg(check, spend, item);
      await expectSameRowsWritten(check, spend, item, 'raw pg');
    } finally {
      await check.end();
    }
    const service = stack.auth.principal('service');
    const run = randomUUID().slice(0, 8);
    for (const clients of [1, 16, 64]) {
      const ours = await load(clients, scale.seconds, async (client, i) => {
        const url = new URL(`/v1/accounts/${users[client % users.length]}/spend`, stack.url);
        await postSigned(url, { amount: 1 }, service, 200, {
          'idempotency-key': `http-${run}-${clients}-${i}`,
        });
      });
      const raw = await load(clients, scale.seconds, async (client, i) => {
        const connection = await pool.connect();
        try {
          await replayWithPg(connection, spend, {
            userId: users[client % users.length]!,
            key: `raw-${run}-${clients}-${i}`,
          });
        } finally {
          connection.release();
        }
      });
      const target = clients === 16 ? { target: 'p99 < 25 ms', met: ours.p99 < 25 } : {};
      report({
        name: `spend over HTTP, ${clients} client${clients > 1 ? 's' : ''}`,
        ours: latency(ours),
        baseline: `raw SQL ${latency(raw)}`,
        ratio: ours.perSecond / raw.perSecond,
        ...target,
        figures: { ...ours, rawPerSecond: raw.perSecond, rawP50: raw.p50, rawP95: raw.p95, rawP99: raw.p99 },
      });
    }
    const tokens = await Promise.all(users.map((u) => stack.auth.issueToken(u)));
    const ours = await load(16, scale.seconds, async (client) => {
      const response = await fetch(`${stack.url}/v1/me/credits`, {
        headers: { authorization: `Bearer ${tokens[client % tokens.length]}` },
      });
      if (response.status !== 200) throw new Error(`balance answered ${response.status}`);
      await response.arrayBuffer();
    });
    const raw = await load(16, scale.seconds, async (client) => {
      await pool.query('SELECT balance, status FROM accounts WHERE external_user_id = $1', [
        users[client % users.length],
      ]);
    });
    report({
      name: 'balance read over HTTP, 16 clients',
      ours: latency(ours),
      baseline: `raw SELECT ${latency(raw)}`,
      ratio: ours.perSecond / raw.perSecond,
      figures: { ...ours, rawPerSecond: raw.perSecond, rawP99: raw.p99 },
    });
  } finally {
    await pool.end();
    await stack.stop();
  }
}
