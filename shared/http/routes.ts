/**
 * Every HTTP route: the one table the CDK stack, the local stack and the API router share, so they cannot
 * drift. Data only (no imports): the infrastructure reads it without pulling in runtime code.
 *
 * auth: `none` public; `user` JWT authorizer (the caller is the token's `sub`); `service` and `admin`
 * IAM authorizer (SigV4), told apart by the IAM policies that may invoke them.
 */
export const ROUTES = {
  'GET /health': { fn: 'api', auth: 'none' },
  'GET /v1/packages': { fn: 'api', auth: 'none' },
  'GET /v1/prices': { fn: 'api', auth: 'none' },
  'GET /openapi.json': { fn: 'api', auth: 'none' },
  'POST /webhooks/stripe': { fn: 'webhook-intake', auth: 'none' },
  'GET /v1/me/credits': { fn: 'api', auth: 'user' },
  'GET /v1/me/transactions': { fn: 'api', auth: 'user' },
  'GET /v1/me/payments': { fn: 'api', auth: 'user' },
  'GET /v1/me/grants': { fn: 'api', auth: 'user' },
  'GET /v1/me/usage': { fn: 'api', auth: 'user' },
  'GET /v1/me/limits': { fn: 'api', auth: 'user' },
  'PUT /v1/me/limits': { fn: 'api', auth: 'user' },
  'GET /v1/me/alerts': { fn: 'api', auth: 'user' },
  'PUT /v1/me/alerts': { fn: 'api', auth: 'user' },
  'GET /v1/me/auto-topup': { fn: 'api', auth: 'user' },
  'PUT /v1/me/auto-topup': { fn: 'api', auth: 'user' },
  'POST /v1/me/coupons/redeem': { fn: 'api', auth: 'user' },
  'POST /v1/checkout': { fn: 'api', auth: 'user' },
  'POST /v1/accounts/{userId}/spend': { fn: 'api', auth: 'service' },
  'POST /v1/accounts/{userId}/holds': { fn: 'api', auth: 'service' },
  'GET /v1/holds/{holdId}': { fn: 'api', auth: 'service' },
  'POST /v1/holds/{holdId}/capture': { fn: 'api', auth: 'service' },
  'POST /v1/holds/{holdId}/void': { fn: 'api', auth: 'service' },
  'POST /v1/usage': { fn: 'api', auth: 'service' },
  'POST /v1/quotes': { fn: 'api', auth: 'service' },
  'GET /v1/admin/accounts/{userId}': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/accounts/{userId}/adjustments': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/accounts/{userId}/freeze': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/accounts/{userId}/unfreeze': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/accounts/{userId}/anonymize': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/accounts/{userId}/usage': { fn: 'api', auth: 'admin' },
  'PUT /v1/admin/accounts/{userId}/plan': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/analytics': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/approvals': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/approvals/{approvalId}/approve': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/approvals/{approvalId}/reject': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/coupons': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/coupons': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/coupons/{code}/disable': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/prices': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/prices': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/prices/{version}': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/prices/{version}/activate': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/reconciliation/runs': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/reconciliation/runs': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/reconciliation/runs/{runId}': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/parked-events': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/parked-events/{eventId}/replay': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/invariants': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/webhook-endpoints': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/webhook-endpoints': { fn: 'api', auth: 'admin' },
  'DELETE /v1/admin/webhook-endpoints/{id}': { fn: 'api', auth: 'admin' },
  'GET /v1/admin/webhook-deliveries': { fn: 'api', auth: 'admin' },
  'POST /v1/admin/webhook-deliveries/{id}/redeliver': { fn: 'api', auth: 'admin' },
  // CORS preflight for the user routes: answered by the api function, never authorized.
  'OPTIONS /v1/{proxy+}': { fn: 'api', auth: 'none' },
} as const satisfies Record<
  string,
  { fn: 'api' | 'webhook-intake'; auth: 'none' | 'user' | 'service' | 'admin' }
>;

export type RouteKey = keyof typeof ROUTES;
export type RouteAuth = (typeof ROUTES)[RouteKey]['auth'];

/** A path parameter whose percent-encoding does not decode (`%ZZ`, a lone `%`, a cut UTF-8 sequence). */
export class PathEncodingError extends Error {
  constructor(readonly segment: string) {
    super(`path segment ${JSON.stringify(segment)} is not valid percent-encoded UTF-8`);
  }
}

/**
 * Matches a concrete method and path to its route key and path parameters (percent-decoded), as API
 * Gateway does. Throws a PathEncodingError when a matched parameter does not decode; API Gateway answers
 * that with a 400, never a 500.
 */
export function matchRoute(
  method: string,
  path: string,
): { routeKey: RouteKey; params: Record<string, string> } | undefined {
  for (const routeKey of Object.keys(ROUTES) as RouteKey[]) {
    const [routeMethod, template] = routeKey.split(' ') as [string, string];
    if (routeMethod !== method) continue;
    const names: string[] = [];
    const pattern = template.replace(/\{(\w+)(\+?)\}/g, (_m, name: string, greedy: string) => {
      names.push(name);
      return greedy ? '(.+)' : '([^/]+)';
    });
    const match = new RegExp(`^${pattern}$`).exec(path);
    if (!match) continue;
    const params: Record<string, string> = {};
    names.forEach((name, i) => {
      const raw = match[i + 1]!;
      try {
        params[name] = decodeURIComponent(raw);
      } catch {
        throw new PathEncodingError(raw);
      }
    });
    return { routeKey, params };
  }
  return undefined;
}
