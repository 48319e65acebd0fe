import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { APIGatewayProxyEventV2, Context, SQSEvent, SQSRecord } from 'aws-lambda';

/**
 * The published Stripe and AWS sample objects (data only; see its README). They stay beside the tests,
 * which use most of them; the benchmark reads the few it needs as data and imports no test code.
 */
const FIXTURES = new URL('../../tests/fixtures/', import.meta.url);

/** A fixture from tests/fixtures (real objects published by Stripe and AWS), parsed fresh each call. */
export function fixture<T = Record<string, unknown>>(path: string): T {
  return JSON.parse(readFileSync(new URL(path, FIXTURES), 'utf8')) as T;
}

/** 24 random hex characters: the unique part of an id. */
export const randomToken = () => randomBytes(12).toString('hex');

type Obj = Record<string, unknown>;

/** A paid, complete checkout session (Stripe's fixture) with `overrides`. */
export function checkoutSession(overrides: Obj): Obj {
  return {
    ...fixture('stripe/checkout_session.json'),
    status: 'complete',
    payment_status: 'paid',
    ...overrides,
  };
}

/** An event envelope (Stripe's event fixture) around `object`. */
export function stripeEvent(type: string, object: Obj, overrides: Obj = {}): Obj {
  return {
    ...fixture('stripe/event.json'),
    id: `evt_${randomToken()}`,
    type,
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    data: { object },
    ...overrides,
  };
}

/** An API Gateway HTTP API (payload 2.0) POST /webhooks/stripe request, from AWS's sample. */
export function webhookRequest(
  body: string,
  headers: Record<string, string>,
  options: { base64?: boolean } = {},
): APIGatewayProxyEventV2 {
  const sample = fixture<APIGatewayProxyEventV2>('aws/apigw-v2-request-no-authorizer.json');
  return {
    ...sample,
    routeKey: 'POST /webhooks/stripe',
    rawPath: '/webhooks/stripe',
    headers: { ...sample.headers, 'content-type': 'application/json; charset=utf-8', ...headers },
    requestContext: {
      ...sample.requestContext,
      routeKey: 'POST /webhooks/stripe',
      http: { ...sample.requestContext.http, method: 'POST', path: '/webhooks/stripe' },
    },
    body: options.base64 ? Buffer.from(body, 'utf8').toString('base64') : body,
    isBase64Encoded: options.base64 ?? false,
  };
}

/** An SQS event (AWS's sample record) carrying `bodies`, one record each. */
export function sqsEvent(bodies: string[], receiveCount = 1): SQSEvent {
  const [sample] = fixture<SQSEvent>('aws/sqs-event.json').Records as [SQSRecord];
  return {
    Records: bodies.map((body, i) => ({
      ...sample,
      messageId: `msg-${i}-${randomToken()}`,
      body,
      attributes: { ...sample.attributes, ApproximateReceiveCount: String(receiveCount) },
      messageAttributes: {},
    })),
  };
}

/** A Lambda context for invoking handlers directly. */
export function lambdaContext(functionName = 'test-function'): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: randomToken(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'test',
    getRemainingTimeInMillis: () => 30_000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}
