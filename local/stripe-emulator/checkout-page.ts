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

/**
 * The hosted checkout page at a session's `url`: what is bought (the line items' product names, as
 * Stripe shows them), pay by card, pay with a delayed method, or cancel. Fits a 360 px phone.
 */
export function checkoutPage(session: StripeObject, lineItems: readonly CheckoutLineItem[] = []): string {
  const items = lineItems
    .map((item) => `${item.quantity > 1 ? `${item.quantity} × ` : ''}${item.description}`)
    .join(', ');
  const amount = `${(Number(session.amount_total) / 100).toFixed(2)} ${String(session.currency).toUpperCase()}`;
  const open = session.status === 'open';
  const action = (path: string) => `/checkout/${encodeURIComponent(session.id)}/${path}`;
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
</style></head>
<body><main>
  <h1>Test mode checkout</h1><small>Stripe emulator · ${escapeHtml(session.id)}</small>
  ${items ? `<p class="product" data-testid="product">${escapeHtml(items)}</p>` : ''}
  <div class="amount" data-testid="amount">${escapeHtml(amount)}</div>
  ${
    open
      ? `<form method="post" action="${action('pay')}"><input type="hidden" name="method" value="card">
    <button class="primary" id="pay-card" type="submit">Pay with card</button></form>
  <form method="post" action="${action('pay')}"><input type="hidden" name="method" value="delayed_success">
    <button id="pay-delayed" type="submit">Pay with a delayed method (succeeds later)</button></form>
  <form method="post" action="${action('pay')}"><input type="hidden" name="method" value="delayed_fail">
    <button id="pay-delayed-fail" type="submit">Pay with a delayed method (fails later)</button></form>
  <form method="post" action="${action('cancel')}"><button id="cancel" type="submit">Cancel</button></form>`
      : `<p>This session is ${escapeHtml(String(session.status))}.</p>`
  }
</main></body></html>`;
}
