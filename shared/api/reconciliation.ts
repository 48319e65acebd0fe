import type { Kysely } from 'kysely';
import * as z from 'zod';
import type { Database } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import { createRun, defaultWindow } from '../reconcile/reconcile.js';
import { defineEndpoint, ok } from './endpoint.js';

const runSchema = z.object({
  id: z.string(),
  status: z.enum(['running', 'succeeded', 'partial', 'failed']),
  trigger: z.enum(['schedule', 'admin']),
  windowStart: z.string(),
  windowEnd: z.string(),
  counts: z.record(z.string(), z.number()),
  healed: z.number().int(),
  findings: z.number().int(),
  error: z.string().nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  durationMs: z.number().int().nullable(),
});

const findingSchema = z.object({
  id: z.number().int(),
  kind: z.string(),
  stripeObjectId: z.string().nullable(),
  paymentId: z.string().nullable(),
  accountId: z.string().nullable(),
  details: z.unknown(),
});

async function loadRun(db: Kysely<Database>, runId: string) {
  const run = await db
    .selectFrom('reconciliation_runs')
    .selectAll()
    .where('id', '=', runId)
    .executeTakeFirst();
  if (!run) throw new ServiceError('not_found', 404, `no reconciliation run ${runId}`);
  return {
    id: run.id,
    status: run.status,
    trigger: run.trigger,
    windowStart: run.window_start.toISOString(),
    windowEnd: run.window_end.toISOString(),
    counts: run.counts as Record<string, number>,
    healed: run.healed,
    findings: run.findings,
    error: run.error,
    startedAt: run.started_at.toISOString(),
    finishedAt: run.finished_at?.toISOString() ?? null,
    durationMs: run.finished_at ? run.finished_at.getTime() - run.started_at.getTime() : null,
  };
}

export const listRuns = defineEndpoint({
  route: 'GET /v1/admin/reconciliation/runs',
  summary: 'Reconciliation runs, newest first (last 50)',
  responses: { 200: { description: 'runs', schema: z.object({ data: z.array(runSchema) }) } },
  errors: { 401: 'no IAM identity', 403: 'not an IAM caller' },
  async handle(_request, { db }) {
    const ids = await db
      .selectFrom('reconciliation_runs')
      .select('id')
      .orderBy('started_at', 'desc')
      .limit(50)
      .execute();
    return ok({ data: await Promise.all(ids.map((r) => loadRun(db, r.id))) });
  },
});

export const startRun = defineEndpoint({
  route: 'POST /v1/admin/reconciliation/runs',
  summary:
    'Starts a reconciliation run now (default window: the last 48 hours; 30 days before the first success)',
  body: z
    .object({
      windowHours: z
        .number()
        .int()
        .min(1)
        .max(24 * 90)
        .optional(),
    })
    .strict(),
  responses: { 202: { description: 'the run, started; poll GET .../runs/{runId}', schema: runSchema } },
  errors: {
    400: 'invalid body',
    401: 'no IAM identity',
    403: 'not an IAM caller',
    409: 'a run is already in progress',
  },
  async handle({ body, caller }, { db, dispatchReconciliation }) {
    const now = new Date();
    const window = body.windowHours
      ? { start: new Date(now.getTime() - body.windowHours * 3600 * 1000), end: now }
      : await defaultWindow(db, now);
    const runId = await createRun(db, 'admin', window);
    await db
      .insertInto('admin_actions')
      .values({
        actor_arn: caller.kind === 'iam' ? caller.arn : '',
        action: 'start_reconciliation',
        account_id: null,
        reason: 'manual reconciliation run',
        payload: JSON.stringify({ runId, windowStart: window.start, windowEnd: window.end }),
      })
      .execute();
    await dispatchReconciliation(runId);
    return ok(await loadRun(db, runId), 202);
  },
});

export const getRun = defineEndpoint({
  route: 'GET /v1/admin/reconciliation/runs/{runId}',
  summary: 'One run with its findings',
  params: z.object({ runId: z.uuid() }).strict(),
  responses: {
    200: { description: 'the run', schema: runSchema.extend({ findingsList: z.array(findingSchema) }) },
  },
  errors: { 400: 'not a run id', 401: 'no IAM identity', 403: 'not an IAM caller', 404: 'no such run' },
  async handle({ params }, { db }) {
    const run = await loadRun(db, params.runId);
    const findings = await db
      .selectFrom('reconciliation_findings')
      .selectAll()
      .where('run_id', '=', params.runId)
      .orderBy('id')
      .limit(1000)
      .execute();
    return ok({
      ...run,
      findingsList: findings.map((f) => ({
        id: f.id,
        kind: f.kind,
        stripeObjectId: f.stripe_object_id,
        paymentId: f.payment_id,
        accountId: f.account_id,
        details: f.details,
      })),
    });
  },
});
