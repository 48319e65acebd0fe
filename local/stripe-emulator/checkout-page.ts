import type { PromotionCodeRefusal } from './promotions.js';
import type { StripeObject } from './store.js';

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );

/** A line item as the emulator keeps it on the session (`description` is the product name). */
export interface CheckoutLineItem {
  readonly description: string;
  readonly quantity: number;
}

/** A promotion code the buyer typed on the page: what it takes off, or why it does not apply. */
export type CheckoutPromotion =
  | { readonly code: string; readonly amountDiscount: number; readonly amountTotal: number }
  | { readonly code: string; readonly refusal: PromotionCodeRefusal };

/** What Stripe's hosted page says under the field for a code it will not apply. */
const REFUSAL_TEXT: Record<PromotionCodeRefusal, string> = {
  unknown: 'This code is invalid.',
  inactive: 'This code is invalid.',
  exhausted: 'This code is invalid.',
  expired: 'This code has expired.',
  currency: 'This code is not valid for this currency.',
};

/**
 * The hosted checkout page at a session's `url`: what is bought (the line items' product names, as
 * Stripe shows them), a promotion-code field when the session allows codes (an applied code shows the
 * subtotal, the discount and the total due, and the pay buttons carry it), pay by card, pay with a delayed
 * method, or cancel. Fits a 360 px phone.
 */
export function checkoutPage(
  session: StripeObject,
  lineItems: readonly CheckoutLineItem[] = [],
  promotion?: CheckoutPromotion,
): string {
  const items = lineItems
    .map((item) => `${item.quantity > 1 ? `${item.quantity} × ` : ''}${item.description}`)
    .join(', ');
  const money = (minor: number) => `${(minor / 100).toFixed(2)} ${String(session.currency).toUpperCase()}`;
  const applied = promotion && 'amountTotal' in promotion ? promotion : undefined;
  const refused = promotion && 'refusal' in promotion ? promotion : undefined;
  const amount = money(applied ? applied.amountTotal : Number(session.amount_total));
  const open = session.status === 'open';
  const pagePath = `/checkout/${encodeURIComponent(session.id)}`;
  const action = (path: string) => `${pagePath}/${path}`;
  const carried = applied
    ? `<input type="hidden" name="promotion_code" value="${escapeHtml(applied.code)}">`
    : '';
  const totals = applied
    ? `<dl class="totals" data-testid="totals">
    <div><dt>Subtotal</dt><dd>${escapeHtml(money(Number(session.amount_subtotal)))}</dd></div>
    <div><dt>${escapeHtml(applied.code.toUpperCase())}</dt><dd data-testid="discount">−${escapeHtml(money(applied.amountDiscount))}</dd></div>
    <div class="due"><dt>Total due</dt><dd>${escapeHtml(amount)}</dd></div>
  </dl>`
    : '';
  const promotionField =
    open && session.allow_promotion_codes === true
      ? applied
        ? `<p class="applied" data-testid="promotion-code-applied">Code ${escapeHtml(applied.code.toUpperCase())} applied · <a id="remove-promotion-code" href="${pagePath}">Remove</a></p>`
        : `<form class="promo" method="get" action="${pagePath}">
    <label for="promotion-code">Promotion code</label>
    <div class="row"><input id="promotion-code" name="promotion_code" autocomplete="off" autocapitalize="characters" maxlength="500" value="${escapeHtml(refused?.code ?? '')}"${refused ? ' aria-invalid="true" aria-describedby="promotion-code-error"' : ''}>
    <button id="apply-promotion-code" type="submit">Apply</button></div>
    ${refused ? `<p class="error" id="promotion-code-error" role="alert" data-testid="promotion-code-error">${escapeHtml(REFUSAL_TEXT[refused.refusal])}</p>` : ''}
  </form>`
      : '';
  // Nothing to pay after the discount: Stripe completes the order without a payment method.
  const free = applied?.amountTotal === 0;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${items ? `${escapeHtml(items)} · ` : ''}Stripe emulator checkout</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  * { box-sizing: border-box; }
  body { font: 16px/1.5 system-ui, sans-serif; background: #f6f9fc; color: #1a1f36; display: grid; place-items: center; min-height: 100vh; margin: 0; padding: 1rem; }
  main { background: #fff; border-radius: 8px; box-shadow: 0 2px 12px #0001; padding: 1.5rem; width: 100%; max-width: 24rem; }
  .product { font-size: 1.05rem; font-weight: 600; margin: 1rem 0 0; overflow-wrap: anywhere; }
  small { overflow-wrap: anywhere; }
  h1 { font-size: 1.1rem; margin: 0 0 .25rem; } .amount { font-size: 2rem; font-weight: 600; margin: .25rem 0 1.5rem; }
  button { width: 100%; padding: .7rem; margin: .3rem 0; border-radius: 6px; border: 1px solid #cfd7df; background: #fff; font-size: 1rem; cursor: pointer; }
  button.primary { background: #635bff; color: #fff; border: none; } small { color: #697386; }
  .promo { margin: 0 0 1rem; } .promo label { display: block; font-size: .9rem; margin-bottom: .25rem; }
  .promo .row { display: flex; gap: .5rem; } .promo button { width: auto; margin: 0; padding: .5rem .9rem; }
  .promo input { flex: 1; min-width: 0; padding: .5rem; border: 1px solid #cfd7df; border-radius: 6px; font-size: 1rem; }
  .promo input[aria-invalid] { border-color: #df1b41; } .error { color: #df1b41; font-size: .9rem; margin: .35rem 0 0; }
  .totals { margin: -1rem 0 1rem; } .totals div { display: flex; justify-content: space-between; gap: 1rem; }
  .totals dt, .totals dd { margin: 0; } .totals dt { overflow-wrap: anywhere; } .totals dd { white-space: nowrap; } .totals .due { font-weight: 600; }
  .applied { margin: 0 0 1rem; font-size: .9rem; overflow-wrap: anywhere; }
</style></head>
<body><main>
  <h1>Test mode checkout</h1><small>Stripe emulator · ${escapeHtml(session.id)}</small>
  ${items ? `<p class="product" data-testid="product">${escapeHtml(items)}</p>` : ''}
  <div class="amount" data-testid="amount">${escapeHtml(amount)}</div>
  ${totals}
  ${promotionField}
  ${
    open
      ? `<form method="post" action="${action('pay')}"><input type="hidden" name="method" value="card">${carried}
    <button class="primary" id="pay-card" type="submit">${free ? 'Complete order' : 'Pay with card'}</button></form>
  ${
    free
      ? ''
      : `<form method="post" action="${action('pay')}"><input type="hidden" name="method" value="delayed_success">${carried}
    <button id="pay-delayed" type="submit">Pay with a delayed method (succeeds later)</button></form>
  <form method="post" action="${action('pay')}"><input type="hidden" name="method" value="delayed_fail">${carried}
    <button id="pay-delayed-fail" type="submit">Pay with a delayed method (fails later)</button></form>`
  }
  <form method="post" action="${action('cancel')}"><button id="cancel" type="submit">Cancel</button></form>`
      : `<p>This session is ${escapeHtml(String(session.status))}.</p>`
  }
</main></body></html>`;
}
