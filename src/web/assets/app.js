// zsxq-cache web page: camps, refund lists, members, cache.
//
// Plain modern JavaScript, no framework and no build step; served from the
// binary. Member data (names with emoji or markup) is always put into the
// page as text (textContent / text nodes), never parsed as HTML.
'use strict';

(() => {
  // ------------------------------------------------------------------
  // DOM helpers
  // ------------------------------------------------------------------

  /**
   * Creates an element. `props` keys: `class`, `text`, `on<Event>` handlers,
   * `dataset` (object), anything else becomes an attribute. Children may be
   * nodes, strings (added as text) or null.
   */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        node.addEventListener(key.slice(2).toLowerCase(), value);
      } else if (value === true) node.setAttribute(key, '');
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmtInt = (n) => (Number.isFinite(Number(n)) ? Number(n).toLocaleString('zh-CN') : '—');

  /** `2024-09-04T22:39:05.287+0800` → `2024-09-04 22:39` (as the upstream wrote it). */
  function fmtZsxqTime(raw, withTime = true) {
    const m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})/.exec(String(raw || ''));
    if (!m) return raw ? String(raw) : '—';
    return withTime ? `${m[1]} ${m[2]}` : m[1];
  }

  /** An ISO instant (`2025-10-28T02:00:00.000Z`) in the browser's time zone. */
  function fmtInstant(raw) {
    if (!raw) return '从未同步';
    const d = new Date(raw);
    if (Number.isNaN(d.getTime())) return String(raw);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (Number(ms) < 1000) return `${Math.max(0, Math.round(Number(ms) || 0))} 毫秒`;
    const s = Math.round(Number(ms) / 1000);
    if (s < 60) return `${s} 秒`;
    return `${Math.floor(s / 60)} 分 ${s % 60} 秒`;
  }

  let toastTimer = 0;
  function toast(message, kind = 'info') {
    const node = document.getElementById('toast');
    node.textContent = message;
    node.classList.toggle('error', kind === 'error');
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, kind === 'error' ? 6000 : 2600);
  }

  /** A progress bar: `set(done, total)`; `indeterminate()` when the total is unknown. */
  function progressBar(label) {
    const fill = h('div', { class: 'bar-fill' });
    const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0 }, fill);
    const text = h('span', { class: 'progress-text' });
    const right = h('span', { class: 'progress-right' });
    const node = h('div', { class: 'progress', hidden: true },
      h('div', { class: 'progress-label' }, text, right), bar);
    if (label) bar.setAttribute('aria-label', label);
    return {
      node,
      show() { node.hidden = false; },
      hide() { node.hidden = true; },
      text(message, extra = '') { text.textContent = message; right.textContent = extra; },
      set(done, total) {
        bar.classList.remove('indeterminate');
        const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
        fill.style.width = `${pct}%`;
        bar.setAttribute('aria-valuenow', String(done));
        bar.setAttribute('aria-valuemax', String(total));
      },
      indeterminate() {
        bar.classList.add('indeterminate');
        fill.style.width = '';
        bar.removeAttribute('aria-valuenow');
      },
    };
  }

  // ------------------------------------------------------------------
  // API
  // ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const TOKEN_KEY = 'zsxq-cache.admin-token';
  // The read token (READ_TOKEN), when the service asks for one; the admin
  // token opens reads too, so admin calls send only that.
  const READ_KEY = 'zsxq-cache.read-token';

  /** The token a call sends: the admin token for admin calls, else the read token. */
  function bearerFor(admin) {
    return sessionStorage.getItem(admin ? TOKEN_KEY : READ_KEY);
  }

  /**
   * Calls the JSON API; resolves to `{status, data, message}` or throws ApiError.
   * A read refused with 401 asks for the read token (once for all calls
   * waiting on it) and is sent again.
   */
  async function api(path, options = {}) {
    for (let attempt = 0; ; attempt++) {
      const sent = bearerFor(options.admin);
      try {
        return await request(path, options);
      } catch (e) {
        if (options.admin || !(e instanceof ApiError) || e.status !== 401 || attempt >= 2) throw e;
        // Another call may have stored a new token meanwhile: only a token
        // that was refused is forgotten.
        if (sessionStorage.getItem(READ_KEY) === sent) {
          sessionStorage.removeItem(READ_KEY);
          if (!(await readToken(attempt || sent ? '令牌无效，请重新输入' : ''))) throw e;
        }
      }
    }
  }

  async function request(path, { method = 'GET', body, admin = false, signal } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const token = bearerFor(admin);
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, '无法连接服务，请检查服务是否在运行');
    }
    let envelope = null;
    try {
      envelope = await res.json();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
    }
    if (!res.ok) {
      if (res.status === 502 || res.status === 503) window.dispatchEvent(new Event('zsxq-upstream-failed'));
      const message = envelope && envelope.message ? envelope.message : `请求失败（HTTP ${res.status}）`;
      throw new ApiError(res.status, message);
    }
    return { status: res.status, data: envelope ? envelope.data : null, message: envelope ? envelope.message : '' };
  }

  const isAbort = (e) => e && e.name === 'AbortError';

  // ------------------------------------------------------------------
  // Dialogs: admin token (kept in sessionStorage only) and confirmation
  // ------------------------------------------------------------------

  function openDialog(dialog) {
    return new Promise((resolve) => {
      dialog.returnValue = '';
      dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
      dialog.showModal();
    });
  }

  /** What the token dialog says for each token. */
  const TOKEN_PROMPTS = {
    [TOKEN_KEY]: {
      title: '管理员令牌',
      hint: ['同步和清空缓存需要管理员令牌（服务的 ', h('code', {}, 'ADMIN_TOKEN'), '）。令牌只保存在本次浏览器会话中，关闭标签页即失效。'],
    },
    [READ_KEY]: {
      title: '访问令牌',
      hint: ['查看成员和退款名单需要访问令牌（服务的 ', h('code', {}, 'READ_TOKEN'), '，管理员令牌也可以）。令牌只保存在本次浏览器会话中，关闭标签页即失效。'],
    },
  };

  /** The token kept under `key`, asking for it once per browser session. */
  async function askToken(key, reason) {
    const stored = sessionStorage.getItem(key);
    if (stored) return stored;
    const dialog = document.getElementById('token-dialog');
    const input = document.getElementById('token-input');
    const error = document.getElementById('token-error');
    document.getElementById('token-title').textContent = TOKEN_PROMPTS[key].title;
    document.getElementById('token-hint').replaceChildren(...TOKEN_PROMPTS[key].hint.map((n) => (n instanceof Node ? n.cloneNode(true) : n)));
    input.value = '';
    error.textContent = reason || '';
    error.hidden = !reason;
    const answer = await openDialog(dialog);
    const token = input.value.trim();
    input.value = '';
    if (answer !== 'ok' || !token) return null;
    sessionStorage.setItem(key, token);
    return token;
  }

  /** The admin token, asking for it once per browser session. */
  const adminToken = (reason) => askToken(TOKEN_KEY, reason);

  // Reads refused at once share one dialog.
  let readPrompt = null;

  /** The read token, asking for it once for every read waiting on it. */
  function readToken(reason) {
    if (!readPrompt) readPrompt = askToken(READ_KEY, reason).finally(() => { readPrompt = null; });
    return readPrompt;
  }

  /**
   * A download link that works behind the read token too: with a token
   * kept, the file is fetched with it and saved from memory, since a plain
   * link cannot send an Authorization header.
   */
  function downloadLink(props, label) {
    const link = h('a', props, label);
    link.addEventListener('click', async (ev) => {
      const token = bearerFor(false);
      if (!token) return;
      ev.preventDefault();
      try {
        const res = await fetch(props.href, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
        if (!res.ok) throw new ApiError(res.status, `下载失败（HTTP ${res.status}）`);
        const url = URL.createObjectURL(await res.blob());
        const save = h('a', { href: url, download: props.download, hidden: true });
        document.body.append(save);
        save.click();
        save.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (e) {
        toast(e.message || '下载失败');
      }
    });
    return link;
  }

  /** Runs an admin call; a 401 forgets the token and asks again (once). */
  async function adminCall(path, options) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const reason = attempt ? '令牌无效，请重新输入' : '';
      if (!(await adminToken(reason))) return null;
      try {
        return await api(path, { ...options, admin: true });
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          continue;
        }
        throw e;
      }
    }
    return null;
  }

  async function confirmAction(title, message, okLabel) {
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-message').textContent = message;
    document.getElementById('confirm-ok').textContent = okLabel;
    return (await openDialog(document.getElementById('confirm-dialog'))) === 'ok';
  }

  // ------------------------------------------------------------------
  // Router
  // ------------------------------------------------------------------

  const main = document.getElementById('app');
  let current = null;

  function route() {
    const raw = location.hash.replace(/^#/, '') || '/camps';
    const [path, query] = raw.split('?');
    const params = new URLSearchParams(query || '');
    if (current) current.abort();
    current = new AbortController();
    const ctx = { signal: current.signal, params };
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

  function errorPanel(e, retry) {
    return h('div', { class: 'notice notice-error', role: 'alert' },
      h('span', { class: 'error-text' }, e instanceof Error ? e.message : String(e)),
      retry ? h('button', { class: 'btn btn-sm', type: 'button', onClick: retry }, '重试') : null);
  }

  // ------------------------------------------------------------------
  // Camps
  // ------------------------------------------------------------------

  const SCOPES = [
    ['ongoing', '进行中'],
    ['over', '已结束'],
    ['closed', '已关闭'],
  ];
  const scopeName = (s) => (SCOPES.find(([k]) => k === s) || [s, s])[1];

  /** Camps seen in this session, by id: the refund page needs no second lookup. */
  const knownCamps = new Map();

  const DEFAULT_REQUIRED_DAYS = 7;
  const defaultDays = (camp) => Math.max(1, Math.min(DEFAULT_REQUIRED_DAYS, Number(camp.checkin_days) || DEFAULT_REQUIRED_DAYS));

  async function fetchCamps(scope, signal) {
    // 20 is the upstream's own default page of camps: the newest ones.
    const { data } = await api(`/api/camps?scope=${encodeURIComponent(scope)}&count=20`, { signal });
    const camps = (data && Array.isArray(data.camps)) ? data.camps : [];
    for (const c of camps) knownCamps.set(String(c.checkin_id), c);
    return camps;
  }

  async function viewCamps(ctx) {
    const scope = SCOPES.some(([k]) => k === ctx.params.get('scope')) ? ctx.params.get('scope') : 'over';
    const seg = h('nav', { class: 'seg', 'aria-label': '训练营状态' },
      SCOPES.map(([key, label]) => h('a', {
        href: `#/camps?scope=${key}`,
        class: key === scope ? 'on' : '',
        'aria-current': key === scope ? 'true' : null,
        dataset: { scope: key },
      }, label)));
    const list = h('div', { class: 'camp-list' }, h('p', { class: 'loading' }, '正在加载训练营…'));
    main.append(
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, '训练营'), h('p', { class: 'sub' }, '选择一个训练营，按打卡天数生成押金退款名单。')),
        seg),
      list);

    const load = async () => {
      list.replaceChildren(h('p', { class: 'loading' }, '正在加载训练营…'));
      try {
        const camps = await fetchCamps(scope, ctx.signal);
        if (!camps.length) {
          list.replaceChildren(h('div', { class: 'panel empty' }, `没有${scopeName(scope)}的训练营。`));
          return;
        }
        list.replaceChildren(h('div', { class: 'camp-grid' }, camps.map(campCard)));
      } catch (e) {
        if (!isAbort(e)) list.replaceChildren(errorPanel(e, load));
      }
    };
    load();
  }

  function campCard(camp) {
    const id = String(camp.checkin_id);
    return h('a', {
      class: 'camp-card',
      href: `#/camps/${id}/refund?required_days=${defaultDays(camp)}`,
      dataset: { checkinId: id },
    },
    h('div', { class: 'camp-title' },
      h('h3', {}, camp.title || '（无标题）'),
      h('span', { class: `badge badge-${camp.status}` }, scopeName(camp.status))),
    h('dl', { class: 'camp-facts' },
      h('div', {}, h('dt', {}, '打卡天数'), h('dd', {}, `${fmtInt(camp.checkin_days)} 天`)),
      h('div', {}, h('dt', {}, '参与人数'), h('dd', {}, `${fmtInt(camp.joined_count)} 人`)),
      h('div', {}, h('dt', {}, '结束日期'), h('dd', {}, fmtZsxqTime(camp.expiration_time, false)))),
    h('span', { class: 'camp-go' }, '生成退款名单 →'));
  }

  // ------------------------------------------------------------------
  // Refund list
  // ------------------------------------------------------------------

  const REFUND_PAGE_SIZE = 20;

  async function findCamp(id, signal) {
    if (knownCamps.has(id)) return knownCamps.get(id);
    for (const scope of ['over', 'ongoing', 'closed']) {
      try {
        await fetchCamps(scope, signal);
      } catch (e) {
        if (isAbort(e)) throw e;
      }
      if (knownCamps.has(id)) return knownCamps.get(id);
    }
    return null;
  }

  function refundBase(id) {
    return `/api/camps/${encodeURIComponent(id)}/refund-list`;
  }

  function viewRefund(ctx, id) {
    const rawDays = ctx.params.get('required_days');
    const requested = rawDays === null ? DEFAULT_REQUIRED_DAYS : Number(rawDays);

    const title = h('h1', {}, '退款名单');
    const meta = h('div', { class: 'meta' }, h('span', {}, '训练营 ', h('code', {}, id)));
    const daysInput = h('input', {
      type: 'number', id: 'required-days', name: 'required_days', min: 1, step: 1, required: true,
      inputmode: 'numeric', value: Number.isInteger(requested) ? requested : DEFAULT_REQUIRED_DAYS,
    });
    const daysHint = h('p', { class: 'hint' });
    const formError = h('p', { class: 'field-error', hidden: true });
    const form = h('form', { class: 'gen-form', id: 'refund-form', novalidate: true },
      h('label', { class: 'field' }, h('span', {}, '合格所需打卡天数'), daysInput),
      h('button', { class: 'btn btn-primary', type: 'submit', id: 'generate' }, '生成名单'),
      daysHint);
    const progress = progressBar('名单生成进度');
    progress.node.id = 'refund-progress';
    const notices = h('div', { class: 'notices' });
    const result = h('div', { class: 'refund-result', id: 'refund-result' });

    main.append(
      h('div', { class: 'crumbs' }, h('a', { href: '#/camps' }, '训练营'), ' / 退款名单'),
      h('div', { class: 'page-head' }, h('div', {}, title, meta)),
      h('section', { class: 'panel' }, form, formError, progress.node),
      notices,
      result);

    let camp = null;
    const maxDays = () => (camp && Number(camp.checkin_days) > 0 ? Number(camp.checkin_days) : 365);

    const validDays = (n) => Number.isInteger(n) && n >= 1 && n <= maxDays();

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const n = Number(daysInput.value);
      if (!validDays(n)) {
        formError.textContent = `打卡天数需为 1 到 ${maxDays()} 之间的整数`;
        formError.hidden = false;
        return;
      }
      const target = `#/camps/${id}/refund?required_days=${n}`;
      // Same address: the hash does not change, so build again directly.
      if (location.hash === target) route();
      else location.hash = target;
    });

    (async () => {
      try {
        camp = await findCamp(id, ctx.signal);
      } catch (e) {
        if (isAbort(e)) return;
      }
      if (camp) {
        title.textContent = camp.title || '（无标题）';
        document.title = `${camp.title} · 退款名单`;
        meta.replaceChildren(
          h('span', { class: `badge badge-${camp.status}` }, scopeName(camp.status)),
          h('span', {}, '打卡 ', h('b', {}, fmtInt(camp.checkin_days)), ' 天'),
          h('span', {}, '参与 ', h('b', {}, fmtInt(camp.joined_count)), ' 人'),
          h('span', {}, '结束于 ', h('b', {}, fmtZsxqTime(camp.expiration_time, false))),
          h('span', { class: 'muted' }, 'ID ', h('code', {}, id)));
      }
      daysInput.max = String(maxDays());
      daysHint.textContent = camp ? `可选 1–${maxDays()} 天（训练营共 ${camp.checkin_days} 天）` : '';
      if (!validDays(requested)) {
        formError.textContent = `打卡天数需为 1 到 ${maxDays()} 之间的整数，请修改后点击“生成名单”`;
        formError.hidden = false;
        return;
      }
      build(requested);
    })();

    async function build(days) {
      const button = document.getElementById('generate');
      button.disabled = true;
      notices.replaceChildren();
      result.replaceChildren();
      const expected = camp ? Number(camp.joined_count) : 0;
      progress.show();
      // Until the first page arrives the server is reading the ranking.
      progress.text('正在生成名单…', expected ? `已加载 0 / ${expected}` : '正在读取打卡排行');
      progress.indeterminate();

      const rows = [];
      let complete = true;
      try {
        // Page after page, so a cold list shows how far it is.
        let index = 0;
        for (let guard = 0; guard < 10000; guard++) {
          const q = new URLSearchParams({
            required_days: String(days), page_size: String(REFUND_PAGE_SIZE), index: String(index),
          });
          const { data } = await api(`${refundBase(id)}?${q}`, { signal: ctx.signal });
          const page = (data && Array.isArray(data.refund_list)) ? data.refund_list : [];
          rows.push(...page);
          if (data && data.complete === false) complete = false;
          const total = Math.max(expected, rows.length);
          progress.text('正在生成名单…', expected ? `已加载 ${rows.length} / ${total}` : `已加载 ${rows.length} 人`);
          if (expected) progress.set(rows.length, total);
          if (!data || !data.has_more) break;
          if (data.next_index === null || data.next_index === undefined || data.next_index === index) {
            throw new ApiError(0, '服务返回的分页信息有误（next_index），请重试');
          }
          index = data.next_index;
        }
        // The whole list with its statistics; served from the cache by now.
        let final = null;
        try {
          const answer = await api(refundBase(id), { method: 'POST', body: { required_days: days }, signal: ctx.signal });
          final = answer.data;
        } catch (e) {
          if (isAbort(e)) throw e;
        }
        const list = final && Array.isArray(final.refund_list) ? final.refund_list : rows;
        const stats = final && final.statistics ? final.statistics : computeStats(list);
        if (final && final.complete === false) complete = false;
        if (final && final.title && !camp) title.textContent = final.title;
        progress.set(list.length, list.length || 1);
        progress.text('名单已生成', `已加载 ${list.length} / ${list.length}`);
        renderRefund(id, days, list, stats, complete, final ? final.incomplete_reasons : null);
      } catch (e) {
        if (isAbort(e)) return;
        progress.hide();
        notices.replaceChildren(errorPanel(e, () => build(days)));
      } finally {
        button.disabled = false;
      }
    }

    function renderRefund(campId, days, list, stats, complete, reasons) {
      const noNumber = (r) => r.planet_number === null || r.planet_number === undefined;
      // Members without an assigned number are told apart from numbers that
      // could not be had: only the latter make a list incomplete.
      const unassigned = list.filter((r) => noNumber(r) && /no number assigned/.test(r.number_missing_reason || '')).length;
      const missing = list.filter(noNumber).length - unassigned;
      if (!complete) {
        const why = Array.isArray(reasons) && reasons.length ? reasons : ['部分数据暂未从知识星球取到（可能被限流）'];
        notices.append(h('div', { class: 'notice notice-warn', role: 'status', id: 'incomplete' },
          h('strong', {}, '名单可能不完整，请核对后再据此退款：'),
          h('ul', { class: 'reasons' }, ...why.map((r) => h('li', {}, r)))));
      }
      if (stats.numbering_notice) {
        notices.append(h('div', { class: 'notice notice-info', role: 'status', id: 'numbering-off' }, stats.numbering_notice));
      } else if (unassigned) {
        notices.append(h('div', { class: 'notice notice-info', role: 'status', id: 'unassigned' },
          `${unassigned} 人没有分配星球编号，表格中以昵称、备注和用户 ID 区分。`));
      }
      if (missing) {
        notices.append(h('div', { class: 'notice notice-warn', role: 'status' },
          `${missing} 人的星球编号未能取到，原因见表格；请人工核对后再退款。`));
      }

      const statCard = (label, value, cls, key) => h('div', { class: `stat ${cls || ''}`, dataset: { stat: key } },
        h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value));
      const statsNode = h('section', { class: 'stats', id: 'refund-stats', 'aria-label': '统计' },
        statCard('总人数', fmtInt(stats.total_count), '', 'total'),
        statCard('合格', fmtInt(stats.qualified_count), 'ok', 'qualified'),
        statCard('不合格', fmtInt(stats.unqualified_count), 'bad', 'unqualified'),
        statCard('合格率', `${Number(stats.qualified_rate || 0).toFixed(2)}%`, 'accent', 'rate'));
      if (stats.joined_count !== undefined && stats.joined_count !== null) {
        statsNode.append(
          statCard('报名', fmtInt(stats.joined_count), '', 'joined'),
          statCard('从未打卡', fmtInt(stats.never_checked_in_count || 0), '', 'never'));
      }

      const q = `required_days=${days}`;
      const base = refundBase(campId);
      const stem = `退款名单-${campId}-${days}天`;
      const downloads = h('div', { class: 'downloads' },
        downloadLink({ class: 'btn btn-sm', id: 'download-xlsx', href: `${base}.xlsx?${q}`, download: `${stem}.xlsx` }, '下载 Excel'),
        downloadLink({ class: 'btn btn-sm', id: 'download-csv', href: `${base}.csv?${q}`, download: `${stem}.csv` }, '下载 CSV'),
        downloadLink({ class: 'btn btn-sm', id: 'download-text', href: `${base}/text?${q}`, download: `${stem}.txt` }, '下载文本'));

      const qualifiedCount = list.filter((r) => r.is_qualified).length;
      let filter = 'all';
      const filters = [
        ['all', '全部', list.length],
        ['qualified', '合格', qualifiedCount],
        ['unqualified', '不合格', list.length - qualifiedCount],
      ];
      const seg = h('div', { class: 'seg', role: 'group', 'aria-label': '筛选' });
      const tbody = h('tbody');
      const drawFilter = () => {
        seg.replaceChildren(...filters.map(([key, label, count]) => h('button', {
          type: 'button',
          class: key === filter ? 'on' : '',
          'aria-pressed': key === filter ? 'true' : 'false',
          dataset: { filter: key },
          onClick: () => { filter = key; drawFilter(); drawRows(); },
        }, label, h('span', { class: 'count' }, fmtInt(count)))));
      };
      const drawRows = () => {
        const shown = [];
        list.forEach((row, i) => {
          if (filter === 'qualified' && !row.is_qualified) return;
          if (filter === 'unqualified' && row.is_qualified) return;
          shown.push(refundRow(row, i + 1));
        });
        if (!shown.length) {
          shown.push(h('tr', { class: 'empty-row' }, h('td', { colspan: 5, class: 'empty' }, '没有符合条件的成员')));
        }
        tbody.replaceChildren(...shown);
      };
      drawFilter();
      drawRows();

      const table = h('div', { class: 'table-wrap stack-sm' },
        h('table', { class: 'data', id: 'refund-table' },
          h('thead', {}, h('tr', {},
            h('th', { class: 'col-index' }, '序号'),
            h('th', {}, '星球编号'),
            h('th', {}, '星球昵称'),
            h('th', {}, '打卡天数'),
            h('th', {}, '是否合格'))),
          tbody));

      // Plain text to paste elsewhere: without format characters (bidi
      // overrides, zero-width), one name could reverse the ones after it.
      const names = String(stats.qualified_names || '').replace(/\p{Cf}/gu, '');
      const namesBox = h('textarea', { id: 'qualified-names', readonly: true, rows: 4, 'aria-label': '合格名单' });
      namesBox.value = names;
      const copy = h('button', { class: 'btn btn-sm btn-primary', type: 'button', id: 'copy-names' }, '复制名单');
      copy.addEventListener('click', () => copyText(names, namesBox));

      result.replaceChildren(
        statsNode,
        h('section', { class: 'panel' },
          h('div', { class: 'toolbar' }, seg, downloads),
          table),
        h('section', { class: 'panel names' },
          h('div', { class: 'panel-head' },
            h('h2', {}, `合格名单（${fmtInt(stats.qualified_count)} 人）`),
            copy),
          namesBox));
    }
  }

  function refundRow(row, index) {
    const hasNumber = row.planet_number !== null && row.planet_number !== undefined;
    const numberCell = hasNumber
      ? h('span', { class: 'member-no' }, String(row.planet_number))
      : h('span', { class: 'missing' },
        h('span', { class: 'badge' }, '无编号'),
        h('span', { class: 'reason' }, row.number_missing_reason || '未能取得星球编号'));
    const alias = row.planet_alias ? h('span', { class: 'alias' }, row.planet_alias) : null;
    return h('tr', { dataset: { userId: String(row.planet_user_id), qualified: row.is_qualified ? 'yes' : 'no' } },
      h('td', { class: 'col-index' }, String(index)),
      h('td', { class: 'col-number', 'data-label': '星球编号' }, numberCell),
      h('td', { class: 'col-name', 'data-label': '星球昵称' }, h('span', { class: 'name' }, row.planet_nickname || '—'), alias),
      h('td', { class: 'col-days', 'data-label': '打卡天数' },
        String(row.checkined_days), h('span', { class: 'of' }, ` / ${row.required_days}`)),
      h('td', { class: 'col-status', 'data-label': '是否合格' }, row.is_qualified
        ? h('span', { class: 'tag tag-ok' }, '合格')
        : h('span', { class: 'tag tag-bad' }, '不合格')));
  }

  function computeStats(list) {
    const qualified = list.filter((r) => r.is_qualified);
    const total = list.length;
    return {
      total_count: total,
      qualified_count: qualified.length,
      unqualified_count: total - qualified.length,
      qualified_rate: total ? Math.round((10000 * qualified.length) / total) / 100 : 0,
      qualified_names: qualified.map((r) => r.planet_nickname).join('、'),
    };
  }

  async function copyText(text, fallbackBox) {
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error('no clipboard API');
      await navigator.clipboard.writeText(text);
      toast('已复制合格名单');
    } catch (_) {
      // Plain http from another machine has no Clipboard API: select and copy.
      fallbackBox.focus();
      fallbackBox.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (_) { ok = false; }
      toast(ok ? '已复制合格名单' : '已选中名单，请按 Ctrl+C 复制', ok ? 'info' : 'error');
    }
  }

  // ------------------------------------------------------------------
  // Members
  // ------------------------------------------------------------------

  const STATUS_NAMES = { joined: '在星球', quitted: '已退出', expired: '已过期' };

  function viewMembers(ctx) {
    const p = ctx.params;
    const int = (v, d, lo, hi) => {
      const n = Number(v);
      return Number.isInteger(n) && n >= lo && n <= hi ? n : d;
    };
    const state = {
      page: int(p.get('page'), 1, 1, 1e6),
      pageSize: int(p.get('page_size'), 50, 1, 200),
      sortBy: p.get('sort_by') === 'join_time' ? 'join_time' : 'number',
      order: p.get('order') === 'desc' ? 'desc' : 'asc',
    };
    const go = (patch) => {
      const s = { ...state, ...patch };
      location.hash = `#/members?page=${s.page}&page_size=${s.pageSize}&sort_by=${s.sortBy}&order=${s.order}`;
    };

    // Lookup
    let mode = 'number';
    const modeSeg = h('div', { class: 'seg', role: 'group', 'aria-label': '查询方式' });
    const input = h('input', { type: 'search', id: 'lookup-input', inputmode: 'numeric', autocomplete: 'off', placeholder: '例如 177' });
    const drawMode = () => {
      modeSeg.replaceChildren(...[['number', '星球编号'], ['user_id', '用户 ID']].map(([key, label]) => h('button', {
        type: 'button', class: key === mode ? 'on' : '', 'aria-pressed': String(key === mode), dataset: { mode: key },
        onClick: () => { mode = key; input.placeholder = key === 'number' ? '例如 177' : '例如 454881884228'; drawMode(); },
      }, label)));
    };
    drawMode();
    const lookupResult = h('div', { class: 'lookup-result', id: 'lookup-result', 'aria-live': 'polite' });
    const lookupForm = h('form', { class: 'form-row', id: 'lookup-form' },
      modeSeg,
      h('div', { class: 'grow' }, input),
      h('button', { class: 'btn btn-primary', type: 'submit', id: 'lookup-button' }, '查询'));
    lookupForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!/^\d{1,20}$/.test(value)) {
        lookupResult.replaceChildren(h('p', { class: 'field-error' }, mode === 'number' ? '请输入星球编号（数字）' : '请输入用户 ID（数字）'));
        return;
      }
      lookupResult.replaceChildren(h('p', { class: 'loading' }, '查询中…'));
      const path = mode === 'number' ? `/api/users/number/${value}` : `/api/users/${value}`;
      try {
        const { data } = await api(path, { signal: ctx.signal });
        lookupResult.replaceChildren(memberCard(data));
      } catch (e) {
        if (!isAbort(e)) lookupResult.replaceChildren(errorPanel(e));
      }
    });

    const summary = h('span', { class: 'muted small', id: 'members-summary' }, '加载中…');
    const tbody = h('tbody', {}, h('tr', {}, h('td', { colspan: 5, class: 'empty' }, '加载中…')));
    const sortHead = (key, label) => {
      const on = state.sortBy === key;
      const th = h('th', {
        class: 'sortable', tabindex: 0, dataset: { sort: key },
        'aria-sort': on ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none',
        title: '点击排序',
      }, label, on ? h('span', { class: 'arrow' }, state.order === 'asc' ? '↑' : '↓') : null);
      const toggle = () => go({ page: 1, sortBy: key, order: on && state.order === 'asc' ? 'desc' : 'asc' });
      th.addEventListener('click', toggle);
      th.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(); } });
      return th;
    };
    const pager = h('div', { class: 'pager' });

    main.append(
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, '成员'), h('p', { class: 'sub' }, '已缓存的星球成员；按星球编号或用户 ID 查询任意成员。'))),
      h('section', { class: 'panel' }, h('h2', {}, '查询成员'), lookupForm, lookupResult),
      h('section', { class: 'panel' },
        h('div', { class: 'panel-head' }, h('h2', {}, '已缓存成员'), summary),
        h('div', { class: 'table-wrap' },
          h('table', { class: 'data', id: 'members-table' },
            h('thead', {}, h('tr', {},
              sortHead('number', '星球编号'),
              h('th', {}, '昵称'),
              h('th', {}, '用户 ID'),
              sortHead('join_time', '加入时间'),
              h('th', {}, '状态'))),
            tbody)),
        pager));

    (async () => {
      try {
        const q = `page=${state.page}&page_size=${state.pageSize}&sort_by=${state.sortBy}&order=${state.order}`;
        const { data } = await api(`/api/users?${q}`, { signal: ctx.signal });
        const users = Array.isArray(data.users) ? data.users : [];
        const pg = data.pagination || {};
        const info = data.cache_info || {};
        summary.textContent = `共 ${fmtInt(pg.total_count)} 人 · 最近同步 ${fmtInstant(info.last_sync_time)}`;
        tbody.replaceChildren(...(users.length ? users.map((u) => h('tr', { dataset: { userId: String(u.user_id) } },
          h('td', { class: 'col-number' }, u.number === null || u.number === undefined
            ? h('span', { class: 'missing', title: u.number_missing_reason || '' }, h('span', { class: 'badge' }, '无编号'))
            : h('span', { class: 'member-no' }, String(u.number))),
          h('td', { class: 'col-name' }, h('span', { class: 'name' }, u.name || '—')),
          h('td', { class: 'col-id' }, String(u.user_id)),
          h('td', { class: 'col-time' }, fmtZsxqTime(u.join_time)),
          h('td', {}, STATUS_NAMES[u.status] || u.status || '—')))
          : [h('tr', {}, h('td', { colspan: 5, class: 'empty' },
            '还没有缓存的成员。', h('a', { href: '#/cache' }, '去同步')))]));
        const pages = Math.max(1, Number(pg.total_pages) || 1);
        const sizeSelect = h('select', { 'aria-label': '每页条数', id: 'page-size' },
          [20, 50, 100, 200].map((n) => h('option', { value: n, selected: n === state.pageSize }, `每页 ${n} 条`)));
        sizeSelect.addEventListener('change', () => go({ page: 1, pageSize: Number(sizeSelect.value) }));
        pager.replaceChildren(
          sizeSelect,
          h('div', { class: 'pages' },
            h('button', { class: 'btn btn-sm', type: 'button', id: 'prev-page', disabled: state.page <= 1, onClick: () => go({ page: state.page - 1 }) }, '上一页'),
            h('span', { id: 'page-info' }, `第 ${state.page} / ${pages} 页`),
            h('button', { class: 'btn btn-sm', type: 'button', id: 'next-page', disabled: state.page >= pages, onClick: () => go({ page: state.page + 1 }) }, '下一页')));
      } catch (e) {
        if (!isAbort(e)) tbody.replaceChildren(h('tr', {}, h('td', { colspan: 5 }, errorPanel(e, route))));
      }
    })();
  }

  function memberCard(m) {
    const dd = (label, value, key) => h('div', {}, h('dt', {}, label),
      h('dd', { dataset: { field: key } }, value === '' || value === null || value === undefined ? '—' : String(value)));
    return h('div', { class: 'member-card', id: 'member-card' },
      m.number === null || m.number === undefined
        ? h('div', { class: 'big-no missing', id: 'member-number' }, h('span', { class: 'badge' }, '无编号'),
          h('span', { class: 'reason' }, m.number_missing_reason || ''))
        : h('div', { class: 'big-no', id: 'member-number' }, String(m.number)),
      h('h3', { id: 'member-name' }, m.name || '—'),
      h('dl', {},
        dd('用户 ID', m.user_id, 'user_id'),
        dd('个人 ID', m.unique_id, 'unique_id'),
        dd('加入时间', fmtZsxqTime(m.join_time), 'join_time'),
        dd('到期时间', fmtZsxqTime(m.expired_time), 'expired_time'),
        dd('状态', STATUS_NAMES[m.status] || m.status, 'status'),
        dd('缓存', m.cache_status === 'hit' ? '命中缓存' : '已从知识星球获取', 'cache_status')));
  }

  // ------------------------------------------------------------------
  // Cache
  // ------------------------------------------------------------------

  /** Whether the server accepts `{"async": true}` sync jobs; learnt on first use. */
  let asyncSync = true;

  function viewCache(ctx) {
    const statsNode = h('section', { class: 'stats stats-6', id: 'cache-stats', 'aria-label': '缓存统计' },
      h('p', { class: 'loading' }, '加载中…'));
    const details = h('dl', { class: 'kv', id: 'cache-details' });

    const force = h('input', { type: 'checkbox', id: 'sync-force' });
    const syncButton = h('button', { class: 'btn btn-primary', type: 'button', id: 'sync-button' }, '开始同步');
    const progress = progressBar('同步进度');
    progress.node.id = 'sync-progress';
    const syncResult = h('div', { class: 'result-line', id: 'sync-result', 'aria-live': 'polite' });
    const clearButton = h('button', { class: 'btn btn-ghost-danger', type: 'button', id: 'clear-button' }, '清空缓存');
    const clearResult = h('div', { class: 'result-line', id: 'clear-result', 'aria-live': 'polite' });
    const tokenLine = h('p', { class: 'muted small', id: 'token-line' });

    const drawTokenLine = () => {
      if (sessionStorage.getItem(TOKEN_KEY)) {
        tokenLine.replaceChildren('管理员令牌已保存在本次会话中。 ',
          h('a', { href: '#/cache', onClick: (ev) => { ev.preventDefault(); sessionStorage.removeItem(TOKEN_KEY); drawTokenLine(); toast('已清除令牌'); } }, '清除令牌'));
      } else {
        tokenLine.textContent = '同步和清空需要管理员令牌，首次操作时会询问，仅保存在本次会话中。';
      }
    };
    drawTokenLine();

    main.append(
      h('div', { class: 'page-head' },
        h('div', {}, h('h1', {}, '缓存'), h('p', { class: 'sub' }, '成员缓存的命中情况、上游调用与同步。')),
        h('button', { class: 'btn btn-sm', type: 'button', id: 'refresh-stats', onClick: () => load() }, '刷新')),
      statsNode,
      h('section', { class: 'panel' }, h('h2', {}, '详情'), details),
      h('div', { class: 'actions-grid' },
        h('section', { class: 'panel' },
          h('h2', {}, '同步成员'),
          h('p', { class: 'muted small' }, '从知识星球拉取全部成员的编号并写入缓存。已缓存的成员会跳过，勾选“强制刷新”则全部重新获取。'),
          h('div', { class: 'form-row' }, syncButton, h('label', { class: 'check' }, force, '强制刷新')),
          progress.node,
          syncResult,
          tokenLine),
        h('section', { class: 'panel' },
          h('h2', {}, '清空缓存'),
          h('p', { class: 'muted small' }, '删除所有已缓存的成员、编号索引和统计。之后的查询会重新访问知识星球。'),
          clearButton,
          clearResult)));

    const stat = (label, value, key, cls, note) => h('div', { class: `stat ${cls || ''}`, dataset: { stat: key } },
      h('div', { class: 'stat-label' }, label),
      h('div', { class: `stat-value ${String(value).length > 12 ? 'small-value' : ''}` }, value),
      note ? h('div', { class: 'stat-note' }, note) : null);

    async function load() {
      try {
        const { data: s } = await api('/api/users/cache/stats', { signal: ctx.signal });
        const up = s.upstream || {};
        statsNode.replaceChildren(
          stat('缓存命中率', `${Number(s.cache_hit_rate || 0).toFixed(2)}%`, 'cache_hit_rate', 'accent',
            `命中 ${fmtInt(s.cache_hits)} / 请求 ${fmtInt(s.total_requests)}`),
          stat('已缓存成员', fmtInt(s.cached_users_count), 'cached_users_count', ''),
          stat('上游调用', fmtInt(up.upstream_calls), 'upstream_calls', '', `重试 ${fmtInt(up.retries)} 次`),
          stat('被限流', fmtInt(up.throttled), 'throttled', Number(up.throttled) > 0 ? 'bad' : '', '知识星球返回 1059 / 429'),
          stat('存储内存', s.redis_memory_usage || '—', 'redis_memory_usage', ''),
          stat('最近同步', fmtInstant(s.last_sync_time), 'last_sync_time', ''));
        details.replaceChildren(
          h('div', {}, h('dt', {}, '存储'), h('dd', {},
            h('span', { class: `dot ${s.store_available ? 'dot-ok' : 'dot-bad'}` }),
            `${s.store === 'redis' ? 'Redis' : s.store === 'redis-cluster' ? 'Redis Cluster' : s.store === 'embedded' ? '内置存储' : s.store || '—'}${s.store_available ? '' : '（不可用，正直接查询知识星球）'}`)),
          h('div', {}, h('dt', {}, '请求总数'), h('dd', {}, fmtInt(s.total_requests))),
          h('div', {}, h('dt', {}, '命中 / 未命中'), h('dd', {}, `${fmtInt(s.cache_hits)} / ${fmtInt(s.cache_misses)}`)),
          h('div', {}, h('dt', {}, '成员接口调用'), h('dd', {}, fmtInt(s.api_calls))),
          h('div', {}, h('dt', {}, '平均排队（交互 / 后台）'), h('dd', {},
            `${Number(up.queue_wait_ms_interactive || 0).toFixed(0)} ms / ${Number(up.queue_wait_ms_background || 0).toFixed(0)} ms`)));
      } catch (e) {
        if (!isAbort(e)) statsNode.replaceChildren(errorPanel(e, load));
      }
    }
    load();
    const timer = setInterval(() => { if (!document.hidden) load(); }, 5000);
    ctx.signal.addEventListener('abort', () => clearInterval(timer));

    syncButton.addEventListener('click', async () => {
      syncButton.disabled = true;
      syncResult.replaceChildren();
      try {
        await runSync(force.checked);
      } finally {
        syncButton.disabled = false;
        drawTokenLine();
        load();
      }
    });

    async function runSync(forceAll) {
      const body = { force: forceAll, concurrency: 5 };
      let answer = null;
      // Ask for the token before the bar starts moving.
      if (!(await adminToken())) {
        syncResult.textContent = '已取消：需要管理员令牌';
        return;
      }
      progress.show();
      progress.indeterminate();
      progress.text('正在同步…', '');
      try {
        if (asyncSync) {
          try {
            answer = await adminCall('/api/users/sync', { method: 'POST', body: { ...body, async: true } });
          } catch (e) {
            // An older server answers 400 to the unknown field: sync in one request instead.
            if (!(e instanceof ApiError && e.status === 400 && /async/.test(e.message))) throw e;
            asyncSync = false;
          }
        }
        if (!asyncSync) answer = await adminCall('/api/users/sync', { method: 'POST', body });
        if (!answer) {
          progress.hide();
          syncResult.textContent = '已取消：需要管理员令牌';
          return;
        }
        let report = answer.data || {};
        if (answer.status === 202 && report.job_id) report = await followJob(String(report.job_id));
        progress.set(1, 1);
        progress.text('同步完成', '');
        const failed = Number(report.failed_count ?? report.failed ?? 0);
        syncResult.replaceChildren(
          h('span', { class: `dot ${failed ? 'dot-bad' : 'dot-ok'}` }),
          report.success_count !== undefined
            ? `同步完成：成功 ${fmtInt(report.success_count)}，跳过 ${fmtInt(report.skipped_count)}，失败 ${fmtInt(failed)}，用时 ${fmtDuration(report.duration_ms)}`
            : `同步完成：处理 ${fmtInt(report.done)}，失败 ${fmtInt(failed)}`);
        toast('同步完成');
      } catch (e) {
        progress.hide();
        syncResult.replaceChildren(errorPanel(e));
      }
    }

    /** Polls an async sync job until it ends, moving the bar. */
    async function followJob(jobId) {
      for (;;) {
        await new Promise((r) => setTimeout(r, 500));
        const answer = await api(`/api/users/sync/${encodeURIComponent(jobId)}`, { admin: true });
        const job = answer.data || {};
        const total = Number(job.total) || 0;
        const done = Number(job.done) || 0;
        if (total > 0) {
          progress.set(done, total);
          const eta = Number(job.eta_ms) > 0 ? `预计还需 ${fmtDuration(job.eta_ms)}` : '';
          progress.text(`正在同步… ${fmtInt(done)} / ${fmtInt(total)}${Number(job.failed) ? `（失败 ${fmtInt(job.failed)}）` : ''}`, eta);
        }
        const state = String(job.state || '');
        if (/^(failed|error)$/.test(state)) throw new ApiError(500, job.error || job.message || '同步失败');
        if (/^(done|finished|completed|succeeded|success)$/.test(state)) return job.report || job;
      }
    }

    clearButton.addEventListener('click', async () => {
      const sure = await confirmAction('清空缓存？', '将删除所有已缓存的成员、编号索引和统计数据。此操作不可撤销，之后的查询会重新访问知识星球。', '清空');
      if (!sure) return;
      clearButton.disabled = true;
      try {
        const answer = await adminCall('/api/users/cache', { method: 'DELETE' });
        if (!answer) {
          clearResult.textContent = '已取消：需要管理员令牌';
          return;
        }
        const d = answer.data || {};
        clearResult.replaceChildren(h('span', { class: 'dot dot-ok' }), `已清空：删除 ${fmtInt(d.deleted_users)} 名成员，${fmtInt(d.deleted_keys)} 个键`);
        toast('缓存已清空');
      } catch (e) {
        clearResult.replaceChildren(errorPanel(e));
      } finally {
        clearButton.disabled = false;
        drawTokenLine();
        load();
      }
    });
  }

  // ------------------------------------------------------------------

  // ------------------------------------------------------------------
  // Service-wide notices (from /readyz): shown on every view
  // ------------------------------------------------------------------

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
})();
