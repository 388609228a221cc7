// The customer's website: a static server on its own origin that serves
// e2e/pages/*.html at /<site key>/<page>.html, with the install line templated in:
//   {{BASE}}    calltrail base URL (where /t/ct.js lives)
//   {{KEY}}     the site's public key (taken from the first path segment)
//   {{INSTALL}} <script async src="{{BASE}}/t/ct.js" data-site="{{KEY}}"></script>
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const PAGES = fileURLToPath(new URL('../pages/', import.meta.url));

export async function startSite(calltrailBase) {
  const server = http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const m = /^\/([\w-]+)\/([\w-]+\.html)$/.exec(path);
    if (!m) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    const [, key, name] = m;
    let html;
    try {
      html = await readFile(join(PAGES, name), 'utf8');
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('no such page');
      return;
    }
    html = html
      .replaceAll('{{INSTALL}}', '<script async src="{{BASE}}/t/ct.js" data-site="{{KEY}}"></script>')
      .replaceAll('{{BASE}}', calltrailBase)
      .replaceAll('{{KEY}}', key);
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  return {
    port,
    /** URL of page `name` for site `key`; `host` may be any *.test or *.shop.co.uk name (mapped to 127.0.0.1). */
    url(key, name, { host = '127.0.0.1', query = '' } = {}) {
      return `http://${host}:${port}/${key}/${name}${query}`;
    },
    stop() {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}
