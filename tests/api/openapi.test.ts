import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ENDPOINTS } from '../../shared/api/index.js';
import { buildOpenApi, problemStatuses } from '../../shared/api/openapi.js';
import { ROUTES } from '../../shared/http/routes.js';
import { apiEvent, testApi } from '../support/api.js';
import { createTestDatabase } from '../support/database.js';

const { db } = await createTestDatabase({ max: 2 });
const document = buildOpenApi(ENDPOINTS) as {
  paths: Record<string, Record<string, { responses: Record<string, unknown>; security: unknown[] }>>;
};

describe('OpenAPI document', () => {
  it('has every api route of the route table, and nothing else', () => {
    const apiRoutes = Object.entries(ROUTES)
      .filter(
        ([key, route]) => route.fn === 'api' && !key.startsWith('OPTIONS') && key !== 'GET /openapi.json',
      )
      .map(([key]) => key)
      .sort();
    const documented = Object.entries(document.paths)
      .flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`))
      .sort();
    expect(documented).toEqual(apiRoutes);
    expect(ENDPOINTS.map((e) => e.route).sort()).toEqual(apiRoutes);
  });

  it('documents each route’s success and problem responses and its security', () => {
    for (const endpoint of ENDPOINTS) {
      const [method, path] = endpoint.route.split(' ') as [string, string];
      const operation = document.paths[path]![method.toLowerCase()]!;
      const expected = [...Object.keys(endpoint.responses), ...Object.keys(problemStatuses(endpoint))].sort();
      expect(Object.keys(operation.responses).sort()).toEqual(expected);
      const auth = ROUTES[endpoint.route].auth;
      expect(operation.security).toEqual(
        auth === 'none' ? [] : auth === 'user' ? [{ userJwt: [] }] : [{ awsSigV4: [] }],
      );
    }
  });

  it('is served at GET /openapi.json, identical to what npm run openapi writes', async () => {
    const { call } = testApi(db);
    const served = await call('GET /openapi.json');
    expect(served.status).toBe(200);
    expect(served.body).toEqual(JSON.parse(JSON.stringify(document)));
    const committed = JSON.parse(readFileSync(new URL('../../openapi.json', import.meta.url), 'utf8'));
    expect(committed, 'openapi.json is stale: run npm run openapi').toEqual(served.body);
  });

  it('answers an unknown route with a problem', async () => {
    const { route } = testApi(db);
    const response = await route({ ...apiEvent('GET /health'), routeKey: 'GET /v1/nope' });
    expect(response.statusCode).toBe(404);
    expect(JSON.parse(response.body ?? '{}')).toMatchObject({ code: 'not_found' });
  });
});
