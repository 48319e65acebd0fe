import * as z from 'zod';
import { recordAdminAction } from '../audit/audit.js';
import type { ReconciliationRun } from '../db/schema.js';
import { ServiceError } from '../errors.js';
import {
  createRun,
  findRun,
  listRuns as latestRuns,
  listFindings,
  resolveWindow,
} from '../reconcile/runs.js';
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

function runView(run: ReconciliationRun) {
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

async function requireRun(db: Parameters<typeof findRun>[0], runId: string) {
  const run = await findRun(db, runId);
  if (!run) throw new ServiceError('not_found', `no reconciliation run ${runId}`);
  return run;
}

export const listRuns = defineEndpoint({
  route: 'GET /v1/admin/reconciliation/runs',
  summary: 'Reconciliation runs, newest first (last 50)',
  responses: { 200: { description: 'runs', schema: z.object({ data: z.array(runSchema) }) } },
  errors: { 401: 'no IAM identity', 403: 'not an IAM caller' },
  async handle(_request, { db }) {
    return ok({ data: (await latestRuns(db, 50)).map(runView) });
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
    const window = await resolveWindow(db, new Date(), body.windowHours);
    const runId = await createRun(db, 'admin', window);
    await recordAdminAction(
      db,
      'start_reconciliation',
      { actorArn: caller.kind === 'iam' ? caller.arn : '', reason: 'manual reconciliation run' },
      { payload: { runId, windowStart: window.start, windowEnd: window.end } },
    );
    await dispatchReconciliation(runId);
    return ok(runView(await requireRun(db, runId)), 202);
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
    const run = await requireRun(db, params.runId);
    const findings = await listFindings(db, params.runId, 1000);
    return ok({
      ...runView(run),
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
