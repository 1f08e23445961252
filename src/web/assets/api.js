// The service's JSON API: the fetch wrapper and its envelope, and the admin
// and read tokens, asked for in a dialog and kept in sessionStorage only.

import { h, openDialog, toast } from './ui.js?v=__ASSET_VERSION__';

export class ApiError extends Error {
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
export async function api(path, options = {}) {
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

export const isAbort = (e) => e && e.name === 'AbortError';

/** What the token dialog says for each token. */
const TOKEN_PROMPTS = {
  [TOKEN_KEY]: {
    title: '管理员令牌',
    hint: ['同步、清空缓存和标记退款需要管理员令牌（服务的 ', h('code', {}, 'ADMIN_TOKEN'), '）。令牌只保存在本次浏览器会话中，关闭标签页即失效。'],
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
export const adminToken = (reason) => askToken(TOKEN_KEY, reason);

/** Whether an admin token is kept in this browser session. */
export const adminTokenKept = () => Boolean(sessionStorage.getItem(TOKEN_KEY));

/** Forgets the admin token kept in this browser session. */
export const forgetAdminToken = () => sessionStorage.removeItem(TOKEN_KEY);

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
export function downloadLink(props, label) {
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
export async function adminCall(path, options) {
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
