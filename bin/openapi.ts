import { writeFileSync } from 'node:fs';
import { ENDPOINTS } from '../shared/api/index.js';
import { buildOpenApi } from '../shared/api/openapi.js';

/** `npm run openapi`: writes the OpenAPI 3.1 document generated from the endpoint schemas. */
const target = process.argv[2] ?? 'openapi.json';
writeFileSync(target, `${JSON.stringify(buildOpenApi(ENDPOINTS), null, 2)}\n`);
console.log(`wrote ${target} (${ENDPOINTS.length} operations)`);
