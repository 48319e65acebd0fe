import * as z from 'zod';
import { analyticsOf } from '../analytics/analytics.js';
import { ValidationError } from '../errors.js';
import { defineEndpoint, nowOf, ok } from './endpoint.js';
import { instant } from './schemas.js';

const counts = z.record(z.string(), z.number().int());

export const getAnalytics = defineEndpoint({
  route: 'GET /v1/admin/analytics',
  summary:
    'Credits sold (and revenue per currency), granted by source, spent by SKU and provider, removed, expired, clawed back, outstanding, top accounts, over [from, to) (default: the last 30 days)',
  query: z.object({ from: instant.optional(), to: instant.optional() }).strict(),
  responses: {
    200: {
      description:
        'the flows; sold + granted - spent - removed - expired - clawedBack is the change in outstanding',
      schema: z.object({
        from: z.string(),
        to: z.string(),
        sold: z.object({ credits: z.number().int(), revenue: counts }),
        granted: counts,
        spent: z.object({ credits: z.number().int(), bySku: counts, byProvider: counts }),
        removed: z.number().int(),
        expired: z.number().int(),
        clawedBack: z.number().int(),
        outstanding: z.object({
          total: z.number().int(),
          paid: z.number().int(),
          promotional: z.number().int(),
        }),
        topAccounts: z.array(z.object({ userId: z.string().nullable(), spent: z.number().int() })),
      }),
    },
  },
  errors: { 400: 'bad range', 401: 'no IAM identity', 403: 'not an admin principal' },
  async handle({ query }, deps) {
    const now = nowOf(deps);
    const to = query.to ?? now;
    const from = query.from ?? new Date(to.getTime() - 30 * 86_400_000);
    if (!(from < to)) throw new ValidationError('from', 'must be before to');
    const result = await analyticsOf(deps.db, from, to, now);
    return ok({ ...result, from: result.from.toISOString(), to: result.to.toISOString() });
  },
});
