//! Refund lists: after a check-in camp, every participant with their member
//! number, days checked in and whether they qualify, which is what an
//! operator needs to hand deposits back.
//!
//! A list is a camp's ranking joined with member numbers:
//! - **The camp** (title, status, required days) comes from the camps list,
//!   kept in process for [`CAMPS_TTL`] per scope, so deciding whether a
//!   ranking may be cached costs no call each time.
//! - **The ranking** is read whole (a partial ranking gives a wrong list, so
//!   any failing page fails the request — an error, never a short list) and
//!   kept in the store together with its camp: the ranking of a finished
//!   camp (`over`, `closed`) does not change, so it lives `CACHE_TTL` and a
//!   list can be re-generated or exported with no upstream call at all, even
//!   from a freshly started process (the CLI) or another replica. An ongoing
//!   camp's ranking is kept only [`ONGOING_RANKING_TTL`], long enough for
//!   "view, then export" and no longer.
//! - **The numbers** come from [`MemberCache::resolve_many`]: one batched
//!   store read, the member list for the misses, per-member calls for the
//!   rest. A number that cannot be had marks its row with the reason and the
//!   list `complete: false`.
//!
//! One list per camp is built at a time (a per-camp turn): an operator who
//! clicks twice, or views and exports at once, waits for the first build and
//! then finds everything cached, instead of paying every upstream call twice.
//! Exports (`export.rs`) render a [`RefundList`]; they never fetch anything.
//!
//! A list is judged by a [`Rule`] (`rules.rs`): required days less a grace,
//! counted on the accumulated or the continuous ranking. A continuous list
//! reads both rankings — the accumulated one proves who took part (its days
//! add up to the camp's check-ins), the continuous one gives their days —
//! and each is cached under its own type, so one is never served as the
//! other. `ranking_reads` shows which rankings were read and from where.
//!
//! The operator's refund marks (`marks.rs`) are read from the store on every
//! build, so a mark shows at once.

pub mod export;
mod list;
pub mod marks;
pub mod rules;
pub mod turns;

use list::ranking_checkins;
pub use list::{RankingRead, RankingSource, RefundList, RefundPage, RefundRow, Statistics};
pub use rules::{GraceDays, RequiredDays, Rule};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::MemberCache;
use crate::cache::batch::{Resolution, Resolved};
use crate::domain::{
    CheckinId, MemberNumber, NO_NUMBER_ASSIGNED, RankingType, UserId, iso_utc, parse_zsxq_time_ms,
};
use crate::store::{RankingKey, StoredRanking};
use crate::upstream::{
    self, Camp, CampScope, CheckinStatistics, Priority, RankingRow, UpstreamError,
};

/// How long a scope's camps list is reused. Camps change status rarely; a
/// minute keeps the camps page and the refund list from asking every time.
pub const CAMPS_TTL: Duration = Duration::from_secs(60);

/// A camp that is not in a cached camps list is looked for again in lists
/// older than this, so a camp created a moment ago is found without letting
/// every request for an unknown id cost three calls.
const CAMPS_RECHECK_AFTER: Duration = Duration::from_secs(10);

/// How long an ongoing camp's ranking is kept: its days still change.
pub const ONGOING_RANKING_TTL: Duration = Duration::from_secs(10);

/// Unknown camp ids remembered at most; past it the oldest are forgotten.
pub const UNKNOWN_CAMPS_KEPT: u64 = 10_000;

/// Camps asked for per scope (the upstream's largest page).
const CAMPS_FETCH_COUNT: u32 = 100;

/// Format of the cached ranking; a snapshot of another version is ignored
/// (fetched again) rather than misread.
const SNAPSHOT_VERSION: u32 = 2;

/// Where a camp is looked for, in order: refund lists are made for finished
/// camps, so `over` first.
const LOOKUP_ORDER: [CampScope; 3] = [CampScope::Over, CampScope::Closed, CampScope::Ongoing];

/// Why no list could be built. Everything else ends in a list, complete or
/// explicitly not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefundError {
    #[error(
        "没有找到打卡训练营 {0} (no check-in camp with id {0}; GET /api/camps lists the camps)"
    )]
    CampNotFound(CheckinId),
    /// The camps list or the ranking could not be read whole.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// A camp's whole ranking of one type at one moment, with the camp it
/// belongs to: what the store keeps under `zsxq:ranking:{checkin_id}`
/// (accumulated) or its continuous key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankingSnapshot {
    pub version: u32,
    /// Which ranking the rows are; checked on reading, beside the key, so a
    /// snapshot of one type is never used as the other. Snapshots written
    /// before the field existed are accumulated ones.
    #[serde(default)]
    pub ranking_type: RankingType,
    pub camp: Camp,
    pub rows: Vec<RankingRow>,
    /// The camp's own counts, read with the ranking, which the ranking must
    /// add up to; `None` when they could not be read (the list then cannot
    /// be proven complete) or for a ranking kept by a page read.
    #[serde(default)]
    pub statistics: Option<CheckinStatistics>,
    /// Why the statistics are missing, for the list's reasons.
    #[serde(default)]
    pub statistics_error: Option<String>,
    /// When the ranking was read (unix ms).
    pub fetched_at: i64,
}

/// A scope's camps and when they were read.
type CachedCamps = (Instant, Arc<Vec<Camp>>);

/// Builds refund lists; one per process, shared by the HTTP API and the CLI.
pub struct RefundService {
    cache: Arc<MemberCache>,
    /// Camps per scope with when they were read. A Tokio mutex held across
    /// the upstream call on purpose: concurrent requests for a cold scope
    /// wait for one call instead of making one each.
    camps: tokio::sync::Mutex<HashMap<&'static str, CachedCamps>>,
    /// One build per camp at a time (see the module doc); pruned as turns
    /// end (`turns.rs`).
    turns: turns::Turns<CheckinId>,
    /// Camp ids no camps list holds, remembered for `NEGATIVE_CACHE_TTL`
    /// like unknown members: asking for one again costs no camps-list call.
    unknown_camps: moka::sync::Cache<CheckinId, ()>,
    /// Whether the store keeps marks over its restart (`/readyz`).
    persistence: marks::PersistenceCheck,
}

impl RefundService {
    pub fn new(cache: Arc<MemberCache>) -> Arc<Self> {
        Arc::new(Self {
            camps: tokio::sync::Mutex::new(HashMap::new()),
            turns: turns::Turns::default(),
            unknown_camps: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_CAMPS_KEPT)
                .time_to_live(cache.negative_ttl().max(Duration::from_millis(1)))
                .build(),
            cache,
            persistence: marks::PersistenceCheck::default(),
        })
    }

    pub fn cache(&self) -> &Arc<MemberCache> {
        &self.cache
    }

    /// Camp ids held in memory now (turns plus remembered unknown camps):
    /// bounded however many distinct ids clients ask for.
    pub fn camp_ids_held(&self) -> u64 {
        self.unknown_camps.run_pending_tasks();
        self.turns.len() as u64 + self.unknown_camps.entry_count()
    }

    /// The camps of one scope, newest first; reused for [`CAMPS_TTL`].
    pub async fn camps(&self, scope: CampScope) -> Result<Arc<Vec<Camp>>, UpstreamError> {
        self.camps_within(scope, CAMPS_TTL).await
    }

    async fn camps_within(
        &self,
        scope: CampScope,
        max_age: Duration,
    ) -> Result<Arc<Vec<Camp>>, UpstreamError> {
        let mut cached = self.camps.lock().await;
        if let Some((at, camps)) = cached.get(scope.as_str())
            && at.elapsed() < max_age
        {
            return Ok(Arc::clone(camps));
        }
        let mut camps = self
            .cache
            .upstream()
            .camps(scope, CAMPS_FETCH_COUNT, Priority::Interactive)
            .await?;
        // The upstream answers newest first; sorting again (stably) keeps
        // that promise even if it ever does not.
        camps.sort_by_key(|c| {
            std::cmp::Reverse(parse_zsxq_time_ms(&c.create_time).unwrap_or(i64::MIN))
        });
        let camps = Arc::new(camps);
        cached.insert(scope.as_str(), (Instant::now(), Arc::clone(&camps)));
        Ok(camps)
    }

    /// Finds a camp in the camps lists (over, closed, then ongoing).
    pub async fn camp(&self, checkin: CheckinId) -> Result<Camp, RefundError> {
        if self.unknown_camps.contains_key(&checkin) {
            return Err(RefundError::CampNotFound(checkin));
        }
        for max_age in [CAMPS_TTL, CAMPS_RECHECK_AFTER] {
            for scope in LOOKUP_ORDER {
                let camps = self.camps_within(scope, max_age).await?;
                if let Some(camp) = camps.iter().find(|c| c.checkin_id == checkin) {
                    return Ok(camp.clone());
                }
            }
        }
        self.unknown_camps.insert(checkin, ());
        Err(RefundError::CampNotFound(checkin))
    }

    /// The whole refund list of a camp, judged by `rule`.
    pub async fn refund_list(
        &self,
        checkin: CheckinId,
        rule: impl Into<Rule>,
    ) -> Result<RefundList, RefundError> {
        let rule = rule.into();
        let _turn = self.turns.take(checkin).await;
        let judged = self.judged_ranking(checkin, rule.ranking_type()).await?;
        let snapshot = &judged.accumulated;
        let ids: Vec<UserId> = judged.rows.iter().map(|r| r.user.user_id).collect();
        let resolution = self.cache.resolve_many(&ids).await;
        let mut refund_list = rows_of(&judged.rows, &resolution, rule, &judged.no_streak);
        let marks = self.marks_for_list(checkin).await;
        marks::annotate(&mut refund_list, marks.as_ref());
        let mut incomplete_reasons = reconcile(snapshot);
        if marks.is_none() {
            incomplete_reasons.push(marks::MARKS_UNREAD.to_string());
        }
        if !judged.no_streak.is_empty() {
            incomplete_reasons.push(no_streak_reason(judged.no_streak.len()));
        }
        incomplete_reasons.extend(distrust_repeated_numbers(&mut refund_list));
        let missing_count = refund_list
            .iter()
            .filter(|r| r.planet_number.is_none())
            .count();
        let unassigned = refund_list
            .iter()
            .filter(|r| r.number_missing_reason.as_deref() == Some(NO_NUMBER_ASSIGNED))
            .count();
        if missing_count > unassigned {
            incomplete_reasons.push(format!(
                "{} 人的编号未能取到 ({} participants' numbers could not be had; see number_missing_reason)",
                missing_count - unassigned,
                missing_count - unassigned
            ));
        }
        // Members without an assigned number are not a gap in the list: the
        // number does not exist. Their rows say so, and when the whole group
        // has none the statistics do.
        let statistics = Statistics::of(&refund_list, rule)
            .with_camp(snapshot.statistics.as_ref(), &snapshot.rows);
        Ok(RefundList {
            checkin_id: snapshot.camp.checkin_id,
            title: snapshot.camp.title.clone(),
            status: snapshot.camp.status.clone(),
            checkin_days: snapshot.camp.checkin_days,
            required_days: rule.required().get(),
            grace_days: rule.grace().get(),
            ranking_type: rule.ranking_type(),
            rule,
            complete: incomplete_reasons.is_empty(),
            incomplete_reasons,
            missing_count,
            statistics,
            refund_list,
            ranking_source: judged.source(),
            ranking_reads: judged.reads,
            lookup: resolution.report,
            generated_at: iso_utc(self.cache.now_ms()),
        })
    }

    /// One page: the rows after ranking position `after`, at most
    /// `page_size`. An accumulated page uses the cached whole ranking when
    /// there is one; otherwise it reads only the upstream ranking pages this
    /// page covers, and resolves only this page's numbers. A continuous page
    /// needs both whole rankings (a participant's streak can be anywhere in
    /// the continuous one), read once and then cached.
    pub async fn refund_page(
        &self,
        checkin: CheckinId,
        rule: impl Into<Rule>,
        after: u64,
        page_size: usize,
    ) -> Result<RefundPage, RefundError> {
        let rule = rule.into();
        let page_size = page_size.max(1);
        let _turn = self.turns.take(checkin).await;
        let cached = match rule.ranking_type() {
            RankingType::Accumulated => self
                .cached_ranking(checkin, RankingType::Accumulated)
                .await
                .map(|s| Judged::accumulated(s, RankingSource::Cache)),
            RankingType::Continuous => Some(
                self.judged_ranking(checkin, RankingType::Continuous)
                    .await?,
            ),
        };
        let (camp, mut rows, no_streak, reads) = match cached {
            Some(judged) => {
                let start = judged
                    .rows
                    .iter()
                    .position(|r| r.rankings > after)
                    .unwrap_or(judged.rows.len());
                let end = judged.rows.len().min(start + page_size + 1);
                let rows = judged.rows[start..end].to_vec();
                (
                    judged.accumulated.camp,
                    rows,
                    judged.no_streak,
                    judged.reads,
                )
            }
            None => {
                let camp = self.camp(checkin).await?;
                let slice = upstream::ranking_slice(
                    self.cache.upstream().as_ref(),
                    checkin,
                    RankingType::Accumulated,
                    after,
                    page_size + 1,
                    Priority::Interactive,
                )
                .await?;
                if after == 0 && slice.ended {
                    // This page read the whole ranking: keep it like a full
                    // list would.
                    let whole =
                        self.snapshot(camp.clone(), RankingType::Accumulated, slice.rows.clone());
                    self.keep(&whole).await;
                }
                let read = RankingRead {
                    ranking_type: RankingType::Accumulated,
                    source: RankingSource::Upstream,
                };
                (camp, slice.rows, Vec::new(), vec![read])
            }
        };
        let has_more = rows.len() > page_size;
        rows.truncate(page_size);
        let ids: Vec<UserId> = rows.iter().map(|r| r.user.user_id).collect();
        let resolution = self.cache.resolve_many(&ids).await;
        let mut refund_list = rows_of(&rows, &resolution, rule, &no_streak);
        let marks = self.marks_for_list(checkin).await;
        marks::annotate(&mut refund_list, marks.as_ref());
        Ok(RefundPage {
            checkin_id: camp.checkin_id,
            title: camp.title,
            status: camp.status,
            required_days: rule.required().get(),
            grace_days: rule.grace().get(),
            ranking_type: rule.ranking_type(),
            index: after,
            page_size,
            complete: refund_list.iter().all(|r| {
                r.planet_number.is_some()
                    && r.days_missing_reason.is_none()
                    && r.refund_status.is_some()
            }),
            has_more,
            next_index: rows.last().map_or(after, |r| r.rankings),
            page_statistics: Statistics::of(&refund_list, rule),
            refund_list,
            ranking_source: source_of(&reads),
            ranking_reads: reads,
            lookup: resolution.report,
        })
    }

    /// The rows a list of `kind` is judged on: the accumulated ranking
    /// whole, and for a continuous list each participant's streak in place
    /// of their total (`rules::with_streaks`).
    async fn judged_ranking(
        &self,
        checkin: CheckinId,
        kind: RankingType,
    ) -> Result<Judged, RefundError> {
        let (accumulated, source) = self.ranking(checkin).await?;
        let mut judged = Judged::accumulated(accumulated, source);
        if kind == RankingType::Continuous {
            let (continuous, source) = self.continuous_ranking(&judged.accumulated.camp).await?;
            let (rows, no_streak) = rules::with_streaks(&judged.accumulated.rows, &continuous.rows);
            judged.rows = rows;
            judged.no_streak = no_streak;
            judged.reads.push(RankingRead {
                ranking_type: RankingType::Continuous,
                source,
            });
        }
        Ok(judged)
    }

    /// The camp's whole accumulated ranking with its statistics: cached, or
    /// read whole and cached.
    async fn ranking(
        &self,
        checkin: CheckinId,
    ) -> Result<(RankingSnapshot, RankingSource), RefundError> {
        if let Some(snapshot) = self.cached_ranking(checkin, RankingType::Accumulated).await {
            return Ok((snapshot, RankingSource::Cache));
        }
        let camp = self.camp(checkin).await?;
        let api = self.cache.upstream();
        // The camp's counts first: for a finished camp they also tell when
        // the ranking is whole, which saves reading its final empty page.
        let (statistics, statistics_error) =
            match api.camp_statistics(checkin, Priority::Interactive).await {
                Ok(s) => (Some(s), None),
                Err(e) => {
                    tracing::warn!(error = %e, %checkin, "could not read the camp's statistics");
                    (None, Some(e.to_string()))
                }
            };
        let checkins = statistics
            .filter(|_| is_finished(&camp.status))
            .map(|s| s.checkined_count);
        let rows = upstream::full_ranking(
            api.as_ref(),
            checkin,
            RankingType::Accumulated,
            checkins,
            Priority::Interactive,
        )
        .await?;
        let mut snapshot = self.snapshot(camp, RankingType::Accumulated, rows);
        snapshot.statistics = statistics;
        snapshot.statistics_error = statistics_error;
        self.keep(&snapshot).await;
        Ok((snapshot, RankingSource::Upstream))
    }

    /// The camp's whole continuous ranking: cached, or read whole (to its
    /// empty page: streaks add up to nothing the camp counts) and cached.
    async fn continuous_ranking(
        &self,
        camp: &Camp,
    ) -> Result<(RankingSnapshot, RankingSource), RefundError> {
        let checkin = camp.checkin_id;
        if let Some(snapshot) = self.cached_ranking(checkin, RankingType::Continuous).await {
            return Ok((snapshot, RankingSource::Cache));
        }
        let rows = upstream::full_ranking(
            self.cache.upstream().as_ref(),
            checkin,
            RankingType::Continuous,
            None,
            Priority::Interactive,
        )
        .await?;
        let snapshot = self.snapshot(camp.clone(), RankingType::Continuous, rows);
        self.keep(&snapshot).await;
        Ok((snapshot, RankingSource::Upstream))
    }

    fn snapshot(&self, camp: Camp, kind: RankingType, rows: Vec<RankingRow>) -> RankingSnapshot {
        RankingSnapshot {
            version: SNAPSHOT_VERSION,
            ranking_type: kind,
            camp,
            rows,
            statistics: None,
            statistics_error: None,
            fetched_at: self.cache.now_ms(),
        }
    }

    /// The cached ranking of `kind`, if any; an unreadable one counts as
    /// absent (it is fetched again and overwritten).
    async fn cached_ranking(
        &self,
        checkin: CheckinId,
        kind: RankingType,
    ) -> Option<RankingSnapshot> {
        if !self.cache.enabled() {
            return None;
        }
        let bytes = match self
            .cache
            .store()
            .get_ranking(RankingKey { checkin, kind })
            .await
        {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!(error = %e, %checkin, "could not read the cached ranking");
                return None;
            }
        };
        match serde_json::from_slice::<RankingSnapshot>(&bytes) {
            Ok(s)
                if s.version == SNAPSHOT_VERSION
                    && s.camp.checkin_id == checkin
                    && s.ranking_type == kind =>
            {
                Some(s)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, %checkin, "cached ranking is unreadable; fetching it again");
                None
            }
        }
    }

    /// Caches a ranking under its type: finished camps for `CACHE_TTL`,
    /// ongoing ones for [`ONGOING_RANKING_TTL`]. A store failure is logged
    /// and ignored.
    async fn keep(&self, snapshot: &RankingSnapshot) {
        if !self.cache.enabled() {
            return;
        }
        // Never longer than CACHE_TTL: every key of ours lives at most that.
        let ttl = if is_finished(&snapshot.camp.status) {
            self.cache.ttl()
        } else {
            ONGOING_RANKING_TTL.min(self.cache.ttl())
        };
        let bytes = match serde_json::to_vec(snapshot) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "could not encode a ranking");
                return;
            }
        };
        if let Err(e) = self
            .cache
            .store()
            .put_ranking(&StoredRanking {
                key: RankingKey {
                    checkin: snapshot.camp.checkin_id,
                    kind: snapshot.ranking_type,
                },
                bytes: &bytes,
                ttl,
            })
            .await
        {
            tracing::warn!(error = %e, checkin = %snapshot.camp.checkin_id, "could not cache the ranking");
        }
    }
}

/// The rankings a list is judged on.
struct Judged {
    /// The accumulated ranking with the camp's statistics: who took part.
    accumulated: RankingSnapshot,
    /// The rows judged: the accumulated ones, or with streaks as days.
    rows: Vec<RankingRow>,
    /// Participants the continuous ranking does not hold.
    no_streak: Vec<UserId>,
    reads: Vec<RankingRead>,
}

impl Judged {
    fn accumulated(snapshot: RankingSnapshot, source: RankingSource) -> Self {
        Self {
            rows: snapshot.rows.clone(),
            accumulated: snapshot,
            no_streak: Vec::new(),
            reads: vec![RankingRead {
                ranking_type: RankingType::Accumulated,
                source,
            }],
        }
    }

    fn source(&self) -> RankingSource {
        source_of(&self.reads)
    }
}

/// `cache` when every ranking read came from the cache.
fn source_of(reads: &[RankingRead]) -> RankingSource {
    if reads.iter().all(|r| r.source == RankingSource::Cache) {
        RankingSource::Cache
    } else {
        RankingSource::Upstream
    }
}

fn no_streak_reason(count: usize) -> String {
    format!(
        "{count} 人不在连续打卡榜中，连续天数未知，见 days_missing_reason ({count} participants \
         are not in the continuous ranking; their streaks are unknown, see days_missing_reason)"
    )
}

/// Whether a camp's ranking can no longer change.
pub fn is_finished(status: &str) -> bool {
    matches!(status, "over" | "closed")
}

/// Why a ranking does not prove itself whole: its days must add up to the
/// check-ins the camp's statistics count (`checkined_count`), the sum over
/// every participant of the accumulated ranking.
fn reconcile(snapshot: &RankingSnapshot) -> Vec<String> {
    let read = ranking_checkins(&snapshot.rows);
    let people = snapshot.rows.len();
    match &snapshot.statistics {
        Some(s) if s.checkined_count == read => Vec::new(),
        Some(s) => vec![format!(
            "排行榜 {people} 人的打卡天数合计 {read}，训练营统计为 {} 次打卡，名单可能缺人 \
             (the ranking's {people} participants add up to {read} check-in days, the camp's \
             statistics count {} check-ins; someone may be missing)",
            s.checkined_count, s.checkined_count
        )],
        None => vec![format!(
            "未能读取训练营统计，无法核对人数 (the camp's statistics could not be read, so the \
             participant count cannot be checked: {})",
            snapshot.statistics_error.as_deref().unwrap_or("not read")
        )],
    }
}

/// A number on two rows is wrong on at least one of them, and nothing says
/// which: both rows lose it (with the reason), and the list says why.
fn distrust_repeated_numbers(rows: &mut [RefundRow]) -> Vec<String> {
    let mut seen: HashMap<MemberNumber, usize> = HashMap::new();
    for r in rows.iter() {
        if let Some(n) = r.planet_number {
            *seen.entry(n).or_default() += 1;
        }
    }
    let mut repeated: Vec<MemberNumber> = seen
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(n, _)| n)
        .collect();
    repeated.sort();
    for r in rows.iter_mut() {
        if let Some(n) = r.planet_number
            && repeated.contains(&n)
        {
            r.planet_number = None;
            r.number_missing_reason = Some(format!(
                "编号 {n} 同时出现在另一位参与者上，无法确认属于谁 (number {n} also appears on another participant; it cannot be trusted)"
            ));
        }
    }
    repeated
        .iter()
        .map(|n| format!("编号 {n} 出现了两次以上 (number {n} appears more than once)"))
        .collect()
}

/// Joins ranking rows with their resolved numbers, in ranking order, judged
/// by `rule`; the rows of `no_streak` have no known days.
fn rows_of(
    rows: &[RankingRow],
    resolution: &Resolution,
    rule: Rule,
    no_streak: &[UserId],
) -> Vec<RefundRow> {
    rows.iter()
        .map(|r| {
            let resolved = resolution.get(r.user.user_id);
            let member = resolved.and_then(Resolved::member);
            let nickname = match (&r.user.name, member) {
                (name, Some(m)) if name.trim().is_empty() => m.name.clone(),
                (name, _) => name.clone(),
            };
            let number_missing_reason = match resolved {
                Some(Resolved::Found { member, .. }) if member.number.is_none() => {
                    Some(NO_NUMBER_ASSIGNED.to_string())
                }
                Some(Resolved::Found { .. }) => None,
                Some(Resolved::Missing { reason, .. }) => Some(reason.clone()),
                None => Some("未能取到编号 (the number was not looked up)".to_string()),
            };
            let days_missing_reason = no_streak
                .contains(&r.user.user_id)
                .then(|| rules::NO_STREAK.to_string());
            RefundRow {
                planet_user_id: r.user.user_id,
                planet_number: member.and_then(|m| m.number),
                planet_nickname: nickname,
                planet_alias: r.user.alias.clone(),
                checkined_days: r.checkined_days,
                required_days: rule.required().get(),
                is_qualified: days_missing_reason.is_none() && rule.qualifies(r.checkined_days),
                number_missing_reason,
                days_missing_reason,
                refund_status: Some(crate::store::marks::RefundStatus::Pending),
                refund_note: None,
                refund_updated_at: None,
                position: r.rankings,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, days: u32, qualified: bool) -> RefundRow {
        RefundRow {
            planet_user_id: UserId::new(1).unwrap(),
            planet_number: MemberNumber::new(1),
            planet_nickname: name.into(),
            planet_alias: String::new(),
            checkined_days: days,
            required_days: 7,
            is_qualified: qualified,
            number_missing_reason: None,
            days_missing_reason: None,
            refund_status: None,
            refund_note: None,
            refund_updated_at: None,
            position: 1,
        }
    }

    #[test]
    fn statistics_round_the_rate_to_two_decimals_and_join_names_with_the_chinese_comma() {
        let rows = [
            row("青弦", 7, true),
            row("🐱猫猫", 3, false),
            row("Tom \"The Cat\" Li", 9, true),
        ];
        let s = Statistics::of(&rows, Rule::default());
        assert_eq!(s.total_count, 3);
        assert_eq!(s.qualified_count, 2);
        assert_eq!(s.unqualified_count, 1);
        assert_eq!(s.qualified_rate, 66.67);
        assert_eq!(s.qualified_names, "青弦、Tom \"The Cat\" Li");
        let empty = Statistics::of(&[], Rule::default());
        assert_eq!(
            (empty.qualified_rate, empty.qualified_names.as_str()),
            (0.0, "")
        );
    }

    #[test]
    fn a_number_on_two_rows_is_taken_from_both_and_named() {
        let mut rows = [row("a", 7, true), row("b", 3, false), row("c", 9, true)];
        rows[1].planet_number = MemberNumber::new(5);
        rows[2].planet_number = MemberNumber::new(1);
        let reasons = distrust_repeated_numbers(&mut rows);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("number 1 appears more than once"));
        assert_eq!(rows[0].planet_number, None);
        assert_eq!(rows[2].planet_number, None);
        assert!(
            rows[0]
                .number_missing_reason
                .as_deref()
                .is_some_and(|r| r.contains("number 1"))
        );
        assert_eq!(
            rows[1].planet_number,
            MemberNumber::new(5),
            "a unique number stays"
        );
        assert!(distrust_repeated_numbers(&mut rows).is_empty());
    }
}
