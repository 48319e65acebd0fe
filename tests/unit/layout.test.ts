import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The layout rules, read from the source so they survive: each table has exactly one module that inserts,
 * updates or deletes its rows, and the endpoints (shared/api/) and the handlers (functions/) hold no SQL.
 * The one exception is the debit itself: the database's `debit_credits` and `debit_usage` (migrations) write,
 * for a debit, rows of tables whose other changes have their module; a table only they write has no module
 * writing it.
 */
const root = path.resolve(import.meta.dirname, '../..');

function sources(dir: string): string[] {
  return readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts'))
    .map((file) => path.join(dir, file));
}

/** Every table of the schema, from the `Database` interface of shared/db/schema.ts. */
function tables(): string[] {
  const schema = readFileSync(path.join(root, 'shared/db/schema.ts'), 'utf8');
  const body = /export interface Database \{([^}]*)\}/.exec(schema)?.[1] ?? '';
  return [...body.matchAll(/^\s*(\w+):/gm)].map((m) => m[1]!);
}

/** The tables a source writes: kysely builders and raw SQL alike. */
function writes(source: string, table: string): boolean {
  const builder = new RegExp(`\\.(insertInto|updateTable|deleteFrom|replaceInto|mergeInto)\\(\\s*'${table}'`);
  const raw = new RegExp(
    `\\b(INSERT\\s+INTO|UPDATE|DELETE\\s+FROM|TRUNCATE)\\s+(?:TABLE\\s+)?"?${table}\\b`,
    'i',
  );
  return builder.test(source) || raw.test(source);
}

/** The tables the database's debit function writes, read from its migration. */
function debitFunctionWrites(): string[] {
  const migration = readFileSync(path.join(root, 'migrations/2026-12-12-debit-function.ts'), 'utf8');
  return tables().filter((table) => writes(migration, table));
}

describe('layout', () => {
  const files = [...sources('shared'), ...sources('functions')].filter((f) => f !== 'shared/db/schema.ts');
  const text = new Map(files.map((f) => [f, readFileSync(path.join(root, f), 'utf8')]));

  it('finds the schema and the sources it checks', () => {
    expect(tables()).toEqual(
      expect.arrayContaining(['accounts', 'ledger_entries', 'payments', 'admin_actions']),
    );
    expect(files.length).toBeGreaterThan(20);
  });

  it('gives each table exactly one module that writes it', () => {
    const writers = Object.fromEntries(
      tables().map((table) => [table, files.filter((f) => writes(text.get(f)!, table))]),
    );
    const byFunction = new Set(debitFunctionWrites());
    const notOne = Object.entries(writers).filter(
      ([table, modules]) => modules.length !== 1 && !(byFunction.has(table) && modules.length === 0),
    );
    expect(notOne).toEqual([]);
    // The function's tables are the debit's: none of the others.
    expect([...byFunction].sort()).toEqual(
      [
        'account_plans',
        'accounts',
        'credit_grants',
        'debit_days',
        'grant_allocations',
        'holds',
        'ledger_entries',
        'usage_events',
        'usage_rollups',
        'webhook_outbox',
      ].sort(),
    );
  });

  it('keeps SQL and table names out of the endpoints and the handlers', () => {
    const names = tables();
    const offending = files
      .filter((f) => f.startsWith('shared/api/') || f.startsWith('functions/'))
      .flatMap((f) => {
        const source = text.get(f)!;
        const found: string[] = [];
        if (/\b(selectFrom|insertInto|updateTable|deleteFrom)\(|\bsql`/.test(source)) found.push('SQL');
        for (const table of names) if (new RegExp(`['"\`]${table}['"\`]`).test(source)) found.push(table);
        return found.map((what) => `${f}: ${what}`);
      });
    expect(offending).toEqual([]);
  });
});
