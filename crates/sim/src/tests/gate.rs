//! What every call passes first: the token, the signature, the version
//! and the device the web client sends, and the ban after a run of 1059s.

use super::*;

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_and_either_token_form_passes() {
    let sim = start(SimConfig::for_tests()).await;
    let url = group_path(
        &sim,
        &format!("/members/{}/summary", sim.data.members[0].user_id),
    );
    let http = reqwest::Client::new();

    assert_fails_with(&send(http.get(&url)).await, 401);
    assert_fails_with(
        &send(http.get(&url).header("Authorization", "nope")).await,
        401,
    );
    let wrong_cookie = http.get(&url).header("Cookie", "zsxq_access_token=nope");
    assert_fails_with(&send(wrong_cookie).await, 401);

    let header = send(http.get(&url).header("Authorization", TOKEN)).await;
    assert_eq!(header["succeeded"], true);
    let cookie = http.get(&url).header(
        "Cookie",
        format!("abtest_env=product; zsxq_access_token={TOKEN}"),
    );
    assert_eq!(send(cookie).await["succeeded"], true);
}

#[tokio::test]
async fn a_correct_signature_passes_and_a_wrong_one_gets_1059() {
    let sim = start(SimConfig::for_tests()).await;
    let path = format!(
        "/v2/groups/{}/members?count=5&sort=number",
        sim.data.group_id
    );
    let url = format!("{}{path}", sim.base_url);
    let (timestamp, request_id) = ("1735689600", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0");
    let signed = format!("http://{}{path} {timestamp} {request_id}", sim.addr);
    let signature = sha1_smol::Sha1::from(signed).digest().to_string();
    let signed_request = |sig: String| {
        reqwest::Client::new()
            .get(&url)
            .header("Authorization", TOKEN)
            .header("X-Timestamp", timestamp)
            .header("X-Request-Id", request_id)
            .header("X-Signature", sig)
    };

    let good = send(signed_request(signature.clone())).await;
    assert_eq!(good["succeeded"], true, "{good}");
    let mut tampered = signature.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).expect("hex stays ASCII");
    assert_fails_with(&send(signed_request(tampered)).await, 1059);
    assert_fails_with(&send(signed_request("deadbeef".into())).await, 1059);
}

/// A GET of `rest` with the headers the web client sends: token, version,
/// device, timestamp, request id and signature.
async fn signed_get(
    sim: &SimHandle,
    rest: &str,
    version: Option<&str>,
    aduid: Option<&str>,
) -> Value {
    let url = group_path(sim, rest);
    let path = url.trim_start_matches(&sim.base_url).to_string();
    let (timestamp, request_id) = ("1735689600", uuid::Uuid::new_v4().to_string());
    let signed = format!("http://{}{path} {timestamp} {request_id}", sim.addr);
    let mut request = reqwest::Client::new()
        .get(&url)
        .header("Authorization", TOKEN)
        .header("X-Timestamp", timestamp)
        .header("X-Request-Id", &request_id)
        .header(
            "X-Signature",
            sha1_smol::Sha1::from(signed).digest().to_string(),
        );
    if let Some(v) = version {
        request = request.header("X-Version", v);
    }
    if let Some(a) = aduid {
        request = request.header("X-Aduid", a);
    }
    send(request).await
}

#[tokio::test]
async fn calls_without_signature_version_or_a_stable_device_are_refused() {
    let sim = spawn(SimConfig::for_tests()).await.unwrap();
    let uid = sim.data.members[2].user_id;
    let rest = format!("/members/{uid}");
    // Unsigned, as a hand-written curl would be.
    assert_fails_with(&get(&sim, &rest).await, 1059);
    let device = "6b2f1b0e-8f1c-4c1e-9d7a-1f2e3d4c5b6a";
    assert_fails_with(&signed_get(&sim, &rest, Some("2.95.0"), None).await, 1059);
    let too_old = signed_get(&sim, &rest, Some("1.9.0"), Some(device)).await;
    assert_fails_with(&too_old, 1001);
    assert!(
        too_old["info"].as_str().unwrap().contains("版本过低"),
        "{too_old}"
    );
    assert_fails_with(&signed_get(&sim, &rest, None, Some(device)).await, 1001);
    let good = signed_get(&sim, &rest, Some("2.95.0"), Some(device)).await;
    assert_eq!(good["succeeded"], true, "{good}");
    assert_eq!(
        signed_get(&sim, &rest, Some("2.83.0"), Some(device)).await["succeeded"],
        true
    );
    // Another device on the same token looks like a shared token.
    let other = signed_get(&sim, &rest, Some("2.95.0"), Some("another-device")).await;
    assert_fails_with(&other, 1059);
    assert_eq!(other["info"], "设备状态异常");
    // A new installation logging in is accepted once the old one is forgotten.
    sim.forget_device();
    let renewed = signed_get(&sim, &rest, Some("2.95.0"), Some("another-device")).await;
    assert_eq!(renewed["succeeded"], true, "{renewed}");
    // Lenient headers accept the bare call.
    let lenient = start(SimConfig::for_tests()).await;
    assert_eq!(get(&lenient, &rest).await["succeeded"], true);
}

#[tokio::test]
async fn a_token_that_keeps_calling_through_a_run_of_1059s_is_banned_for_the_run() {
    let sim = start(SimConfig {
        ban_after: 4,
        ..SimConfig::for_tests()
    })
    .await;
    let rest = format!("/members/{}", sim.data.members[0].user_id);
    // A run shorter than the threshold, broken by a good answer, is forgiven.
    sim.reject_next(3);
    for _ in 0..3 {
        assert_fails_with(&get(&sim, &rest).await, 1059);
    }
    assert_eq!(get(&sim, &rest).await["succeeded"], true);
    sim.reject_next(4);
    for _ in 0..4 {
        assert_fails_with(&get(&sim, &rest).await, 1059);
    }
    assert!(sim.stats().banned);
    // Banned: 401 whatever comes next, the storm over or not.
    for _ in 0..3 {
        assert_fails_with(&get(&sim, &rest).await, 401);
    }
    assert_eq!(sim_stats(&sim).await["banned"], true);
    assert_eq!(sim.knobs().ban_after, 4);
}
