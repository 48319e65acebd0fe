import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SQSClient,
  StartMessageMoveTaskCommand,
} from '@aws-sdk/client-sqs';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { importFromGenaiPrices } from '../shared/pricing/import.js';
import { WEBHOOK_EVENT_TYPES } from '../shared/webhooks/events.js';
import { LOCAL_REGION, LocalAuth, type LocalPrincipal, signRequest } from './auth.js';
import type { StackFile } from './stack.js';

/** The API's own bounds for `windowHours` (POST /v1/admin/reconciliation/runs). */
const MAX_WINDOW_HOURS = 24 * 90;
/** The API's bound for a coupon's `grantExpiresInDays`; grants use the same. */
const MAX_EXPIRY_DAYS = 3650;
const APPROVAL_STATUSES = ['pending', 'approved', 'rejected'] as const;
const CATEGORIES = ['paid', 'promotional'] as const;
const DELIVERY_STATUSES = ['pending', 'delivered', 'failed', 'dead'] as const;
/** The local principals that may sign admin calls (DATA_DIR/local-auth.json). */
const LOCAL_ADMINS = ['admin', 'second-admin'] as const;

interface OptionSpec {
  readonly value?: string;
  readonly help: string;
  readonly required?: boolean;
}

interface CommandSpec {
  readonly args: string;
  readonly summary: string;
  readonly options?: Record<string, OptionSpec>;
  /** Positional arguments: how many are required, how many allowed. */
  readonly positionals: readonly [min: number, max: number];
}

const reasonOption: OptionSpec = {
  value: 'R',
  help: 'why (audit trail, never shown to the user)',
  required: true,
};

const COMMANDS: Record<string, CommandSpec> = {
  account: {
    args: '<userId>',
    summary: 'balance, recent entries, payments, admin actions',
    positionals: [1, 1],
  },
  adjust: {
    args: '<userId> <amount>',
    summary: 'grant (positive) or remove (negative) credits; creates the account if unseen',
    positionals: [2, 2],
    options: {
      reason: reasonOption,
      description: {
        value: 'D',
        help: "the text the user sees in their history (default: the entry's kind)",
      },
    },
  },
  grant: {
    args: '<userId> <amount>',
    summary:
      'a grant with a category and an expiry; above the approval threshold it waits for a second admin',
    positionals: [2, 2],
    options: {
      reason: reasonOption,
      description: {
        value: 'D',
        help: "the text the user sees in their history (default: the entry's kind)",
      },
      category: { value: 'paid|promotional', help: 'what kind of credits (default: promotional)' },
      'expires-at': {
        value: 'ISO',
        help: 'when the grant expires, e.g. 2027-01-31T23:59:59Z (default: never)',
      },
      'expires-in-days': {
        value: 'N',
        help: `expires N days from now, 1-${MAX_EXPIRY_DAYS} (instead of --expires-at)`,
      },
    },
  },
  approvals: {
    args: '',
    summary: 'grants waiting for a second admin (or decided ones)',
    positionals: [0, 0],
    options: {
      status: { value: APPROVAL_STATUSES.join('|'), help: 'which approvals (default: pending)' },
    },
  },
  'approvals approve': {
    args: '<approvalId>',
    summary: 'approve a pending grant (an admin other than the requester): the grant is written, once',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  'approvals reject': {
    args: '<approvalId>',
    summary: 'reject a pending grant (an admin other than the requester): nothing is written',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  coupons: { args: '', summary: 'coupons, newest first, with their redemption counts', positionals: [0, 0] },
  'coupons create': {
    args: '<CODE> <credits>',
    summary: 'a coupon each account may redeem once for a promotional grant',
    positionals: [2, 2],
    options: {
      reason: reasonOption,
      'expires-in-days': {
        value: 'N',
        help: `each grant it makes expires N days after its redemption, 1-${MAX_EXPIRY_DAYS} (default: never)`,
      },
      'redeem-by': { value: 'ISO', help: 'last moment it can be redeemed (default: no end)' },
      'max-redemptions': { value: 'N', help: 'how many accounts in all may redeem it (default: no limit)' },
      plans: { value: 'a,b', help: 'only accounts on these plans may redeem it (default: any plan)' },
    },
  },
  prices: {
    args: '',
    summary: 'price book versions (draft, active, retired), newest first',
    positionals: [0, 0],
  },
  'prices show': {
    args: '<version>',
    summary: 'one price book version with its items',
    positionals: [1, 1],
  },
  'prices create': {
    args: '<FILE>',
    summary: 'a draft from a JSON file {version, items: [...]} (see the README for the item shapes)',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  'prices activate': {
    args: '<version>',
    summary: 'make a draft the active price book (the active one is retired at the same instant)',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  'prices import': {
    args: '',
    summary:
      'a draft from the @pydantic/genai-prices data set (USD per token), for the models or providers named',
    positionals: [0, 0],
    options: {
      reason: reasonOption,
      version: { value: 'V', help: 'the new version name', required: true },
      'credits-per-usd': {
        value: 'N',
        help: 'credits one US dollar buys (a positive decimal)',
        required: true,
      },
      markup: {
        value: 'M',
        help: 'multiplier on the provider price, e.g. 1.2 (a positive decimal)',
        required: true,
      },
      model: { value: 'p/m,...', help: 'the models to import, comma-separated, e.g. openai/gpt-4o' },
      provider: { value: 'p,...', help: 'every model of these providers, comma-separated, e.g. anthropic' },
    },
  },
  'coupons disable': {
    args: '<CODE>',
    summary: 'later redemptions are refused; the grants already made stay',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  freeze: {
    args: '<userId>',
    summary: 'refuse spend and checkout',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  unfreeze: {
    args: '<userId>',
    summary: 'allow spend and checkout again',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  plan: {
    args: '<userId> <planId>',
    summary: "move an account to a plan (PLANS); moving up mid-month grants the allowances' difference",
    positionals: [2, 2],
    options: { reason: reasonOption },
  },
  anonymize: {
    args: '<userId>',
    summary: 'GDPR erasure (idempotent)',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  reconcile: {
    args: '',
    summary: 'start a reconciliation run and wait for its result',
    positionals: [0, 0],
    options: {
      'window-hours': {
        value: 'N',
        help: `hours back from now, 1-${MAX_WINDOW_HOURS} (default: 48, or 30 days before a first successful run)`,
      },
      'no-wait': { help: 'print the started run without waiting' },
    },
  },
  runs: { args: '[runId]', summary: 'reconciliation runs, or one with its findings', positionals: [0, 1] },
  parked: { args: '', summary: 'events that could not be applied', positionals: [0, 0] },
  replay: {
    args: '<eventId>',
    summary: 'apply a parked event again',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  invariants: { args: '', summary: 'the ledger invariant report', positionals: [0, 0] },
  dlq: {
    args: '[redrive]',
    summary: 'dead-letter queue: count and peek, or move everything back',
    positionals: [0, 1],
    options: {
      'dlq-url': { value: 'URL', help: 'the queue (deployed stage: the stack output DeadLetterQueueUrl)' },
    },
  },
  webhooks: {
    args: '',
    summary: 'outbound webhook endpoints, newest first (webhooks list does the same)',
    positionals: [0, 0],
  },
  'webhooks list': { args: '', summary: 'outbound webhook endpoints, newest first', positionals: [0, 0] },
  'webhooks add': {
    args: '<url>',
    summary: 'register an endpoint; prints its signing secret, the only time it is shown',
    positionals: [1, 1],
    options: {
      events: {
        value: 'a,b',
        help: `event types, comma-separated: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
        required: true,
      },
      description: { value: 'D', help: 'what the endpoint is, for operators' },
      reason: { value: 'R', help: 'why (audit trail; default: registered a webhook endpoint)' },
    },
  },
  'webhooks delete': {
    args: '<id>',
    summary: 'delete an endpoint: it receives nothing more',
    positionals: [1, 1],
  },
  deliveries: {
    args: '',
    summary: 'the webhook delivery log, newest first',
    positionals: [0, 0],
    options: {
      status: { value: DELIVERY_STATUSES.join('|'), help: 'only deliveries in this status' },
      // --endpoint is taken: it names a deployed stage.
      'endpoint-id': { value: 'ID', help: 'only deliveries to this webhook endpoint' },
      limit: { value: 'N', help: 'how many, 1-100 (default: 20)' },
    },
  },
  'deliveries redeliver': {
    args: '<id>',
    summary: 'send a delivery again now, with the same webhook-id and a fresh retry schedule',
    positionals: [1, 1],
    options: { reason: reasonOption },
  },
  help: { args: '[command]', summary: 'this text, or one command in detail', positionals: [0, 2] },
};

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  endpoint: { value: 'URL', help: 'a deployed stage (default: CREDITS_ENDPOINT, else the local stack)' },
  region: { value: 'R', help: 'AWS region of a deployed stage (default: AWS_REGION)' },
  as: {
    value: 'P',
    help: 'local stack only: the local principal that signs, admin (default) or second-admin (four-eyes approvals); against a deployed stage your AWS credentials sign (choose them with AWS_PROFILE)',
  },
  help: { help: 'show help' },
};

const PROGRAM = 'npm run -s admin --';

const synopsis = (name: string) => {
  const spec = COMMANDS[name]!;
  const options = Object.entries(spec.options ?? {}).map(([key, o]) => {
    const text = `--${key}${o.value ? ` ${o.value}` : ''}`;
    return o.required ? text : `[${text}]`;
  });
  return [name, spec.args, ...options].filter(Boolean).join(' ');
};

/** The actions of a command group (`approvals approve`, ...): the commands named `<group> <action>`. */
const actionsOf = (group: string) => Object.keys(COMMANDS).filter((name) => name.startsWith(`${group} `));

/** `approvals approve x` names the command `approvals approve` with the argument x; `approvals` alone is one. */
function resolveCommand(positionals: readonly string[]): { command: string; args: string[] } {
  const [first = '', second, ...rest] = positionals;
  const action = `${first} ${second}`;
  if (second !== undefined && COMMANDS[action]) return { command: action, args: rest };
  return { command: first, args: positionals.slice(1) };
}

function overallHelp(): string {
  const rows = Object.keys(COMMANDS).map((name) => {
    const text = synopsis(name);
    const summary = COMMANDS[name]!.summary;
    return text.length > 52 ? `  ${text}\n  ${''.padEnd(52)} ${summary}` : `  ${text.padEnd(52)} ${summary}`;
  });
  return `usage: ${PROGRAM} <command> [args] [--endpoint URL] [--region R] [--as P]

${rows.join('\n')}

Prints JSON on stdout, messages on stderr. Exit codes: 0 done, 1 failed (the API refused, or it cannot be
reached), 2 wrong usage. Locally it finds the stack that \`npm start\` runs with the same DATA_DIR (default
.data) and signs with its admin credentials; for a deployed stage pass --endpoint (or CREDITS_ENDPOINT):
requests are SigV4-signed with the default AWS credential chain. Locally, --as second-admin signs as the
stack's second admin (to approve another admin's grant). \`${PROGRAM} <command> --help\` for one.`;
}

function commandHelp(name: string): string {
  const spec = COMMANDS[name]!;
  const options = { ...spec.options, ...GLOBAL_OPTIONS };
  const label = (key: string, o: OptionSpec) => `--${key}${o.value ? ` ${o.value}` : ''}`;
  const width = Math.max(20, ...Object.entries(options).map(([key, o]) => label(key, o).length + 1));
  const rows = Object.entries(options).map(
    ([key, o]) => `  ${label(key, o).padEnd(width)} ${o.help}${o.required ? ' (required)' : ''}`,
  );
  const actions = actionsOf(name).map((action) => `  ${synopsis(action)}`);
  return `usage: ${PROGRAM} ${synopsis(name)}\n\n${spec.summary}\n\n${rows.join('\n')}${
    actions.length ? `\n\nactions (${PROGRAM} ${name} <action> --help for one):\n${actions.join('\n')}` : ''
  }`;
}

class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

/** An error the operator can act on: printed as one line, exit 1. */
class AdminError extends Error {}

interface Parsed {
  readonly command: string;
  readonly args: string[];
  readonly options: Record<string, string | true>;
}

/**
 * Splits argv into a command, its positionals and its options. A token like `-100` is a number, not an
 * option; `--` ends the options; `--name=value` and `--name value` both work.
 */
function parse(argv: string[]): Parsed {
  const positionals: string[] = [];
  const options: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const command = positionals.length ? resolveCommand(positionals).command : undefined;
    if (token === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (token === '-h') options.help = true;
    else if (token.startsWith('--')) {
      const eq = token.indexOf('=');
      const name = eq > 0 ? token.slice(2, eq) : token.slice(2);
      const inline = eq > 0 ? token.slice(eq + 1) : undefined;
      const spec = lookupOption(command, name);
      if (!spec) {
        if (command && !COMMANDS[command]) throw new UsageError(`unknown command ${command}`);
        if (command && actionsOf(command).length && positionals.length > 1)
          throw new UsageError(unknownAction(command, positionals[1]!), command);
        throw new UsageError(`unknown option --${name}`, command);
      }
      if (spec.value) {
        const next = argv[i + 1];
        const value = inline ?? (next !== undefined && !next.startsWith('--') ? argv[++i] : undefined);
        if (!value) throw new UsageError(`--${name} needs a value (${spec.value})`, command);
        options[name] = value;
      } else {
        if (inline !== undefined) throw new UsageError(`--${name} takes no value`, command);
        options[name] = true;
      }
    } else if (token.startsWith('-') && !/^-\d/.test(token)) {
      throw new UsageError(`unknown option ${token}`, command);
    } else positionals.push(token);
  }
  return { ...resolveCommand(positionals), options };
}

function lookupOption(command: string | undefined, name: string): OptionSpec | undefined {
  return GLOBAL_OPTIONS[name] ?? (command ? COMMANDS[command]?.options?.[name] : undefined);
}

const unknownAction = (group: string, action: string) =>
  `${group}: unknown action ${action} (${actionsOf(group)
    .map((name) => name.slice(group.length + 1))
    .join(' or ')})`;

const WHOLE = /^\d+$/;
/** An instant with its offset (as the API takes it), e.g. 2027-01-31T23:59:59Z or 2027-01-31T12:00+02:00. */
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;
const COUPON_CODE = /^[A-Za-z0-9_-]{3,64}$/;
const POSITIVE_DECIMAL = /^\d+(\.\d+)?$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A whole number from 1 to max, or a usage error naming the option. */
function checkWhole(command: string, name: string, value: string | true | undefined, max: number): void {
  if (typeof value !== 'string') return;
  if (!WHOLE.test(value) || Number(value) < 1 || Number(value) > max)
    throw new UsageError(
      `${command}: ${name} must be a whole number from 1 to ${max.toLocaleString('en-US')}, got ${value}`,
      command,
    );
}

function checkInstant(command: string, name: string, value: string | true | undefined): void {
  if (typeof value !== 'string') return;
  if (!ISO_INSTANT.test(value) || Number.isNaN(Date.parse(value)))
    throw new UsageError(
      `${command}: ${name} must be an ISO 8601 instant with its offset, e.g. 2027-01-31T23:59:59Z, got ${value}`,
      command,
    );
}

function checkPositiveCredits(command: string, name: string, value: string, hint = ''): void {
  if (!WHOLE.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) === 0)
    throw new UsageError(
      `${command}: ${name} must be a positive whole number of credits${hint}, got ${value}`,
      command,
    );
}

function validate({ command, args, options }: Parsed): void {
  const spec = COMMANDS[command];
  if (!spec) throw new UsageError(`unknown command ${command}`);
  if (actionsOf(command).length && args.length > spec.positionals[1])
    throw new UsageError(unknownAction(command, args[0]!), command);
  const [min, max] = spec.positionals;
  if (args.length < min)
    throw new UsageError(`${command}: ${spec.args.split(' ')[args.length]} is required`, command);
  if (args.length > max) throw new UsageError(`${command}: unexpected argument ${args[max]}`, command);
  for (const [name, o] of Object.entries(spec.options ?? {})) {
    if (o.required && options[name] === undefined)
      throw new UsageError(`${command}: --${name} is required`, command);
  }
  if (command === 'help' && args.length && !COMMANDS[args.join(' ')])
    throw new UsageError(`unknown command ${args.join(' ')}`);
  if (command === 'dlq' && args[0] !== undefined && args[0] !== 'redrive')
    throw new UsageError(`dlq: unknown action ${args[0]} (only redrive)`, command);
  if (command === 'adjust') {
    const amount = Number(args[1]);
    if (!/^-?\d+$/.test(args[1]!) || !Number.isSafeInteger(amount) || amount === 0)
      throw new UsageError(
        `adjust: <amount> must be a non-zero whole number of credits, got ${args[1]}`,
        command,
      );
  }
  if (command === 'grant') {
    checkPositiveCredits(command, '<amount>', args[1]!, ' (to remove credits, use adjust)');
    const category = options.category;
    if (typeof category === 'string' && !(CATEGORIES as readonly string[]).includes(category))
      throw new UsageError(`grant: --category must be ${CATEGORIES.join(' or ')}, got ${category}`, command);
    if (options['expires-at'] !== undefined && options['expires-in-days'] !== undefined)
      throw new UsageError('grant: give --expires-at or --expires-in-days, not both', command);
    checkInstant(command, '--expires-at', options['expires-at']);
  }
  if (command === 'grant' || command === 'coupons create')
    checkWhole(command, '--expires-in-days', options['expires-in-days'], MAX_EXPIRY_DAYS);
  const status = options.status;
  if (command === 'deliveries') {
    if (typeof status === 'string' && !(DELIVERY_STATUSES as readonly string[]).includes(status))
      throw new UsageError(
        `deliveries: --status must be ${DELIVERY_STATUSES.join(', ')}, got ${status}`,
        command,
      );
    // --endpoint-id filters the log; --endpoint is the deployed stage's URL, as for every command.
    const endpointId = options['endpoint-id'];
    if (typeof endpointId === 'string' && !UUID.test(endpointId))
      throw new UsageError(
        `deliveries: --endpoint-id must be an endpoint id (a UUID), got ${endpointId}`,
        command,
      );
    checkWhole(command, '--limit', options.limit, 100);
  }
  if ((command === 'webhooks delete' || command === 'deliveries redeliver') && !UUID.test(args[0]!))
    throw new UsageError(`${command}: <id> must be an id (a UUID), got ${args[0]}`, command);
  if (command === 'webhooks add') {
    const events = String(options.events)
      .split(',')
      .map((e) => e.trim());
    const unknown = events.filter((e) => !(WEBHOOK_EVENT_TYPES as readonly string[]).includes(e));
    if (unknown.length > 0)
      throw new UsageError(
        `webhooks add: unknown event type ${unknown.join(', ')} in --events (known: ${WEBHOOK_EVENT_TYPES.join(', ')})`,
        command,
      );
  }
  if (
    command.startsWith('approvals') &&
    typeof status === 'string' &&
    !(APPROVAL_STATUSES as readonly string[]).includes(status)
  )
    throw new UsageError(
      `approvals: --status must be ${APPROVAL_STATUSES.join(', ')}, got ${status}`,
      command,
    );
  if ((command === 'approvals approve' || command === 'approvals reject') && !UUID.test(args[0]!))
    throw new UsageError(`${command}: <approvalId> must be an approval id (a UUID), got ${args[0]}`, command);
  if (command === 'prices import') {
    for (const name of ['credits-per-usd', 'markup'] as const) {
      const value = options[name];
      if (typeof value === 'string' && !(POSITIVE_DECIMAL.test(value) && Number(value) > 0))
        throw new UsageError(`prices import: --${name} must be a positive decimal, got ${value}`, command);
    }
    if (options.model === undefined && options.provider === undefined)
      throw new UsageError(
        'prices import: name the models (--model) or providers (--provider) to import',
        command,
      );
  }
  if ((command === 'coupons create' || command === 'coupons disable') && !COUPON_CODE.test(args[0]!))
    throw new UsageError(
      `${command}: <CODE> must be 3-64 of A-Z, a-z, 0-9, _ and -, got ${args[0]}`,
      command,
    );
  if (command === 'coupons create') {
    checkPositiveCredits(command, '<credits>', args[1]!);
    checkInstant(command, '--redeem-by', options['redeem-by']);
    checkWhole(command, '--max-redemptions', options['max-redemptions'], 1_000_000_000);
    const plans = options.plans;
    if (typeof plans === 'string' && plans.split(',').some((plan) => !plan.trim()))
      throw new UsageError(
        `coupons create: --plans must be plan ids separated by commas, got ${plans}`,
        command,
      );
  }
  const as = options.as;
  if (typeof as === 'string' && !(LOCAL_ADMINS as readonly string[]).includes(as))
    throw new UsageError(`--as must be ${LOCAL_ADMINS.join(' or ')}, got ${as}`, command);
  const hours = options['window-hours'];
  if (typeof hours === 'string') {
    const n = Number(hours);
    if (!/^\d+$/.test(hours) || n < 1 || n > MAX_WINDOW_HOURS)
      throw new UsageError(
        `reconcile: --window-hours must be a whole number from 1 to ${MAX_WINDOW_HOURS}, got ${hours}`,
        command,
      );
  }
  if (typeof options.endpoint === 'string' && !URL.canParse(options.endpoint))
    throw new UsageError(`--endpoint must be a URL, got ${options.endpoint}`, command);
}

export interface AdminIo {
  out(text: string): void;
  err(text: string): void;
}

interface Target {
  readonly endpoint: URL;
  readonly local: boolean;
  readonly dataDir: string;
}

/** The stack `npm start` recorded in dataDir (local/stack.ts writes it), if any. */
function readStackFile(dataDir: string): StackFile | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dataDir, 'stack.json'), 'utf8')) as StackFile;
  } catch {
    return undefined;
  }
}

/** Where to send requests: --endpoint, CREDITS_ENDPOINT, the stack recorded in DATA_DIR, or the default port. */
function findTarget(options: Parsed['options'], env: NodeJS.ProcessEnv): Target {
  const dataDir = path.resolve(env.DATA_DIR || '.data');
  const explicit = (options.endpoint as string | undefined) ?? (env.CREDITS_ENDPOINT || undefined);
  const endpoint = new URL(explicit ?? readStackFile(dataDir)?.url ?? `http://127.0.0.1:${env.PORT || 3000}`);
  const local = ['127.0.0.1', 'localhost', '[::1]'].includes(endpoint.hostname);
  return { endpoint, local, dataDir };
}

const unreachable = (target: Target) =>
  target.local
    ? `cannot reach ${target.endpoint.origin}: is \`npm start\` running?${target.dataDir === path.resolve('.data') ? '' : ` (DATA_DIR=${target.dataDir})`}`
    : `cannot reach ${target.endpoint.origin}`;

/** True for the errors fetch and the AWS SDK raise when nothing answers. */
function isConnectionError(error: unknown): boolean {
  for (
    let e: unknown = error;
    e instanceof Error || (e && typeof e === 'object');
    e = (e as { cause?: unknown }).cause
  ) {
    const code = (e as { code?: unknown }).code;
    if (
      ['ECONNREFUSED', 'ENOTFOUND', 'ECONNRESET', 'EHOSTUNREACH', 'ETIMEDOUT', 'EAI_AGAIN'].includes(
        String(code),
      )
    )
      return true;
    if (!(e as { cause?: unknown }).cause) break;
  }
  return error instanceof TypeError && error.message === 'fetch failed';
}

/** Runs one admin command; returns the process exit code. Never throws. */
export async function runAdmin(
  argv: string[],
  io: AdminIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let parsed: Parsed;
  let target: Target;
  try {
    parsed = parse(argv);
    if (parsed.options.help || parsed.command === 'help' || parsed.command === '') {
      const about = parsed.command === 'help' ? parsed.args.join(' ') : parsed.command;
      if (about && !COMMANDS[about]) throw new UsageError(`unknown command ${about}`);
      if (!parsed.options.help && parsed.command === '') {
        io.err(overallHelp());
        return 2;
      }
      io.out(about ? commandHelp(about) : overallHelp());
      return 0;
    }
    validate(parsed);
    target = findTarget(parsed.options, env);
    if (parsed.options.as !== undefined && !target.local)
      throw new UsageError(
        `--as chooses a local principal; against ${target.endpoint.origin} your AWS credentials sign (choose them with AWS_PROFILE)`,
        parsed.command,
      );
  } catch (error: unknown) {
    if (!(error instanceof UsageError)) throw error;
    const known = error.command && COMMANDS[error.command] ? error.command : undefined;
    io.err(
      `${error.message}\nusage: ${PROGRAM} ${known ? synopsis(known) : '<command> [args]'}   (${PROGRAM} ${known ? `${known} --help` : 'help'} for more)`,
    );
    return 2;
  }
  try {
    const result = await execute(parsed, target, env, io);
    io.out(JSON.stringify(result, null, 2));
    return 0;
  } catch (error: unknown) {
    if (error instanceof ApiError) {
      io.out(JSON.stringify(error.body, null, 2));
      io.err(error.message);
    } else if (error instanceof AdminError) io.err(error.message);
    else if (isConnectionError(error)) io.err(unreachable(target));
    else io.err(`${parsed.command} failed: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

class ApiError extends Error {
  constructor(
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
}

async function localCredentials(
  target: Target,
  name: (typeof LOCAL_ADMINS)[number],
): Promise<LocalPrincipal> {
  const file = path.join(target.dataDir, 'local-auth.json');
  // LocalAuth.load would create new keys that the running stack does not know.
  if (!existsSync(file)) {
    const answering = await fetch(new URL('/_local/info', target.endpoint)).then(
      () => true,
      () => false,
    );
    throw new AdminError(
      answering
        ? `no local credentials in ${file}: the stack at ${target.endpoint.origin} runs with another DATA_DIR; set DATA_DIR to it`
        : unreachable(target),
    );
  }
  return (await LocalAuth.load(target.dataDir)).principal(name);
}

async function execute(
  { command, args, options }: Parsed,
  target: Target,
  env: NodeJS.ProcessEnv,
  io: AdminIo,
): Promise<unknown> {
  const { endpoint, local } = target;
  const signer = (options.as as (typeof LOCAL_ADMINS)[number] | undefined) ?? 'admin';
  const credentials = local ? await localCredentials(target, signer) : await defaultProvider()();
  const region = local
    ? LOCAL_REGION
    : ((options.region as string | undefined) ?? env.AWS_REGION ?? LOCAL_REGION);

  /** The answer's status and body; a refusal (not 2xx) is thrown as an ApiError. */
  async function request(
    method: 'GET' | 'POST' | 'PUT' | 'DELETE',
    route: string,
    body?: unknown,
  ): Promise<{ status: number; body: unknown }> {
    const url = new URL(route, endpoint);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = await signRequest(
      url,
      { method, body: payload, headers: payload ? { 'content-type': 'application/json' } : {} },
      credentials,
      region,
    );
    const response = await fetch(url, { method, headers, body: payload });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { status: response.status, body: text.slice(0, 500) };
    }
    if (!response.ok) throw new ApiError(await describeRefusal(response.status, parsed), parsed);
    return { status: response.status, body: parsed };
  }

  const call = async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', route: string, body?: unknown) =>
    (await request(method, route, body)).body;

  /** An adjustment, and on stderr what happens next when it waits for a second admin (202). */
  async function adjust(body: Record<string, unknown>): Promise<unknown> {
    const answer = await request('POST', `/v1/admin/accounts/${user}/adjustments`, body);
    if (answer.status === 202) {
      const { approvalId } = answer.body as { approvalId: string };
      io.err(
        `${command}: above the approval threshold, so nothing is granted yet: it waits for a second admin.\n` +
          `another admin approves it with: ${PROGRAM} approvals approve ${approvalId} --reason R` +
          (local ? ' --as second-admin' : ''),
      );
    }
    return answer.body;
  }

  async function describeRefusal(status: number, body: unknown): Promise<string> {
    const problem = (body ?? {}) as { code?: unknown; detail?: unknown; title?: unknown; message?: unknown };
    const text = [problem.detail, problem.title, problem.message].find((v) => typeof v === 'string');
    const line = `${command}: HTTP ${status}${typeof problem.code === 'string' ? ` ${problem.code}` : ''}${text ? `: ${text}` : ''}`;
    if (!local || (status !== 401 && status !== 403)) return line;
    const info = (await fetch(new URL('/_local/info', endpoint))
      .then((r) => r.json())
      .catch(() => undefined)) as { dataDir?: string } | undefined;
    return info?.dataDir && path.resolve(info.dataDir) !== target.dataDir
      ? `${line}\nthe stack at ${endpoint.origin} runs with DATA_DIR=${info.dataDir}; run the CLI with the same DATA_DIR`
      : line;
  }
  const user = encodeURIComponent(args[0] ?? '');
  const reason = options.reason as string;

  switch (command) {
    case 'account':
      return call('GET', `/v1/admin/accounts/${user}`);
    case 'adjust':
      return adjust({
        amount: Number(args[1]),
        reason,
        ...(typeof options.description === 'string' && { description: options.description }),
      });
    case 'grant': {
      const days = options['expires-in-days'];
      const expiresAt =
        typeof days === 'string'
          ? new Date(Date.now() + Number(days) * 86_400_000)
          : typeof options['expires-at'] === 'string'
            ? new Date(options['expires-at'])
            : undefined;
      return adjust({
        amount: Number(args[1]),
        reason,
        ...(typeof options.description === 'string' && { description: options.description }),
        ...(typeof options.category === 'string' && { category: options.category }),
        ...(expiresAt && { expiresAt: expiresAt.toISOString() }),
      });
    }
    case 'approvals':
      return call('GET', `/v1/admin/approvals?status=${(options.status as string | undefined) ?? 'pending'}`);
    case 'approvals approve':
    case 'approvals reject':
      return call(
        'POST',
        `/v1/admin/approvals/${encodeURIComponent(args[0]!)}/${command === 'approvals approve' ? 'approve' : 'reject'}`,
        { reason },
      );
    case 'prices':
      return call('GET', '/v1/admin/prices');
    case 'prices show':
      return call('GET', `/v1/admin/prices/${encodeURIComponent(args[0]!)}`);
    case 'prices create': {
      let book: unknown;
      try {
        // Relative to where the operator typed the command (npm runs scripts from the package root).
        book = JSON.parse(
          readFileSync(path.resolve(process.env.INIT_CWD ?? process.cwd(), args[0]!), 'utf8'),
        );
      } catch (error: unknown) {
        throw new AdminError(
          `cannot read ${args[0]} as JSON: ${error instanceof Error ? error.message : error}`,
        );
      }
      return call('POST', '/v1/admin/prices', { ...(book as object), reason });
    }
    case 'prices activate':
      return call('POST', `/v1/admin/prices/${encodeURIComponent(args[0]!)}/activate`, { reason });
    case 'prices import': {
      const list = (value: string | true | undefined) =>
        typeof value === 'string'
          ? value
              .split(',')
              .map((v) => v.trim())
              .filter(Boolean)
          : undefined;
      const imported = await importFromGenaiPrices({
        creditsPerUsd: options['credits-per-usd'] as string,
        markup: options.markup as string,
        models: list(options.model),
        providers: list(options.provider),
      });
      if (imported.items.length === 0) {
        throw new AdminError('prices import: no model of the data set matched --model / --provider');
      }
      for (const skipped of imported.skipped) io.err(`skipped ${skipped.sku}: ${skipped.reason}`);
      for (const note of imported.notes) io.err(`note ${note.sku}: ${note.note}`);
      return call('POST', '/v1/admin/prices', { version: options.version, items: imported.items, reason });
    }
    case 'coupons':
      return call('GET', '/v1/admin/coupons');
    case 'coupons create': {
      const days = options['expires-in-days'];
      const redeemBy = options['redeem-by'];
      const max = options['max-redemptions'];
      const plans = options.plans;
      return call('POST', '/v1/admin/coupons', {
        code: args[0],
        credits: Number(args[1]),
        reason,
        ...(typeof days === 'string' && { grantExpiresInDays: Number(days) }),
        ...(typeof redeemBy === 'string' && { redeemBy: new Date(redeemBy).toISOString() }),
        ...(typeof max === 'string' && { maxRedemptions: Number(max) }),
        ...(typeof plans === 'string' && { plans: plans.split(',').map((plan) => plan.trim()) }),
      });
    }
    case 'coupons disable':
      return call('POST', `/v1/admin/coupons/${encodeURIComponent(args[0]!)}/disable`, { reason });
    case 'plan':
      return call('PUT', `/v1/admin/accounts/${user}/plan`, { planId: args[1], reason });
    case 'freeze':
    case 'unfreeze':
    case 'anonymize':
      return call('POST', `/v1/admin/accounts/${user}/${command}`, { reason });
    case 'reconcile': {
      const windowHours = options['window-hours'] ? Number(options['window-hours']) : undefined;
      let run = (await call('POST', '/v1/admin/reconciliation/runs', windowHours ? { windowHours } : {})) as {
        id: string;
        status: string;
      };
      while (!options['no-wait'] && run.status === 'running') {
        await new Promise((resolve) => setTimeout(resolve, 500));
        run = (await call('GET', `/v1/admin/reconciliation/runs/${run.id}`)) as typeof run;
      }
      return run;
    }
    case 'runs':
      return call(
        'GET',
        args[0]
          ? `/v1/admin/reconciliation/runs/${encodeURIComponent(args[0])}`
          : '/v1/admin/reconciliation/runs',
      );
    case 'parked':
      return call('GET', '/v1/admin/parked-events');
    case 'replay':
      return call('POST', `/v1/admin/parked-events/${encodeURIComponent(args[0]!)}/replay`, { reason });
    case 'invariants':
      return call('GET', '/v1/admin/invariants');
    case 'webhooks':
    case 'webhooks list':
      return call('GET', '/v1/admin/webhook-endpoints');
    case 'webhooks add':
      return call('POST', '/v1/admin/webhook-endpoints', {
        url: args[0],
        events: String(options.events)
          .split(',')
          .map((e) => e.trim()),
        ...(typeof options.description === 'string' && { description: options.description }),
        ...(typeof options.reason === 'string' && { reason: options.reason }),
      });
    case 'webhooks delete':
      return call('DELETE', `/v1/admin/webhook-endpoints/${encodeURIComponent(args[0]!)}`);
    case 'deliveries': {
      const query = new URLSearchParams();
      for (const [name, param] of [
        ['status', 'status'],
        ['endpoint-id', 'endpoint'],
        ['limit', 'limit'],
      ] as const) {
        const value = options[name];
        if (typeof value === 'string') query.set(param, value);
      }
      return call('GET', `/v1/admin/webhook-deliveries${query.size ? `?${query}` : ''}`);
    }
    case 'deliveries redeliver':
      return call('POST', `/v1/admin/webhook-deliveries/${encodeURIComponent(args[0]!)}/redeliver`, {
        reason,
      });
    case 'dlq': {
      const info = local
        ? ((await (await fetch(new URL('/_local/info', endpoint))).json()) as { dlqUrl: string })
        : undefined;
      const queueUrl = (options['dlq-url'] as string | undefined) ?? env.CREDITS_DLQ_URL ?? info?.dlqUrl;
      if (!queueUrl)
        throw new AdminError(
          'dlq: --dlq-url is required for a deployed stage (the stack output DeadLetterQueueUrl)',
        );
      const sqs = new SQSClient({ region, credentials, ...(local && { endpoint: endpoint.origin }) });
      const attributes = await sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: queueUrl,
          AttributeNames: ['QueueArn', 'ApproximateNumberOfMessages'],
        }),
      );
      if (args[0] === 'redrive') {
        const task = await sqs.send(
          new StartMessageMoveTaskCommand({ SourceArn: attributes.Attributes!.QueueArn! }),
        );
        return {
          redrive: 'started',
          taskHandle: task.TaskHandle,
          messages: Number(attributes.Attributes!.ApproximateNumberOfMessages),
        };
      }
      // A peek: received with a zero visibility timeout, so the messages stay available.
      const peek = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 0,
          MessageAttributeNames: ['All'],
        }),
      );
      return {
        messages: Number(attributes.Attributes!.ApproximateNumberOfMessages),
        sample: (peek.Messages ?? []).map((m) => ({
          messageId: m.MessageId,
          eventId: m.MessageAttributes?.eventId?.StringValue ?? null,
          eventType: m.MessageAttributes?.eventType?.StringValue ?? null,
          body: m.Body?.slice(0, 300),
        })),
      };
    }
    default:
      throw new AdminError(`unknown command ${command}`);
  }
}
