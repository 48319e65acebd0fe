import { behaviourOf, isTestCardName, PaymentMethods } from './cards.js';
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
  readonly paymentMethods = new PaymentMethods(this.store, (type, object) => this.emit(type, object));

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

  /** Creates a customer; `payment_method` (a pm_ id or a test card name) is attached to it, as on Stripe. */
  createCustomer(params: Params): StripeObject {
    const paymentMethod = str(params, 'payment_method');
    const method = paymentMethod === undefined ? undefined : this.paymentMethods.resolve(paymentMethod);
    if (method?.customer) {
      throw invalid(
        'payment_method',
        `The payment method you provided has already been attached to a customer (${String(method.customer)}).`,
        'payment_method_already_attached',
      );
    }
    const customer = this.store.add({
      id: newId('cus'),
      object: 'customer',
      created: nowSeconds(),
      email: str(params, 'email') ?? null,
      livemode: false,
      metadata: metadataOf(params),
      name: str(params, 'name') ?? null,
    });
    this.emit('customer.created', customer);
    if (method) this.paymentMethods.attach(method.id, customer.id);
    return customer;
  }

  customer(id: string): StripeObject {
    const customer = this.store.get('customer', id);
    if (!customer) throw missing('customer', id, 'customer');
    return customer;
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
    const customerCreation = str(params, 'customer_creation');
    if (
      customerCreation !== undefined &&
      customerCreation !== 'always' &&
      customerCreation !== 'if_required'
    ) {
      throw invalid('customer_creation', `Invalid customer_creation: must be one of always, if_required`);
    }
    if (customer && customerCreation) {
      throw invalid(
        'customer_creation',
        'You may only specify one of these parameters: customer, customer_creation.',
      );
    }
    const intentData = obj(params, 'payment_intent_data');
    const setupFutureUsage = str(intentData, 'setup_future_usage');
    if (
      setupFutureUsage !== undefined &&
      setupFutureUsage !== 'off_session' &&
      setupFutureUsage !== 'on_session'
    ) {
      throw invalid(
        'payment_intent_data[setup_future_usage]',
        'Invalid setup_future_usage: must be one of off_session, on_session',
      );
    }
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
      customer_creation: customerCreation ?? null,
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
      _payment_intent_metadata: metadataOf(intentData, 'metadata'),
      _setup_future_usage: setupFutureUsage ?? null,
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
   * completes with `no_payment_required` and no payment intent, as on Stripe. `paymentMethod` is the test
   * card the buyer entered (pm_card_visa by default); with `payment_intent_data.setup_future_usage` it is
   * saved to the session's customer (created on payment when the session names none). A card that declines
   * throws Stripe's 402 card error and leaves the session open, as the hosted page would.
   */
  completeSession(
    id: string,
    outcome: CheckoutOutcome,
    promotionCode?: string,
    paymentMethod = 'pm_card_visa',
  ): StripeObject {
    const session = this.session(id);
    if (!isTestCardName(paymentMethod)) {
      throw invalid('payment_method', `The hosted page takes a test card name, not ${paymentMethod}`);
    }
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
    if (
      session.status === 'open' &&
      !free &&
      outcome === 'paid' &&
      paymentMethod === 'pm_card_chargeDeclined'
    ) {
      throw new StripeApiError(402, 'card_error', 'Your card was declined.', 'card_declined', undefined, {
        decline_code: 'generic_decline',
      });
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
      const intent = this.createPaymentIntent(
        session,
        outcome === 'paid' ? 'succeeded' : 'processing',
        paymentMethod,
      );
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

  private createPaymentIntent(
    session: StripeObject,
    status: 'succeeded' | 'processing',
    testCard: string,
  ): StripeObject {
    const amount = Number(session.amount_total);
    const setupFutureUsage = session._setup_future_usage as string | null;
    // The card the buyer entered on the hosted page; Stripe saves it to a customer it creates if need be.
    const method = this.paymentMethods.createFromTestCard(testCard);
    if (!session.customer && (setupFutureUsage || session.customer_creation === 'always')) {
      const customer = this.store.add({
        id: newId('cus'),
        object: 'customer',
        created: nowSeconds(),
        email: session.customer_email ?? null,
        livemode: false,
        metadata: {},
        name: null,
      });
      this.emit('customer.created', customer);
      session.customer = customer.id;
    }
    if (setupFutureUsage && session.customer) this.paymentMethods.attach(method.id, String(session.customer));
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
      payment_method: method.id,
      payment_method_types: ['card'],
      setup_future_usage: setupFutureUsage,
      status,
    });
  }

  private createCharge(
    intent: StripeObject,
    status: 'succeeded' | 'failed',
    failure?: { readonly code: string; readonly decline_code: string; readonly message: string },
  ): StripeObject {
    const failed = status === 'failed';
    const charge = this.store.add({
      id: newId('ch'),
      object: 'charge',
      amount: intent.amount,
      amount_captured: failed ? 0 : intent.amount,
      amount_refunded: 0,
      balance_transaction: failed ? null : newId('txn'),
      captured: !failed,
      created: nowSeconds(),
      currency: intent.currency,
      customer: intent.customer,
      description: null,
      disputed: false,
      failure_code: failure?.code ?? null,
      failure_message: failure?.message ?? null,
      livemode: false,
      metadata: { ...(intent.metadata as Record<string, string>) },
      ...(failure && {
        outcome: {
          advice_code: null,
          network_advice_code: null,
          network_decline_code: null,
          network_status: 'declined_by_network',
          reason: failure.decline_code,
          seller_message:
            failure.code === 'authentication_required'
              ? 'The bank returned the decline code `authentication_required`.'
              : 'The bank did not return any further details with this decline.',
          type: 'issuer_declined',
        },
      }),
      paid: !failed,
      payment_intent: intent.id,
      payment_method: intent.payment_method,
      refunded: false,
      status,
    });
    intent.latest_charge = charge.id;
    return charge;
  }

  // ---- payment intents and charges --------------------------------------------------------------------

  /**
   * `POST /v1/payment_intents`. With `confirm=true` the payment method is charged at once with its test
   * card's outcome (see confirmIntent); `off_session` needs `confirm=true`, as on Stripe.
   */
  createApiPaymentIntent(params: Params): StripeObject {
    const amount = this.amount(params, 'amount');
    if (amount < 1) throw invalid('amount', 'This value must be greater than or equal to 1.');
    const currency = this.currency(params);
    const customer = str(params, 'customer');
    if (customer) this.customer(customer);
    const confirm = this.flag(params, 'confirm');
    const offSession = str(params, 'off_session');
    if (offSession !== undefined && !['true', 'false', 'one_off', 'recurring'].includes(offSession)) {
      throw invalid('off_session', `Invalid off_session: ${offSession}`);
    }
    if (offSession !== undefined && offSession !== 'false' && !confirm) {
      throw invalid('off_session', 'off_session can only be used with confirm=true.');
    }
    const setupFutureUsage = str(params, 'setup_future_usage');
    if (
      setupFutureUsage !== undefined &&
      setupFutureUsage !== 'off_session' &&
      setupFutureUsage !== 'on_session'
    ) {
      throw invalid(
        'setup_future_usage',
        'Invalid setup_future_usage: must be one of off_session, on_session',
      );
    }
    const methodId = str(params, 'payment_method');
    const method = methodId === undefined ? undefined : this.paymentMethods.resolve(methodId);
    if (method) this.requireUsableBy(method, customer);
    const intent = this.store.add({
      id: newId('pi'),
      object: 'payment_intent',
      amount,
      amount_received: 0,
      capture_method: 'automatic',
      created: nowSeconds(),
      currency,
      customer: customer ?? null,
      description: str(params, 'description') ?? null,
      last_payment_error: null,
      latest_charge: null,
      livemode: false,
      metadata: metadataOf(params),
      payment_method: method?.id ?? null,
      payment_method_types: ['card'],
      setup_future_usage: setupFutureUsage ?? null,
      status: method ? 'requires_confirmation' : 'requires_payment_method',
    });
    this.emit('payment_intent.created', intent);
    if (confirm) this.confirmIntent(intent, offSession !== undefined && offSession !== 'false');
    return intent;
  }

  /** `POST /v1/payment_intents/{id}/confirm`, optionally with another `payment_method` and `off_session`. */
  confirmApiPaymentIntent(id: string, params: Params): StripeObject {
    const intent = this.paymentIntent(id);
    if (
      !['requires_payment_method', 'requires_confirmation', 'requires_action'].includes(String(intent.status))
    ) {
      throw invalid(
        'intent',
        `You cannot confirm this PaymentIntent because it has a status of ${intent.status}.`,
        'payment_intent_unexpected_state',
      );
    }
    const methodId = str(params, 'payment_method');
    if (methodId !== undefined) {
      const method = this.paymentMethods.resolve(methodId);
      this.requireUsableBy(method, intent.customer as string | null);
      intent.payment_method = method.id;
    }
    if (!intent.payment_method) {
      throw invalid(
        'payment_method',
        'You cannot confirm this PaymentIntent because it is missing a payment method.',
        'payment_intent_unexpected_state',
      );
    }
    const offSession = str(params, 'off_session');
    this.confirmIntent(intent, offSession !== undefined && offSession !== 'false');
    return intent;
  }

  /** Stripe refuses a customer's saved card for a payment without that customer (or for another one). */
  private requireUsableBy(method: StripeObject, customer: string | null | undefined): void {
    if (method.customer && method.customer !== customer) {
      throw invalid(
        'payment_method',
        customer
          ? `The provided PaymentMethod ${method.id} belongs to another customer than ${customer}.`
          : `The provided PaymentMethod ${method.id} is attached to a customer; pass that customer too.`,
      );
    }
  }

  /**
   * Charges the intent's payment method with Stripe's outcome for its test card. visa: a succeeded charge,
   * `charge.succeeded` and `payment_intent.succeeded` (and, with setup_future_usage and a customer, the card
   * is attached). chargeDeclined: a failed charge, the intent back to `requires_payment_method` with
   * `last_payment_error`, `charge.failed` and `payment_intent.payment_failed`, and Stripe's 402 card error
   * (code card_declined, decline_code generic_decline). authenticationRequired: on-session, `requires_action`
   * with a 3D Secure next action; off-session, the same failure as a decline with code and decline_code
   * authentication_required (the customer is not there to authenticate).
   */
  private confirmIntent(intent: StripeObject, offSession: boolean): void {
    const method = this.paymentMethods.retrieve(String(intent.payment_method));
    const behaviour = behaviourOf(method);
    if (behaviour === 'visa') {
      const charge = this.createCharge(intent, 'succeeded');
      Object.assign(intent, {
        status: 'succeeded',
        amount_received: intent.amount,
        last_payment_error: null,
        next_action: null,
      });
      if (intent.setup_future_usage && intent.customer && !method.customer) {
        this.paymentMethods.attach(method.id, String(intent.customer));
      }
      this.emit('charge.succeeded', charge);
      this.emit('payment_intent.succeeded', intent);
      return;
    }
    if (behaviour === 'authenticationRequired' && !offSession) {
      Object.assign(intent, {
        status: 'requires_action',
        next_action: {
          type: 'use_stripe_sdk',
          use_stripe_sdk: {
            type: 'three_d_secure_redirect',
            stripe_js: `${this.publicUrl()}/3ds/${intent.id}`,
          },
        },
      });
      this.emit('payment_intent.requires_action', intent);
      return;
    }
    const failure =
      behaviour === 'chargeDeclined'
        ? { code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' }
        : {
            code: 'authentication_required',
            decline_code: 'authentication_required',
            message: 'Your card was declined. This transaction requires authentication.',
          };
    const charge = this.createCharge(intent, 'failed', failure);
    const error = {
      type: 'card_error',
      charge: charge.id,
      code: failure.code,
      decline_code: failure.decline_code,
      doc_url: `https://stripe.com/docs/error-codes/${failure.code.replaceAll('_', '-')}`,
      message: failure.message,
      payment_method: publicView(method),
    };
    // Stripe detaches the failed method from the intent and keeps it on last_payment_error.
    Object.assign(intent, {
      status: 'requires_payment_method',
      payment_method: null,
      last_payment_error: error,
      next_action: null,
    });
    this.emit('charge.failed', charge);
    this.emit('payment_intent.payment_failed', intent);
    throw new StripeApiError(402, 'card_error', failure.message, failure.code, undefined, {
      charge: charge.id,
      decline_code: failure.decline_code,
      doc_url: error.doc_url,
      payment_intent: publicView(intent),
      payment_method: publicView(method),
    });
  }

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

  private flag(params: Params, key: string): boolean {
    const value = str(params, key);
    if (value !== undefined && value !== 'true' && value !== 'false')
      throw invalid(key, `Invalid boolean: ${value}`);
    return value === 'true';
  }

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
