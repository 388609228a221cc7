// The ONE place where the browser tests meet a calltrail server. Everything a
// test needs from the server side goes through the handle startCalltrail()
// returns.
//
//   CALLTRAIL_BIN=path  -> the real `calltrail` binary (what CI runs: .ci/run)
//   CALLTRAIL_BIN unset -> support/stand-in.mjs, a Node fake of the tracking API,
//                          for quick local runs; a note says the real server was not used
//
// In both modes the browser talks to support/proxy.mjs in front of the server:
// it records every request the script sends and every answer (the counts the
// tests assert) and injects faults (slow, dead, 500, 410) into /t/v1/*.
//
// Real mode: `calltrail admin create-account e2e --json` in a fresh temp data dir,
// then `calltrail serve` (or `demo`) on 127.0.0.1:0 with CALLTRAIL_PING_S=1 (the
// heartbeat period is a server setting: every site of the run pings each second),
// its public URL set to the proxy's, so install snippets and the demo page load
// ct.js through the proxy. Sites, pools and numbers are created over the REST API.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { startStandIn } from './stand-in.mjs';
import { startProxy } from './proxy.mjs';

export const SNIPPET = fileURLToPath(new URL('../../snippet/ct.js', import.meta.url));

/**
 * @typedef {object} SiteSpec
 * @property {string[]} domains       hostnames whose pages may use the site (subdomains included)
 * @property {string[]} site_numbers  E.164 numbers printed on the site's pages
 * @property {string[]} pool          E.164 pool numbers; a session leases one, and it
 *                                    replaces every site number; none free -> no swap
 *                                    (an exhausted pool without a fallback number); [] -> no pool
 */

/**
 * @param {{demo?: boolean}} [opts] demo: run `calltrail demo` (real mode only), for `demoUrl`
 * @returns {Promise<{
 *   baseUrl: string,
 *   mode: 'stand-in' | 'real',
 *   demoUrl?: string,
 *   createSite(spec: SiteSpec): Promise<{key: string}>,
 *   visits(key: string): Promise<object[]>,
 *   pings(key: string): Promise<object[]>,
 *   events(key: string): Promise<object[]>,
 *   requests(): object[],
 *   fault(f: import('./proxy.mjs').Fault | import('./proxy.mjs').Fault[]): void,
 *   renumber(key: string, from: string, to: string): Promise<void>,
 *   setSiteNumbers(key: string, site_numbers: string[]): Promise<void>,
 *   holding<T>(fn: () => Promise<T>): Promise<T>,
 *   stop(): Promise<void>,
 * }>}
 */
export async function startCalltrail(opts = {}) {
  // (resolved here: the binary runs in a temp folder)
  if (process.env.CALLTRAIL_BIN) return startReal(resolve(process.env.CALLTRAIL_BIN), opts);
  noteStandIn();
  return startWithStandIn();
}

let noted = false;
function noteStandIn() {
  if (noted) return;
  noted = true;
  const note =
    'NOTE: CALLTRAIL_BIN is not set: these browser tests ran against the Node stand-in ' +
    '(e2e/support/stand-in.mjs), NOT the real calltrail server. For the real one: ' +
    'cargo build --bin calltrail && CALLTRAIL_BIN=$PWD/target/debug/calltrail npm test';
  process.stderr.write(`${note}\n`);
}

// Request bodies the script sent to `path` for site `key`, oldest first, with what the
// proxy saw around them (_origin, _contentType, _cookie, _userAgent, _at, _status, _answer).
function sent(proxy, path, key) {
  return proxy.log
    .filter((r) => r.method === 'POST' && r.path === path && r.body && r.body.site_key === key)
    .map((r) => ({
      ...r.body,
      _origin: r.origin,
      _contentType: r.contentType,
      _cookie: r.cookie,
      _userAgent: r.userAgent,
      _at: r.at,
      _status: r.status,
      _answer: r.answer,
    }));
}

function proxyHandle(proxy) {
  return {
    async visits(key) {
      return sent(proxy, '/t/v1/visit', key);
    },
    async pings(key) {
      return sent(proxy, '/t/v1/ping', key);
    },
    async events(key) {
      return sent(proxy, '/t/v1/event', key);
    },
    requests: () => proxy.log.slice(),
    fault: (f) => proxy.setFault(f),
    holding: (fn) => proxy.holding(fn),
  };
}

async function startWithStandIn() {
  const server = await startStandIn({ snippet: SNIPPET });
  const proxy = await startProxy(server.baseUrl);
  return {
    baseUrl: proxy.baseUrl,
    mode: 'stand-in',
    ...proxyHandle(proxy),
    async createSite(spec) {
      const site = server.createSite(spec);
      return { key: site.public_key };
    },
    async renumber(key, from, to) {
      server.renumber(key, from, to);
    },
    async setSiteNumbers(key, list) {
      server.setSiteNumbers(key, list);
    },
    async stop() {
      await proxy.stop();
      await server.stop();
    },
  };
}

// The environment of the binary: none of the caller's CALLTRAIL_* settings (a database
// URL, a config file) may leak into the test server.
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CALLTRAIL_')) env[k] = v;
  return { ...env, RUST_LOG: 'warn', ...extra };
}

function run(bin, args, opts) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, opts, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

async function startReal(bin, { demo = false } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'calltrail-e2e-'));
  const dataDir = join(dir, 'data');
  const env = childEnv({ CALLTRAIL_PING_S: '1' });
  // cwd: a folder without a calltrail.toml
  const common = { cwd: dir, env };

  // 1. the account and its API token, before the server runs
  const { token } = JSON.parse(await run(bin, ['admin', 'create-account', 'e2e', '--json', '--data-dir', dataDir], common));

  // 2. the proxy first: the server is told its URL as public_url
  const proxy = await startProxy();
  const child = spawn(
    bin,
    [demo ? 'demo' : 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--public-url', proxy.baseUrl],
    { ...common, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  let stderr = '';
  child.stderr.on('data', (c) => {
    stderr += c;
    if (process.env.CALLTRAIL_E2E_LOG) process.stderr.write(c);
  });
  const exited = new Promise((r) => child.once('exit', (code, sig) => r(sig ?? code)));

  const lines = createInterface({ input: child.stdout });
  const upstream = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${bin} did not say where it listens within 60 s\n${stderr}`)), 60_000);
    lines.once('line', (l) => {
      clearTimeout(t);
      const m = /calltrail listening on (http:\/\/\S+)/.exec(l);
      if (m) resolve(m[1]);
      else reject(new Error(`${bin}: unexpected first line ${JSON.stringify(l)}\n${stderr}`));
    });
    exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`${bin} exited (${code}) before listening\n${stderr}`));
    });
  });
  lines.on('line', () => {}); // drain the rest (demo prints more)
  proxy.setUpstream(upstream);

  async function stop() {
    await proxy.stop();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    process.off('exit', killOnExit);
    rmSync(dir, { recursive: true, force: true });
  }

  // The binary embeds snippet/ct.js at build time: refuse to test a stale one.
  try {
    const served = await (await fetch(`${upstream}/t/ct.js`)).text();
    if (served !== readFileSync(SNIPPET, 'utf8')) {
      throw new Error(
        `${bin} serves another ct.js than snippet/ct.js (the binary embeds it when built): ` +
          'run `cargo build --bin calltrail` after `npm run build`',
      );
    }
  } catch (e) {
    await stop();
    throw e;
  }

  async function api(method, path, body) {
    const res = await fetch(`${upstream}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body && { 'Content-Type': 'application/json' }) },
      body: body && JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} /api/v1${path} ${JSON.stringify(body ?? null)} -> ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  // Tracking numbers are unique server-wide and tests of one file reuse theirs (one
  // Moscow pool number for most sites): a site whose number a newer site needs is
  // deleted first. Tests of a file run one after another, each done with its pages.
  const sites = new Map(); // key -> {id, numbers: Map(number -> number id)}
  const owner = (number) => [...sites.entries()].find(([, s]) => s.numbers.has(number));
  async function free(number) {
    const o = owner(number);
    if (!o) return;
    await api('DELETE', `/sites/${o[1].id}`);
    sites.delete(o[0]);
  }
  const site = (key) => {
    const s = sites.get(key);
    if (!s) throw new Error(`no site ${key} on this server (deleted to free a number for a newer site?)`);
    return s;
  };

  return {
    baseUrl: proxy.baseUrl,
    mode: 'real',
    demoUrl: demo ? `${proxy.baseUrl}/demo/` : undefined,
    ...proxyHandle(proxy),
    async createSite(spec) {
      const pool = spec.pool ?? [];
      for (const n of pool) await free(n);
      const s = await api('POST', '/sites', {
        name: `e2e ${sites.size + 1}`,
        domains: spec.domains,
        timezone: 'Europe/Moscow',
        default_region: 'RU',
        site_numbers: spec.site_numbers,
        forward_to: '+79160000000',
      });
      const numbers = new Map();
      sites.set(s.public_key, { id: s.id, numbers });
      if (pool.length) {
        // on_exhaustion "fallback" without a fallback number: an exhausted pool shows none
        const p = await api('POST', `/sites/${s.id}/pools`, { name: 'visitors', hold_minutes: 15, on_exhaustion: 'fallback' });
        for (const number of pool) {
          const n = await api('POST', `/sites/${s.id}/numbers`, { number, kind: 'pool', pool_id: p.id });
          numbers.set(number, n.id);
        }
      }
      return { key: s.public_key };
    },
    // PATCH the pool number: a session holding it sees the new one on its next ping.
    async renumber(key, from, to) {
      const s = site(key);
      await free(to);
      await api('PATCH', `/sites/${s.id}/numbers/${s.numbers.get(from)}`, { number: to });
      s.numbers.set(to, s.numbers.get(from));
      s.numbers.delete(from);
    },
    async setSiteNumbers(key, list) {
      await api('PATCH', `/sites/${site(key).id}`, { site_numbers: list });
    },
    stop,
  };
}
