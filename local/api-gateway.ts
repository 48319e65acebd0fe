import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { matchRoute, ROUTES, type RouteKey } from '../shared/http/routes.js';
import { LOCAL_ACCOUNT, type LocalAuth } from './auth.js';

export type Handler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyStructuredResultV2>;

const gatewayError = (status: number, message: string): APIGatewayProxyStructuredResultV2 => ({
  statusCode: status,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ message }),
});

/**
 * Plays API Gateway (HTTP API, payload 2.0) for the local stack: matches the shared route table, runs the
 * route's authorizer the way API Gateway does (JWT: 401 without a valid token; IAM: 403 without a valid
 * SigV4 signature, and each local principal may invoke only its own kind of route, as IAM policies would
 * allow), fills `requestContext.authorizer`, and invokes the route's function.
 */
export function createLocalGateway(auth: LocalAuth, functions: Record<'api' | 'webhook-intake', Handler>) {
  return async function invoke(
    req: IncomingMessage,
    body: Buffer,
  ): Promise<APIGatewayProxyStructuredResultV2 | undefined> {
    const url = new URL(req.url ?? '/', 'http://local');
    const method = req.method ?? 'GET';
    const route = matchRoute(method, url.pathname);
    if (!route) return undefined;
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
    }
    const query: Record<string, string> = {};
    for (const [key, value] of url.searchParams) query[key] = key in query ? `${query[key]},${value}` : value;
    const definition = ROUTES[route.routeKey];
    let authorizer: Record<string, unknown> | undefined;
    if (definition.auth === 'user') {
      const claims = await auth.verifyBearer(headers.authorization);
      if (!claims) return gatewayError(401, 'Unauthorized');
      authorizer = { jwt: { claims, scopes: null } };
    } else if (definition.auth === 'service' || definition.auth === 'admin') {
      const principal = await auth.verifySigV4({
        method,
        host: headers.host ?? '',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers,
        body: body.toString('utf8'),
      });
      if (!principal || principal.name !== definition.auth) return gatewayError(403, 'Forbidden');
      authorizer = {
        iam: {
          accessKey: principal.accessKeyId,
          accountId: LOCAL_ACCOUNT,
          callerId: principal.name,
          principalOrgId: null,
          userArn: principal.arn,
          userId: principal.name,
          cognitoIdentity: null,
        },
      };
    }
    const now = new Date();
    const event: APIGatewayProxyEventV2 = {
      version: '2.0',
      routeKey: route.routeKey satisfies RouteKey,
      rawPath: url.pathname,
      rawQueryString: url.search.slice(1),
      headers,
      ...(Object.keys(query).length > 0 && { queryStringParameters: query }),
      ...(Object.keys(route.params).length > 0 && { pathParameters: route.params }),
      requestContext: {
        accountId: LOCAL_ACCOUNT,
        apiId: 'local',
        domainName: headers.host ?? 'localhost',
        domainPrefix: 'local',
        http: {
          method,
          path: url.pathname,
          protocol: `HTTP/${req.httpVersion}`,
          sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
          userAgent: headers['user-agent'] ?? '',
        },
        requestId: randomUUID(),
        routeKey: route.routeKey,
        stage: '$default',
        time: now.toISOString(),
        timeEpoch: now.getTime(),
        ...(authorizer && { authorizer }),
      } as APIGatewayProxyEventV2['requestContext'],
      body: body.length > 0 ? body.toString('utf8') : undefined,
      isBase64Encoded: false,
    };
    return functions[definition.fn](event);
  };
}
