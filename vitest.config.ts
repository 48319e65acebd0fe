import path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['tests/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // expect.poll waits for what a page or a server does next: 1 s (vitest's default) is short for a
    // loaded 2-core machine running a browser, Postgres and two test files.
    expect: { poll: { timeout: 10_000 } },
    pool: 'forks',
    // Two cores: two test files at a time keeps Postgres and the workers from starving each other.
    maxWorkers: 2,
    env: {
      // Handlers run with Powertools as in Lambda, without writing logs and metrics over the test output.
      POWERTOOLS_LOG_LEVEL: 'SILENT',
      POWERTOOLS_METRICS_DISABLED: 'true',
      POWERTOOLS_TRACE_ENABLED: 'false',
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      // Node 22's module compile cache (enabled by tsx in the CLIs the tests spawn) lives in the repository,
      // not in /tmp, so a test run leaves nothing behind there.
      NODE_COMPILE_CACHE: path.resolve('node_modules/.cache/node-compile-cache'),
    },
  },
});
