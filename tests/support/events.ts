import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { APIGatewayProxyEventV2, Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { signPayload } from '../../local/stripe-emulator/webhooks.js';

/** A fixture from tests/fixtures (real objects published by Stripe and AWS), parsed fresh each call. */
export function fixture<T = Record<string, unknown>>(path: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/${path}`, import.meta.url), 'utf8')) as T;
}

const token = () => randomBytes(12).toString('hex');

/** Stripe ids for one purchase, unique per call. */
export function stripeIds() {
  const t = token();
  return { session: `cs_test_${t}`, intent: `pi_${t}`, charge: `ch_${t}`, customer: `cus_${t}` };
}

type Obj = Record<string, unknown>;

export function checkoutSession(overrides: Obj): Obj {
  return {
    ...fixture('stripe/checkout_session.json'),
    status: 'complete',
    payment_status: 'paid',
    ...overrides,
  };
}
export function paymentIntent(overrides: Obj): Obj {
  return { ...fixture('stripe/payment_intent.json'), status: 'succeeded', ...overrides };
}
export function charge(overrides: Obj): Obj {
  return { ...fixture('stripe/charge.json'), ...overrides };
}
export function refund(overrides: Obj): Obj {
  return { ...fixture('stripe/refund.json'), id: `re_${token()}`, ...overrides };
}
export function dispute(overrides: Obj): Obj {
  return { ...fixture('stripe/dispute.json'), ...overrides };
}

/** An event envelope (Stripe's event fixture) around `object`. */
export function stripeEvent(type: string, object: Obj, overrides: Obj = {}): Obj {
  return {
    ...fixture('stripe/event.json'),
    id: `evt_${token()}`,
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

/** A webhook request signed as Stripe signs it. */
export function signedWebhookRequest(event: Obj, secret: string, options: { base64?: boolean } = {}) {
  const body = JSON.stringify(event, null, 2);
  return webhookRequest(body, { 'stripe-signature': signPayload(body, secret) }, options);
}

/** An SQS event (AWS's sample record) carrying `bodies`, one record each. */
export function sqsEvent(bodies: string[], receiveCount = 1): SQSEvent {
  const [sample] = fixture<SQSEvent>('aws/sqs-event.json').Records as [SQSRecord];
  return {
    Records: bodies.map((body, i) => ({
      ...sample,
      messageId: `msg-${i}-${token()}`,
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
    awsRequestId: token(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'test',
    getRemainingTimeInMillis: () => 30_000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}
