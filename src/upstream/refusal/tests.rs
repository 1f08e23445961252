//! The guard's tests: what callers are told while calls are held back, and
//! the state shared through Redis or kept locally when Redis is away.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::keys;

const POLICY: RefusalPolicy = RefusalPolicy {
    cool_down: Duration::from_secs(60),
    probe_every: Duration::from_secs(60),
};

/// One call let through by `guard` and answered 1059.
async fn admitted_and_refused(guard: &Refusal) {
    assert!(guard.admit().await.is_ok());
    guard
        .record(&Err(UpstreamError::from_code(1059, String::new())))
        .await;
}

#[test]
fn every_answer_while_held_back_says_why_in_both_languages_with_when_it_retries() {
    let refusing = UpstreamError::Refusing {
        since_ms: 1_764_625_200_000,
        retry_after: Duration::from_secs(42),
    };
    let dead = UpstreamError::TokenRejected {
        code: 401,
        since_ms: 1_764_625_200_000,
        retry_after: Duration::from_secs(60),
    };
    let api = crate::http::error::ApiError::from(refusing.clone());
    assert_eq!(api.status.as_u16(), 503);
    assert_eq!(api.retry_after, Some(Duration::from_secs(42)));
    assert!(
        api.message
            .contains("upstream refusing (1059) since 2025-12-01T21:40:00Z")
            && api.message.contains("暂停"),
        "{}",
        api.message
    );
    let api = crate::http::error::ApiError::from(dead.clone());
    assert_eq!(api.status.as_u16(), 503);
    assert!(
        api.message
            .contains("token rejected since 2025-12-01T21:40:00Z")
            && api.message.contains("令牌")
            && api.message.contains("ZSXQ_ACCESS_TOKEN"),
        "{}",
        api.message
    );
    // A refund row whose number could not be had says the same.
    let row = crate::cache::batch::missing_reason(&refusing);
    assert!(row.contains("1059") && row.contains("暂停"), "{row}");
    let row = crate::cache::batch::missing_reason(&dead);
    assert!(
        row.contains("令牌") && row.contains("ZSXQ_AUTHORIZATION"),
        "{row}"
    );
    assert!(!refusing.is_retryable() && !dead.is_retryable());
}

#[tokio::test]
async fn the_local_guard_refuses_callers_and_wakes_those_waiting_for_a_slot() {
    let guard = Arc::new(Refusal::local(POLICY));
    let waiting = tokio::spawn({
        let guard = guard.clone();
        async move { guard.refused().await }
    });
    for _ in 0..REFUSAL_RUN {
        admitted_and_refused(&guard).await;
    }
    let woken = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a waiting caller is told at once")
        .unwrap();
    assert!(matches!(woken, UpstreamError::Refusing { .. }), "{woken:?}");
    assert!(matches!(
        guard.admit().await,
        Err(UpstreamError::Refusing { .. })
    ));
    assert!(guard.refused_now().is_some());
    assert_eq!(guard.standing().kind(), "refusing");
}

#[tokio::test]
async fn replicas_on_one_redis_share_the_cool_down() {
    let redis = zsxq_test_support::RedisServer::start().expect("redis-server");
    let target = RedisTarget::Single(redis.url());
    let a = Refusal::shared(&target, POLICY, "tok").unwrap();
    let b = Refusal::shared(&target, POLICY, "tok").unwrap();
    // Half the run on each replica: consecutive fleet-wide.
    for i in 0..REFUSAL_RUN {
        admitted_and_refused(if i % 2 == 0 { &a } else { &b }).await;
    }
    assert!(matches!(
        a.admit().await,
        Err(UpstreamError::Refusing { .. })
    ));
    assert!(matches!(
        b.admit().await,
        Err(UpstreamError::Refusing { .. })
    ));
    assert_eq!(b.refresh().await.kind(), "refusing");
    // A dead token seen by one replica stops the other.
    let c = Refusal::shared(&target, POLICY, "tok").unwrap();
    redis::cmd("DEL")
        .arg(keys::REFUSAL)
        .exec_async(&mut c.shared.as_ref().unwrap().conn.clone())
        .await
        .unwrap();
    assert!(a.admit().await.is_ok());
    a.record(&Err(UpstreamError::from_code(401, String::new())))
        .await;
    let e = c.admit().await.unwrap_err();
    assert!(
        matches!(e, UpstreamError::TokenRejected { code: 401, .. }),
        "{e:?}"
    );
    assert_eq!(c.standing().kind(), "token_rejected");
}

#[tokio::test]
async fn an_unreachable_redis_leaves_the_decision_to_the_local_copy() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let guard = Refusal::shared(
        &RedisTarget::Single(format!("redis://{closed}")),
        POLICY,
        "tok",
    )
    .unwrap();
    for _ in 0..REFUSAL_RUN {
        admitted_and_refused(&guard).await;
    }
    assert!(matches!(
        guard.admit().await,
        Err(UpstreamError::Refusing { .. })
    ));
}
