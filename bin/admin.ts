import { runAdmin } from '../local/admin-cli.js';

/** `npm run admin -- <command>`: the admin CLI (local/admin-cli.ts); `npm run -s admin -- help` lists commands. */

/** Writes to stdout/stderr; a reader that went away (`| head -c1`) ends the process quietly. */
function writer(stream: NodeJS.WriteStream) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
  return (text: string) => stream.write(`${text}\n`);
}

process.exitCode = await runAdmin(process.argv.slice(2), {
  out: writer(process.stdout),
  err: writer(process.stderr),
});
