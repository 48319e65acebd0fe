import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../local/postgres.js';
import { StackAlreadyRunningError, startLocalStack } from '../../local/stack.js';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';

// A stack on a free (so non-default) port; the CLI finds it through DATA_DIR/stack.json, never --endpoint.
// Grants above APPROVAL_THRESHOLD credits wait for a second admin.
const APPROVAL_THRESHOLD = 1000;
const { stack, db, dataDir, databaseUrl, admin, asUser } = await startStackForTest({
  adminApprovalThreshold: APPROVAL_THRESHOLD,
  plans: JSON.stringify([
    { id: 'free', name: 'Free', default: true },
    { id: 'pro', name: 'Pro', monthlyAllowance: 500, caps: { monthly: 20_000 } },
  ]),
});
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
    const unseen = await admin('adjust', 'cli-new-user', '-100', '--reason', 'correction');
    await admin('adjust', 'cli-low-user', '10', '--reason', 'setup');
    const result = await admin('adjust', 'cli-low-user', '-100', '--reason', 'correction');

    // A removal from a user never seen creates no account.
    expect(unseen.code).toBe(1);
    expect(unseen.stderr).toBe('adjust: HTTP 404 account_not_found: no account for user "cli-new-user"');
    expect(result.code).toBe(1);
    expect(result.json).toMatchObject({ status: 402, code: 'insufficient_credits' });
    expect(result.stderr).toBe('adjust: HTTP 402 insufficient_credits: balance 10 cannot cover 100 credits');
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
    await expectInvariantsHold(db);
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
    [
      ['grant', 'alice', '-5', '--reason', 'x'],
      'grant: <amount> must be a positive whole number of credits (to remove credits, use adjust), got -5',
    ],
    [['grant', 'alice', '5'], 'grant: --reason is required'],
    [
      ['grant', 'alice', '5', '--reason', 'x', '--category', 'free'],
      'grant: --category must be paid or promotional, got free',
    ],
    [
      ['grant', 'alice', '5', '--reason', 'x', '--expires-at', 'tomorrow'],
      'grant: --expires-at must be an ISO 8601 instant with its offset, e.g. 2027-01-31T23:59:59Z, got tomorrow',
    ],
    [
      ['grant', 'alice', '5', '--reason', 'x', '--expires-at', '2027-01-31T00:00:00'],
      'grant: --expires-at must be an ISO 8601 instant with its offset, e.g. 2027-01-31T23:59:59Z, got 2027-01-31T00:00:00',
    ],
    [
      ['grant', 'alice', '5', '--reason', 'x', '--expires-at', '2027-01-31T00:00Z', '--expires-in-days', '3'],
      'grant: give --expires-at or --expires-in-days, not both',
    ],
    [
      ['grant', 'alice', '5', '--reason', 'x', '--expires-in-days', '0'],
      'grant: --expires-in-days must be a whole number from 1 to 3,650, got 0',
    ],
    [['approvals', '--status', 'done'], 'approvals: --status must be pending, approved, rejected, got done'],
    [['approvals', 'bogus'], 'approvals: unknown action bogus (approve or reject)'],
    [
      ['approvals', 'approve', 'not-an-id', '--reason', 'x'],
      'approvals approve: <approvalId> must be an approval id (a UUID), got not-an-id',
    ],
    [['approvals', 'reject', '--reason', 'x'], 'approvals reject: <approvalId> is required'],
    [
      ['approvals', 'approve', '6f1c7a52-0d7e-4c1b-9a51-2b6f0e1d4c3a'],
      'approvals approve: --reason is required',
    ],
    [
      ['approvals', 'approve', '6f1c7a52-0d7e-4c1b-9a51-2b6f0e1d4c3a', '--reason', 'x', '--as', 'root'],
      '--as must be admin or second-admin, got root',
    ],
    [['coupons', 'bogus'], 'coupons: unknown action bogus (create or disable)'],
    [
      ['coupons', 'create', 'ab', '5', '--reason', 'x'],
      'coupons create: <CODE> must be 3-64 of A-Z, a-z, 0-9, _ and -, got ab',
    ],
    [
      ['coupons', 'create', 'WELCOME', '0', '--reason', 'x'],
      'coupons create: <credits> must be a positive whole number of credits, got 0',
    ],
    [['coupons', 'create', 'WELCOME', '5'], 'coupons create: --reason is required'],
    [['coupons', 'create', 'WELCOME', '--reason', 'x'], 'coupons create: <credits> is required'],
    [
      ['coupons', 'create', 'WELCOME', '5', '--reason', 'x', '--max-redemptions', '0'],
      'coupons create: --max-redemptions must be a whole number from 1 to 1,000,000,000, got 0',
    ],
    [
      ['coupons', 'create', 'WELCOME', '5', '--reason', 'x', '--redeem-by', 'friday'],
      'coupons create: --redeem-by must be an ISO 8601 instant with its offset, e.g. 2027-01-31T23:59:59Z, got friday',
    ],
    [
      ['coupons', 'create', 'WELCOME', '5', '--reason', 'x', '--plans', 'pro,,team'],
      'coupons create: --plans must be plan ids separated by commas, got pro,,team',
    ],
    [
      ['approvals', '--as', 'second-admin', '--endpoint', 'https://credits.example.com'],
      '--as chooses a local principal; against https://credits.example.com your AWS credentials sign (choose them with AWS_PROFILE)',
    ],
    [['coupons', 'disable', 'WELCOME'], 'coupons disable: --reason is required'],
    [
      ['deliveries', '--endpoint-id', 'nope'],
      'deliveries: --endpoint-id must be an endpoint id (a UUID), got nope',
    ],
    // --endpoint names the deployed stage here as for every command, never the endpoint to filter on.
    [
      ['deliveries', '--endpoint', 'https://credits.example.com', '--endpoint-id', 'nope'],
      'deliveries: --endpoint-id must be an endpoint id (a UUID), got nope',
    ],
    [
      ['coupons', 'disable', 'no spaces', '--reason', 'x'],
      'coupons disable: <CODE> must be 3-64 of A-Z, a-z, 0-9, _ and -, got no spaces',
    ],
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
    [
      ['grant', '--help'],
      /^usage: npm run -s admin -- grant <userId> <amount> --reason R \[--description D\] \[--category paid\|promotional\] \[--expires-at ISO\] \[--expires-in-days N\]\n/,
    ],
    [
      ['approvals', '--help'],
      /\nactions .*\n {2}approvals approve <approvalId> --reason R\n {2}approvals reject/,
    ],
    [
      ['approvals', 'approve', '--help'],
      /^usage: npm run -s admin -- approvals approve <approvalId> --reason R\n/,
    ],
    [
      ['help', 'coupons', 'create'],
      /^usage: npm run -s admin -- coupons create <CODE> <credits> --reason R /,
    ],
    [['coupons', 'disable', '-h'], /^usage: npm run -s admin -- coupons disable <CODE> --reason R\n/],
    [['grant', '--help'], /\n {2}--as P +local stack only: .*second-admin.*AWS credentials sign/],
  ])('prints help for %j on stdout, exit 0', async (argv, first) => {
    const out: string[] = [];
    const { runAdmin } = await import('../../local/admin-cli.js');
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
    await expectInvariantsHold(db);
  });

  it('freezes, unfreezes and anonymizes an account', async () => {
    await admin('adjust', 'cli-status-user', '10', '--reason', 'setup');

    const frozen = await admin('freeze', 'cli-status-user', '--reason', 'fraud check');
    const unfrozen = await admin('unfreeze', 'cli-status-user', '--reason', 'cleared');
    const anonymized = await admin('anonymize', 'cli-status-user', '--reason', 'GDPR request');

    expect([frozen.code, unfrozen.code, anonymized.code]).toEqual([0, 0, 0]);
    expect(frozen.json).toMatchObject({ status: 'frozen' });
    expect(unfrozen.json).toMatchObject({ status: 'active' });
    await expectInvariantsHold(db);
  });
});

const DAY_MS = 86_400_000;
const grantsOf = async (userId: string) =>
  (await asUser(userId, 'GET', '/v1/me/grants')).body.items as Array<Record<string, unknown>>;
const balanceOf = async (userId: string) => (await asUser(userId, 'GET', '/v1/me/credits')).body.balance;

describe('grants from the admin CLI', () => {
  it('grants paid credits that expire in N days, and promotional ones at an exact instant', async () => {
    const before = Date.now();
    const paid = await admin(
      'grant',
      'cli-lot-user',
      '300',
      '--reason',
      'ticket 51: service credit',
      '--category',
      'paid',
      '--expires-in-days',
      '30',
      '--description',
      'Service credit',
    );
    const after = Date.now();
    const promotional = await admin(
      'grant',
      'cli-lot-user',
      '200',
      '--reason=ticket 52',
      '--expires-at',
      '2099-06-30T12:00:00+02:00',
    );
    const grants = await grantsOf('cli-lot-user');

    expect(paid).toMatchObject({
      code: 0,
      stderr: '',
      json: { entry: { amount: 300, description: 'Service credit' } },
    });
    expect(promotional).toMatchObject({
      code: 0,
      stderr: '',
      json: { entry: { amount: 200, balanceAfter: 500 } },
    });
    // Burn order: soonest expiry first.
    expect(grants).toMatchObject([
      { category: 'paid', source: 'admin', amount: 300, remaining: 300 },
      {
        category: 'promotional',
        source: 'admin',
        amount: 200,
        remaining: 200,
        expiresAt: '2099-06-30T10:00:00.000Z',
      },
    ]);
    const expiresAt = Date.parse(grants[0]!.expiresAt as string);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 30 * DAY_MS);
    expect(expiresAt).toBeLessThanOrEqual(after + 30 * DAY_MS);
    await expectInvariantsHold(db);
  });

  it('passes the API refusal of a grant that would expire in the past on, exit 1', async () => {
    const result = await admin(
      'grant',
      'cli-past-user',
      '10',
      '--reason',
      'x',
      '--expires-at',
      '2020-01-01T00:00:00Z',
    );

    expect(result.code).toBe(1);
    expect(result.json).toMatchObject({ status: 400, code: 'validation_error' });
    expect(result.stderr).toMatch(/^grant: HTTP 400 validation_error/);
    expect(await grantsOf('cli-past-user')).toEqual([]);
  });

  it('holds a grant above the threshold for a second admin: not the requester, once, and never twice', async () => {
    const requested = await admin(
      'grant',
      'cli-four-eyes',
      '5000',
      '--reason',
      'ticket 60: enterprise trial',
    );
    const approvalId = requested.json?.approvalId as string;
    const balanceWhilePending = await balanceOf('cli-four-eyes');
    const pending = await admin('approvals');

    const bySelf = await admin('approvals', 'approve', approvalId, '--reason', 'looks fine');
    const bySecond = await admin(
      'approvals',
      'approve',
      approvalId,
      '--reason',
      'checked the contract',
      '--as',
      'second-admin',
    );
    const again = await admin(
      'approvals',
      'approve',
      approvalId,
      '--reason',
      'again',
      '--as',
      'second-admin',
    );
    const rejectedLate = await admin(
      'approvals',
      'reject',
      approvalId,
      '--reason',
      'too late',
      '--as',
      'second-admin',
    );
    const approved = await admin('approvals', '--status', 'approved');
    const history = await asUser('cli-four-eyes', 'GET', '/v1/me/transactions');

    expect(requested).toMatchObject({ code: 0, json: { approvalId: expect.any(String), status: 'pending' } });
    expect(requested.stderr).toBe(
      'grant: above the approval threshold, so nothing is granted yet: it waits for a second admin.\n' +
        `another admin approves it with: npm run -s admin -- approvals approve ${approvalId} --reason R --as second-admin`,
    );
    expect(balanceWhilePending).toBe(0);
    expect(pending.json.data).toContainEqual(
      expect.objectContaining({ id: approvalId, userId: 'cli-four-eyes', amount: 5000, status: 'pending' }),
    );
    expect(bySelf.code).toBe(1);
    expect(bySelf.json).toMatchObject({ status: 403, code: 'four_eyes_required' });
    expect(bySelf.stderr).toMatch(/^approvals approve: HTTP 403 four_eyes_required/);
    expect(bySecond).toMatchObject({
      code: 0,
      json: { approval: { id: approvalId, status: 'approved' }, entry: { amount: 5000, balanceAfter: 5000 } },
    });
    expect(bySecond.json.approval.decidedBy).not.toBe(bySecond.json.approval.requestedBy);
    expect(again).toMatchObject({ code: 0, json: { entry: { id: bySecond.json.entry.id } } });
    expect(rejectedLate).toMatchObject({ code: 1, json: { status: 409, code: 'approval_decided' } });
    expect(approved.json.data).toContainEqual(
      expect.objectContaining({ id: approvalId, status: 'approved' }),
    );
    expect(await balanceOf('cli-four-eyes')).toBe(5000);
    expect((history.body.data as unknown[]).length).toBe(1);
    await expectInvariantsHold(db);
  });

  it('writes nothing for a rejected grant, and grants at the threshold at once', async () => {
    const requested = await admin(
      'grant',
      'cli-rejected',
      String(APPROVAL_THRESHOLD + 1),
      '--reason',
      'typo?',
    );
    const rejected = await admin(
      'approvals',
      'reject',
      requested.json.approvalId,
      '--reason',
      'typo',
      '--as',
      'second-admin',
    );
    const atThreshold = await admin(
      'adjust',
      'cli-rejected',
      String(APPROVAL_THRESHOLD),
      '--reason',
      'the intended amount',
    );
    const unknown = await admin(
      'approvals',
      'approve',
      '6f1c7a52-0d7e-4c1b-9a51-2b6f0e1d4c3a',
      '--reason',
      'x',
      '--as',
      'second-admin',
    );

    expect(requested.json).toMatchObject({ status: 'pending' });
    expect(rejected).toMatchObject({ code: 0, json: { approval: { status: 'rejected' }, entry: null } });
    expect(atThreshold).toMatchObject({
      code: 0,
      stderr: '',
      json: { entry: { amount: APPROVAL_THRESHOLD } },
    });
    expect(await balanceOf('cli-rejected')).toBe(APPROVAL_THRESHOLD);
    expect(unknown).toMatchObject({ code: 1, json: { status: 404 } });
    await expectInvariantsHold(db);
  });
});

describe('coupons from the admin CLI', () => {
  it('imports a draft price book from genai-prices, creates one from a file, activates it, lists and shows them', async () => {
    const imported = await admin(
      'prices',
      'import',
      '--version',
      'cli-import-1',
      '--credits-per-usd',
      '200',
      '--markup',
      '1.2',
      '--model',
      'openai/gpt-4o',
      '--reason',
      'new prices',
    );
    expect(imported).toMatchObject({ code: 0, json: { version: 'cli-import-1', status: 'draft' } });
    const shown = await admin('prices', 'show', 'cli-import-1');
    expect(shown.json.items).toEqual([
      expect.objectContaining({
        sku: 'openai/gpt-4o',
        kind: 'tokens',
        rates: expect.objectContaining({ input: '600' }),
      }),
    ]);
    const file = path.join(scratch, 'book.json');
    writeFileSync(
      file,
      JSON.stringify({
        version: 'cli-file-1',
        items: [{ sku: 'image.generate', kind: 'unit', unitCredits: '7' }],
      }),
    );
    expect((await admin('prices', 'create', file, '--reason', 'from a file')).code).toBe(0);
    expect(await admin('prices', 'activate', 'cli-file-1', '--reason', 'go live')).toMatchObject({ code: 0 });
    const listed = await admin('prices');
    expect(listed.json.data).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ version: 'cli-file-1', status: 'active' }),
        expect.objectContaining({ version: 'cli-import-1', status: 'draft' }),
      ]),
    );
    const again = await admin('prices', 'activate', 'cli-file-1', '--reason', 'twice');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/409/);
    const missing = await admin('prices', 'create', path.join(scratch, 'nope.json'), '--reason', 'x');
    expect(missing).toMatchObject({ code: 1 });
    expect(missing.stderr).toMatch(/cannot read .*nope\.json as JSON/);
    const usage = await admin(
      'prices',
      'import',
      '--version',
      'v',
      '--credits-per-usd',
      'ten',
      '--markup',
      '1',
      '--model',
      'x/y',
      '--reason',
      'r',
    );
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--credits-per-usd must be a positive decimal, got ten/);
    const nothing = await admin(
      'prices',
      'import',
      '--version',
      'v',
      '--credits-per-usd',
      '10',
      '--markup',
      '1',
      '--reason',
      'r',
    );
    expect(nothing.code).toBe(2);
    await expectInvariantsHold(db);
  });

  it('creates a coupon a user redeems once through the API, lists it with its count, and disables it', async () => {
    const created = await admin(
      'coupons',
      'create',
      'CLI-WELCOME',
      '250',
      '--reason',
      'spring campaign',
      '--expires-in-days',
      '14',
      '--max-redemptions',
      '100',
      '--redeem-by',
      '2099-01-01T00:00:00Z',
    );
    const before = Date.now();
    const redeemed = await asUser('cli-coupon-user', 'POST', '/v1/me/coupons/redeem', {
      code: 'cli-welcome',
    });
    const after = Date.now();
    const twice = await asUser('cli-coupon-user', 'POST', '/v1/me/coupons/redeem', { code: 'CLI-WELCOME' });
    const listed = await admin('coupons');
    const disabled = await admin('coupons', 'disable', 'CLI-WELCOME', '--reason', 'campaign over');
    const afterDisable = await asUser('cli-coupon-late', 'POST', '/v1/me/coupons/redeem', {
      code: 'CLI-WELCOME',
    });

    expect(created).toMatchObject({
      code: 0,
      stderr: '',
      json: {
        code: 'CLI-WELCOME',
        credits: 250,
        grantExpiresInDays: 14,
        maxRedemptions: 100,
        redeemBy: '2099-01-01T00:00:00.000Z',
        redemptions: 0,
        disabled: false,
      },
    });
    expect(redeemed).toMatchObject({ status: 201, body: { credits: 250 } });
    const expiresAt = Date.parse(redeemed.body.expiresAt as string);
    expect(expiresAt).toBeGreaterThanOrEqual(before - 1000 + 14 * DAY_MS);
    expect(expiresAt).toBeLessThanOrEqual(after + 14 * DAY_MS);
    expect(await grantsOf('cli-coupon-user')).toMatchObject([
      { category: 'promotional', source: 'coupon', amount: 250, remaining: 250 },
    ]);
    expect(twice).toMatchObject({ status: 409, body: { code: 'coupon_already_redeemed' } });
    expect(listed.json.data).toContainEqual(
      expect.objectContaining({ code: 'CLI-WELCOME', redemptions: 1, disabled: false }),
    );
    expect(disabled).toMatchObject({
      code: 0,
      json: { code: 'CLI-WELCOME', disabled: true, redemptions: 1 },
    });
    expect(afterDisable).toMatchObject({ status: 410, body: { code: 'coupon_disabled' } });
    expect(await balanceOf('cli-coupon-user')).toBe(250);
    await expectInvariantsHold(db);
  });

  it('creates a coupon for some plans only, and passes the refusals of the API on, exit 1', async () => {
    const created = await admin('coupons', 'create', 'CLI-PLANS', '10', '--reason', 'x', '--plans', 'pro');
    const duplicate = await admin('coupons', 'create', 'cli-plans', '10', '--reason', 'x');
    const unknown = await admin('coupons', 'disable', 'CLI-NOSUCH', '--reason', 'x');
    const noSuchPlan = await admin(
      'coupons',
      'create',
      'CLI-TEAM',
      '10',
      '--reason',
      'x',
      '--plans',
      'pro, team',
    );

    expect(created).toMatchObject({ code: 0, json: { plans: ['pro'], grantExpiresInDays: null } });
    expect(noSuchPlan).toMatchObject({ code: 1, json: { status: 400, field: 'plans' } });
    expect(noSuchPlan.stderr).toMatch(
      /^coupons create: HTTP 400 validation_error: plans: unknown plan "team"/,
    );
    expect(duplicate).toMatchObject({ code: 1, json: { status: 409, code: 'coupon_exists' } });
    expect(duplicate.stderr).toMatch(/^coupons create: HTTP 409 coupon_exists/);
    expect(unknown).toMatchObject({ code: 1, json: { status: 404 } });
    expect(unknown.stderr).toMatch(/^coupons disable: HTTP 404 /);
    await expectInvariantsHold(db);
  });

  it("moves an account to a plan, granting the month's allowance; an unknown plan is 404, exit 1", async () => {
    const moved = await admin('plan', 'cli-plan-user', 'pro', '--reason', 'upgrade');
    const again = await admin('plan', 'cli-plan-user', 'pro', '--reason', 'upgrade');
    const unknown = await admin('plan', 'cli-plan-user', 'gold', '--reason', 'x');
    const missing = await admin('plan', 'cli-plan-user', '--reason', 'x');

    expect(moved).toMatchObject({
      code: 0,
      json: { plan: { id: 'pro', name: 'Pro' }, previousPlan: { id: 'free' }, allowanceGranted: 500 },
    });
    expect(again).toMatchObject({ code: 0, json: { changed: false, allowanceGranted: 0 } });
    expect(unknown).toMatchObject({ code: 1, json: { status: 404, code: 'plan_not_found' } });
    expect(unknown.stderr).toMatch(/^plan: HTTP 404 plan_not_found: no plan "gold"; plans: free, pro/);
    expect(missing.code).toBe(2);
    const limits = await asUser('cli-plan-user', 'GET', '/v1/me/limits');
    expect(limits.body).toMatchObject({
      plan: { id: 'pro' },
      caps: [{ period: 'month', limit: 20_000, used: 0 }],
      allowance: { credits: 500 },
    });
    await expectInvariantsHold(db);
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
    expect(JSON.parse(refused.stdout)).toMatchObject({ code: 'account_not_found' });
    expect(refused.stderr.trim()).toBe(
      'adjust: HTTP 404 account_not_found: no account for user "cli-process-user"',
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
    await expectInvariantsHold(db);
  });

  it('holds a grant for a second admin and takes --as second-admin from argv, with no stack trace', async () => {
    const requested = await run('bin/admin.ts', ['grant', 'cli-process-grant', '2000', '--reason', 'trial'], {
      DATA_DIR: dataDir,
    });
    const { approvalId } = JSON.parse(requested.stdout) as { approvalId: string };
    const approved = await run(
      'bin/admin.ts',
      ['--as', 'second-admin', 'approvals', 'approve', approvalId, '--reason', 'checked'],
      { DATA_DIR: dataDir },
    );

    expect(requested.code).toBe(0);
    expect(requested.stderr).toContain('it waits for a second admin');
    expect(approved.code).toBe(0);
    expect(JSON.parse(approved.stdout)).toMatchObject({
      approval: { status: 'approved' },
      entry: { amount: 2000 },
    });
    expect(approved.stderr).toBe('');
    expect(await balanceOf('cli-process-grant')).toBe(2000);
    noTrace(requested.stderr);
    await expectInvariantsHold(db);
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

  it('npm run token mints for any subject the API takes, and refuses one it does not', async () => {
    const subject = 'auth0|user:42';
    const minted = await run('bin/token.ts', [subject], { DATA_DIR: dataDir });
    const credits = await fetch(`${stack.url}/v1/me/credits`, {
      headers: { authorization: `Bearer ${minted.stdout.trim()}` },
    });
    expect(minted.code).toBe(0);
    expect(credits.status).toBe(200);
    expect(await credits.json()).toMatchObject({ userId: subject });

    const tooLong = await run('bin/token.ts', ['x'.repeat(256)], { DATA_DIR: dataDir });
    expect(tooLong.code).toBe(2);
    expect(tooLong.stderr).toContain('1-255 characters');
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
