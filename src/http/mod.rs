//! The HTTP API (SPEC §3): routing, shared state, admin check, health.
//!
//! Handlers live in one file per resource; they parse every parameter into
//! domain types and return [`error::ApiError`] — the one error type with an
//! `IntoResponse`, so every failure has the same envelope. The steps in
//! `edge.rs` (rate limit, CORS, envelopes for framework rejections, the
//! in-flight count), `gate.rs` (Host allowlist, read token, JSON-only
//! unsafe requests) and `observe.rs` (metrics, request ids) wrap every
//! request, run by `pipeline.rs` in one service around the router.

pub mod camps;
pub mod connections;
pub mod deadline;
pub mod edge;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod pipeline;
pub mod server;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use subtle::ConstantTimeEq;
use tower::Layer as _;
use tower::util::Either;
use tower_http::cors::Cors;

use crate::cache::MemberCache;
use crate::config::Secret;
use crate::refund::RefundService;
use error::{ApiError, envelope, ok};

/// Largest request body accepted; the API's bodies are a few bytes of JSON.
const BODY_LIMIT: usize = 64 * 1024;

pub struct AppState {
    pub cache: Arc<MemberCache>,
    /// Camps and refund lists, over the same cache.
    pub refunds: Arc<RefundService>,
    /// `None`: admin endpoints are closed (never open by default).
    pub admin_token: Option<Secret>,
    /// `API_CONCURRENCY`, the default for sync.
    pub default_concurrency: usize,
    /// `HTTP_RATE_LIMIT` per client IP; `None` = off.
    pub rate_limit: Option<Arc<edge::ClientRateLimit>>,
    /// `CORS_ORIGINS`; empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// The Host allowlist, the read token and the rules for unsafe
    /// requests, checked before routing.
    pub gate: gate::Gate,
    /// Requests being served now; shutdown waits for them.
    pub in_flight: Arc<edge::InFlight>,
    /// The near-cache invalidation listener (Redis only).
    pub invalidation: Option<Arc<crate::cache::invalidation::Listener>>,
    /// What `GET /metrics` exposes: every part's series.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The HTTP layer's own series (registered in `metrics`).
    pub http_metrics: metrics::HttpMetrics,
    /// Request deadlines (`deadline.rs`).
    pub limits: crate::config::LimitsConfig,
    /// Whether the upstream is being called (1059 cool-down, rejected
    /// token), for `/readyz`.
    pub refusal: Arc<crate::upstream::refusal::Refusal>,
}

impl AppState {
    /// Checks `Authorization: Bearer <ADMIN_TOKEN>` in constant time. An
    /// empty token never matches: `ADMIN_TOKEN` has at least 16 characters.
    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.admin_token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "管理接口未启用：请配置 ADMIN_TOKEN (admin endpoints are disabled until ADMIN_TOKEN is set)",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Digests of equal length are compared, so neither the bytes nor the
        // length of the token leak through timing (`ct_eq` on slices of
        // different lengths returns early).
        let digest = |raw: &str| sha1_smol::Sha1::from(raw).digest().bytes();
        if bool::from(digest(given).ct_eq(&digest(expected.expose()))) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "需要管理员令牌 (send Authorization: Bearer <ADMIN_TOKEN>)",
            ))
        }
    }
}

/// The service the server runs: the routes inside the [`pipeline::Pipeline`],
/// inside CORS when origins are configured.
pub type App = Either<Cors<pipeline::Pipeline>, pipeline::Pipeline>;

/// The API: every route, with the per-request steps around them.
pub fn router(state: Arc<AppState>) -> App {
    let routes = Router::new()
        .route("/api/users", get(users::list))
        .route("/api/users/sync", post(users::sync))
        .route("/api/users/sync/{job_id}", get(users::sync_status))
        .route("/api/users/cache", delete(users::clear))
        .route("/api/users/cache/stats", get(users::stats))
        .route("/api/users/number/{number}", get(users::by_number))
        // Ids of plain digits are answered by the pipeline before routing
        // (pipeline.rs); layers added here do not see those requests.
        .route("/api/users/{user_id}", get(users::by_id))
        .route("/api/camps", get(camps::list))
        .route(
            "/api/camps/{checkin_id}/refund-list",
            get(camps::refund_page).post(camps::refund_list),
        )
        .route(
            "/api/camps/{checkin_id}/refund-list/text",
            get(camps::refund_text),
        )
        .route(
            "/api/camps/{checkin_id}/refund-list.csv",
            get(camps::refund_csv),
        )
        .route(
            "/api/camps/{checkin_id}/refund-list.xlsx",
            get(camps::refund_xlsx),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics))
        // The operator's web page (src/web): the HTML and its embedded assets.
        .route("/", get(crate::web::index))
        .route("/assets/{file}", get(crate::web::asset))
        // Tags each answer with its route template, for the metrics.
        .route_layer(observe::TagRouteLayer)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state.clone());
    let pipeline = pipeline::Pipeline::new(routes, state.clone());
    // Outermost: preflights are answered before anything else, and every
    // answer, a 429 included, carries the CORS headers.
    match edge::cors_layer(&state.cors_origins) {
        Some(cors) => Either::Left(cors.layer(pipeline)),
        None => Either::Right(pipeline),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("没有这个接口 (no such endpoint; see README for the API)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "该接口不支持此方法 (method not allowed on this endpoint)",
    )
}

/// `GET /metrics`: the Prometheus exposition (OpenMetrics text).
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    match app.metrics.encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be encoded");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "指标暂不可用 (metrics unavailable)",
            )
            .into_response()
        }
    }
}

/// Process alive.
async fn healthz() -> Response {
    ok("ok", serde_json::json!({ "status": "ok" }))
}

/// Ready to serve: the store is reachable, or we are serving degraded from
/// the upstream (still ready, but said so).
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let store_ok = app.cache.store().ping().await.is_ok();
    let (near, queue) = (app.cache.near(), app.cache.write_back_queue());
    let access = app.refusal.refresh().await.to_json();
    let data = serde_json::json!({
        "store": app.cache.store().kind(),
        "store_reachable": store_ok,
        "mode": if store_ok { "normal" } else { "degraded" },
        "near_cache": {
            "enabled": near.is_enabled(),
            "entries": near.len(),
            "invalidation": app.invalidation.as_ref().map(|l| serde_json::json!({
                "subscribed": l.is_subscribed(),
                "applied": l.applied(),
            })),
        },
        "write_back": {
            "pending": queue.len(),
            "written": queue.written(),
            "dropped": queue.dropped(),
        },
        "store_watch": {
            "losses": app.cache.store_watch().losses(),
            "rescued": app.cache.store_watch().rescued(),
        },
        "upstream": app.cache.budget().snapshot(),
        "member_numbers": app.cache.numbering(),
        "notices": notices(&app, &access),
        "upstream_access": access,
        "interactive_queue": {
            "waiting": app.cache.budget().queue().waiting(),
            "clients": app.cache.budget().queue().clients(),
        },
    });
    envelope(
        StatusCode::OK,
        if store_ok { "ready" } else { "degraded" },
        data,
    )
}

/// What the operator must be told on every view of the page, plainly and
/// once: `{kind, level, message}`, `level` "info" or "error".
fn notices(app: &AppState, access: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    // Calls held back (1059 cool-down, rejected token): the upstream access
    // says why, since when, in both languages.
    if let (Some(kind), Some(message)) = (access["state"].as_str(), access["message"].as_str()) {
        out.push(serde_json::json!({"kind": kind, "level": "error", "message": message}));
    }
    if let Some(message) = app.cache.numbering().notice() {
        out.push(serde_json::json!({"kind": "numbering_off", "level": "info", "message": message}));
    }
    out
}
