import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { runAdmin } from '../../local/admin-cli.js';
import { signRequest } from '../../local/auth.js';
import { type LocalStack, type LocalStackOptions, startLocalStack } from '../../local/stack.js';
import { createTestDatabase } from './database.js';

/**
 * Stack options a test may set: `adminApprovalThreshold` for four-eyes grants, `sweepIntervalSeconds` to see
 * expiries, `allowPromotionCodes` (ALLOW_PROMOTION_CODES), `plans` (PLANS).
 */
export type StackTestOptions = Pick<
  LocalStackOptions,
  'adminApprovalThreshold' | 'sweepIntervalSeconds' | 'allowPromotionCodes' | 'plans'
>;

/** The whole local stack on free ports, on a test database of its own; stopped after the file. */
export async function startStackForTest(options: StackTestOptions = {}) {
  const { db, url: databaseUrl, ownerUrl } = await createTestDatabase({ max: 4 });
  const dataDir = mkdtempSync(path.join(tmpdir(), 'credits-stack-'));
  const stack = await startLocalStack({
    dataDir,
    port: 0,
    databaseUrl: ownerUrl,
    appDatabaseUrl: databaseUrl,
    stripeEmulatorPort: 0,
    visibilityTimeoutSeconds: 0.2,
    webhookRetryBaseMs: 20,
    ...options,
  });
  afterAll(async () => {
    await stack.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { stack, db, dataDir, databaseUrl, ...clients(stack, dataDir) };
}

function clients(stack: LocalStack, dataDir: string) {
  /** A user's call with a token from the local issuer. */
  async function asUser(userId: string, method: string, path: string, body?: unknown) {
    const token = await stack.auth.issueToken(userId);
    const response = await fetch(`${stack.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined && { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }
  /** A SigV4-signed call as a local IAM principal. */
  async function signed(
    principal: 'service' | 'admin',
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) {
    const url = new URL(path, stack.url);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const signedHeaders = await signRequest(
      url,
      {
        method,
        body: payload,
        headers: { ...headers, ...(payload && { 'content-type': 'application/json' }) },
      },
      stack.auth.principal(principal),
    );
    const response = await fetch(url, { method, headers: signedHeaders, body: payload });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }
  /**
   * `npm run admin -- ...` against this stack, found as the CLI finds it (DATA_DIR/stack.json); returns the
   * exit code, the parsed JSON it printed and its messages.
   */
  async function admin(...argv: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runAdmin(
      argv,
      { out: (t) => out.push(t), err: (t) => err.push(t) },
      { DATA_DIR: dataDir },
    );
    return { code, json: out.length ? JSON.parse(out.join('\n')) : undefined, stderr: err.join('\n') };
  }
  return { asUser, signed, admin };
}
