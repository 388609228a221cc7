// The ONE place where the browser tests meet a calltrail server. Everything a
// test needs from the server side goes through the handle startCalltrail()
// returns, so moving from the Node stand-in to the real binary means changing
// this file only.
//
//   CALLTRAIL_BIN unset -> support/stand-in.mjs (a Node fake of the tracking API)
//   CALLTRAIL_BIN=path  -> the real `calltrail` binary (TODO below)
//
// In both modes the browser talks to support/proxy.mjs in front of the server:
// it records every request the script sends (the counts the tests assert) and
// injects faults (slow, dead, 500) into /t/v1/*.
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
 * @property {number} [ping_s]        heartbeat period the server tells the script
 */

/**
 * @returns {Promise<{
 *   baseUrl: string,
 *   mode: 'stand-in' | 'real',
 *   createSite(spec: SiteSpec): Promise<{key: string}>,
 *   visits(key: string): Promise<object[]>,
 *   pings(key: string): Promise<object[]>,
 *   events(key: string): Promise<object[]>,
 *   requests(): object[],
 *   fault(f: {mode?: 'ok'|'dead'|'error', delay_ms?: number, only?: string}): void,
 *   forceNumbers?: (sessionId: string, numbers: object[]) => Promise<void>,
 *   expireSession?: (sessionId: string) => Promise<void>,
 *   stop(): Promise<void>,
 * }>}
 */
export async function startCalltrail() {
  if (process.env.CALLTRAIL_BIN) return startReal(process.env.CALLTRAIL_BIN);
  return startWithStandIn();
}

// Request bodies the script sent to `path` for site `key`, oldest first.
function sent(proxy, path, key) {
  return proxy.log
    .filter((r) => r.method === 'POST' && r.path === path && r.body && r.body.site_key === key)
    .map((r) => ({ ...r.body, _origin: r.origin, _contentType: r.contentType, _cookie: r.cookie, _at: r.at }));
}

async function startWithStandIn() {
  const server = await startStandIn({ snippet: SNIPPET });
  const proxy = await startProxy(server.baseUrl);
  return {
    baseUrl: proxy.baseUrl,
    mode: 'stand-in',
    async createSite(spec) {
      const site = server.createSite(spec);
      return { key: site.public_key };
    },
    // What the script sent, as the proxy recorded it. A real-server variant may
    // read the server's own counts over REST instead; tests only use these three.
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
    // Stand-in only: make the session's next answer carry this mapping.
    async forceNumbers(sessionId, numbers) {
      server.forceNumbers(sessionId, numbers);
    },
    // Stand-in only: end the session now (the real server would after its hold).
    async expireSession(sessionId) {
      server.expireSession(sessionId);
    },
    async stop() {
      await proxy.stop();
      await server.stop();
    },
  };
}

// eslint-disable-next-line no-unused-vars
async function startReal(bin) {
  // TODO(server): start the real binary and set sites up through its REST API.
  //  1. spawn `${bin} demo --listen 127.0.0.1:0` (or `serve` with a temp data dir),
  //     read the bound URL and an admin token from its output
  //     (`calltrail admin create-account NAME --json` -> {account_id, token});
  //  2. const proxy = await startProxy(realBaseUrl)  -- keep the proxy: the tests
  //     use its log for visits/pings/events and its fault injection;
  //  3. createSite(spec): POST /api/v1/sites {name, domains, timezone, default_region,
  //     site_numbers, forward_to}; POST /sites/{id}/pools {name, hold_minutes,
  //     on_exhaustion: "fallback"} (no fallback number: an exhausted pool means no swap);
  //     per spec.pool number POST /sites/{id}/numbers {number, kind: "pool", pool_id};
  //     the server's ping_s must come from spec.ping_s (tests use 1 s) -- a per-site
  //     setting or a server flag; return {key: site.public_key};
  //  4. forceNumbers / expireSession: leave undefined unless the server can do that on
  //     demand (tests that need them skip themselves when they are missing);
  //  5. stop(): proxy.stop(), then kill the child and wait for it.
  throw new Error(`CALLTRAIL_BIN=${bin}: the real-server mode of e2e/support/server.mjs is not written yet`);
}
