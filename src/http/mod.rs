//! The HTTP API (SPEC §3): routing, shared state, admin check, health.
//!
//! Handlers live in one file per resource; they parse every parameter into
//! domain types and return [`error::ApiError`] — the one error type with an
//! `IntoResponse`, so every failure has the same envelope.

pub mod error;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};
use subtle::ConstantTimeEq;

use crate::cache::MemberCache;
use crate::config::Secret;
use error::{ApiError, envelope, ok};

/// Largest request body accepted; the API's bodies are a few bytes of JSON.
const BODY_LIMIT: usize = 64 * 1024;

pub struct AppState {
    pub cache: Arc<MemberCache>,
    /// `None`: admin endpoints are closed (never open by default).
    pub admin_token: Option<Secret>,
    /// `API_CONCURRENCY`, the default for sync.
    pub default_concurrency: usize,
}

impl AppState {
    /// Checks `Authorization: Bearer <ADMIN_TOKEN>` in constant time.
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
        if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "需要管理员令牌 (send Authorization: Bearer <ADMIN_TOKEN>)",
            ))
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/users", get(users::list))
        .route("/api/users/sync", post(users::sync))
        .route("/api/users/cache", delete(users::clear))
        .route("/api/users/cache/stats", get(users::stats))
        .route("/api/users/number/{number}", get(users::by_number))
        .route("/api/users/{user_id}", get(users::by_id))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The operator's web page (src/web): the HTML and its embedded assets.
        .route("/", get(crate::web::index))
        .route("/assets/{file}", get(crate::web::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
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

/// Process alive.
async fn healthz() -> Response {
    ok("ok", serde_json::json!({ "status": "ok" }))
}

/// Ready to serve: the store is reachable, or we are serving degraded from
/// the upstream (still ready, but said so).
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let store_ok = app.cache.store().ping().await.is_ok();
    let data = serde_json::json!({
        "store": app.cache.store().kind(),
        "store_reachable": store_ok,
        "mode": if store_ok { "normal" } else { "degraded" },
        "upstream": app.cache.budget().snapshot(),
    });
    envelope(
        StatusCode::OK,
        if store_ok { "ready" } else { "degraded" },
        data,
    )
}
