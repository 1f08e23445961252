//! Each part of [`Config`] read from its own variables: request limits,
//! reliability, the HTTP edge, and where the store lives.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::vars::{Vars, err, is_host_name, is_origin, percent_encode};
use super::{
    Config, ConfigError, ConnectionLimits, EdgeConfig, LimitsConfig, ReliabilityConfig, Secret,
    StoreConfig,
};
use crate::redis_link::RedisTarget;

impl Config {
    pub(super) fn limits_from(
        v: &Vars<'_>,
        rate_per_min: u32,
    ) -> Result<LimitsConfig, ConfigError> {
        let request = v.parse("REQUEST_DEADLINE_SECS", 30u64, "seconds, 1..600", |s| {
            (1..=600).contains(s)
        })?;
        let long = v.parse(
            "REFUND_DEADLINE_SECS",
            300u64.max(request),
            &format!("seconds, {request}..3600 (at least REQUEST_DEADLINE_SECS)"),
            |s| (request..=3_600).contains(s),
        )?;
        let queue = v.parse(
            "INTERACTIVE_QUEUE_MAX",
            default_queue_max(rate_per_min, Duration::from_secs(request)).min(10_000),
            "an integer 1..10000",
            |q| (1..=10_000).contains(q),
        )?;
        let per_client = v.parse(
            "INTERACTIVE_QUEUE_PER_CLIENT",
            queue,
            &format!("an integer 1..{queue} (at most INTERACTIVE_QUEUE_MAX)"),
            |p| (1..=queue).contains(p),
        )?;
        let body_mb = v.parse("UPSTREAM_BODY_MAX_MB", 8u64, "megabytes, 1..1024", |m| {
            (1..=1_024).contains(m)
        })?;
        Ok(LimitsConfig {
            request_deadline: Duration::from_secs(request),
            long_deadline: Duration::from_secs(long),
            interactive_queue: queue,
            queue_per_client: per_client,
            upstream_body_max: body_mb << 20,
        })
    }

    pub(super) fn reliability_from(
        v: &Vars<'_>,
        cache_ttl: u64,
    ) -> Result<ReliabilityConfig, ConfigError> {
        let store_timeout_ms =
            v.parse("STORE_TIMEOUT_MS", 50u64, "milliseconds, 5..5000", |t| {
                (5..=5_000).contains(t)
            })?;
        // The near cache is bounded by bytes (NEAR_CACHE_MB). NEAR_CACHE_SIZE
        // (an entry count) is still read so existing configurations stay
        // valid; only its 0 ("off") means something.
        let near_cache_size = v.parse(
            "NEAR_CACHE_SIZE",
            10_000u64,
            "an entry count 0..1000000 (0 turns it off; the bound is NEAR_CACHE_MB)",
            |n| *n <= 1_000_000,
        )?;
        let near_cache_mb = v.parse(
            "NEAR_CACHE_MB",
            16u64,
            "megabytes, 0..4096 (0 turns it off)",
            |n| *n <= 4_096,
        )?;
        let near_cache_bytes = if near_cache_size == 0 {
            0
        } else {
            near_cache_mb << 20
        };
        // The near cache must never outlive what the store would answer, so
        // its TTL is capped by CACHE_TTL; the default follows a short CACHE_TTL.
        let near_cache_ttl = v.parse(
            "NEAR_CACHE_TTL",
            60u64.min(cache_ttl),
            &format!("seconds, 1..{cache_ttl} (at most CACHE_TTL)"),
            |t| (1..=cache_ttl).contains(t),
        )?;
        let grace = v.parse("SHUTDOWN_GRACE_SECS", 30u64, "seconds, 1..3600", |g| {
            (1..=3_600).contains(g)
        })?;
        Ok(ReliabilityConfig {
            store_timeout: Duration::from_millis(store_timeout_ms),
            near_cache_bytes,
            near_cache_ttl: Duration::from_secs(near_cache_ttl),
            shutdown_grace: Duration::from_secs(grace),
        })
    }

    pub(super) fn edge_from(v: &Vars<'_>, host: IpAddr) -> Result<EdgeConfig, ConfigError> {
        let rate = v.parse(
            "HTTP_RATE_LIMIT",
            0u32,
            "requests per minute per client, 0..1000000 (0 = off)",
            |r| *r <= 1_000_000,
        )?;
        let mut cors_origins = Vec::new();
        for raw in v.get("CORS_ORIGINS").unwrap_or("").split(',') {
            let origin = raw.trim();
            if origin.is_empty() {
                continue;
            }
            if !is_origin(origin) {
                return Err(err(
                    "CORS_ORIGINS",
                    format!(
                        "expected comma-separated origins like https://ops.example.com (scheme and host, optional port, no path, no wildcard), got {origin:?}"
                    ),
                ));
            }
            cors_origins.push(origin.to_string());
        }
        Ok(EdgeConfig {
            http_rate_limit: NonZeroU32::new(rate),
            cors_origins,
            read_token: Self::read_token_from(v, host)?,
            allowed_hosts: Self::allowed_hosts_from(v, host)?,
            connections: Self::connections_from(v)?,
        })
    }

    /// `READ_TOKEN`, and the refusal to serve open reads beyond loopback
    /// unless `PUBLIC_READS=true` says that is meant.
    fn read_token_from(v: &Vars<'_>, host: IpAddr) -> Result<Option<Secret>, ConfigError> {
        let token = match v.get("READ_TOKEN") {
            None => None,
            Some(t) if t.chars().count() < 16 => {
                return Err(err("READ_TOKEN", "too short: use at least 16 characters"));
            }
            Some(t) => Some(Secret::new(t)),
        };
        let public = v.bool("PUBLIC_READS", false)?;
        if token.is_none() && !public && !host.is_loopback() {
            return Err(err(
                "READ_TOKEN",
                format!(
                    "HOST={host} is not a loopback address, so anyone who reaches it would read every member's name and number: set READ_TOKEN (at least 16 characters) to require it, or PUBLIC_READS=true if open reads are meant"
                ),
            ));
        }
        Ok(token)
    }

    /// The loopback names, the bound address (unless it is a wildcard) and
    /// `ALLOWED_HOSTS` (comma-separated names or addresses, no port).
    fn allowed_hosts_from(v: &Vars<'_>, host: IpAddr) -> Result<Vec<String>, ConfigError> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
        let bound = match host {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        if !host.is_unspecified() && !hosts.contains(&bound) {
            hosts.push(bound);
        }
        for raw in v.get("ALLOWED_HOSTS").unwrap_or("").split(',') {
            let name = raw.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let name = match name.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => format!("[{v6}]"),
                Err(_) => name,
            };
            if !is_host_name(&name) {
                return Err(err(
                    "ALLOWED_HOSTS",
                    format!(
                        "expected comma-separated host names or addresses without a port, like zsxq-cache.example.com,10.0.0.5 (any port is accepted), got {raw:?}"
                    ),
                ));
            }
            if !hosts.contains(&name) {
                hosts.push(name);
            }
        }
        Ok(hosts)
    }

    fn connections_from(v: &Vars<'_>) -> Result<ConnectionLimits, ConfigError> {
        let d = ConnectionLimits::default();
        let header = v.parse(
            "HTTP_HEADER_TIMEOUT_SECS",
            d.header_timeout.as_secs(),
            "seconds, 1..300",
            |s| (1..=300).contains(s),
        )?;
        let idle = v.parse(
            "HTTP_IDLE_TIMEOUT_SECS",
            d.idle_timeout.as_secs(),
            "seconds, 1..3600",
            |s| (1..=3_600).contains(s),
        )?;
        let max_connections = v.parse(
            "HTTP_MAX_CONNECTIONS",
            d.max_connections,
            "connections, 8..1000000 (keep it below the open-file limit, ulimit -n)",
            |n| (8..=1_000_000).contains(n),
        )?;
        Ok(ConnectionLimits {
            header_timeout: Duration::from_secs(header),
            idle_timeout: Duration::from_secs(idle),
            max_connections,
        })
    }

    /// `REDIS_URL` wins; else `REDIS_HOST` (with PORT/PASSWORD/DB) selects
    /// Redis; with neither, the embedded store is used.
    pub(super) fn store_from(v: &Vars<'_>) -> Result<StoreConfig, ConfigError> {
        let cluster = v.bool("REDIS_CLUSTER", false)?;
        let read_from_replicas = v.bool("REDIS_READ_FROM_REPLICAS", false)?;
        if let Some(url) = v.get("REDIS_URL") {
            let target = RedisTarget::parse(url, cluster, read_from_replicas).map_err(|e| {
                let var = if e.starts_with("replica") {
                    "REDIS_READ_FROM_REPLICAS"
                } else {
                    "REDIS_URL"
                };
                err(var, e)
            })?;
            return Ok(StoreConfig::Redis {
                url: Secret::new(url),
                cluster: target.is_cluster(),
                read_from_replicas,
            });
        }
        if let Some(host) = v.get("REDIS_HOST") {
            if host.contains(['/', '@', ' ']) {
                return Err(err(
                    "REDIS_HOST",
                    format!("expected a host name, got {host:?}"),
                ));
            }
            let port = v.parse("REDIS_PORT", 6379u16, "a port number 1..65535", |p| *p > 0)?;
            let db = v.parse("REDIS_DB", 0u32, "a database number 0..15", |d| *d <= 15)?;
            let auth = match v.get("REDIS_PASSWORD") {
                Some(p) => format!(":{}@", percent_encode(p)),
                None => String::new(),
            };
            let url = format!("redis://{auth}{host}:{port}/{db}");
            if read_from_replicas && !cluster {
                return Err(err(
                    "REDIS_READ_FROM_REPLICAS",
                    "replica reads need a cluster (several URLs or REDIS_CLUSTER=true)",
                ));
            }
            return Ok(StoreConfig::Redis {
                url: Secret::new(url),
                cluster,
                read_from_replicas,
            });
        }
        let path = v.get("EMBEDDED_PATH").unwrap_or("zsxq-cache.redb");
        Ok(StoreConfig::Embedded {
            path: PathBuf::from(path),
        })
    }
}

/// Least number of lookups allowed to wait for a slot at once when not
/// configured; the default is what the rate serves within the request
/// deadline, if more ([`default_queue_max`]).
pub const DEFAULT_QUEUE_MIN: usize = 32;

/// The default interactive queue: as many lookups as `rate_per_min` serves
/// within `deadline` (a deeper queue only produces answers past their
/// deadline), at least [`DEFAULT_QUEUE_MIN`].
pub fn default_queue_max(rate_per_min: u32, deadline: Duration) -> usize {
    let servable = f64::from(rate_per_min) * deadline.as_secs_f64() / 60.0;
    (servable.ceil() as usize).max(DEFAULT_QUEUE_MIN)
}

/// The knobs: `UPSTREAM_COOL_DOWN_SECS` and `TOKEN_PROBE_SECS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalPolicy {
    /// The first cool-down after a run of 1059s; each further one doubles.
    pub cool_down: Duration,
    /// How often a dead token is tried again.
    pub probe_every: Duration,
}

impl Default for RefusalPolicy {
    fn default() -> Self {
        Self {
            cool_down: Duration::from_secs(60),
            probe_every: Duration::from_secs(60),
        }
    }
}
