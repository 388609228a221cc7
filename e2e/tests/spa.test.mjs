// Single-page apps: page views on history navigation, numbers that appear
// later, the window.calltrail API and the calltrail:number event, re-swaps.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setup, open, swapped, text, attr, scriptErrors, sleep, until, MOSCOW, FREEPHONE } from '../support/harness.mjs';

let env;
const contexts = [];
async function newContext() {
  const c = await env.newContext();
  contexts.push(c);
  return c;
}
before(async () => {
  env = await setup();
});
afterEach(async () => {
  while (contexts.length) await contexts.pop().close();
});
after(async () => {
  await env?.close();
});

test('history navigation reports page views; new content is swapped by the observer', async () => {
  const key = await env.newSite();
  const context = await newContext();
  const url = env.site.url(key, 'spa.html');
  const page = await open(context, url);
  await swapped(page);
  assert.equal(await text(page, '#home-phone'), '+7 (495) 765-43-21');
  const base = new URL(url);
  const events = async (n) => {
    assert.ok(await until(async () => (await env.ct.events(key)).length >= n, 3000), `expected ${n} events`);
    return env.ct.events(key);
  };

  await page.click('#to-contacts');
  let ev = await events(1);
  assert.equal(ev[0].type, 'pageview');
  assert.equal(ev[0].url, new URL('contacts', base).href);
  assert.equal(ev[0].title, 'SPA contacts');
  assert.ok(ev[0].visitor_id && ev[0].session_id);
  assert.equal(await page.$eval('#contacts-phone', (e) => e.innerHTML), '<span>8 (495)</span> <b>765-43-21</b>');
  assert.equal(await attr(page, '#contacts-tel', 'href'), 'tel:+74957654321');

  await page.click('#to-about');
  ev = await events(2);
  assert.equal(ev[1].url, new URL('about', base).href);
  assert.equal(await text(page, '#about-phone'), '8 495 765 43 21');
  assert.equal(await text(page, '#about-free'), '8-800-555-35-35', 'not a site number');

  await page.click('#to-hash');
  ev = await events(3);
  assert.equal(ev[2].url, new URL('about#faq', base).href);

  await page.goBack();
  ev = await events(4);
  assert.equal(ev[3].url, new URL('about', base).href);
  await page.goBack();
  ev = await events(5);
  assert.equal(ev[4].url, new URL('contacts', base).href);
  assert.equal(ev.length, 5, 'one page view per URL change');
  assert.equal(await page.$eval('#contacts-phone', (e) => e.innerHTML), '<span>8 (495)</span> <b>765-43-21</b>');

  // replaceState to the same URL (routers store state this way) is no page view
  await page.evaluate(() => history.replaceState({ route: 'contacts', x: 1 }, ''));
  await sleep(300);
  assert.equal((await env.ct.events(key)).length, 5);
  assert.equal((await env.ct.visits(key)).length, 1, 'SPA navigation sends events, not visits');
  assert.deepEqual(scriptErrors(page), []);
});

test('a number written later into an existing text node is swapped', async () => {
  const key = await env.newSite();
  const page = await open(await newContext(), env.site.url(key, 'spa.html'));
  await swapped(page);
  await page.evaluate(() => window.setLiveText('status: call 8 (495) 123-45-67'));
  await page.waitForFunction(() => document.getElementById('live').textContent.includes('765-43-21'), null, {
    timeout: 2000,
  });
  assert.equal(await text(page, '#live'), 'status: call 8 (495) 765-43-21');
  // and a subtree appended by page code
  await page.evaluate(() => {
    const d = document.createElement('div');
    d.id = 'late';
    d.innerHTML = 'Новый блок: <a href="tel:+74951234567">8 495 123-45-67</a>';
    document.body.appendChild(d);
  });
  await page.waitForFunction(() => document.querySelector('#late a').getAttribute('href') === 'tel:+74957654321');
  assert.equal(await text(page, '#late a'), '8 495 765-43-21');
});

test('the observer does not react to its own writes (no mutation loop)', async () => {
  const key = await env.newSite();
  const page = await open(await newContext(), env.site.url(key, 'spa.html'));
  await swapped(page);
  await page.click('#to-contacts');
  await page.waitForFunction(() => document.getElementById('contacts-phone').textContent.includes('765'));
  const count = await page.evaluate(
    () =>
      new Promise((resolve) => {
        let n = 0;
        const mo = new MutationObserver((rs) => (n += rs.length));
        mo.observe(document.documentElement, { subtree: true, childList: true, characterData: true, attributes: true });
        setTimeout(() => {
          mo.disconnect();
          resolve(n);
        }, 500);
      }),
  );
  assert.equal(count, 0);
});

test('window.calltrail API and the calltrail:number event', async () => {
  const key = await env.newSite();
  const context = await newContext();
  await context.addInitScript(() => {
    window.__events = [];
    document.addEventListener('calltrail:number', (e) => window.__events.push(e.detail));
  });
  const page = await open(context, env.site.url(key, 'spa.html'));
  await swapped(page);
  const api = await page.evaluate(() => {
    const c = window.calltrail;
    const got = [];
    c.onNumber((n, all) => got.push([n, all.length]));
    c.onNumber(() => {
      throw new Error('a broken callback must not break the script');
    });
    return {
      keys: Object.keys(c).sort(),
      number: c.number(),
      numbers: c.numbers(),
      code: c.trackCode(),
      got,
    };
  });
  assert.deepEqual(api.keys, ['number', 'numbers', 'onNumber', 'swap', 'trackCode']);
  assert.equal(api.number, '+74957654321');
  assert.equal(api.numbers.length, 1);
  assert.equal(api.numbers[0].replaces, MOSCOW);
  assert.equal(api.numbers[0].number, '+74957654321');
  assert.match(api.numbers[0].display, /495\D*765\D*43\D*21/);
  assert.match(api.code, /^\d{4,6}$/);
  assert.deepEqual(api.got, [['+74957654321', 1]], 'onNumber calls back at once when known');
  const events = await page.evaluate(() => window.__events);
  assert.equal(events.length, 1);
  assert.equal(events[0].number, '+74957654321');
  assert.deepEqual(events[0].numbers, api.numbers);
  assert.equal(events[0].track_code, api.code);
  // swap(root) on content the observer cannot see (not yet in the document, then inserted)
  const html = await page.evaluate(() => {
    const d = document.createElement('p');
    d.textContent = '+7 495 123 45 67';
    window.calltrail.swap(d);
    return d.textContent;
  });
  assert.equal(html, '+7 495 123 45 67', 'detached nodes are left alone');
});

// The site's setup changes while the page is open: the pool number is renumbered and the
// 8-800 number is no longer a site number. The next ping answers the new mapping.
test('a ping answer with a different mapping re-swaps from the originals', async () => {
  const key = await env.newSite({ site_numbers: [MOSCOW, FREEPHONE] });
  const context = await newContext();
  await context.addInitScript(() => {
    window.__events = [];
    document.addEventListener('calltrail:number', (e) => window.__events.push(e.detail.number));
  });
  const page = await open(context, env.site.url(key, 'spa.html'));
  await swapped(page);
  await page.evaluate(() => window.setLiveText('8-800-555-35-35'));
  // one visitor number replaces both site numbers
  await page.waitForFunction(() => document.getElementById('live').textContent === '8-495-765-43-21');
  await page.evaluate(() => {
    window.__cb = [];
    window.calltrail.onNumber((n) => window.__cb.push(n));
  });
  // both changes at once, as the script sees them: its requests wait at the proxy meanwhile
  await env.ct.holding(async () => {
    await env.ct.setSiteNumbers(key, [MOSCOW]);
    await env.ct.renumber(key, '+74957654321', '+74950001122');
  });
  await page.waitForFunction(() => window.calltrail.number() === '+74950001122', null, { timeout: 4000 });
  // an already swapped node gets the new number, computed from what the site printed
  assert.equal(await text(page, '#home-phone'), '+7 (495) 000-11-22');
  // the 8-800 number is no longer in the mapping: back to what the site printed
  assert.equal(await text(page, '#live'), '8-800-555-35-35');
  // content rendered later uses the new mapping
  await page.click('#to-contacts');
  await page.waitForFunction(() => document.getElementById('contacts-phone'));
  assert.equal(await page.$eval('#contacts-phone', (e) => e.innerHTML), '<span>8 (495)</span> <b>000-11-22</b>');
  assert.deepEqual(await page.evaluate(() => window.__events), ['+74957654321', '+74950001122']);
  assert.deepEqual(await page.evaluate(() => window.__cb), ['+74957654321', '+74950001122']);
  assert.deepEqual(scriptErrors(page), []);
});
