/*! calltrail ct.js: call-tracking number swap (source: snippet/ct.src.js, docs: docs/snippet.md) */
// Source of the number-swap script. snippet/ct.js (the file the server embeds and
// serves at /t/ct.js) is this file with comments and indentation stripped:
// edit here, then run `npm run build` in e2e/. Rules for this file, so that the
// tiny stripper stays safe: comments only on their own lines, no template
// literals, no string or regex that starts a line with "//" or "/*".
// Language level: ES2017 (no ?. ?? finally, lookbehind, catch without binding).
(function () {
  try {
    const W = window, D = document, L = location, now = Date.now;
    // installed twice (an element with id="calltrail" also shows up as window.calltrail)
    if (W.calltrail && W.calltrail.swap) return;
    // Wraps a callback so nothing we do can ever throw into the page.
    const g = f => function () {
      try {
        return f.apply(this, arguments);
      } catch (e) {}
    };
    const S = D.currentScript || D.querySelector('script[src*="/t/ct.js"]');
    const base = S.src.replace(/\/t\/ct\.js.*$/, '');
    const key = S.getAttribute('data-site') || new URL(S.src).searchParams.get('k');
    if (!key) return;
    const ATTRS = (S.getAttribute('data-calltrail-attrs') || '').split(',').map(x => x.trim()).filter(x => x);
    const SKIP = 'script,style,noscript,template,textarea,input,select,[contenteditable],[data-calltrail-noswap]';
    // Inline elements: text split across them still reads as one number.
    const INL = /^(A|ABBR|B|BDI|BDO|BIG|CITE|CODE|DATA|DEL|DFN|EM|FONT|I|INS|KBD|LABEL|MARK|NOBR|Q|S|SAMP|SMALL|SPAN|STRONG|SUB|SUP|TIME|TT|U|VAR)$/;
    // What may stand between two digits of one number.
    const SEP = '[\\s\\u00ad\\u2010-\\u2015().-]*';
    // Country calling code length of an E.164 digit string: 1, 2 or 3 digits.
    const ccl = d => {
      const m = /^([17]|2[07]|3[0-469]|4[013-9]|5[1-8]|6[0-6]|8[1246]|9[0-58])/.exec(d);
      return m ? m[1].length : 3;
    };
    const digits = x => String(x || '').replace(/\D/g, '');
    // node -> [original value, value we wrote]
    const orig = new WeakMap();
    const subs = [];
    let nums = [], conf = [], re = null, code = null, vid, sid, ps = 30, last = 0, url = L.href, timer, mo;

    // ---- first-party ids: a cookie on the site's widest domain, plus localStorage
    const getC = n => {
      const m = D.cookie.match('(?:^|; )' + n + '=([^;]*)');
      return m ? decodeURIComponent(m[1]) : null;
    };
    const setC = (n, v, age) => {
      D.cookie = n + '=' + encodeURIComponent(v) + ';path=/;max-age=' + age + ';samesite=lax' + (dom ? ';domain=' + dom : '');
    };
    // The widest domain that takes a cookie: try the shortest suffix with a dot
    // first ("shop.example.com" on www.shop.example.com ... public suffixes are
    // refused by the browser), up to the full host name; host-only on IPs.
    const h = L.hostname, hp = h.split('.'), t = '' + Math.random();
    let dom, i = /^[\d.]+$|:/.test(h) ? 0 : hp.length - 1;
    while (i-- > 0) {
      dom = hp.slice(i).join('.');
      setC('_ct_t', t, 9);
      if (getC('_ct_t') == t) {
        setC('_ct_t', '', 0);
        break;
      }
      dom = 0;
    }
    const store = (n, v, age) => {
      setC(n, v, age);
      try {
        localStorage.setItem(n, JSON.stringify([v, now() + age * 1e3]));
      } catch (e) {}
    };
    const load = n => {
      let v = getC(n);
      if (!v) try {
        const a = JSON.parse(localStorage.getItem(n));
        if (a[1] > now()) v = a[0];
      } catch (e) {}
      return v || undefined;
    };

    // ---- network: CORS-simple POSTs, abandoned after ms milliseconds
    const post = (path, body, ms) => new Promise((ok, no) => {
      const ac = new AbortController();
      setTimeout(() => {
        no();
        ac.abort();
      }, ms);
      fetch(base + '/t/v1/' + path, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: {'Content-Type': 'text/plain;charset=UTF-8'},
        keepalive: true,
        credentials: 'omit',
        signal: ac.signal
      }).then(r => {
        if (!r.ok) throw r.status;
        return r.text();
      }).then(t => ok(t ? JSON.parse(t) : {})).catch(no);
    });
    const ids = () => ({site_key: key, visitor_id: vid, session_id: sid});
    const call = (path, body) => post(path, Object.assign(ids(), body), 1e4).then(j => {
      if (j.ping_s >= 1) ps = j.ping_s;
      if (j.numbers) apply(j.numbers);
      store('_ct_sid', sid, 1800);
    }).catch(e => {
      // 410: the session ran out on the server; start a new one
      if (e == 410) {
        sid = void 0;
        visit();
      }
    });

    // ---- swapping
    const cur = (n, k) => {
      const r = orig.get(n), v = n[k];
      return r && r[1] === v ? r[0] : v;
    };
    const put = (n, k, v) => {
      const o = cur(n, k);
      if (v === o) orig.delete(n);
      else orig.set(n, [o, v]);
      if (n[k] !== v) n[k] = v;
    };
    // Writes [position, text] that turn one regex match into the new number.
    const edits = (m, s, tel) => {
      let i = 1, p, r;
      while (m[++i] === undefined);
      const c = conf[i - 2], st = m.index + m[1].length, en = m.index + m[0].length, dp = [], w = [];
      for (p = st; p < en; p++) if (/\d/.test(s[p])) dp.push(p);
      // digits printed before the national number: country code or trunk prefix
      const k = dp.length - c.n.length;
      if (c.x) {
        // a number of another country: written whole, as `display`
        r = m[1] == '+' ? st - 1 : st;
        w.push([r, tel ? '+' + c.nd : c.disp]);
      } else if (c.nn.length == c.n.length) {
        for (p = 0; p < c.nn.length; p++) w.push([dp[k + p], c.nn[p]]);
        return w;
      } else {
        // other length: the printed prefix stays, the national part is written like `display`
        r = dp[k];
        while (s[r - 1] == '(') r--;
        w.push([r, tel ? c.nn : c.np]);
      }
      for (p = r + 1; p < en; p++) w.push([p, '']);
      return w;
    };
    // s: text to search; parts: [node, property, offset in s, original value]
    const text = (s, parts, tel) => {
      const out = parts.map(p => p[3].split(''));
      let pi = 0, m;
      if (re) {
        re.lastIndex = 0;
        while ((m = re.exec(s))) edits(m, s, tel).forEach(e => {
          while (parts[pi + 1] && parts[pi + 1][2] <= e[0]) pi++;
          out[pi][e[0] - parts[pi][2]] = e[1];
        });
      }
      parts.forEach((p, i) => put(p[0], p[1], out[i].join('')));
    };
    const one = (a, tel) => {
      const v = a && cur(a, 'value');
      if (a) text(v, [[a, 'value', 0, v]], tel);
    };
    const scan = root => {
      let s = '';
      const parts = [];
      const walk = e => {
        if (e.nodeType == 3) {
          const v = cur(e, 'nodeValue');
          parts.push([e, 'nodeValue', s.length, v]);
          s += v;
        } else if (e.nodeType == 1) {
          if (e.matches(SKIP)) return s += '|';
          if (e.tagName == 'A' && /^\s*tel:/i.test(e.getAttribute('href'))) one(e.getAttributeNode('href'), 1);
          ATTRS.forEach(a => one(e.getAttributeNode(a)));
          if (e.hasAttribute('data-calltrail-code')) {
            if (code) put(e, 'textContent', code);
            return s += '|';
          }
          if (e.hasAttribute('data-calltrail-number')) {
            const v = e.getAttribute('data-calltrail-number'), x = nums.filter(y => y.replaces == v)[0] || nums[0];
            put(e, 'textContent', x ? x.display || x.number : cur(e, 'textContent'));
            return s += '|';
          }
          const b = INL.test(e.tagName) ? '' : '|';
          s += b;
          for (let c = e.firstChild; c; c = c.nextSibling) walk(c);
          s += b;
        }
      };
      if (!root.closest(SKIP)) walk(root);
      text(s, parts);
    };
    // Swaps inside the block containers of the given nodes, then forgets the
    // mutation records our own writes produced.
    const run = g(list => {
      const b = D.body, rs = new Set();
      if (mo) list = list.concat(mo.takeRecords().map(r => r.target));
      if (!b) return;
      list.forEach(n => {
        while (n && (n.nodeType != 1 || INL.test(n.tagName))) n = n.parentNode;
        if (n && n.contains(b)) n = b;
        if (n && b.contains(n)) rs.add(n);
      });
      // scan each root once, and not again inside another root
      rs.forEach(r => {
        let p = r;
        while ((p = p.parentNode) && !rs.has(p));
        if (!p) scan(r);
      });
      if (mo) mo.takeRecords();
    });
    // New mapping from the server: build the matcher, re-swap from the originals.
    const apply = (list, force) => {
      list = list.filter(x => x && digits(x.replaces).length > 6 && digits(x.number).length > 6);
      if (!force && JSON.stringify(list) == JSON.stringify(nums)) return;
      nums = list;
      conf = list.map(x => {
        const d = digits(x.replaces), nd = digits(x.number), disp = String(x.display || x.number), l = ccl(d);
        const n = d.slice(l), nn = nd.slice(ccl(nd));
        let i = disp.length, c = 0;
        while (i && c < nn.length) if (/\d/.test(disp[--i])) c++;
        while (i && disp[i - 1] == '(') i--;
        return {n, nn, np: disp.slice(i), d, nd, disp, x: d.slice(0, l) != nd.slice(0, l)};
      });
      re = list.length ? new RegExp('(^|\\D)(?:' + conf.map(c => '(' + [c.d, (c.d[0] == '7' ? 8 : 0) + c.n, c.n].map(v => v.split('').join(SEP)).join('|') + ')').join('|') + ')(?!\\d)', 'g') : null;
      run([D.documentElement]);
      if (nums.length) {
        subs.forEach(tell);
        D.dispatchEvent(new CustomEvent('calltrail:number', {detail: {number: api.number(), numbers: api.numbers(), track_code: code}}));
      }
    };

    const tell = f => {
      try {
        f(api.number(), api.numbers());
      } catch (e) {}
    };
    const api = W.calltrail = {
      number: () => nums.length ? nums[0].number : null,
      numbers: () => nums.map(x => Object.assign({}, x)),
      onNumber: f => {
        subs.push(f);
        if (nums.length) tell(f);
      },
      swap: r => run([r || D.body]),
      trackCode: () => code
    };

    // ---- heartbeat, only while the tab is visible
    const beat = g(() => {
      clearTimeout(timer);
      if (!sid || D.visibilityState != 'visible') return;
      let w = last + ps * 1e3 - now();
      if (w <= 0) {
        last = now();
        call('ping', {});
        w = ps * 1e3;
      }
      timer = setTimeout(beat, w);
    });

    // ---- single-page apps: every URL change is a page view
    const nav = g(() => {
      if (!sid || L.href == url) return;
      const u = url = L.href;
      setTimeout(() => call('event', {type: 'pageview', url: u, title: D.title}), 50);
    });
    const H = history;
    ['pushState', 'replaceState'].forEach(k => {
      const o = H[k];
      H[k] = function () {
        const r = o.apply(this, arguments);
        nav();
        return r;
      };
    });
    W.addEventListener('popstate', nav);
    W.addEventListener('hashchange', nav);

    // ---- hide-until-swapped, for marked elements only, ~1 s at most
    const hs = D.createElement('style');
    hs.textContent = '[data-calltrail-hide]{visibility:hidden!important}';
    (D.head || D.documentElement).appendChild(hs);
    const show = () => hs.remove();
    setTimeout(show, 1100);

    mo = new MutationObserver(g(rs => (re || code) && run(rs.map(r => r.target))));
    mo.observe(D.documentElement, {childList: true, subtree: true, characterData: true, attributeFilter: ['href'].concat(ATTRS)});

    // ---- the visit: one try, 1 s, otherwise the page stays as it is
    const ga = getC('_ga');
    vid = load('_ct_vid');
    sid = load('_ct_sid');
    const visit = () => post('visit', Object.assign(ids(), {
      url: url = L.href,
      referrer: D.referrer,
      title: D.title,
      ga_client_id: ga ? ga.split('.').slice(-2).join('.') : undefined,
      ym_client_id: getC('_ym_uid') || undefined,
      screen: screen.width + 'x' + screen.height,
      lang: navigator.language
    }), 1e3).then(j => {
      if (!j.visitor_id || !j.session_id) throw 0;
      store('_ct_vid', vid = j.visitor_id, 31536e3);
      store('_ct_sid', sid = j.session_id, 1800);
      if (j.track_code != null) code = String(j.track_code);
      if (j.ping_s >= 1) ps = j.ping_s;
      last = now();
      apply(j.numbers || [], 1);
      D.addEventListener('visibilitychange', beat);
      beat();
      nav();
    }).catch(g(() => {
      vid = sid = null;
      mo.disconnect();
      apply([]);
    })).then(show);
    visit();
  } catch (e) {}
})();
