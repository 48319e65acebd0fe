import { existsSync } from 'node:fs';
import path from 'node:path';
import { LocalAuth } from '../local/auth.js';

/** `npm run token -- <userId>`: a bearer token from the local issuer, as the app's identity provider would issue. */
const userId = process.argv[2];
if (!userId || !/^[\w.@-]{1,64}$/.test(userId)) {
  console.error('usage: npm run -s token -- <userId>   (1-64 of A-Z a-z 0-9 _ . @ -)');
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
