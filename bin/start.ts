import { readFileSync } from 'node:fs';
import { StackAlreadyRunningError, StackStartError, startLocalStack } from '../local/stack.js';
import { parseRetrySeconds } from '../shared/config.js';

/** `npm start`: the whole system on this machine. Ctrl-C stops everything. */
process.env.POWERTOOLS_LOG_LEVEL ??= 'WARN';
process.env.POWERTOOLS_METRICS_DISABLED ??= 'true';
process.env.POWERTOOLS_TRACE_ENABLED ??= 'false';
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= '1';

const dataDir = process.env.DATA_DIR || '.data';

/** A whole-number variable, or undefined when unset; anything else stops the start with its name. */
function wholeNumber(name: string, min: number): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    console.error(
      `npm start: ${name} must be a whole number of at least ${min} (got ${JSON.stringify(text)})`,
    );
    process.exit(2);
  }
  return value;
}
/** WEBHOOK_RETRY_SECONDS, or undefined when unset; anything invalid stops the start with its name. */
function retrySchedule(): number[] | undefined {
  const text = process.env.WEBHOOK_RETRY_SECONDS;
  if (text === undefined || text === '') return undefined;
  try {
    return parseRetrySeconds(text);
  } catch (error: unknown) {
    console.error(`npm start: ${(error as Error).message.replace('invalid configuration: ', '')}`);
    process.exit(2);
  }
}
const promotionCodes = process.env.ALLOW_PROMOTION_CODES ?? 'false';
if (promotionCodes !== 'true' && promotionCodes !== 'false') {
  console.error(
    `npm start: ALLOW_PROMOTION_CODES must be true or false (got ${JSON.stringify(promotionCodes)})`,
  );
  process.exit(2);
}

// PLANS, or the sample plans (a free plan with a monthly allowance, caps and a rate limit, and a pro plan).
const plans =
  process.env.PLANS || readFileSync(new URL('../local/sample-plans.json', import.meta.url), 'utf8');

const stack = await startLocalStack({
  dataDir,
  port: Number(process.env.PORT || 3000),
  databaseUrl: process.env.DATABASE_URL,
  stripeEmulatorPort: Number(process.env.STRIPE_EMULATOR_PORT || 12111),
  stripeSecretKey: process.env.STRIPE_SECRET_KEY,
  stripeWebhookSecret: process.env.STRIPE_WEBHOOK_SECRET,
  creditPackages: process.env.CREDIT_PACKAGES,
  adminApprovalThreshold: wholeNumber('ADMIN_APPROVAL_THRESHOLD', 0),
  allowPromotionCodes: promotionCodes === 'true',
  sweepIntervalSeconds: wholeNumber('SWEEP_INTERVAL_SECONDS', 1),
  webhookRetrySeconds: retrySchedule(),
  plans,
}).catch((error: unknown) => {
  if (!(error instanceof StackAlreadyRunningError || error instanceof StackStartError)) throw error;
  console.error(`npm start: ${error.message}`);
  process.exit(1);
});

// The CLIs find this stack through DATA_DIR/stack.json, so only a non-default DATA_DIR needs repeating.
const quote = (text: string) => (/^[\w./@%+=:,-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`);
const env = dataDir === '.data' ? '' : `DATA_DIR=${quote(dataDir)} `;

console.log(`
Credits service running locally (Node ${process.version})
  demo page         ${stack.url}/
  HTTP API          ${stack.url}  (OpenAPI: ${stack.url}/openapi.json)
  Stripe            ${stack.stripeUrl ?? 'real Stripe (STRIPE_SECRET_KEY)'}${stack.stripeUrl ? `  (control: ${stack.stripeUrl}/_emulator/webhooks)` : ''}
  Postgres          ${stack.databaseUrl.replace(/:[^:@/]+@/, ':***@')}
  Plans             ${process.env.PLANS ? 'PLANS' : 'local/sample-plans.json (set PLANS to change)'}

Try:
  TOKEN=$(${env}npm run -s token -- alice)
  curl -s -H "authorization: Bearer $TOKEN" ${stack.url}/v1/me/credits
  ${env}npm run -s admin -- adjust alice 500 --reason "welcome bonus" --description "Welcome bonus"
  ${env}npm run -s admin -- account alice
  ${env}npm run -s admin -- plan alice pro --reason "upgrade"
  ${env}npm run -s admin -- reconcile
  ${env}npm run -s admin -- help

Ctrl-C stops everything.`);

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  console.log('\nstopping…');
  await stack.stop();
  process.exit(0);
};
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
