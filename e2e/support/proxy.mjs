// A recording, fault-injecting HTTP proxy in front of a calltrail server (the
// real binary, or the Node stand-in). The browser talks to the proxy only, so
// the tests see exactly what the script sent and what the server answered, and
// can make the tracking API slow, dead, failing or "session gone" without
// touching the server behind it.
import http from 'node:http';

/**
 * A fault for /t/v1/* requests:
 *   mode      'ok' (forward), 'dead' (drop the connection), 'error' (answer 500),
 *             'gone' (answer 410 like a server whose session ran out: the real
 *             server's answer, minus the wait of its 30-minute session timeout)
 *   delay_ms  wait this long before doing the above
 *   only      just this path, e.g. '/t/v1/visit'
 *   times     apply to this many requests only, then stop matching
 * @typedef {{mode?: 'ok'|'dead'|'error'|'gone', delay_ms?: number, only?: string, times?: number}} Fault
 */

/**
 * @param {string} [upstream] base URL of the server, e.g. http://127.0.0.1:8790; may be
 *   set later with setUpstream() (the real server is told the proxy's URL on start).
 */
export async function startProxy(upstream) {
  let target = upstream ? new URL(upstream) : null;
  // every request: {method, path, origin, contentType, cookie, userAgent, body, at,
  // status, answer} (status and answer once the response is complete; /t/v1/* only)
  const log = [];
  /** @type {Fault[]} */
  let faults = [];
  let held = null; // a promise /t/v1/* requests wait on before going upstream
  let inflight = 0; // /t/v1/* requests upstream now
  const sockets = new Set();

  const cors = (req) => (req.headers.origin ? { 'Access-Control-Allow-Origin': req.headers.origin, Vary: 'Origin' } : {});

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const raw = Buffer.concat(chunks);
      const path = new URL(req.url, 'http://x').pathname;
      let body = null;
      try {
        body = raw.length ? JSON.parse(raw.toString('utf8')) : null;
      } catch {
        body = raw.toString('utf8');
      }
      const entry = {
        method: req.method,
        path,
        origin: req.headers.origin ?? null,
        contentType: req.headers['content-type'] ?? null,
        cookie: req.headers.cookie ?? null,
        userAgent: req.headers['user-agent'] ?? null,
        body,
        at: Date.now(),
        status: null,
        answer: undefined,
      };
      log.push(entry);
      const api = path.startsWith('/t/v1/');
      const fault = api ? faults.find((f) => (!f.only || f.only === path) && f.times !== 0) : undefined;
      if (fault && fault.times > 0) fault.times--;
      if (fault?.delay_ms) await new Promise((r) => setTimeout(r, fault.delay_ms));
      if (fault?.mode === 'dead') {
        req.socket.destroy();
        return;
      }
      if (fault?.mode === 'error' || fault?.mode === 'gone') {
        const [status, answer] =
          fault.mode === 'error' ? [500, { error: 'injected' }] : [410, { error: 'session expired; send a new visit' }];
        entry.status = status;
        entry.answer = answer;
        res.writeHead(status, { 'Content-Type': 'application/json', ...cors(req) });
        res.end(JSON.stringify(answer));
        return;
      }
      while (api && held) await held;
      if (!target) {
        res.writeHead(502, { 'Content-Type': 'text/plain' });
        res.end('proxy: no upstream yet');
        return;
      }
      if (api) inflight++;
      let done = false;
      const finish = () => {
        if (api && !done) inflight--;
        done = true;
      };
      const up = http.request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: target.host },
        },
        (ur) => {
          res.writeHead(ur.statusCode, ur.headers);
          ur.on('close', finish);
          if (!api) {
            entry.status = ur.statusCode;
            ur.pipe(res);
            return;
          }
          const got = [];
          ur.on('data', (c) => {
            got.push(c);
            res.write(c);
          });
          ur.on('end', () => {
            const t = Buffer.concat(got).toString('utf8');
            try {
              entry.answer = t ? JSON.parse(t) : null;
            } catch {
              entry.answer = t;
            }
            entry.status = ur.statusCode; // with the answer, both at once
            res.end();
            finish();
          });
        },
      );
      up.on('error', () => {
        finish();
        req.socket.destroy();
      });
      up.end(raw);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));

  return {
    baseUrl: `http://127.0.0.1:${server.address().port}`,
    log,
    setUpstream(url) {
      target = new URL(url);
    },
    /**
     * One fault or a list (the first that matches a request applies); {mode: 'ok'} or
     * [] clears. /t/v1/* only: ct.js and everything else always pass.
     * @param {Fault | Fault[]} f
     */
    setFault(f) {
      faults = (Array.isArray(f) ? f : [f]).map((x) => ({ mode: 'ok', delay_ms: 0, ...x })).filter((x) => x.mode !== 'ok' || x.delay_ms);
    },
    /**
     * Runs fn() while /t/v1/* requests wait at the proxy (they go on afterwards), so a
     * setup change made of several API calls is seen by the script all at once.
     */
    async holding(fn) {
      let release;
      held = new Promise((r) => (release = r));
      // and those already upstream are answered first
      while (inflight > 0) await new Promise((r) => setTimeout(r, 5));
      try {
        return await fn();
      } finally {
        held = null;
        release();
      }
    },
    stop() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}
