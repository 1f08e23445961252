// Refund marks on a camp's list: what each status is called, a row's status
// cell with its controls, and the admin calls that change marks.
//
// The page never shows a mark it only hoped to write: after every change the
// caller reads the list again, so what is shown is what the store holds. A
// refused or failed change says the server's message and leaves the rows as
// they were.

import { ApiError, adminCall } from './api.js?v=__ASSET_VERSION__';
import { fmtInstant, h, toast } from './ui.js?v=__ASSET_VERSION__';

/** The statuses in the order the controls show them, with their labels. */
export const STATUSES = [
  ['pending', '未退款'],
  ['refunded', '已退款'],
  ['rejected', '已拒绝'],
];

/** The label of `status`; 未知 when the marks could not be read (`null`). */
export function statusLabel(status) {
  const found = STATUSES.find(([key]) => key === status);
  return found ? found[1] : '未知';
}

/** The server's limit on a note, in characters. */
export const NOTE_MAX = 200;

function marksBase(campId) {
  return `/api/camps/${encodeURIComponent(campId)}/refunds`;
}

/**
 * Marks `userIds` with `status` (and `note`, if any): one id with PUT, more
 * with one POST, which the server applies all or nothing. Resolves to the
 * number of marks that changed, or null when nothing was written (no token
 * given, or refused: then `onError` gets the server's message).
 */
export async function mark(campId, userIds, status, note, onError) {
  const body = { status };
  if (note) body.note = note;
  try {
    const answer = userIds.length === 1
      ? await adminCall(`${marksBase(campId)}/${encodeURIComponent(userIds[0])}`, { method: 'PUT', body })
      : await adminCall(marksBase(campId), { method: 'POST', body: { ...body, user_ids: userIds } });
    if (!answer) {
      onError('未提供管理员令牌，未做任何标记');
      return null;
    }
    const changed = answer.data && Number.isFinite(Number(answer.data.changed)) ? Number(answer.data.changed) : userIds.length;
    toast(changed ? `已将 ${changed} 人标记为${statusLabel(status)}` : `已是${statusLabel(status)}，未改动`);
    return changed;
  } catch (e) {
    const message = e instanceof ApiError ? e.message : String(e && e.message ? e.message : e);
    onError(`标记失败，名单未改动：${message}`);
    return null;
  }
}

/**
 * The status cell of one row: the current status as a tag, its note and
 * when it changed, and one button per status (the current one pressed).
 * `onMark(status)` is called for a button; rows whose marks could not be
 * read get no controls.
 */
export function statusCell(row, onMark) {
  const status = row.refund_status;
  const known = STATUSES.some(([key]) => key === status);
  const cell = h('td', { class: 'col-refund', 'data-label': '退款状态' },
    h('span', { class: `tag refund-tag refund-${known ? status : 'unknown'}` }, statusLabel(status)));
  if (row.refund_note) cell.append(h('span', { class: 'refund-note', title: '备注' }, row.refund_note));
  if (row.refund_updated_at) {
    cell.append(h('span', { class: 'refund-time' }, fmtInstant(row.refund_updated_at)));
  }
  if (!known) return cell;
  const buttons = STATUSES.map(([key, label]) => h('button', {
    type: 'button',
    class: key === status ? 'on' : '',
    'aria-pressed': key === status ? 'true' : 'false',
    disabled: key === status,
    dataset: { mark: key },
    title: key === 'pending' ? '改回未退款' : `标记为${label}`,
    onClick: () => onMark(key),
  }, label));
  cell.append(h('div', { class: 'seg seg-sm mark-actions', role: 'group', 'aria-label': '标记退款状态' }, ...buttons));
  return cell;
}
