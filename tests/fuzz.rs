//! Property-based fuzzing of the HTTP API: thousands of
//! generated requests — malformed paths, ids out of range, percent-encoded
//! garbage and CRLF, bad query values, wrong methods, odd headers, random and
//! oversized bodies — against the real router with a real store and the
//! simulated upstream. Every answer must be below 500 and an envelope; no
//! handler may panic; and the store must gain no key outside the known
//! layout (no input can shape a Redis key). A second test throws raw bytes
//! at the TCP socket.
//!
//! Requests go through `tower::ServiceExt::oneshot`, which reaches the same
//! router and layers as the network does, minus the socket, so thousands of
//! cases take seconds. Case counts: `FUZZ_CASES` (default 5000 on Redis,
//! half that on the embedded store).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use zsxq_cache::http;
use zsxq_cache::http::App;
use zsxq_cache::store::keys;
use zsxq_test_support::{StoreKind, TestApp};

const ADMIN: &str = "fuzz-admin-token-0123456789";

/// The service's router plus the running app it belongs to, kept alive for
/// the test.
struct Target {
    router: App,
    app: TestApp,
}

async fn target(store: StoreKind) -> Target {
    let app = TestApp::builder()
        .store(store)
        .admin_token(ADMIN)
        .var("API_MAX_RETRIES", "0")
        .spawn()
        .await;
    Target {
        router: http::router(app.state()),
        app,
    }
}

/// One path segment, mostly hostile.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,24}",
        "-[0-9]{1,5}",
        "0[0-9]{0,4}",
        "[a-zA-Z0-9._~-]{0,12}",
        "(%[0-9A-Fa-f]{2}){1,6}",
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%00".to_string()),
        Just("%20".to_string()),
        Just("1%0d%0aFLUSHALL".to_string()),
        Just("zsxq:user:1".to_string()),
        Just("*".to_string()),
        Just("1.5".to_string()),
        Just("%EF%BC%91%EF%BC%92".to_string()),
        Just("😀".to_string()),
        Just(String::new()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => segment().prop_map(|s| format!("/api/users/{s}")),
        3 => segment().prop_map(|s| format!("/api/users/number/{s}")),
        2 => Just("/api/users".to_string()),
        1 => Just("/api/users/sync".to_string()),
        1 => Just("/api/users/cache".to_string()),
        1 => Just("/api/users/cache/stats".to_string()),
        1 => Just("/api/openapi.json".to_string()),
        1 => prop_oneof![Just("/healthz".to_string()), Just("/readyz".to_string())],
        2 => vec(segment(), 0..5).prop_map(|v| format!("/{}", v.join("/"))),
        1 => (segment(), segment()).prop_map(|(a, b)| format!("/api/users/{a}/{b}")),
        1 => segment().prop_map(|s| format!("//api//users/{s}/")),
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,24}",
        "-[0-9]{1,4}",
        Just("number".to_string()),
        Just("join_time".to_string()),
        Just("asc".to_string()),
        Just("desc".to_string()),
        "(%[0-9A-Fa-f]{2}){1,4}",
        "[a-zA-Z]{0,10}",
        Just("1e3".to_string()),
        Just("0x10".to_string()),
        Just("%205".to_string()),
        Just("+5".to_string()),
        Just("200%00".to_string()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("page".to_string()),
        Just("page_size".to_string()),
        Just("sort_by".to_string()),
        Just("order".to_string()),
        "[a-z_]{1,8}",
        "(%[0-9A-Fa-f]{2}){1,3}",
    ];
    vec((key, query_value(), any::<bool>()), 0..5).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v, with_eq)| {
                if *with_eq {
                    format!("{k}={v}")
                } else {
                    k.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (0u64..12).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let sync_like = (
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(("[a-z]{1,8}", json_value())),
    )
        .prop_map(|(force, concurrency, extra)| {
            let mut map = serde_json::Map::new();
            if let Some(v) = force {
                map.insert("force".into(), v);
            }
            if let Some(v) = concurrency {
                map.insert("concurrency".into(), v);
            }
            if let Some((k, v)) = extra {
                map.insert(k, v);
            }
            Value::Object(map).to_string().into_bytes()
        });
    prop_oneof![
        3 => Just(Vec::new()),
        3 => sync_like,
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => vec(any::<u8>(), 0..256),
        1 => Just(b"{\"force\": true".to_vec()),
        1 => (65_000usize..70_000).prop_map(|n| {
            format!("{{\"force\": true, \"pad\": \"{}\"}}", "x".repeat(n)).into_bytes()
        }),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        3 => Just(Method::POST),
        2 => Just(Method::DELETE),
        1 => Just(Method::PUT),
        1 => Just(Method::PATCH),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
    ]
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(format!("Bearer {ADMIN}"))),
        1 => "[ -~]{0,40}".prop_map(|s| Some(format!("Bearer {s}"))),
        1 => "[ -~]{0,60}".prop_map(Some),
        1 => Just(Some(format!("bearer {ADMIN}"))),
        1 => Just(Some(format!("Bearer {ADMIN} "))),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The method a path is routed for, so most cases get past method routing
/// and reach the handlers; the rest exercise the 405 and 404 answers.
fn natural_method(path: &str) -> Method {
    match path {
        "/api/users/sync" => Method::POST,
        "/api/users/cache" => Method::DELETE,
        _ => Method::GET,
    }
}

fn path_and_method() -> impl Strategy<Value = (String, Method)> {
    path().prop_flat_map(|path| {
        let natural = natural_method(&path);
        (Just(path), prop_oneof![3 => Just(natural), 1 => method()])
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        path_and_method(),
        query(),
        header_value(),
        prop_oneof![
            Just(None),
            Just(Some("application/json".to_string())),
            Just(Some("text/plain".to_string())),
            "[ -~]{0,30}".prop_map(Some),
        ],
        body(),
    )
        .prop_map(
            |((path, method), query, authorization, content_type, body)| Case {
                method,
                path,
                query,
                authorization,
                content_type,
                body,
            },
        )
}

/// Sends one case; `Ok(None)` when the case is not even a valid HTTP
/// request (a URI or header the HTTP library refuses to build).
async fn send(router: &App, case: &Case) -> Result<Option<(u16, Vec<u8>)>, TestCaseError> {
    let uri = if case.query.is_empty() {
        case.path.clone()
    } else {
        format!("{}?{}", case.path, case.query)
    };
    // Every HTTP/1.1 request names a host; this one names the service's.
    let mut builder = Request::builder()
        .method(case.method.clone())
        .uri(uri)
        .header("host", "127.0.0.1:3013");
    if let Some(v) = &case.authorization {
        builder = builder.header("authorization", v);
    }
    if let Some(v) = &case.content_type {
        builder = builder.header("content-type", v);
    }
    let Ok(request) = builder.body(Body::from(case.body.clone())) else {
        return Ok(None);
    };
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| TestCaseError::fail(format!("router error: {e}")))?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .map_err(|e| TestCaseError::fail(format!("body: {e}")))?;
    Ok(Some((status, bytes.to_vec())))
}

/// The answer is below 500 and, where it has a body, the envelope.
fn check(case: &Case, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500,
        "{status} for {case:?}: {}",
        String::from_utf8_lossy(body)
    );
    if case.method == Method::HEAD {
        return Ok(());
    }
    // The web page, its assets and the refund-list exports answer HTML, JS,
    // CSS, CSV, XLSX or text when they succeed; their errors are envelopes.
    let non_json_route = case.path == "/"
        || case.path.starts_with("/assets/")
        || case.path.contains("/refund-list.")
        || case.path.ends_with("/refund-list/text");
    if status < 400 && non_json_route && serde_json::from_slice::<Value>(body).is_err() {
        return Ok(());
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        TestCaseError::fail(format!(
            "not JSON ({status}) for {case:?}: {}",
            String::from_utf8_lossy(body)
        ))
    })?;
    if json.get("openapi").is_some() {
        return Ok(());
    }
    prop_assert_eq!(json["code"].as_u64(), Some(u64::from(status)), "{}", json);
    prop_assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        json
    );
    prop_assert!(json["timestamp"].is_i64(), "{}", json);
    if status >= 400 {
        prop_assert!(json["data"].is_null(), "{}", json);
    }
    Ok(())
}

/// Runs `cases` generated requests; returns how many answered per status.
fn fuzz(rt: &tokio::runtime::Runtime, router: &App, cases: u32) -> HashMap<u16, u64> {
    let statuses = Arc::new(std::sync::Mutex::new(HashMap::<u16, u64>::new()));
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let seen = statuses.clone();
    let result = runner.run(&case(), |case| {
        rt.block_on(async {
            if let Some((status, body)) = send(router, &case).await? {
                *seen.lock().unwrap().entry(status).or_default() += 1;
                check(&case, status, &body)?;
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let mut out = HashMap::new();
    std::mem::swap(&mut out, &mut *statuses.lock().unwrap());
    out
}

fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `key` belongs to the store's key layout (`store::keys`).
fn known_key(key: &str) -> bool {
    let digits = |rest: &str| {
        !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
            && !rest.starts_with('0')
            && rest.parse::<u64>().is_ok()
    };
    key.strip_prefix(keys::USER_PREFIX).is_some_and(digits)
        || key.strip_prefix(keys::NUMBER_PREFIX).is_some_and(digits)
        // Index directories and buckets, named from parsed ids and integer
        // scores only.
        || keys::is_index_key(key)
        // Fleet leases on cold members (one replica fetches, the others
        // wait for its answer); a "not a member" answer
        // stays under one for 30 s. Still built from a parsed id only.
        || key.strip_prefix(keys::LEASE_USER_PREFIX).is_some_and(digits)
        || keys::FIXED.contains(&key)
        || key == keys::FLEET_BUDGET
        // The installation's device id and the refusal state: fixed names.
        || key == keys::DEVICE_ID
        || key == keys::REFUSAL
}

#[test]
fn thousands_of_malformed_requests_get_no_server_error_and_shape_no_redis_key() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let target = rt.block_on(target(StoreKind::Redis));
    let n = cases(5000);
    let redis_url = target.app.redis.as_ref().expect("redis").url();
    let started = std::time::Instant::now();
    // In rounds, checking the keys after each: a clear with the admin token
    // (one of the generated cases) must not hide keys made before it.
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let (mut most_keys, mut rounds) = (0, 0);
    for round in fuzz_rounds(n) {
        for (status, count) in fuzz(&rt, &target.router, round) {
            *statuses.entry(status).or_default() += count;
        }
        let keys = scan_keys(&rt, &redis_url);
        for key in &keys {
            assert!(known_key(key), "unexpected Redis key {key:?}");
        }
        most_keys = most_keys.max(keys.len());
        rounds += 1;
    }
    let took = started.elapsed();
    let mut by_status: Vec<_> = statuses.into_iter().collect();
    by_status.sort();
    let sim = target.app.sim.stats();
    println!(
        "[fuzz, redis] {n} cases in {rounds} rounds, {took:?}; answers by status {by_status:?}; {} upstream calls ({} to unknown paths); \
         up to {most_keys} Redis keys after a round, all in the layout",
        sim.calls, sim.by_kind.other,
    );
    assert_eq!(sim.by_kind.other, 0, "no malformed id reached the upstream");
}

/// `n` cases in rounds of at most 500.
fn fuzz_rounds(n: u32) -> impl Iterator<Item = u32> {
    (0..n.div_ceil(500)).map(move |i| (n - i * 500).min(500))
}

/// Every key in the Redis at `url`, by SCAN.
fn scan_keys(rt: &tokio::runtime::Runtime, url: &str) -> Vec<String> {
    rt.block_on(zsxq_test_support::scan_keys(url, "*"))
        .expect("scan")
}

#[test]
fn malformed_requests_on_the_embedded_store_get_no_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let target = rt.block_on(target(StoreKind::Embedded));
    let n = cases(5000) / 2;
    let statuses = fuzz(&rt, &target.router, n);
    let mut by_status: Vec<_> = statuses.into_iter().collect();
    by_status.sort();
    println!("[fuzz, embedded] {n} cases; answers by status {by_status:?}");
    assert_eq!(target.app.sim.stats().by_kind.other, 0);
}

#[test]
fn keys_outside_the_layout_are_recognised() {
    assert!(known_key("zsxq:user:454881884228"));
    assert!(known_key("zsxq:number:177"));
    assert!(known_key(keys::STATS));
    assert!(known_key("zsxq:{idx}:number:454881884228!177"));
    for bad in [
        "zsxq:user:",
        "zsxq:user:007",
        "zsxq:user:1\r\nFLUSHALL",
        "zsxq:number:-1",
        "zsxq:{idx}:number:1\r\nFLUSHALL!1",
        "zsxq:user:..",
        "other",
    ] {
        assert!(!known_key(bad), "{bad:?}");
    }
}

/// Raw bytes over TCP: request lines the HTTP library itself must reject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_garbage_on_the_socket_never_gets_a_server_error_and_the_service_stays_up() {
    use rand::{Rng, SeedableRng};
    let app = TestApp::builder().spawn().await;
    let addr = app.addr;

    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let fixed: [&[u8]; 8] = [
        b"GET /api/users/1 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /api/users/\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/users/sync HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"GET /api/users HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /api/users?page=1 HTTP/1.1\r\nHost: x\r\nX: \xff\xfe\r\n\r\n",
        b"GET http://evil.example/api/users HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        b"GET /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ];
    let mut answered = 0;
    let mut statuses = HashMap::<u16, u64>::new();
    for i in 0..300 {
        let payload: Vec<u8> = if i < fixed.len() {
            fixed[i].to_vec()
        } else {
            let len = rng.random_range(1..300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) {
                let mut line = b"GET /api/users/".to_vec();
                line.extend(bytes);
                line.extend(b" HTTP/1.1\r\nHost: x\r\n\r\n");
                bytes = line;
            }
            bytes
        };
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            panic!("the service stopped accepting connections");
        };
        let _ = stream.write_all(&payload).await;
        let _ = stream.shutdown().await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut reply)).await;
        if let Some(status) = reply
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|r| std::str::from_utf8(r.get(..3)?).ok())
            .and_then(|s| s.parse::<u16>().ok())
        {
            answered += 1;
            *statuses.entry(status).or_default() += 1;
            assert!(status < 500, "{status} for {payload:?}");
        }
    }
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("still up");
    println!(
        "[fuzz, raw TCP] 300 payloads, {answered} answered with a status line: {statuses:?}; /healthz {}",
        health.status()
    );
    assert_eq!(health.status(), 200);
}
