import { readFileSync } from 'node:fs';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { StatefulStack } from '../infra/stateful-stack.js';
import { StatelessStack } from '../infra/stateless-stack.js';
import { parseRetrySeconds } from '../shared/config.js';
import { parsePlans } from '../shared/plan-catalog.js';

/**
 * The CDK app: `npm run synth` offline, `npx cdk deploy --all -c adminPrincipals=...` to deploy. Context
 * values: see README.
 */
export function createApp(app = new App({ outdir: process.env.CDK_OUTDIR ?? 'cdk.out' })) {
  const context = (key: string) => {
    const value = app.node.tryGetContext(key);
    if (value === undefined || value === '')
      throw new Error(`missing CDK context value "${key}" (cdk.json or -c ${key}=...)`);
    return value as string;
  };
  const list = (key: string) =>
    String(context(key))
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const env = { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION };
  const prefix = String(app.node.tryGetContext('stackPrefix') ?? 'Credits');

  const stateful = new StatefulStack(app, `${prefix}Stateful`, {
    env,
    multiAz: app.node.tryGetContext('multiAz') === true || app.node.tryGetContext('multiAz') === 'true',
  });
  const stateless = new StatelessStack(app, `${prefix}Stateless`, {
    env,
    stateful,
    jwtIssuer: context('jwtIssuer'),
    jwtAudience: list('jwtAudience'),
    corsOrigins: list('corsOrigins'),
    checkoutSuccessUrl: context('checkoutSuccessUrl'),
    checkoutCancelUrl: context('checkoutCancelUrl'),
    adminPrincipals: list('adminPrincipals'),
    alarmEmail: app.node.tryGetContext('alarmEmail') || undefined,
    creditPackages: app.node.tryGetContext('creditPackages') || undefined,
    plans: plansContext(app.node.tryGetContext('plans')),
    ...optionalSettings(app),
    stripeLivemode:
      app.node.tryGetContext('stripeLivemode') === true ||
      app.node.tryGetContext('stripeLivemode') === 'true',
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stateful, stateless };
}

/**
 * The `plans` context (a JSON array in cdk.json, or its text with -c plans='[...]') as the PLANS the
 * functions read, checked here so a bad plan stops the synth with the field named, not a cold start.
 */
function plansContext(value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined;
  const json = typeof value === 'string' ? value : JSON.stringify(value);
  parsePlans(json);
  return json;
}

/**
 * The optional settings of the api and the dispatcher, from context (`-c key=value` or cdk.json), checked at
 * least as strictly as their functions check them at cold start (the threshold as plain digits; the schedule by
 * the functions' own parseRetrySeconds), so a bad value stops the synth with the key named:
 * `adminApprovalThreshold` (ADMIN_APPROVAL_THRESHOLD), `allowPromotionCodes` (ALLOW_PROMOTION_CODES) and
 * `webhookRetrySeconds` (WEBHOOK_RETRY_SECONDS).
 */
function optionalSettings(app: App) {
  const given = (key: string) => {
    const value: unknown = app.node.tryGetContext(key);
    return value === undefined || value === '' ? undefined : String(value);
  };
  const threshold = given('adminApprovalThreshold');
  if (threshold !== undefined && !/^\d+$/.test(threshold))
    throw new Error(
      `adminApprovalThreshold: expected a whole number of credits >= 0, got ${JSON.stringify(threshold)}`,
    );
  const promotionCodes = given('allowPromotionCodes');
  if (promotionCodes !== undefined && promotionCodes !== 'true' && promotionCodes !== 'false')
    throw new Error(`allowPromotionCodes: expected true or false, got ${JSON.stringify(promotionCodes)}`);
  const retrySeconds = given('webhookRetrySeconds');
  if (retrySeconds !== undefined) parseRetrySeconds(retrySeconds);
  return {
    ...(threshold !== undefined && { adminApprovalThreshold: Number(threshold) }),
    ...(promotionCodes !== undefined && { allowPromotionCodes: promotionCodes === 'true' }),
    ...(retrySeconds !== undefined && { webhookRetrySeconds: retrySeconds }),
  };
}

/**
 * Stands in for `adminPrincipals` in the offline check (`npm run synth`), which deploys nothing: an account
 * that is AWS's documentation example, so no real caller matches it. Deploys go through the CDK CLI, which
 * never gets it: there the context is required.
 */
export const OFFLINE_ADMIN_PRINCIPALS = 'arn:aws:iam::123456789012:role/credits-admin-example';

if (import.meta.url === `file://${process.argv[1]}`) {
  // Under the CDK CLI the context comes from it; run directly (npm run synth), read cdk.json's.
  const context = process.env.CDK_CONTEXT_JSON
    ? undefined
    : { adminPrincipals: OFFLINE_ADMIN_PRINCIPALS, ...JSON.parse(readFileSync('cdk.json', 'utf8')).context };
  createApp(new App({ outdir: process.env.CDK_OUTDIR ?? 'cdk.out', context })).app.synth();
}
