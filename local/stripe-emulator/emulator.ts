import { invalid, missing, StripeApiError } from './errors.js';
import { metadataOf, obj, type Params, type ParamValue, str } from './params.js';
import { type AppliedPromotionCode, Promotions } from './promotions.js';
import { newId, nowSeconds, paginate, Store, type StripeObject } from './store.js';

/** The Stripe API version stamped on events: the one the installed `stripe` SDK pins. */
export const API_VERSION = '2026-10-28.endive';

export type CheckoutOutcome = 'paid' | 'async_pending' | 'async_succeeded' | 'async_failed';

export interface EmulatorEvents {
  /** Called with every event as it is created, in order; the webhook dispatcher delivers it. */
  onEvent(event: StripeObject): void;
}

const DEFAULT_SESSION_TTL_SECONDS = 24 * 60 * 60;

/**
 * The stateful core: Stripe objects, their state changes, and one event per change. Knows nothing of HTTP;
 * `server.ts` maps requests onto these methods.
 */
export class Emulator {
  readonly store = new Store();
  readonly promotions = new Promotions(this.store);

  constructor(
    private readonly publicUrl: () => string,
    private readonly events: EmulatorEvents,
  ) {}

  // ---- products, prices, customers -------------------------------------------------------------------

  createProduct(params: Params): StripeObject {
    const name = str(params, 'name');
    if (!name) throw invalid('name', 'Missing required param: name.', 'parameter_missing');
    return this.store.add({
      id: str(params, 'id') ?? newId('prod'),
      object: 'product',
      active: str(params, 'active') !== 'false',
      created: nowSeconds(),
      default_price: null,
      description: str(params, 'description') ?? null,
      livemode: false,
      metadata: metadataOf(params),
      name,
      updated: nowSeconds(),
    });
  }

  createPrice(params: Params): StripeObject {
    const product = str(params, 'product');
    if (!product || !this.store.get('product', product)) throw missing('product', product ?? '', 'product');
    const unitAmount = this.amount(params, 'unit_amount');
    return this.store.add({
      id: newId('price'),
      object: 'price',
      active: true,
      billing_scheme: 'per_unit',
      created: nowSeconds(),
      currency: this.currency(params),
      livemode: false,
      lookup_key: str(params, 'lookup_key') ?? null,
      metadata: metadataOf(params),
      nickname: str(params, 'nickname') ?? null,
      product,
      recurring: null,
      type: 'one_time',
      unit_amount: unitAmount,
      unit_amount_decimal: String(unitAmount),
    });
  }

  createCustomer(params: Params): StripeObject {
    return this.store.add({
      id: newId('cus'),
      object: 'customer',
      created: nowSeconds(),
      email: str(params, 'email') ?? null,
      livemode: false,
      metadata: metadataOf(params),
      name: str(params, 'name') ?? null,
    });
  }

  // ---- checkout sessions ------------------------------------------------------------------------------

  createCheckoutSession(params: Params): StripeObject {
    if (str(params, 'mode') !== 'payment') throw invalid('mode', 'Only mode=payment is emulated.');
    const successUrl = str(params, 'success_url');
    if (!successUrl)
      throw invalid('success_url', 'Missing required param: success_url.', 'parameter_missing');
    const items = params.line_items;
    if (!Array.isArray(items) || items.length === 0) {
      throw invalid('line_items', 'Missing required param: line_items.', 'parameter_missing');
    }
    let total = 0;
    let currency: string | undefined;
    const lineItems = items.map((raw: ParamValue, index) => {
      const item = (typeof raw === 'object' && !Array.isArray(raw) ? raw : {}) as Params;
      const quantity = Number(str(item, 'quantity') ?? '1');
      if (!Number.isInteger(quantity) || quantity < 1)
        throw invalid(`line_items[${index}][quantity]`, 'Invalid quantity');
      const price = this.lineItemPrice(item, index);
      if (currency && price.currency !== currency) {
        throw invalid(`line_items[${index}]`, 'All line items must have the same currency.');
      }
      currency = price.currency;
      total += price.unitAmount * quantity;
      return {
        id: newId('li'),
        object: 'item',
        quantity,
        amount_discount: 0,
        amount_subtotal: price.unitAmount * quantity,
        amount_tax: 0,
        amount_total: price.unitAmount * quantity,
        currency,
        description: price.name,
        price: price.id,
      };
    });
    const customer = str(params, 'customer');
    if (customer && !this.store.get('customer', customer)) throw missing('customer', customer, 'customer');
    const created = nowSeconds();
    const expiresAt = str(params, 'expires_at')
      ? Number(str(params, 'expires_at'))
      : created + DEFAULT_SESSION_TTL_SECONDS;
    const allowPromotionCodes = str(params, 'allow_promotion_codes');
    if (
      allowPromotionCodes !== undefined &&
      allowPromotionCodes !== 'true' &&
      allowPromotionCodes !== 'false'
    ) {
      throw invalid('allow_promotion_codes', `Invalid boolean: ${allowPromotionCodes}`);
    }
    const id = newId('cs_test');
    return this.store.add({
      id,
      object: 'checkout.session',
      // Stripe echoes the boolean it was given and keeps null when the param was left out.
      allow_promotion_codes: allowPromotionCodes === undefined ? null : allowPromotionCodes === 'true',
      amount_subtotal: total,
      amount_total: total,
      cancel_url: str(params, 'cancel_url') ?? null,
      client_reference_id: str(params, 'client_reference_id') ?? null,
      created,
      currency: currency ?? null,
      customer: customer ?? null,
      customer_email: str(params, 'customer_email') ?? null,
      expires_at: expiresAt,
      livemode: false,
      metadata: metadataOf(params),
      mode: 'payment',
      payment_intent: null,
      payment_status: 'unpaid',
      status: 'open',
      success_url: successUrl,
      url: `${this.publicUrl()}/checkout/${id}`,
      // Kept for the payment intent the session creates on payment; not a Stripe field on the session.
      _payment_intent_metadata: metadataOf(obj(params, 'payment_intent_data'), 'metadata'),
      _line_items: lineItems,
    });
  }

  private lineItemPrice(item: Params, index: number) {
    const priceId = str(item, 'price');
    if (priceId) {
      const price = this.store.get('price', priceId);
      if (!price) throw missing('price', priceId, `line_items[${index}][price]`);
      const product = this.store.get('product', String(price.product));
      return {
        id: priceId,
        currency: String(price.currency),
        unitAmount: Number(price.unit_amount),
        name: String(product?.name ?? ''),
      };
    }
    const data = obj(item, 'price_data');
    const productData = obj(data, 'product_data');
    const name = str(productData, 'name');
    if (!name)
      throw invalid(
        `line_items[${index}][price_data]`,
        'price or price_data[product_data][name] is required',
      );
    return {
      id: newId('price'),
      currency: this.currency(data, `line_items[${index}][price_data][currency]`),
      unitAmount: this.amount(data, 'unit_amount', `line_items[${index}][price_data][unit_amount]`),
      name,
    };
  }

  session(id: string): StripeObject {
    const session = this.store.get('checkout.session', id);
    if (!session) throw missing('checkout.session', id, 'session');
    return session;
  }

  listSessions(params: Params, url: string) {
    const pi = str(params, 'payment_intent');
    const status = str(params, 'status');
    const customer = str(params, 'customer');
    return paginate(
      this.store.all('checkout.session'),
      params,
      url,
      (s) =>
        (!pi || s.payment_intent === pi) &&
        (!status || s.status === status) &&
        (!customer || s.customer === customer),
    );
  }

  lineItems(id: string, params: Params, url: string) {
    const items = (this.session(id)._line_items as StripeObject[]).map((li) => ({ ...li, created: 0 }));
    return paginate(items.reverse(), params, url);
  }

  /** Stripe's expire endpoint: only an open session can expire. */
  expireSession(id: string): StripeObject {
    const session = this.session(id);
    if (session.status !== 'open') {
      throw invalid(
        'session',
        `Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of "${session.status}".`,
        'checkout_session_unexpirable',
      );
    }
    Object.assign(session, { status: 'expired', url: null });
    this.emit('checkout.session.expired', session);
    return session;
  }

  /**
   * What the code a buyer typed would take off this open session, as its hosted page shows before paying;
   * throws (Stripe's 400 shape) when the session takes no codes or the code cannot be applied.
   */
  checkPromotionCode(session: StripeObject, code: string): AppliedPromotionCode {
    if (session.allow_promotion_codes !== true) {
      throw invalid(
        'promotion_code',
        `Checkout session ${session.id} does not accept promotion codes: it was created without allow_promotion_codes=true.`,
      );
    }
    if (session.status !== 'open') {
      throw invalid(
        'promotion_code',
        `A promotion code can be applied only while the session is open; checkout session ${session.id} is ${session.status}.`,
        'checkout_session_state',
      );
    }
    return this.promotions.check(code, Number(session.amount_subtotal), String(session.currency));
  }

  /**
   * Pays a session as the hosted page would: `paid` (card), `async_pending` (a delayed method, not yet
   * settled), `async_succeeded` / `async_failed` (settle a pending one; on an open session, both steps).
   * `promotionCode`, the code the buyer typed, is applied as the session completes (and redeemed once); a
   * code that cannot be applied throws before anything changes. A session the discount brings to 0
   * completes with `no_payment_required` and no payment intent, as on Stripe.
   */
  completeSession(id: string, outcome: CheckoutOutcome, promotionCode?: string): StripeObject {
    const session = this.session(id);
    const pending = session.status === 'complete' && session.payment_status === 'unpaid';
    if (
      session.status !== 'open' &&
      !(pending && outcome.startsWith('async_') && outcome !== 'async_pending')
    ) {
      throw invalid(
        'session',
        `checkout session ${id} is ${session.status} (${session.payment_status}) and cannot be ${outcome}`,
        'checkout_session_state',
      );
    }
    const applied = promotionCode === undefined ? undefined : this.checkPromotionCode(session, promotionCode);
    const amountDiscount = applied?.amountDiscount ?? 0;
    const free = session.status === 'open' && Number(session.amount_subtotal) - amountDiscount === 0;
    if (free && outcome !== 'paid') {
      throw invalid(
        'outcome',
        `checkout session ${id} has nothing to pay after its discount; only outcome paid completes it`,
        'checkout_session_state',
      );
    }
    if (applied) this.applyDiscount(session, applied);
    if (free) {
      Object.assign(session, {
        status: 'complete',
        url: null,
        payment_status: 'no_payment_required',
        customer_details: this.customerDetails(session),
      });
      this.emit('checkout.session.completed', session);
      return session;
    }
    if (session.status === 'open') {
      const intent = this.createPaymentIntent(session, outcome === 'paid' ? 'succeeded' : 'processing');
      Object.assign(session, {
        status: 'complete',
        url: null,
        payment_intent: intent.id,
        customer_details: this.customerDetails(session),
      });
      if (outcome === 'paid') {
        const charge = this.createCharge(intent, 'succeeded');
        this.emit('charge.succeeded', charge);
        this.emit('payment_intent.succeeded', intent);
        session.payment_status = 'paid';
        this.emit('checkout.session.completed', session);
        return session;
      }
      this.emit('payment_intent.processing', intent);
      this.emit('checkout.session.completed', session);
      if (outcome === 'async_pending') return session;
    }
    const intent = this.store.get('payment_intent', String(session.payment_intent))!;
    if (outcome === 'async_succeeded') {
      const charge = this.createCharge(intent, 'succeeded');
      Object.assign(intent, {
        status: 'succeeded',
        amount_received: intent.amount,
        latest_charge: charge.id,
      });
      this.emit('charge.succeeded', charge);
      this.emit('payment_intent.succeeded', intent);
      session.payment_status = 'paid';
      this.emit('checkout.session.async_payment_succeeded', session);
    } else {
      Object.assign(intent, {
        status: 'requires_payment_method',
        last_payment_error: { type: 'card_error', code: 'payment_intent_payment_attempt_failed' },
      });
      this.emit('payment_intent.payment_failed', intent);
      this.emit('checkout.session.async_payment_failed', session);
    }
    return session;
  }

  /** The buyer's details as the hosted page collects them (an email only). */
  private customerDetails(session: StripeObject) {
    return {
      address: { city: null, country: null, line1: null, line2: null, postal_code: null, state: null },
      business_name: null,
      email: session.customer_email ?? null,
      individual_name: null,
      name: null,
      phone: null,
      tax_exempt: 'none',
      tax_ids: [],
    };
  }

  /**
   * The discount on the session as Stripe records it: `amount_total` = `amount_subtotal` less
   * `total_details.amount_discount`, `discounts` naming the coupon and promotion code, and each line item's
   * share (in proportion to its subtotal, the rounding remainder on the last item); redeems the code.
   */
  private applyDiscount(session: StripeObject, applied: AppliedPromotionCode): void {
    const subtotal = Number(session.amount_subtotal);
    const items = session._line_items as Array<Record<string, number>>;
    let left = applied.amountDiscount;
    items.forEach((item, index) => {
      const share =
        index === items.length - 1
          ? left
          : Math.floor((applied.amountDiscount * Number(item.amount_subtotal)) / subtotal);
      left -= share;
      item.amount_discount = share;
      item.amount_total = Number(item.amount_subtotal) - share;
    });
    Object.assign(session, {
      amount_total: subtotal - applied.amountDiscount,
      total_details: {
        ...(session.total_details as Record<string, unknown>),
        amount_discount: applied.amountDiscount,
      },
      discounts: [{ coupon: applied.coupon.id, promotion_code: applied.promotionCode.id }],
    });
    this.promotions.redeem(applied);
  }

  private createPaymentIntent(session: StripeObject, status: 'succeeded' | 'processing'): StripeObject {
    const amount = Number(session.amount_total);
    return this.store.add({
      id: newId('pi'),
      object: 'payment_intent',
      amount,
      amount_received: status === 'succeeded' ? amount : 0,
      capture_method: 'automatic',
      created: nowSeconds(),
      currency: session.currency,
      customer: session.customer,
      description: null,
      last_payment_error: null,
      latest_charge: null,
      livemode: false,
      metadata: { ...(session._payment_intent_metadata as Record<string, string>) },
      // The card the buyer entered on the hosted page.
      payment_method: newId('pm'),
      payment_method_types: ['card'],
      status,
    });
  }

  private createCharge(intent: StripeObject, status: 'succeeded'): StripeObject {
    const charge = this.store.add({
      id: newId('ch'),
      object: 'charge',
      amount: intent.amount,
      amount_captured: intent.amount,
      amount_refunded: 0,
      balance_transaction: newId('txn'),
      captured: true,
      created: nowSeconds(),
      currency: intent.currency,
      customer: intent.customer,
      description: null,
      disputed: false,
      livemode: false,
      metadata: { ...(intent.metadata as Record<string, string>) },
      paid: true,
      payment_intent: intent.id,
      payment_method: intent.payment_method,
      refunded: false,
      status,
    });
    intent.latest_charge = charge.id;
    return charge;
  }

  // ---- payment intents and charges --------------------------------------------------------------------

  paymentIntent(id: string): StripeObject {
    const intent = this.store.get('payment_intent', id);
    if (!intent) throw missing('payment_intent', id, 'intent');
    return intent;
  }

  charge(id: string): StripeObject {
    const charge = this.store.get('charge', id);
    if (!charge) throw missing('charge', id, 'charge');
    return charge;
  }

  listCharges(params: Params, url: string) {
    const pi = str(params, 'payment_intent');
    return paginate(this.store.all('charge'), params, url, (c) => !pi || c.payment_intent === pi);
  }

  // ---- refunds ----------------------------------------------------------------------------------------

  createRefund(params: Params): StripeObject {
    const chargeId =
      str(params, 'charge') ??
      (str(params, 'payment_intent')
        ? this.paymentIntent(str(params, 'payment_intent')!).latest_charge
        : undefined);
    if (typeof chargeId !== 'string')
      throw invalid('charge', 'One of charge or payment_intent is required.', 'parameter_missing');
    const charge = this.charge(chargeId);
    if (charge.disputed)
      throw invalid(
        'charge',
        `Charge ${charge.id} has been charged back; cannot issue a refund.`,
        'charge_disputed',
      );
    const remaining = Number(charge.amount) - Number(charge.amount_refunded);
    const amount = str(params, 'amount') === undefined ? remaining : this.amount(params, 'amount');
    if (remaining === 0)
      throw invalid('charge', `Charge ${charge.id} has already been refunded.`, 'charge_already_refunded');
    if (amount > remaining) {
      throw invalid(
        'amount',
        `Refund amount (${amount}) is greater than unrefunded amount on charge (${remaining})`,
        'amount_too_large',
      );
    }
    const refund = this.store.add({
      id: newId('re'),
      object: 'refund',
      amount,
      balance_transaction: newId('txn'),
      charge: charge.id,
      created: nowSeconds(),
      currency: charge.currency,
      customer: charge.customer,
      failure_reason: null,
      metadata: metadataOf(params),
      payment_intent: charge.payment_intent,
      payment_method: charge.payment_method,
      reason: str(params, 'reason') ?? null,
      status: 'succeeded',
    });
    this.setRefunded(charge, Number(charge.amount_refunded) + amount);
    this.emit('refund.created', refund);
    this.emit('charge.refunded', charge);
    return refund;
  }

  /** A refund that the bank returns: status failed, the charge's refunded total goes back down. */
  failRefund(id: string): StripeObject {
    const refund = this.refund(id);
    if (refund.status !== 'succeeded' && refund.status !== 'pending') {
      throw invalid('refund', `refund ${id} is ${refund.status} and cannot fail`, 'refund_state');
    }
    Object.assign(refund, { status: 'failed', failure_reason: 'lost_or_stolen_card' });
    const charge = this.charge(String(refund.charge));
    this.setRefunded(charge, Number(charge.amount_refunded) - Number(refund.amount));
    this.emit('refund.updated', refund);
    this.emit('refund.failed', refund);
    return refund;
  }

  /** The charge's refunded total and its `refunds` list (newest first), as Stripe keeps them. */
  private setRefunded(charge: StripeObject, total: number) {
    const refunds = this.store
      .all('refund')
      .filter((r) => r.charge === charge.id)
      .reverse()
      .map(publicView);
    Object.assign(charge, {
      amount_refunded: total,
      refunded: total === charge.amount,
      refunds: { object: 'list', data: refunds, has_more: false, url: `/v1/charges/${charge.id}/refunds` },
    });
  }

  refund(id: string): StripeObject {
    const refund = this.store.get('refund', id);
    if (!refund) throw missing('refund', id, 'refund');
    return refund;
  }

  listRefunds(params: Params, url: string) {
    const charge = str(params, 'charge');
    const pi = str(params, 'payment_intent');
    return paginate(
      this.store.all('refund'),
      params,
      url,
      (r) => (!charge || r.charge === charge) && (!pi || r.payment_intent === pi),
    );
  }

  // ---- disputes ---------------------------------------------------------------------------------------

  /** A cardholder disputes a charge: the dispute opens and its funds are withdrawn. */
  openDispute(chargeId: string, params: Params): StripeObject {
    const charge = this.charge(chargeId);
    if (charge.disputed) throw invalid('charge', `charge ${chargeId} is already disputed`, 'charge_disputed');
    const amount =
      str(params, 'amount') === undefined ? Number(charge.amount) : this.amount(params, 'amount');
    const dispute = this.store.add({
      id: newId('dp'),
      object: 'dispute',
      amount,
      balance_transactions: [],
      charge: charge.id,
      created: nowSeconds(),
      currency: charge.currency,
      is_charge_refundable: false,
      livemode: false,
      metadata: {},
      payment_intent: charge.payment_intent,
      reason: str(params, 'reason') ?? 'fraudulent',
      status: 'needs_response',
    });
    charge.disputed = true;
    this.emit('charge.dispute.created', dispute);
    (dispute.balance_transactions as unknown[]).push({
      id: newId('txn'),
      object: 'balance_transaction',
      amount: -amount,
      reporting_category: 'dispute',
    });
    this.emit('charge.dispute.funds_withdrawn', dispute);
    return dispute;
  }

  /** Closes a dispute: won reinstates the funds, lost keeps them withdrawn. */
  closeDispute(id: string, outcome: 'won' | 'lost'): StripeObject {
    const dispute = this.dispute(id);
    if (dispute.status === 'won' || dispute.status === 'lost') {
      throw invalid('dispute', `dispute ${id} is already closed (${dispute.status})`, 'dispute_closed');
    }
    dispute.status = outcome;
    if (outcome === 'won') {
      (dispute.balance_transactions as unknown[]).push({
        id: newId('txn'),
        object: 'balance_transaction',
        amount: dispute.amount,
        reporting_category: 'dispute_reversal',
      });
      this.emit('charge.dispute.funds_reinstated', dispute);
    }
    this.emit('charge.dispute.closed', dispute);
    return dispute;
  }

  dispute(id: string): StripeObject {
    const dispute = this.store.get('dispute', id);
    if (!dispute) throw missing('dispute', id, 'dispute');
    return dispute;
  }

  listDisputes(params: Params, url: string) {
    const charge = str(params, 'charge');
    const pi = str(params, 'payment_intent');
    return paginate(
      this.store.all('dispute'),
      params,
      url,
      (d) => (!charge || d.charge === charge) && (!pi || d.payment_intent === pi),
    );
  }

  // ---- events -----------------------------------------------------------------------------------------

  event(id: string): StripeObject {
    const event = this.store.get('event', id);
    if (!event) throw missing('event', id);
    return event;
  }

  listEvents(params: Params, url: string) {
    const type = str(params, 'type');
    const types = Array.isArray(params.types) ? params.types.map(String) : undefined;
    const matches = (t: string) =>
      (!type || (type.endsWith('*') ? t.startsWith(type.slice(0, -1)) : t === type)) &&
      (!types || types.includes(t));
    return paginate(this.store.all('event'), params, url, (e) => matches(String(e.type)));
  }

  private emit(type: string, object: StripeObject): void {
    const event = this.store.add({
      id: newId('evt'),
      object: 'event',
      api_version: API_VERSION,
      created: nowSeconds(),
      data: { object: publicView(object) },
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type,
    });
    this.events.onEvent(event);
  }

  // ---- shared parameter rules -------------------------------------------------------------------------

  private amount(params: Params, key: string, param = key): number {
    const text = str(params, key);
    const value = Number(text);
    if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
      throw invalid(param, `Invalid integer: ${text ?? ''}`);
    }
    return value;
  }

  private currency(params: Params, param = 'currency'): string {
    const currency = str(params, 'currency')?.toLowerCase();
    if (!currency || !/^[a-z]{3}$/.test(currency))
      throw invalid(param, `Invalid currency: ${currency ?? ''}`);
    return currency;
  }
}

/** A deep copy without the emulator's own bookkeeping fields (those starting with `_`). */
export function publicView(object: StripeObject): StripeObject {
  return JSON.parse(JSON.stringify(object, (key, value) => (key.startsWith('_') ? undefined : value)));
}

export { StripeApiError };
