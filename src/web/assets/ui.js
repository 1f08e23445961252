// DOM helpers, formatting, the toast, the progress bar, the confirmation
// dialog and the error panel.
//
// `h` is the one place elements are made: member data (names with emoji or
// markup) always goes into the page as text (textContent / text nodes),
// never parsed as HTML. Imports nothing, so every other module may use it.

/**
 * Creates an element. `props` keys: `class`, `text`, `on<Event>` handlers,
 * `dataset` (object), anything else becomes an attribute. Children may be
 * nodes, strings (added as text) or null.
 */
export function h(tag, props, ...children) {
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

export const fmtInt = (n) => (Number.isFinite(Number(n)) ? Number(n).toLocaleString('zh-CN') : '—');

/** `2024-09-04T22:39:05.287+0800` → `2024-09-04 22:39` (as the upstream wrote it). */
export function fmtZsxqTime(raw, withTime = true) {
  const m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})/.exec(String(raw || ''));
  if (!m) return raw ? String(raw) : '—';
  return withTime ? `${m[1]} ${m[2]}` : m[1];
}

/** An ISO instant (`2025-10-28T02:00:00.000Z`) in the browser's time zone. */
export function fmtInstant(raw) {
  if (!raw) return '从未同步';
  const d = new Date(raw);
  if (Number.isNaN(d.getTime())) return String(raw);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (Number(ms) < 1000) return `${Math.max(0, Math.round(Number(ms) || 0))} 毫秒`;
  const s = Math.round(Number(ms) / 1000);
  if (s < 60) return `${s} 秒`;
  return `${Math.floor(s / 60)} 分 ${s % 60} 秒`;
}

let toastTimer = 0;
export function toast(message, kind = 'info') {
  const node = document.getElementById('toast');
  node.textContent = message;
  node.classList.toggle('error', kind === 'error');
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.hidden = true; }, kind === 'error' ? 6000 : 2600);
}

/** A progress bar: `set(done, total)`; `indeterminate()` when the total is unknown. */
export function progressBar(label) {
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

export function openDialog(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

export async function confirmAction(title, message, okLabel) {
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-message').textContent = message;
  document.getElementById('confirm-ok').textContent = okLabel;
  return (await openDialog(document.getElementById('confirm-dialog'))) === 'ok';
}

export function errorPanel(e, retry) {
  return h('div', { class: 'notice notice-error', role: 'alert' },
    h('span', { class: 'error-text' }, e instanceof Error ? e.message : String(e)),
    retry ? h('button', { class: 'btn btn-sm', type: 'button', onClick: retry }, '重试') : null);
}
