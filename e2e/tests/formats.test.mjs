// Every way a site prints a number: what gets swapped, and what must stay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, open, swapped, text, attr, scriptErrors, MOSCOW, FREEPHONE } from '../support/harness.mjs';

const UK = '+442079460958';
let env, key, page, context;

// The formats page carries a Moscow number, an 8-800 number and a London number in
// many forms; each site below configures some of them, the rest must stay as printed.
const site = (site_numbers, pool) => env.ct.createSite({ domains: ['127.0.0.1'], site_numbers, pool });
// Sites share the host 127.0.0.1 and so the id cookies: one browser context per site.
async function formatsPage(k, c) {
  const p = await open(c ?? (await env.newContext()), env.site.url(k, 'formats.html'));
  await swapped(p);
  return p;
}

before(async () => {
  env = await setup();
  context = await env.newContext();
  key = (await site([MOSCOW], ['+74957654321'])).key;
  page = await formatsPage(key, context);
});
after(async () => {
  await context?.close();
  await env?.close();
});

test('the server mapping arrives', async () => {
  const nums = await page.evaluate(() => window.calltrail.numbers());
  assert.deepEqual(
    nums.map((n) => [n.replaces, n.number]),
    [[MOSCOW, '+74957654321']],
  );
});

test('every written form of a configured number is swapped, formatting kept', async () => {
  const expected = {
    f1: '+7 (495) 765-43-21',
    f2: '8 495 765 43 21',
    f3: '+74957654321',
    f4: '8-800-555-35-35',
    f5: '8 (495) 765-43-21',
    f6: '+7 495 7654321',
    f7: '(495) 765-43-21',
    f8: '+7\u00a0495\u00a0765\u201143\u201121',
    f9: '8.495.765.43.21',
    f10: '84957654321',
    f11: 'Звоните: 8 495 765 43 21 или 8-800-555-35-35, доб. 12',
    uk1: '+44 20 7946 0958',
    uk2: '020 7946 0958',
  };
  const got = {};
  for (const id of Object.keys(expected)) got[id] = await text(page, `#${id}`);
  assert.deepEqual(got, expected);
  assert.equal(await page.$eval('#f12', (e) => e.innerHTML), '+7 (495) 765-43-21<br>8 (800) 555-35-35');
});

test('an 8-800 number, and only it, when that is the site number', async () => {
  const p = await formatsPage((await site([FREEPHONE], ['+78001002030'])).key);
  const got = {};
  for (const id of ['f1', 'f2', 'f4', 'f11']) got[id] = await text(p, `#${id}`);
  assert.deepEqual(got, {
    f1: '+7 (495) 123-45-67',
    f2: '8 495 123 45 67',
    f4: '8-800-100-20-30',
    f11: 'Звоните: 8 495 123 45 67 или 8-800-100-20-30, доб. 12',
  });
  assert.equal(await p.$eval('#f12', (e) => e.innerHTML), '+7 (495) 123-45-67<br>8 (800) 100-20-30');
  assert.equal(await attr(p, '#tel3', 'href'), 'TEL:+7-800-100-20-30');
  assert.equal(await p.$eval('#tel3', (e) => e.innerHTML), '<span>8 800</span> <span>100 20 30</span>');
  assert.equal(await attr(p, '#attrs', 'data-tel'), '8 (800) 100-20-30');
  assert.equal(await attr(p, '#attrs', 'data-phone'), '+74951234567');
  const [m] = await p.evaluate(() => window.calltrail.numbers());
  assert.equal(await text(p, '#num2'), m.display);
  await p.context().close();
});

test('another country: country code or trunk 0, same formatting', async () => {
  const p = await formatsPage((await site([UK], ['+442071234567'])).key);
  assert.equal(await text(p, '#uk1'), '+44 20 7123 4567');
  assert.equal(await text(p, '#uk2'), '020 7123 4567');
  assert.equal(await text(p, '#f1'), '+7 (495) 123-45-67');
  await p.context().close();
});

test('a number of another country than the printed one is written whole, as display', async () => {
  // (not the first site's +74957654321: a tracking number serves one site only)
  const p = await formatsPage((await site([UK], ['+74957654322'])).key);
  const [m] = await p.evaluate(() => window.calltrail.numbers());
  assert.match(m.display, /495\D*765\D*43\D*22/);
  assert.equal(await text(p, '#uk1'), m.display);
  assert.equal(await text(p, '#uk2'), m.display);
  await p.context().close();
});

test('a number split across inline elements is swapped in place', async () => {
  assert.equal(await page.$eval('#split1', (e) => e.innerHTML), '<span>+7 (495)</span> <b>765-43-21</b>');
  assert.equal(
    await page.$eval('#split2', (e) => e.innerHTML),
    '<span class="a">8</span>&nbsp;<span>(495)</span>\n   <span>765</span>-<em>43</em>-<strong>21</strong>',
  );
});

test('tel: links: href digits and link text', async () => {
  assert.equal(await attr(page, '#tel1', 'href'), 'tel:+74957654321');
  assert.equal(await text(page, '#tel1'), '+7 495 765-43-21');
  assert.equal(await attr(page, '#tel2', 'href'), 'tel:84957654321');
  assert.equal(await text(page, '#tel2'), 'Позвонить');
  assert.equal(await attr(page, '#tel3', 'href'), 'TEL:+7-800-555-35-35', 'not a site number here');
});

test('data-* attributes named by data-calltrail-attrs, and only those', async () => {
  assert.equal(await attr(page, '#attrs', 'data-phone'), '+74957654321');
  assert.equal(await attr(page, '#attrs', 'data-tel'), '8 (800) 555-35-35', 'not a site number here');
  assert.equal(await attr(page, '#attrs', 'data-other'), '+74951234567');
});

test('data-calltrail-number shows the display form; data-calltrail-code the track code', async () => {
  const [m] = await page.evaluate(() => window.calltrail.numbers());
  assert.match(m.display, /495\D*765\D*43\D*21/);
  assert.equal(await text(page, '#num'), m.display);
  // names a number that is not in the mapping: the visitor's (first) number
  assert.equal(await text(page, '#num2'), m.display);
  const code = await page.evaluate(() => window.calltrail.trackCode());
  assert.match(code, /^\d{4,6}$/);
  assert.equal(await text(page, '#code'), code);
});

test('numbers not configured, and longer digit runs, stay as printed', async () => {
  assert.equal(await text(page, '#other'), '+7 (495) 999-88-77');
  assert.equal(await text(page, '#longer1'), '184951234567');
  assert.equal(await text(page, '#longer2'), '74951234567123');
  assert.equal(await text(page, '#longer3'), 'ИНН 7495123456789');
  // table cells are separate blocks: not one number
  assert.equal(await text(page, '#cell1'), '8 495');
  assert.equal(await text(page, '#cell2'), '123 45 67');
});

test('noswap subtrees, inputs, textareas, selects, contenteditable and scripts are untouched', async () => {
  assert.equal(await text(page, '#noswap'), '+7 (495) 123-45-67 8 800 555 35 35');
  assert.equal(await attr(page, '#noswap-tel', 'href'), 'tel:+74951234567');
  assert.equal(await text(page, '#noswap-tel'), '+7 495 123-45-67');
  assert.equal(await page.$eval('#input', (e) => e.value), '+7 (495) 123-45-67');
  assert.equal(await attr(page, '#input', 'value'), '+7 (495) 123-45-67');
  assert.equal(await attr(page, '#input', 'data-phone'), '+74951234567');
  assert.equal(await page.$eval('#textarea', (e) => e.value), '8 495 123 45 67');
  assert.equal(await text(page, '#select'), '8 800 555 35 35');
  assert.equal(await text(page, '#editable'), '+7 (495) 123-45-67');
  assert.equal(await text(page, '#inline'), 'var phoneInScript = "+7 (495) 123-45-67";');
});

test('swap() again, on the page or on a subtree, changes nothing', async () => {
  const before = await page.content();
  await page.evaluate(() => window.calltrail.swap());
  await page.evaluate(() => window.calltrail.swap(document.getElementById('split1')));
  assert.equal(await page.content(), before);
  assert.deepEqual(scriptErrors(page), []);
});

test('install with ?k= instead of data-site works too', async () => {
  const p = await open(context, env.site.url(key, 'query.html'));
  await swapped(p);
  assert.equal(await text(p, '#phone'), '+7 (495) 765-43-21');
  await p.close();
});

test('a new number of another length: printed prefix kept, national part written like display', async () => {
  const k = (
    await env.ct.createSite({
      domains: ['127.0.0.1'],
      site_numbers: ['+4930123456'],
      pool: ['+493012345678'],
    })
  ).key;
  const p = await open(await env.newContext(), env.site.url(k, 'unequal.html'));
  await swapped(p);
  const [m] = await p.evaluate(() => window.calltrail.numbers());
  assert.equal(m.number, '+493012345678');
  // the national part of `display`, from its first national digit (or bracket)
  const nat = m.display.slice(m.display.search(/\(?30/));
  assert.equal(await text(p, '#u1'), `0${nat}`);
  assert.equal(await text(p, '#u2'), `+49 ${nat}`);
  assert.equal(await text(p, '#u3'), `+49 ${nat}`);
  assert.equal(await text(p, '#u4'), `Tel. 0${nat} (Zentrale)`);
  assert.equal(await attr(p, '#u5', 'href'), `tel:+49${nat.replace(/\D/g, '')}`);
  await p.context().close();
});
