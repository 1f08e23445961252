//! The seed's six endpoints (seed §5.1, SPEC §3), paths and field names as
//! the seed has them. Every parameter is parsed here, at the edge, into the
//! domain types; a bad one is answered with a 400 envelope naming it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use std::io::Write as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, envelope, ok};
use crate::cache::jobs::JobId;
use crate::cache::near::Record;
use crate::cache::sync::{SyncError, SyncOptions};
use crate::cache::{CacheStatus, rate_percent};
use crate::domain::{CachedMember, MemberNumber, NO_NUMBER_ASSIGNED, UserId, iso_utc};
use crate::store::{SortBy, SortOrder};

/// A member in `GET /api/users` (seed §5.1.1: the short form).
#[derive(Serialize)]
struct ListedUser<'a> {
    user_id: UserId,
    number: Option<MemberNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    number_missing_reason: Option<&'static str>,
    name: &'a str,
    avatar_url: &'a str,
    join_time: &'a str,
    status: &'a str,
}

/// A member with its cache status (seed §5.1.2).
#[derive(Serialize)]
struct UserAnswer<'a> {
    #[serde(flatten)]
    member: &'a CachedMember,
    cache_status: CacheStatus,
}

/// Parses an optional integer query parameter within a range.
pub fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    let raw = raw.trim();
    let parsed = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse::<u64>().ok()
    } else {
        None
    };
    match parsed {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::bad_request(format!(
            "参数 {name} 必须是 {min} 到 {max} 之间的整数 ({name} must be an integer from {min} to {max}, got {raw:?})"
        ))),
    }
}

/// Parses an optional enumerated query parameter.
pub fn enum_param<'a>(
    q: &'a HashMap<String, String>,
    name: &str,
    default: &'a str,
    allowed: &[&str],
) -> Result<&'a str, ApiError> {
    let value = q.get(name).map(|s| s.trim()).unwrap_or(default);
    if allowed.contains(&value) {
        Ok(value)
    } else {
        let list = allowed.join("|");
        Err(ApiError::bad_request(format!(
            "参数 {name} 只能是 {list} ({name} must be one of {list}, got {value:?})"
        )))
    }
}

/// `GET /api/users?page=&page_size=&sort_by=&order=`
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let page = int_param(&q, "page", 1, 1, 1_000_000)?;
    let page_size = int_param(&q, "page_size", 50, 1, 200)?;
    let sort = match enum_param(&q, "sort_by", "number", &["number", "join_time"])? {
        "join_time" => SortBy::JoinTime,
        _ => SortBy::Number,
    };
    let order = match enum_param(&q, "order", "asc", &["asc", "desc"])? {
        "desc" => SortOrder::Desc,
        _ => SortOrder::Asc,
    };
    let result = app
        .cache
        .page(sort, order, page, page_size)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "listing cached members failed");
            ApiError::unavailable(
                "缓存存储暂不可用，请稍后重试 (the cache store is unavailable; retry shortly)",
            )
        })?;
    let stats = app.cache.stats_counters().await;
    let users: Vec<ListedUser<'_>> = result
        .members
        .iter()
        .map(|c| ListedUser {
            user_id: c.member.user_id,
            number: c.member.number,
            number_missing_reason: c.member.number.is_none().then_some(NO_NUMBER_ASSIGNED),
            name: &c.member.name,
            avatar_url: &c.member.avatar_url,
            join_time: &c.member.join_time,
            status: &c.member.status,
        })
        .collect();
    let total_pages = result.total.div_ceil(page_size);
    Ok(ok(
        "查询成功",
        serde_json::json!({
            "users": users,
            "pagination": {
                "page": page,
                "page_size": page_size,
                "total_count": result.total,
                "total_pages": total_pages,
            },
            "cache_info": {
                "total_cached": result.total,
                "cache_hit_rate": rate_percent(stats.counters.cache_hits, stats.counters.total_requests),
                "last_sync_time": stats.last_sync_time.map(iso_utc),
            }
        }),
    ))
}

/// `GET /api/users/:userId` — the hot path (issue #8). Ids of plain digits
/// do not reach the router: the pipeline answers them with [`answer_by_id`]
/// directly (see `pipeline.rs`); this handler serves the rest (ids that
/// need percent-decoding, and refusals of what is not an id).
pub async fn by_id(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    answer_by_id(&app, &raw).await
}

/// The answer to `GET /api/users/{raw}`, however the request was routed.
pub async fn answer_by_id(app: &AppState, raw: &str) -> Result<Response, ApiError> {
    let id = UserId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (record, cache_status) = app.cache.lookup(id).await?;
    Ok(member_answer(&record, cache_status))
}

/// `GET /api/users/number/:number`
pub async fn by_number(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let number = MemberNumber::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (record, cache_status) = app.cache.lookup_by_number(number).await?;
    Ok(member_answer(&record, cache_status))
}

/// The envelope of one member, spliced from the record's pre-serialised
/// JSON: `{"code":200,"message":"查询成功","data":{…member…,"cache_status":
/// "hit"},"timestamp":…}`. One allocation and a few copies per request
/// instead of building a `serde_json::Value` tree of the member; the same
/// JSON the generic envelope would write, fields in struct order.
fn member_answer(record: &Record, cache_status: CacheStatus) -> Response {
    const HEAD: &[u8] = "{\"code\":200,\"message\":\"查询成功\",\"data\":".as_bytes();
    let json = &record.json;
    let Some(object) = json.strip_suffix(b"}").filter(|o| o.starts_with(b"{")) else {
        // Never expected (serialising the record cannot fail); stay correct.
        return ok(
            "查询成功",
            UserAnswer {
                member: &record.member,
                cache_status,
            },
        );
    };
    let status: &[u8] = match cache_status {
        CacheStatus::Hit => b",\"cache_status\":\"hit\"},\"timestamp\":",
        CacheStatus::Miss => b",\"cache_status\":\"miss\"},\"timestamp\":",
    };
    let mut body = Vec::with_capacity(HEAD.len() + object.len() + status.len() + 16);
    body.extend_from_slice(HEAD);
    body.extend_from_slice(object);
    body.extend_from_slice(status);
    let _ = write!(body, "{}}}", chrono::Utc::now().timestamp_millis());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Parsed body of `POST /api/users/sync`.
#[derive(Debug, Clone, Copy)]
pub struct SyncBody {
    pub force: bool,
    pub concurrency: usize,
    /// Answer 202 with a job id at once instead of the finished report.
    pub run_async: bool,
}

/// Parses `{force, concurrency, async}`; an empty body means the defaults.
pub fn parse_sync_body(body: &[u8], default_concurrency: usize) -> Result<SyncBody, ApiError> {
    let mut parsed = SyncBody {
        force: false,
        concurrency: default_concurrency.clamp(1, 10),
        run_async: false,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(parsed);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "请求体不是合法的 JSON (the body is not valid JSON: {e})"
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "请求体必须是 JSON 对象 (the body must be a JSON object)",
        ));
    };
    for (key, value) in &map {
        match (key.as_str(), value) {
            ("force", Value::Bool(b)) => parsed.force = *b,
            ("async", Value::Bool(b)) => parsed.run_async = *b,
            ("force" | "async", _) => {
                return Err(ApiError::bad_request(format!(
                    "{key} 必须是 true 或 false ({key} must be a boolean)"
                )));
            }
            ("concurrency", v) => match v.as_u64() {
                Some(c @ 1..=10) => parsed.concurrency = c as usize,
                _ => {
                    return Err(ApiError::bad_request(
                        "concurrency 必须是 1 到 10 之间的整数 (concurrency must be an integer from 1 to 10)",
                    ));
                }
            },
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "未知字段 {other:?}，只接受 force、concurrency 和 async (unknown field {other:?}; expected force, concurrency, async)"
                )));
            }
        }
    }
    Ok(parsed)
}

/// Maps a failed sync to its envelope.
fn sync_error(e: SyncError) -> ApiError {
    match e {
        SyncError::AlreadyRunning => ApiError::new(
            StatusCode::CONFLICT,
            "已有同步任务在运行 (a sync is already running)",
        ),
        SyncError::Upstream(u) => u.into(),
        SyncError::Store(s) => {
            tracing::warn!(error = %s, "sync could not use the store");
            ApiError::unavailable(
                "缓存存储暂不可用，无法同步 (the cache store is unavailable; cannot sync)",
            )
        }
        SyncError::Interrupted => ApiError::unavailable(
            "同步被中断，请查看任务状态后重试 (the sync was interrupted; check the job and retry)",
        ),
    }
}

/// `POST /api/users/sync` (admin). Synchronous by default (the seed's
/// answer); `{"async": true}` or `?async=true` answers 202 with a job id.
pub async fn sync(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let mut body = parse_sync_body(&body, app.default_concurrency)?;
    match q.get("async").map(String::as_str) {
        None => {}
        Some("true" | "1") => body.run_async = true,
        Some("false" | "0") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "参数 async 只能是 true 或 false (async must be true or false, got {other:?})"
            )));
        }
    }
    let opts = SyncOptions {
        force: body.force,
        concurrency: body.concurrency,
    };
    let started = app
        .cache
        .jobs()
        .start(&app.cache, opts)
        .map_err(|running| {
            let mut e = ApiError::new(StatusCode::CONFLICT, running.to_string());
            e.data = Some(serde_json::json!({ "job_id": running.0 }));
            e
        })?;
    if body.run_async {
        let job_id = started.id.clone();
        let data = serde_json::json!({
            "job_id": job_id,
            "status_url": format!("/api/users/sync/{}", job_id.as_str()),
        });
        return Ok(envelope(StatusCode::ACCEPTED, "同步任务已开始", data));
    }
    let report = started.wait().await.map_err(sync_error)?;
    Ok(ok("同步完成", report))
}

/// `GET /api/users/sync/{job_id}`: progress of a sync job.
pub async fn sync_status(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = JobId::parse(&raw).ok_or_else(|| {
        ApiError::bad_request("job_id 必须是 32 位十六进制字符 (job_id must be 32 hex digits)")
    })?;
    let status = app.cache.jobs().status(&id).ok_or_else(|| {
        ApiError::not_found(format!("没有这个同步任务 (no sync job {:?})", id.as_str()))
    })?;
    Ok(ok("查询成功", status))
}

/// `DELETE /api/users/cache` (admin)
pub async fn clear(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let report = app.cache.clear().await.map_err(|e| {
        tracing::warn!(error = %e, "clearing the cache failed");
        ApiError::unavailable(
            "缓存存储暂不可用，未能清空 (the cache store is unavailable; nothing was cleared)",
        )
    })?;
    tracing::info!(
        deleted_keys = report.deleted_keys,
        deleted_users = report.deleted_users,
        "cache cleared"
    );
    Ok(ok(
        "缓存已清空",
        serde_json::json!({ "deleted_keys": report.deleted_keys, "deleted_users": report.deleted_users }),
    ))
}

/// `GET /api/users/cache/stats`
pub async fn stats(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(ok("查询成功", app.cache.stats().await))
}
