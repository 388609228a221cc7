// A small Node stand-in for the calltrail server's public tracking API, for quick
// local runs of the browser tests without a built `calltrail` binary (CI runs them
// against the real binary: CALLTRAIL_BIN, see support/server.mjs).
// It follows the wire contract in docs/snippet.md ("Wire contract") and nothing
// more: GET /t/ct.js, POST /t/v1/visit, /t/v1/ping, /t/v1/event, CORS only for a
// site's domains. Like the real server, a session leases one number of the site's
// pool, and that number replaces every one of the site's own numbers; a ping or
// event for a session that ran out is answered 410 Gone.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';

/** "+74957654321" -> "+7 (495) 765-43-21", "+442071234567" -> "+44 20 7123 4567". */
export function display(e164) {
  const d = e164.replace(/\D/g, '');
  if (d.length === 11 && d[0] === '7') {
    return `+7 (${d.slice(1, 4)}) ${d.slice(4, 7)}-${d.slice(7, 9)}-${d.slice(9)}`;
  }
  if (d.startsWith('44') && d.length === 12) return `+44 ${d.slice(2, 4)} ${d.slice(4, 8)} ${d.slice(8)}`;
  if (d.startsWith('49')) return `+49 ${d.slice(2, 4)} ${d.slice(4)}`;
  return e164;
}

/** Does Origin header `origin` belong to one of `domains` (host or a subdomain of it, any port)? */
export function originAllowed(origin, domains) {
  if (!origin) return false;
  let host;
  try {
    host = new URL(origin).hostname;
  } catch {
    return false;
  }
  return domains.some((d) => host === d || host.endsWith(`.${d}`));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * Starts the stand-in on 127.0.0.1 and a free port.
 * @param {{snippet: string}} opts path of the script to serve at /t/ct.js
 */
export async function startStandIn({ snippet }) {
  const sites = new Map(); // public key -> site
  const sessions = new Map(); // session id -> session
  const visitors = new Map(); // visitor id -> { key, sessionId }
  let nextCode = 48210;

  // A pool number is free when no other live session of the site holds it.
  function lease(site, session) {
    if (session.lease) return session.lease;
    const held = new Set();
    for (const s of sessions.values()) {
      if (s !== session && s.key === site.key && !s.expired && s.lease) held.add(s.lease);
    }
    session.lease = site.pool.find((n) => !held.has(n)) ?? null;
    return session.lease;
  }

  function numbersFor(site, session) {
    if (session.bot) return [];
    const n = lease(site, session);
    // pool ran dry: no swap
    return n ? site.site_numbers.map((r) => ({ replaces: r, number: n, display: display(n) })) : [];
  }

  function send(res, status, obj, headers = {}) {
    const body = obj === undefined ? '' : JSON.stringify(obj);
    res.writeHead(status, { ...(body && { 'Content-Type': 'application/json' }), ...headers });
    res.end(body);
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && url.pathname === '/t/ct.js') {
      const js = await readFile(snippet);
      res.writeHead(200, {
        'Content-Type': 'text/javascript; charset=utf-8',
        'Cache-Control': 'public, max-age=300',
        'Access-Control-Allow-Origin': '*',
      });
      res.end(js);
      return;
    }
    if (!url.pathname.startsWith('/t/v1/')) return send(res, 404, { error: 'not found' });
    if (req.method !== 'POST') return send(res, 405, { error: 'method not allowed' });

    let body;
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      return send(res, 400, { error: 'body must be JSON' });
    }
    const site = sites.get(body.site_key);
    if (!site) return send(res, 404, { error: 'unknown site' });
    const origin = req.headers.origin;
    // CORS: only the site's own domains may read the answer.
    if (!originAllowed(origin, site.domains)) return send(res, 403, { error: 'origin not allowed' });
    const cors = { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' };

    switch (url.pathname) {
      case '/t/v1/visit': {
        if (typeof body.url !== 'string') return send(res, 400, { error: 'url required' }, cors);
        let vid = visitors.has(body.visitor_id) ? body.visitor_id : randomUUID();
        if (!visitors.has(vid)) visitors.set(vid, { key: site.key, sessionId: null });
        let session = sessions.get(body.session_id);
        if (!session || session.expired || session.visitorId !== vid || session.key !== site.key) {
          session = {
            id: randomUUID(), key: site.key, visitorId: vid, lease: null, expired: false,
            code: String(nextCode++), landing: body.url, referrer: body.referrer,
            // like the real server: headless browsers keep the site's own number
            bot: /HeadlessChrome|bot|crawl|spider/i.test(req.headers['user-agent'] ?? ''),
          };
          sessions.set(session.id, session);
        }
        visitors.get(vid).sessionId = session.id;
        return send(res, 200, {
          visitor_id: vid,
          session_id: session.id,
          numbers: numbersFor(site, session),
          track_code: session.code,
          ping_s: site.ping_s,
        }, cors);
      }
      case '/t/v1/ping':
      case '/t/v1/event': {
        const session = sessions.get(body.session_id);
        if (!session || session.key !== site.key || session.expired) {
          return send(res, 410, { error: 'session expired; send a new visit' }, cors);
        }
        if (url.pathname === '/t/v1/ping') {
          return send(res, 200, { numbers: numbersFor(site, session), ping_s: site.ping_s }, cors);
        }
        if (body.type !== 'pageview' || typeof body.url !== 'string') return send(res, 400, { error: 'bad event' }, cors);
        return send(res, 204, undefined, cors);
      }
      default:
        return send(res, 404, { error: 'not found' }, cors);
    }
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => send(res, 500, { error: String(e) }));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const baseUrl = `http://127.0.0.1:${server.address().port}`;

  return {
    baseUrl,
    /** @param {{domains: string[], site_numbers: string[], pool: string[]}} spec (ping_s: 1, like the real server in the tests) */
    createSite(spec) {
      const key = `pk_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
      const site = {
        key,
        domains: spec.domains,
        site_numbers: spec.site_numbers,
        pool: spec.pool ?? [],
        ping_s: 1,
      };
      sites.set(key, site);
      return {
        public_key: key,
        install_snippet: `<script async src="${baseUrl}/t/ct.js" data-site="${key}"></script>`,
      };
    },
    /** A pool number is renamed (like PATCH .../numbers/{id} {number}): its leases go on with the new one. */
    renumber(key, from, to) {
      const site = sites.get(key);
      site.pool = site.pool.map((n) => (n === from ? to : n));
      for (const s of sessions.values()) if (s.key === key && s.lease === from) s.lease = to;
    },
    /** The site's own numbers change (like PATCH /sites/{id} {site_numbers}). */
    setSiteNumbers(key, list) {
      sites.get(key).site_numbers = list;
    },
    stop() {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}
