//! The OpenAPI document against the live answers: every field an answer
//! carries is one the document names, at every depth, so a field added to
//! a report or a row cannot go undocumented. (The document may name more
//! than one answer shows: optional fields, other states.)

use serde_json::{Map, Value, json};

use zsxq_test_support::{StoreKind, TestApp};

/// The schemas `schema` stands for: `$ref`s followed, `allOf`, `oneOf` and
/// `anyOf` flattened.
fn flatten<'a>(doc: &'a Value, schema: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a $ref outside the schemas: {target}"));
        let found = &doc["components"]["schemas"][name];
        assert!(!found.is_null(), "$ref to a missing schema {name}");
        return flatten(doc, found, out);
    }
    out.push(schema);
    for combinator in ["allOf", "oneOf", "anyOf"] {
        for part in schema[combinator].as_array().into_iter().flatten() {
            flatten(doc, part, out);
        }
    }
}

/// Adds to `problems` every field of `live` (at `at`) that `schema` does
/// not name. A schema without `properties` anywhere is free-form and not
/// looked into.
fn undocumented(doc: &Value, schema: &Value, live: &Value, at: &str, problems: &mut Vec<String>) {
    let mut parts = Vec::new();
    flatten(doc, schema, &mut parts);
    match live {
        Value::Object(fields) => {
            let mut named: Map<String, Value> = Map::new();
            let mut any_properties = false;
            for part in &parts {
                let Some(properties) = part["properties"].as_object() else {
                    continue;
                };
                any_properties = true;
                for (name, sub) in properties {
                    let slot = named
                        .entry(name.clone())
                        .or_insert_with(|| json!({"allOf": []}));
                    slot["allOf"].as_array_mut().unwrap().push(sub.clone());
                }
            }
            if !any_properties {
                return;
            }
            for (name, value) in fields {
                match named.get(name) {
                    Some(sub) => undocumented(doc, sub, value, &format!("{at}.{name}"), problems),
                    None => problems.push(format!("{at}.{name}")),
                }
            }
        }
        Value::Array(items) => {
            for part in parts.iter().filter(|p| !p["items"].is_null()) {
                for (i, item) in items.iter().take(3).enumerate() {
                    undocumented(doc, &part["items"], item, &format!("{at}[{i}]"), problems);
                }
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_field_of_the_json_answers_is_named_in_the_openapi_document() {
    let app = TestApp::builder()
        .store(StoreKind::Embedded)
        .members(120)
        .spawn()
        .await;
    let doc = app.get("/api/openapi.json").await.body;
    let sync = app.sync(json!({})).await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    let member = &app.sim.data.members[3];
    let camp = app
        .sim
        .data
        .benchmark_camp()
        .expect("benchmark camp")
        .checkin_id;
    let whole = app.refund_list(camp, json!({"required_days": 1})).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let mut answers = vec![
        ("POST", "/api/users/sync".to_string(), sync.body),
        (
            "POST",
            "/api/camps/{checkinId}/refund-list".to_string(),
            whole.body,
        ),
    ];
    let reads = [
        ("/api/users", "/api/users?page=1&page_size=5".to_string()),
        (
            "/api/users/{userId}",
            format!("/api/users/{}", member.user_id),
        ),
        (
            "/api/users/number/{number}",
            format!("/api/users/number/{}", member.number),
        ),
        (
            "/api/users/cache/stats",
            "/api/users/cache/stats".to_string(),
        ),
        ("/readyz", "/readyz".to_string()),
        ("/api/camps", "/api/camps".to_string()),
        (
            "/api/camps/{checkinId}/refund-list",
            format!("/api/camps/{camp}/refund-list?required_days=1"),
        ),
    ];
    for (template, path) in reads {
        let a = app.get(&path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        answers.push(("GET", template.to_string(), a.body));
    }
    let job = app.sync(json!({"async": true})).await;
    assert_eq!(job.status, 202, "{}", job.body);
    let job_path = format!("/api/users/sync/{}", job.data()["job_id"].as_str().unwrap());
    let status = loop {
        let a = app.get(&job_path).await;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.data()["state"] != "running" {
            break a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    answers.push(("GET", "/api/users/sync/{jobId}".to_string(), status.body));
    let cleared = app.clear().await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    answers.push(("DELETE", "/api/users/cache".to_string(), cleared.body));
    let mut problems = Vec::new();
    for (method, template, body) in &answers {
        let op = &doc["paths"][template.as_str()][method.to_lowercase()];
        let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {template} documents no JSON 200 answer"
        );
        undocumented(
            &doc,
            schema,
            body,
            &format!("{method} {template}"),
            &mut problems,
        );
    }
    assert!(
        problems.is_empty(),
        "fields the OpenAPI document does not name:\n{}",
        problems.join("\n")
    );
    // The check itself sees a field the document leaves out.
    let mut probe = Vec::new();
    undocumented(
        &doc,
        &doc["components"]["schemas"]["SyncReport"],
        &json!({"made_up": 1}),
        "probe",
        &mut probe,
    );
    assert_eq!(probe, ["probe.made_up"]);
}
