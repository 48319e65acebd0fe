import type { StripeObject } from './store.js';

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );

/** The hosted checkout page at a session's `url`: pay by card, pay with a delayed method, or cancel. */
export function checkoutPage(session: StripeObject): string {
  const amount = `${(Number(session.amount_total) / 100).toFixed(2)} ${String(session.currency).toUpperCase()}`;
  const open = session.status === 'open';
  const action = (path: string) => `/checkout/${encodeURIComponent(session.id)}/${path}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Stripe emulator checkout</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; background: #f6f9fc; color: #1a1f36; display: grid; place-items: center; min-height: 100vh; margin: 0; }
  main { background: #fff; border-radius: 8px; box-shadow: 0 2px 12px #0001; padding: 2rem; width: 22rem; }
  h1 { font-size: 1.1rem; margin: 0 0 .25rem; } .amount { font-size: 2rem; font-weight: 600; margin: .5rem 0 1.5rem; }
  button { width: 100%; padding: .7rem; margin: .3rem 0; border-radius: 6px; border: 1px solid #cfd7df; background: #fff; font-size: 1rem; cursor: pointer; }
  button.primary { background: #635bff; color: #fff; border: none; } small { color: #697386; }
</style></head>
<body><main>
  <h1>Test mode checkout</h1><small>Stripe emulator · ${escapeHtml(session.id)}</small>
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
