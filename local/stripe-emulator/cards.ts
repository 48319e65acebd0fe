import { invalid, missing, StripeApiError } from './errors.js';
import type { Params } from './params.js';
import { metadataOf, str } from './params.js';
import { newId, nowSeconds, paginate, type Store, type StripeObject } from './store.js';

/** How a test card behaves when charged: Stripe's outcome for each of its test payment methods. */
export type CardBehaviour = 'visa' | 'chargeDeclined' | 'authenticationRequired';

interface TestCard {
  readonly behaviour: CardBehaviour;
  readonly last4: string;
}

/**
 * Stripe's test payment methods the emulator knows (https://docs.stripe.com/testing): each use of one of these
 * names creates a new `pm_...` with that card, as on Stripe.
 */
export const TEST_CARDS: Readonly<Record<string, TestCard>> = {
  pm_card_visa: { behaviour: 'visa', last4: '4242' },
  pm_card_chargeDeclined: { behaviour: 'chargeDeclined', last4: '0002' },
  pm_card_authenticationRequired: { behaviour: 'authenticationRequired', last4: '3184' },
};

export const isTestCardName = (value: string) => Object.hasOwn(TEST_CARDS, value);

/** Stripe's error for a test card the emulator does not know (Stripe answers resource_missing too). */
function unknownCard(id: string, param: string) {
  return new StripeApiError(
    404,
    'invalid_request_error',
    `No such PaymentMethod: '${id}'; the emulator knows ${Object.keys(TEST_CARDS).join(', ')} and the pm_ ids it created`,
    'resource_missing',
    param,
  );
}

/** The `card` hash of a payment method for a test card (PaymentMethod.Card in the SDK). */
function cardHash(card: TestCard) {
  return {
    brand: 'visa',
    checks: { address_line1_check: null, address_postal_code_check: null, cvc_check: 'unchecked' },
    country: 'US',
    display_brand: 'visa',
    exp_month: 12,
    exp_year: new Date().getUTCFullYear() + 3,
    fingerprint: `LocalEmulator${card.last4}`,
    funding: 'credit',
    generated_from: null,
    last4: card.last4,
    networks: { available: ['visa'], preferred: null },
    regulated_status: 'unregulated',
    three_d_secure_usage: { supported: true },
    wallet: null,
  };
}

/** Payment methods: created from Stripe's test card names, attached to and detached from customers. */
export class PaymentMethods {
  constructor(
    private readonly store: Store,
    private readonly emit: (type: string, object: StripeObject) => void,
  ) {}

  /** A new payment method for the test card `name` (not attached to any customer). */
  createFromTestCard(name: string, param = 'payment_method'): StripeObject {
    const card = TEST_CARDS[name];
    if (!card) throw unknownCard(name, param);
    return this.store.add({
      id: newId('pm'),
      object: 'payment_method',
      card: cardHash(card),
      created: nowSeconds(),
      metadata: {},
      _behaviour: card.behaviour,
    });
  }

  /** Creates a payment method (`type=card`, `card[token]` or a test card name in `payment_method`). */
  create(params: Params): StripeObject {
    if ((str(params, 'type') ?? 'card') !== 'card') throw invalid('type', 'Only type=card is emulated.');
    const name = str(params, 'payment_method') ?? 'pm_card_visa';
    const created = this.createFromTestCard(name);
    created.metadata = metadataOf(params);
    return created;
  }

  /** A stored payment method, or a new one when `id` names a test card (Stripe's test-mode shortcut). */
  resolve(id: string, param = 'payment_method'): StripeObject {
    if (isTestCardName(id)) return this.createFromTestCard(id, param);
    const found = this.store.get('payment_method', id);
    if (!found) throw unknownCard(id, param);
    return found;
  }

  retrieve(id: string): StripeObject {
    const found = this.store.get('payment_method', id);
    if (!found) throw missing('payment_method', id, 'payment_method');
    return found;
  }

  /** Attaches to `customer` (Stripe: a payment method belongs to at most one customer). */
  attach(id: string, customerId: string | undefined): StripeObject {
    if (!customerId) throw invalid('customer', 'Missing required param: customer.', 'parameter_missing');
    if (!this.store.get('customer', customerId)) throw missing('customer', customerId, 'customer');
    const method = this.resolve(id);
    if (method.customer === customerId) return method;
    if (method.customer) {
      throw invalid(
        'payment_method',
        `The payment method you provided has already been attached to a customer (${String(method.customer)}).`,
        'payment_method_already_attached',
      );
    }
    method.customer = customerId;
    this.emit('payment_method.attached', method);
    return method;
  }

  detach(id: string): StripeObject {
    const method = this.retrieve(id);
    if (!method.customer) {
      throw invalid(
        'payment_method',
        'The payment method you provided is not attached to a customer so detachment is impossible.',
        'payment_method_unexpected_state',
      );
    }
    method.customer = null;
    this.emit('payment_method.detached', method);
    return method;
  }

  /** GET /v1/payment_methods and /v1/customers/{id}/payment_methods: newest first, by customer and type. */
  list(params: Params, url: string, customerId = str(params, 'customer')) {
    if (customerId && !this.store.get('customer', customerId))
      throw missing('customer', customerId, 'customer');
    const type = str(params, 'type');
    return paginate(
      this.store.all('payment_method'),
      params,
      url,
      (m) => (!customerId || m.customer === customerId) && (!type || m.type === type),
    );
  }

  /**
   * The control call behind `POST /_emulator/customers/{id}/payment_method`: from now on the customer's saved
   * card is the test card `name` (as when a saved card starts declining or its bank starts asking for
   * authentication). Every card attached to the customer keeps its id and takes the new card's details and
   * behaviour, so a saved `pm_...` an application kept charges as the new card; a customer with no card gets
   * a new one attached. Returns the customer's payment methods, newest first.
   */
  setCustomerCard(customerId: string, name: string | undefined): StripeObject[] {
    if (!name)
      throw invalid('payment_method', 'Missing required param: payment_method.', 'parameter_missing');
    const card = TEST_CARDS[name];
    if (!card) throw unknownCard(name, 'payment_method');
    if (!this.store.get('customer', customerId)) throw missing('customer', customerId, 'customer');
    const saved = this.store.all('payment_method').filter((m) => m.customer === customerId);
    if (saved.length === 0) return [this.attach(name, customerId)];
    for (const method of saved) Object.assign(method, { card: cardHash(card), _behaviour: card.behaviour });
    return [...saved].reverse();
  }
}

/** How a stored payment method behaves when charged (a method the emulator created always has one). */
export const behaviourOf = (method: StripeObject): CardBehaviour =>
  (method._behaviour as CardBehaviour | undefined) ?? 'visa';
