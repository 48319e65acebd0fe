import { type CfnElement, Stack, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer, HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { ROUTES, type RouteKey } from '../shared/http/routes.js';

export interface HttpApiProps {
  /** The function behind each `fn` of the route table. */
  readonly functions: Record<(typeof ROUTES)[RouteKey]['fn'], lambda.IFunction>;
  /** JWT issuer of the app's user tokens (Cognito user pool URL or any OIDC issuer). */
  readonly jwtIssuer: string;
  /** Accepted `aud` values of user tokens. */
  readonly jwtAudience: string[];
}

/** Why each unauthenticated route is public (acknowledged against AwsSolutions-APIG4). */
const PUBLIC_ROUTE_REASONS: Partial<Record<RouteKey, string>> = {
  'GET /health': 'Liveness probe; answers only whether the database is reachable',
  'GET /v1/packages': 'The public price list shown before sign-in',
  'GET /v1/prices': 'The active price book (credits per SKU), public like the packs; it holds no user data',
  'GET /openapi.json': 'The public API description',
  'POST /webhooks/stripe':
    'Stripe cannot present AWS credentials; every request is authenticated by its Stripe-Signature over the raw body',
  'OPTIONS /v1/{proxy+}':
    'CORS preflight requests carry no credentials by definition; the function answers only configured origins',
};

/** The IAM-authorized route kinds: each gets a managed policy that may invoke exactly its routes. */
export const CALLER_KINDS = ['service', 'admin'] as const;
export type CallerKind = (typeof CALLER_KINDS)[number];

/** The route keys of one kind, from the shared table. */
export function routesOfKind(kind: CallerKind): RouteKey[] {
  return (Object.keys(ROUTES) as RouteKey[]).filter((key) => ROUTES[key].auth === kind);
}

export interface HttpApi {
  readonly api: apigw.HttpApi;
  /** Attach to the IAM principals of each kind of caller: they may invoke that kind's routes and no other. */
  readonly callerPolicies: Record<CallerKind, iam.ManagedPolicy>;
}

/**
 * The HTTP API: one route per entry of the shared route table (the local stack serves the same table), each
 * with its authorizer, a throttled `$default` stage and JSON access logs; and one managed policy per IAM
 * route kind allowing `execute-api:Invoke` on exactly that kind's routes (method and path).
 *
 * Defined in `scope` itself rather than under a construct of its own, so the logical ids are those the
 * single-file stack had: a new id would replace the API, and with it the URL every client and Stripe calls.
 */
export function defineHttpApi(scope: Construct, props: HttpApiProps): HttpApi {
  const accessLogs = new logs.LogGroup(scope, 'ApiAccessLogs', {
    retention: logs.RetentionDays.THREE_MONTHS,
  });
  const api = new apigw.HttpApi(scope, 'HttpApi', {
    createDefaultStage: false,
    description: 'Credits service',
  });
  const stage = api.addStage('default', {
    stageName: '$default',
    autoDeploy: true,
    throttle: { rateLimit: 200, burstLimit: 400 },
  });
  (stage.node.defaultChild as apigw.CfnStage).accessLogSettings = {
    destinationArn: accessLogs.logGroupArn,
    format: JSON.stringify({
      requestId: '$context.requestId',
      routeKey: '$context.routeKey',
      status: '$context.status',
      latencyMs: '$context.responseLatency',
      integrationError: '$context.integrationErrorMessage',
      caller: '$context.identity.userArn',
      ip: '$context.identity.sourceIp',
    }),
  };
  const jwt = new HttpJwtAuthorizer('UserJwt', props.jwtIssuer, { jwtAudience: props.jwtAudience });
  const iamAuthorizer = new HttpIamAuthorizer();
  const integrations = {
    api: new HttpLambdaIntegration('ApiIntegration', props.functions.api),
    'webhook-intake': new HttpLambdaIntegration('IntakeIntegration', props.functions['webhook-intake']),
  };
  for (const [key, route] of Object.entries(ROUTES) as Array<[RouteKey, (typeof ROUTES)[RouteKey]]>) {
    const [method, path] = key.split(' ') as [string, string];
    const httpRoute = new apigw.HttpRoute(scope, `Route ${key}`, {
      httpApi: api,
      routeKey: apigw.HttpRouteKey.with(path, method as apigw.HttpMethod),
      integration: integrations[route.fn],
      authorizer:
        route.auth === 'user'
          ? jwt
          : route.auth === 'service' || route.auth === 'admin'
            ? iamAuthorizer
            : undefined,
    });
    if (route.auth === 'none') {
      Validations.of(httpRoute).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason: PUBLIC_ROUTE_REASONS[key] ?? 'public route',
      });
    }
  }
  const callerPolicies = {} as Record<CallerKind, iam.ManagedPolicy>;
  for (const kind of CALLER_KINDS) {
    const resources = routesOfKind(kind).map((key) => {
      const [method, path] = key.split(' ') as [string, string];
      // A path parameter is one segment in the route; IAM's `*` stands for it.
      return api.arnForExecuteApi(method, path.replace(/\{[^}]+\}/g, '*'), '$default');
    });
    const policy = new iam.ManagedPolicy(scope, `${kind === 'service' ? 'Service' : 'Admin'}CallerPolicy`, {
      description: `May call the credits API's ${kind} routes (${resources.length}) and no other`,
      statements: [new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources })],
    });
    const stack = Stack.of(scope);
    const apiId = stack.resolve(stack.getLogicalId(api.node.defaultChild as CfnElement));
    for (const key of routesOfKind(kind).filter((k) => k.includes('{'))) {
      const [method, path] = key.split(' ') as [string, string];
      const pattern = path.replace(/\{[^}]+\}/g, '*');
      Validations.of(policy).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<${apiId}>/$default/${method}${pattern}]`,
        reason: `The wildcard stands for the path parameter of the one route ${key}, named by method and path`,
      });
    }
    callerPolicies[kind] = policy;
  }
  return { api, callerPolicies };
}
