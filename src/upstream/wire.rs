//! The upstream's JSON, as captured from the real API (`docs/UPSTREAM.md`),
//! and the envelope decoding. Kept apart from the HTTP client so it can be
//! tested on plain JSON without a network.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::UpstreamError;
use crate::domain::{CheckinId, Member, UserId};

/// `{"succeeded": bool, "code": n, "info": "...", "error": "...", "resp_data": {...}}`.
#[derive(Debug, Deserialize)]
struct Envelope {
    succeeded: Option<bool>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    resp_data: Option<Value>,
}

/// Decodes an envelope body into its `resp_data`, or the typed failure.
/// `info` is read first, then `error` (either may be empty or absent).
pub fn decode_envelope(body: &[u8]) -> Result<Value, UpstreamError> {
    let env: Envelope = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Malformed(format!("not an envelope: {e}")))?;
    match env.succeeded {
        Some(true) => env
            .resp_data
            .ok_or_else(|| UpstreamError::Malformed("succeeded without resp_data".into())),
        Some(false) => {
            let message = [env.info, env.error]
                .into_iter()
                .flatten()
                .find(|m| !m.trim().is_empty())
                .unwrap_or_default();
            let code = env
                .code
                .ok_or_else(|| UpstreamError::Malformed("failure without code".into()))?;
            Err(UpstreamError::from_code(code, message))
        }
        None => Err(UpstreamError::Malformed("missing `succeeded`".into())),
    }
}

/// Takes `field` out of `resp_data` and decodes it.
pub fn field<T: serde::de::DeserializeOwned>(data: Value, field: &str) -> Result<T, UpstreamError> {
    let Value::Object(mut map) = data else {
        return Err(UpstreamError::Malformed(
            "resp_data is not an object".into(),
        ));
    };
    let value = map
        .remove(field)
        .ok_or_else(|| UpstreamError::Malformed(format!("resp_data.{field} missing")))?;
    serde_json::from_value(value)
        .map_err(|e| UpstreamError::Malformed(format!("resp_data.{field}: {e}")))
}

/// A check-in camp (`resp_data.checkins[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camp {
    pub checkin_id: CheckinId,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub checkin_days: u32,
    #[serde(default)]
    pub status: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub joined_count: u64,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub validity: Validity,
    #[serde(default)]
    pub statistics: CampStatistics,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validity {
    #[serde(default)]
    pub long_period: bool,
    #[serde(default)]
    pub expiration_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampStatistics {
    #[serde(default)]
    pub joined_count: u64,
    #[serde(default)]
    pub completed_count: u64,
}

/// `resp_data.statistics` of `GET /v2/groups/{gid}/checkins/{cid}/statistics`
/// (docs/UPSTREAM.md). `checkined_count` is what a whole accumulated ranking
/// must add up to, so both counts are required: a statistics answer without
/// them proves nothing and is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinStatistics {
    /// Who joined the camp.
    pub joined_count: u64,
    /// Check-ins made in the camp, all participants together: the sum of the
    /// accumulated ranking's `checkined_days` (a public capture shows 1 054
    /// for a camp of 163), not a count of people.
    pub checkined_count: u64,
    #[serde(default)]
    pub completed_count: u64,
}

/// The user part of a ranking row: only the id, names and avatar — no number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingUser {
    pub user_id: UserId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub avatar_url: String,
}

/// One row of `ranking_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingRow {
    pub user: RankingUser,
    /// Position in the list; the next page's `index`.
    pub rankings: u64,
    pub checkined_days: u32,
}

/// One page of a ranking. `user_specific` (the caller's own row) is ignored:
/// it is not a participant row unless it also appears in the list.
/// `ranking_list` is required: an answer without it is malformed, not an
/// empty page — read as empty it would silently end the ranking early and
/// shorten a refund list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RankingPage {
    pub ranking_list: Vec<RankingRow>,
}

/// `resp_data.member`, with the flat member fields, which must be the member
/// asked for: a record of somebody else (seen from a misbehaving upstream)
/// would put another person's number on this one's refund row, so it is
/// malformed, never cached.
pub fn member_from(data: Value, asked: UserId) -> Result<Member, UpstreamError> {
    let member: Member = field(data, "member")?;
    if member.user_id != asked {
        return Err(UpstreamError::Malformed(format!(
            "asked for member {asked}, the answer describes {}",
            member.user_id
        )));
    }
    Ok(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_envelope_yields_resp_data() {
        let body = json!({"succeeded": true, "resp_data": {"member": {
            "user_id": 454881884228u64, "name": "青弦", "avatar_url": "https://images.zsxq.com/a.jpg",
            "number": 177, "join_time": "2024-09-04T22:39:05.287+0800", "status": "joined",
            "expired_time": "2026-09-04T22:39:05.287+0800", "introduction": "高级前端开发工程师"
        }, "joined_days": 400, "topics_count": 3}});
        let data = decode_envelope(body.to_string().as_bytes()).unwrap();
        let m = member_from(data, UserId::new(454881884228).unwrap()).unwrap();
        assert_eq!(m.user_id.get(), 454881884228);
        assert_eq!(m.number.map(|n| n.get()), Some(177));
        assert_eq!(m.unique_id, "", "a missing unique_id is kept empty");
    }

    #[test]
    fn failure_envelope_reads_info_then_error() {
        let with_info = json!({"succeeded": false, "code": 1059, "info": "slow down", "error": "x", "resp_data": {}});
        let e = decode_envelope(with_info.to_string().as_bytes()).unwrap_err();
        assert!(e.is_throttle());
        let only_error = json!({"succeeded": false, "code": 1037, "error": "用户已退出"});
        let e = decode_envelope(only_error.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            e,
            UpstreamError::NotMember {
                code: 1037,
                message: "用户已退出".into()
            }
        );
        let empty_info =
            json!({"succeeded": false, "code": 11507, "info": "", "error": "admins only"});
        let e = decode_envelope(empty_info.to_string().as_bytes()).unwrap_err();
        assert!(e.is_listing_refused());
        assert!(e.to_string().contains("admins only"));
    }

    #[test]
    fn garbage_and_missing_fields_are_malformed_not_panics() {
        for body in [
            "",
            "<html>502</html>",
            "{\"succeeded\": true",
            "{\"succeeded\": true}",
            "{\"succeeded\": false}",
            "{\"code\": 1}",
            "[]",
        ] {
            let e = decode_envelope(body.as_bytes()).unwrap_err();
            assert!(
                matches!(e, UpstreamError::Malformed(_)),
                "{body:?} -> {e:?}"
            );
        }
        let one = UserId::new(1).unwrap();
        let zero_id = json!({"member": {"user_id": 0, "name": "x", "number": 3}});
        assert!(matches!(
            member_from(zero_id, one),
            Err(UpstreamError::Malformed(_))
        ));
        let bad_number = json!({"member": {"user_id": 1, "name": "x", "number": -3}});
        assert!(matches!(
            member_from(bad_number, one),
            Err(UpstreamError::Malformed(_))
        ));
    }

    #[test]
    fn a_member_without_a_number_is_valid_and_reads_as_none() {
        let one = UserId::new(1).unwrap();
        for member in [
            json!({"user_id": 1, "name": "x"}),
            json!({"user_id": 1, "name": "x", "number": null}),
            json!({"user_id": 1, "name": "x", "number": 0}),
            json!({"user_id": 1, "name": "x", "number": ""}),
        ] {
            let m = member_from(json!({ "member": member }), one).unwrap();
            assert_eq!(m.number, None, "{member}");
        }
        let as_text = json!({"member": {"user_id": 1, "name": "x", "number": "42"}});
        assert_eq!(
            member_from(as_text, one).unwrap().number.map(|n| n.get()),
            Some(42)
        );
    }

    #[test]
    fn a_record_of_somebody_else_is_malformed() {
        let data = json!({"member": {"user_id": 2, "name": "someone else", "number": 9}});
        let e = member_from(data, UserId::new(1).unwrap()).unwrap_err();
        assert!(matches!(e, UpstreamError::Malformed(_)), "{e:?}");
    }

    #[test]
    fn checkin_statistics_need_both_counts() {
        let data = json!({"statistics": {"joined_count": 170, "completed_count": 80,
            "checkined_count": 167, "ranking_list": []}});
        let s: CheckinStatistics = field(data, "statistics").unwrap();
        assert_eq!((s.joined_count, s.checkined_count), (170, 167));
        let partial = json!({"statistics": {"joined_count": 170}});
        assert!(field::<CheckinStatistics>(partial, "statistics").is_err());
    }

    #[test]
    fn ranking_rows_decode_with_user_specific_ignored() {
        let data = json!({
            "ranking_list": [
                {"user": {"user_id": 412451285841818u64, "name": "🐱猫猫", "alias": "", "avatar_url": ""}, "rankings": 1, "checkined_days": 7},
                {"user": {"user_id": 15411425221212u64, "name": "b"}, "rankings": 2, "checkined_days": 3}
            ],
            "user_specific": {"user": {"user_id": 999999999999u64, "name": "me"}, "rankings": 0, "checkined_days": 0}
        });
        let page: RankingPage = serde_json::from_value(data).unwrap();
        assert_eq!(page.ranking_list.len(), 2);
        assert_eq!(page.ranking_list[0].user.name, "🐱猫猫");
        assert_eq!(page.ranking_list[1].rankings, 2);
    }

    #[test]
    fn a_ranking_page_without_its_list_is_an_error_not_an_empty_page() {
        let empty: RankingPage = serde_json::from_value(json!({"ranking_list": []})).unwrap();
        assert!(empty.ranking_list.is_empty());
        assert!(serde_json::from_value::<RankingPage>(json!({})).is_err());
        assert!(serde_json::from_value::<RankingPage>(json!({"user_specific": {}})).is_err());
    }

    #[test]
    fn camps_decode_with_nested_validity_and_statistics() {
        let data = json!({"checkins": [{
            "checkin_id": 8424481182u64, "title": "7天打卡", "text": "完成7天打卡，押金39全退",
            "checkin_days": 7, "status": "over", "type": "accumulated", "joined_count": 167,
            "create_time": "2025-01-01T10:00:00.000+0800",
            "validity": {"long_period": false, "expiration_time": "2025-01-08T10:00:00.000+0800"},
            "statistics": {"joined_count": 167, "completed_count": 80, "other": 1}
        }]});
        let camps: Vec<Camp> = field(data, "checkins").unwrap();
        assert_eq!(camps[0].checkin_id.get(), 8424481182);
        assert_eq!(
            camps[0].validity.expiration_time,
            "2025-01-08T10:00:00.000+0800"
        );
        assert_eq!(camps[0].statistics.completed_count, 80);
    }
}
