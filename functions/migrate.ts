import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import middy from '@middy/core';
import * as z from 'zod';
import type { DatabaseTarget } from '../shared/db/client.js';
import { createDb } from '../shared/db/client.js';
import { migrateToLatest } from '../shared/db/migrate.js';
import { createObservability } from '../shared/observability.js';

const { logger } = createObservability('migrate');

/** Run by a CDK Trigger on every deploy that changes it, before the new code takes traffic. */
export async function runMigrations(target: DatabaseTarget) {
  const db = createDb(target, { max: 1, applicationName: 'migrate' });
  try {
    const { results = [] } = await migrateToLatest(db);
    const applied = results.map((r) => r.migrationName);
    logger.info('migrations applied', { applied });
    return { applied };
  } finally {
    await db.destroy();
  }
}

const env = z.object({
  DB_HOST: z.string().min(1),
  DB_PORT: z.coerce.number().default(5432),
  DB_NAME: z.string(),
  DB_USER: z.string(),
});

export const handler = middy(async () => {
  const config = env.parse(process.env);
  return runMigrations({
    host: config.DB_HOST,
    port: config.DB_PORT,
    database: config.DB_NAME,
    user: config.DB_USER,
    iamAuth: true,
  });
}).use(injectLambdaContext(logger));
