//! Domain types, parsed once at the edge.
//!
//! The upstream knows people by `user_id`, operators know them by member
//! `number`; mixing the two up is exactly the bug this product exists to fix.
//! Each identifier therefore gets its own newtype with a private field and a
//! single `parse`, so a raw string from a URL can never reach a Redis key or an
//! upstream path without having been checked to be digits within range.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused. The message is shown to the client as-is,
/// so it says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseIdError(String);

/// Parses a positive decimal id: ASCII digits only, no sign, no leading zero,
/// fits in a `u64`. Upstream ids go beyond 2^32, so `u32` would be wrong.
fn parse_positive(kind: &str, raw: &str) -> Result<u64, ParseIdError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ParseIdError(format!(
            "{kind} 不能为空 ({kind} must not be empty)"
        )));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseIdError(format!(
            "{kind} 只能包含数字 ({kind} must contain digits only)"
        )));
    }
    if trimmed.len() > 1 && trimmed.starts_with('0') {
        return Err(ParseIdError(format!(
            "{kind} 不能以 0 开头 ({kind} must not have leading zeros)"
        )));
    }
    match trimmed.parse::<u64>() {
        Ok(0) => Err(ParseIdError(format!(
            "{kind} 必须大于 0 ({kind} must be greater than 0)"
        ))),
        Ok(v) => Ok(v),
        Err(_) => Err(ParseIdError(format!(
            "{kind} 超出范围 ({kind} is too large)"
        ))),
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u64);

        impl $name {
            /// Parses a decimal string (digits only, > 0, fits in u64).
            pub fn parse(raw: &str) -> Result<Self, ParseIdError> {
                parse_positive($label, raw).map(Self)
            }

            /// Wraps a value that is already known to be valid (from the
            /// upstream's JSON or our own store), refusing 0.
            pub fn new(value: u64) -> Option<Self> {
                (value > 0).then_some(Self(value))
            }

            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Zsxq's internal user id (e.g. `454881884228`). Serialised as a
    /// decimal string in our API, since JavaScript loses precision above 2^53.
    UserId,
    "user_id"
);
id_type!(
    /// The member number an operator sees in the app (e.g. `177`).
    MemberNumber,
    "number"
);
id_type!(
    /// A Zsxq group (星球) id.
    GroupId,
    "group_id"
);
id_type!(
    /// A check-in camp id.
    CheckinId,
    "checkin_id"
);

/// Which of a camp's rankings: total days checked in, or the streak.
/// The upstream serves both (`ranking_list?type=…`, docs/UPSTREAM.md); a
/// refund rule is judged on one of them, and a cached ranking is kept per
/// type so one is never read as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankingType {
    /// Days checked in altogether; what the camp's `checkined_count` adds up.
    #[default]
    Accumulated,
    /// Consecutive days checked in, as the upstream counts them.
    Continuous,
}

impl RankingType {
    pub const ALL: [RankingType; 2] = [RankingType::Accumulated, RankingType::Continuous];

    /// The upstream's (and our API's) word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RankingType::Accumulated => "accumulated",
            RankingType::Continuous => "continuous",
        }
    }
}

impl fmt::Display for RankingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// user_id travels as a string in every answer of our API (see `UserId`);
// accept both strings and integers when reading, since the upstream sends
// integers.
impl Serialize for UserId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64_from_string_or_number(d)?;
        UserId::new(v).ok_or_else(|| serde::de::Error::custom("user_id must be > 0"))
    }
}

// number is an integer in every answer of our API, as in the original
// service's: member numbers stay far below 2^53.
impl Serialize for MemberNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for MemberNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64_from_string_or_number(d)?;
        MemberNumber::new(v).ok_or_else(|| serde::de::Error::custom("number must be > 0"))
    }
}

impl Serialize for CheckinId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CheckinId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64_from_string_or_number(d)?;
        CheckinId::new(v).ok_or_else(|| serde::de::Error::custom("checkin_id must be > 0"))
    }
}

/// Reads a `u64` given either as a JSON number or as a decimal string.
pub fn u64_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Num(n) => Ok(n),
        Raw::Str(s) => s
            .parse::<u64>()
            .map_err(|_| serde::de::Error::custom(format!("not a decimal id: {s:?}"))),
    }
}

/// One member of the group, as the upstream describes it (docs/UPSTREAM.md,
/// "Members") and with the fields the cache stores for it. Strings the
/// upstream may omit are kept empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    /// `None` when the group has member numbering off or this member has
    /// not been given a number yet (docs/UPSTREAM.md): a valid record, not
    /// a broken one. The upstream omits the field then; `null` and `0` are
    /// read the same way.
    #[serde(default, deserialize_with = "optional_number")]
    pub number: Option<MemberNumber>,
    pub name: String,
    /// Missing for many real members; kept as "" so every stored record has
    /// the field.
    #[serde(default)]
    pub unique_id: String,
    #[serde(default)]
    pub avatar_url: String,
    /// `2024-09-04T22:39:05.287+0800`, exactly as the upstream sent it.
    #[serde(default)]
    pub join_time: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub expired_time: String,
    #[serde(default)]
    pub introduction: String,
}

// Written by hand for one addition: a member without a number says why
// (`number: null` beside `number_missing_reason`), wherever it is shown.
impl Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Member", 10)?;
        st.serialize_field("user_id", &self.user_id)?;
        st.serialize_field("number", &self.number)?;
        if self.number.is_none() {
            st.serialize_field("number_missing_reason", NO_NUMBER_ASSIGNED)?;
        }
        st.serialize_field("name", &self.name)?;
        st.serialize_field("unique_id", &self.unique_id)?;
        st.serialize_field("avatar_url", &self.avatar_url)?;
        st.serialize_field("join_time", &self.join_time)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("expired_time", &self.expired_time)?;
        st.serialize_field("introduction", &self.introduction)?;
        st.end()
    }
}

impl Member {
    /// `join_time` as unix milliseconds, for sorting; unparseable times sort
    /// first rather than failing a whole page.
    pub fn join_time_ms(&self) -> i64 {
        parse_zsxq_time_ms(&self.join_time).unwrap_or(0)
    }
}

/// Why a member has no number, in words for the operator.
pub const NO_NUMBER_ASSIGNED: &str =
    "该成员没有星球编号（星球未开启成员编号，或尚未分配） (no number assigned)";

/// Reads `number` as the upstream may send it: absent, `null`, `0` (no
/// number) or a positive integer / decimal string.
fn optional_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<MemberNumber>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(u64),
        Str(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Num(n)) => Ok(MemberNumber::new(n)),
        Some(Raw::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Raw::Str(s)) => s
            .trim()
            .parse::<u64>()
            .map(MemberNumber::new)
            .map_err(|_| serde::de::Error::custom(format!("not a member number: {s:?}"))),
    }
}

/// A member together with the cache's own bookkeeping: when it was cached
/// and last refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedMember {
    #[serde(flatten)]
    pub member: Member,
    /// When this record was first cached (unix ms).
    pub cached_at: i64,
    /// When this record was last written from upstream data (unix ms).
    pub updated_at: i64,
}

#[cfg(any(test, feature = "testing"))]
impl CachedMember {
    /// A minimal record for unit tests: the given id and number, name
    /// `m{number}`, every other text empty, cached and updated at `updated_at`.
    /// (The `testing` feature lends it to the service's unit tests; builds
    /// of the binary leave it out.)
    pub fn for_test(id: u64, number: u64, updated_at: i64) -> Self {
        CachedMember {
            member: Member {
                user_id: UserId::new(id).expect("test id > 0"),
                number: Some(MemberNumber::new(number).expect("test number > 0")),
                name: format!("m{number}"),
                unique_id: String::new(),
                avatar_url: String::new(),
                join_time: String::new(),
                status: String::new(),
                expired_time: String::new(),
                introduction: String::new(),
            },
            cached_at: updated_at,
            updated_at,
        }
    }
}

/// Parses the upstream's time format (`2024-09-04T22:39:05.287+0800`), also
/// accepting RFC 3339 (`+08:00`) for robustness.
pub fn parse_zsxq_time_ms(raw: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(raw))
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats unix ms as the ISO-8601 UTC string our answers carry
/// (`2025-10-28T02:00:00.000Z`).
pub fn iso_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_large_decimal_values() {
        assert_eq!(
            UserId::parse("412451285841818").unwrap().get(),
            412451285841818
        );
    }

    #[test]
    fn ids_refuse_non_digits_zero_leading_zero_and_overflow() {
        for bad in [
            "",
            " ",
            "12a",
            "-5",
            "+5",
            "1.5",
            "0",
            "007",
            "18446744073709551616",
            "１２",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn user_id_serialises_as_string_and_reads_numbers_or_strings() {
        let id = UserId::parse("454881884228").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"454881884228\"");
        let a: UserId = serde_json::from_str("454881884228").unwrap();
        let b: UserId = serde_json::from_str("\"454881884228\"").unwrap();
        assert_eq!(a, id);
        assert_eq!(b, id);
    }

    #[test]
    fn number_serialises_as_integer() {
        let n = MemberNumber::parse("177").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "177");
    }

    #[test]
    fn a_member_without_a_number_says_why_and_reads_back() {
        let mut m = CachedMember::for_test(454881884228, 7, 1).member;
        m.number = None;
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["number"], serde_json::Value::Null);
        assert_eq!(json["number_missing_reason"], NO_NUMBER_ASSIGNED);
        let back: Member = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        m.number = MemberNumber::new(7);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["number"], 7);
        assert!(json.get("number_missing_reason").is_none());
    }

    #[test]
    fn zsxq_times_parse_with_and_without_colon_offsets() {
        let a = parse_zsxq_time_ms("2024-09-04T22:39:05.287+0800").unwrap();
        let b = parse_zsxq_time_ms("2024-09-04T22:39:05.287+08:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(iso_utc(a), "2024-09-04T14:39:05.287Z");
        assert_eq!(parse_zsxq_time_ms("yesterday"), None);
    }
}
