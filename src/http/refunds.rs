//! The operator's refund marks on a camp's list (`refund/marks.rs`): mark
//! one participant, mark a batch, read the audit log. Admin only: a mark
//! decides whether someone is paid.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::AppState;
use super::error::{ApiError, ok};
use super::extract::{Admin, Json, JsonObject, Path, Path2, Query};
use super::params::{self, int_param};
use crate::domain::{CheckinId, UserId};
use crate::refund::marks::{ADMIN_ACTOR, BATCH_MAX, MarkError, MarkOutcome, Note};
use crate::store::marks::RefundStatus;

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RefundStatus>, D::Error> {
    let options = RefundStatus::ALL.map(|s| (s.as_str(), s));
    params::query_choice(d, "status", &options).map(Some)
}

fn note<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Note>, D::Error> {
    let raw = Option::<String>::deserialize(d)?.unwrap_or_default();
    Note::parse(&raw).map_err(de::Error::custom)
}

/// Ids as JSON strings of digits only: a JSON number above 2^53 would
/// arrive rounded to someone else's id.
fn user_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UserId>, D::Error> {
    let raw = Vec::<serde_json::Value>::deserialize(d).map_err(|_| {
        de::Error::custom("user_ids 必须是字符串数组 (user_ids must be an array of id strings)")
    })?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "user_ids 不能为空 (user_ids must name at least one user)",
        ));
    }
    if raw.len() > BATCH_MAX {
        return Err(de::Error::custom(format!(
            "user_ids 最多 {BATCH_MAX} 个，现有 {} 个 (at most {BATCH_MAX} user_ids per batch; got {})",
            raw.len(),
            raw.len()
        )));
    }
    raw.iter()
        .enumerate()
        .map(|(i, value)| {
            let text = value.as_str().ok_or_else(|| {
                de::Error::custom(format!(
                    "user_ids[{i}] 必须是数字字符串，如 \"454881884228\" (user_ids[{i}] must be a string of digits, got {value})"
                ))
            })?;
            UserId::parse(text).map_err(|e| de::Error::custom(format!("user_ids[{i}] {text:?}: {e}")))
        })
        .collect()
}

/// The body of `PUT /api/camps/{checkin_id}/refunds/{user_id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarkBody {
    #[serde(deserialize_with = "status")]
    status: Option<RefundStatus>,
    #[serde(deserialize_with = "note")]
    note: Option<Note>,
}

impl JsonObject for MarkBody {
    const FIELDS: &'static [&'static str] = &["status", "note"];
    const EXAMPLE: &'static str = r#"{"status": "refunded", "note": "微信已转"}"#;
}

/// The body of `POST /api/camps/{checkin_id}/refunds`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchBody {
    #[serde(deserialize_with = "user_ids")]
    user_ids: Vec<UserId>,
    #[serde(deserialize_with = "status")]
    status: Option<RefundStatus>,
    #[serde(deserialize_with = "note")]
    note: Option<Note>,
}

impl JsonObject for BatchBody {
    const FIELDS: &'static [&'static str] = &["user_ids", "status", "note"];
    const EXAMPLE: &'static str = r#"{"user_ids": ["454881884228"], "status": "refunded"}"#;
}

fn required(status: Option<RefundStatus>) -> Result<RefundStatus, ApiError> {
    status.ok_or_else(|| {
        ApiError::bad_request(
            "缺少 status，只能是 pending|refunded|rejected (status is required: pending|refunded|rejected)",
        )
    })
}

int_param! {
    /// `limit` of the audit log: how many entries, newest first.
    LogLimit("limit", 1, 1_000, default 200)
}

/// The query of `GET /api/camps/{checkin_id}/refunds/log`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    limit: LogLimit,
}

fn marked(outcome: MarkOutcome) -> Response {
    let message = if outcome.changed == 0 {
        "标记未变 (nothing changed: the marks were already so)"
    } else {
        "标记成功"
    };
    ok(message, outcome)
}

/// `PUT /api/camps/{checkin_id}/refunds/{user_id}` body `{"status", "note"}`.
pub async fn mark_one(
    _admin: Admin,
    State(app): State<Arc<AppState>>,
    Path2(camp, user): Path2<CheckinId, UserId>,
    Json(body): Json<MarkBody>,
) -> Result<Response, ApiError> {
    let status = required(body.status)?;
    let outcome = app
        .refunds
        .mark(camp, &[user], status, body.note, ADMIN_ACTOR)
        .await?;
    Ok(marked(outcome))
}

/// `POST /api/camps/{checkin_id}/refunds` body `{"user_ids", "status",
/// "note"}`: all or none.
pub async fn mark_batch(
    _admin: Admin,
    State(app): State<Arc<AppState>>,
    Path(camp): Path<CheckinId>,
    Json(body): Json<BatchBody>,
) -> Result<Response, ApiError> {
    let status = required(body.status)?;
    if body.user_ids.is_empty() {
        return Err(ApiError::bad_request(
            "缺少 user_ids (user_ids is required: an array of id strings)",
        ));
    }
    let outcome = app
        .refunds
        .mark(camp, &body.user_ids, status, body.note, ADMIN_ACTOR)
        .await?;
    Ok(marked(outcome))
}

/// `GET /api/camps/{checkin_id}/refunds/log?limit=`: newest first.
pub async fn log(
    _admin: Admin,
    State(app): State<Arc<AppState>>,
    Path(camp): Path<CheckinId>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = usize::try_from(q.limit.get()).unwrap_or(usize::MAX);
    let entries = app.refunds.mark_log(camp, limit).await?;
    Ok(ok(
        "查询成功",
        serde_json::json!({ "checkin_id": camp, "count": entries.len(), "entries": entries }),
    ))
}

impl From<MarkError> for ApiError {
    fn from(e: MarkError) -> Self {
        match e {
            MarkError::NotParticipant { .. } => ApiError::bad_request(e.to_string()),
            MarkError::Refund(r) => r.into(),
            MarkError::Conflict => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            MarkError::Store(s) => {
                tracing::warn!(error = %s, "refund marks: store failed");
                ApiError::unavailable(
                    "存储暂不可用：标记是否已保存未知，请查看退款记录后重试 (the store is unavailable: whether the marks were saved is unknown; check the refund list or log, then retry)",
                )
            }
        }
    }
}
