// The cache view (#/cache): hit rate, upstream calls and storage, refreshed
// every 5 s; the sync with its progress bar, and clearing the cache. Both
// actions need the admin token.

import { ApiError, adminCall, adminToken, adminTokenKept, api, forgetAdminToken, isAbort } from './api.js?v=__ASSET_VERSION__';
import { confirmAction, errorPanel, fmtDuration, fmtInstant, fmtInt, h, progressBar, toast } from './ui.js?v=__ASSET_VERSION__';

/** Whether the server accepts `{"async": true}` sync jobs; learnt on first use. */
let asyncSync = true;

export function viewCache(ctx) {
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
    if (adminTokenKept()) {
      tokenLine.replaceChildren('管理员令牌已保存在本次会话中。 ',
        h('a', { href: '#/cache', onClick: (ev) => { ev.preventDefault(); forgetAdminToken(); drawTokenLine(); toast('已清除令牌'); } }, '清除令牌'));
    } else {
      tokenLine.textContent = '同步和清空需要管理员令牌，首次操作时会询问，仅保存在本次会话中。';
    }
  };
  drawTokenLine();

  ctx.main.append(
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
