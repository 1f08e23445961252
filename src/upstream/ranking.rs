//! Reading a camp's ranking (accumulated or continuous), whole or a slice at
//! a time — all of it or a loud error, never a silently short list.

use std::collections::HashSet;

use super::{MAX_PAGES, Priority, RankingRow, Upstream, UpstreamError};
use crate::domain::{CheckinId, RankingType, UserId};

/// A camp's whole ranking. Pages continue from the last row's `rankings`
/// and only an empty page ends it: a page shorter than the others is not the
/// last (the ranking can leave out a participant it does not show). With
/// `checkins` = the camp's `checkined_count` (from
/// [`Upstream::camp_statistics`], for a camp that can no longer change) the
/// read also stops once the rows' days add up to exactly that: every further
/// row would add at least one day, so none can follow, and the final empty
/// page is saved. `checkins` is a total of accumulated days: a continuous
/// ranking (streaks) does not add up to it, so it is read to its empty page.
/// Any failing page fails the whole ranking: a refund list built from a
/// partial ranking is wrong (docs/UPSTREAM.md).
pub async fn full_ranking(
    api: &dyn Upstream,
    checkin: CheckinId,
    kind: RankingType,
    checkins: Option<u64>,
    priority: Priority,
) -> Result<Vec<RankingRow>, UpstreamError> {
    let checkins = checkins.filter(|_| kind == RankingType::Accumulated);
    read_ranking(api, checkin, kind, 0, Stop::DaysAddUpTo(checkins), priority)
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
    kind: RankingType,
    after: u64,
    want: usize,
    priority: Priority,
) -> Result<RankingSlice, UpstreamError> {
    read_ranking(api, checkin, kind, after, Stop::Want(want), priority).await
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
    kind: RankingType,
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
            .ranking_page(checkin, kind, index, priority)
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
