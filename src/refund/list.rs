//! What a refund list answers with: its rows, its statistics, the whole
//! list and a page, and which rankings it was read from. Built by the
//! service in `mod.rs`, rendered by `export.rs`.

use serde::Serialize;

use super::rules::Rule;
use crate::cache::batch::ResolveReport;
use crate::cache::numbering::NumberingState;
use crate::cache::rate_percent;
use crate::domain::{CheckinId, MemberNumber, NO_NUMBER_ASSIGNED, RankingType, UserId};
use crate::upstream::{CheckinStatistics, RankingRow};

/// One ranking a list was built from, and where it came from: what the list
/// cost besides its numbers (`lookup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RankingRead {
    pub ranking_type: RankingType,
    pub source: RankingSource,
}

/// Whether a list's ranking came from the cache or was just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankingSource {
    Cache,
    Upstream,
}

/// One participant, under the original service's field names (its consumers
/// read them unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundRow {
    pub planet_user_id: UserId,
    /// `null` when the number could not be had; then
    /// `number_missing_reason` says why.
    pub planet_number: Option<MemberNumber>,
    pub planet_nickname: String,
    pub planet_alias: String,
    pub checkined_days: u32,
    pub required_days: u32,
    pub is_qualified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_missing_reason: Option<String>,
    /// Set when the row's days are unknown (a participant the continuous
    /// ranking does not hold): `checkined_days` is then 0 and the row does
    /// not qualify, and the list is incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_missing_reason: Option<String>,
    /// Position in the ranking (the paged form's `index` counts these).
    #[serde(skip)]
    pub position: u64,
}

/// Counts over a list or a page (the original service's names, plus the camp's own counts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistics {
    /// Participants listed (who checked in at least once).
    pub total_count: usize,
    pub qualified_count: usize,
    pub unqualified_count: usize,
    /// Percent of participants who qualified, rounded to 2 decimals.
    pub qualified_rate: f64,
    /// The rule the counts are by: days required, days of grace, the fewest
    /// days that qualify (`required_days − grace_days`), and the ranking the
    /// days come from.
    pub required_days: u32,
    pub grace_days: u32,
    pub qualifying_days: u32,
    pub ranking_type: RankingType,
    /// Nicknames of the qualified, in ranking order, joined with 、.
    pub qualified_names: String,
    /// The camp's statistics: who joined it, and how many check-ins were
    /// made (what `ranking_checkins` must equal for the list to be
    /// complete). Absent on pages and when they could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkined_count: Option<u64>,
    /// The days of every listed participant added up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranking_checkins: Option<u64>,
    /// Joined the camp but never checked in: not in the ranking, never
    /// qualified, shown so the totals add up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub never_checked_in_count: Option<u64>,
    /// Participants whose member record was found and carries a number.
    pub numbered_count: usize,
    /// Set when no participant found has a number: the group has member
    /// numbering off, and rows are told apart by nickname, alias and id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbering_notice: Option<&'static str>,
}

impl Statistics {
    pub fn of(rows: &[RefundRow], rule: Rule) -> Self {
        let qualified: Vec<&str> = rows
            .iter()
            .filter(|r| r.is_qualified)
            .map(|r| r.planet_nickname.as_str())
            .collect();
        let numbered_count = rows.iter().filter(|r| r.planet_number.is_some()).count();
        let unassigned = rows
            .iter()
            .filter(|r| r.number_missing_reason.as_deref() == Some(NO_NUMBER_ASSIGNED))
            .count();
        // "Off" only when members were found and not one had a number.
        let numbering_off = numbered_count == 0 && unassigned > 0;
        Self {
            total_count: rows.len(),
            qualified_count: qualified.len(),
            unqualified_count: rows.len() - qualified.len(),
            qualified_rate: rate_percent(qualified.len() as u64, rows.len() as u64),
            required_days: rule.required().get(),
            grace_days: rule.grace().get(),
            qualifying_days: rule.threshold(),
            ranking_type: rule.ranking_type(),
            qualified_names: qualified.join("、"),
            joined_count: None,
            checkined_count: None,
            ranking_checkins: None,
            never_checked_in_count: None,
            numbered_count,
            numbering_notice: numbering_off
                .then(|| NumberingState::Off.notice())
                .flatten(),
        }
    }

    /// Adds the camp's own counts, beside the ranking's rows they check.
    pub(super) fn with_camp(
        mut self,
        camp: Option<&CheckinStatistics>,
        rows: &[RankingRow],
    ) -> Self {
        self.ranking_checkins = Some(ranking_checkins(rows));
        if let Some(c) = camp {
            self.joined_count = Some(c.joined_count);
            self.checkined_count = Some(c.checkined_count);
            self.never_checked_in_count = Some(c.joined_count.saturating_sub(rows.len() as u64));
        }
        self
    }
}

/// A whole refund list (`POST /api/camps/:checkinId/refund-list`).
#[derive(Debug, Clone, Serialize)]
pub struct RefundList {
    pub checkin_id: CheckinId,
    pub title: String,
    /// The camp's status when its ranking was read: ongoing, over, closed.
    pub status: String,
    /// The camp's own requirement, for reference.
    pub checkin_days: u32,
    /// The rule this list was judged by: a participant qualifies with at
    /// least `required_days − grace_days` days of the `ranking_type`
    /// ranking.
    pub required_days: u32,
    pub grace_days: u32,
    pub ranking_type: RankingType,
    /// The same rule, for the exports' words.
    #[serde(skip)]
    pub rule: Rule,
    /// The list is provably whole and right: every participant the camp's
    /// statistics count is in it, and every row has its own number. `false`
    /// says why in `incomplete_reasons` (and rows without a number carry
    /// `number_missing_reason`).
    pub complete: bool,
    /// Why `complete` is false, in words for the operator.
    pub incomplete_reasons: Vec<String>,
    /// Rows without a number.
    pub missing_count: usize,
    pub refund_list: Vec<RefundRow>,
    pub statistics: Statistics,
    /// `cache` when every ranking it needed was cached.
    pub ranking_source: RankingSource,
    /// Each ranking read and where from.
    pub ranking_reads: Vec<RankingRead>,
    /// Where the numbers came from and what they cost.
    pub lookup: ResolveReport,
    /// When this list was built (ISO-8601 UTC).
    pub generated_at: String,
}

/// One page of a refund list (`GET /api/camps/:checkinId/refund-list`).
#[derive(Debug, Clone, Serialize)]
pub struct RefundPage {
    pub checkin_id: CheckinId,
    pub title: String,
    pub status: String,
    pub required_days: u32,
    pub grace_days: u32,
    pub ranking_type: RankingType,
    /// The position this page continues after (0 = the start).
    pub index: u64,
    pub page_size: usize,
    /// Every row of this page has its number and its days.
    pub complete: bool,
    pub refund_list: Vec<RefundRow>,
    pub has_more: bool,
    /// The last row's position: the `index` of the next page.
    pub next_index: u64,
    pub page_statistics: Statistics,
    pub ranking_source: RankingSource,
    pub ranking_reads: Vec<RankingRead>,
    pub lookup: ResolveReport,
}

/// Check-in days of `rows` added up.
pub(super) fn ranking_checkins(rows: &[RankingRow]) -> u64 {
    rows.iter().map(|r| u64::from(r.checkined_days)).sum()
}
