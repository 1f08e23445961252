//! Tests of the simulator: the generated data directly, the HTTP behaviour
//! through real requests against [`spawn`], as the service's client will see it.

mod camps;
mod config;
mod control;
mod data;
mod faults;
mod gate;
mod members;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use super::*;

const TOKEN: &str = "sim-token";
const GROUP: u64 = 51122858222824;

/// A simulator for the tests below, which send hand-made requests: headers
/// are lenient (their checks are tested with [`spawn`] directly).
async fn start(cfg: SimConfig) -> SimHandle {
    spawn(SimConfig {
        lenient_headers: true,
        ..cfg
    })
    .await
    .expect("simulator starts")
}

fn group_path(sim: &SimHandle, rest: &str) -> String {
    format!("{}/v2/groups/{}{rest}", sim.base_url, sim.data.group_id)
}

/// Sends a request and checks the upstream's rule that every answer is HTTP 200.
async fn send(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("simulator answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

/// A GET with the token in the `Authorization` header.
async fn get(sim: &SimHandle, rest: &str) -> Value {
    send(
        reqwest::Client::new()
            .get(group_path(sim, rest))
            .header("Authorization", TOKEN),
    )
    .await
}

fn code(answer: &Value) -> Option<i64> {
    answer["code"].as_i64()
}

fn assert_fails_with(answer: &Value, expected: i64) {
    assert_eq!(answer["succeeded"], false, "{answer}");
    assert_eq!(code(answer), Some(expected), "{answer}");
    assert_eq!(answer["resp_data"], json!({}));
}

async fn sim_stats(sim: &SimHandle) -> Value {
    send(reqwest::Client::new().get(format!("{}/__sim/stats", sim.base_url))).await
}
