import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { startStackForTest } from '../support/local-stack.js';

const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  throw new Error(
    `no Chromium at ${executablePath}: run bash bin/install-chromium.sh (Debian) or set CHROMIUM_PATH`,
  );
}

const { stack } = await startStackForTest();
const browser = await chromium.launch({
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

describe('the demo page in headless Chromium', () => {
  it('buys a pack through the emulator checkout and shows the new balance', async () => {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    await page.goto(`${stack.url}/`);
    await page.fill('#user-id', 'browser-user');
    await page.click('#sign-in');
    await expect.poll(() => page.textContent('#balance')).toBe('0');

    await page.click('button[data-pack="pack_small"]');
    await page.waitForURL(`${stack.stripeUrl}/checkout/**`);
    expect(await page.textContent('[data-testid="amount"]')).toBe('5.00 USD');
    await page.click('#pay-card');

    await page.waitForURL(`${stack.url}/**`);
    await expect.poll(() => page.textContent('#balance'), { timeout: 15_000 }).toBe('1,000');
    expect(await page.textContent('#notice')).toBe('Credits added.');
    expect(await page.locator('#history tr').count()).toBe(1);
    mkdirSync(screenshots, { recursive: true });
    await page.screenshot({ path: path.join(screenshots, 'purchase.png'), fullPage: true });
  });
});
