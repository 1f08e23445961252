//! Refund marks: the operator marks who was paid back, the lists and
//! exports show it at once, every change is in the audit log, a cache clear
//! leaves the marks, and every bad request changes nothing.

use serde_json::{Value, json};

use zsxq_test_support::on_both_stores;
use zsxq_test_support::{ADMIN_TOKEN as ADMIN, Answer, StoreKind, TestApp, spawn_app};

on_both_stores!(
    marking_one_and_a_batch_shows_on_the_list_the_exports_and_the_log,
    every_bad_mark_request_is_refused_and_changes_nothing,
    a_cache_clear_leaves_the_marks_and_the_log,
);

/// The camp's participants (ranking order) and one user who is not one.
fn participants(app: &TestApp, camp: u64) -> Vec<u64> {
    app.sim
        .data
        .expected_ranking(camp)
        .expect("a simulated camp")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    TestApp::answer(req.send().await.expect("request")).await
}

async fn put_mark(app: &TestApp, camp: u64, user: &str, body: Value) -> Answer {
    send(
        app,
        reqwest::Method::PUT,
        &format!("/api/camps/{camp}/refunds/{user}"),
        Some(body),
    )
    .await
}

async fn batch(app: &TestApp, camp: u64, body: Value) -> Answer {
    send(
        app,
        reqwest::Method::POST,
        &format!("/api/camps/{camp}/refunds"),
        Some(body),
    )
    .await
}

async fn log(app: &TestApp, camp: u64) -> Answer {
    send(
        app,
        reqwest::Method::GET,
        &format!("/api/camps/{camp}/refunds/log"),
        None,
    )
    .await
}

/// The list's rows by user id.
async fn rows(app: &TestApp, camp: u64) -> (Value, Vec<Value>) {
    let list = app.refund_list(camp, json!({"required_days": 1})).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let rows = list.data()["refund_list"].as_array().unwrap().clone();
    (list.data().clone(), rows)
}

fn row_of(rows: &[Value], user: u64) -> &Value {
    let user = user.to_string();
    rows.iter()
        .find(|r| r["planet_user_id"].as_str() == Some(user.as_str()))
        .expect("a row for the user")
}

async fn marking_one_and_a_batch_shows_on_the_list_the_exports_and_the_log(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let camp = app.benchmark_camp();
    let people = participants(&app, camp);
    let (a, b, c) = (people[0], people[1], people[2]);

    let before = rows(&app, camp).await;
    assert!(before.1.iter().all(|r| r["refund_status"] == "pending"));
    assert_eq!(before.0["statistics"]["refunded_count"], 0);

    let one = put_mark(
        &app,
        camp,
        &a.to_string(),
        json!({"status": "refunded", "note": "微信已转 39 元"}),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.data()["changed"], 1);
    let mark = &one.data()["marks"][0];
    assert_eq!(mark["status"], "refunded");
    assert_eq!(mark["note"], "微信已转 39 元");
    assert_eq!(mark["updated_by"], "admin");
    assert!(mark["updated_at"].as_str().unwrap().ends_with('Z'));

    // The same write again changes nothing and logs nothing.
    let again = put_mark(
        &app,
        camp,
        &a.to_string(),
        json!({"status": "refunded", "note": "微信已转 39 元"}),
    )
    .await;
    assert_eq!(again.data()["changed"], 0, "{}", again.body);
    assert_eq!(again.data()["marks"][0]["updated_at"], mark["updated_at"]);

    // A batch, with a repeated id marked once.
    let ids = [b.to_string(), c.to_string(), b.to_string()];
    let many = batch(&app, camp, json!({"user_ids": ids, "status": "rejected"})).await;
    assert_eq!(many.status, 200, "{}", many.body);
    assert_eq!(many.data()["changed"], 2);
    assert_eq!(many.data()["marks"].as_array().unwrap().len(), 2);

    let (list, rows) = rows(&app, camp).await;
    assert_eq!(row_of(&rows, a)["refund_status"], "refunded");
    assert_eq!(row_of(&rows, a)["refund_note"], "微信已转 39 元");
    assert!(row_of(&rows, a)["refund_updated_at"].is_string());
    assert_eq!(row_of(&rows, b)["refund_status"], "rejected");
    assert_eq!(row_of(&rows, people[3])["refund_status"], "pending");
    assert!(row_of(&rows, people[3])["refund_updated_at"].is_null());
    let s = &list["statistics"];
    let qualified = s["qualified_count"].as_u64().unwrap();
    assert_eq!(s["refunded_count"], 1);
    assert_eq!(s["rejected_count"], 2);
    assert_eq!(s["pending_count"].as_u64().unwrap(), qualified - 3);

    // The page form carries them too.
    let page = app
        .get(&format!(
            "/api/camps/{camp}/refund-list?required_days=1&page_size=5"
        ))
        .await;
    assert_eq!(
        page.data()["refund_list"][0]["refund_status"],
        "refunded",
        "{}",
        page.body
    );

    let csv = app
        .get_raw(&format!(
            "/api/camps/{camp}/refund-list.csv?required_days=1"
        ))
        .await;
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(lines[0].ends_with(",退款状态"), "{}", lines[0]);
    assert!(lines[1].ends_with(",已退款"), "{}", lines[1]);
    assert!(lines[2].ends_with(",已拒绝"), "{}", lines[2]);
    assert!(lines[4].ends_with(",未退款"), "{}", lines[4]);
    let text = app
        .get_raw(&format!(
            "/api/camps/{camp}/refund-list/text?required_days=1"
        ))
        .await;
    assert!(text.text().await.unwrap().contains("[已退款]"));
    let xlsx = app
        .get_raw(&format!(
            "/api/camps/{camp}/refund-list.xlsx?required_days=1"
        ))
        .await;
    assert_eq!(xlsx.status(), 200);

    // Back to pending: logged with from/to, newest first.
    put_mark(&app, camp, &c.to_string(), json!({"status": "pending"})).await;
    let log = log(&app, camp).await;
    assert_eq!(log.status, 200, "{}", log.body);
    let entries = log.data()["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{}", log.body);
    assert_eq!(entries[0]["user_id"], c.to_string());
    assert_eq!(
        (entries[0]["from"].as_str(), entries[0]["to"].as_str()),
        (Some("rejected"), Some("pending"))
    );
    assert_eq!(entries[3]["user_id"], a.to_string());
    assert_eq!(
        (entries[3]["from"].as_str(), entries[3]["to"].as_str()),
        (Some("pending"), Some("refunded"))
    );
    assert_eq!(entries[3]["note"], "微信已转 39 元");
    assert_eq!(entries[3]["by"], "admin");
    let limited = send(
        &app,
        reqwest::Method::GET,
        &format!("/api/camps/{camp}/refunds/log?limit=1"),
        None,
    )
    .await;
    assert_eq!(limited.data()["entries"].as_array().unwrap().len(), 1);
}

async fn every_bad_mark_request_is_refused_and_changes_nothing(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let camp = app.benchmark_camp();
    let people = participants(&app, camp);
    let p = people[0].to_string();
    let stranger = (people.iter().max().unwrap() + 1).to_string();
    let many: Vec<String> = (0..501).map(|_| p.clone()).collect();
    let cases: Vec<(&str, Answer, &str)> = vec![
        (
            "unknown status",
            put_mark(&app, camp, &p, json!({"status": "paid"})).await,
            "status must be one of",
        ),
        (
            "no status",
            put_mark(&app, camp, &p, json!({"note": "x"})).await,
            "status is required",
        ),
        (
            "non-digit path id",
            put_mark(&app, camp, "12a", json!({"status": "refunded"})).await,
            "digits only",
        ),
        (
            "stranger",
            put_mark(&app, camp, &stranger, json!({"status": "refunded"})).await,
            &stranger,
        ),
        (
            "long note",
            put_mark(
                &app,
                camp,
                &p,
                json!({"status": "refunded", "note": "退".repeat(201)}),
            )
            .await,
            "at most 200 characters",
        ),
        (
            "unknown field",
            put_mark(&app, camp, &p, json!({"status": "refunded", "who": "me"})).await,
            "unknown field",
        ),
        (
            "batch with a stranger",
            batch(
                &app,
                camp,
                json!({"user_ids": [p, stranger], "status": "refunded"}),
            )
            .await,
            &stranger,
        ),
        (
            "batch with a bad id",
            batch(
                &app,
                camp,
                json!({"user_ids": [p, "x1"], "status": "refunded"}),
            )
            .await,
            "user_ids[1]",
        ),
        (
            "batch with a number",
            batch(
                &app,
                camp,
                json!({"user_ids": [people[0]], "status": "refunded"}),
            )
            .await,
            "string of digits",
        ),
        (
            "empty batch",
            batch(&app, camp, json!({"user_ids": [], "status": "refunded"})).await,
            "at least one",
        ),
        (
            "no ids",
            batch(&app, camp, json!({"status": "refunded"})).await,
            "user_ids is required",
        ),
        (
            "501 ids",
            batch(&app, camp, json!({"user_ids": many, "status": "refunded"})).await,
            "at most 500",
        ),
    ];
    for (what, answer, says) in &cases {
        answer.assert_error(400);
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    // No token, a wrong token.
    let url = app.url(&format!("/api/camps/{camp}/refunds/{p}"));
    let none = app
        .http
        .put(&url)
        .json(&json!({"status": "refunded"}))
        .send()
        .await
        .unwrap();
    TestApp::answer(none).await.assert_error(401);
    let wrong = app
        .http
        .put(&url)
        .bearer_auth("wrong-token-0123456789")
        .json(&json!({"status": "refunded"}))
        .send()
        .await
        .unwrap();
    TestApp::answer(wrong).await.assert_error(401);
    let log_url = app.url(&format!("/api/camps/{camp}/refunds/log"));
    TestApp::answer(app.http.get(&log_url).send().await.unwrap())
        .await
        .assert_error(401);
    send(
        &app,
        reqwest::Method::GET,
        &format!("/api/camps/{camp}/refunds/log?limit=0"),
        None,
    )
    .await
    .assert_error(400);

    let (_, rows) = rows(&app, camp).await;
    assert!(
        rows.iter().all(|r| r["refund_status"] == "pending"),
        "nothing was marked"
    );
    assert_eq!(log(&app, camp).await.data()["count"], 0);
}

async fn a_cache_clear_leaves_the_marks_and_the_log(kind: StoreKind) {
    let app = spawn_app(kind).await;
    let camp = app.benchmark_camp();
    let people = participants(&app, camp);
    let marked = put_mark(
        &app,
        camp,
        &people[1].to_string(),
        json!({"status": "refunded"}),
    )
    .await;
    assert_eq!(marked.status, 200, "{}", marked.body);
    let cleared = app.clear().await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    if kind == StoreKind::Redis {
        let keys = app.redis_keys().await;
        assert!(
            keys.contains(&format!("zsxq:refund:{{{camp}}}:marks")),
            "{keys:?}"
        );
        assert!(
            keys.contains(&format!("zsxq:refund:{{{camp}}}:log")),
            "{keys:?}"
        );
    }
    let (_, rows) = rows(&app, camp).await;
    assert_eq!(row_of(&rows, people[1])["refund_status"], "refunded");
    assert_eq!(log(&app, camp).await.data()["count"], 1);
}

/// `/readyz` once the start-up persistence check has answered.
async fn persistence_checked(app: &TestApp) -> Answer {
    loop {
        let ready = app.get("/readyz").await;
        if ready.data()["refund_marks"]["persistence"] != "checking" {
            return ready;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn has_marks_notice(ready: &Answer) -> bool {
    ready.data()["notices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["kind"] == "marks_not_durable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_without_persistence_is_named_in_readyz_and_one_with_aof_is_not() {
    // The test helper's servers run with --appendonly no --save "".
    let volatile = spawn_app(StoreKind::Redis).await;
    let ready = persistence_checked(&volatile).await;
    assert_eq!(
        ready.data()["refund_marks"]["persistence"],
        "volatile",
        "{}",
        ready.body
    );
    assert!(has_marks_notice(&ready), "{}", ready.body);

    let durable_redis = zsxq_test_support::RedisServer::start().expect("redis-server starts");
    let mut conn = redis::Client::open(durable_redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    let durable = TestApp::builder()
        .store(StoreKind::Redis)
        .var("REDIS_URL", durable_redis.url())
        .spawn()
        .await;
    let ready = persistence_checked(&durable).await;
    assert_eq!(
        ready.data()["refund_marks"]["persistence"],
        "durable",
        "{}",
        ready.body
    );
    assert!(!has_marks_notice(&ready), "{}", ready.body);

    let embedded = spawn_app(StoreKind::Embedded).await;
    let ready = persistence_checked(&embedded).await;
    assert_eq!(ready.data()["refund_marks"]["persistence"], "durable");
    assert!(!has_marks_notice(&ready));
}
