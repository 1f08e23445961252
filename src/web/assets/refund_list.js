// A built refund list on the page: its notices, the statistics and refund
// counters, the filters (合格 / 不合格 / 未退款), the table with a status
// control and a checkbox per row, batch marking of the selection, the
// downloads and the qualified names to copy.
//
// `state` (filter, selection, note) outlives one drawing: after a mark the
// view reads the list again and draws it anew with the same state.

import { downloadLink } from './api.js?v=__ASSET_VERSION__';
import { NOTE_MAX, mark, statusCell, statusLabel } from './refund_marks.js?v=__ASSET_VERSION__';
import { confirmAction, fmtInt, h, toast } from './ui.js?v=__ASSET_VERSION__';

/** The rule's words for the operator: 累计打卡 ≥ 5 天（要求 7 天，宽限 2 天）. */
export function ruleWords(rule) {
  const kind = rule.ranking_type === 'continuous' ? '连续打卡' : '累计打卡';
  const grace = rule.grace_days ? `，宽限 ${rule.grace_days} 天` : '';
  return `${kind} ≥ ${rule.required_days - rule.grace_days} 天（要求 ${rule.required_days} 天${grace}）`;
}

const FILTERS = {
  all: () => true,
  qualified: (r) => r.is_qualified,
  unqualified: (r) => !r.is_qualified,
  // Who is still owed a deposit: qualified and not yet marked.
  pending: (r) => r.is_qualified && r.refund_status === 'pending',
};

/**
 * Draws the list into `result` and its notices into `notices`.
 * `view` holds: campId, rule, base (the list's API path), query (the rule
 * as a query string), stem (download file names), state and refresh (reads
 * the list again and draws it).
 */
export function renderList(view, list, stats, complete, reasons, notices, result) {
  const { campId, rule, state } = view;
  drawNotices(notices, list, stats, complete, reasons);

  const counted = (n) => (n === undefined || n === null ? '—' : fmtInt(n));
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
  // Among the qualified: whom the operator has paid back, refused, or still owes.
  const marksNode = h('section', { class: 'stats', id: 'refund-marks', 'aria-label': '退款进度（合格者）' },
    statCard('已退款', counted(stats.refunded_count), 'ok', 'refunded'),
    statCard('已拒绝', counted(stats.rejected_count), 'bad', 'rejected'),
    statCard('未退款', counted(stats.pending_count), 'accent', 'pending'));
  const ruleNode = h('p', { class: 'rule-line', id: 'refund-rule' }, `合格标准：${ruleWords(rule)}`);

  const downloads = h('div', { class: 'downloads' },
    downloadLink({ class: 'btn btn-sm', id: 'download-xlsx', href: `${view.base}.xlsx?${view.query}`, download: `${view.stem}.xlsx` }, '下载 Excel'),
    downloadLink({ class: 'btn btn-sm', id: 'download-csv', href: `${view.base}.csv?${view.query}`, download: `${view.stem}.csv` }, '下载 CSV'),
    downloadLink({ class: 'btn btn-sm', id: 'download-text', href: `${view.base}/text?${view.query}`, download: `${view.stem}.txt` }, '下载文本'));

  const count = (key) => list.filter(FILTERS[key]).length;
  const filters = [
    ['all', '全部', list.length],
    ['qualified', '合格', count('qualified')],
    ['unqualified', '不合格', count('unqualified')],
    ['pending', '未退款', count('pending')],
  ];
  if (!FILTERS[state.filter]) state.filter = 'all';
  const visible = () => list.filter(FILTERS[state.filter]);
  const known = new Set(list.map((r) => String(r.planet_user_id)));
  for (const id of [...state.selected]) if (!known.has(id)) state.selected.delete(id);

  const seg = h('div', { class: 'seg', role: 'group', 'aria-label': '筛选' });
  const tbody = h('tbody');
  const selectAll = h('input', { type: 'checkbox', id: 'select-all', 'aria-label': '全选当前显示的成员' });
  const selectedText = h('span', { class: 'selected-count', id: 'selected-count' });
  const markError = h('p', { class: 'field-error', id: 'mark-error', role: 'alert', hidden: true });
  const noteInput = h('input', {
    type: 'text', id: 'mark-note', maxlength: NOTE_MAX, placeholder: '备注（可选，随下一次标记保存）',
    'aria-label': '标记备注', value: state.note || '',
  });
  noteInput.addEventListener('input', () => { state.note = noteInput.value; });
  const batchButtons = [
    h('button', { class: 'btn btn-sm btn-ok', type: 'button', id: 'batch-refunded', onClick: () => markSelected('refunded') }, '标记为已退款'),
    h('button', { class: 'btn btn-sm btn-ghost-danger', type: 'button', id: 'batch-rejected', onClick: () => markSelected('rejected') }, '标记为已拒绝'),
  ];
  let busy = false;

  const drawFilter = () => {
    seg.replaceChildren(...filters.map(([key, label, n]) => h('button', {
      type: 'button',
      class: key === state.filter ? 'on' : '',
      'aria-pressed': key === state.filter ? 'true' : 'false',
      dataset: { filter: key },
      onClick: () => {
        state.filter = key;
        // Only rows in sight stay selected: a batch never reaches rows the operator cannot see.
        const shown = new Set(visible().map((r) => String(r.planet_user_id)));
        for (const id of [...state.selected]) if (!shown.has(id)) state.selected.delete(id);
        drawFilter();
        drawRows();
      },
    }, label, h('span', { class: 'count' }, fmtInt(n)))));
  };
  const drawSelection = () => {
    const shown = visible().map((r) => String(r.planet_user_id));
    const picked = shown.filter((id) => state.selected.has(id)).length;
    selectAll.checked = shown.length > 0 && picked === shown.length;
    selectAll.indeterminate = picked > 0 && picked < shown.length;
    selectedText.textContent = `已选 ${fmtInt(state.selected.size)} 人`;
    for (const b of batchButtons) b.disabled = busy || state.selected.size === 0;
  };
  const drawRows = () => {
    const rows = visible().map((row) => refundRow(row, list.indexOf(row) + 1, state.selected, drawSelection, markRow));
    if (!rows.length) {
      rows.push(h('tr', { class: 'empty-row' }, h('td', { colspan: 7, class: 'empty' }, '没有符合条件的成员')));
    }
    tbody.replaceChildren(...rows);
    drawSelection();
  };
  selectAll.addEventListener('change', () => {
    for (const row of visible()) {
      if (selectAll.checked) state.selected.add(String(row.planet_user_id));
      else state.selected.delete(String(row.planet_user_id));
    }
    drawRows();
  });

  const showError = (message) => {
    markError.textContent = message;
    markError.hidden = false;
    toast(message, 'error');
  };
  async function apply(ids, status) {
    if (busy) return false;
    busy = true;
    for (const b of result.querySelectorAll('[data-mark], #batch-refunded, #batch-rejected')) b.disabled = true;
    markError.hidden = true;
    const changed = await mark(campId, ids, status, noteInput.value.trim(), showError);
    busy = false;
    if (changed !== null) {
      state.note = '';
      return true;
    }
    drawRows();
    return false;
  }
  async function markRow(row, status) {
    if (await apply([String(row.planet_user_id)], status)) view.refresh();
  }
  async function markSelected(status) {
    const ids = [...state.selected];
    if (!ids.length) return;
    const unqualified = list.filter((r) => !r.is_qualified && state.selected.has(String(r.planet_user_id))).length;
    if (status === 'refunded' && unqualified) {
      const go = await confirmAction('所选成员中有不合格者',
        `所选 ${ids.length} 人中有 ${unqualified} 人不合格，仍要全部标记为已退款吗？`, '仍然标记');
      if (!go) return;
    }
    if (await apply(ids, status)) {
      state.selected.clear();
      view.refresh();
    }
  }

  drawFilter();
  drawRows();

  const table = h('div', { class: 'table-wrap stack-sm' },
    h('table', { class: 'data', id: 'refund-table' },
      h('thead', {}, h('tr', {},
        h('th', { class: 'col-select' }, selectAll),
        h('th', { class: 'col-index' }, '序号'),
        h('th', {}, '星球编号'),
        h('th', {}, '星球昵称'),
        h('th', {}, '打卡天数'),
        h('th', {}, '是否合格'),
        h('th', {}, '退款状态'))),
      tbody));
  const batchBar = h('div', { class: 'batch-bar', id: 'batch-bar' },
    selectedText, noteInput, ...batchButtons);

  // Plain text to paste elsewhere: without format characters (bidi
  // overrides, zero-width), one name could reverse the ones after it.
  const names = String(stats.qualified_names || '').replace(/\p{Cf}/gu, '');
  const namesBox = h('textarea', { id: 'qualified-names', readonly: true, rows: 4, 'aria-label': '合格名单' });
  namesBox.value = names;
  const copy = h('button', { class: 'btn btn-sm btn-primary', type: 'button', id: 'copy-names' }, '复制名单');
  copy.addEventListener('click', () => copyText(names, namesBox));

  result.replaceChildren(
    statsNode,
    marksNode,
    ruleNode,
    h('section', { class: 'panel' },
      h('div', { class: 'toolbar' }, seg, downloads),
      batchBar,
      markError,
      table),
    h('section', { class: 'panel names' },
      h('div', { class: 'panel-head' },
        h('h2', {}, `合格名单（${fmtInt(stats.qualified_count)} 人）`),
        copy),
      namesBox));
}

function drawNotices(notices, list, stats, complete, reasons) {
  notices.replaceChildren();
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
}

function refundRow(row, index, selected, onSelect, onMark) {
  const id = String(row.planet_user_id);
  const hasNumber = row.planet_number !== null && row.planet_number !== undefined;
  const numberCell = hasNumber
    ? h('span', { class: 'member-no' }, String(row.planet_number))
    : h('span', { class: 'missing' },
      h('span', { class: 'badge' }, '无编号'),
      h('span', { class: 'reason' }, row.number_missing_reason || '未能取得星球编号'));
  const alias = row.planet_alias ? h('span', { class: 'alias' }, row.planet_alias) : null;
  const days = row.days_missing_reason
    ? [h('span', { class: 'missing' }, '未知'), h('span', { class: 'reason' }, row.days_missing_reason)]
    : [String(row.checkined_days), h('span', { class: 'of' }, ` / ${row.required_days}`)];
  const box = h('input', {
    type: 'checkbox', class: 'row-select', 'aria-label': `选择 ${row.planet_nickname || id}`, checked: selected.has(id),
  });
  box.addEventListener('change', () => {
    if (box.checked) selected.add(id);
    else selected.delete(id);
    onSelect();
  });
  return h('tr', {
    dataset: { userId: id, qualified: row.is_qualified ? 'yes' : 'no', refundStatus: row.refund_status || 'unknown' },
    title: `退款状态：${statusLabel(row.refund_status)}`,
  },
  h('td', { class: 'col-select' }, box),
  h('td', { class: 'col-index' }, String(index)),
  h('td', { class: 'col-number', 'data-label': '星球编号' }, numberCell),
  h('td', { class: 'col-name', 'data-label': '星球昵称' }, h('span', { class: 'name' }, row.planet_nickname || '—'), alias),
  h('td', { class: 'col-days', 'data-label': '打卡天数' }, ...days),
  h('td', { class: 'col-status', 'data-label': '是否合格' }, row.is_qualified
    ? h('span', { class: 'tag tag-ok' }, '合格')
    : h('span', { class: 'tag tag-bad' }, '不合格')),
  statusCell(row, (status) => onMark(row, status)));
}

/** Statistics of `list` when the server's could not be read. */
export function computeStats(list) {
  const qualified = list.filter((r) => r.is_qualified);
  const total = list.length;
  const marked = (s) => qualified.filter((r) => r.refund_status === s).length;
  const known = qualified.every((r) => r.refund_status);
  return {
    total_count: total,
    qualified_count: qualified.length,
    unqualified_count: total - qualified.length,
    qualified_rate: total ? Math.round((10000 * qualified.length) / total) / 100 : 0,
    qualified_names: qualified.map((r) => r.planet_nickname).join('、'),
    refunded_count: known ? marked('refunded') : null,
    rejected_count: known ? marked('rejected') : null,
    pending_count: known ? marked('pending') : null,
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
