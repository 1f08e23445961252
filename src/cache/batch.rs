//! Numbers for many members at once: what a refund list needs.
//!
//! The naive refund list makes one upstream call per participant, all at
//! once, gets throttled and shows blanks. Here the cost is as small as the
//! cache allows, in this order:
//! 1. **One batched store read** for every id (`Store::get_members`).
//! 2. **The member list** for the misses, when there are more than a couple
//!    and listing is not known to be refused: 200 members a call, each page
//!    written to the store as a whole (the next list is then free too), and
//!    the walk stops as soon as every missing id was seen.
//! 3. **Per-member summary calls** only for ids still missing, at most
//!    `API_CONCURRENCY` at a time, through the shared singleflight fetch (a
//!    lookup of the same member running meanwhile shares the call).
//!
//! Every call goes through the upstream budget at interactive priority, so
//! nothing here is a burst: the budget spaces the calls and bounds them in
//! flight. A member list that fails for another reason than a refusal (still
//! throttled after its retries, say) falls back to per-member calls: each of
//! those has its own retry budget, and a complete list is worth the wait.
//!
//! Nothing is ever silently blank: an id whose number cannot be had comes
//! back as [`Resolved::Missing`] with a reason meant for the operator. Former
//! members (1037 and kin, docs/UPSTREAM.md) are remembered in the cache's
//! negative cache (`NEGATIVE_CACHE_TTL`), so re-generating or exporting a
//! list that contains them costs no call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::MemberCache;
use crate::domain::{CachedMember, Member, UserId};
use crate::upstream::{MemberWalk, Priority, UpstreamError};

/// Misses at which the member list is read instead of per-member calls. With
/// fewer, per-member calls cost at most as much as one list page; from here
/// the list wins (a group that may be listed has at most 500 members, so the
/// whole list is at most 3 calls, and the walk often stops earlier;
/// docs/UPSTREAM.md).
pub const LIST_MIN_MISSES: usize = 3;

/// Members written to the store per batch.
const WRITE_BATCH: usize = 500;

/// Where a number came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberSource {
    /// The store, without any upstream call.
    Cache,
    /// A page of the upstream member list.
    MemberList,
    /// A per-member summary call.
    MemberCall,
}

/// The outcome for one id.
#[derive(Debug, Clone)]
pub enum Resolved {
    Found {
        member: Member,
        source: NumberSource,
    },
    /// No number: `reason` says why, in words for the operator (Chinese
    /// first, English in brackets, like every message of the API).
    Missing {
        reason: String,
        error: UpstreamError,
    },
}

impl Resolved {
    pub fn member(&self) -> Option<&Member> {
        match self {
            Resolved::Found { member, .. } => Some(member),
            Resolved::Missing { .. } => None,
        }
    }
}

/// What a resolution cost and found, counted over distinct ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResolveReport {
    /// Distinct ids asked for.
    pub requested: usize,
    pub cache_hits: usize,
    pub from_member_list: usize,
    pub from_member_calls: usize,
    pub missing: usize,
    /// Upstream member-list pages read (each one call, retries aside).
    pub member_list_pages: usize,
    /// Per-member calls asked for (answered or not; shared calls included).
    pub member_calls: usize,
}

/// Every asked id with its outcome.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub by_id: HashMap<UserId, Resolved>,
    pub report: ResolveReport,
}

impl Resolution {
    pub fn get(&self, id: UserId) -> Option<&Resolved> {
        self.by_id.get(&id)
    }
}

/// The operator-facing reason for an upstream failure.
pub fn missing_reason(e: &UpstreamError) -> String {
    match e {
        UpstreamError::NotMember { code: 1037, .. } => {
            "该用户已退出星球 (left the group)".to_string()
        }
        UpstreamError::NotMember { code: 14210, .. } => {
            "该用户的星球试用已过期 (member trial expired)".to_string()
        }
        UpstreamError::NotMember { code: 1031, .. } => {
            "该用户不存在 (the user does not exist)".to_string()
        }
        UpstreamError::NotMember { code, .. } => {
            format!("该用户不是本星球成员 (not a member of the group, code {code})")
        }
        UpstreamError::Throttled { .. } => {
            "知识星球接口限流，重试后仍未取到编号，请稍后重新生成 (the Zsxq API kept throttling; generate the list again later)".to_string()
        }
        UpstreamError::Refusing { .. } => {
            "知识星球持续以 1059 拒绝请求，为保护令牌已暂停调用，请稍后重新生成 (upstream refusing (1059): calls are paused to protect the token; generate the list again later)".to_string()
        }
        UpstreamError::TokenRejected { .. } | UpstreamError::Unauthorized { .. } => {
            "知识星球拒绝了服务的令牌，请更新 ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION 后重新生成 (token rejected: renew ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION, then generate the list again)".to_string()
        }
        other => format!(
            "未能从知识星球取到编号，请稍后重新生成 (could not fetch the number: {}; generate the list again later)",
            other.kind()
        ),
    }
}

impl MemberCache {
    /// Resolves the members (and so the numbers) of `ids`: one store read,
    /// then the member list, then per-member calls, as the module explains.
    /// Duplicates are fine; every id of `ids` has an entry in the answer.
    /// Never fails as a whole: what cannot be had is [`Resolved::Missing`].
    pub async fn resolve_many(self: &Arc<Self>, ids: &[UserId]) -> Resolution {
        let mut unique: Vec<UserId> = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if seen.insert(id) {
                unique.push(id);
            }
        }
        let mut out = Resolution {
            by_id: HashMap::with_capacity(unique.len()),
            report: ResolveReport {
                requested: unique.len(),
                ..ResolveReport::default()
            },
        };

        // 1. One batched read.
        let mut misses: Vec<UserId> = Vec::new();
        let mut store_answered = false;
        let cached = if self.enabled && !unique.is_empty() {
            match self.store.get_members(&unique).await {
                Ok(found) => {
                    store_answered = true;
                    found
                }
                Err(e) => {
                    tracing::warn!(error = %e, ids = unique.len(), "store read failed; resolving every number upstream");
                    vec![None; unique.len()]
                }
            }
        } else {
            vec![None; unique.len()]
        };
        for (id, hit) in unique.iter().zip(cached) {
            match hit {
                Some(c) => {
                    out.report.cache_hits += 1;
                    out.by_id.insert(
                        *id,
                        Resolved::Found {
                            member: c.member,
                            source: NumberSource::Cache,
                        },
                    );
                }
                None => misses.push(*id),
            }
        }
        let (hits, missed) = (out.report.cache_hits as u64, misses.len() as u64);
        if store_answered {
            self.metrics().tier("store", hits, missed);
        }
        self.count_lookups(hits, missed);

        // Former members answered recently: no call, same answer.
        misses.retain(|id| match self.known_not_member(*id) {
            Some(error) => {
                out.by_id.insert(
                    *id,
                    Resolved::Missing {
                        reason: missing_reason(&error),
                        error,
                    },
                );
                false
            }
            None => true,
        });

        // 2. The member list.
        if misses.len() >= LIST_MIN_MISSES && !self.listing_refused() {
            misses = self.resolve_from_list(misses, &mut out).await;
        }

        // 3. One call per member still missing.
        if !misses.is_empty() {
            self.resolve_one_by_one(misses, &mut out).await;
        }
        out.report.missing = out
            .by_id
            .values()
            .filter(|r| matches!(r, Resolved::Missing { .. }))
            .count();
        out
    }

    /// Walks the member list until every id of `wanted` was seen, caching
    /// each page as it arrives (memory holds one page, not the group).
    /// Returns the ids still missing.
    async fn resolve_from_list(&self, wanted: Vec<UserId>, out: &mut Resolution) -> Vec<UserId> {
        let mut pending: HashSet<UserId> = wanted.iter().copied().collect();
        let mut walk = MemberWalk::new(self.upstream.as_ref(), Priority::Interactive);
        while !pending.is_empty() {
            match walk.next_page().await {
                Ok(Some(page)) => {
                    self.numbering.observe(&page);
                    for m in &page {
                        if pending.remove(&m.user_id) {
                            out.report.from_member_list += 1;
                            out.by_id.insert(
                                m.user_id,
                                Resolved::Found {
                                    member: m.clone(),
                                    source: NumberSource::MemberList,
                                },
                            );
                        }
                    }
                    self.cache_listed(&page).await;
                }
                Ok(None) => {
                    self.numbering.observe_listing(&walk);
                    break;
                }
                Err(e) if e.is_listing_refused() => {
                    self.note_listing_refused(&e);
                    break;
                }
                Err(e) => {
                    // Pages read before the failure are as good as any.
                    tracing::warn!(error = %e, "member list failed; falling back to per-member calls");
                    break;
                }
            }
        }
        out.report.member_list_pages += walk.pages();
        wanted
            .into_iter()
            .filter(|id| pending.contains(id))
            .collect()
    }

    /// Caches members read from the member list, in batches, and keeps the
    /// near cache in step. True when the store took every one; a failure is
    /// logged and otherwise ignored (the numbers in hand are still right).
    pub(crate) async fn cache_listed(&self, members: &[Member]) -> bool {
        if !self.enabled || members.is_empty() {
            return true;
        }
        let now = self.clock.now_ms();
        let records: Vec<CachedMember> = members
            .iter()
            .map(|member| CachedMember {
                member: member.clone(),
                cached_at: now,
                updated_at: now,
            })
            .collect();
        for chunk in records.chunks(WRITE_BATCH) {
            if let Err(e) = self.store.put_members(chunk, self.ttl).await {
                tracing::warn!(error = %e, members = chunk.len(), "could not cache members from the member list");
                return false;
            }
            // This process skips its own change announcements: keep its
            // near cache in step here, for the members it holds (a walk
            // reads far more members than were wanted; see
            // `NearCache::refresh`).
            chunk.iter().for_each(|m| self.near().refresh(m));
        }
        true
    }

    /// Per-member calls for `ids`, at most `API_CONCURRENCY` at once (the
    /// budget would bound them anyway; this keeps the task count small too).
    async fn resolve_one_by_one(self: &Arc<Self>, ids: Vec<UserId>, out: &mut Resolution) {
        out.report.member_calls += ids.len();
        let gate = Arc::new(Semaphore::new(self.budget.concurrency()));
        let mut tasks = JoinSet::new();
        for id in ids.iter().copied() {
            let (cache, gate) = (Arc::clone(self), Arc::clone(&gate));
            tasks.spawn(async move {
                let _slot = gate.acquire_owned().await;
                (id, cache.fetch_shared(id).await)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((id, result)) = joined else {
                // A panicked task: its id is reported missing below.
                continue;
            };
            match result {
                Ok(cached) => {
                    out.report.from_member_calls += 1;
                    out.by_id.insert(
                        id,
                        Resolved::Found {
                            member: cached.member.member.clone(),
                            source: NumberSource::MemberCall,
                        },
                    );
                }
                Err(error) => {
                    if matches!(error, UpstreamError::NotMember { .. }) {
                        self.remember_not_member(id, &error);
                    }
                    out.by_id.insert(
                        id,
                        Resolved::Missing {
                            reason: missing_reason(&error),
                            error,
                        },
                    );
                }
            }
        }
        for id in ids {
            out.by_id.entry(id).or_insert_with(|| {
                let error = UpstreamError::Transport("member fetch was interrupted".into());
                Resolved::Missing {
                    reason: missing_reason(&error),
                    error,
                }
            });
        }
    }

    fn known_not_member(&self, id: UserId) -> Option<UpstreamError> {
        self.negative.get(&id)
    }

    fn remember_not_member(&self, id: UserId, error: &UpstreamError) {
        self.negative.insert(id, error.clone());
    }
}
