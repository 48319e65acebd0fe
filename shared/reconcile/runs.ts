import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/schema.js';
import { ServiceError } from '../errors.js';

/** The only writer of `reconciliation_runs` and `reconciliation_findings`. */

const DAY_SECONDS = 24 * 60 * 60;
/** A run still `running` after this long died with its Lambda (15 minutes at most) and is closed as failed. */
const ABANDONED_AFTER = '1 hour';

export interface ReconcileWindow {
  readonly start: Date;
  readonly end: Date;
}

/**
 * The window a run covers: the last `windowHours` when given; otherwise the last 48 hours, or 30 days when
 * no run has succeeded yet.
 */
export async function resolveWindow(
  db: Kysely<Database>,
  now: Date,
  windowHours?: number,
): Promise<ReconcileWindow> {
  if (windowHours) return { start: new Date(now.getTime() - windowHours * 3_600_000), end: now };
  const previous = await db
    .selectFrom('reconciliation_runs')
    .select('id')
    .where('status', '=', 'succeeded')
    .limit(1)
    .executeTakeFirst();
  const seconds = previous ? 48 * 3600 : 30 * DAY_SECONDS;
  return { start: new Date(now.getTime() - seconds * 1000), end: now };
}

/**
 * Opens a run (status running). Only one run at a time: a unique index refuses a second, answered 409.
 * A run left running by a dead invocation is closed as failed first.
 */
export async function createRun(
  db: Kysely<Database>,
  trigger: 'schedule' | 'admin',
  window: ReconcileWindow,
): Promise<string> {
  if (!(window.start < window.end))
    throw new ServiceError('validation_error', 'window start must precede its end');
  await db
    .updateTable('reconciliation_runs')
    .set({ status: 'failed', error: 'abandoned: the invocation running it ended', finished_at: sql`now()` })
    .where('status', '=', 'running')
    .where('started_at', '<', sql<Date>`now() - ${ABANDONED_AFTER}::interval`)
    .execute();
  try {
    const run = await db
      .insertInto('reconciliation_runs')
      .values({ trigger, window_start: window.start, window_end: window.end, counts: '{}' })
      .returning('id')
      .executeTakeFirstOrThrow();
    return run.id;
  } catch (error: unknown) {
    if ((error as { code?: string }).code === '23505') {
      throw new ServiceError('reconciliation_running', 'a reconciliation run is already in progress');
    }
    throw error;
  }
}

/** What reconciliation could not heal, or noticed, about one object. */
export interface Finding {
  readonly kind: string;
  readonly stripeObjectId?: string | null;
  readonly paymentId?: string | null;
  readonly accountId?: string | null;
  readonly details?: Record<string, unknown>;
}

export async function recordFinding(db: Kysely<Database>, runId: string, finding: Finding): Promise<void> {
  await db
    .insertInto('reconciliation_findings')
    .values({
      run_id: runId,
      kind: finding.kind,
      stripe_object_id: finding.stripeObjectId ?? null,
      payment_id: finding.paymentId ?? null,
      account_id: finding.accountId ?? null,
      details: JSON.stringify(finding.details ?? {}),
    })
    .execute();
}

/** Closes a run with its outcome. */
export async function finishRun(
  db: Kysely<Database>,
  runId: string,
  outcome: {
    readonly status: 'succeeded' | 'partial' | 'failed';
    readonly counts: object;
    readonly healed: number;
    readonly findings: number;
    readonly error: string | null;
  },
): Promise<void> {
  await db
    .updateTable('reconciliation_runs')
    .set({
      status: outcome.status,
      counts: JSON.stringify(outcome.counts),
      healed: outcome.healed,
      findings: outcome.findings,
      error: outcome.error,
      finished_at: sql`now()`,
    })
    .where('id', '=', runId)
    .execute();
}

export function findRun(db: Kysely<Database>, runId: string) {
  return db.selectFrom('reconciliation_runs').selectAll().where('id', '=', runId).executeTakeFirst();
}

/** The latest runs, newest first. */
export function listRuns(db: Kysely<Database>, limit: number) {
  return db
    .selectFrom('reconciliation_runs')
    .selectAll()
    .orderBy('started_at', 'desc')
    .limit(limit)
    .execute();
}

/** A run's findings, in the order they were found. */
export function listFindings(db: Kysely<Database>, runId: string, limit: number) {
  return db
    .selectFrom('reconciliation_findings')
    .selectAll()
    .where('run_id', '=', runId)
    .orderBy('id')
    .limit(limit)
    .execute();
}
