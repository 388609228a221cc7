// Shared set-up for the browser tests: Debian's Chromium driven by
// playwright-core, a calltrail server (support/server.mjs) and the customer's
// site (support/site.mjs) on another origin.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startCalltrail } from './server.mjs';
import { startSite } from './site.mjs';

export const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * The default site prints a Moscow number; a visitor's number replaces it. The pool
 * has one number, so which number a visitor gets does not depend on the server's
 * allocation order; tests with several visitors on one site pass their own pool.
 * The server tells the script to ping every second (CALLTRAIL_PING_S=1).
 */
export const MOSCOW = '+74951234567';
export const FREEPHONE = '+78005553535';
export const defaultSite = (over = {}) => ({
  domains: ['127.0.0.1', 'shop.test', 'shop.co.uk'],
  site_numbers: [MOSCOW],
  pool: ['+74957654321'],
  ...over,
});

/**
 * calltrail keeps the site's own number for bots and headless browsers, and headless
 * Chromium says "HeadlessChrome" in its user agent: contexts that expect a swap use
 * the same browser's desktop user agent (see desktopUserAgent()).
 */
export function desktopUserAgent(browser) {
  const major = browser.version().split('.')[0];
  return `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${major}.0.0.0 Safari/537.36`;
}

/** @param {{demo?: boolean}} [opts] passed to startCalltrail() */
export async function setup(opts = {}) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      // customer sites with real-looking host names, for the cookie-domain test;
      // resolved to this machine only
      '--host-resolver-rules=MAP *.test 127.0.0.1, MAP *.shop.co.uk 127.0.0.1',
    ],
  });
  let ct;
  try {
    ct = await startCalltrail(opts);
  } catch (e) {
    await browser.close();
    throw e;
  }
  const site = await startSite(ct.baseUrl);
  const userAgent = desktopUserAgent(browser);
  return {
    browser,
    ct,
    site,
    userAgent,
    /** A browser context of a person's desktop Chrome (not headless, as calltrail sees it). */
    newContext(o = {}) {
      return browser.newContext({ userAgent, ...o });
    },
    /** A new site on the calltrail server; returns its key. */
    async newSite(over) {
      return (await ct.createSite(defaultSite(over))).key;
    },
    async close() {
      await browser.close();
      await site.stop();
      await ct.stop();
    },
  };
}

/**
 * Opens `url` in a new page of `context` and records what the page reports:
 * uncaught exceptions (pageerror) and console errors.
 */
export async function open(context, url, opts = {}) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.errors = errors;
  if (url) await page.goto(url, opts);
  return page;
}

/** Console errors other than the browser's own network failure lines. */
export const scriptErrors = (page) =>
  page.errors.filter((e) => !/Failed to load resource|net::ERR_|Access to fetch at/.test(e));

/** Waits until the script has swapped (window.calltrail.number() is set). */
export const swapped = (page, timeout = 5000) =>
  page.waitForFunction(() => window.calltrail && window.calltrail.number(), null, { timeout });

export const text = (page, sel) => page.$eval(sel, (e) => e.textContent);
export const attr = (page, sel, name) => page.$eval(sel, (e, n) => e.getAttribute(n), name);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function artifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  return ARTIFACTS;
}

/** Polls fn() until it returns a truthy value or `ms` pass; returns the last value. */
export async function until(fn, ms = 5000, step = 50) {
  const end = Date.now() + ms;
  let v;
  while (!(v = await fn()) && Date.now() < end) await sleep(step);
  return v;
}
