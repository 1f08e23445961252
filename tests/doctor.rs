//! `zsxq-cache doctor` as an operator runs it: the binary, with only the
//! variables given (in an empty working directory, so no stray `.env`),
//! against the simulator — the lines it prints, its exit status (0 works,
//! 1 will not work, 2 bad configuration) and how few upstream calls it makes.
//! Also `serve` refusing a bad `ZSXQ_X_VERSION` at start.

use std::path::Path;

use zsxq_sim::{SimConfig, SimHandle};

struct Run {
    status: i32,
    out: String,
}

/// Runs `zsxq-cache doctor` with exactly `vars` (plus `PATH`).
async fn doctor(dir: &Path, vars: &[(&str, String)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_zsxq-cache"));
    cmd.arg("doctor")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("doctor runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- doctor (exit {:?})\n{text}", out.status.code());
    Run {
        status: out.status.code().expect("an exit status"),
        out: text,
    }
}

/// The configuration of a service against `sim`, at full speed.
fn vars(sim: &SimHandle, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ZSXQ_API_BASE", sim.base_url.clone()),
        ("ZSXQ_GROUP_ID", sim.data.group_id.to_string()),
        ("ZSXQ_ACCESS_TOKEN", "sim-token".into()),
        ("API_RATE_LIMIT", "6000".into()),
        ("API_REQUEST_DELAY", "0".into()),
        ("API_RETRY_BASE_MS", "5".into()),
        (
            "EMBEDDED_PATH",
            dir.join("cache.redb").display().to_string(),
        ),
    ]
}

fn with(
    mut vars: Vec<(&'static str, String)>,
    k: &'static str,
    v: &str,
) -> Vec<(&'static str, String)> {
    vars.retain(|(name, _)| *name != k);
    vars.push((k, v.to_string()));
    vars
}

fn without(mut vars: Vec<(&'static str, String)>, k: &str) -> Vec<(&'static str, String)> {
    vars.retain(|(name, _)| *name != k);
    vars
}

async fn sim(cfg: SimConfig) -> SimHandle {
    zsxq_sim::spawn(cfg).await.expect("simulator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_configuration_passes_every_check_in_a_handful_of_calls() {
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(dir.path(), &vars(&sim, dir.path())).await;
    assert_eq!(run.status, 0, "{}", run.out);
    for check in [
        "✓ token accepted",
        "✓ signature accepted",
        "✓ group",
        "✓ member list answers: 200 members on the first page",
        "✓ members carry numbers: 200 of the first 200",
        "✓ a summary carries a number",
        "✓ camps list",
        "✓ first ranking page of the newest camp",
        "✓ its statistics",
        "result: the product will work",
    ] {
        assert!(run.out.contains(check), "{check}: {}", run.out);
    }
    assert!(!run.out.contains('✗'), "{}", run.out);
    assert!(!run.out.contains("sim-token"), "the token is never printed");
    let calls = sim.stats().calls;
    println!("[doctor] healthy: {calls} upstream calls");
    assert!(calls <= 10, "{calls} upstream calls");
    // The same installation again: the same stored device id, which the
    // simulator requires (it refuses a second device with 1059).
    let again = doctor(dir.path(), &vars(&sim, dir.path())).await;
    assert_eq!(again.status, 0, "{}", again.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_token_fails_the_first_check_says_what_to_renew_and_stops_calling() {
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &with(
            vars(&sim, dir.path()),
            "ZSXQ_ACCESS_TOKEN",
            "expired-token-1234",
        ),
    )
    .await;
    assert_eq!(run.status, 1, "{}", run.out);
    assert!(run.out.contains("✗ token accepted"), "{}", run.out);
    assert!(run.out.contains("ZSXQ_ACCESS_TOKEN"), "{}", run.out);
    assert!(run.out.contains("– camps list: not checked"), "{}", run.out);
    assert!(!run.out.contains("expired-token-1234"));
    assert_eq!(sim.stats().calls, 1, "a 401 is not retried");
    // The header form names its own variable.
    let header = without(
        with(
            vars(&sim, dir.path()),
            "ZSXQ_AUTHORIZATION",
            "expired-token-1234",
        ),
        "ZSXQ_ACCESS_TOKEN",
    );
    let run = doctor(dir.path(), &header).await;
    assert_eq!(run.status, 1, "{}", run.out);
    assert!(run.out.contains("ZSXQ_AUTHORIZATION"), "{}", run.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_exits_2_naming_the_variable_without_calling() {
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &without(vars(&sim, dir.path()), "ZSXQ_ACCESS_TOKEN"),
    )
    .await;
    assert_eq!(run.status, 2, "{}", run.out);
    assert!(
        run.out.contains("ZSXQ_ACCESS_TOKEN") && run.out.contains("ZSXQ_AUTHORIZATION"),
        "{}",
        run.out
    );
    let run = doctor(
        dir.path(),
        &with(vars(&sim, dir.path()), "ZSXQ_X_VERSION", "latest"),
    )
    .await;
    assert_eq!(run.status, 2, "{}", run.out);
    assert!(run.out.contains("ZSXQ_X_VERSION"), "{}", run.out);
    let run = doctor(
        dir.path(),
        &with(vars(&sim, dir.path()), "ZSXQ_GROUP_ID", "not-digits"),
    )
    .await;
    assert_eq!(run.status, 2, "{}", run.out);
    assert!(run.out.contains("ZSXQ_GROUP_ID"), "{}", run.out);
    assert_eq!(sim.stats().calls, 0, "nothing was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_a_too_old_version_and_a_wrong_group_fail_with_what_to_do() {
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(
        dir.path(),
        &with(vars(&sim, dir.path()), "ZSXQ_X_VERSION", "1.0.0"),
    )
    .await;
    assert_eq!(run.status, 1, "{}", run.out);
    assert!(run.out.contains("✗ signature accepted"), "{}", run.out);
    assert!(run.out.contains("set ZSXQ_X_VERSION"), "{}", run.out);

    let run = doctor(
        dir.path(),
        &with(vars(&sim, dir.path()), "ZSXQ_GROUP_ID", "12345"),
    )
    .await;
    assert_eq!(run.status, 1, "{}", run.out);
    assert!(run.out.contains("✗ group 12345 reachable"), "{}", run.out);
    assert!(run.out.contains("ZSXQ_GROUP_ID"), "{}", run.out);

    sim.set_reject_ratio(1.0);
    sim.reset_stats();
    let run = doctor(dir.path(), &vars(&sim, dir.path())).await;
    assert_eq!(run.status, 1, "{}", run.out);
    assert!(run.out.contains("✗ signature accepted"), "{}", run.out);
    assert!(run.out.contains("1059"), "{}", run.out);
    assert_eq!(
        sim.stats().calls,
        2,
        "one call and one retry, then it stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_numbers_or_with_an_admins_only_list_still_works() {
    let sim = sim(SimConfig {
        unnumbered_ratio: 1.0,
        ..SimConfig::for_tests()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(dir.path(), &vars(&sim, dir.path())).await;
    assert_eq!(run.status, 0, "{}", run.out);
    assert!(
        run.out
            .contains("✗ members carry numbers: none of the first 200"),
        "{}",
        run.out
    );
    assert!(run.out.contains("nickname"), "{}", run.out);
    assert!(
        run.out.contains("result: the product will work"),
        "{}",
        run.out
    );

    let refused = sim_refusing_the_list().await;
    let dir = tempfile::tempdir().unwrap();
    let run = doctor(dir.path(), &vars(&refused, dir.path())).await;
    assert_eq!(run.status, 0, "{}", run.out);
    assert!(
        run.out.contains("✗ member list answers: refused"),
        "{}",
        run.out
    );
    assert!(run.out.contains("admin"), "{}", run.out);
}

async fn sim_refusing_the_list() -> SimHandle {
    sim(SimConfig {
        no_member_list: true,
        ..SimConfig::for_tests()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_the_doctor_sends_the_fleets_device_id() {
    let redis = zsxq_test_support::RedisServer::start().expect("redis-server");
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = with(vars(&sim, dir.path()), "REDIS_URL", &redis.url());
    for _ in 0..2 {
        let run = doctor(dir.path(), &config).await;
        assert_eq!(run.status, 0, "{}", run.out);
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg("zsxq:device:aduid")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.is_some(), "the device id lives in Redis");
    assert_eq!(sim.stats().throttled, 0, "one device for every run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_with_an_x_version_not_like_2_95_0() {
    let sim = sim(SimConfig::for_tests()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_zsxq-cache"));
    cmd.arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in with(vars(&sim, dir.path()), "ZSXQ_X_VERSION", "2.95") {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("serve exits at once")
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ZSXQ_X_VERSION") && stderr.contains("2.95.0"),
        "{stderr}"
    );
    assert_eq!(sim.stats().calls, 0);
}
