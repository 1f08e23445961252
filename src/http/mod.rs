//! The HTTP API: routing, shared state, health.
//!
//! Handlers live in one file per resource (`users.rs`, `camps.rs`). They
//! take their input through the extractors of `extract.rs` — typed query
//! and body structs made of the parameter types in `params.rs`, domain ids
//! from the path, and [`extract::Admin`] for the admin endpoints — and
//! return [`error::ApiError`], the one error type with an `IntoResponse`,
//! so every failure has the same envelope.
//!
//! **Every per-request step runs in `pipeline.rs`, and only there.** The
//! request id and the closing log line, the metrics, the in-flight count,
//! the Host check, the rate limit, the read token, the rules for unsafe
//! requests, the deadline and the client address, the envelopes for
//! framework rejections, and CORS around all of it. The pipeline answers
//! the hot route (`GET /api/users/{digits}`) itself, before routing, so a
//! step put on the [`Router`] with `.layer(…)` would silently skip the
//! requests that matter most. `routes()` is therefore the route table and
//! nothing else: its two layers are settings of the routes (each route's
//! metrics series, the body limit of the body extractors), not steps, and
//! a test in `pipeline/tests.rs` fails if any other appears. The steps
//! themselves live with their concern: `observe.rs` (metrics, request
//! ids), `edge.rs` (rate limit, CORS, in-flight count, envelopes),
//! `gate.rs` (who may ask what) and `deadline.rs`.

pub mod camps;
pub mod connections;
pub mod deadline;
pub mod edge;
pub mod error;
pub mod extract;
pub mod gate;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod params;
pub mod pipeline;
pub mod server;
#[cfg(test)]
mod testing;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::cache::MemberCache;
use crate::config::Secret;
use crate::refund::RefundService;
use error::{ApiError, envelope, ok};

/// Largest request body accepted; the API's bodies are a few bytes of JSON.
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler and per-request step shares, built once by
/// `startup.rs`.
pub struct AppState {
    /// Member lookups, pages, sync and clear.
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
    /// token: docs/UPSTREAM.md, "Token protection"), for `/readyz`.
    pub refusal: Arc<crate::upstream::refusal::Refusal>,
}

pub use pipeline::App;

/// The API: every route, inside the per-request steps (`pipeline.rs`).
pub fn router(state: Arc<AppState>) -> App {
    pipeline::around(routes().with_state(state.clone()), state)
}

/// The route table. No per-request step goes here (see the module's
/// documentation): `pipeline.rs` runs them all, on the hot route too.
fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/users", get(users::list))
        .route("/api/users/sync", post(users::sync))
        .route("/api/users/sync/{job_id}", get(users::sync_status))
        .route("/api/users/cache", delete(users::clear))
        .route("/api/users/cache/stats", get(users::stats))
        .route("/api/users/number/{number}", get(users::by_number))
        // Ids of plain digits are answered by the pipeline before routing
        // (pipeline.rs); this route serves the rest.
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
        // Tags each answer with its route template, for the metrics (the
        // pipeline labels the hot route's answers itself).
        .route_layer(observe::TagRouteLayer)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // How much of a body the body extractors read (the hot route reads
        // none).
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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
