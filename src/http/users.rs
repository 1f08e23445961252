//! The seed's six endpoints (seed §5.1, SPEC §3), paths and field names as
//! the seed has them. Every parameter is parsed here, at the edge, into the
//! domain types; a bad one is answered with a 400 envelope naming it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ok};
use crate::cache::sync::{SyncError, SyncOptions, SyncProgress};
use crate::cache::{CacheStatus, rate_percent};
use crate::domain::{CachedMember, MemberNumber, UserId, iso_utc};
use crate::store::{SortBy, SortOrder};

/// A member in `GET /api/users` (seed §5.1.1: the short form).
#[derive(Serialize)]
struct ListedUser<'a> {
    user_id: UserId,
    number: MemberNumber,
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

/// `GET /api/users/:userId`
pub async fn by_id(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = UserId::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (member, cache_status) = app.cache.get(id).await?;
    Ok(ok(
        "查询成功",
        UserAnswer {
            member: &member,
            cache_status,
        },
    ))
}

/// `GET /api/users/number/:number`
pub async fn by_number(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let number = MemberNumber::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (member, cache_status) = app.cache.get_by_number(number).await?;
    Ok(ok(
        "查询成功",
        UserAnswer {
            member: &member,
            cache_status,
        },
    ))
}

/// Parsed body of `POST /api/users/sync`.
#[derive(Debug, Clone, Copy)]
pub struct SyncBody {
    pub force: bool,
    pub concurrency: usize,
}

/// Parses `{force, concurrency}`; an empty body means the defaults.
pub fn parse_sync_body(body: &[u8], default_concurrency: usize) -> Result<SyncBody, ApiError> {
    let mut parsed = SyncBody {
        force: false,
        concurrency: default_concurrency.clamp(1, 10),
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
            ("force", _) => {
                return Err(ApiError::bad_request(
                    "force 必须是 true 或 false (force must be a boolean)",
                ));
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
                    "未知字段 {other:?}，只接受 force 和 concurrency (unknown field {other:?}; expected force, concurrency)"
                )));
            }
        }
    }
    Ok(parsed)
}

/// `POST /api/users/sync` (admin)
pub async fn sync(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.require_admin(&headers)?;
    let body = parse_sync_body(&body, app.default_concurrency)?;
    let opts = SyncOptions {
        force: body.force,
        concurrency: body.concurrency,
    };
    let report = app
        .cache
        .sync(opts, Arc::new(SyncProgress::default()))
        .await
        .map_err(|e| match e {
            SyncError::AlreadyRunning => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "已有同步任务在运行 (a sync is already running)",
            ),
            SyncError::Upstream(u) => u.into(),
            SyncError::Store(s) => {
                tracing::warn!(error = %s, "sync could not use the store");
                ApiError::unavailable(
                    "缓存存储暂不可用，无法同步 (the cache store is unavailable; cannot sync)",
                )
            }
        })?;
    Ok(ok("同步完成", report))
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
