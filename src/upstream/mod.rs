//! Talking to the Zsxq API; what we rely on about it, and where each fact
//! comes from, is in `docs/UPSTREAM.md`.
//!
//! - `client.rs`: HTTP, headers, signature, retries (where the 1059 retry is).
//! - `budget/`: the process-wide rate limit, concurrency and priority, the
//!   throttle penalty and the bounded interactive queue.
//! - `fleet.rs`: the fleet-wide share of that rate, in Redis, for several
//!   replicas.
//! - `refusal/`: token protection — the fleet stops calling during a 1059
//!   storm and while the token is rejected.
//! - `priority.rs`: who waits for a call (a person or background work).
//! - `device.rs`: the installation's device id (`X-Aduid`).
//! - `wire.rs`: the upstream's JSON and envelope decoding.
//! - `error.rs`: typed failures with the upstream's meaning.
//! - `member_walk.rs`, `ranking.rs`: paged endpoints read whole — or a loud
//!   error, never a silently short list.
//!
//! The rest of the code holds an `Arc<dyn Upstream>` and those helpers.
//! Dependencies point one way: the client uses the budget and the refusal
//! guard, the budget uses the fleet, and all of them use `priority.rs`.

pub mod budget;
pub mod client;
pub mod device;
pub mod error;
pub mod fleet;
mod member_walk;
pub mod metrics;
pub mod priority;
mod ranking;
pub mod refusal;
pub mod wire;

use async_trait::async_trait;

pub use budget::Budget;
pub use client::ZsxqClient;
pub use error::UpstreamError;
pub use member_walk::MemberWalk;
pub use priority::Priority;
pub use ranking::{RankingSlice, full_ranking, ranking_slice};
pub use wire::{Camp, CheckinStatistics, RankingRow};

use crate::domain::{CheckinId, Member, RankingType, UserId};

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

    /// One page of a camp's ranking of type `kind`, rows after position
    /// `index`.
    async fn ranking_page(
        &self,
        checkin: CheckinId,
        kind: RankingType,
        index: u64,
        priority: Priority,
    ) -> Result<wire::RankingPage, UpstreamError>;
}

/// Registers the upstream's series: the budget's instruments, and the
/// state of the budget (with `API_RATE_LIMIT`, `rate_per_min`) and of the
/// refusal guard, read at scrape time.
pub fn register_metrics(
    registry: &mut prometheus_client::registry::Registry,
    budget: &std::sync::Arc<Budget>,
    rate_per_min: u32,
    refusal: std::sync::Arc<refusal::Refusal>,
) {
    budget.metrics().register(registry);
    registry.register_collector(Box::new(refusal::RefusalCollector(refusal)));
    registry.register_collector(Box::new(budget::BudgetCollector {
        budget: std::sync::Arc::clone(budget),
        rate_per_min,
    }));
}
