// zsxq-cache web page: the entry module. The hash router, which builds one
// view per address (#/camps, #/camps/<id>/refund, #/members, #/cache), and
// the service-wide notices from /readyz shown above every view.
//
// Plain modern JavaScript in ES modules, no framework and no build step;
// served from the binary. Each import names the asset version (filled in by
// the server), so a page never mixes modules of two builds.

import { viewCache } from './cache.js?v=__ASSET_VERSION__';
import { viewCamps } from './camps.js?v=__ASSET_VERSION__';
import { viewMembers } from './members.js?v=__ASSET_VERSION__';
import { viewRefund } from './refund.js?v=__ASSET_VERSION__';
import { h } from './ui.js?v=__ASSET_VERSION__';

const main = document.getElementById('app');
let current = null;

function route() {
  const raw = location.hash.replace(/^#/, '') || '/camps';
  const [path, query] = raw.split('?');
  const params = new URLSearchParams(query || '');
  if (current) current.abort();
  current = new AbortController();
  // Views render into `main` and call `route` to build again; they get both
  // here, so no view imports the router.
  const ctx = { signal: current.signal, params, main, route };
  document.title = '星球退款助手 · zsxq-cache';
  main.replaceChildren();
  let m;
  let section;
  if (path === '/camps' || path === '/') {
    section = 'camps';
    viewCamps(ctx);
  } else if ((m = /^\/camps\/(\d{1,20})\/refund$/.exec(path))) {
    section = 'camps';
    viewRefund(ctx, m[1]);
  } else if (path === '/members') {
    section = 'members';
    viewMembers(ctx);
  } else if (path === '/cache') {
    section = 'cache';
    viewCache(ctx);
  } else {
    main.append(h('div', { class: 'panel empty' }, '页面不存在。', h('a', { href: '#/camps' }, '返回训练营')));
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === section);
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function refreshNotices() {
  const box = document.getElementById('service-notices');
  if (!box) return;
  try {
    const res = await fetch('/readyz', { cache: 'no-store', headers: { Accept: 'application/json' } });
    const envelope = await res.json();
    const list = envelope && envelope.data && Array.isArray(envelope.data.notices) ? envelope.data.notices : [];
    box.replaceChildren(...list.map((n) => h('div', {
      class: `notice ${n.level === 'error' ? 'notice-warn' : 'notice-info'}`, role: 'status', dataset: { notice: n.kind },
    }, n.message)));
    box.hidden = list.length === 0;
  } catch (e) {
    // Readiness unknown: keep what is shown.
  }
}

window.addEventListener('hashchange', route);
route();
refreshNotices();
setInterval(refreshNotices, 30000);
// An upstream failure may mean calls are now held back (1059 cool-down,
// rejected token): the notices say so at once.
window.addEventListener('zsxq-upstream-failed', refreshNotices);
