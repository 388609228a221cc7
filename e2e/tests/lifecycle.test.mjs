// The visit and the lease: what the script sends, ids kept first-party, tabs of
// one visitor, the heartbeat, and failing open when calltrail is slow or gone.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setup, open, swapped, text, scriptErrors, sleep, until, MOSCOW } from '../support/harness.mjs';

let env;
const contexts = [];
async function newContext(opts) {
  const c = await env.newContext(opts);
  contexts.push(c);
  return c;
}

before(async () => {
  env = await setup();
});
afterEach(async () => {
  env.ct.fault({ mode: 'ok' });
  while (contexts.length) await contexts.pop().close();
});
after(async () => {
  await env?.close();
});

const setVisibility = (page, state) =>
  page.evaluate((s) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => s });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => s === 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  }, state);

const cookie = async (context, name) => (await context.cookies()).find((c) => c.name === name);

test('the visit carries the landing URL, referrer, title, GA and Metrika ids as a simple CORS request', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const url = env.site.url(key, 'plain.html', { query: '?utm_source=yandex&utm_medium=cpc&yclid=777&gclid=abc' });
  await context.addCookies([
    { name: '_ga', value: 'GA1.1.1234567890.1700000000', url },
    { name: '_ym_uid', value: '1700000000987654321', url },
  ]);
  const page = await open(context, url, { referer: 'https://www.google.com/search?q=okna' });
  await swapped(page);
  const [visit, ...more] = await env.ct.visits(key);
  assert.equal(more.length, 0);
  assert.equal(visit.url, url);
  assert.equal(visit.referrer, 'https://www.google.com/search?q=okna');
  assert.equal(visit.title, 'Plain page');
  assert.equal(visit.ga_client_id, '1234567890.1700000000');
  assert.equal(visit.ym_client_id, '1700000000987654321');
  assert.match(visit.screen, /^\d+x\d+$/);
  assert.ok(visit.lang);
  assert.equal(visit.visitor_id, undefined, 'first visit has no visitor id');
  assert.equal(visit.session_id, undefined, 'first visit has no session id');
  assert.equal(visit._contentType, 'text/plain;charset=UTF-8');
  assert.equal(visit._origin, new URL(url).origin);
  assert.equal(visit._cookie, null, 'credentials are omitted');
  assert.equal(env.ct.requests().filter((r) => r.method === 'OPTIONS').length, 0, 'no preflight');
  assert.equal(await text(page, '#phone'), '+7 (495) 765-43-21');
  assert.equal(visit._status, 200);
  assert.deepEqual(
    visit._answer.numbers.map((n) => [n.replaces, n.number]),
    [[MOSCOW, '+74957654321']],
  );
  assert.deepEqual(scriptErrors(page), []);
});

test('visitor and session ids persist in cookies and localStorage across reloads', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await swapped(page);
  const vid = await cookie(context, '_ct_vid');
  const sid = await cookie(context, '_ct_sid');
  assert.ok(vid && sid, 'both cookies set');
  assert.equal(vid.domain, '127.0.0.1', 'host-only on an IP');
  const yearish = vid.expires - Date.now() / 1000;
  assert.ok(yearish > 360 * 86400 && yearish < 370 * 86400, `visitor cookie lives ~1 year, got ${yearish}s`);
  const halfHour = sid.expires - Date.now() / 1000;
  assert.ok(halfHour > 1700 && halfHour <= 1800, `session cookie lives 30 min, got ${halfHour}s`);
  const ls = await page.evaluate(() => [localStorage.getItem('_ct_vid'), localStorage.getItem('_ct_sid')]);
  assert.equal(JSON.parse(ls[0])[0], decodeURIComponent(vid.value));
  assert.equal(JSON.parse(ls[1])[0], decodeURIComponent(sid.value));
  const number = await page.evaluate(() => window.calltrail.number());

  await page.reload();
  await swapped(page);
  let visits = await env.ct.visits(key);
  assert.equal(visits.length, 2);
  assert.equal(visits[1].visitor_id, decodeURIComponent(vid.value));
  assert.equal(visits[1].session_id, decodeURIComponent(sid.value));
  assert.equal(await page.evaluate(() => window.calltrail.number()), number);

  // cookies gone (e.g. cleared by a browser policy): localStorage still knows the visitor
  await context.clearCookies();
  await page.reload();
  await swapped(page);
  visits = await env.ct.visits(key);
  assert.equal(visits.length, 3);
  assert.equal(visits[2].visitor_id, decodeURIComponent(vid.value));
  assert.equal(visits[2].session_id, decodeURIComponent(sid.value));
});

test('ids are set on the widest domain the browser accepts', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html', { host: 'www.shop.test' }));
  await swapped(page);
  const vid = await cookie(context, '_ct_vid');
  assert.equal(vid.domain, '.shop.test');
  // a sibling subdomain of the same site shares the visitor
  const other = await open(context, env.site.url(key, 'plain.html', { host: 'promo.shop.test' }));
  await swapped(other);
  const visits = await env.ct.visits(key);
  assert.equal(visits.length, 2);
  assert.equal(visits[1].visitor_id, decodeURIComponent(vid.value));
});

test('a public suffix (co.uk) is refused by the browser: ids go on the next wider domain and keep sliding', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html', { host: 'www.shop.co.uk' }));
  await swapped(page);
  const sid = await cookie(context, '_ct_sid');
  assert.equal(sid.domain, '.shop.co.uk');
  assert.equal((await context.cookies()).filter((c) => c.name === '_ct_sid').length, 1);
  assert.equal(await cookie(context, '_ct_t'), undefined, 'the probe cookie is removed');
  await until(async () => (await env.ct.pings(key)).length >= 2, 4000);
  await sleep(200);
  const later = await cookie(context, '_ct_sid');
  assert.ok(later.expires >= sid.expires + 1, `expiry moved from ${sid.expires} to ${later.expires}`);
});

test('two tabs of one visitor share one session and one number; another visitor gets another', async () => {
  const pool = ['+74957654321', '+74957654322'];
  const key = await env.newSite({ pool });
  const context = await newContext();
  const tab1 = await open(context, env.site.url(key, 'plain.html'));
  await swapped(tab1);
  const tab2 = await open(context, env.site.url(key, 'plain.html'));
  await swapped(tab2);
  const n1 = await tab1.evaluate(() => window.calltrail.number());
  assert.ok(pool.includes(n1), n1);
  assert.equal(await tab2.evaluate(() => window.calltrail.number()), n1);
  const shown = `+7 (495) ${n1.slice(5, 8)}-${n1.slice(8, 10)}-${n1.slice(10)}`;
  assert.equal(await text(tab1, '#phone'), shown);
  assert.equal(await text(tab2, '#phone'), shown);
  const visits = await env.ct.visits(key);
  assert.equal(visits.length, 2);
  assert.ok(visits[1].session_id, 'second tab continues the session');

  const stranger = await open(await newContext(), env.site.url(key, 'plain.html'));
  await swapped(stranger);
  const n2 = await stranger.evaluate(() => window.calltrail.number());
  assert.equal(n2, pool.find((n) => n !== n1));
  assert.equal(await text(stranger, '#phone'), `+7 (495) ${n2.slice(5, 8)}-${n2.slice(8, 10)}-${n2.slice(10)}`);
});

test('heartbeat every ping_s while visible, none while hidden, one at once when visible again', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await swapped(page);
  const t0 = Date.now();
  await sleep(2600);
  const visible = await env.ct.pings(key);
  assert.ok(visible.length >= 2 && visible.length <= 3, `2-3 pings in 2.6 s, got ${visible.length}`);
  const sid = decodeURIComponent((await cookie(context, '_ct_sid')).value);
  for (const p of visible) {
    assert.deepEqual(Object.keys(p).filter((k) => !k.startsWith('_')).sort(), ['session_id', 'site_key', 'visitor_id']);
    assert.equal(p.session_id, sid);
    assert.ok(p._at > t0 - 1500);
  }

  await setVisibility(page, 'hidden');
  const hiddenAt = Date.now();
  await sleep(2600);
  const whileHidden = (await env.ct.pings(key)).filter((p) => p._at > hiddenAt + 100);
  assert.equal(whileHidden.length, 0, 'no ping while hidden');

  const shownAt = Date.now();
  await setVisibility(page, 'visible');
  const again = await until(async () => (await env.ct.pings(key)).filter((p) => p._at >= shownAt).length > 0, 500);
  assert.ok(again, 'a ping right away when visible again');
  await page.close();
});

test('the session cookie slides with each heartbeat', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await swapped(page);
  const first = (await cookie(context, '_ct_sid')).expires;
  await until(async () => (await env.ct.pings(key)).length >= 2, 4000);
  await sleep(200);
  const later = (await cookie(context, '_ct_sid')).expires;
  assert.ok(later >= first + 1, `expiry moved from ${first} to ${later}`);
  await page.close();
});

test('hide-until-swapped: marked elements hidden while waiting, shown with the new number', async () => {
  const key = await env.newSite();
  env.ct.fault({ delay_ms: 500 });
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await page.waitForFunction(() => window.calltrail);
  const vis = () => page.$eval('#hidden-phone', (e) => getComputedStyle(e).visibility);
  assert.equal(await vis(), 'hidden');
  assert.equal(await page.$eval('#phone', (e) => getComputedStyle(e).visibility), 'visible', 'unmarked stay visible');
  await swapped(page);
  assert.equal(await vis(), 'visible');
  assert.equal(await text(page, '#hidden-phone'), '8 (495) 765-43-21');
});

test('slow server (over 1 s): original numbers kept, hidden elements revealed, nothing more sent', async () => {
  const key = await env.newSite();
  env.ct.fault({ delay_ms: 2500 });
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  const start = Date.now();
  await page.waitForFunction(() => window.calltrail);
  assert.equal(await page.$eval('#hidden-phone', (e) => getComputedStyle(e).visibility), 'hidden');
  await page.waitForFunction(() => getComputedStyle(document.getElementById('hidden-phone')).visibility === 'visible', null, {
    timeout: 2000,
  });
  assert.ok(Date.now() - start < 1600, `revealed after ${Date.now() - start} ms`);
  assert.equal(await text(page, '#hidden-phone'), '8 (495) 123-45-67');
  await sleep(2500);
  // the late answer has arrived by now and must be ignored
  assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
  assert.equal(await text(page, '#free'), '8-800-555-35-35');
  assert.equal(await page.evaluate(() => window.calltrail.number()), null);
  await page.evaluate(() => history.pushState(null, '', 'elsewhere'));
  await sleep(300);
  assert.equal((await env.ct.visits(key)).length, 1);
  assert.equal((await env.ct.pings(key)).length, 0);
  assert.equal((await env.ct.events(key)).length, 0);
  assert.deepEqual(scriptErrors(page), []);
});

for (const mode of ['dead', 'error']) {
  test(`${mode === 'dead' ? 'dead server (connection dropped)' : 'server error (500)'}: page untouched, no errors from the script`, async () => {
    const key = await env.newSite();
    env.ct.fault({ mode });
    const context = await newContext();
    const page = await open(context, env.site.url(key, 'plain.html'));
    await page.waitForFunction(() => window.calltrail);
    await until(async () => (await env.ct.visits(key)).length > 0, 2000);
    await page.waitForFunction(() => getComputedStyle(document.getElementById('hidden-phone')).visibility === 'visible', null, {
      timeout: 2000,
    });
    await sleep(1300);
    assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
    assert.equal(await text(page, '#hidden-phone'), '8 (495) 123-45-67');
    assert.equal(await text(page, '#code'), '');
    assert.equal(await page.evaluate(() => window.calltrail.number()), null);
    assert.equal((await env.ct.pings(key)).length, 0);
    assert.deepEqual(scriptErrors(page), []);
    assert.ok(!page.errors.some((e) => e.startsWith('pageerror')), page.errors.join('\n'));
  });
}

test('a page on a domain the site does not list gets no answer (CORS) and stays untouched', async () => {
  const key = await env.newSite({ domains: ['example.com'] });
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await until(async () => (await env.ct.visits(key)).length > 0, 2000);
  await page.waitForFunction(() => getComputedStyle(document.getElementById('hidden-phone')).visibility === 'visible');
  await sleep(300);
  assert.equal((await env.ct.visits(key))[0]._status, 403);
  assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
  assert.equal(await page.evaluate(() => window.calltrail.number()), null);
  assert.ok(!page.errors.some((e) => e.startsWith('pageerror')), page.errors.join('\n'));
});

test('an empty mapping (no pool number for this visitor) swaps nothing but shows the track code', async () => {
  const key = await env.newSite({ pool: [] });
  const context = await newContext();
  await context.addInitScript(() => document.addEventListener('calltrail:number', () => (window.__fired = true)));
  const page = await open(context, env.site.url(key, 'plain.html'));
  await page.waitForFunction(() => window.calltrail && window.calltrail.trackCode());
  assert.match(await text(page, '#code'), /^\d{4,6}$/);
  assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
  assert.equal(await page.evaluate(() => window.calltrail.number()), null);
  assert.equal(await page.evaluate(() => window.__fired), undefined);
  assert.equal(await page.$eval('#hidden-phone', (e) => getComputedStyle(e).visibility), 'visible');
});

test('a pool that ran dry leaves that number as printed, the rest swapped', async () => {
  const key = await env.newSite({ pool: ['+74957654321'] });
  const first = await open(await newContext(), env.site.url(key, 'plain.html'));
  await swapped(first);
  assert.equal(await text(first, '#phone'), '+7 (495) 765-43-21');
  const second = await open(await newContext(), env.site.url(key, 'plain.html'));
  await second.waitForFunction(() => window.calltrail && window.calltrail.trackCode());
  assert.equal(await text(second, '#phone'), '+7 (495) 123-45-67');
});

// The real server ends a session after 30 minutes without activity; the proxy answers
// one ping with the server's own 410 instead, to see the script's side of it.
test('a session that ran out (410 on ping) starts a new visit and keeps swapping', async () => {
  const pool = ['+74957654321', '+74957654322'];
  const key = await env.newSite({ pool });
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await swapped(page);
  const vid = decodeURIComponent((await cookie(context, '_ct_vid')).value);
  const sid = decodeURIComponent((await cookie(context, '_ct_sid')).value);
  env.ct.fault({ mode: 'gone', only: '/t/v1/ping', times: 1 });
  // The proxy logs a request as it arrives and its status once answered: wait for both.
  const answered = async () => {
    const v = await env.ct.visits(key);
    return v.length === 2 && v[1]._status != null;
  };
  assert.ok(await until(answered, 4000), 'a second visit, answered');
  const [, again] = await env.ct.visits(key);
  assert.equal(again.visitor_id, vid);
  assert.equal(again.session_id, undefined, 'the expired session is not sent again');
  assert.equal(again._status, 200);
  assert.notEqual(again._answer.session_id, sid, 'the server opened a new session');
  const sid2 = await until(async () => {
    const c = await cookie(context, '_ct_sid');
    return c && decodeURIComponent(c.value) !== sid && decodeURIComponent(c.value);
  }, 2000);
  assert.equal(sid2, again._answer.session_id, 'the new session id is stored');
  assert.ok(
    await until(async () => (await env.ct.pings(key)).some((p) => p.session_id === sid2 && p._status === 200), 3000),
    'pings go on with it',
  );
  // the new session has a number of its own (the old one may still hold the first)
  const n = await page.evaluate(() => window.calltrail.number());
  assert.deepEqual(again._answer.numbers.map((m) => m.number), [n]);
  assert.ok(pool.includes(n), n);
  assert.equal(await text(page, '#phone'), `+7 (495) ${n.slice(5, 8)}-${n.slice(8, 10)}-${n.slice(10)}`);
  assert.deepEqual(scriptErrors(page), []);
});

test('a session that ran out and a failed new visit: the page goes back to its own numbers', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const page = await open(context, env.site.url(key, 'plain.html'));
  await swapped(page);
  assert.equal(await text(page, '#phone'), '+7 (495) 765-43-21');
  env.ct.fault([
    { mode: 'gone', only: '/t/v1/ping', times: 1 },
    { mode: 'dead', only: '/t/v1/visit' },
  ]);
  await page.waitForFunction(() => window.calltrail.number() === null, null, { timeout: 4000 });
  assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
  assert.equal(await text(page, '#hidden-phone'), '8 (495) 123-45-67');
  // one new visit, without the session id (Chromium itself may resend it once when the
  // connection drops)
  const [first, ...again] = await env.ct.visits(key);
  assert.ok(again.length >= 1 && again.length <= 2, `${again.length} visits after the 410`);
  for (const v of again) {
    assert.equal(v.visitor_id, first._answer.visitor_id);
    assert.equal(v.session_id, undefined);
  }
  const pings = (await env.ct.pings(key)).length;
  await sleep(1500);
  assert.equal((await env.ct.pings(key)).length, pings, 'no more pings');
  assert.deepEqual(scriptErrors(page), []);
});

test('headless Chromium (a bot to calltrail) keeps the site number; a person on the same site gets a swap', async () => {
  const key = await env.newSite();
  // the browser's own user agent: "... HeadlessChrome/NNN ..."
  const bot = await env.browser.newContext();
  contexts.push(bot);
  const page = await open(bot, env.site.url(key, 'plain.html'));
  await until(async () => (await env.ct.visits(key)).some((v) => v._status), 3000);
  const [visit] = await env.ct.visits(key);
  assert.match(visit._userAgent, /HeadlessChrome/);
  assert.equal(visit._status, 200);
  assert.deepEqual(visit._answer.numbers, [], 'the server shows a bot no tracking number');
  await page.waitForFunction(() => window.calltrail && window.calltrail.trackCode());
  await sleep(300);
  assert.equal(await page.evaluate(() => window.calltrail.number()), null);
  assert.equal(await text(page, '#phone'), '+7 (495) 123-45-67');
  assert.equal(await text(page, '#hidden-phone'), '8 (495) 123-45-67');
  assert.deepEqual(scriptErrors(page), []);

  // the pool's one number is still free for a person
  const person = await open(await newContext(), env.site.url(key, 'plain.html'));
  await swapped(person);
  const [, visit2] = await env.ct.visits(key);
  assert.doesNotMatch(visit2._userAgent, /Headless/);
  assert.equal(await text(person, '#phone'), '+7 (495) 765-43-21');
});
