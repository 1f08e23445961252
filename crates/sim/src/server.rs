//! The HTTP behaviour of the simulated Zsxq API, faithful to `docs/UPSTREAM.md`.
//!
//! Every `/v2` answer is HTTP 200 with the upstream envelope; failures are
//! told apart only by `code`, as upstream does. Each call passes the same
//! gate in the same order — count it, wait the configured latency, throttle
//! (1059), authenticate (401), check the signature if one is sent (1059) —
//! before any real work, so a throttled call is as cheap as upstream makes
//! it and still shows up in `/__sim/stats`. Path and query values are read
//! as strings and parsed here, so a bad value becomes a 1004 envelope rather
//! than axum's HTTP 400. Handlers read the request `Uri` as given: the
//! routes are not nested, so it is the full path the signature covers.
//!
//! The `/__sim/*` endpoints are the simulator's own control surface, not part
//! of the upstream; they answer plain JSON and need no token.
//!
//! Fault drills ([`SimFault`]) run as a layer around the `/v2` routes: the
//! handler answers as usual (so the call is counted, delayed, throttled and
//! checked like any other), then the layer spoils the answer — garbage,
//! truncated JSON, missing fields, HTTP 500 — or holds it back (`slow`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::data::{CampScope, RankingType, SimCamp, SimMember};
use super::state::{CallKind, SimFault, SimKnobsPatch, SimState, Throttle};

/// The ranking position (0-based) left out while `hide_participant` is on:
/// on the second page, as in the reported case.
pub const HIDDEN_POSITION: usize = 25;

/// Rows per `ranking_list` page, as observed upstream.
pub const RANKING_PAGE_SIZE: usize = 21;

/// Largest `count` the member list and camp list accept.
pub const MAX_PAGE_COUNT: u64 = 200;

/// `count` when a client leaves it out.
const DEFAULT_COUNT: u64 = 20;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Builds the routes over shared state; [`super::router`] and
/// [`super::spawn`] are the public ways in.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v2/groups/{gid}/members", get(member_list))
        .route("/v2/groups/{gid}/members/{uid}", get(member))
        .route(
            "/v2/groups/{gid}/members/{uid}/summary",
            get(member_summary),
        )
        .route("/v2/groups/{gid}/checkins", get(checkins))
        .route(
            "/v2/groups/{gid}/checkins/{cid}/ranking_list",
            get(ranking_list),
        )
        .route(
            "/v2/groups/{gid}/checkins/{cid}/statistics",
            get(checkin_statistics),
        )
        .route("/__sim/stats", get(stats))
        .route("/__sim/reset", post(reset))
        .route("/__sim/config", get(config).post(set_config))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), spoil))
        .with_state(state)
}

/// Largest answer the fault layer reads back to spoil; real ones are a few
/// kilobytes (a member-list page of 200 is the biggest).
const SPOIL_READ_LIMIT: usize = 4 * 1024 * 1024;

/// Applies the configured [`SimFault`] to a `/v2` answer.
async fn spoil(State(state): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v2/") {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    match state.fault() {
        SimFault::None => response,
        SimFault::Slow => {
            tokio::time::sleep(Duration::from_millis(state.slow_ms())).await;
            response
        }
        SimFault::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error: upstream worker crashed",
        )
            .into_response(),
        SimFault::Garbage => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        )
            .into_response(),
        SimFault::Truncated => {
            let body = answer_bytes(response).await;
            let cut = body.len() / 2;
            json_body(body.slice(..cut))
        }
        SimFault::Huge => huge_body(true),
        SimFault::HugeChunked => huge_body(false),
        SimFault::MissingFields => {
            let body = answer_bytes(response).await;
            match serde_json::from_slice::<Value>(&body) {
                Ok(mut value) => {
                    strip_fields(&mut value);
                    Json(value).into_response()
                }
                Err(_) => json_body(body),
            }
        }
    }
}

/// Bytes of the [`SimFault::Huge`] answers.
pub const HUGE_BODY_BYTES: usize = 100 << 20;

/// A JSON-looking answer of [`HUGE_BODY_BYTES`], streamed from one static
/// block so the simulator itself holds 64 KiB of it at most; with its
/// Content-Length or chunked.
fn huge_body(with_length: bool) -> Response {
    const BLOCK: usize = 64 * 1024;
    static PAD: [u8; BLOCK] = [b' '; BLOCK];
    const HEAD: &[u8] = br#"{"succeeded":true,"resp_data":{"pad":""#;
    let blocks = (HUGE_BODY_BYTES - HEAD.len()).div_ceil(BLOCK);
    let tail = HUGE_BODY_BYTES - HEAD.len() - (blocks - 1) * BLOCK;
    let chunks =
        std::iter::once(axum::body::Bytes::from_static(HEAD)).chain((0..blocks).map(move |i| {
            let n = if i + 1 == blocks { tail } else { BLOCK };
            axum::body::Bytes::from_static(&PAD[..n])
        }));
    let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>));
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response();
    if with_length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HUGE_BODY_BYTES.into());
    }
    response
}

async fn answer_bytes(response: Response) -> axum::body::Bytes {
    axum::body::to_bytes(response.into_body(), SPOIL_READ_LIMIT)
        .await
        .unwrap_or_default()
}

fn json_body(bytes: axum::body::Bytes) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response()
}

/// Removes what a client cannot do without from a success envelope: every
/// member's `number`, the camp list and the ranking rows.
fn strip_fields(envelope: &mut Value) {
    let Some(data) = envelope.get_mut("resp_data").and_then(Value::as_object_mut) else {
        return;
    };
    // `user_id` is what no member record can do without (a missing
    // `number` is valid: the group may not number its members).
    if let Some(member) = data.get_mut("member").and_then(Value::as_object_mut) {
        member.remove("user_id");
    }
    if let Some(members) = data.get_mut("members").and_then(Value::as_array_mut) {
        for member in members.iter_mut().filter_map(Value::as_object_mut) {
            member.remove("user_id");
        }
    }
    data.remove("checkins");
    data.remove("ranking_list");
    data.remove("statistics");
}

/// A successful answer: `{"succeeded": true, "resp_data": ...}`.
struct Success(Value);

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        Json(json!({"succeeded": true, "resp_data": self.0})).into_response()
    }
}

/// A failed answer: `{"succeeded": false, "code": N, "info"?, "error"?,
/// "resp_data": {}}`. Which of `info` and `error` appear varies by code on
/// purpose, so clients learn to read both (upstream, either may be empty or
/// absent: `docs/UPSTREAM.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    code: u32,
    info: Option<String>,
    error: Option<String>,
}

impl Failure {
    fn new(code: u32) -> Self {
        Self {
            code,
            info: None,
            error: None,
        }
    }

    fn info(mut self, text: impl Into<String>) -> Self {
        self.info = Some(text.into());
        self
    }

    fn error(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }

    fn unauthenticated() -> Self {
        Self::new(401).info("登录已过期，请重新登录")
    }

    fn bad_param(what: &str) -> Self {
        Self::new(1004)
            .info("参数错误")
            .error(format!("invalid parameter: {what}"))
    }

    fn bad_signature() -> Self {
        Self::new(1059).info("").error("签名校验失败")
    }

    fn bad_device() -> Self {
        Self::new(1059).info("设备状态异常")
    }

    /// A banned token: upstream's 401, with its own words.
    fn banned() -> Self {
        Self::new(401).info("账号存在异常，请重新登录")
    }

    /// The answer to an `X-Version` below [`MIN_X_VERSION`]; its code is our
    /// assumption (`docs/UPSTREAM.md`), the client goes by the words.
    fn version_too_old() -> Self {
        Self::new(1001)
            .info("当前版本过低，请升级到最新版本")
            .error("version too old")
    }

    fn throttled(why: Throttle) -> Self {
        match why {
            Throttle::Random => Self::new(1059).error("内部错误，请稍后重试"),
            Throttle::RateLimited => Self::new(1059).info("").error("操作太频繁，请稍后再试"),
        }
    }

    fn group_not_found() -> Self {
        Self::new(11102).info("星球不存在").error("group not found")
    }

    fn not_in_group() -> Self {
        Self::new(13002).info("该用户不在星球中")
    }

    fn member_left() -> Self {
        Self::new(1037).error("该用户已退出星球")
    }

    fn member_list_refused() -> Self {
        Self::new(11507).error("超过500人的星球，成员列表仅星主和管理员可见")
    }

    fn checkin_not_found() -> Self {
        Self::new(404).info("checkin not found")
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("succeeded".into(), Value::Bool(false));
        body.insert("code".into(), Value::from(self.code));
        if let Some(info) = self.info {
            body.insert("info".into(), Value::String(info));
        }
        if let Some(error) = self.error {
            body.insert("error".into(), Value::String(error));
        }
        body.insert("resp_data".into(), json!({}));
        Json(Value::Object(body)).into_response()
    }
}

/// What every `/v2` call goes through before its real work.
async fn gate(
    state: &SimState,
    kind: CallKind,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), Failure> {
    state.count_call(kind);
    let latency = state.latency_ms();
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if state.banned() {
        return Err(Failure::banned());
    }
    let verdict = checks(state, headers, uri);
    state.note_answer(verdict.as_ref().is_err_and(|f| f.code == 1059));
    verdict
}

/// The checks of [`gate`] after the ban: throttle, token, signature,
/// device, version.
fn checks(state: &SimState, headers: &HeaderMap, uri: &Uri) -> Result<(), Failure> {
    state.admit().map_err(|why| {
        tracing::debug!(?why, path = uri.path(), "sim: throttled a call");
        Failure::throttled(why)
    })?;
    if !authenticated(state, headers) {
        return Err(Failure::unauthenticated());
    }
    check_signature(state, headers, uri)?;
    check_device(state, headers)?;
    check_version(state, headers)
}

/// Oldest `X-Version` served. No public capture shows where upstream draws
/// the line; app captures of 2.82.0 and 2.83.0 were served, so anything
/// older than 2.80.0 is "too old" here (`docs/UPSTREAM.md`).
pub const MIN_X_VERSION: (u32, u32, u32) = (2, 80, 0);

/// `X-Version` must be `d.d.d` and at least [`MIN_X_VERSION`]; a missing one
/// is too old as well, unless headers are lenient.
fn check_version(state: &SimState, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(raw) = headers.get("x-version") else {
        return if state.lenient_headers {
            Ok(())
        } else {
            Err(Failure::version_too_old())
        };
    };
    let parsed: Option<Vec<u32>> = raw
        .to_str()
        .ok()
        .map(|v| v.split('.').map(|p| p.parse().ok()).collect())
        .and_then(|parts: Option<Vec<u32>>| parts.filter(|p| p.len() == 3));
    match parsed {
        Some(p) if (p[0], p[1], p[2]) >= MIN_X_VERSION => Ok(()),
        _ => Err(Failure::version_too_old()),
    }
}

/// `X-Aduid` must be present and the same device on every call (the first
/// one seen is remembered); upstream answers anything else with 1059
/// "设备状态异常".
fn check_device(state: &SimState, headers: &HeaderMap) -> Result<(), Failure> {
    match headers.get("x-aduid").and_then(|v| v.to_str().ok()) {
        None | Some("") if state.lenient_headers => Ok(()),
        Some(aduid) if !aduid.is_empty() && state.same_device(aduid) => Ok(()),
        _ => Err(Failure::bad_device()),
    }
}

/// Accepts the token as `Authorization: <token>` or as the
/// `zsxq_access_token` cookie, like the app and the web client.
fn authenticated(state: &SimState, headers: &HeaderMap) -> bool {
    let from_header = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("zsxq_access_token="));
    from_header
        .chain(from_cookie)
        .any(|t| state.token_matches(t))
}

/// `X-Signature` must be the lower-hex SHA-1 of
/// `"http://" + Host + path_and_query + " " + X-Timestamp + " " + X-Request-Id`.
/// Upstream answers a wrong or missing one with the anti-abuse code 1059
/// (a missing one passes only with lenient headers).
fn check_signature(state: &SimState, headers: &HeaderMap, uri: &Uri) -> Result<(), Failure> {
    let Some(signature) = headers.get("x-signature") else {
        return if state.lenient_headers {
            Ok(())
        } else {
            Err(Failure::bad_signature())
        };
    };
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let host = text(header::HOST.as_str());
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let signed = format!(
        "http://{host}{path_and_query} {} {}",
        text("x-timestamp"),
        text("x-request-id")
    );
    let expected = sha1_smol::Sha1::from(signed).digest().to_string();
    if signature.as_bytes() == expected.as_bytes() {
        Ok(())
    } else {
        Err(Failure::bad_signature())
    }
}

/// The group in the path must be the simulated one.
fn check_group(state: &SimState, raw: &str) -> Result<(), Failure> {
    let gid: u64 = raw.parse().map_err(|_| Failure::bad_param("group_id"))?;
    if gid == state.data.group_id {
        Ok(())
    } else {
        Err(Failure::group_not_found())
    }
}

/// An optional numeric query parameter; empty counts as absent.
fn u64_param(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Failure> {
    match query.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(raw) => raw.parse().map(Some).map_err(|_| Failure::bad_param(name)),
    }
}

/// `count=` within 1..=[`MAX_PAGE_COUNT`], defaulting to 20.
fn count_param(query: &HashMap<String, String>) -> Result<usize, Failure> {
    let count = u64_param(query, "count")?.unwrap_or(DEFAULT_COUNT);
    if (1..=MAX_PAGE_COUNT).contains(&count) {
        usize::try_from(count).map_err(|_| Failure::bad_param("count"))
    } else {
        Err(Failure::bad_param("count"))
    }
}

fn find_member<'a>(state: &'a SimState, raw_uid: &str) -> Result<&'a SimMember, Failure> {
    let uid: u64 = raw_uid.parse().map_err(|_| Failure::bad_param("user_id"))?;
    if state.data.departed_by_id(uid).is_some() {
        return Err(Failure::member_left());
    }
    state
        .data
        .member_by_id(uid)
        .ok_or_else(Failure::not_in_group)
}

/// The member fields every member endpoint shares; `unique_id` is left out
/// entirely when the member has none, as upstream does.
fn member_json(m: &SimMember, group_id: Option<u64>) -> Value {
    let mut obj = Map::new();
    obj.insert("user_id".into(), Value::from(m.user_id));
    obj.insert("name".into(), Value::from(m.name.as_str()));
    obj.insert("avatar_url".into(), Value::from(m.avatar_url.as_str()));
    if m.has_number {
        obj.insert("number".into(), Value::from(m.number));
    }
    if let Some(unique_id) = &m.unique_id {
        obj.insert("unique_id".into(), Value::from(unique_id.as_str()));
    }
    obj.insert("join_time".into(), Value::from(m.join_time.as_str()));
    obj.insert("status".into(), Value::from(m.status.as_str()));
    obj.insert("expired_time".into(), Value::from(m.expired_time.as_str()));
    obj.insert("introduction".into(), Value::from(m.introduction.as_str()));
    if let Some(gid) = group_id {
        obj.insert("group_id".into(), Value::from(gid));
    }
    Value::Object(obj)
}

async fn member_summary(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    gate(&state, CallKind::MemberSummary, &headers, &uri).await?;
    let Path((gid, uid)) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    let mut m = find_member(&state, &uid)?;
    if state.wrong_summary() {
        // A misbehaving upstream: the record of the next member instead.
        let members = &state.data.members;
        if let Some(i) = members.iter().position(|x| x.user_id == m.user_id) {
            m = &members[(i + 1) % members.len()];
        }
    }
    let joined_days = (chrono::Utc::now().timestamp_millis() - m.join_time_ms).max(0) / DAY_MS;
    Ok(Success(json!({
        "member": member_json(m, None),
        "joined_days": joined_days,
        "topics_count": m.topics_count,
    })))
}

async fn member(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    gate(&state, CallKind::Member, &headers, &uri).await?;
    let Path((gid, uid)) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    let m = find_member(&state, &uid)?;
    Ok(Success(
        json!({"member": member_json(m, Some(state.data.group_id))}),
    ))
}

/// The documented member list: `count` 1..200; `scope` all (default),
/// privileged, privileged_and_volunteer, expired, trial, regular; `sort`
/// join_time (default), update_time, expired_time (only with regular or
/// expired scope), number (only with scope=expired); every other
/// combination answers an empty list, not an error. `order` desc (default)
/// or asc; `begin_time`/`end_time` bound the sorted time, inclusive;
/// `filter` joined, exited or `joined,exited` (default); `page_tag` only with
/// sort=number. The simulated group has no expired, trial or exited members,
/// and its owner is its only privileged one; `update_time` is taken to be
/// the join time.
async fn member_list(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    gate(&state, CallKind::MemberList, &headers, &uri).await?;
    let Path(gid) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    if !state.member_list_allowed() {
        return Err(Failure::member_list_refused());
    }
    let Query(query) = query.map_err(|_| Failure::bad_param("query"))?;
    let count = count_param(&query)?;
    let pick = |name: &str, allowed: &[&'static str]| -> Result<&'static str, Failure> {
        match query.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(allowed[0]),
            Some(raw) => allowed
                .iter()
                .find(|a| **a == raw)
                .copied()
                .ok_or_else(|| Failure::bad_param(name)),
        }
    };
    let scope = pick(
        "scope",
        &[
            "all",
            "privileged",
            "privileged_and_volunteer",
            "expired",
            "trial",
            "regular",
        ],
    )?;
    let sort = pick(
        "sort",
        &["join_time", "update_time", "expired_time", "number"],
    )?;
    let descending = pick("order", &["desc", "asc"])? == "desc";
    // Documented as `joined`, `exited` or both comma-separated (the
    // default).
    let filter = pick(
        "filter",
        &["joined,exited", "joined", "exited", "exited,joined"],
    )?;
    let begin = time_param(&query, "begin_time")?;
    let end = time_param(&query, "end_time")?;
    u64_param(&query, "page_tag")?;
    let served = match (sort, scope) {
        ("number", s) if s != "expired" => false,
        ("expired_time", s) if s != "expired" && s != "regular" => false,
        _ => true,
    };
    let pool: &[SimMember] = match scope {
        _ if !served || filter == "exited" => &[],
        "all" | "regular" => &state.data.members,
        "privileged" | "privileged_and_volunteer" => {
            state.data.members.get(..1).unwrap_or_default()
        }
        _ => &[],
    };
    // Time of the sorted field; members are kept in join order, which is
    // also the order of these times (ties keep that order).
    let time_of = |m: &SimMember| match sort {
        "expired_time" => m.join_time_ms + 365 * DAY_MS,
        _ => m.join_time_ms,
    };
    let within = |m: &&SimMember| {
        let t = time_of(m);
        begin.is_none_or(|b| t >= b) && end.is_none_or(|e| t <= e)
    };
    let page: Vec<Value> = if descending {
        pool.iter()
            .rev()
            .filter(within)
            .take(count)
            .map(|m| member_json(m, None))
            .collect()
    } else {
        pool.iter()
            .filter(within)
            .take(count)
            .map(|m| member_json(m, None))
            .collect()
    };
    Ok(Success(json!({"members": page})))
}

/// An optional time bound in the upstream's format; anything unreadable is
/// a bad parameter.
fn time_param(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Failure> {
    match query.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(raw) => zsxq_domain::parse_zsxq_time_ms(raw)
            .map(Some)
            .ok_or_else(|| Failure::bad_param(name)),
    }
}

fn camp_json(camp: &SimCamp) -> Value {
    let joined = camp.joined_count();
    json!({
        "checkin_id": camp.checkin_id,
        "title": camp.title,
        "text": camp.text,
        "checkin_days": camp.checkin_days,
        "status": camp.status.as_str(),
        "type": "accumulated",
        "joined_count": joined,
        "create_time": camp.create_time,
        "validity": {
            "long_period": camp.long_period,
            "expiration_time": camp.expiration_time,
        },
        "statistics": {
            "joined_count": joined,
            "completed_count": camp.completed_count(),
        },
    })
}

async fn checkins(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    gate(&state, CallKind::Checkins, &headers, &uri).await?;
    let Path(gid) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    let Query(query) = query.map_err(|_| Failure::bad_param("query"))?;
    let scope = query
        .get("scope")
        .and_then(|s| CampScope::parse(s))
        .ok_or_else(|| Failure::bad_param("scope"))?;
    let count = count_param(&query)?;
    let camps: Vec<Value> = state
        .data
        .camps_in(scope)
        .into_iter()
        .take(count)
        .map(camp_json)
        .collect();
    Ok(Success(json!({"checkins": camps})))
}

/// The `user` object of a ranking row.
fn ranking_user_json(state: &SimState, user_id: u64) -> Value {
    match state.data.member_by_id(user_id) {
        Some(m) => json!({
            "user_id": m.user_id,
            "name": m.name,
            "alias": m.alias,
            "avatar_url": m.avatar_url,
        }),
        None => {
            let name = state
                .data
                .departed_by_id(user_id)
                .map(|d| d.name.as_str())
                .unwrap_or("");
            json!({"user_id": user_id, "name": name, "alias": "", "avatar_url": ""})
        }
    }
}

async fn ranking_list(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: QueryParams,
) -> Result<Success, Failure> {
    gate(&state, CallKind::Ranking, &headers, &uri).await?;
    let Path((gid, cid)) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    let cid: u64 = cid.parse().map_err(|_| Failure::bad_param("checkin_id"))?;
    let Query(query) = query.map_err(|_| Failure::bad_param("query"))?;
    let kind = match query.get("type").map(String::as_str) {
        None | Some("") => RankingType::Accumulated,
        Some(raw) => RankingType::parse(raw).ok_or_else(|| Failure::bad_param("type"))?,
    };
    let index = u64_param(&query, "index")?.unwrap_or(0);
    let mut rows = state
        .data
        .expected_ranking_of(cid, kind)
        .ok_or_else(Failure::checkin_not_found)?;
    if state.hide_participant() && !rows.is_empty() {
        // One participant the list does not show: its page is one row
        // short and positions skip it, while the statistics count it.
        let hidden = HIDDEN_POSITION.min(rows.len() - 1);
        rows[hidden].0 = 0;
    }
    // `rankings` is the 1-based position; `index=N` continues after position N.
    let page: Vec<Value> = rows
        .iter()
        .enumerate()
        .skip(usize::try_from(index).unwrap_or(usize::MAX))
        .take(RANKING_PAGE_SIZE)
        .filter(|(_, (user_id, _))| *user_id != 0)
        .map(|(position, &(user_id, days))| {
            json!({
                "user": ranking_user_json(&state, user_id),
                "rankings": position + 1,
                "checkined_days": days,
            })
        })
        .collect();
    let mut resp = Map::new();
    resp.insert("ranking_list".into(), Value::Array(page));
    if index == 0 {
        // The caller's own row; the caller never takes part, so it is not a
        // ranking row and has no position.
        resp.insert(
            "user_specific".into(),
            json!({
                "user": ranking_user_json(&state, state.data.caller_user_id),
                "rankings": 0,
                "checkined_days": 0,
            }),
        );
    }
    Ok(Success(Value::Object(resp)))
}

/// `GET /v2/groups/{gid}/checkins/{cid}/statistics`: the camp's counts, as
/// in the public capture: `checkined_count` counts check-ins (the days of
/// every participant added up), not people; a few avatars of the top of the
/// ranking beside.
async fn checkin_statistics(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Success, Failure> {
    gate(&state, CallKind::Statistics, &headers, &uri).await?;
    let Path((gid, cid)) = path.map_err(|_| Failure::bad_param("path"))?;
    check_group(&state, &gid)?;
    let cid: u64 = cid.parse().map_err(|_| Failure::bad_param("checkin_id"))?;
    let camp = state
        .data
        .camp(cid)
        .ok_or_else(Failure::checkin_not_found)?;
    let top: Vec<Value> = state
        .data
        .expected_ranking(cid)
        .unwrap_or_default()
        .iter()
        .take(3)
        .map(|&(user_id, _)| ranking_user_json(&state, user_id))
        .collect();
    Ok(Success(json!({"statistics": {
        "joined_count": camp.joined_count(),
        "completed_count": camp.completed_count(),
        "checkined_count": camp.checkins(),
        "ranking_list": top,
    }})))
}

/// Unknown paths: counted (and gated) when they look like upstream calls,
/// then answered with the envelope's 404.
async fn fallback(
    State(state): State<Arc<SimState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Success, Failure> {
    if uri.path().starts_with("/v2/") {
        gate(&state, CallKind::Other, &headers, &uri).await?;
    }
    Err(Failure::new(404).info("not found"))
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats()).into_response()
}

async fn reset(State(state): State<Arc<SimState>>) -> Response {
    state.reset_stats();
    Json(state.stats()).into_response()
}

async fn config(State(state): State<Arc<SimState>>) -> Response {
    Json(state.knobs()).into_response()
}

async fn set_config(
    State(state): State<Arc<SimState>>,
    body: Result<Json<SimKnobsPatch>, JsonRejection>,
) -> Response {
    let outcome = body
        .map_err(|rejection| rejection.body_text())
        .and_then(|Json(patch)| state.apply(patch));
    match outcome {
        Ok(knobs) => Json(knobs).into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response(),
    }
}
