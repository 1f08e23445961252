// The camps view (#/camps?scope=…): the camps of one state as cards, each
// linking to its refund list. Also keeps the camps seen in this session, so
// the refund view finds its camp without asking again.

import { api, isAbort } from './api.js?v=__ASSET_VERSION__';
import { errorPanel, fmtInt, fmtZsxqTime, h } from './ui.js?v=__ASSET_VERSION__';

const SCOPES = [
  ['ongoing', '进行中'],
  ['over', '已结束'],
  ['closed', '已关闭'],
];
export const scopeName = (s) => (SCOPES.find(([k]) => k === s) || [s, s])[1];

/** Camps seen in this session, by id: the refund page needs no second lookup. */
const knownCamps = new Map();

export const DEFAULT_REQUIRED_DAYS = 7;
const defaultDays = (camp) => Math.max(1, Math.min(DEFAULT_REQUIRED_DAYS, Number(camp.checkin_days) || DEFAULT_REQUIRED_DAYS));

async function fetchCamps(scope, signal) {
  // 20 is the upstream's own default page of camps: the newest ones.
  const { data } = await api(`/api/camps?scope=${encodeURIComponent(scope)}&count=20`, { signal });
  const camps = (data && Array.isArray(data.camps)) ? data.camps : [];
  for (const c of camps) knownCamps.set(String(c.checkin_id), c);
  return camps;
}

export async function findCamp(id, signal) {
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

export async function viewCamps(ctx) {
  const scope = SCOPES.some(([k]) => k === ctx.params.get('scope')) ? ctx.params.get('scope') : 'over';
  const seg = h('nav', { class: 'seg', 'aria-label': '训练营状态' },
    SCOPES.map(([key, label]) => h('a', {
      href: `#/camps?scope=${key}`,
      class: key === scope ? 'on' : '',
      'aria-current': key === scope ? 'true' : null,
      dataset: { scope: key },
    }, label)));
  const list = h('div', { class: 'camp-list' }, h('p', { class: 'loading' }, '正在加载训练营…'));
  ctx.main.append(
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
