//! The budget's unit tests: spacing, priority, the throttle penalty, the
//! interactive queue and abandoned waits.

use std::sync::Mutex;

use super::penalty::MAX_PENALTY;
use super::*;

/// How long `n` interactive slots, taken one after another, took.
async fn interactive_slots(budget: &Budget, n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        drop(budget.acquire(Priority::Interactive).await.unwrap());
    }
    start.elapsed()
}

#[tokio::test]
async fn slots_are_spread_evenly_not_bursted() {
    // 600/min = one slot every ~100 ms; five slots need at least ~400 ms.
    let budget = Budget::new(600, Duration::ZERO, 5);
    let took = interactive_slots(&budget, 5).await;
    assert!(took >= Duration::from_millis(390), "{took:?}");
}

#[test]
fn a_run_of_throttles_widens_the_spacing_multiplicatively_and_successes_narrow_it_additively() {
    let budget = Budget::new(600, Duration::ZERO, 5);
    let period = budget.period();
    // The first throttles only raise the share; then the gap grows.
    let mut first_penalised = None;
    for i in 1..=10 {
        budget.on_throttle(Priority::Interactive);
        if first_penalised.is_none() && !budget.penalty().is_zero() {
            first_penalised = Some(i);
            assert_eq!(budget.penalty(), period);
        }
    }
    assert_eq!(
        first_penalised,
        Some(5),
        "five throttles in a row trigger it"
    );
    assert_eq!(budget.penalty(), period * 32);
    for _ in 0..200 {
        budget.on_throttle(Priority::Interactive);
    }
    assert_eq!(budget.penalty(), MAX_PENALTY);
    budget.on_success();
    assert_eq!(
        budget.penalty(),
        MAX_PENALTY - Duration::from_millis(50).max(period / 4)
    );
    for _ in 0..10_000 {
        budget.on_success();
    }
    assert_eq!(budget.penalty(), Duration::ZERO);
}

#[test]
fn random_rejection_of_a_quarter_of_calls_does_not_slow_the_pace() {
    let budget = Budget::new(600, Duration::ZERO, 5);
    for _ in 0..500 {
        budget.on_success();
        budget.on_success();
        budget.on_success();
        budget.on_throttle(Priority::Interactive);
        assert!(budget.penalty().is_zero());
    }
}

#[tokio::test]
async fn a_penalty_spaces_slots_wider_than_the_rate() {
    // 6000/min = ~10 ms a slot; once penalised by two periods, each slot
    // waits ~30 ms.
    let budget = Budget::new(6000, Duration::ZERO, 5);
    for _ in 0..6 {
        budget.on_throttle(Priority::Interactive);
    }
    assert_eq!(budget.penalty(), budget.period() * 2);
    let took = interactive_slots(&budget, 6).await;
    // 5 gaps of period + 2 periods of extra = ~150 ms.
    assert!(took >= Duration::from_millis(140), "{took:?}");
}

#[tokio::test]
async fn request_delay_is_a_floor_on_spacing() {
    let budget = Budget::new(6000, Duration::from_millis(100), 5);
    assert_eq!(budget.period(), Duration::from_millis(100));
}

#[tokio::test]
async fn interactive_callers_overtake_waiting_background_work() {
    use std::sync::Arc;
    let budget = Arc::new(Budget::new(600, Duration::ZERO, 5));
    // Use the first slot so everyone below has to queue.
    drop(budget.acquire(Priority::Background).await.unwrap());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (b, o) = (budget.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            drop(b.acquire(Priority::Background).await.unwrap());
            o.lock().unwrap().push(format!("bg{i}"));
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (b, o) = (budget.clone(), order.clone());
    tasks.push(tokio::spawn(async move {
        drop(b.acquire(Priority::Interactive).await.unwrap());
        o.lock().unwrap().push("interactive".to_string());
    }));
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order[0], "interactive", "order was {order:?}");
}

#[test]
fn the_queue_bounds_the_whole_and_each_clients_share_and_forgets_idle_clients() {
    let (a, b, c) = (
        Some(IpAddr::from([10, 0, 0, 1])),
        Some(IpAddr::from([10, 0, 0, 2])),
        Some(IpAddr::from([10, 0, 0, 3])),
    );
    let q = Arc::new(InteractiveQueue::new(3, 2, Duration::from_secs(1)));
    let held = [q.admit(a).unwrap(), q.admit(a).unwrap()];
    assert!(matches!(
        q.admit(a),
        Err(UpstreamError::QueueFull {
            per_client: true,
            waiting: 2,
            ..
        })
    ));
    let other = q.admit(b).unwrap();
    // Full, and c's fair share (3 / 3 clients = 1) is taken from a, the
    // client holding more than its share.
    let third = q.admit(c).unwrap();
    assert!(held[1].is_abandoned(), "a's newest place went to c");
    assert!(matches!(
        held[1].reason(),
        UpstreamError::QueueFull {
            per_client: true,
            ..
        }
    ));
    assert!(!held[0].is_abandoned() && !other.is_abandoned());
    assert_eq!((q.waiting(), q.clients()), (3, 3));
    // Everyone at their share now: the next one is refused.
    let full = q.admit(Some(IpAddr::from([10, 0, 0, 4]))).unwrap_err();
    assert!(
        matches!(
            full,
            UpstreamError::QueueFull {
                per_client: false,
                waiting: 3,
                limit: 3,
                retry_after,
            } if retry_after >= Duration::from_secs(1)
        ),
        "{full:?}"
    );
    assert!(matches!(
        q.admit(c),
        Err(UpstreamError::QueueFull {
            per_client: true,
            ..
        })
    ));
    drop(held);
    drop((other, third));
    assert_eq!((q.waiting(), q.clients()), (0, 0), "no address kept");
}

#[tokio::test]
async fn a_wait_whose_interest_is_abandoned_ends_at_once_and_takes_no_slot() {
    // One slot a second; the first is used, so the next waits ~1 s.
    let budget = Arc::new(Budget::new(60, Duration::ZERO, 5));
    drop(budget.acquire(Priority::Interactive).await.unwrap());
    let queue = Arc::new(InteractiveQueue::new(4, 4, budget.period()));
    let interest = queue.admit(None).unwrap();
    let waiter = {
        let (budget, interest) = (budget.clone(), interest.clone());
        tokio::spawn(waited_for(interest, async move {
            budget.acquire(Priority::Interactive).await.map(drop)
        }))
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(queue.waiting(), 1);
    interest.abandon();
    assert_eq!(queue.waiting(), 0, "the place is given back at once");
    let ended = tokio::time::timeout(Duration::from_millis(500), waiter)
        .await
        .expect("the wait ends without its slot")
        .unwrap();
    assert_eq!(ended, Err(UpstreamError::Abandoned));
    assert_eq!(budget.stats.acquired_interactive.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn waiters_that_give_up_while_penalised_leave_no_gap_in_the_schedule() {
    let budget = Arc::new(Budget::new(6000, Duration::ZERO, 5));
    for _ in 0..6 {
        budget.on_throttle(Priority::Interactive);
    }
    drop(budget.acquire(Priority::Interactive).await.unwrap());
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let budget = budget.clone();
            tokio::spawn(async move { drop(budget.acquire(Priority::Interactive).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    for w in &waiters {
        w.abort();
    }
    let next_free = budget.penalty.next_free().unwrap();
    let spacing = budget.period() + budget.penalty();
    assert!(
        next_free <= Instant::now() + spacing,
        "the next slot is {:?} away, not one spacing ({spacing:?})",
        next_free.saturating_duration_since(Instant::now())
    );
}
