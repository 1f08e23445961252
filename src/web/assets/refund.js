// The refund-list view
// (#/camps/<id>/refund?required_days=N[&grace_days=G][&ranking_type=continuous]):
// the rule form, then the list built page by page with a progress bar, then
// drawn by `refund_list.js`. After a refund mark the whole list is read
// again (from the cache by then, the marks from the store), so the page
// shows what the store holds.

import { ApiError, api, isAbort } from './api.js?v=__ASSET_VERSION__';
import { DEFAULT_REQUIRED_DAYS, findCamp, scopeName } from './camps.js?v=__ASSET_VERSION__';
import { computeStats, renderList } from './refund_list.js?v=__ASSET_VERSION__';
import { errorPanel, fmtInt, fmtZsxqTime, h, progressBar, toast } from './ui.js?v=__ASSET_VERSION__';

const REFUND_PAGE_SIZE = 20;
const RANKING_TYPES = [['accumulated', '累计'], ['continuous', '连续']];

function refundBase(id) {
  return `/api/camps/${encodeURIComponent(id)}/refund-list`;
}

/**
 * The rule as query parameters; the server's defaults (no grace, the
 * accumulated ranking) are left out, so plain addresses stay as they were.
 */
function ruleParams(rule) {
  const q = new URLSearchParams({ required_days: String(rule.required_days) });
  if (rule.grace_days) q.set('grace_days', String(rule.grace_days));
  if (rule.ranking_type !== 'accumulated') q.set('ranking_type', rule.ranking_type);
  return q;
}

function ruleFromParams(params) {
  const number = (name, fallback) => (params.get(name) === null ? fallback : Number(params.get(name)));
  return {
    required_days: number('required_days', DEFAULT_REQUIRED_DAYS),
    grace_days: number('grace_days', 0),
    ranking_type: params.get('ranking_type') || 'accumulated',
  };
}

export function viewRefund(ctx, id) {
  const requested = ruleFromParams(ctx.params);

  const title = h('h1', {}, '退款名单');
  const meta = h('div', { class: 'meta' }, h('span', {}, '训练营 ', h('code', {}, id)));
  const daysInput = h('input', {
    type: 'number', id: 'required-days', name: 'required_days', min: 1, step: 1, required: true,
    inputmode: 'numeric', value: Number.isInteger(requested.required_days) ? requested.required_days : DEFAULT_REQUIRED_DAYS,
  });
  const graceInput = h('input', {
    type: 'number', id: 'grace-days', name: 'grace_days', min: 0, step: 1, required: true,
    inputmode: 'numeric', value: Number.isInteger(requested.grace_days) ? requested.grace_days : 0,
  });
  const typeSelect = h('select', { id: 'ranking-type', name: 'ranking_type' },
    ...RANKING_TYPES.map(([key, label]) => h('option', { value: key, selected: key === requested.ranking_type }, label)));
  const daysHint = h('p', { class: 'hint' });
  const formError = h('p', { class: 'field-error', hidden: true });
  const form = h('form', { class: 'gen-form', id: 'refund-form', novalidate: true },
    h('label', { class: 'field' }, h('span', {}, '合格所需打卡天数'), daysInput),
    h('label', { class: 'field' }, h('span', {}, '宽限天数'), graceInput),
    h('label', { class: 'field' }, h('span', {}, '排名类型'), typeSelect),
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

  /** What is wrong with `rule`, in words, or '' when it is good. */
  const ruleError = (rule) => {
    if (!Number.isInteger(rule.required_days) || rule.required_days < 1 || rule.required_days > maxDays()) {
      return `打卡天数需为 1 到 ${maxDays()} 之间的整数`;
    }
    if (!Number.isInteger(rule.grace_days) || rule.grace_days < 0 || rule.grace_days >= rule.required_days) {
      return `宽限天数需为 0 到 ${rule.required_days - 1} 之间的整数（小于打卡天数）`;
    }
    if (!RANKING_TYPES.some(([key]) => key === rule.ranking_type)) return '排名类型只能是累计或连续';
    return '';
  };

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const rule = {
      required_days: Number(daysInput.value),
      grace_days: graceInput.value.trim() === '' ? 0 : Number(graceInput.value),
      ranking_type: typeSelect.value,
    };
    const wrong = ruleError(rule);
    if (wrong) {
      formError.textContent = wrong;
      formError.hidden = false;
      return;
    }
    formError.hidden = true;
    const target = `#/camps/${id}/refund?${ruleParams(rule)}`;
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
    const wrong = ruleError(requested);
    if (wrong) {
      formError.textContent = `${wrong}，请修改后点击“生成名单”`;
      formError.hidden = false;
      return;
    }
    build(requested);
  })();

  function viewOf(rule) {
    const kind = rule.ranking_type === 'continuous' ? '-连续' : '';
    const grace = rule.grace_days ? `-宽限${rule.grace_days}天` : '';
    const view = {
      campId: id,
      rule,
      base: refundBase(id),
      query: String(ruleParams(rule)),
      stem: `退款名单-${id}-${rule.required_days}天${grace}${kind}`,
      // Filter, selection and note survive the redrawing after a mark.
      state: { filter: 'all', selected: new Set(), note: '' },
      refresh: () => refresh(view),
    };
    return view;
  }

  async function build(rule) {
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
        const q = ruleParams(rule);
        q.set('page_size', String(REFUND_PAGE_SIZE));
        q.set('index', String(index));
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
        final = await wholeList(rule);
      } catch (e) {
        if (isAbort(e)) throw e;
      }
      const list = final && Array.isArray(final.refund_list) ? final.refund_list : rows;
      const stats = final && final.statistics ? final.statistics : computeStats(list);
      if (final && final.complete === false) complete = false;
      if (final && final.title && !camp) title.textContent = final.title;
      progress.set(list.length, list.length || 1);
      progress.text('名单已生成', `已加载 ${list.length} / ${list.length}`);
      renderList(viewOf(rule), list, stats, complete, final ? final.incomplete_reasons : null, notices, result);
    } catch (e) {
      if (isAbort(e)) return;
      progress.hide();
      notices.replaceChildren(errorPanel(e, () => build(rule)));
    } finally {
      button.disabled = false;
    }
  }

  async function wholeList(rule) {
    const answer = await api(refundBase(id), { method: 'POST', body: { ...rule }, signal: ctx.signal });
    return answer.data;
  }

  /** Reads the list again after a mark and draws it; on failure the rows stay as drawn. */
  async function refresh(view) {
    try {
      const final = await wholeList(view.rule);
      if (!final || !Array.isArray(final.refund_list)) throw new ApiError(0, '服务返回的名单有误');
      const stats = final.statistics || computeStats(final.refund_list);
      renderList(view, final.refund_list, stats, final.complete !== false, final.incomplete_reasons, notices, result);
    } catch (e) {
      if (isAbort(e)) return;
      toast(`已标记，但重新读取名单失败：${e.message}；请刷新页面核对`, 'error');
    }
  }
}
