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

mod camps;
mod envelope;
mod faults;
mod gate;
mod members;

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

use crate::data::{CampScope, RankingType, SimCamp, SimMember};
use crate::state::{CallKind, SimFault, SimKnobsPatch, SimState, Throttle};

/// The ranking position (0-based) left out while `hide_participant` is on:
/// on the second page, as in the reported case.
pub const HIDDEN_POSITION: usize = 25;

/// Rows per `ranking_list` page, as observed upstream.
pub const RANKING_PAGE_SIZE: usize = 21;

/// Largest `count` the member list and camp list accept.
pub const MAX_PAGE_COUNT: u64 = 200;

/// `count` when a client leaves it out.
pub(super) const DEFAULT_COUNT: u64 = 20;

pub(super) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub(super) type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

use self::camps::*;
use self::envelope::*;
use self::faults::*;
use self::gate::*;
use self::members::*;

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
