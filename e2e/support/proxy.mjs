// A recording, fault-injecting HTTP proxy in front of a calltrail server (the
// stand-in or the real binary). The browser talks to the proxy only, so the
// tests see exactly what the script sent, and can make the tracking API slow
// or dead without touching the server behind it.
import http from 'node:http';

/**
 * @param {string} upstream base URL of the server, e.g. http://127.0.0.1:8790
 */
export async function startProxy(upstream) {
  const target = new URL(upstream);
  const log = []; // every request: {method, path, origin, contentType, body, at}
  let fault = { mode: 'ok', delay_ms: 0 };
  const sockets = new Set();

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
      log.push({
        method: req.method,
        path,
        origin: req.headers.origin ?? null,
        contentType: req.headers['content-type'] ?? null,
        cookie: req.headers.cookie ?? null,
        body,
        at: Date.now(),
      });
      const api = path.startsWith('/t/v1/') && (!fault.only || fault.only === path);
      if (api && fault.delay_ms) await new Promise((r) => setTimeout(r, fault.delay_ms));
      if (api && fault.mode === 'dead') {
        req.socket.destroy();
        return;
      }
      if (api && fault.mode === 'error') {
        res.writeHead(500, {
          'Content-Type': 'application/json',
          ...(req.headers.origin && { 'Access-Control-Allow-Origin': req.headers.origin }),
        });
        res.end('{"error":"injected"}');
        return;
      }
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
          ur.pipe(res);
        },
      );
      up.on('error', () => req.socket.destroy());
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
    /**
     * {mode: 'ok' | 'dead' | 'error', delay_ms, only?} for /t/v1/* (or just the path
     * `only`, e.g. '/t/v1/visit'); ct.js is always served.
     */
    setFault(f) {
      fault = { mode: 'ok', delay_ms: 0, ...f };
    },
    stop() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(r));
    },
  };
}
