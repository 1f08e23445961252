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
pub mod refusal;
pub mod wire;

use std::collections::HashSet;
use std::ops::ControlFlow;

use async_trait::async_trait;

pub use budget::{Budget, Priority};
pub use client::ZsxqClient;
pub use error::UpstreamError;
pub use wire::{Camp, RankingRow};

use crate::domain::{CheckinId, Member, MemberNumber, UserId};

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

    /// One page of `GET /v2/groups/{gid}/members?sort=number`: members with a
    /// number above `after`, at most `count` (≤ 200).
    async fn member_list_page(
        &self,
        after: Option<MemberNumber>,
        count: u32,
        priority: Priority,
    ) -> Result<Vec<Member>, UpstreamError>;

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

/// The whole member list, 200 a call. A short page ends it (the upstream has
/// no `has_more`). Listing refusals (11507/1006/1030) come back as errors for
/// the caller to fall back on.
pub async fn all_members(
    api: &dyn Upstream,
    priority: Priority,
) -> Result<Vec<Member>, UpstreamError> {
    let mut members: Vec<Member> = Vec::new();
    walk_members(api, priority, |page| {
        members.extend_from_slice(page);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(members)
}

/// Pages through the member list, 200 a call, handing each page to `visit`
/// as it arrives; `visit` returns `Break` to stop early (a caller looking for
/// a few members need not read the rest). Returns how many pages were read.
/// Ends, and fails, exactly like [`all_members`].
pub async fn walk_members(
    api: &dyn Upstream,
    priority: Priority,
    mut visit: impl FnMut(&[Member]) -> ControlFlow<()> + Send,
) -> Result<usize, UpstreamError> {
    let mut after = None;
    for pages in 1..=MAX_PAGES {
        let page = api.member_list_page(after, MEMBER_PAGE, priority).await?;
        let short = page.len() < MEMBER_PAGE as usize;
        let last = page.last().map(|m| m.number);
        if visit(&page).is_break() {
            return Ok(pages);
        }
        match last {
            // A page that does not move forward would loop forever.
            Some(n) if !short && after.is_none_or(|a| n > a) => after = Some(n),
            _ => return Ok(pages),
        }
    }
    Err(UpstreamError::Malformed("member list did not end".into()))
}

/// A camp's whole ranking. Pages continue from the last row's `rankings`; a
/// short or empty page ends it. Any failing page fails the whole ranking: a
/// refund list built from a partial ranking is wrong (SPEC §2).
pub async fn full_ranking(
    api: &dyn Upstream,
    checkin: CheckinId,
    priority: Priority,
) -> Result<Vec<RankingRow>, UpstreamError> {
    ranking_slice(api, checkin, 0, usize::MAX, priority)
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
    /// The ranking ended within these rows: nothing comes after them.
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
    let mut rows: Vec<RankingRow> = Vec::new();
    let mut seen: HashSet<UserId> = HashSet::new();
    let mut index = after;
    let mut page_len = 0usize;
    for _ in 0..MAX_PAGES {
        if rows.len() >= want {
            return Ok(RankingSlice { rows, ended: false });
        }
        let page = api
            .ranking_page(checkin, index, priority)
            .await?
            .ranking_list;
        if page.is_empty() {
            return Ok(RankingSlice { rows, ended: true });
        }
        // "Short" is relative to the longest page seen, since the upstream's
        // page size is "about 21" rather than a documented constant.
        page_len = page_len.max(page.len());
        let short = page.len() < page_len;
        let next = page.last().map(|r| r.rankings).unwrap_or(index);
        let before = rows.len();
        for row in page {
            if seen.insert(row.user.user_id) {
                rows.push(row);
            }
        }
        if short {
            return Ok(RankingSlice { rows, ended: true });
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
