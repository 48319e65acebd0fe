import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import type { Kysely } from 'kysely';
import { createApiRouter } from '../../shared/api/router.js';
import type { ApiConfig } from '../../shared/config.js';
import type { Database } from '../../shared/db/schema.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plan-catalog.js';
import { activatePriceBook, createPriceBookDraft } from '../../shared/pricing/price-book.js';
import { fixture } from './events.js';

const SERVICE_ARN = 'arn:aws:sts::000000000000:assumed-role/bench-service/bench';
/** The operator behind the bench's price book and funding adjustments. */
export const BENCH_ACTOR = { actorArn: 'arn:aws:iam::000000000000:user/bench-admin', reason: 'bench' };
/** The sku the bench's usage events and holds are priced by. */
export const BENCH_SKU = 'bench/chat';

/** Activates a price book for BENCH_SKU, effective a minute ago (usage events are priced at their time). */
export async function activateBenchPrices(db: Kysely<Database>): Promise<void> {
  const book = await createPriceBookDraft(
    db,
    {
      version: `bench-${randomUUID().slice(0, 8)}`,
      items: [{ sku: BENCH_SKU, kind: 'tokens', rates: { input: '1000000', output: '2000000' } }],
    },
    BENCH_ACTOR,
  );
  await activatePriceBook(db, book.version, BENCH_ACTOR, new Date(Date.now() - 60_000));
}

// Read once: the load generator must not charge a file read per request to the figures it measures.
const sample = fixture<APIGatewayProxyEventV2 & { requestContext: { authorizer: { iam: object } } }>(
  'aws/apigw-v2-request-iam.json',
);

/** An API Gateway v2 event for a service route, from AWS's IAM sample, as the api function receives it. */
export function serviceEvent(
  routeKey: string,
  pathParameters: Record<string, string>,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyEventV2 {
  return {
    ...sample,
    routeKey,
    pathParameters,
    queryStringParameters: undefined,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      ...sample.requestContext,
      requestId: randomUUID(),
      authorizer: { iam: { ...sample.requestContext.authorizer.iam, userArn: SERVICE_ARN } },
    },
  } as unknown as APIGatewayProxyEventV2;
}

/**
 * The api function's router on `db` with its real dependencies (no Stripe route is called), and `call`,
 * which routes an event and throws unless it answers `expected`; the parsed JSON body otherwise.
 */
export function benchRouter(db: Kysely<Database>, poolMax: number) {
  const config: ApiConfig = {
    database: { url: 'in-process' },
    poolMax,
    packages: DEFAULT_PACKAGES,
    checkoutSuccessUrl: 'https://bench.invalid/ok',
    checkoutCancelUrl: 'https://bench.invalid/cancel',
    corsAllowedOrigins: [],
    maxOpenCheckouts: 5,
    adminPrincipals: [],
    allowPromotionCodes: false,
    plans: DEFAULT_CATALOG,
  };
  const route = createApiRouter({
    db,
    config,
    stripe: async () => {
      throw new Error('the bench calls no Stripe route');
    },
    dispatchReconciliation: async () => {},
  });
  return async (event: APIGatewayProxyEventV2, expected: number): Promise<Record<string, unknown>> => {
    const response = await route(event);
    if (response.statusCode !== expected)
      throw new Error(`${event.routeKey}: ${response.statusCode} ${response.body}`);
    return JSON.parse(response.body ?? '{}') as Record<string, unknown>;
  };
}
