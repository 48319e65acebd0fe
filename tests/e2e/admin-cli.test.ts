import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../local/postgres.js';
import { StackAlreadyRunningError, startLocalStack } from '../../local/stack.js';
import { startStackForTest } from '../support/local-stack.js';

// A stack on a free (so non-default) port; the CLI finds it through DATA_DIR/stack.json, never --endpoint.
const { stack, dataDir, databaseUrl, admin, asUser } = await startStackForTest();
const root = path.resolve(import.meta.dirname, '../..');
const scratch = mkdtempSync(path.join(tmpdir(), 'credits-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one of bin/ as `npm run` does (tsx, this Node), as its own process. */
function run(script: string, args: string[], env: NodeJS.ProcessEnv, closeStdout = false) {
  return new Promise<Run>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, script), ...args], {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    });
    let stdout = '';
    let stderr = '';
    // A reader that went away before the first byte (as `| head -c1` does once it has its byte).
    if (closeStdout) child.stdout.destroy();
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const noTrace = (text: string) => expect(text).not.toMatch(/\n\s+at |ERR_|node:internal|Error:/);

describe('the admin CLI against a running stack', () => {
  it('removes credits with a negative amount and says clearly when the balance cannot cover it', async () => {
    const result = await admin('adjust', 'cli-new-user', '-100', '--reason', 'correction');

    expect(result.code).toBe(1);
    expect(result.json).toMatchObject({ status: 402, code: 'insufficient_credits' });
    expect(result.stderr).toBe('adjust: HTTP 402 insufficient_credits: balance 0 cannot cover 100 credits');
  });

  it('grants to an unseen user with a description the user sees, and the reason stays internal', async () => {
    const granted = await admin(
      'adjust',
      'cli-grant-user',
      '500',
      '--reason',
      'ticket 42: goodwill',
      '--description',
      'Welcome bonus',
    );
    const removed = await admin('adjust', 'cli-grant-user', '-100', '--reason=correction, ticket 43');
    const history = await asUser('cli-grant-user', 'GET', '/v1/me/transactions');

    expect(granted).toMatchObject({ code: 0, stderr: '' });
    expect(granted.json.entry).toMatchObject({ amount: 500, description: 'Welcome bonus' });
    expect(removed.json.entry).toMatchObject({ amount: -100, balanceAfter: 400, description: null });
    expect(JSON.stringify(history.body)).not.toContain('ticket');
  });

  it.each([
    [['adjust', 'alice', '-100', '--reason'], '--reason needs a value (R)'],
    [['adjust', 'alice', '100'], 'adjust: --reason is required'],
    [
      ['adjust', 'alice', '1.5', '--reason', 'x'],
      'adjust: <amount> must be a non-zero whole number of credits, got 1.5',
    ],
    [
      ['adjust', 'alice', '0', '--reason', 'x'],
      'adjust: <amount> must be a non-zero whole number of credits, got 0',
    ],
    [['adjust', 'alice'], 'adjust: <amount> is required'],
    [['freeze', 'alice'], 'freeze: --reason is required'],
    [['replay', '--reason', 'x'], 'replay: <eventId> is required'],
    [
      ['reconcile', '--window-hours', 'abc'],
      'reconcile: --window-hours must be a whole number from 1 to 2160, got abc',
    ],
    [
      ['reconcile', '--window-hours', '0'],
      'reconcile: --window-hours must be a whole number from 1 to 2160, got 0',
    ],
    [
      ['reconcile', '--window-hours', '2161'],
      'reconcile: --window-hours must be a whole number from 1 to 2160, got 2161',
    ],
    [['dlq', 'bogus'], 'dlq: unknown action bogus (only redrive)'],
    [['account', 'alice', 'bob'], 'account: unexpected argument bob'],
    [['account', 'alice', '--bogus'], 'unknown option --bogus'],
    [['account', 'alice', '-x'], 'unknown option -x'],
    [['bogus'], 'unknown command bogus'],
    [['help', 'bogus'], 'unknown command bogus'],
  ])('refuses %j with a usage line and exit 2', async (argv, message) => {
    const result = await admin(...argv);

    expect(result.code).toBe(2);
    expect(result.json).toBeUndefined();
    const [first, usage] = result.stderr.split('\n');
    expect(first).toBe(message);
    expect(usage).toMatch(/^usage: npm run -s admin -- /);
  });

  it.each([
    [['--help'], /^usage: npm run -s admin -- <command>/],
    [['help'], /^usage: npm run -s admin -- <command>/],
    [['help', 'reconcile'], /^usage: npm run -s admin -- reconcile \[--window-hours N\] \[--no-wait\]/],
    [
      ['adjust', '--help'],
      /^usage: npm run -s admin -- adjust <userId> <amount> --reason R \[--description D\]/,
    ],
    [['dlq', '-h'], /^usage: npm run -s admin -- dlq \[redrive\]/],
  ])('prints help for %j on stdout, exit 0', async (argv, first) => {
    const out: string[] = [];
    const { runAdmin } = await import('../../bin/admin.js');
    const code = await runAdmin(argv, { out: (t) => out.push(t), err: () => {} }, { DATA_DIR: dataDir });

    expect(code).toBe(0);
    expect(out.join('\n')).toMatch(first);
  });

  it('runs a reconciliation over a valid window, and the other read commands', async () => {
    const reconcile = await admin('reconcile', '--window-hours', '1');
    const runs = await admin('runs');
    const one = await admin('runs', reconcile.json.id);
    const others = await Promise.all([admin('parked'), admin('invariants'), admin('dlq')]);

    expect(reconcile).toMatchObject({ code: 0, json: { status: 'succeeded' } });
    expect(runs.code).toBe(0);
    expect(one.json).toMatchObject({ id: reconcile.json.id });
    expect(others.map((r) => r.code)).toEqual([0, 0, 0]);
    expect(others[2]!.json).toMatchObject({ messages: 0, sample: [] });
  });

  it('freezes, unfreezes and anonymizes an account', async () => {
    await admin('adjust', 'cli-status-user', '10', '--reason', 'setup');

    const frozen = await admin('freeze', 'cli-status-user', '--reason', 'fraud check');
    const unfrozen = await admin('unfreeze', 'cli-status-user', '--reason', 'cleared');
    const anonymized = await admin('anonymize', 'cli-status-user', '--reason', 'GDPR request');

    expect([frozen.code, unfrozen.code, anonymized.code]).toEqual([0, 0, 0]);
    expect(frozen.json).toMatchObject({ status: 'frozen' });
    expect(unfrozen.json).toMatchObject({ status: 'active' });
  });
});

describe('the admin CLI as a process', () => {
  it('passes the exit code and the messages through, with no stack trace', async () => {
    const [refused, usage, help] = await Promise.all([
      run('bin/admin.ts', ['adjust', 'cli-process-user', '-100', '--reason', 'x'], { DATA_DIR: dataDir }),
      run('bin/admin.ts', ['adjust', 'alice', '-100', '--reason'], { DATA_DIR: dataDir }),
      run('bin/admin.ts', ['--help'], { DATA_DIR: dataDir }),
    ]);

    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout)).toMatchObject({ code: 'insufficient_credits' });
    expect(refused.stderr.trim()).toBe(
      'adjust: HTTP 402 insufficient_credits: balance 0 cannot cover 100 credits',
    );
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^--reason needs a value \(R\)\nusage: /);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: /);
    for (const r of [refused, usage, help]) noTrace(r.stderr);
  });

  it('ends quietly when its reader goes away (| head -c1)', async () => {
    await admin('adjust', 'cli-pipe-user', '10', '--reason', 'setup');

    const result = await run('bin/admin.ts', ['account', 'cli-pipe-user'], { DATA_DIR: dataDir }, true);

    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
  });

  it('says the stack is not running when nothing answers, whether it never ran or left a stale record', async () => {
    const [port, stalePort] = [await freePort(), await freePort()];
    const neverStarted = path.join(scratch, 'never-started');
    const crashed = path.join(scratch, 'crashed');
    mkdirSync(crashed);
    writeFileSync(path.join(crashed, 'stack.json'), JSON.stringify({ url: `http://127.0.0.1:${stalePort}` }));

    const [unrecorded, stale] = await Promise.all([
      run('bin/admin.ts', ['account', 'alice'], { DATA_DIR: neverStarted, PORT: String(port) }),
      run('bin/admin.ts', ['invariants'], { DATA_DIR: crashed }),
    ]);

    expect(unrecorded.code).toBe(1);
    expect(unrecorded.stdout).toBe('');
    expect(unrecorded.stderr.trim()).toBe(
      `cannot reach http://127.0.0.1:${port}: is \`npm start\` running? (DATA_DIR=${neverStarted})`,
    );
    expect(stale.code).toBe(1);
    expect(stale.stderr.trim()).toBe(
      `cannot reach http://127.0.0.1:${stalePort}: is \`npm start\` running? (DATA_DIR=${crashed})`,
    );
    noTrace(unrecorded.stderr + stale.stderr);
  });

  it('npm run token refuses to mint with a DATA_DIR the stack never used', async () => {
    const emptyDir = path.join(scratch, 'no-key');

    const refused = await run('bin/token.ts', ['alice'], { DATA_DIR: emptyDir });
    const minted = await run('bin/token.ts', ['alice'], { DATA_DIR: dataDir });
    const credits = await fetch(`${stack.url}/v1/me/credits`, {
      headers: { authorization: `Bearer ${minted.stdout.trim()}` },
    });

    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim()).toBe(
      `token: no local issuer key in ${emptyDir}/local-auth.json: start the stack first (\`npm start\`) with the same DATA_DIR`,
    );
    expect(credits.status).toBe(200);
  });
});

describe('a second stack', () => {
  it('on the same DATA_DIR or the same port is told where the first one runs', async () => {
    const port = Number(new URL(stack.url).port);

    const sameDir = startLocalStack({ dataDir, port: 0, databaseUrl, stripeEmulatorPort: 0 });
    const samePort = startLocalStack({
      dataDir: path.join(scratch, 'other'),
      port,
      databaseUrl,
      stripeEmulatorPort: 0,
    });

    await expect(sameDir).rejects.toThrow(StackAlreadyRunningError);
    await expect(sameDir).rejects.toThrow(`already running at ${stack.url}`);
    await expect(samePort).rejects.toThrow(`already running at ${stack.url} (DATA_DIR ${dataDir})`);
  });

  it('npm start says "already running at" and exits 1, with no stack trace', async () => {
    const result = await run('bin/start.ts', [], { DATA_DIR: dataDir, PORT: '0', DATABASE_URL: databaseUrl });

    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toMatch(
      new RegExp(`^npm start: already running at ${stack.url} \\(process \\d+ uses DATA_DIR ${dataDir}\\)$`),
    );
    noTrace(result.stderr);
  });
});
