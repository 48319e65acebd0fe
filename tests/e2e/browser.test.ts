import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { startStackForTest } from '../support/local-stack.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  throw new Error(
    `no Chromium at ${executablePath}: run bash bin/install-chromium.sh (Debian) or set CHROMIUM_PATH`,
  );
}

const { stack, admin } = await startStackForTest();
const browser: Browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
afterAll(() => browser.close());
const screenshots = path.join(import.meta.dirname, 'screenshots');
mkdirSync(screenshots, { recursive: true });
const PHONE = { width: 390, height: 844 };

async function signIn(page: Page, userId: string) {
  await page.goto(`${stack.url}/`);
  await page.fill('#user-id', userId);
  await page.click('#sign-in');
  await page.waitForSelector('#app:not([hidden])');
  await expect.poll(() => page.textContent('#balance')).not.toBe('…');
}

/** Buy a pack and pay on the emulator's checkout page with one of its buttons; back on the demo page. */
async function buy(page: Page, pack: string, payButton: string) {
  await page.click(`button[data-pack="${pack}"]`);
  await page.waitForURL(`${stack.stripeUrl}/checkout/**`);
  await page.click(payButton);
  await page.waitForURL(`${stack.url}/**`);
}

const notice = (page: Page) =>
  page.$eval('#notice', (el) => ({ text: el.textContent, kind: el.getAttribute('data-kind') }));
const horizontalOverflow = (page: Page) =>
  page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
/** The emulator's webhook delivery, held and let go (so a payment stays pending as long as a test needs). */
const webhooks = (action: 'pause' | 'resume') =>
  fetch(`${stack.stripeUrl}/_emulator/webhooks/${action}`, { method: 'POST' });

describe('the demo page in headless Chromium', () => {
  it('buys a pack through the emulator checkout and shows the new balance', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-user');

    await page.click('button[data-pack="pack_small"]');
    await page.waitForURL(`${stack.stripeUrl}/checkout/**`);
    expect(await page.textContent('[data-testid="product"]')).toBe('1,000 credits');
    expect(await page.textContent('[data-testid="amount"]')).toBe('5.00 USD');
    await page.click('#pay-card');
    await page.waitForURL(`${stack.url}/**`);

    await expect.poll(() => page.textContent('#balance'), { timeout: 15_000 }).toBe('1,000');
    await expect
      .poll(() => notice(page))
      .toEqual({ text: 'Payment complete: 1,000 credits added.', kind: 'success' });
    expect(await page.locator('#history tr').count()).toBe(1);
    expect(await page.textContent('#history tr td:nth-child(2)')).toBe('Credits bought');
    expect(await page.textContent('#payments tr .status')).toBe('Complete');
    await page.screenshot({ path: path.join(screenshots, 'purchase.png'), fullPage: true });
  });

  it('shows a delayed payment as pending, then as failed once it fails, with no credits', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-failed');

    await webhooks('pause');
    await buy(page, 'pack_small', '#pay-delayed-fail');

    await expect.poll(() => page.textContent('#payments tr .status')).toBe('Pending');
    expect(await notice(page)).toEqual({
      text: 'Payment pending: waiting for the payment provider to confirm it. Your credits are added as soon as it does.',
      kind: 'info',
    });
    await page.screenshot({ path: path.join(screenshots, 'pending-payment.png'), fullPage: true });
    await webhooks('resume');
    await expect
      .poll(() => notice(page), { timeout: 15_000 })
      .toEqual({
        text: 'The payment failed, so no credits were added and nothing was charged. You can try again, or use another payment method.',
        kind: 'error',
      });
    expect(await page.textContent('#payments tr .status')).toBe('Failed');
    expect(await page.textContent('#balance')).toBe('0');
    await page.screenshot({ path: path.join(screenshots, 'failed-payment.png'), fullPage: true });
  });

  it('shows a checkout left unpaid as expired once Stripe expires it', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-expired');
    await page.click('button[data-pack="pack_small"]');
    await page.waitForURL(`${stack.stripeUrl}/checkout/**`);
    const sessionId = new URL(page.url()).pathname.split('/')[2]!;
    await page.click('#cancel');
    await page.waitForURL(`${stack.url}/**`);
    await expect
      .poll(() => notice(page))
      .toEqual({ text: 'Checkout cancelled: nothing was charged.', kind: 'info' });

    const expired = await fetch(`${stack.stripeUrl}/v1/checkout/sessions/${sessionId}/expire`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk_test_local_emulator' },
    });
    expect(expired.status).toBe(200);

    await expect
      .poll(
        async () => {
          await page.reload();
          return page.textContent('#payments tr .status');
        },
        { timeout: 15_000 },
      )
      .toBe('Expired');
  });

  it('does not let a frozen account buy, says why, and shows support adjustments without their reason', async () => {
    await admin(
      'adjust',
      'browser-frozen',
      '250',
      '--reason',
      'ticket 7781: fraud review',
      '--description',
      'Welcome bonus',
    );
    await admin('adjust', 'browser-frozen', '-50', '--reason', 'ticket 7782: chargeback risk');
    await admin('freeze', 'browser-frozen', '--reason', 'ticket 7783: fraud review');
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });

    await signIn(page, 'browser-frozen');

    expect(await page.isVisible('#frozen')).toBe(true);
    expect(await page.textContent('#frozen')).toContain(
      "Your account is frozen, so you can't buy credits right now.",
    );
    const buttons = page.locator('button[data-pack]');
    expect(await buttons.count()).toBeGreaterThan(0);
    expect(await buttons.evaluateAll((all) => all.every((b) => b.hasAttribute('disabled')))).toBe(true);
    expect(
      await page.$$eval('#history tr td:nth-child(2)', (cells) => cells.map((c) => c.textContent)),
    ).toEqual(['Adjustment by support', 'Welcome bonus']);
    expect(await page.textContent('body')).not.toContain('ticket');
    await page.screenshot({ path: path.join(screenshots, 'frozen.png'), fullPage: true });
  });

  it('tells a user frozen while the page was open why Buy failed, and disables it', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-frozen-later');
    await admin('freeze', 'browser-frozen-later', '--reason', 'fraud review');

    await page.click('button[data-pack="pack_small"]');

    await expect
      .poll(() => notice(page))
      .toEqual({
        text: "Your account is frozen, so you can't buy credits right now. If you think this is a mistake, contact support.",
        kind: 'error',
      });
    await expect.poll(() => page.isDisabled('button[data-pack="pack_small"]')).toBe(true);
    expect(page.url()).toBe(`${stack.url}/`);
  });

  it('sends a user whose token the stack no longer accepts back to sign-in', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await page.goto(`${stack.url}/`);
    await page.evaluate(
      "sessionStorage.setItem('token', 'eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl'); sessionStorage.setItem('user', 'stale-user')",
    );

    await page.reload();

    await page.waitForSelector('#signin:not([hidden])');
    expect(await page.isHidden('#app')).toBe(true);
    expect(await notice(page)).toEqual({
      text: 'Your session has ended (the local stack may have been restarted with new keys). Please sign in again.',
      kind: 'info',
    });
  });

  it('says in words what a user id may be', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await page.goto(`${stack.url}/`);

    await page.fill('#user-id', 'has spaces');
    await page.click('#sign-in');

    expect(await notice(page)).toEqual({
      text: 'A user id is 1 to 64 characters: letters, digits, and _ . @ - (no spaces).',
      kind: 'error',
    });
  });

  it('fits a 390 px phone: the demo page and the checkout page, with nothing cut off', async () => {
    const page = await browser.newPage({ viewport: PHONE });
    await admin('adjust', 'browser-phone', '1200', '--reason', 'setup', '--description', 'Welcome bonus');
    await signIn(page, 'browser-phone');

    expect(await horizontalOverflow(page)).toBe(0);
    await page.screenshot({ path: path.join(screenshots, 'demo-390.png'), fullPage: true });

    await page.click('button[data-pack="pack_small"]');
    await page.waitForURL(`${stack.stripeUrl}/checkout/**`);
    expect(await horizontalOverflow(page)).toBe(0);
    const card = await page.locator('main').boundingBox();
    expect(card!.x).toBeGreaterThanOrEqual(0);
    expect(card!.x + card!.width).toBeLessThanOrEqual(PHONE.width);
    expect(await page.isVisible('[data-testid="product"]')).toBe(true);
    await page.screenshot({ path: path.join(screenshots, 'checkout-390.png'), fullPage: true });
  });
});
