// The members view (#/members?page=…): the cached members, paged and
// sorted by number or join time, and a lookup by number or user id.

import { api, isAbort } from './api.js?v=__ASSET_VERSION__';
import { errorPanel, fmtInstant, fmtInt, fmtZsxqTime, h } from './ui.js?v=__ASSET_VERSION__';

const STATUS_NAMES = { joined: '在星球', quitted: '已退出', expired: '已过期' };

export function viewMembers(ctx) {
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

  ctx.main.append(
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
      if (!isAbort(e)) tbody.replaceChildren(h('tr', {}, h('td', { colspan: 5 }, errorPanel(e, ctx.route))));
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
