// The refund-list view (#/camps/<id>/refund?required_days=N): builds the
// list page by page with a progress bar, then shows the statistics, the
// qualified / unqualified filter, the downloads and the names to copy.

import { ApiError, api, downloadLink, isAbort } from './api.js?v=__ASSET_VERSION__';
import { DEFAULT_REQUIRED_DAYS, findCamp, scopeName } from './camps.js?v=__ASSET_VERSION__';
import { errorPanel, fmtInt, fmtZsxqTime, h, progressBar, toast } from './ui.js?v=__ASSET_VERSION__';

const REFUND_PAGE_SIZE = 20;

function refundBase(id) {
  return `/api/camps/${encodeURIComponent(id)}/refund-list`;
}

export function viewRefund(ctx, id) {
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

  ctx.main.append(
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
    if (location.hash === target) ctx.route();
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
