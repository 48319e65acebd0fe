import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { expectInvariantsHold } from '../support/invariants.js';
import { startStackForTest } from '../support/local-stack.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  throw new Error(
    `no Chromium at ${executablePath}: run bash bin/install-chromium.sh (Debian) or set CHROMIUM_PATH`,
  );
}

// The sweeper every second, so a grant that expires shows up in the history soon after. The default plan
// has nothing to show; `pro` has an allowance, both caps and a rate limit.
const { stack, db, admin, asUser, signed } = await startStackForTest({
  sweepIntervalSeconds: 1,
  plans: JSON.stringify([
    { id: 'free', name: 'Free', default: true },
    {
      id: 'pro',
      name: 'Pro',
      monthlyAllowance: 500,
      caps: { daily: 20_000, monthly: 50_000 },
      rateLimitPerMinute: 120,
    },
  ]),
});
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
// A user far from UTC: expiries must be shown in their own time.
const AUCKLAND = { locale: 'en-GB', timezoneId: 'Pacific/Auckland' } as const;
/** An instant as the page shows an expiry to a user in Auckland. */
const inAuckland = (iso: string) =>
  new Date(iso).toLocaleString('en-GB', {
    timeZone: AUCKLAND.timezoneId,
    dateStyle: 'medium',
    timeStyle: 'short',
  });

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
const couponMessage = (page: Page) =>
  page.$eval('#coupon-message', (el) => ({
    text: el.textContent,
    kind: el.getAttribute('data-kind'),
    visible: !el.hasAttribute('hidden'),
  }));
async function redeem(page: Page, code: string) {
  await page.fill('#coupon-code', code);
  await page.click('#redeem');
  await expect.poll(() => page.isEnabled('#redeem')).toBe(true);
}
/** The grants view as the user reads it: one line of cells per grant. */
const grantRows = (page: Page) =>
  page.$$eval('#grants tr', (rows) =>
    rows.map((row) => ({
      category: row.getAttribute('data-category'),
      cells: [...row.querySelectorAll('td')].map((td) => (td as unknown as { innerText: string }).innerText),
    })),
  );
const grantsOf = async (userId: string) =>
  (await asUser(userId, 'GET', '/v1/me/grants')).body.items as Array<{ expiresAt: string | null }>;
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

    await expect.poll(() => page.textContent('#balance'), { timeout: 30_000 }).toBe('1,000');
    await expect
      .poll(() => notice(page))
      .toEqual({ text: 'Payment complete: 1,000 credits added.', kind: 'success' });
    expect(await page.locator('#history tr').count()).toBe(1);
    expect(await page.textContent('#history tr td:nth-child(2)')).toBe('Credits bought');
    expect(await page.textContent('#payments tr .status')).toBe('Complete');
    await page.screenshot({ path: path.join(screenshots, 'purchase.png'), fullPage: true });
    await expectInvariantsHold(db);
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
    await expectInvariantsHold(db);
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
    await expectInvariantsHold(db);
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
    await expectInvariantsHold(db);
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
    await expectInvariantsHold(db);
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

  it('charts the usage of the last 14 days per model, and fits a phone', async () => {
    const page = await browser.newPage({ viewport: PHONE });
    await admin('adjust', 'browser-usage', '100000', '--reason', 'setup');
    const now = Date.now();
    const events = [
      {
        eventId: 'b-1',
        sku: 'openai/gpt-4o',
        usage: { inputTokens: 8000, outputTokens: 2000 },
        at: now - 2 * 86_400_000,
      },
      { eventId: 'b-2', sku: 'openai/gpt-4o', usage: { inputTokens: 4000, outputTokens: 1000 }, at: now },
      { eventId: 'b-3', sku: 'image.generate', usage: { units: 3 }, at: now - 86_400_000 },
    ].map(({ at, ...event }) => ({
      ...event,
      userId: 'browser-usage',
      occurredAt: new Date(at).toISOString(),
    }));
    const recorded = await signed('service', 'POST', '/v1/usage', { events });
    expect((recorded.body.results as Array<{ status: string }>).map((r) => r.status)).toEqual([
      'applied',
      'applied',
      'applied',
    ]);
    await signIn(page, 'browser-usage');
    await page.waitForSelector('#usage-chart svg rect');
    expect(await page.locator('#usage-chart svg rect').count()).toBe(3);
    // Most used first: 3 images at 10 credits, then 15 credits of gpt-4o tokens at the sample prices.
    expect(await page.locator('#usage-legend li').allTextContents()).toEqual([
      'image.generate: 30 credits',
      'openai/gpt-4o: 15 credits',
    ]);
    expect(await horizontalOverflow(page)).toBe(0);
    await page.locator('#usage-section').screenshot({ path: path.join(screenshots, 'usage-390.png') });
    await page.close();
    await expectInvariantsHold(db);
  });

  it("shows the plan, this month's allowance and each cap with what is used, reserved and when it resets", async () => {
    const page = await browser.newPage({ viewport: PHONE });
    expect((await admin('plan', 'browser-plan', 'pro', '--reason', 'upgrade')).code).toBe(0);
    const spent = await signed(
      'service',
      'POST',
      '/v1/accounts/browser-plan/spend',
      { amount: 120 },
      { 'idempotency-key': 'browser-plan-1' },
    );
    expect(spent.status).toBe(200);
    const held = await signed(
      'service',
      'POST',
      '/v1/accounts/browser-plan/holds',
      { credits: 30 },
      { 'idempotency-key': 'browser-plan-2' },
    );
    expect(held.status).toBe(201);
    await signIn(page, 'browser-plan');
    expect(await page.textContent('[data-testid="plan-name"]')).toBe('Pro');
    expect(await page.textContent('[data-testid="allowance"]')).toMatch(
      /^500 credits included this month, until /,
    );
    const caps = await page.locator('#caps li').allTextContents();
    expect(caps).toHaveLength(2);
    expect(caps[0]).toMatch(/^Daily cap: 120 of 20,000 used \(30 reserved\), 19,850 left · resets /);
    expect(caps[1]).toMatch(/^Monthly cap: 120 of 50,000 used \(30 reserved\), 49,850 left · resets /);
    expect(await page.textContent('#rate-limit')).toBe('Up to 120 uses a minute');
    expect(await page.textContent('#balance')).toBe('380');
    expect(await horizontalOverflow(page)).toBe(0);
    await page.locator('#plan-section').screenshot({ path: path.join(screenshots, 'plan-390.png') });
    await page.close();
    await expectInvariantsHold(db);
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
    await expectInvariantsHold(db);
  });
});

describe('alerts and auto top-up on the demo page', () => {
  const message = (page: Page, id: string) =>
    page.$eval(`#${id}`, (el) => ({ text: el.textContent, kind: el.getAttribute('data-kind') }));

  it('sets a low-balance alert, saves the card at checkout, turns auto top-up on and shows the top-up a spend started', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-topup');
    // The settings load beside the balance, not before it.
    await expect.poll(() => page.isVisible('#no-saved-card')).toBe(true);
    expect(await page.isDisabled('#auto-topup-enabled')).toBe(true);
    await expect.poll(() => page.isVisible('#no-topups')).toBe(true);

    await page.fill('#low-balance', '-5');
    await page.click('#save-alerts');
    expect(await message(page, 'alerts-message')).toEqual({
      text: 'The alert threshold must be a whole number of at least 0.',
      kind: 'error',
    });
    await page.fill('#low-balance', '300');
    await page.click('#save-alerts');
    await expect
      .poll(() => message(page, 'alerts-message'))
      .toEqual({ text: 'Alert saved: below 300 credits.', kind: 'success' });
    expect((await asUser('browser-topup', 'GET', '/v1/me/alerts')).body).toMatchObject({ lowBalance: 300 });

    await page.check('#save-card');
    await buy(page, 'pack_small', '#pay-card');
    await expect.poll(() => page.textContent('#balance'), { timeout: 30_000 }).toBe('1,000');
    await expect
      .poll(
        async () => {
          await page.reload();
          await page.waitForSelector('#app:not([hidden])');
          return page.isVisible('#no-saved-card');
        },
        { timeout: 15_000 },
      )
      .toBe(false);

    await page.check('#auto-topup-enabled');
    await page.selectOption('#auto-topup-pack', 'pack_small');
    await page.fill('#auto-topup-threshold', '500');
    await page.fill('#auto-topup-max', '101');
    await page.click('#save-auto-topup');
    expect(await message(page, 'auto-topup-message')).toEqual({
      text: 'Top-ups per month must be a whole number from 1 to 100.',
      kind: 'error',
    });
    await page.fill('#auto-topup-max', '2');
    await page.click('#save-auto-topup');
    await expect
      .poll(() => message(page, 'auto-topup-message'))
      .toEqual({
        text: 'Auto top-up on: 1,000 credits when available falls below 500, at most 2 times a month.',
        kind: 'success',
      });

    const spent = await signed(
      'service',
      'POST',
      '/v1/accounts/browser-topup/spend',
      { amount: 600 },
      { 'idempotency-key': 'browser-topup-1' },
    );
    expect(spent.status).toBe(200);
    await expect
      .poll(
        async () => {
          await page.reload();
          await page.waitForSelector('#app:not([hidden])');
          return page.textContent('#topups tr .status');
        },
        { timeout: 15_000 },
      )
      .toBe('Complete');
    // The page reads the payments and the balance side by side: the one after the credit may be the second.
    await expect
      .poll(
        async () => {
          await page.reload();
          await page.waitForSelector('#app:not([hidden])');
          return page.textContent('#balance');
        },
        { timeout: 15_000 },
      )
      .toBe('1,400');
    await expect.poll(() => page.locator('#topups tr').count()).toBe(1);
    await expect.poll(() => page.isChecked('#auto-topup-enabled')).toBe(true);
    await expect.poll(() => page.inputValue('#low-balance')).toBe('300');
    await page.locator('#auto-topup-section').screenshot({ path: path.join(screenshots, 'auto-topup.png') });
    await expectInvariantsHold(db);
  });
});

describe('grants and coupons on the demo page', () => {
  it('redeems a coupon and shows the promotional grant with its expiry in the user’s own time', async () => {
    await admin(
      'coupons',
      'create',
      'BROWSER-SPRING',
      '250',
      '--reason',
      'spring campaign',
      '--expires-in-days',
      '3',
    );
    await admin(
      'grant',
      'browser-coupon',
      '100',
      '--reason',
      'setup',
      '--category',
      'paid',
      '--description',
      'Welcome bonus',
    );
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 }, ...AUCKLAND });
    await signIn(page, 'browser-coupon');

    await redeem(page, 'browser-spring');

    await expect.poll(() => page.textContent('#balance')).toBe('350');
    const [coupon] = await grantsOf('browser-coupon');
    const expiry = inAuckland(coupon!.expiresAt!);
    expect(await couponMessage(page)).toEqual({
      text: `Coupon redeemed: 250 credits added; they expire on ${expiry} (in 3 days).`,
      kind: 'success',
      visible: true,
    });
    expect(await page.inputValue('#coupon-code')).toBe('');
    // Burn order: the expiring coupon credits first, the never-expiring paid ones last.
    expect(await grantRows(page)).toEqual([
      {
        category: 'promotional',
        cells: ['Promotional\nfrom a coupon', '250 of 250', `${expiry}\nexpires in 3 days`],
      },
      { category: 'paid', cells: ['Paid\nfrom support', '100 of 100', 'Never'] },
    ]);
    expect(await page.textContent('#grant-totals')).toBe('100 paid · 250 promotional');
    expect(await page.textContent('#next-expiry')).toBe(
      `Next expiry: 250 credits on ${expiry} (in 3 days). Credits that expire soonest are used first.`,
    );
    expect(await page.locator('#history tr').first().locator('td:nth-child(2)').innerText()).toBe(
      'Coupon redeemed\nCoupon BROWSER-SPRING',
    );
    await page.screenshot({ path: path.join(screenshots, 'coupon-redeemed.png'), fullPage: true });
    await expectInvariantsHold(db);
  });

  it('says in words why a code did not work, and changes nothing', async () => {
    await admin('coupons', 'create', 'BROWSER-ONCE', '50', '--reason', 'x');
    await admin('coupons', 'create', 'BROWSER-LIMITED', '50', '--reason', 'x', '--max-redemptions', '1');
    await admin('coupons', 'create', 'BROWSER-OLD', '50', '--reason', 'x');
    await admin('coupons', 'disable', 'BROWSER-OLD', '--reason', 'campaign over');
    await asUser('browser-first-comer', 'POST', '/v1/me/coupons/redeem', { code: 'BROWSER-LIMITED' });
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-wrong-code');
    await redeem(page, 'BROWSER-ONCE');
    await expect.poll(() => page.textContent('#balance')).toBe('50');
    const messages: Array<Awaited<ReturnType<typeof couponMessage>>> = [];

    for (const code of ['', 'no spaces!', 'BROWSER-ONCE', 'BROWSER-LIMITED', 'BROWSER-OLD', 'NOSUCH-CODE']) {
      await redeem(page, code);
      messages.push(await couponMessage(page));
    }

    expect(messages).toEqual(
      [
        'Type the coupon code first.',
        'A coupon code is 3 to 64 letters, digits, dashes (-) or underscores (_). Check the code and try again.',
        'You have already redeemed “BROWSER-ONCE”: each coupon works once per account.',
        'The coupon “BROWSER-LIMITED” has been used up: all of its redemptions are taken.',
        'The coupon “BROWSER-OLD” is no longer valid.',
        'There is no coupon “NOSUCH-CODE”. Check the spelling and try again.',
      ].map((text) => ({ text, kind: 'error', visible: true })),
    );
    expect(await page.getAttribute('#coupon-message', 'role')).toBe('alert');
    expect(await page.textContent('#balance')).toBe('50');
    expect(await grantRows(page)).toHaveLength(1);
    await page.screenshot({ path: path.join(screenshots, 'coupon-wrong-code.png'), fullPage: true });
    await expectInvariantsHold(db);
  });

  it('tells a user who tried too many wrong codes to wait, even with a good one', async () => {
    await admin('coupons', 'create', 'BROWSER-LATER', '50', '--reason', 'x');
    for (let attempt = 1; attempt <= 10; attempt++)
      await asUser('browser-guesser', 'POST', '/v1/me/coupons/redeem', { code: `GUESS-${attempt}` });
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-guesser');

    await redeem(page, 'BROWSER-LATER');

    expect(await couponMessage(page)).toEqual({
      text: 'Too many codes that did not work in the last hour. Please check your code and try again later.',
      kind: 'error',
      visible: true,
    });
    expect(await page.textContent('#balance')).toBe('0');
    expect(await page.isVisible('#no-grants')).toBe(true);
    await expectInvariantsHold(db);
  });

  it('shows credits that expired in the history, and drops their grant from the list', async () => {
    const expiresAt = new Date(Date.now() + 3000).toISOString();
    await admin(
      'grant',
      'browser-expiry',
      '40',
      '--reason',
      'trial',
      '--expires-at',
      expiresAt,
      '--description',
      'Trial credits',
    );
    await admin('grant', 'browser-expiry', '10', '--reason', 'setup', '--category', 'paid');
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await signIn(page, 'browser-expiry');

    await expect
      .poll(
        async () => {
          await page.reload();
          await page.waitForSelector('#app:not([hidden])');
          return page.$$eval('#history tr td:nth-child(2)', (cells) =>
            cells.map((c) => (c as unknown as { innerText: string }).innerText),
          );
        },
        { timeout: 20_000, interval: 1000 },
      )
      .toEqual(['Credits expired', 'Adjustment by support', 'Trial credits']);

    expect(await page.textContent('#history tr td:nth-child(3)')).toBe('-40');
    expect(await page.textContent('#balance')).toBe('10');
    expect(await grantRows(page)).toEqual([
      { category: 'paid', cells: ['Paid\nfrom support', '10 of 10', 'Never'] },
    ]);
    expect(await page.isHidden('#next-expiry')).toBe(true);
    await expectInvariantsHold(db);
  });

  it('fits the grants and the coupon box on a 390 px phone', async () => {
    await admin('coupons', 'create', 'BROWSER-PHONE', '1500', '--reason', 'x', '--expires-in-days', '2');
    await admin('grant', 'browser-phone-grants', '200', '--reason', 'x', '--expires-in-days', '45');
    await admin('grant', 'browser-phone-grants', '1000', '--reason', 'x', '--category', 'paid');
    const page = await browser.newPage({ viewport: PHONE, ...AUCKLAND });
    await signIn(page, 'browser-phone-grants');

    await redeem(page, 'BROWSER-PHONE');
    await expect.poll(() => page.textContent('#balance')).toBe('2,700');

    expect(await horizontalOverflow(page)).toBe(0);
    // The tables fit as they are: no column hidden behind a sideways scroll.
    for (const table of ['#grants-table', '#history-table'])
      expect(await page.$eval(table, (el) => el.scrollWidth - el.clientWidth)).toBe(0);
    for (const selector of ['#grants-section', '#coupon', '#coupon-message']) {
      const box = await page.locator(selector).boundingBox();
      expect(box!.x).toBeGreaterThanOrEqual(0);
      expect(box!.x + box!.width).toBeLessThanOrEqual(PHONE.width);
    }
    expect((await grantRows(page)).map((row) => row.cells[1])).toEqual([
      '1,500 of 1,500',
      '200 of 200',
      '1,000 of 1,000',
    ]);
    await page.screenshot({ path: path.join(screenshots, 'grants-390.png'), fullPage: true });
    await expectInvariantsHold(db);
  });
});
