import { startStripeEmulator } from '../local/stripe-emulator/server.js';

/** `npm run stripe-emulator`: the Stripe emulator alone, on 127.0.0.1:${STRIPE_EMULATOR_PORT:-12111}. */
const port = Number(process.env.STRIPE_EMULATOR_PORT ?? 12111);
const running = await startStripeEmulator({
  port,
  webhookSecret: process.env.STRIPE_WEBHOOK_SECRET ?? 'whsec_local_emulator_secret',
  webhookEndpoint: process.env.STRIPE_WEBHOOK_URL,
  stateFile: process.env.STRIPE_EMULATOR_STATE_FILE,
});
console.log(`stripe emulator on ${running.url}`);
console.log(`  webhooks to ${running.webhooks.endpoint ?? '(none: set STRIPE_WEBHOOK_URL)'}`);
console.log(`  control API under ${running.url}/_emulator/`);
const stop = async () => {
  await running.close();
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
