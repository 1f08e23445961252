//! Cross-replica near-cache invalidation over Redis pub/sub.
//!
//! Every replica keeps recently served members in its near cache
//! (`near.rs`). When one replica writes a record whose content changed (a
//! forced sync, a refresh that found new upstream data) or clears the cache,
//! the others must stop serving their copies. The Redis store announces such
//! writes itself, inside the script that performs them (`store/redis/members.rs`,
//! `WRITE_MEMBERS`, and `clear`), on the channel [`keys::EVENTS`]
//! (`zsxq:events`):
//!
//! - `<origin> u <id>,<id>,…` — these members' records changed;
//! - `<origin> c` — the cache was cleared.
//!
//! `<origin>` names the writing process ([`Store::events_origin`]); each
//! replica ignores its own messages, since it updated its near cache itself
//! when it wrote.
//!
//! The listener here holds its own connection (a subscribed connection can
//! do nothing else) made from the configured URL. Pub/sub delivers at most
//! once: a replica that was disconnected may have missed messages, so every
//! (re)subscription distrusts the whole near cache ([`NearCache::distrust_all`]):
//! each entry is checked against the store on its next lookup. It is not
//! dropped: when Redis restarted empty, the near caches hold the only copy
//! of its members, which the store watch writes back (`store_watch.rs`).
//! While disconnected, staleness falls back to the near cache's own bound,
//! `NEAR_CACHE_TTL`. Reconnects back off from 100 ms to 5 s.
//!
//! Only for Redis: the embedded store has a single process by construction
//! (redb locks the file), so there is nobody to tell.
//!
//! [`Store::events_origin`]: crate::store::Store::events_origin

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::near::NearCache;
use crate::domain::UserId;
use crate::store::keys;

/// First pause before resubscribing after a failure; doubles up to the cap.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often a quiet subscription is checked with a PING, and how long the
/// answer may take. A connection whose peer vanished without closing it
/// (a host gone, a NAT entry dropped) would otherwise wait for messages
/// forever while other replicas' changes went unheard.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listener is doing, for `/readyz` and for tests that must know
/// a replica listens before they change anything.
#[derive(Debug, Default)]
pub struct Listener {
    subscribed: AtomicBool,
    /// Messages from other replicas applied so far.
    applied: AtomicU64,
    /// Woken on every (re)subscription: Redis is back, and the store watch
    /// checks at once whether it came back empty.
    resubscribed: tokio::sync::Notify,
}

impl Listener {
    /// Whether the channel is subscribed right now.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Messages from other replicas applied since start.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Resolves at the next (re)subscription.
    pub async fn subscribed_again(&self) {
        self.resubscribed.notified().await;
    }
}

/// One message read off the channel.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    Changed { origin: &'a str, ids: Vec<UserId> },
    Cleared { origin: &'a str },
}

/// Parses a message; `None` for anything not in the format above (another
/// version, a person typing `PUBLISH` by hand).
fn parse(message: &str) -> Option<Event<'_>> {
    let mut parts = message.splitn(3, ' ');
    let origin = parts.next().filter(|o| !o.is_empty())?;
    match (parts.next()?, parts.next()) {
        ("c", None) => Some(Event::Cleared { origin }),
        ("u", Some(ids)) => Some(Event::Changed {
            origin,
            ids: ids
                .split(',')
                .filter_map(|raw| UserId::parse(raw).ok())
                .collect(),
        }),
        _ => None,
    }
}

/// Applies one message to the near cache unless this process sent it.
fn apply(message: &str, own_origin: &str, near: &NearCache) -> bool {
    match parse(message) {
        Some(Event::Changed { origin, ids }) if origin != own_origin => {
            ids.into_iter().for_each(|id| near.invalidate(id));
            true
        }
        Some(Event::Cleared { origin }) if origin != own_origin => {
            near.clear();
            true
        }
        Some(_) => false,
        None => {
            tracing::debug!(message, "ignoring an unknown message on the events channel");
            false
        }
    }
}

/// Starts listening on [`keys::EVENTS`] until the process ends, on the
/// first of `nodes` that answers: the one server, or any node of a Redis
/// Cluster (a message published on one node of a cluster reaches the
/// subscribers of every node, so after losing a node the listener simply
/// moves on to the next). `origin` is this process's store origin, whose
/// messages are skipped.
pub fn spawn(nodes: Vec<String>, origin: String, near: Arc<NearCache>) -> Arc<Listener> {
    spawn_with_heartbeat(nodes, origin, near, Heartbeat::default())
}

/// When a quiet subscription is checked, and how long its PING may take.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub every: Duration,
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            every: HEARTBEAT_EVERY,
            timeout: HEARTBEAT_TIMEOUT,
        }
    }
}

/// [`spawn`] with a chosen heartbeat (tests use a short one).
pub fn spawn_with_heartbeat(
    nodes: Vec<String>,
    origin: String,
    near: Arc<NearCache>,
    heartbeat: Heartbeat,
) -> Arc<Listener> {
    let listener = Arc::new(Listener::default());
    let status = listener.clone();
    tokio::spawn(async move {
        let clients: Vec<redis::Client> = match nodes
            .into_iter()
            .map(redis::Client::open)
            .collect::<Result<_, _>>()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "near-cache invalidation disabled: bad Redis URL");
                return;
            }
        };
        if clients.is_empty() {
            return;
        }
        let mut pause = RECONNECT_FIRST;
        let mut turn = 0usize;
        loop {
            let client = &clients[turn % clients.len()];
            match listen(client, &origin, &near, &status, heartbeat).await {
                Ok(()) => pause = RECONNECT_FIRST,
                Err(e) => {
                    turn = turn.wrapping_add(1);
                    tracing::debug!(error = %e, "events channel unavailable; retrying");
                }
            }
            status.subscribed.store(false, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    });
    listener
}

/// One subscription, until the connection ends.
async fn listen(
    client: &redis::Client,
    origin: &str,
    near: &NearCache,
    status: &Listener,
    beat: Heartbeat,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(keys::EVENTS).await?;
    // Whatever was announced while we were not listening is lost: ask the
    // store again before trusting an entry.
    near.distrust_all();
    status.subscribed.store(true, Ordering::Relaxed);
    status.resubscribed.notify_waiters();
    tracing::info!(
        channel = keys::EVENTS,
        "listening for near-cache invalidations"
    );
    let (mut sink, mut messages) = pubsub.split();
    let mut heartbeat = tokio::time::interval(beat.every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { break };
                heartbeat.reset();
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                if apply(&payload, origin, near) {
                    status.applied.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = heartbeat.tick() => {
                let answered = tokio::time::timeout(
                    beat.timeout,
                    sink.ping::<redis::Value>(),
                )
                .await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "events connection did not answer a PING",
                    )));
                }
            }
        }
    }
    tracing::info!("events channel closed; resubscribing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::domain::CachedMember;

    fn member(id: u64) -> CachedMember {
        CachedMember::for_test(id, id, 1_000_000)
    }

    #[test]
    fn messages_parse_into_changes_and_clears() {
        assert_eq!(
            parse("abc u 1,22,x,333"),
            Some(Event::Changed {
                origin: "abc",
                ids: vec![
                    UserId::new(1).unwrap(),
                    UserId::new(22).unwrap(),
                    UserId::new(333).unwrap()
                ]
            })
        );
        assert_eq!(parse("abc c"), Some(Event::Cleared { origin: "abc" }));
        for bad in ["", "abc", "abc x 1", " u 1", "abc c extra"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn other_replicas_messages_drop_entries_and_own_messages_do_not() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let near = NearCache::new(
            1 << 20,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            clock.clone(),
        );
        assert!(clock.now_ms() > 0);
        near.insert(&member(1));
        near.insert(&member(2));
        assert!(!apply("me u 1", "me", &near));
        assert!(near.get(UserId::new(1).unwrap()).is_some());
        assert!(apply("other u 1", "me", &near));
        assert!(near.get(UserId::new(1).unwrap()).is_none());
        assert!(near.get(UserId::new(2).unwrap()).is_some());
        assert!(apply("other c", "me", &near));
        assert!(near.get(UserId::new(2).unwrap()).is_none());
    }

    async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !cond() {
            assert!(started.elapsed() < limit, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_connection_is_noticed_by_its_heartbeat_and_replaced() {
        let mut redis = zsxq_test_support::RedisServer::start().expect("redis-server");
        let clock = Arc::new(crate::clock::SystemClock);
        let near = Arc::new(NearCache::new(
            1 << 20,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            clock,
        ));
        let beat = Heartbeat {
            every: Duration::from_millis(200),
            timeout: Duration::from_millis(200),
        };
        let listener = spawn_with_heartbeat(vec![redis.url()], "me".into(), near.clone(), beat);
        until("subscribed", Duration::from_secs(5), || {
            listener.is_subscribed()
        })
        .await;

        // A hung server keeps the TCP connection open but says nothing.
        tokio::task::block_in_place(|| redis.pause()).unwrap();
        until("the hang noticed", Duration::from_secs(5), || {
            !listener.is_subscribed()
        })
        .await;
        tokio::task::block_in_place(|| redis.resume()).unwrap();
        until("subscribed again", Duration::from_secs(15), || {
            listener.is_subscribed()
        })
        .await;

        // And it hears other replicas again.
        let mut fresh = member(7);
        fresh.cached_at = chrono::Utc::now().timestamp_millis();
        fresh.updated_at = fresh.cached_at;
        near.insert(&fresh);
        assert!(near.get(UserId::new(7).unwrap()).is_some());
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(keys::EVENTS)
            .arg("other u 7")
            .query_async(&mut conn)
            .await
            .unwrap();
        until("the change applied", Duration::from_secs(5), || {
            near.get(UserId::new(7).unwrap()).is_none()
        })
        .await;
        assert!(listener.applied() >= 1);
    }
}
