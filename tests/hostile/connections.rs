//! Clients that hold connections instead of using them: a header trickle,
//! idle keep-alive connections, and a flood of idle sockets next to a
//! health probe and a request in flight.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::{closed_within, raw_get, read_answer, send_get};
use zsxq_test_support::{Service, StoreKind, TestApp, spawn_app};

/// The target: a header trickle is cut off within this.
const TRICKLE_CUT_WITHIN: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_trickle_is_cut_off_within_40_s_at_the_default_header_timeout() {
    // The defaults, unchanged: HTTP_HEADER_TIMEOUT_SECS is 10.
    let app = spawn_app(StoreKind::Embedded).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(format!("GET /api/users HTTP/1.1\r\nHost: {}\r\n", app.addr).as_bytes())
        .await
        .expect("first line");
    let (mut reader, mut writer) = stream.into_split();
    // One header line every 5 s, for at most the target's 40 s.
    let trickle = tokio::spawn(async move {
        for i in 0..8 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let line = format!("X-Trickle-{i}: 1\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                return i;
            }
        }
        8
    });
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        TRICKLE_CUT_WITHIN,
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest),
    )
    .await;
    let cut_after = started.elapsed();
    trickle.abort();
    println!("[hostile] header trickle (a line every 5 s) cut after {cut_after:.1?}");
    assert!(read.is_ok(), "still open after {TRICKLE_CUT_WITHIN:?}");
    assert!(rest.is_empty() || !String::from_utf8_lossy(&rest).contains("200 OK"));
    // Not before the header timeout: the client had its 10 s.
    assert!(
        cut_after >= Duration::from_secs(9),
        "cut early: {cut_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_requests_the_idle_timeout_applies_not_the_header_timeout() {
    let app = TestApp::builder()
        .var("HTTP_HEADER_TIMEOUT_SECS", "1")
        .var("HTTP_IDLE_TIMEOUT_SECS", "4")
        .spawn()
        .await;
    let (mut stream, answer) = raw_get(app.addr, "/healthz").await;
    assert_eq!(answer.expect("an answer").status, 200);
    // Longer than the header timeout, shorter than the idle one: the
    // keep-alive connection is still there for the next request.
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_get(&mut stream, app.addr, "/healthz").await;
    let second = read_answer(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(second.expect("answered on the same connection").status, 200);
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)).await,
        "an idle connection is closed"
    );
    let idle_for = idle_from.elapsed();
    println!(
        "[hostile] idle keep-alive connection closed after {idle_for:.1?} (HTTP_IDLE_TIMEOUT_SECS=4)"
    );
    assert!(
        idle_for >= Duration::from_millis(3_500),
        "closed early: {idle_for:?}"
    );

    // A connection that never sends a byte has the header timeout.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_leaves_healthz_and_requests_in_flight_answered() {
    const CAP: usize = 64;
    const FLOOD: usize = 300;
    let app = TestApp::builder()
        .var("HTTP_MAX_CONNECTIONS", CAP.to_string())
        .spawn()
        .await;
    // A cold lookup that takes a while upstream, in flight through the flood.
    app.sim.set_latency_ms(1_500);
    let member = app.sim.data.members[11].clone();
    let in_flight = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/users/{}", member.user_id));
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await?
                .json::<serde_json::Value>()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut idle = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        if i % 2 == 0 {
            // Connected, never a byte.
            idle.push(TcpStream::connect(app.addr).await.expect("connect"));
        } else {
            // One request answered, then kept alive and idle.
            let (stream, answer) = raw_get(app.addr, "/healthz").await;
            if answer.is_some_and(|a| a.status == 200) {
                idle.push(stream);
            }
        }
    }
    let flooded_in = started.elapsed();
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let probed = Instant::now();
    let health = probe.get(app.url("/healthz")).send().await;
    let probe_ms = probed.elapsed().as_millis();
    assert_eq!(
        health.expect("/healthz answers under the flood").status(),
        200
    );

    let answer = in_flight
        .await
        .expect("join")
        .expect("the request in flight is answered");
    assert_eq!(answer["data"]["number"], member.number, "{answer}");

    let mut closed = 0;
    for stream in &mut idle {
        closed += usize::from(closed_within(stream, Duration::from_millis(20)).await);
    }
    println!(
        "[hostile] {FLOOD} idle sockets against HTTP_MAX_CONNECTIONS={CAP} in {flooded_in:.1?}: \
         /healthz answered in {probe_ms} ms; {closed} idle sockets were closed to make room"
    );
    assert!(
        closed >= idle.len() - CAP,
        "at most {CAP} stay open: {closed} of {} closed",
        idle.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_200_file_descriptors_300_idle_sockets_leave_healthz_answered() {
    const FLOOD: usize = 300;
    // The default HTTP_MAX_CONNECTIONS (1024) is above what the process may
    // open: accepting runs out of descriptors first.
    let env = TestApp::builder().environment().await.expect("environment");
    let sim = &env.sim;
    let service = Service::start(env!("CARGO_BIN_EXE_zsxq-cache"), &env, &[]).await;
    let limited = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(service.pid().to_string())
        .arg("--nofile=200:200")
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(limited.success(), "prlimit --nofile=200:200");

    let started = Instant::now();
    let mut idle = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // Connected (the kernel completes the handshake), never a byte.
        idle.push(TcpStream::connect(service.addr).await.expect("connect"));
    }
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = probe.get(service.url("/healthz")).send().await;
    let probe_ms = started.elapsed().as_millis();
    assert_eq!(
        health
            .expect("/healthz answers with every descriptor taken")
            .status(),
        200,
        "{}",
        service.logs()
    );
    let member = &sim.data.members[5];
    let answer: serde_json::Value = probe
        .get(service.url(&format!("/api/users/{}", member.user_id)))
        .send()
        .await
        .expect("a lookup answers too")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["data"]["number"], member.number, "{answer}");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", service.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let mut closed = 0;
    for stream in &mut idle {
        closed += usize::from(closed_within(stream, Duration::from_millis(20)).await);
    }
    println!(
        "[hostile] ulimit -n 200, {FLOOD} idle sockets: /healthz answered {probe_ms} ms after the flood began; \
         the service holds {fds} descriptors; {closed} idle sockets were closed to make room"
    );
    assert!(closed > 0, "room was made by closing idle connections");
    assert!(
        service.logs().contains("out of file descriptors"),
        "the exhaustion is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_trickle_cannot_hold_a_shutdown_past_the_header_timeout() {
    let app = TestApp::builder()
        .var("HTTP_HEADER_TIMEOUT_SECS", "2")
        .var("SHUTDOWN_GRACE_SECS", "60")
        .spawn()
        .await;
    let addr = app.addr;
    let mut trickler = TcpStream::connect(addr).await.expect("connect");
    trickler
        .write_all(format!("GET /api/users HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .unwrap();
    let keep_trickling = tokio::spawn(async move {
        // Longer than the wait below: only the server can end it in time.
        for i in 0..90 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if trickler
                .write_all(format!("X-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), app.shut_down()).await;
    let took = asked.elapsed();
    keep_trickling.abort();
    println!(
        "[hostile] shutdown with a header trickle connected ended after {took:.1?} (header timeout 2 s, grace 60 s)"
    );
    assert!(
        ended.is_ok(),
        "the shutdown waited on the trickle for 20 s (its grace is 60 s)"
    );
}
