import * as z from 'zod';
import { ROUTES } from '../http/routes.js';
import type { Endpoint } from './endpoint.js';
import { problemSchema } from './schemas.js';

const jsonSchema = (schema: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return rest;
};

/**
 * Every problem status a route can answer: its own, plus those the router answers for any route of its
 * kind (invalid input, missing identity, refused origin, body size and type, unexpected failure).
 */
export function problemStatuses(endpoint: Endpoint): Record<number, string> {
  const auth = ROUTES[endpoint.route].auth;
  const statuses: Record<number, string> = {};
  if (endpoint.params || endpoint.query || endpoint.body || endpoint.headers) {
    statuses[400] = 'invalid input; the problem names the field';
  }
  if (auth !== 'none') statuses[401] = 'no caller identity from the authorizer';
  statuses[403] =
    auth === 'none' ? 'browser origin not allowed' : 'wrong kind of caller, or browser origin not allowed';
  if (endpoint.body) {
    statuses[413] = 'body too large';
    statuses[415] = 'body is not application/json';
  }
  return { ...statuses, ...endpoint.errors, 500: 'unexpected error (nothing about it is disclosed)' };
}

/** The OpenAPI 3.1 document, generated from the endpoints' own schemas. */
export function buildOpenApi(endpoints: readonly Endpoint[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const endpoint of endpoints) {
    const [method, path] = endpoint.route.split(' ') as [string, string];
    const auth = ROUTES[endpoint.route].auth;
    const parameters: unknown[] = [];
    const inputs = [
      ['path', endpoint.params],
      ['query', endpoint.query],
    ] as const;
    for (const [where, schema] of inputs) {
      if (!schema) continue;
      const { properties = {}, required = [] } = jsonSchema(schema, 'input') as {
        properties?: Record<string, unknown>;
        required?: string[];
      };
      for (const [name, property] of Object.entries(properties)) {
        parameters.push({
          name,
          in: where,
          required: where === 'path' || required.includes(name),
          schema: property,
        });
      }
    }
    for (const [name, header] of Object.entries(endpoint.headers ?? {})) {
      parameters.push({
        name,
        in: 'header',
        required: header.required,
        description: header.description,
        schema: { type: 'string' },
      });
    }
    const responses: Record<string, unknown> = {};
    for (const [status, response] of Object.entries(endpoint.responses)) {
      responses[status] = {
        description: response.description,
        content: { 'application/json': { schema: jsonSchema(response.schema, 'output') } },
      };
    }
    for (const [status, description] of Object.entries(problemStatuses(endpoint))) {
      responses[status] = {
        description,
        content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
      };
    }
    paths[path] ??= {};
    paths[path][method.toLowerCase()] = {
      operationId: endpoint.route.replace(/[^a-zA-Z0-9]+/g, '_').replace(/^_|_$/g, ''),
      summary: endpoint.summary,
      ...(auth === 'user' && { security: [{ userJwt: [] }] }),
      ...((auth === 'service' || auth === 'admin') && { security: [{ awsSigV4: [] }], 'x-caller': auth }),
      ...(auth === 'none' && { security: [] }),
      ...(parameters.length > 0 && { parameters }),
      ...(endpoint.body && {
        requestBody: {
          required: true,
          content: { 'application/json': { schema: jsonSchema(endpoint.body, 'input') } },
        },
      }),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Credits service',
      version: '1.0.0',
      description:
        'Prepaid credits: balances, purchases through Stripe Checkout, service spend, admin. Errors are application/problem+json (RFC 9457) with a stable `code`.',
    },
    paths,
    components: {
      schemas: { Problem: jsonSchema(problemSchema, 'output') },
      securitySchemes: {
        userJwt: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description: "The app's user token; the caller is its `sub`",
        },
        awsSigV4: {
          type: 'apiKey',
          name: 'Authorization',
          in: 'header',
          description:
            'AWS Signature Version 4 (service execute-api), checked by the API Gateway IAM authorizer',
        },
      },
    },
  };
}
