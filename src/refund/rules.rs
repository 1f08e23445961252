//! A camp's refund rule: how many days qualify (`required_days`, less
//! `grace_days`) and on which ranking they are counted (`ranking_type`),
//! and how a continuous ranking is joined to the accumulated one.
//!
//! Decisions:
//! - **A rule is valid or it does not exist.** [`Rule::new`] refuses a
//!   grace that is not below the requirement, so every list is judged by a
//!   threshold of at least one day.
//! - **A continuous list proves its participants with the accumulated
//!   ranking.** Streaks do not add up to the camp's `checkined_count`, so the
//!   continuous ranking cannot show it is whole. The accumulated ranking
//!   (whose days must add up to it) gives the participants, their order and
//!   positions; the continuous ranking gives each one's days. A participant
//!   the continuous ranking does not hold has no known streak: the row says
//!   so, does not qualify, and the list is incomplete — never 0 days
//!   silently.

use std::collections::HashMap;

use serde::Serialize;

use crate::domain::{RankingType, UserId};
use crate::upstream::RankingRow;

/// Days a participant must have checked in to qualify, 1..=365.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RequiredDays(u32);

impl RequiredDays {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 365;
    /// The usual camp rule ("完成7天打卡").
    pub const DEFAULT: RequiredDays = RequiredDays(7);

    /// `None` outside 1..=365.
    pub fn new(days: u32) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&days)
            .then_some(Self(days))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for RequiredDays {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Days a participant may fall short of `required_days` and still qualify,
/// 0..=364 (and below the requirement, which [`Rule::new`] checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct GraceDays(u32);

impl GraceDays {
    pub const MAX: u32 = RequiredDays::MAX - 1;

    /// `None` above [`GraceDays::MAX`].
    pub fn new(days: u32) -> Option<Self> {
        (days <= Self::MAX).then_some(Self(days))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A grace that is not below the requirement it softens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "grace_days（{grace}）必须小于 required_days（{required}） (grace_days must be less than \
     required_days: got grace_days {grace} with required_days {required})"
)]
pub struct GraceTooLarge {
    pub grace: u32,
    pub required: u32,
}

/// What a refund list is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    required: RequiredDays,
    grace: GraceDays,
    ranking_type: RankingType,
}

impl Rule {
    /// The rule, or why `grace` does not fit `required`.
    pub fn new(
        required: RequiredDays,
        grace: GraceDays,
        ranking_type: RankingType,
    ) -> Result<Self, GraceTooLarge> {
        if grace.get() >= required.get() {
            return Err(GraceTooLarge {
                grace: grace.get(),
                required: required.get(),
            });
        }
        Ok(Self {
            required,
            grace,
            ranking_type,
        })
    }

    /// `required` days on the accumulated ranking, no grace.
    pub fn days(required: RequiredDays) -> Self {
        Self {
            required,
            ..Self::default()
        }
    }

    pub fn required(self) -> RequiredDays {
        self.required
    }

    pub fn grace(self) -> GraceDays {
        self.grace
    }

    pub fn ranking_type(self) -> RankingType {
        self.ranking_type
    }

    /// The fewest days that qualify: `required − grace`, at least 1.
    pub fn threshold(self) -> u32 {
        self.required.get() - self.grace.get()
    }

    pub fn qualifies(self, days: u32) -> bool {
        days >= self.threshold()
    }

    /// The rule in words, for file headers and reports.
    pub fn describe(self) -> String {
        let kind = match self.ranking_type {
            RankingType::Accumulated => "累计打卡",
            RankingType::Continuous => "连续打卡",
        };
        if self.grace.get() == 0 {
            format!("{kind}满 {} 天", self.required.get())
        } else {
            format!(
                "{kind}满 {} 天（宽限 {} 天，满 {} 天即合格）",
                self.required.get(),
                self.grace.get(),
                self.threshold()
            )
        }
    }
}

impl From<RequiredDays> for Rule {
    fn from(required: RequiredDays) -> Self {
        Self::days(required)
    }
}

/// Why a row has no days on a continuous list.
pub const NO_STREAK: &str =
    "连续打卡榜中没有此人，连续天数未知 (not in the continuous ranking; the streak is unknown)";

/// The accumulated ranking's participants, in its order and positions, each
/// with their days from the continuous ranking; the second value holds the
/// participants the continuous ranking lacks (their rows keep 0 days, to be
/// marked by the caller with [`NO_STREAK`]).
pub fn with_streaks(
    accumulated: &[RankingRow],
    continuous: &[RankingRow],
) -> (Vec<RankingRow>, Vec<UserId>) {
    let streaks: HashMap<UserId, u32> = continuous
        .iter()
        .map(|r| (r.user.user_id, r.checkined_days))
        .collect();
    let mut missing = Vec::new();
    let rows = accumulated
        .iter()
        .map(|r| {
            let mut row = r.clone();
            row.checkined_days = match streaks.get(&r.user.user_id) {
                Some(days) => *days,
                None => {
                    missing.push(r.user.user_id);
                    0
                }
            };
            row
        })
        .collect();
    (rows, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(required: u32, grace: u32) -> Result<Rule, GraceTooLarge> {
        Rule::new(
            RequiredDays::new(required).unwrap(),
            GraceDays::new(grace).unwrap(),
            RankingType::Accumulated,
        )
    }

    #[test]
    fn required_days_accept_1_to_365_only() {
        assert!(RequiredDays::new(0).is_none());
        assert!(RequiredDays::new(366).is_none());
        assert_eq!(RequiredDays::new(1).map(RequiredDays::get), Some(1));
        assert_eq!(RequiredDays::new(365).map(RequiredDays::get), Some(365));
        assert_eq!(RequiredDays::default().get(), 7);
    }

    #[test]
    fn grace_lowers_the_threshold_and_must_stay_below_the_requirement() {
        let r = rule(7, 2).unwrap();
        assert_eq!(r.threshold(), 5);
        assert!(r.qualifies(5) && !r.qualifies(4));
        assert_eq!(rule(7, 6).unwrap().threshold(), 1);
        let e = rule(7, 7).unwrap_err().to_string();
        assert!(e.contains("grace_days 7 with required_days 7"), "{e}");
        assert!(rule(1, 1).is_err());
        assert_eq!(Rule::default().threshold(), 7);
        assert!(GraceDays::new(365).is_none());
    }

    fn ranking_row(id: u64, position: u64, days: u32) -> RankingRow {
        serde_json::from_value(serde_json::json!({
            "user": {"user_id": id, "name": format!("u{id}")},
            "rankings": position,
            "checkined_days": days,
        }))
        .unwrap()
    }

    #[test]
    fn streaks_replace_days_and_a_participant_without_one_is_named() {
        let accumulated = [
            ranking_row(1, 1, 9),
            ranking_row(2, 2, 5),
            ranking_row(3, 3, 2),
        ];
        let continuous = [ranking_row(2, 1, 5), ranking_row(1, 2, 4)];
        let (rows, missing) = with_streaks(&accumulated, &continuous);
        let days: Vec<(u64, u64, u32)> = rows
            .iter()
            .map(|r| (r.user.user_id.get(), r.rankings, r.checkined_days))
            .collect();
        assert_eq!(days, [(1, 1, 4), (2, 2, 5), (3, 3, 0)]);
        assert_eq!(missing, [UserId::new(3).unwrap()]);
    }
}
