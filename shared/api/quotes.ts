import * as z from 'zod';
import { quoteUsage } from '../pricing/cost.js';
import { defineEndpoint, ok } from './endpoint.js';
import { costLineSchema, sku, usageSchema } from './schemas.js';

export const createQuote = defineEndpoint({
  route: 'POST /v1/quotes',
  summary: 'What a usage of a SKU costs at the active prices, rounded up to a whole credit; writes nothing',
  body: z.object({ sku, usage: usageSchema }).strict(),
  responses: {
    200: {
      description: 'the cost, with each pool at its rate (exact decimals) before the one rounding',
      schema: z.object({
        sku: z.string(),
        provider: z.string().nullable(),
        credits: z.number().int(),
        exact: z.string(),
        priceVersion: z.string(),
        breakdown: z.array(costLineSchema),
      }),
    },
  },
  errors: {
    400: 'invalid usage: counts that are not non-negative integers, a part above its whole, or a usage that does not fit the SKU',
    401: 'no IAM identity',
    403: 'not an IAM caller',
    422: 'the active price book has no such SKU (unknown_sku), or the cost passes 2^53 - 1 credits',
  },
  async handle({ body }, { db }) {
    const cost = await quoteUsage(db, body.sku, body.usage);
    return ok({
      sku: cost.sku,
      provider: cost.provider,
      credits: cost.credits,
      exact: cost.exact,
      priceVersion: cost.priceVersion,
      breakdown: cost.breakdown,
    });
  },
});
