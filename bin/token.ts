import { LocalAuth } from '../local/auth.js';

/** `npm run token -- <userId>`: a bearer token from the local issuer, as the app's identity provider would issue. */
const userId = process.argv[2];
if (!userId || !/^[\w.@-]{1,64}$/.test(userId)) {
  console.error('usage: npm run token -- <userId>   (1-64 of A-Z a-z 0-9 _ . @ -)');
  process.exit(2);
}
const auth = await LocalAuth.load(process.env.DATA_DIR ?? '.data');
console.log(await auth.issueToken(userId));
