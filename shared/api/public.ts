import * as z from 'zod';
import { pingDatabase } from '../db/client.js';
import { ServiceError } from '../errors.js';
import { packageSchema } from '../packages.js';
import { defineEndpoint, ok } from './endpoint.js';

export const health = defineEndpoint({
  route: 'GET /health',
  summary: 'Liveness: answers 200 when the database answers',
  responses: { 200: { description: 'healthy', schema: z.object({ status: z.literal('ok') }) } },
  errors: { 503: 'the database did not answer' },
  async handle(_request, { db }) {
    if (!(await pingDatabase(db)))
      throw new ServiceError('database_unavailable', 'the database did not answer');
    return ok({ status: 'ok' });
  },
});

export const listPackages = defineEndpoint({
  route: 'GET /v1/packages',
  summary: 'The credit packs on sale',
  responses: { 200: { description: 'packs', schema: z.object({ data: z.array(packageSchema) }) } },
  errors: {},
  async handle(_request, { config }) {
    return ok({ data: config.packages });
  },
});
