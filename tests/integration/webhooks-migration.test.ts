import { randomBytes } from 'node:crypto';
import { Migrator, sql } from 'kysely';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, dropDatabase } from '../../local/postgres.js';
import { migrationProvider } from '../../migrations/index.js';
import { createDb } from '../../shared/db/client.js';

/** A database of its own, migrated by the test (not from the template), dropped after the file. */
const serverUrl = inject('postgresServerUrl');
const name = `credits_webhooks_migration_${randomBytes(6).toString('hex')}`;
const owner = createDb(await createDatabase(serverUrl, name), {
  max: 1,
  applicationName: 'credits-test-owner',
});
afterAll(async () => {
  await owner.destroy();
  await dropDatabase(serverUrl, name);
});

const allowedActions = async () => {
  const { rows } = await sql<{ definition: string }>`
    SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint WHERE conname = 'admin_actions_action_check'
  `.execute(owner);
  return [...(rows[0]?.definition ?? '').matchAll(/'([a-z_]+)'/g)].map((m) => m[1]);
};
const tables = async () => {
  const { rows } = await sql<{ name: string }>`
    SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'webhook%' ORDER BY 1
  `.execute(owner);
  return rows.map((r) => r.name);
};

describe('the webhooks migration', () => {
  it("adds its admin actions to whatever the check allows (another migration's too), and takes only its own back", async () => {
    const migrator = new Migrator({ db: owner, provider: migrationProvider });
    const names = Object.keys(await migrationProvider.getMigrations()).sort();
    const previous = names[names.indexOf('2026-12-07-webhooks') - 1]!;
    expect((await migrator.migrateTo(previous)).error).toBeUndefined();
    // What another migration of the same days (plans) may have done to the check before this one runs.
    const allowed = [...(await allowedActions()), 'set_plan'];
    await sql`
      ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
      ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check
        CHECK (action IN (${sql.join(allowed.map((a) => sql.lit(a)))}));
    `.execute(owner);

    expect((await migrator.migrateTo('2026-12-07-webhooks')).error).toBeUndefined();
    expect(await allowedActions()).toEqual(
      expect.arrayContaining([
        'set_plan',
        'adjust',
        'create_webhook_endpoint',
        'delete_webhook_endpoint',
        'redeliver_webhook',
      ]),
    );
    expect(await tables()).toEqual([
      'webhook_attempts',
      'webhook_deliveries',
      'webhook_endpoints',
      'webhook_outbox',
    ]);

    expect((await migrator.migrateTo(previous)).error).toBeUndefined();
    const after = await allowedActions();
    expect(after).toContain('set_plan');
    expect(after).not.toContain('redeliver_webhook');
    expect(await tables()).toEqual([]);
    expect((await migrator.migrateToLatest()).error).toBeUndefined();
    expect(await tables()).toHaveLength(4);
  });
});
