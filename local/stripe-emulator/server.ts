import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CheckoutLineItem, type CheckoutPromotion, checkoutPage } from './checkout-page.js';
import { API_VERSION, type CheckoutOutcome, Emulator, publicView } from './emulator.js';
import { invalid, StripeApiError } from './errors.js';
import { type Params, parseParams, str } from './params.js';
import { PromotionCodeRefused } from './promotions.js';
import { newId, paginate, type StripeObject } from './store.js';
import { type DeliveryOptions, WebhookDispatcher } from './webhooks.js';

export interface StripeEmulatorOptions {
  /** @default 12111; 0 picks a free port */
  readonly port?: number;
  /** Webhook delivery target, e.g. the local intake; settable later through the control API. */
  readonly webhookEndpoint?: string;
  /** The signing secret (`whsec_...`) shared with the intake. */
  readonly webhookSecret: string;
  /** Keep state in this JSON file across restarts. @default in memory only */
  readonly stateFile?: string;
  /** Delay before a delayed payment method settles on the hosted page. @default 3000 */
  readonly asyncSettleMs?: number;
  readonly delivery?: Omit<DeliveryOptions, 'endpoint' | 'secret'>;
}

export interface RunningStripeEmulator {
  /** Base URL, e.g. http://127.0.0.1:12111 */
  readonly url: string;
  readonly port: number;
  readonly emulator: Emulator;
  readonly webhooks: WebhookDispatcher;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;
const ID_PREFIX_KIND: Record<string, string> = {
  pi: 'payment_intent',
  ch: 'charge',
  cus: 'customer',
  re: 'refund',
  dp: 'dispute',
  cs: 'checkout.session',
  prod: 'product',
  price: 'price',
  promo: 'promotion_code',
  pm: 'payment_method',
};

interface StoredResponse {
  route: string;
  paramsHash: string;
  status: number;
  body: string;
}

type Handler = (match: RegExpMatchArray, params: Params, url: URL) => unknown;

/**
 * Starts the emulator on 127.0.0.1: the Stripe REST subset the project uses, the hosted checkout page,
 * signed webhook delivery and the `/_emulator/` control API. Laptop and test wiring only.
 */
export async function startStripeEmulator(options: StripeEmulatorOptions): Promise<RunningStripeEmulator> {
  let baseUrl = '';
  const webhooks = new WebhookDispatcher({
    ...options.delivery,
    endpoint: options.webhookEndpoint,
    secret: options.webhookSecret,
  });
  const emulator = new Emulator(() => baseUrl, { onEvent: (event) => webhooks.enqueue(event) });
  const idempotency = new Map<string, StoredResponse>();
  const faults = { status: 0, remaining: 0 };
  const settleTimers = new Set<NodeJS.Timeout>();

  if (options.stateFile && existsSync(options.stateFile)) {
    const saved = JSON.parse(readFileSync(options.stateFile, 'utf8'));
    emulator.store.load(saved.objects ?? {});
    for (const [key, value] of Object.entries(saved.idempotency ?? {}))
      idempotency.set(key, value as StoredResponse);
  }
  const save = () => {
    if (!options.stateFile) return;
    writeFileSync(
      options.stateFile,
      JSON.stringify({ objects: emulator.store, idempotency: Object.fromEntries(idempotency) }),
    );
  };

  const api: Array<[string, RegExp, Handler]> = [
    ['POST', /^\/v1\/products$/, (_m, p) => emulator.createProduct(p)],
    ['GET', /^\/v1\/products$/, (_m, p, u) => listAll('product', p, u)],
    ['GET', /^\/v1\/products\/([^/]+)$/, (m) => retrieve('product', m[1]!)],
    ['POST', /^\/v1\/prices$/, (_m, p) => emulator.createPrice(p)],
    ['GET', /^\/v1\/prices$/, (_m, p, u) => listAll('price', p, u)],
    ['GET', /^\/v1\/prices\/([^/]+)$/, (m) => retrieve('price', m[1]!)],
    ['POST', /^\/v1\/customers$/, (_m, p) => emulator.createCustomer(p)],
    ['GET', /^\/v1\/customers$/, (_m, p, u) => listAll('customer', p, u)],
    ['GET', /^\/v1\/customers\/([^/]+)$/, (m) => retrieve('customer', m[1]!)],
    [
      'GET',
      /^\/v1\/customers\/([^/]+)\/payment_methods$/,
      (m, p, u) => emulator.paymentMethods.list(p, u.pathname, emulator.customer(m[1]!).id),
    ],
    [
      'GET',
      /^\/v1\/customers\/([^/]+)\/payment_methods\/([^/]+)$/,
      (m) => {
        const method = emulator.paymentMethods.retrieve(m[2]!);
        if (method.customer !== emulator.customer(m[1]!).id) {
          throw new StripeApiError(
            404,
            'invalid_request_error',
            `No such PaymentMethod: '${m[2]}' on customer '${m[1]}'`,
            'resource_missing',
            'payment_method',
          );
        }
        return method;
      },
    ],
    ['POST', /^\/v1\/payment_methods$/, (_m, p) => emulator.paymentMethods.create(p)],
    ['GET', /^\/v1\/payment_methods$/, (_m, p, u) => emulator.paymentMethods.list(p, u.pathname)],
    ['GET', /^\/v1\/payment_methods\/([^/]+)$/, (m) => emulator.paymentMethods.retrieve(m[1]!)],
    [
      'POST',
      /^\/v1\/payment_methods\/([^/]+)\/attach$/,
      (m, p) => emulator.paymentMethods.attach(m[1]!, str(p, 'customer')),
    ],
    ['POST', /^\/v1\/payment_methods\/([^/]+)\/detach$/, (m) => emulator.paymentMethods.detach(m[1]!)],
    ['POST', /^\/v1\/coupons$/, (_m, p) => emulator.promotions.createCoupon(p)],
    ['GET', /^\/v1\/coupons$/, (_m, p, u) => emulator.promotions.listCoupons(p, u.pathname)],
    ['GET', /^\/v1\/coupons\/([^/]+)$/, (m) => emulator.promotions.coupon(m[1]!, 'id')],
    ['POST', /^\/v1\/promotion_codes$/, (_m, p) => emulator.promotions.createPromotionCode(p)],
    ['GET', /^\/v1\/promotion_codes$/, (_m, p, u) => emulator.promotions.listPromotionCodes(p, u.pathname)],
    ['GET', /^\/v1\/promotion_codes\/([^/]+)$/, (m) => emulator.promotions.promotionCode(m[1]!)],
    ['POST', /^\/v1\/promotion_codes\/([^/]+)$/, (m, p) => emulator.promotions.updatePromotionCode(m[1]!, p)],
    ['POST', /^\/v1\/checkout\/sessions$/, (_m, p) => emulator.createCheckoutSession(p)],
    ['GET', /^\/v1\/checkout\/sessions$/, (_m, p, u) => emulator.listSessions(p, u.pathname)],
    ['GET', /^\/v1\/checkout\/sessions\/([^/]+)$/, (m) => emulator.session(m[1]!)],
    [
      'GET',
      /^\/v1\/checkout\/sessions\/([^/]+)\/line_items$/,
      (m, p, u) => emulator.lineItems(m[1]!, p, u.pathname),
    ],
    ['POST', /^\/v1\/checkout\/sessions\/([^/]+)\/expire$/, (m) => emulator.expireSession(m[1]!)],
    ['GET', /^\/v1\/payment_intents$/, (_m, p, u) => listAll('payment_intent', p, u)],
    ['GET', /^\/v1\/payment_intents\/([^/]+)$/, (m) => emulator.paymentIntent(m[1]!)],
    ['POST', /^\/v1\/payment_intents$/, (_m, p) => emulator.createApiPaymentIntent(p)],
    [
      'POST',
      /^\/v1\/payment_intents\/([^/]+)\/confirm$/,
      (m, p) => emulator.confirmApiPaymentIntent(m[1]!, p),
    ],
    ['GET', /^\/v1\/charges$/, (_m, p, u) => emulator.listCharges(p, u.pathname)],
    ['GET', /^\/v1\/charges\/([^/]+)$/, (m) => emulator.charge(m[1]!)],
    ['POST', /^\/v1\/refunds$/, (_m, p) => emulator.createRefund(p)],
    ['GET', /^\/v1\/refunds$/, (_m, p, u) => emulator.listRefunds(p, u.pathname)],
    ['GET', /^\/v1\/refunds\/([^/]+)$/, (m) => emulator.refund(m[1]!)],
    ['GET', /^\/v1\/disputes$/, (_m, p, u) => emulator.listDisputes(p, u.pathname)],
    ['GET', /^\/v1\/disputes\/([^/]+)$/, (m) => emulator.dispute(m[1]!)],
    ['GET', /^\/v1\/events$/, (_m, p, u) => emulator.listEvents(p, u.pathname)],
    ['GET', /^\/v1\/events\/([^/]+)$/, (m) => emulator.event(m[1]!)],
  ];

  const control: Array<[string, RegExp, Handler]> = [
    ['GET', /^\/_emulator\/health$/, () => ({ ok: true })],
    [
      'POST',
      /^\/_emulator\/checkout\/sessions\/([^/]+)\/complete$/,
      (m, p) =>
        emulator.completeSession(
          m[1]!,
          outcomeOf(str(p, 'outcome') ?? 'paid'),
          str(p, 'promotion_code'),
          str(p, 'payment_method'),
        ),
    ],
    [
      'POST',
      /^\/_emulator\/customers\/([^/]+)\/payment_method$/,
      (m, p) => ({
        customer: m[1]!,
        payment_methods: emulator.paymentMethods.setCustomerCard(m[1]!, str(p, 'payment_method')),
      }),
    ],
    ['POST', /^\/_emulator\/charges\/([^/]+)\/dispute$/, (m, p) => emulator.openDispute(m[1]!, p)],
    [
      'POST',
      /^\/_emulator\/disputes\/([^/]+)\/close$/,
      (m, p) => emulator.closeDispute(m[1]!, closeOutcome(p)),
    ],
    ['POST', /^\/_emulator\/refunds\/([^/]+)\/fail$/, (m) => emulator.failRefund(m[1]!)],
    ['GET', /^\/_emulator\/webhooks$/, () => ({ ...webhooks.status(), log: webhooks.log.slice(-500) })],
    ['POST', /^\/_emulator\/webhooks\/pause$/, () => webhooks.pause()],
    ['POST', /^\/_emulator\/webhooks\/resume$/, () => webhooks.resume()],
    [
      'POST',
      /^\/_emulator\/webhooks\/endpoint$/,
      (_m, p) => webhooks.setEndpoint(str(p, 'url') || undefined),
    ],
    [
      'POST',
      /^\/_emulator\/chaos$/,
      (_m, p) => {
        const duplicateRate = Number(str(p, 'duplicate_rate') ?? '0');
        if (!(duplicateRate >= 0 && duplicateRate <= 1))
          throw invalid('duplicate_rate', 'must be between 0 and 1');
        webhooks.setChaos({ duplicateRate, reorder: str(p, 'reorder') === 'true' });
        return webhooks.status();
      },
    ],
    [
      'POST',
      /^\/_emulator\/events\/([^/]+)\/redeliver$/,
      (m) => {
        const event = emulator.event(m[1]!);
        webhooks.enqueue(event);
        return { redelivering: event.id };
      },
    ],
    [
      'POST',
      /^\/_emulator\/faults$/,
      (_m, p) => {
        const status = Number(str(p, 'status'));
        const count = Number(str(p, 'count') ?? '1');
        if (status !== 429 && status !== 500) throw invalid('status', 'status must be 429 or 500');
        if (!Number.isInteger(count) || count < 0) throw invalid('count', 'count must be a whole number');
        Object.assign(faults, { status, remaining: count });
        return { ...faults };
      },
    ],
  ];

  function retrieve(kind: string, id: string) {
    const found = emulator.store.get(kind, id);
    if (!found)
      throw new StripeApiError(
        404,
        'invalid_request_error',
        `No such ${kind}: '${id}'`,
        'resource_missing',
        'id',
      );
    return found;
  }

  function listAll(kind: string, params: Params, url: URL) {
    return paginate(emulator.store.all(kind), params, url.pathname);
  }

  function settleLater(sessionId: string, outcome: CheckoutOutcome) {
    const timer = setTimeout(() => {
      settleTimers.delete(timer);
      try {
        emulator.completeSession(sessionId, outcome);
        save();
      } catch {
        // already settled through the control API
      }
    }, options.asyncSettleMs ?? 3000);
    settleTimers.add(timer);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', baseUrl);
    const method = req.method ?? 'GET';
    const raw = method === 'GET' ? url.search.slice(1) : await readBody(req);
    const params =
      (req.headers['content-type'] ?? '').includes('application/json') && raw
        ? jsonParams(raw)
        : parseParams(raw);

    if (url.pathname.startsWith('/checkout/')) return hostedCheckout(method, url, params, res);

    const controlRoute = control.find(([m, pattern]) => m === method && pattern.test(url.pathname));
    if (controlRoute) {
      const result = controlRoute[2](url.pathname.match(controlRoute[1])!, params, url);
      save();
      return sendJson(res, 200, result);
    }

    if (!url.pathname.startsWith('/v1/'))
      throw new StripeApiError(
        404,
        'invalid_request_error',
        `Unrecognized request URL (${method}: ${url.pathname}).`,
      );
    const auth = req.headers.authorization ?? '';
    if (!/^Bearer sk_test_\w+/.test(auth)) {
      throw new StripeApiError(
        401,
        'authentication_error',
        'Invalid API Key provided: the emulator accepts test keys (sk_test_...) only.',
      );
    }
    if (faults.remaining > 0) {
      faults.remaining--;
      throw faults.status === 429
        ? new StripeApiError(
            429,
            'rate_limit_error',
            'Too many requests hit the API too quickly.',
            'rate_limit',
          )
        : new StripeApiError(500, 'api_error', 'An unknown error occurred (injected by the emulator).');
    }
    const route = api.find(([m, pattern]) => m === method && pattern.test(url.pathname));
    if (!route)
      throw new StripeApiError(
        404,
        'invalid_request_error',
        `Unrecognized request URL (${method}: ${url.pathname}).`,
      );

    const key = method === 'POST' ? req.headers['idempotency-key'] : undefined;
    const routeKey = `${method} ${url.pathname}`;
    const paramsHash = createHash('sha256').update(raw).digest('hex');
    if (typeof key === 'string') {
      const stored = idempotency.get(key);
      if (stored) {
        if (stored.route !== routeKey || stored.paramsHash !== paramsHash) {
          throw new StripeApiError(
            400,
            'idempotency_error',
            `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
          );
        }
        res.setHeader('idempotent-replayed', 'true');
        return sendText(res, stored.status, stored.body);
      }
    }
    let status = 200;
    let body: string;
    try {
      body = render(expand(emulator, route[2](url.pathname.match(route[1])!, params, url), params));
    } catch (error: unknown) {
      if (!(error instanceof StripeApiError)) throw error;
      status = error.status;
      body = render(error);
    }
    if (typeof key === 'string') idempotency.set(key, { route: routeKey, paramsHash, status, body });
    if (method === 'POST') save();
    return sendText(res, status, body);
  }

  function hostedCheckout(method: string, url: URL, params: Params, res: ServerResponse) {
    const [, , id, action] = url.pathname.split('/');
    const session = emulator.session(id ?? '');
    const page = (status: number, promotion?: CheckoutPromotion) => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
      res.end(checkoutPage(publicView(session), session._line_items as CheckoutLineItem[], promotion));
    };
    // The code the buyer typed: applied on the page (?promotion_code=), then carried by the pay forms.
    const typed = str(params, 'promotion_code')?.trim() || undefined;
    if (method === 'GET' && !action) {
      return page(200, typed ? previewPromotionCode(session, typed) : undefined);
    }
    if (method !== 'POST' || (action !== 'pay' && action !== 'cancel')) {
      throw new StripeApiError(404, 'invalid_request_error', 'Unknown checkout page action.');
    }
    let target: string;
    if (action === 'cancel') {
      target = String(session.cancel_url ?? session.success_url);
    } else {
      const method = str(params, 'method') ?? 'card';
      try {
        emulator.completeSession(
          session.id,
          method === 'card' ? 'paid' : 'async_pending',
          typed,
          str(params, 'payment_method'),
        );
      } catch (error: unknown) {
        // A code that stopped applying between Apply and Pay: the page says so and nothing is paid.
        if (typed && error instanceof PromotionCodeRefused)
          return page(400, previewPromotionCode(session, typed));
        throw error;
      }
      if (method !== 'card' && session.payment_status === 'unpaid') {
        settleLater(session.id, method === 'delayed_fail' ? 'async_failed' : 'async_succeeded');
      }
      target = String(session.success_url);
    }
    save();
    res.writeHead(303, { location: target.replaceAll('{CHECKOUT_SESSION_ID}', session.id) });
    res.end();
  }

  /** The code on the hosted page: its discount and the total due, or why it does not apply. */
  function previewPromotionCode(session: StripeObject, code: string): CheckoutPromotion | undefined {
    if (session.allow_promotion_codes !== true || session.status !== 'open') return undefined;
    try {
      const applied = emulator.checkPromotionCode(session, code);
      return {
        code,
        amountDiscount: applied.amountDiscount,
        amountTotal: Number(session.amount_subtotal) - applied.amountDiscount,
      };
    } catch (error: unknown) {
      if (error instanceof PromotionCodeRefused) return { code, refusal: error.reason };
      throw error;
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (error instanceof StripeApiError) return sendText(res, error.status, render(error));
      sendText(
        res,
        500,
        render(
          new StripeApiError(500, 'api_error', error instanceof Error ? error.message : 'emulator error'),
        ),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 12111, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  baseUrl = `http://127.0.0.1:${port}`;
  return {
    url: baseUrl,
    port,
    emulator,
    webhooks,
    close: async () => {
      webhooks.close();
      for (const timer of settleTimers) clearTimeout(timer);
      save();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function outcomeOf(value: string): CheckoutOutcome {
  if (
    value === 'paid' ||
    value === 'async_pending' ||
    value === 'async_succeeded' ||
    value === 'async_failed'
  )
    return value;
  throw invalid('outcome', 'outcome must be one of paid, async_pending, async_succeeded, async_failed');
}

function closeOutcome(params: Params): 'won' | 'lost' {
  const outcome = str(params, 'outcome');
  if (outcome !== 'won' && outcome !== 'lost') throw invalid('outcome', 'outcome must be won or lost');
  return outcome;
}

/** Replaces ids with their objects along each `expand[]` path (`payment_intent`, `data.latest_charge`...). */
function expand(emulator: Emulator, value: unknown, params: Params): unknown {
  const paths = Array.isArray(params.expand) ? params.expand.map(String) : [];
  if (paths.length === 0 || value === null || typeof value !== 'object') return value;
  const copy = publicView(value as StripeObject);
  for (const path of paths) expandPath(emulator, copy, path.split('.'));
  return copy;
}

function expandPath(emulator: Emulator, node: unknown, path: string[]): void {
  if (node === null || typeof node !== 'object' || path.length === 0) return;
  const [head, ...rest] = path as [string, ...string[]];
  const record = node as Record<string, unknown>;
  if (head === 'data' && Array.isArray(record.data)) {
    for (const item of record.data) expandPath(emulator, item, rest);
    return;
  }
  const current = record[head];
  if (typeof current === 'string') {
    const kind = ID_PREFIX_KIND[current.split('_')[0] ?? ''];
    const found = kind ? emulator.store.get(kind, current) : undefined;
    if (found) record[head] = publicView(found);
  }
  expandPath(emulator, record[head], rest);
}

function render(value: unknown): string {
  return JSON.stringify(value, (key, v) => (key.startsWith('_') ? undefined : v), 2);
}

function sendJson(res: ServerResponse, status: number, value: unknown) {
  sendText(res, status, render(value));
}

function sendText(res: ServerResponse, status: number, body: string) {
  res.writeHead(status, {
    'content-type': 'application/json',
    'request-id': newId('req'),
    'stripe-version': API_VERSION,
  });
  res.end(body);
}

function jsonParams(raw: string): Params {
  try {
    const parsed = JSON.parse(raw);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      return Object.fromEntries(
        Object.entries(parsed).map(([k, v]) => [k, typeof v === 'object' ? (v as Params) : String(v)]),
      );
    }
  } catch {
    // fall through
  }
  throw invalid('body', 'Invalid JSON body');
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw invalid('body', 'Request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
