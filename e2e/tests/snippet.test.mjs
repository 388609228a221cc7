// The script as a file (size, language level, built from its source) and as a
// guest on the page (no globals, installed twice), plus the demo screenshots.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as acorn from 'acorn';
import { sizes, LIMIT, FILE } from '../scripts/size.mjs';
import { build, SRC } from '../scripts/build.mjs';
import { setup, open, swapped, text, attr, artifacts, scriptErrors, sleep } from '../support/harness.mjs';

test(`ct.js is at most ${LIMIT} bytes gzipped`, () => {
  const { raw, gzip } = sizes();
  console.log(`# snippet/ct.js: ${raw} bytes raw, ${gzip} bytes gzipped`);
  assert.ok(gzip <= LIMIT, `${gzip} bytes gzipped`);
});

test('ct.js is the build of ct.src.js (run `npm run build` after editing the source)', () => {
  assert.equal(readFileSync(FILE, 'utf8'), build(readFileSync(SRC, 'utf8')));
});

test('ct.js parses as an ES2017 classic script', () => {
  for (const f of [FILE, SRC]) {
    assert.doesNotThrow(() => acorn.parse(readFileSync(f, 'utf8'), { ecmaVersion: 2017, sourceType: 'script' }), f);
  }
  // and the check itself rejects newer syntax
  assert.throws(() => acorn.parse('a?.b', { ecmaVersion: 2017 }));
  assert.throws(() => acorn.parse('try{}catch{}', { ecmaVersion: 2017 }));
});

test('ct.js has no dependencies: one IIFE, no import, no other script loaded', () => {
  const js = readFileSync(FILE, 'utf8');
  const ast = acorn.parse(js, { ecmaVersion: 2017, sourceType: 'script' });
  assert.equal(ast.body.length, 1);
  assert.equal(ast.body[0].type, 'ExpressionStatement');
  assert.equal(ast.body[0].expression.type, 'CallExpression');
  assert.doesNotMatch(js, /import\s*\(|createElement\(['"]script|importScripts|eval\(/);
});

let env;
before(async () => {
  // `calltrail demo` in real mode: its /demo/ page, plus the sites the tests create
  env = await setup({ demo: true });
});
after(async () => {
  await env?.close();
});

test('GET /t/ct.js: this ct.js, as JavaScript, cacheable, readable from any origin', async () => {
  const res = await fetch(`${env.ct.baseUrl}/t/ct.js`);
  assert.equal(res.status, 200);
  // docs/snippet.md asks for text/javascript; browsers run application/javascript as well
  assert.match(res.headers.get('content-type'), /^(text|application)\/javascript; ?charset=utf-8$/i);
  assert.match(res.headers.get('cache-control'), /\bpublic\b.*\bmax-age=\d+/);
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  assert.equal(await res.text(), readFileSync(FILE, 'utf8'));
});

test('the only global the script adds is window.calltrail (also next to an element with id="calltrail")', async () => {
  const key = await env.newSite();
  const context = await env.newContext();
  const page = await open(context, env.site.url(key, 'globals.html'));
  await swapped(page);
  const added = await page.evaluate(() =>
    Object.getOwnPropertyNames(window).filter((k) => !window.__before.includes(k) && k !== '__before'),
  );
  assert.deepEqual(added, ['calltrail']);
  await context.close();
});

test('installed twice: one visit, one swap', async () => {
  const key = await env.newSite();
  const context = await env.newContext();
  const page = await open(context, env.site.url(key, 'double.html'));
  await swapped(page);
  await sleep(400);
  assert.equal((await env.ct.visits(key)).length, 1);
  assert.equal(await text(page, '#phone'), '+7 (495) 765-43-21');
  await context.close();
});

test("calltrail's demo page (/demo/) before and after the swap: screenshots in e2e/artifacts/", async (t) => {
  if (!env.ct.demoUrl) return t.skip('the stand-in has no demo page (set CALLTRAIL_BIN)');
  const dir = artifacts();
  const context = await env.newContext({ viewport: { width: 1280, height: 800 } });
  const url = `${env.ct.demoUrl}?utm_source=yandex&utm_medium=cpc`;
  const phones = (page) => page.$$eval('.phone', (els) => els.map((e) => e.textContent));

  // before: the page as the shop prints it (the calltrail script blocked)
  const plain = await open(context);
  await plain.route('**/t/ct.js*', (r) => r.abort());
  await plain.goto(url);
  await plain.screenshot({ path: join(dir, 'demo-before.png'), fullPage: true });
  const printed = await phones(plain);
  assert.deepEqual(printed, ['+7 (495) 123-45-67', '8 (495) 123-45-67', '8-800-555-35-35', '+7 (495) 123-45-67']);
  await plain.close();

  const page = await open(context, url);
  await swapped(page);
  await page.waitForFunction(() => /\d/.test(document.querySelector('[data-calltrail-code]').textContent));
  await page.screenshot({ path: join(dir, 'demo-after.png'), fullPage: true });
  const n = await page.evaluate(() => window.calltrail.number());
  const [visit] = env.ct.requests().filter((r) => r.path === '/t/v1/visit' && r.body.url.startsWith(env.ct.demoUrl));
  assert.equal(visit.status, 200);
  assert.equal(visit.answer.numbers[0].number, n, 'the demo site answered through the proxy');
  assert.match(n, /^\+7495\d{7}$/);
  assert.notEqual(n, '+74951234567');
  const [a, b, c, d] = [n.slice(2, 5), n.slice(5, 8), n.slice(8, 10), n.slice(10)];
  // both of the demo site's numbers (the Moscow and the 8-800 one) become the visitor's
  assert.deepEqual(await phones(page), [`+7 (${a}) ${b}-${c}-${d}`, `8 (${a}) ${b}-${c}-${d}`, `8-${a}-${b}-${c}-${d}`, `+7 (${a}) ${b}-${c}-${d}`]);
  assert.equal(await page.$eval('header a.phone', (e) => e.getAttribute('href')), `tel:${n}`);
  assert.equal(await page.$eval('.phone span', (e) => e.textContent), `+7 (${a})`, 'a split number keeps its markup');
  assert.equal(await text(page, '[data-calltrail-code]'), await page.evaluate(() => window.calltrail.trackCode()));
  assert.equal(await text(page, '[data-calltrail-noswap]'), '+7 (495) 123-45-67');
  assert.deepEqual(scriptErrors(page), []);
  await context.close();
});

test('a landing page with every kind of number, before and after the swap (screenshots in e2e/artifacts/)', async () => {
  const key = await env.newSite();
  const dir = artifacts();
  const context = await env.newContext({ viewport: { width: 1280, height: 720 } });
  const url = env.site.url(key, 'demo.html', { query: '?utm_source=yandex&utm_medium=cpc' });

  // before: the page as the site prints it (calltrail script blocked)
  const plain = await open(context);
  await plain.route('**/t/ct.js*', (r) => r.abort());
  await plain.goto(url);
  await plain.screenshot({ path: join(dir, 'landing-before.png'), fullPage: true });
  assert.equal(await text(plain, '#header-phone'), '+7 (495) 123-45-67');
  await plain.close();

  const page = await open(context, url);
  await swapped(page);
  await page.waitForFunction(() => getComputedStyle(document.getElementById('header-phone')).visibility === 'visible');
  await page.screenshot({ path: join(dir, 'landing-after.png'), fullPage: true });
  assert.equal(await text(page, '#header-phone'), '+7 (495) 765-43-21');
  assert.equal(await attr(page, '#header-phone', 'href'), 'tel:+74957654321');
  assert.equal(await page.$eval('#hero-phone', (e) => e.innerHTML), '<span>8 (495)</span> <b>765-43-21</b>');
  // the 8-800 number and the service number are not this site's tracked numbers
  assert.equal(await text(page, '#cta'), 'Бесплатно по России: 8-800-555-35-35');
  assert.equal(await attr(page, '#cta', 'href'), 'tel:88005553535');
  assert.equal(await text(page, '#office-phone'), '8 495 765 43 21');
  assert.equal(await text(page, '#code'), await page.evaluate(() => window.calltrail.trackCode()));
  assert.equal(await text(page, '#service-phone'), '+7 (495) 999-88-77');
  assert.equal(await page.$eval('#callback', (e) => e.value), '+7 (495) 123-45-67');
  assert.match(await text(page, '#legal'), /\+7 \(495\) 123-45-67$/);
  assert.deepEqual(scriptErrors(page), []);
  await context.close();
});
