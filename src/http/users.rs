//! The member endpoints: lookups by id and by number, the paged list, the
//! cache's statistics, and the admin endpoints that sync and clear it. Paths
//! and field names are the original service's, so its clients keep working.
//! Every parameter arrives parsed (`extract.rs`, `params.rs`).

use std::io::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::AppState;
use super::error::{ApiError, envelope, ok};
use super::extract::{Admin, Json, JsonObject, Path, Query, path_param};
use super::params::{self, int_param};
use crate::cache::jobs::JobId;
use crate::cache::near::Record;
use crate::cache::sync::{SyncError, SyncOptions};
use crate::cache::{CacheStatus, rate_percent};
use crate::domain::{CachedMember, MemberNumber, NO_NUMBER_ASSIGNED, UserId, iso_utc};
use crate::store::{SortBy, SortOrder};

/// A member in `GET /api/users`: the short form, without the raw record.
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

/// A member with its cache status, the answer of a lookup.
#[derive(Serialize)]
struct UserAnswer<'a> {
    #[serde(flatten)]
    member: &'a CachedMember,
    cache_status: CacheStatus,
}

int_param! {
    /// `page` of `GET /api/users`, from 1.
    Page("page", 1, 1_000_000, default 1)
}

int_param! {
    /// `page_size` of `GET /api/users`.
    PageSize("page_size", 1, 200, default 50)
}

/// The query of `GET /api/users`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    page: Page,
    page_size: PageSize,
    #[serde(deserialize_with = "sort_by")]
    sort_by: SortBy,
    #[serde(deserialize_with = "order")]
    order: SortOrder,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            page: Page::default(),
            page_size: PageSize::default(),
            sort_by: SortBy::Number,
            order: SortOrder::Asc,
        }
    }
}

fn sort_by<'de, D: Deserializer<'de>>(d: D) -> Result<SortBy, D::Error> {
    let options = [("number", SortBy::Number), ("join_time", SortBy::JoinTime)];
    params::query_choice(d, "sort_by", &options)
}

fn order<'de, D: Deserializer<'de>>(d: D) -> Result<SortOrder, D::Error> {
    let options = [("asc", SortOrder::Asc), ("desc", SortOrder::Desc)];
    params::query_choice(d, "order", &options)
}

/// `GET /api/users?page=&page_size=&sort_by=&order=`
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (page, page_size) = (q.page.get(), q.page_size.get());
    // The counters for `cache_info` are read beside the page, not after
    // it: one round trip less on every page.
    let (result, stats) = tokio::join!(
        app.cache.page(q.sort_by, q.order, page, page_size),
        app.cache.stats_counters()
    );
    let result = result.map_err(|e| {
        tracing::warn!(error = %e, "listing cached members failed");
        ApiError::unavailable(
            "缓存存储暂不可用，请稍后重试 (the cache store is unavailable; retry shortly)",
        )
    })?;
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

/// `GET /api/users/{user_id}`, the hot route. Ids of plain digits do not
/// reach the router: the pipeline answers them with [`answer_by_id`]
/// (`pipeline.rs`); this handler serves the rest (ids that need
/// percent-decoding, and refusals of what is not an id).
pub async fn by_id(
    State(app): State<Arc<AppState>>,
    Path(id): Path<UserId>,
) -> Result<Response, ApiError> {
    answer(&app, id).await
}

/// The answer to `GET /api/users/{raw}` as the pipeline takes it, before
/// routing: `raw` is parsed as [`Path`] parses it for [`by_id`].
pub async fn answer_by_id(app: &AppState, raw: &str) -> Result<Response, ApiError> {
    answer(app, path_param(raw)?).await
}

/// The member `id`, however the request was routed.
async fn answer(app: &AppState, id: UserId) -> Result<Response, ApiError> {
    let (record, cache_status) = app.cache.lookup(id).await?;
    Ok(member_answer(&record, cache_status))
}

/// `GET /api/users/number/{number}`
pub async fn by_number(
    State(app): State<Arc<AppState>>,
    Path(number): Path<MemberNumber>,
) -> Result<Response, ApiError> {
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

/// The body of `POST /api/users/sync`: `{force, concurrency, async}`, each
/// optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncBody {
    /// Refetch members that are cached and fresh too.
    #[serde(deserialize_with = "force")]
    force: bool,
    concurrency: Concurrency,
    /// Answer 202 with a job id at once instead of the finished report.
    #[serde(rename = "async", deserialize_with = "async_in_body")]
    run_async: bool,
}

impl JsonObject for SyncBody {
    const FIELDS: &'static [&'static str] = &["force", "concurrency", "async"];
    const EXAMPLE: &'static str = r#"{"force": false, "concurrency": 5, "async": true}"#;
}

fn force<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    params::json_flag(d, "force")
}

fn async_in_body<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    params::json_flag(d, "async")
}

/// `concurrency` of a sync, 1..=10; `API_CONCURRENCY` when not given.
#[derive(Debug, Default, Clone, Copy)]
struct Concurrency(Option<u64>);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        params::json_int(d, "concurrency", 1, 10).map(|c| Self(Some(c)))
    }
}

impl Concurrency {
    /// The value given, else `default` brought into 1..=10.
    fn or(self, default: usize) -> usize {
        self.0
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(default.clamp(1, 10))
    }
}

/// The query of `POST /api/users/sync`: `?async=true` as the body's
/// `"async": true` (either one makes the sync asynchronous).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SyncQuery {
    #[serde(rename = "async", deserialize_with = "async_in_query")]
    run_async: bool,
}

fn async_in_query<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    params::query_flag(d, "async")
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

/// `POST /api/users/sync` (admin). Synchronous by default, as the
/// original service answered; `{"async": true}` or `?async=true` answers
/// 202 with a job id.
pub async fn sync(
    _admin: Admin,
    State(app): State<Arc<AppState>>,
    Query(q): Query<SyncQuery>,
    Json(body): Json<SyncBody>,
) -> Result<Response, ApiError> {
    let opts = SyncOptions {
        force: body.force,
        concurrency: body.concurrency.or(app.default_concurrency),
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
    if body.run_async || q.run_async {
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
    Path(id): Path<JobId>,
) -> Result<Response, ApiError> {
    let status = app.cache.jobs().status(&id).ok_or_else(|| {
        ApiError::not_found(format!("没有这个同步任务 (no sync job {:?})", id.as_str()))
    })?;
    Ok(ok("查询成功", status))
}

/// `DELETE /api/users/cache` (admin)
pub async fn clear(_admin: Admin, State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
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
