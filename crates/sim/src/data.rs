//! The simulated group's contents: members and check-in camps, generated from
//! a seed.
//!
//! Everything here is a pure function of `(seed, members, group_id)`, drawn
//! from one `StdRng` in a fixed order, so a test, a benchmark and the demo that
//! use the same seed see the same people with the same numbers. The data is
//! shaped after the captures in `docs/UPSTREAM.md`, including the awkward parts a
//! client has to survive: ids beyond 2^32 that do not follow member numbers,
//! gaps in the numbering where people left, names with emoji, markup and
//! quotes, `unique_id` missing for about a third of the members, and rankings
//! full of ties.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use zsxq_domain::{Member, MemberNumber, UserId};

/// How many participants the first "over" camp has: the size of the refund
/// list in the original incident (167 concurrent lookups, throttled), which
/// the benchmarks replay.
pub const BENCHMARK_PARTICIPANTS: usize = 167;

/// The check-in days the benchmark camp asks for ("完成7天打卡").
pub const BENCHMARK_CHECKIN_DAYS: u32 = 7;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The group was "founded" at 2023-03-01 10:00:00 +0800; all times count from here.
const GROUP_FOUNDED_MS: i64 = 1_677_636_000_000;

/// Every this many members, one joins in the same millisecond as the one
/// before.
pub const SHARED_JOIN_EVERY: usize = 17;

/// Members' join times are spread over about two years, whatever their count.
const JOIN_SPAN_MS: i64 = 700 * DAY_MS;

/// One member of the simulated group, holding every field the member
/// endpoints answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMember {
    /// Zsxq's internal id: 12–15 digits, always above 2^32, unrelated to `number`.
    pub user_id: u64,
    /// The member number operators see; increasing, with gaps where people
    /// left. Only shown when `has_number` (see below).
    pub number: u64,
    /// Whether the upstream shows a number for this member: false for a
    /// group with numbering off, or a member not given one yet. The JSON
    /// then has no `number` field at all.
    pub has_number: bool,
    /// Display name: Chinese, emoji, ASCII, markup and quotes all occur.
    pub name: String,
    /// The in-group alias shown in rankings; empty for many members.
    pub alias: String,
    /// The user-chosen handle; `None` means the JSON field is omitted entirely.
    pub unique_id: Option<String>,
    /// Avatar image address.
    pub avatar_url: String,
    /// Upstream-formatted join time (`2024-09-04T22:39:05.287+0800`),
    /// never decreasing with `number`: some members share a millisecond
    /// (every [`SHARED_JOIN_EVERY`]th joined with the one before).
    pub join_time: String,
    /// `join_time` as unix milliseconds, so `joined_days` needs no parsing.
    pub join_time_ms: i64,
    /// Always `"joined"`: the simulated group has no expired members.
    pub status: String,
    /// One year after `join_time`, in the same format.
    pub expired_time: String,
    /// Self-introduction; empty for some members.
    pub introduction: String,
    /// Counter answered by the summary endpoint.
    pub topics_count: u32,
}

impl SimMember {
    /// The record the cache would keep for this member, as the upstream's
    /// answer gives it (an omitted `unique_id` reads as empty): for tests and
    /// benchmarks that fill a store directly. `None` only for an id or
    /// number of 0, which the generator never makes.
    pub fn to_member(&self) -> Option<Member> {
        Some(Member {
            user_id: UserId::new(self.user_id)?,
            number: if self.has_number {
                Some(MemberNumber::new(self.number)?)
            } else {
                None
            },
            name: self.name.clone(),
            unique_id: self.unique_id.clone().unwrap_or_default(),
            avatar_url: self.avatar_url.clone(),
            join_time: self.join_time.clone(),
            status: self.status.clone(),
            expired_time: self.expired_time.clone(),
            introduction: self.introduction.clone(),
        })
    }
}

/// Which list of camps a camp appears in; also its `status` in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampScope {
    /// Still running.
    Ongoing,
    /// Finished: the camps whose refund lists operators build.
    Over,
    /// Closed by the operator.
    Closed,
}

impl CampScope {
    /// Every scope, in the order the generator creates them.
    pub const ALL: [CampScope; 3] = [CampScope::Ongoing, CampScope::Over, CampScope::Closed];

    /// The wire name used by `scope=` and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            CampScope::Ongoing => "ongoing",
            CampScope::Over => "over",
            CampScope::Closed => "closed",
        }
    }

    /// Reads a `scope=` value; anything else is a bad parameter.
    pub fn parse(raw: &str) -> Option<Self> {
        CampScope::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Which ranking a `ranking_list` call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankingType {
    /// Total days checked in: what refund rules are based on.
    Accumulated,
    /// Longest streak; derived from the accumulated days, never larger, so a
    /// client that asks for the wrong type gets visibly different numbers.
    Continuous,
}

impl RankingType {
    /// Reads a `type=` value.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "accumulated" => Some(RankingType::Accumulated),
            "continuous" => Some(RankingType::Continuous),
            _ => None,
        }
    }
}

/// One check-in camp (训练营) with its participants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCamp {
    /// Camp id, 15 digits (beyond 2^32 like every upstream id).
    pub checkin_id: u64,
    /// Camp title.
    pub title: String,
    /// The rule text, e.g. "完成7天打卡，押金39全退".
    pub text: String,
    /// Days a participant must check in to qualify for a refund.
    pub checkin_days: u32,
    /// The scope the camp is listed under.
    pub status: CampScope,
    /// Upstream-formatted creation time.
    pub create_time: String,
    /// `create_time` as unix milliseconds, for newest-first ordering.
    pub create_time_ms: i64,
    /// Upstream-formatted end of validity.
    pub expiration_time: String,
    /// Whether the camp runs without a fixed end.
    pub long_period: bool,
    /// `(user_id, accumulated checkined_days)` in join order; join order is
    /// the stable tie order of the ranking. Every participant is a distinct
    /// member and never the caller, and checked in at least once (days ≥ 1):
    /// these are the ranking's rows.
    pub participants: Vec<(u64, u32)>,
    /// Joined the camp but never checked in: counted in the camp's
    /// `joined_count`, absent from the ranking, as upstream.
    pub never_checked_in: usize,
}

impl SimCamp {
    /// Check-ins made, all participants together: the upstream statistics'
    /// `checkined_count`.
    pub fn checkins(&self) -> u64 {
        self.participants
            .iter()
            .map(|(_, days)| u64::from(*days))
            .sum()
    }

    /// Who joined: the participants and those who never checked in.
    pub fn joined_count(&self) -> usize {
        self.participants.len() + self.never_checked_in
    }

    /// How many participants reached `checkin_days` (the upstream's `completed_count`).
    pub fn completed_count(&self) -> usize {
        self.participants
            .iter()
            .filter(|(_, days)| *days >= self.checkin_days)
            .count()
    }
}

/// The streak length the simulator reports for `type=continuous`: up to two
/// days shorter than the accumulated total, varying by user.
pub fn continuous_days(user_id: u64, accumulated: u32) -> u32 {
    // `user_id % 3` is below 3, so the cast cannot truncate.
    accumulated.saturating_sub((user_id % 3) as u32)
}

/// A former member, still in an old camp's ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartedUser {
    pub user_id: u64,
    pub name: String,
}

/// The camp (by position in the "over" scope) that has departed
/// participants; never the benchmark camp, whose numbers must all be known.
pub const DEPARTED_CAMP_POSITION: usize = 1;
/// How many departed participants that camp has.
pub const DEPARTED_COUNT: usize = 2;

/// The whole simulated group.
#[derive(Debug, Clone)]
pub struct SimData {
    /// The only group id the simulator answers for; others get 11102.
    pub group_id: u64,
    /// Members sorted by `number`.
    pub members: Vec<SimMember>,
    /// Camps grouped by scope (ongoing, over, closed), newest first within a scope.
    pub camps: Vec<SimCamp>,
    /// Whose token the simulator pretends to have been given: the group owner
    /// (member number 1, when there are members). Never a camp participant; it
    /// appears in rankings only as `user_specific`.
    pub caller_user_id: u64,
    /// People who took part in a camp and have since left the group: they
    /// appear in that camp's ranking, but the member endpoints answer 1037
    /// and the member list omits them — so their number cannot be known,
    /// which a refund list must say rather than hide.
    pub departed: Vec<DepartedUser>,
    /// `user_id` → index into `members`, so lookups stay O(1) under load.
    by_id: HashMap<u64, usize>,
}

impl SimData {
    /// The member with this `user_id`.
    pub fn member_by_id(&self, user_id: u64) -> Option<&SimMember> {
        // The index is checked rather than trusted, since `members` is public.
        match self.by_id.get(&user_id).and_then(|&i| self.members.get(i)) {
            Some(m) if m.user_id == user_id => Some(m),
            _ => self.members.iter().find(|m| m.user_id == user_id),
        }
    }

    /// The former member with this `user_id`.
    pub fn departed_by_id(&self, user_id: u64) -> Option<&DepartedUser> {
        self.departed.iter().find(|d| d.user_id == user_id)
    }

    /// The member with this `number`.
    /// The member the upstream shows with `number` (one without a shown
    /// number has none).
    pub fn member_by_number(&self, number: u64) -> Option<&SimMember> {
        let found = match self.members.binary_search_by_key(&number, |m| m.number) {
            Ok(i) => self.members.get(i),
            Err(_) => self.members.iter().find(|m| m.number == number),
        };
        found.filter(|m| m.has_number)
    }

    /// Hides the numbers of about `ratio` of the members (1.0: all, a group
    /// with numbering off), chosen by a hash of their id so the same data
    /// always hides the same ones.
    pub fn hide_numbers(&mut self, ratio: f64) {
        for m in &mut self.members {
            let draw =
                (m.user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
            m.has_number = draw >= ratio;
        }
    }

    /// Makes members 1..=`count` join in one millisecond (the first's), as a
    /// bulk import would: more than a member-list page at one time.
    pub fn tie_joins(&mut self, count: usize) {
        let Some(first) = self
            .members
            .get(1)
            .map(|m| (m.join_time_ms, m.join_time.clone()))
        else {
            return;
        };
        for m in self.members.iter_mut().skip(1).take(count) {
            m.join_time_ms = first.0;
            m.join_time = first.1.clone();
        }
    }

    /// The camp with this id.
    pub fn camp(&self, checkin_id: u64) -> Option<&SimCamp> {
        self.camps.iter().find(|c| c.checkin_id == checkin_id)
    }

    /// The camps of one scope, newest first (the order the API answers in).
    pub fn camps_in(&self, scope: CampScope) -> Vec<&SimCamp> {
        let mut camps: Vec<&SimCamp> = self.camps.iter().filter(|c| c.status == scope).collect();
        camps.sort_by_key(|c| std::cmp::Reverse(c.create_time_ms));
        camps
    }

    /// The benchmark camp: the first "over" camp, which is also the first one
    /// `scope=over` lists. It has [`BENCHMARK_PARTICIPANTS`] participants when
    /// the group has at least that many members besides the caller.
    pub fn benchmark_camp(&self) -> Option<&SimCamp> {
        self.camps.iter().find(|c| c.status == CampScope::Over)
    }

    /// The accumulated ranking of a camp as `(user_id, checkined_days)`, in the
    /// order `ranking_list` pages through it.
    pub fn expected_ranking(&self, checkin_id: u64) -> Option<Vec<(u64, u32)>> {
        self.expected_ranking_of(checkin_id, RankingType::Accumulated)
    }

    /// Like [`SimData::expected_ranking`] for either ranking type: days
    /// descending, ties kept in join order.
    pub fn expected_ranking_of(
        &self,
        checkin_id: u64,
        kind: RankingType,
    ) -> Option<Vec<(u64, u32)>> {
        let camp = self.camp(checkin_id)?;
        let mut rows: Vec<(u64, u32)> = camp
            .participants
            .iter()
            .map(|&(id, days)| match kind {
                RankingType::Accumulated => (id, days),
                RankingType::Continuous => (id, continuous_days(id, days)),
            })
            .collect();
        // `sort_by_key` is stable: equal days keep join order.
        rows.sort_by_key(|&(_, days)| std::cmp::Reverse(days));
        Some(rows)
    }
}

/// Formats unix ms the way the upstream does: `2024-09-04T22:39:05.287+0800`.
pub fn zsxq_time(ms: i64) -> String {
    let beijing = FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset");
    DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&beijing)
                .format("%Y-%m-%dT%H:%M:%S%.3f%z")
                .to_string()
        })
        .unwrap_or_default()
}

/// Builds the simulated group. The same arguments always give the same data.
pub fn generate(seed: u64, members: usize, group_id: u64) -> SimData {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut used_ids = HashSet::new();
    let members = generate_members(&mut rng, members, &mut used_ids);
    let caller_user_id = match members.first() {
        Some(owner) => owner.user_id,
        None => fresh_id(
            &mut rng,
            &mut used_ids,
            100_000_000_000,
            1_000_000_000_000_000,
        ),
    };
    let mut camps = generate_camps(&mut rng, &members, &mut used_ids);
    let departed = add_departed(&mut rng, &mut camps, &mut used_ids);
    let by_id = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.user_id, i))
        .collect();
    SimData {
        group_id,
        members,
        camps,
        caller_user_id,
        departed,
        by_id,
    }
}

/// Adds former members to one finished camp (see [`SimData::departed`]).
fn add_departed(
    rng: &mut StdRng,
    camps: &mut [SimCamp],
    used_ids: &mut HashSet<u64>,
) -> Vec<DepartedUser> {
    let Some(camp) = camps
        .iter_mut()
        .filter(|c| c.status == CampScope::Over)
        .nth(DEPARTED_CAMP_POSITION)
    else {
        return Vec::new();
    };
    if camp.participants.is_empty() {
        return Vec::new();
    }
    let names = ["已退出的小李", "👋再见"];
    let mut departed = Vec::new();
    for name in names.iter().take(DEPARTED_COUNT) {
        let user_id = fresh_id(rng, used_ids, 100_000_000_000, 1_000_000_000_000_000);
        let days = random_days(rng, camp.checkin_days);
        camp.participants.push((user_id, days));
        departed.push(DepartedUser {
            user_id,
            name: (*name).to_string(),
        });
    }
    departed
}

/// Draws an id in `lo..hi` that has not been handed out yet.
fn fresh_id(rng: &mut StdRng, used: &mut HashSet<u64>, lo: u64, hi: u64) -> u64 {
    loop {
        let id = rng.random_range(lo..hi);
        if used.insert(id) {
            return id;
        }
    }
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "杰", "婷", "浩然", "子涵", "雨桐",
];
const NICKNAMES: &[&str] = &[
    "小鱼",
    "阿杰",
    "晓雨",
    "大卫",
    "木木",
    "一只羊",
    "早起的人",
    "半夏",
    "清风",
    "老K",
];
const EMOJI: &[&str] = &["🐱", "🌸", "🍀", "🚀", "☕", "🌙", "🔥", "🐼", "📚", "✨"];
const EMOJI_WORDS: &[&str] = &[
    "猫猫",
    "向日葵",
    "读书人",
    "追光",
    "咖啡控",
    "夜跑",
    "学习中",
];
const ASCII_NAMES: &[&str] = &[
    "alice_w",
    "Bob Chen",
    "dev-ops-lee",
    "Kevin2024",
    "J.Smith",
    "momo",
    "Grace H.",
];
const ALIASES: &[&str] = &["早起鸟", "学习委员", "打卡王", "小助手", "组长", "新人"];
const INTRODUCTIONS: &[&str] = &[
    "产品经理，每天进步一点点",
    "Rust / Go 后端开发",
    "正在学习理财 📈",
    "宝妈，利用碎片时间学习",
    "坚持跑步第三年",
];
const HANDLE_WORDS: &[&str] = &[
    "sunny", "coder", "reader", "tiger", "lemon", "nova", "river",
];

/// Names that clients must escape or encode correctly; placed at fixed
/// positions so tests can rely on them.
const TRICKY_NAMES: &[(usize, &str)] = &[
    (0, "星主·老王"),
    (1, "🐱猫猫"),
    (2, "<b>加粗</b>小张"),
    (3, "Tom \"The Cat\" Li"),
    (4, "O'Neil 欧尼尔"),
];

fn random_name(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, pool: &[&str]| pool[rng.random_range(0..pool.len())].to_string();
    match rng.random_range(0..100) {
        0..=39 => format!("{}{}", pick(rng, SURNAMES), pick(rng, GIVEN)),
        40..=59 => pick(rng, NICKNAMES),
        60..=79 => format!("{}{}", pick(rng, EMOJI), pick(rng, EMOJI_WORDS)),
        _ => pick(rng, ASCII_NAMES),
    }
}

fn generate_members(rng: &mut StdRng, count: usize, used_ids: &mut HashSet<u64>) -> Vec<SimMember> {
    // Keep the average gap such that the whole group joined over JOIN_SPAN_MS.
    let count_i64 = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
    let avg_gap = (JOIN_SPAN_MS / count_i64).max(1_000);
    let mut joined_ms = GROUP_FOUNDED_MS;
    let mut number = 0u64;
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        // About one in twenty numbers is skipped: someone who joined and left.
        number += if index > 0 && rng.random_bool(0.05) {
            rng.random_range(2..=4)
        } else {
            1
        };
        let gap = rng.random_range(1_000..=2 * avg_gap);
        // Some join in the same millisecond as the one before (a batch of
        // invitations accepted at once): the member list's time cursor must
        // cope with ties.
        if index % SHARED_JOIN_EVERY != SHARED_JOIN_EVERY - 1 {
            joined_ms += gap;
        }
        // 12 to 15 digits, all far above 2^32.
        let digits = rng.random_range(12..=15u32);
        let user_id = fresh_id(rng, used_ids, 10u64.pow(digits - 1), 10u64.pow(digits));
        let name = match TRICKY_NAMES.iter().find(|(i, _)| *i == index) {
            Some((_, fixed)) => fixed.to_string(),
            None => random_name(rng),
        };
        let alias = if rng.random_bool(0.4) {
            String::new()
        } else {
            ALIASES[rng.random_range(0..ALIASES.len())].to_string()
        };
        let unique_id = if rng.random_bool(1.0 / 3.0) {
            None
        } else {
            let word = HANDLE_WORDS[rng.random_range(0..HANDLE_WORDS.len())];
            Some(format!("{word}{}", rng.random_range(10..100_000u32)))
        };
        let avatar_url = format!(
            "https://images.zsxq.com/F{:016x}?imageMogr2/auto-orient/thumbnail/150x/format/jpg",
            rng.random::<u64>()
        );
        let introduction = if rng.random_bool(0.3) {
            String::new()
        } else {
            INTRODUCTIONS[rng.random_range(0..INTRODUCTIONS.len())].to_string()
        };
        out.push(SimMember {
            user_id,
            number,
            has_number: true,
            name,
            alias,
            unique_id,
            avatar_url,
            join_time: zsxq_time(joined_ms),
            join_time_ms: joined_ms,
            status: "joined".to_string(),
            expired_time: zsxq_time(joined_ms + 365 * DAY_MS),
            introduction,
            topics_count: rng.random_range(0..200),
        });
    }
    out
}

/// The camps to create per scope, newest first: (title, checkin_days,
/// deposit, target participants, long_period). The first "over" entry is the
/// benchmark camp.
type CampPlan = (&'static str, u32, u32, usize, bool);
const ONGOING: &[CampPlan] = &[
    ("100天读书打卡", 100, 99, 45, true),
    ("21天早起训练营", 21, 49, 60, false),
    ("14天英语晨读", 14, 29, 30, false),
];
const OVER: &[CampPlan] = &[
    (
        "7天AI写作训练营",
        BENCHMARK_CHECKIN_DAYS,
        39,
        BENCHMARK_PARTICIPANTS,
        false,
    ),
    ("21天早起训练营（第一期）", 21, 49, 52, false),
    ("7天理财入门", 7, 19, 25, false),
    ("10天跑步挑战", 10, 29, 12, false),
];
const CLOSED: &[CampPlan] = &[
    ("30天健身打卡", 30, 59, 20, false),
    ("5天Python体验营", 5, 9, 8, false),
];

/// Days a participant checked in: spread over 0..=required+3 with heavy
/// ties around the requirement, like real camps (many finish exactly, some
/// make up extra days, a fair share drop out early).
fn random_days(rng: &mut StdRng, required: u32) -> u32 {
    match rng.random_range(0..100) {
        0..=9 => 0,
        10..=39 => rng.random_range(1..required.max(2)),
        40..=74 => required,
        75..=89 => required + 1,
        _ => rng.random_range(required + 2..=required + 3),
    }
}

fn generate_camps(
    rng: &mut StdRng,
    members: &[SimMember],
    used_ids: &mut HashSet<u64>,
) -> Vec<SimCamp> {
    // The caller (member 0) is never a participant.
    let eligible: Vec<u64> = members.iter().skip(1).map(|m| m.user_id).collect();
    // Camps are dated relative to the end of the join period: ongoing camps
    // are the most recent, closed ones in the middle, over ones before them.
    let end_ms = GROUP_FOUNDED_MS + JOIN_SPAN_MS;
    let mut camps = Vec::new();
    for (scope, plans) in [
        (CampScope::Ongoing, ONGOING),
        (CampScope::Over, OVER),
        (CampScope::Closed, CLOSED),
    ] {
        let newest_ms = match scope {
            CampScope::Ongoing => end_ms - 5 * DAY_MS,
            CampScope::Closed => end_ms - 60 * DAY_MS,
            CampScope::Over => end_ms - 90 * DAY_MS,
        };
        for (position, &(title, checkin_days, deposit, target, long_period)) in
            plans.iter().enumerate()
        {
            let create_ms = newest_ms - i64::try_from(position).unwrap_or(0) * 35 * DAY_MS
                + rng.random_range(0..DAY_MS);
            let checkin_id = fresh_id(rng, used_ids, 100_000_000_000_000, 1_000_000_000_000_000);
            let mut pool = eligible.clone();
            pool.shuffle(rng);
            pool.truncate(target.min(eligible.len()));
            let mut participants: Vec<(u64, u32)> = pool
                .into_iter()
                .map(|id| (id, random_days(rng, checkin_days)))
                .collect();
            // Make sure every camp has both outcomes when it can.
            if let Some(first) = participants.first_mut() {
                first.1 = checkin_days;
            }
            if let Some(second) = participants.get_mut(1) {
                second.1 = checkin_days / 2;
            }
            // The ranking lists who checked in at least once; those who
            // never did are only counted (see `never_checked_in`).
            for p in &mut participants {
                p.1 = p.1.max(1);
            }
            let never_checked_in = participants.len() / 10;
            let expiration_ms = if long_period {
                create_ms + 3650 * DAY_MS
            } else {
                create_ms + i64::from(checkin_days + 3) * DAY_MS
            };
            camps.push(SimCamp {
                checkin_id,
                title: title.to_string(),
                text: format!("完成{checkin_days}天打卡，押金{deposit}全退"),
                checkin_days,
                status: scope,
                create_time: zsxq_time(create_ms),
                create_time_ms: create_ms,
                expiration_time: zsxq_time(expiration_ms),
                long_period,
                participants,
                never_checked_in,
            });
        }
    }
    camps
}
