//! Sync as a job: 202 with a job id, progress while it runs, one
//! sync at a time, and the CLI's `sync`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use zsxq_test_support::{ADMIN_TOKEN, TestApp};

async fn post_sync(app: &TestApp, query: &str, body: Value) -> zsxq_test_support::Answer {
    let resp = app
        .http
        .post(app.url(&format!("/api/users/sync{query}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    zsxq_test_support::Answer {
        status,
        body: resp.json().await.unwrap(),
    }
}

/// A sync slow enough to observe: listing refused, 100+ per-member calls.
async fn slow_sync_app() -> TestApp {
    let mut setup = TestApp::builder().members(150);
    setup.sim.no_member_list = true;
    setup.sim.latency_ms = 40;
    setup.spawn().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_sync_answers_202_and_reports_progress_until_done() {
    let app = slow_sync_app().await;
    let started = post_sync(&app, "", json!({"async": true, "concurrency": 2})).await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.body["message"], "同步任务已开始");
    let job_id = started.data()["job_id"].as_str().unwrap().to_string();
    assert_eq!(job_id.len(), 32);
    assert_eq!(
        started.data()["status_url"],
        format!("/api/users/sync/{job_id}")
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_running_with_total = false;
    let last = loop {
        let s = app.get(&format!("/api/users/sync/{job_id}")).await;
        assert_eq!(s.status, 200, "{}", s.body);
        let d = s.data().clone();
        assert_eq!(d["job_id"], job_id);
        match d["state"].as_str().unwrap() {
            "running" => {
                if d["total"].as_u64().unwrap() > 0 {
                    saw_running_with_total = true;
                    assert!(d["done"].as_u64().unwrap() <= d["total"].as_u64().unwrap());
                }
            }
            "done" => break d,
            other => panic!("unexpected state {other}: {d}"),
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(saw_running_with_total, "progress was visible while running");
    let report = &last["report"];
    assert_eq!(last["done"], report["success_count"]);
    assert_eq!(last["failed"], report["failed_count"]);
    assert_eq!(last["eta_ms"], 0);
    assert!(report["success_count"].as_u64().unwrap() > 50);
    assert_eq!(
        app.stats().await.data()["cached_users_count"],
        report["success_count"],
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_while_one_runs_is_a_409_naming_the_running_job() {
    let app = slow_sync_app().await;
    let first = post_sync(&app, "?async=true", json!({"concurrency": 1})).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let job_id = first.data()["job_id"].clone();

    let second = post_sync(&app, "", json!({})).await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(second.body["code"], 409);
    assert_eq!(second.data()["job_id"], job_id);
    let third = post_sync(&app, "?async=true", json!({"force": true})).await;
    assert_eq!(third.status, 409);
    assert_eq!(third.data()["job_id"], job_id);
}

#[tokio::test]
async fn unknown_or_malformed_job_ids_and_async_flags_are_refused() {
    let app = TestApp::builder().spawn().await;
    app.get("/api/users/sync/0123456789abcdef0123456789abcdef")
        .await
        .assert_error(404);
    app.get("/api/users/sync/nope").await.assert_error(400);
    app.get("/api/users/sync/0123456789abcdef0123456789abcdeg")
        .await
        .assert_error(400);
    post_sync(&app, "?async=maybe", json!({}))
        .await
        .assert_error(400);
    post_sync(&app, "", json!({"async": "yes"}))
        .await
        .assert_error(400);
    assert_eq!(app.sim.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_command_warms_the_store_and_prints_a_summary() {
    let env = TestApp::builder().environment().await.unwrap();
    let (sim, path) = (&env.sim, env.embedded_path());
    let out = tokio::process::Command::from(env.command(env!("CARGO_BIN_EXE_zsxq-cache")))
        .arg("sync")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = sim.data.members.len();
    assert!(stdout.contains("同步完成"), "{stdout}");
    assert!(stdout.contains(&format!("{n} ok")), "{stdout}");
    assert!(!stdout.contains("sim-token"));

    use zsxq_cache::store::Store;
    let store = zsxq_cache::store::embedded::EmbeddedStore::open(
        &path,
        std::sync::Arc::new(zsxq_cache::clock::SystemClock),
    )
    .unwrap();
    assert_eq!(store.count().await.unwrap(), n as u64);
}
