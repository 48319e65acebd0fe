import { existsSync } from 'node:fs';
import path from 'node:path';
import { LocalAuth } from '../local/auth.js';
import { isStorableText } from '../shared/credits.js';

/** `npm run token -- <userId>`: a bearer token from the local issuer, as the app's identity provider would issue. */
const userId = process.argv[2];
// What the api accepts as a token's subject (shared/api/router.ts): 1-255 characters Postgres stores exactly.
if (!userId || userId.length > 255 || !isStorableText(userId)) {
  console.error('usage: npm run -s token -- <userId>   (1-255 characters, no NUL, no lone surrogate)');
  process.exit(2);
}
const dataDir = process.env.DATA_DIR || '.data';
// LocalAuth.load would create a new signing key here, one the stack does not know: its tokens would be refused.
if (!existsSync(path.join(dataDir, 'local-auth.json'))) {
  console.error(
    `token: no local issuer key in ${path.join(dataDir, 'local-auth.json')}: start the stack first (\`npm start\`) with the same DATA_DIR`,
  );
  process.exit(1);
}
const auth = await LocalAuth.load(dataDir);
console.log(await auth.issueToken(userId));
