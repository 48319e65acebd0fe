import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { matchRoute, PathEncodingError, ROUTES, type RouteKey } from '../shared/http/routes.js';
import { LOCAL_ACCOUNT, type LocalAuth, principalKind, type SigV4Failure } from './auth.js';

export type Handler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyStructuredResultV2>;

/** API Gateway tolerates 5 minutes between x-amz-date and its own clock ("Signature expired ... - 5 min."). */
const SIGV4_MAX_SKEW_SECONDS = 5 * 60;

/**
 * An error API Gateway answers itself, before any function runs: its own shape (`{"message": ...}`,
 * `application/json`, an `x-amzn-errortype` where it sends one), never the functions' problem+json.
 */
export function gatewayError(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode: status,
    headers: { 'content-type': 'application/json', 'apigw-requestid': randomUUID(), ...headers },
    body: JSON.stringify({ message }),
  };
}

/** The IAM authorizer's 403 for each SigV4 failure, as execute-api words it. */
function iamRefusal(failure: SigV4Failure): APIGatewayProxyStructuredResultV2 {
  switch (failure.reason) {
    case 'missing':
      return gatewayError(403, 'Forbidden');
    case 'unknown_key':
      return gatewayError(403, failure.message, { 'x-amzn-errortype': 'UnrecognizedClientException' });
    case 'incomplete':
      return gatewayError(403, failure.message, { 'x-amzn-errortype': 'IncompleteSignatureException' });
    default:
      return gatewayError(403, failure.message, { 'x-amzn-errortype': 'InvalidSignatureException' });
  }
}

const bearerChallenge = (description: string) => ({
  'www-authenticate': `Bearer scope="" error="invalid_token" error_description="${description}"`,
});

/** True when every percent-escape in the path decodes (as UTF-8); API Gateway answers 400 otherwise. */
function decodablePath(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Plays API Gateway (HTTP API, payload 2.0) for the local stack: matches the shared route table (404 when
 * nothing matches, 400 for a path whose percent-encoding is malformed), runs the route's authorizer the
 * way API Gateway does (JWT: 401 without a valid token; IAM: 403 without a valid SigV4 signature over the
 * request as received, and each local principal may invoke only its own kind of route, as IAM policies
 * would allow), fills `requestContext.authorizer`, and invokes the route's function. The errors it answers
 * itself have API Gateway's shape (`gatewayError`); everything else is the function's answer.
 */
export function createLocalGateway(auth: LocalAuth, functions: Record<'api' | 'webhook-intake', Handler>) {
  return async function invoke(
    req: IncomingMessage,
    body: Buffer,
  ): Promise<APIGatewayProxyStructuredResultV2> {
    const url = new URL(req.url ?? '/', 'http://local');
    const method = req.method ?? 'GET';
    if (!decodablePath(url.pathname)) return gatewayError(400, 'Bad Request');
    let route: ReturnType<typeof matchRoute>;
    try {
      route = matchRoute(method, url.pathname);
    } catch (error: unknown) {
      if (error instanceof PathEncodingError) return gatewayError(400, 'Bad Request');
      throw error;
    }
    if (!route) return gatewayError(404, 'Not Found');
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
    }
    const query: Record<string, string> = {};
    for (const [key, value] of url.searchParams) query[key] = key in query ? `${query[key]},${value}` : value;
    const definition = ROUTES[route.routeKey];
    let authorizer: Record<string, unknown> | undefined;
    if (definition.auth === 'user') {
      if (!headers.authorization)
        return gatewayError(401, 'Unauthorized', bearerChallenge('the token is missing'));
      const claims = await auth.verifyBearer(headers.authorization);
      if (!claims) return gatewayError(401, 'Unauthorized', bearerChallenge('the token is invalid'));
      authorizer = { jwt: { claims, scopes: null } };
    } else if (definition.auth === 'service' || definition.auth === 'admin') {
      const verified = await auth.verifySigV4(
        { method, host: headers.host ?? '', path: url.pathname, query: [...url.searchParams], headers, body },
        'execute-api',
        SIGV4_MAX_SKEW_SECONDS,
      );
      if (!verified.ok) return iamRefusal(verified);
      const { principal } = verified;
      // In AWS the caller's IAM policy does not allow execute-api:Invoke on the other kind's routes.
      if (principalKind(principal) !== definition.auth) return gatewayError(403, 'Forbidden');
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
      // Text passes as text; bytes that are not UTF-8 pass base64-encoded, exactly, so the function sees what
      // was sent (decoding them here would turn them into U+FFFD and make different bodies look alike).
      body: body.length === 0 ? undefined : isUtf8(body) ? body.toString('utf8') : body.toString('base64'),
      isBase64Encoded: body.length > 0 && !isUtf8(body),
    };
    return functions[definition.fn](event);
  };
}
