import { MetricUnit } from '@aws-lambda-powertools/metrics';
import type { Kysely } from 'kysely';
import type Stripe from 'stripe';
import { loadSweeperConfig, loadWebhookConfig } from '../shared/config.js';
import { createDb } from '../shared/db/client.js';
import type { Database } from '../shared/db/schema.js';
import { notifyExpiringGrants } from '../shared/grants/grants.js';
import { expireDueHolds } from '../shared/holds/holds.js';
import { type SweepResult, sweepExpiredGrants } from '../shared/ledger/sweep.js';
import { METRICS } from '../shared/metrics.js';
import { coldStart, createObservability, wrapHandler } from '../shared/observability.js';
import type { CreditPackage } from '../shared/packages.js';
import { DEFAULT_CATALOG, type PlanCatalog } from '../shared/plan-catalog.js';
import { grantDueAllowances } from '../shared/plans/plans.js';
import { lazyStripe } from '../shared/stripe/api-client.js';
import { chargeUnchargedTopUps, startMissedTopUps } from '../shared/topup/topup.js';
import { flushWebhooks, pruneWebhookHistory } from '../shared/webhooks/outbox.js';
import type { DeliveryQueue } from '../shared/webhooks/queue.js';
import { awsWebhookRuntime } from '../shared/webhooks/runtime.js';

export interface SweeperDependencies {
  readonly db: Kysely<Database>;
  /** @default the system clock */
  readonly clock?: () => Date;
  /** How long one sweep may run before it leaves the rest to the next. @default 40 s (the function has 50) */
  readonly budgetMs?: number;
  /** The plans, for the month's allowances granted ahead. @default one plan with none */
  readonly plans?: PlanCatalog;
  /** The webhook dispatcher's queue: the sweeper sends the outbox and the deliveries due. @default none */
  readonly webhookQueue?: DeliveryQueue;
  /** Stripe, to charge auto top-ups a crash left uncharged. @default none: they wait for a sweeper with it */
  readonly stripe?: () => Promise<Stripe>;
  /** The packs on sale, for auto top-ups a crash left unstarted (`startMissedTopUps`). @default none started */
  readonly packages?: readonly CreditPackage[];
}

/**
 * The sweeper, every minute from EventBridge Scheduler (locally every SWEEP_INTERVAL_SECONDS): marks holds
 * past their expiry expired and writes off expired grants' remainders as `grant_expiry` entries. Reads and
 * debits already treat both as expired; the sweeper makes idle accounts' rows and entries catch up. It
 * grants each month's allowances ahead (a debit or a read grants one the sweeper has not reached yet), and is
 * the webhook outbox's safety net: events a crash left unsent, and deliveries whose wait outlasted SQS's delay;
 * and auto top-up's: top-ups a crash after a debit's commit left unstarted, and ones left uncharged for a minute.
 */
export function createSweeper(deps: SweeperDependencies) {
  const obs = createObservability('sweeper');
  const { logger, metrics } = obs;

  async function sendWebhooks(now: Date): Promise<number> {
    if (!deps.webhookQueue) return 0;
    try {
      const { sent } = await flushWebhooks(deps.db, deps.webhookQueue, now);
      metrics.addMetric(METRICS.webhookOutboxSent, MetricUnit.Count, sent);
      return sent;
    } catch (error: unknown) {
      // Left in the database: the next sweep sends it.
      logger.error('webhook outbox not sent', { error: error as Error });
      return 0;
    }
  }

  /** Charges top-ups left uncharged (same idempotency key: never twice); their events go out below. */
  async function chargeTopUps(now: Date): Promise<number> {
    if (!deps.stripe) return 0;
    try {
      // A debit whose top-up check a crash skipped: started here, charged by the next sweep (after the grace).
      const started = await startMissedTopUps(deps.db, deps.packages ?? [], now);
      if (started.length > 0) logger.info('auto top-ups a crash left unstarted, started', { started });
      const outcomes = await chargeUnchargedTopUps(deps.db, await deps.stripe(), now);
      if (outcomes.length > 0) {
        logger.info('uncharged auto top-ups charged', {
          outcomes: outcomes.map((o) => ({
            paymentId: 'paymentId' in o ? o.paymentId : null,
            outcome: o.outcome,
          })),
        });
      }
      return outcomes.length;
    } catch (error: unknown) {
      // Still INIT without a PaymentIntent: the next sweep tries again, with the same key.
      logger.error('uncharged auto top-ups not charged', { error: error as Error });
      return 0;
    }
  }

  async function sweep(): Promise<
    SweepResult & {
      expiredHolds: number;
      allowancesGranted: number;
      expiringNotified: number;
      webhookEventsPruned: number;
      topUpsCharged: number;
      webhooksSent: number;
    }
  > {
    const now = deps.clock?.() ?? new Date();
    const budgetMs = deps.budgetMs ?? 40_000;
    const started = Date.now();
    const expiredHolds = await expireDueHolds(deps.db, now);
    const result = await sweepExpiredGrants(deps.db, now, { budgetMs });
    const allowances = await grantDueAllowances(deps.db, deps.plans ?? DEFAULT_CATALOG, now, {
      budgetMs: Math.max(budgetMs - (Date.now() - started), 0),
    });
    const expiringNotified = await notifyExpiringGrants(deps.db, now);
    const webhookEventsPruned = await pruneWebhookHistory(deps.db, now);
    metrics.addMetric(METRICS.holdsExpired, MetricUnit.Count, expiredHolds);
    metrics.addMetric(METRICS.grantsExpired, MetricUnit.Count, result.expiredGrants);
    metrics.addMetric(METRICS.allowancesGranted, MetricUnit.Count, allowances.granted);
    const unfinished = result.unfinished || allowances.unfinished;
    const summary = {
      ...result,
      unfinished,
      expiredHolds,
      allowancesGranted: allowances.granted,
      expiringNotified,
      webhookEventsPruned,
    };
    if (
      expiredHolds > 0 ||
      result.expiredGrants > 0 ||
      allowances.granted > 0 ||
      expiringNotified > 0 ||
      webhookEventsPruned > 0 ||
      unfinished
    ) {
      logger.info(
        'expired holds and grants written off, allowances granted, expiring grants notified',
        summary,
      );
    }
    const topUpsCharged = await chargeTopUps(now);
    return { ...summary, topUpsCharged, webhooksSent: await sendWebhooks(now) };
  }

  return wrapHandler(obs, sweep);
}

/** The Lambda entry point. */
export const handler = coldStart(() => {
  const config = loadSweeperConfig();
  return createSweeper({
    db: createDb(config.database, { max: config.poolMax, applicationName: 'sweeper' }),
    plans: config.plans,
    packages: config.packages,
    ...(process.env.WEBHOOK_QUEUE_URL && { webhookQueue: awsWebhookRuntime(loadWebhookConfig()).queue }),
    // Set by bindStripeSecret (infra): the sweeper charges auto top-ups a crash left uncharged.
    ...(process.env.STRIPE_SECRET_NAME && {
      stripe: lazyStripe({ secretName: process.env.STRIPE_SECRET_NAME }),
    }),
  });
});
