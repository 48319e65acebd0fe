import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { z } from 'zod';
import { isStorableText } from '../credits.js';
import { ServiceError, ValidationError } from '../errors.js';
import { decodeUtf8, json, problem } from '../http/responses.js';
import { ROUTES, type RouteKey } from '../http/routes.js';
import type { ApiDependencies, Caller, Endpoint } from './endpoint.js';
import { ENDPOINTS } from './index.js';
import { buildOpenApi } from './openapi.js';

/** Request bodies above this are refused (413) before parsing. */
export const MAX_BODY_BYTES = 256 * 1024;
const PREFLIGHT_ROUTE: RouteKey = 'OPTIONS /v1/{proxy+}';
const ALLOWED_HEADERS = 'authorization, content-type, idempotency-key';

export interface RouterHooks {
  /** Called with every error that is not a ServiceError (answered as a generic 500). */
  readonly onUnexpectedError?: (error: unknown, routeKey: string) => void;
}

function validationError(error: z.ZodError): ServiceError {
  const errors = error.issues.map((issue) => ({
    field:
      issue.code === 'unrecognized_keys'
        ? [...issue.path, ...issue.keys].join('.')
        : issue.path.map(String).join('.') || '(body)',
    message: issue.code === 'unrecognized_keys' ? 'is not a recognised field' : issue.message,
  }));
  const first = errors[0]!;
  return new ServiceError('validation_error', `${first.field}: ${first.message}`, {
    field: first.field,
    errors,
  });
}

function parse<S extends z.ZodType>(schema: S | undefined, value: unknown): unknown {
  if (!schema) return undefined;
  const result = schema.safeParse(value);
  if (!result.success) throw validationError(result.error);
  return result.data;
}

function readBody(endpoint: Endpoint, event: APIGatewayProxyEventV2): unknown {
  if (!endpoint.body) {
    // Nothing, or an empty JSON object (what many clients send with a POST), is no body; anything else is.
    const sent = event.body
      ? Buffer.from(event.body, event.isBase64Encoded ? 'base64' : 'utf8')
          .toString()
          .replace(/\s+/g, '')
      : '';
    if (sent !== '' && sent !== '{}') {
      throw new ValidationError('body', 'this route takes no body');
    }
    return undefined;
  }
  // No body at all, for a route whose body fields are all optional, is the empty object.
  if (!event.body) {
    if (endpoint.body.safeParse({}).success) return {};
    throw new ServiceError('empty_body', 'the body is empty; this route takes a JSON body');
  }
  const contentType = event.headers?.['content-type'] ?? '';
  // application/json, with parameters or none (not application/json-patch+json and the like).
  if (!/^application\/json\s*(;|$)/i.test(contentType)) {
    throw new ServiceError('unsupported_media_type', 'the body must be application/json');
  }
  const raw = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
  if (raw.length > MAX_BODY_BYTES) {
    throw new ServiceError('payload_too_large', `the body exceeds ${MAX_BODY_BYTES} bytes`);
  }
  const text = decodeUtf8(raw);
  if (text.trim() === '')
    throw new ServiceError('empty_body', 'the body is empty; this route takes a JSON body');
  if (text.startsWith('\uFEFF')) {
    throw new ServiceError('malformed_json', 'the body starts with a byte order mark; send JSON without one');
  }
  let parsed: unknown;
  let prototypeKey = false;
  try {
    // JSON.parse keeps a "__proto__" key as an own property, which later copies would drop or turn into the
    // prototype: refused wherever it is, not silently lost.
    // (The reviver only when the text could spell the key: plainly, or with a \u escape.)
    parsed =
      text.includes('__proto__') || text.includes('\\u')
        ? JSON.parse(text, (key, value) => {
            if (key === '__proto__') prototypeKey = true;
            return value;
          })
        : JSON.parse(text);
  } catch {
    throw new ServiceError('malformed_json', 'the body is not valid JSON');
  }
  if (prototypeKey) throw new ValidationError('body', 'must not use the key __proto__');
  return parsed;
}

/** A matcher for IAM principal ARN patterns (`*` matches any run of characters). */
export function principalMatcher(patterns: readonly string[]): (arn: string) => boolean {
  const regexes = patterns.map(
    (p) =>
      new RegExp(
        `^${p
          .split('*')
          .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('.*')}$`,
      ),
  );
  return (arn) => regexes.some((r) => r.test(arn));
}

/** The caller, from API Gateway's authorizer context only. */
function authenticate(
  event: APIGatewayProxyEventV2,
  routeKey: RouteKey,
  isAdmin: (arn: string) => boolean,
): Caller {
  const auth = ROUTES[routeKey].auth;
  if (auth === 'none') return { kind: 'anonymous' };
  const authorizer = (event.requestContext as { authorizer?: Record<string, unknown> }).authorizer ?? {};
  const jwt = authorizer.jwt as { claims?: Record<string, unknown> } | undefined;
  const iam = authorizer.iam as { userArn?: unknown } | undefined;
  if (auth === 'user') {
    const sub = jwt?.claims?.sub;
    if (typeof sub === 'string' && sub.length > 0 && sub.length <= 255 && isStorableText(sub)) {
      return { kind: 'user', userId: sub };
    }
    if (iam) throw new ServiceError('forbidden', 'this route takes a user token, not IAM credentials');
    throw new ServiceError('unauthorized', 'a user token with a subject (sub) is required');
  }
  if (typeof iam?.userArn === 'string' && iam.userArn.startsWith('arn:')) {
    // IAM policies decide who may invoke each route kind; the function checks admin routes a second time.
    if (auth === 'admin' && !isAdmin(iam.userArn)) {
      throw new ServiceError('forbidden', 'this route is for admin principals; this caller is not one');
    }
    return { kind: 'iam', arn: iam.userArn };
  }
  if (jwt)
    throw new ServiceError(
      'forbidden',
      'this route requires IAM (SigV4) authorization; user tokens are refused',
    );
  throw new ServiceError('unauthorized', 'IAM (SigV4) authorization is required');
}

/**
 * The api function's router: API Gateway v2 events in, responses out. Validates every input at the edge
 * (unknown fields rejected), answers errors as application/problem+json, and applies the CORS policy
 * (configured origins only, preflight included) identically in AWS and locally.
 */
export function createApiRouter(deps: ApiDependencies, hooks: RouterHooks = {}) {
  const openApi = buildOpenApi(ENDPOINTS);
  const byRoute = new Map<string, Endpoint>(ENDPOINTS.map((e) => [e.route, e]));
  const allowed = new Set(deps.config.corsAllowedOrigins);
  const isAdmin = principalMatcher(deps.config.adminPrincipals);

  return async function route(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
    const routeKey = event.routeKey as RouteKey;
    const origin = event.headers?.origin;
    const requestId = event.requestContext?.requestId;
    const cors: Record<string, string> =
      origin && allowed.has(origin)
        ? {
            'access-control-allow-origin': origin,
            'access-control-expose-headers': 'idempotent-replayed',
            vary: 'Origin',
          }
        : {};
    try {
      if (origin && !allowed.has(origin)) {
        throw new ServiceError('cors_origin_refused', `origin ${origin} is not allowed to call this API`);
      }
      if (routeKey === PREFLIGHT_ROUTE) {
        return {
          statusCode: 204,
          headers: {
            ...cors,
            'access-control-allow-methods': 'GET, POST, PUT, OPTIONS',
            'access-control-allow-headers': ALLOWED_HEADERS,
            'access-control-max-age': '600',
          },
        };
      }
      if (routeKey === 'GET /openapi.json') return json(200, openApi, cors);
      const endpoint = byRoute.get(routeKey);
      if (!endpoint) throw new ServiceError('not_found', `no route ${event.routeKey}`);
      const caller = authenticate(event, routeKey, isAdmin);
      const request = {
        params: parse(endpoint.params, event.pathParameters ?? {}),
        query: parse(endpoint.query, event.queryStringParameters ?? {}),
        body: parse(endpoint.body, readBody(endpoint, event)),
        headers: event.headers ?? {},
        caller,
      };
      const response = await endpoint.handle(request as never, deps);
      return json(response.status, response.body, { ...cors, ...response.headers });
    } catch (error: unknown) {
      if (!(error instanceof ServiceError)) hooks.onUnexpectedError?.(error, event.routeKey);
      return problem(error, { headers: cors, requestId });
    }
  };
}
