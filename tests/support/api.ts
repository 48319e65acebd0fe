import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { Kysely } from 'kysely';
import type Stripe from 'stripe';
import { expect } from 'vitest';
import type { Endpoint } from '../../shared/api/endpoint.js';
import { ENDPOINTS } from '../../shared/api/index.js';
import { problemStatuses } from '../../shared/api/openapi.js';
import { createApiRouter } from '../../shared/api/router.js';
import { problemSchema } from '../../shared/api/schemas.js';
import type { ApiConfig } from '../../shared/config.js';
import type { Database } from '../../shared/db/schema.js';
import type { RouteKey } from '../../shared/http/routes.js';
import { DEFAULT_PACKAGES } from '../../shared/packages.js';
import { DEFAULT_CATALOG } from '../../shared/plan-catalog.js';
import { executeRun } from '../../shared/reconcile/reconcile.js';
import { fixture } from './events.js';

export const SERVICE_ARN = 'arn:aws:sts::123456789012:assumed-role/app-backend/session';
export const ADMIN_ARN = 'arn:aws:sts::123456789012:assumed-role/credits-admin/alice';
export const FRONTEND = 'https://app.example.com';

export type Auth = { user: string } | { iam: string } | 'none';

export interface CallOptions {
  params?: Record<string, string>;
  query?: Record<string, string>;
  body?: unknown;
  rawBody?: string;
  /** Body bytes sent base64-encoded (isBase64Encoded), as API Gateway passes bodies it does not take as text. */
  bytes?: Buffer;
  headers?: Record<string, string>;
  auth?: Auth;
}

/**
 * An API Gateway HTTP API (payload 2.0) event for `routeKey`, built from AWS's samples: the JWT authorizer
 * sample for a user, the IAM sample for a SigV4 caller, the no-authorizer sample otherwise.
 */
export function apiEvent(routeKey: RouteKey, options: CallOptions = {}): APIGatewayProxyEventV2 {
  const auth = options.auth ?? 'none';
  const file =
    auth === 'none'
      ? 'aws/apigw-v2-request-no-authorizer.json'
      : 'user' in auth
        ? 'aws/apigw-v2-request-jwt-authorizer.json'
        : 'aws/apigw-v2-request-iam.json';
  const sample = fixture<
    APIGatewayProxyEventV2 & { requestContext: { authorizer?: Record<string, unknown> } }
  >(file);
  const [method, template] = routeKey.split(' ') as [string, string];
  const rawPath = template.replace(/\{(\w+)\+?\}/g, (_m, name: string) =>
    encodeURIComponent(options.params?.[name] ?? ''),
  );
  const authorizer =
    auth === 'none'
      ? undefined
      : 'user' in auth
        ? {
            jwt: {
              claims: {
                ...(sample.requestContext.authorizer as { jwt: { claims: object } }).jwt.claims,
                sub: auth.user,
              },
              scopes: null,
            },
          }
        : { iam: { ...(sample.requestContext.authorizer?.iam as object), userArn: auth.iam } };
  const body =
    options.bytes?.toString('base64') ??
    options.rawBody ??
    (options.body === undefined ? undefined : JSON.stringify(options.body));
  return {
    ...sample,
    routeKey,
    rawPath,
    rawQueryString: new URLSearchParams(options.query ?? {}).toString(),
    headers: {
      host: 'api.example.com',
      ...(body !== undefined && { 'content-type': 'application/json' }),
      ...options.headers,
    },
    queryStringParameters: options.query,
    pathParameters: options.params,
    body,
    isBase64Encoded: options.bytes !== undefined,
    cookies: undefined,
    stageVariables: undefined,
    requestContext: {
      ...sample.requestContext,
      routeKey,
      http: { ...sample.requestContext.http, method, path: rawPath },
      ...(authorizer ? { authorizer } : {}),
    } as APIGatewayProxyEventV2['requestContext'],
  } as APIGatewayProxyEventV2;
}

export interface ApiResult {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** Checks a response against what the endpoint documents (status, and body schema or problem shape). */
export function expectDocumented(routeKey: RouteKey, response: APIGatewayProxyStructuredResultV2): void {
  if (routeKey === 'OPTIONS /v1/{proxy+}' || routeKey === 'GET /openapi.json') return;
  const endpoint = ENDPOINTS.find((e) => e.route === routeKey) as Endpoint;
  const status = response.statusCode ?? 200;
  const body = response.body ? JSON.parse(response.body) : undefined;
  const documented = endpoint.responses[status];
  if (documented) {
    expect(response.headers?.['content-type']).toBe('application/json');
    const parsed = documented.schema.safeParse(body);
    expect(
      parsed.success ? [] : parsed.error.issues,
      `${routeKey} ${status} body matches its schema`,
    ).toEqual([]);
    return;
  }
  const allowed = new Set(Object.keys(problemStatuses(endpoint)).map(Number));
  expect(allowed.has(status), `${routeKey} answered undocumented status ${status}`).toBe(true);
  expect(response.headers?.['content-type']).toBe('application/problem+json');
  expect(problemSchema.safeParse(body).success).toBe(true);
}

/** An API bound to a test database and a Stripe client; `call` returns the parsed response. */
export function testApi(
  db: Kysely<Database>,
  options: {
    stripe?: Stripe;
    config?: Partial<ApiConfig>;
    inlineReconciliation?: boolean;
    clock?: () => Date;
  } = {},
) {
  const config: ApiConfig = {
    database: { url: 'unused' },
    poolMax: 1,
    packages: DEFAULT_PACKAGES,
    checkoutSuccessUrl: `${FRONTEND}/?checkout=success`,
    checkoutCancelUrl: `${FRONTEND}/?checkout=cancelled`,
    corsAllowedOrigins: [FRONTEND],
    maxOpenCheckouts: 3,
    adminPrincipals: ['arn:aws:sts::123456789012:assumed-role/credits-admin/*'],
    allowPromotionCodes: false,
    plans: DEFAULT_CATALOG,
    ...options.config,
  };
  const runs: Promise<unknown>[] = [];
  const stripe = async () => {
    if (!options.stripe) throw new Error('this test API has no Stripe');
    return options.stripe;
  };
  const route = createApiRouter(
    {
      db,
      config,
      stripe,
      clock: options.clock,
      dispatchReconciliation: async (runId) => {
        runs.push(
          executeRun(
            {
              db,
              stripe: await stripe(),
              packages: config.packages,
              retryBaseMs: 5,
              requestsPerSecond: 1000,
            },
            runId,
          ),
        );
      },
    },
    { onUnexpectedError: (error) => console.error(error) },
  );
  async function call(routeKey: RouteKey, callOptions: CallOptions = {}): Promise<ApiResult> {
    const response = await route(apiEvent(routeKey, callOptions));
    expectDocumented(routeKey, response);
    return {
      status: response.statusCode ?? 200,
      headers: (response.headers ?? {}) as Record<string, string>,
      body: response.body ? JSON.parse(response.body) : {},
    };
  }
  return { call, route, config, settleRuns: () => Promise.all(runs) };
}
