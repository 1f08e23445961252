//! Talking to the Zsxq API (SPEC §2).
//!
//! - `client.rs`: HTTP, headers, signature, retries (where the 1059 retry is).
//! - `budget.rs`: the process-wide rate limit, concurrency and priority.
//! - `fleet.rs`: the fleet-wide share of that rate, in Redis, for several
//!   replicas.
//! - `refusal.rs`: token protection — the fleet stops calling during a 1059
//!   storm and while the token is rejected.
//! - `device.rs`: the installation's device id (`X-Aduid`).
//! - `wire.rs`: the upstream's JSON and envelope decoding.
//! - `error.rs`: typed failures with the upstream's meaning.
//!
//! The rest of the code holds an `Arc<dyn Upstream>` and the helpers below,
//! which turn paged endpoints into whole answers — or a loud error, never a
//! silently short list.

pub mod budget;
pub mod client;
pub mod device;
pub mod error;
pub mod fleet;
pub mod metrics;
pub mod refusal;
pub mod wire;

use std::collections::HashSet;

use async_trait::async_trait;

pub use budget::{Budget, Priority};
pub use client::ZsxqClient;
pub use error::UpstreamError;
pub use wire::{Camp, CheckinStatistics, RankingRow};

use crate::domain::{CheckinId, Member, UserId, parse_zsxq_time_ms};

/// Which camps to list (`scope` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampScope {
    Ongoing,
    Over,
    Closed,
}

impl CampScope {
    pub const ALL: [CampScope; 3] = [CampScope::Ongoing, CampScope::Over, CampScope::Closed];

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "ongoing" => Some(Self::Ongoing),
            "over" => Some(Self::Over),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ongoing => "ongoing",
            Self::Over => "over",
            Self::Closed => "closed",
        }
    }
}

/// Largest member-list page the upstream serves.
pub const MEMBER_PAGE: u32 = 200;

/// Safety stop for paging loops: a ranking or member list longer than this
/// many pages means the upstream is looping, not that the group is huge.
const MAX_PAGES: usize = 5_000;

/// The upstream calls the product makes.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// `GET /v2/groups/{gid}/members/{uid}/summary` → the member.
    async fn member_summary(&self, id: UserId, priority: Priority)
    -> Result<Member, UpstreamError>;

    /// `GET /v2/groups/{gid}/members/{uid}` → the member (same core fields;
    /// the summary is preferred, this is the fallback some clients use).
    async fn member(&self, id: UserId, priority: Priority) -> Result<Member, UpstreamError>;

    /// One page of the documented member list, `GET
    /// /v2/groups/{gid}/members?count=…&sort=join_time&order=desc&filter=joined`:
    /// members who joined at or before `end_time` (the upstream's time format,
    /// inclusive), newest first, at most `count` (≤ 200). `None` starts at
    /// the newest member. See [`MemberWalk`] for paging through it.
    async fn member_list_page(
        &self,
        end_time: Option<&str>,
        count: u32,
        priority: Priority,
    ) -> Result<Vec<Member>, UpstreamError>;

    /// `GET /v2/groups/{gid}/checkins/{cid}/statistics`: how many joined the
    /// camp and how many checked in at least once — what a ranking read
    /// whole must add up to.
    async fn camp_statistics(
        &self,
        checkin: CheckinId,
        priority: Priority,
    ) -> Result<wire::CheckinStatistics, UpstreamError>;

    /// `GET /v2/groups/{gid}/checkins?scope=…&count=…`.
    async fn camps(
        &self,
        scope: CampScope,
        count: u32,
        priority: Priority,
    ) -> Result<Vec<Camp>, UpstreamError>;

    /// One page of a camp's accumulated ranking, rows after position `index`.
    async fn ranking_page(
        &self,
        checkin: CheckinId,
        index: u64,
        priority: Priority,
    ) -> Result<wire::RankingPage, UpstreamError>;
}

/// Pages through the documented member list, newest member first, one
/// page per [`MemberWalk::next_page`], so a caller writes each page before
/// asking for the next and memory does not grow with the group.
///
/// The list has no `has_more` and no page token: the next page is asked with
/// `end_time` = the last row's `join_time`. That bound is inclusive and
/// several members can share one millisecond, so:
/// - rows at the boundary millisecond come again on the next page; they are
///   dropped by `user_id` (only ids of that one millisecond are kept, since
///   no other row can repeat in a descending walk);
/// - a full page whose rows all share the boundary millisecond cannot move
///   the cursor; the walk steps one millisecond back rather than loop, and
///   records that members of that millisecond beyond one page may be missing
///   ([`MemberWalk::complete`] is then false);
/// - a page shorter than `count` is the last one;
/// - a row newer than the cursor, or a last row whose time cannot be read,
///   means the upstream is not paging as documented: an error, never a
///   guess.
///
/// Listing refusals (11507/1006/1030) come back as errors for the caller to
/// fall back on. The facts are in docs/UPSTREAM.md.
pub struct MemberWalk<'a> {
    api: &'a dyn Upstream,
    priority: Priority,
    cursor: Option<Cursor>,
    /// Ids already handed out whose join time is the cursor's millisecond.
    boundary: HashSet<UserId>,
    pages: usize,
    members: u64,
    /// Of `members`, those with a number.
    numbered: u64,
    ended: bool,
    /// Milliseconds the walk had to step over with a full page in hand.
    skipped: Vec<String>,
}

/// Where the next member-list page ends.
#[derive(Debug, Clone)]
struct Cursor {
    /// Sent as `end_time`, in the upstream's own format.
    text: String,
    ms: i64,
}

impl<'a> MemberWalk<'a> {
    pub fn new(api: &'a dyn Upstream, priority: Priority) -> Self {
        Self {
            api,
            priority,
            cursor: None,
            boundary: HashSet::new(),
            pages: 0,
            members: 0,
            numbered: 0,
            ended: false,
            skipped: Vec::new(),
        }
    }

    /// The next members not handed out before; `None` once the list ended.
    /// A page can come back empty (all repeats) while the walk goes on.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Member>>, UpstreamError> {
        if self.ended {
            return Ok(None);
        }
        if self.pages >= MAX_PAGES {
            return Err(UpstreamError::Malformed("member list did not end".into()));
        }
        let end_time = self.cursor.as_ref().map(|c| c.text.as_str());
        let raw = self
            .api
            .member_list_page(end_time, MEMBER_PAGE, self.priority)
            .await?;
        self.pages += 1;
        let full = raw.len() >= MEMBER_PAGE as usize;
        let last = match raw.last() {
            None => None,
            Some(m) => Some(Cursor {
                ms: parse_zsxq_time_ms(&m.join_time).ok_or_else(|| {
                    UpstreamError::Malformed(format!(
                        "member list row without a readable join_time: {:?}",
                        m.join_time
                    ))
                })?,
                text: m.join_time.clone(),
            }),
        };
        let mut fresh = Vec::with_capacity(raw.len());
        let mut on_page = HashSet::with_capacity(raw.len());
        for m in raw {
            let ms = m.join_time_ms();
            if let Some(c) = &self.cursor {
                if ms > c.ms {
                    return Err(UpstreamError::Malformed(format!(
                        "member list answered a member newer than end_time {}",
                        c.text
                    )));
                }
                if ms == c.ms && self.boundary.contains(&m.user_id) {
                    continue;
                }
            }
            if on_page.insert(m.user_id) {
                fresh.push(m);
            }
        }
        self.members += fresh.len() as u64;
        self.numbered += fresh.iter().filter(|m| m.number.is_some()).count() as u64;
        match last {
            Some(last) if full => {
                let stuck = self.cursor.as_ref().is_some_and(|c| c.ms == last.ms);
                if stuck {
                    // A whole page inside one millisecond: step over it.
                    self.skipped.push(last.text.clone());
                    self.boundary.clear();
                    self.cursor = Some(Cursor {
                        text: zsxq_time_before(&last.text).ok_or_else(|| {
                            UpstreamError::Malformed(format!(
                                "cannot step back from join_time {:?}",
                                last.text
                            ))
                        })?,
                        ms: last.ms - 1,
                    });
                } else {
                    self.boundary = fresh
                        .iter()
                        .filter(|m| m.join_time_ms() == last.ms)
                        .map(|m| m.user_id)
                        .collect();
                    self.cursor = Some(last);
                }
            }
            _ => self.ended = true,
        }
        Ok(Some(fresh))
    }

    /// Upstream pages read so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Distinct members handed out so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Of [`MemberWalk::members`], those with a number.
    pub fn numbered(&self) -> u64 {
        self.numbered
    }

    /// The list ended and nobody can have been skipped.
    pub fn complete(&self) -> bool {
        self.ended && self.skipped.is_empty()
    }

    /// Join times (upstream format) at which more members joined than one
    /// page holds, so some of them may not have been seen.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// The upstream-format time one millisecond before `raw`, in `raw`'s offset.
fn zsxq_time_before(raw: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(raw))
        .ok()?;
    let before = t.checked_sub_signed(chrono::TimeDelta::milliseconds(1))?;
    Some(before.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string())
}

/// A camp's whole ranking. Pages continue from the last row's `rankings`
/// and only an empty page ends it: a page shorter than the others is not the
/// last (the ranking can leave out a participant it does not show). With
/// `checkins` = the camp's `checkined_count` (from
/// [`Upstream::camp_statistics`], for a camp that can no longer change) the
/// read also stops once the rows' days add up to exactly that: every further
/// row would add at least one day, so none can follow, and the final empty
/// page is saved.
/// Any failing page fails the whole ranking: a refund list built from a
/// partial ranking is wrong (docs/UPSTREAM.md).
pub async fn full_ranking(
    api: &dyn Upstream,
    checkin: CheckinId,
    checkins: Option<u64>,
    priority: Priority,
) -> Result<Vec<RankingRow>, UpstreamError> {
    read_ranking(api, checkin, 0, Stop::DaysAddUpTo(checkins), priority)
        .await
        .map(|slice| slice.rows)
}

/// Rows of a ranking after position `after`, read page by page until at
/// least `want` rows are in hand or the ranking ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankingSlice {
    /// In ranking order, each participant once; may hold more than `want`
    /// rows (whole upstream pages are kept).
    pub rows: Vec<RankingRow>,
    /// The ranking ended within these rows (an empty page came): nothing
    /// comes after them.
    pub ended: bool,
}

/// Reads a camp's ranking from position `after` (0 = the start) until `want`
/// rows are collected or the ranking ends, so a page of a refund list costs
/// the one or two upstream pages it covers rather than the whole ranking.
/// The same paging rules as [`full_ranking`]; any failing page fails it all.
pub async fn ranking_slice(
    api: &dyn Upstream,
    checkin: CheckinId,
    after: u64,
    want: usize,
    priority: Priority,
) -> Result<RankingSlice, UpstreamError> {
    read_ranking(api, checkin, after, Stop::Want(want), priority).await
}

/// When a ranking read may stop before the empty page.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Once at least this many rows are in hand (the ranking goes on).
    Want(usize),
    /// Once the rows' days add up to exactly this: all the camp has.
    DaysAddUpTo(Option<u64>),
}

async fn read_ranking(
    api: &dyn Upstream,
    checkin: CheckinId,
    after: u64,
    stop: Stop,
    priority: Priority,
) -> Result<RankingSlice, UpstreamError> {
    let mut rows: Vec<RankingRow> = Vec::new();
    let mut seen: HashSet<UserId> = HashSet::new();
    let mut index = after;
    let mut days: u64 = 0;
    for _ in 0..MAX_PAGES {
        match stop {
            Stop::Want(want) if rows.len() >= want => {
                return Ok(RankingSlice { rows, ended: false });
            }
            Stop::DaysAddUpTo(Some(all)) if days == all => {
                return Ok(RankingSlice { rows, ended: true });
            }
            _ => {}
        }
        let page = api
            .ranking_page(checkin, index, priority)
            .await?
            .ranking_list;
        if page.is_empty() {
            return Ok(RankingSlice { rows, ended: true });
        }
        let next = page.last().map(|r| r.rankings).unwrap_or(index);
        let before = rows.len();
        for row in page {
            if seen.insert(row.user.user_id) {
                days += u64::from(row.checkined_days);
                rows.push(row);
            }
        }
        if next <= index || rows.len() == before {
            return Err(UpstreamError::Malformed(format!(
                "ranking of {checkin} did not advance past index {index}"
            )));
        }
        index = next;
    }
    Err(UpstreamError::Malformed(format!(
        "ranking of {checkin} did not end"
    )))
}
