//! Configuration from the environment (SPEC §5, seed §9).
//!
//! Variables keep the seed's names and defaults. A `.env` file in the working
//! directory is read first (real environment variables win). Every value is
//! parsed here, once: a bad value stops start-up with a message that names the
//! variable, instead of surfacing later as a confusing runtime failure.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::GroupId;
use crate::redis_link::RedisTarget;
use crate::upstream::refusal::RefusalPolicy;

/// A string that must never be printed: the upstream token and the admin
/// token. `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the upstream token is sent: the web client's cookie or the app's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// `Cookie: zsxq_access_token=<token>` (ZSXQ_ACCESS_TOKEN).
    Cookie(Secret),
    /// `Authorization: <token>` (ZSXQ_AUTHORIZATION).
    Header(Secret),
}

impl UpstreamAuth {
    pub fn secret(&self) -> &Secret {
        match self {
            Self::Cookie(s) | Self::Header(s) => s,
        }
    }
}

/// Where the cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A redb file; the default, so the product runs without Redis.
    Embedded { path: PathBuf },
    /// Redis: one server, or a cluster when `url` lists several nodes
    /// (comma-separated) or `REDIS_CLUSTER=true` (the password may be inside
    /// the URLs). `read_from_replicas` only with a cluster.
    Redis {
        url: Secret,
        cluster: bool,
        read_from_replicas: bool,
    },
}

impl StoreConfig {
    /// Where Redis is, for `store::redis_link`; `None` for the embedded
    /// store. The URL list was validated when the configuration was read.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        match self {
            StoreConfig::Embedded { .. } => None,
            StoreConfig::Redis {
                url,
                cluster,
                read_from_replicas,
            } => RedisTarget::parse(url.expose(), *cluster, *read_from_replicas).ok(),
        }
    }
}

/// Everything about talking to the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub group_id: GroupId,
    pub auth: UpstreamAuth,
    /// Calls per minute for the whole process, spread evenly.
    pub rate_per_min: u32,
    /// Upstream calls in flight at once.
    pub concurrency: usize,
    /// Minimum spacing between two calls; the seed's `API_REQUEST_DELAY`.
    pub request_delay: Duration,
    /// Per-request timeout; a hung upstream must not hold a caller forever.
    pub timeout: Duration,
    /// Retries of a throttled (1059/429) or transient failure.
    pub max_retries: usize,
    /// First backoff after a throttle; doubled each retry, with jitter.
    pub retry_base: Duration,
    /// `ZSXQ_X_VERSION`: the web client version presented as `X-Version`
    /// (`d.d.d`); the upstream refuses very old ones.
    pub x_version: String,
    /// `UPSTREAM_COOL_DOWN_SECS` and `TOKEN_PROBE_SECS`: how long calls
    /// pause after a run of 1059s, and how often a rejected token is tried.
    pub refusal: RefusalPolicy,
}

/// `ZSXQ_X_VERSION`'s default: what the web client sent in 2025.
pub const DEFAULT_X_VERSION: &str = "2.95.0";

/// Whether `raw` looks like `2.95.0`: three dot-separated runs of digits.
fn is_version(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| (1..=4).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// How the service behaves when its dependencies misbehave (issue #6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReliabilityConfig {
    /// `STORE_TIMEOUT_MS`: the longest a lookup waits on the store for a
    /// single read before the circuit breaker opens and the near cache or the
    /// upstream answers instead.
    pub store_timeout: Duration,
    /// `NEAR_CACHE_MB` in bytes: the near cache's memory bound (members'
    /// records and their JSON); 0 turns the near cache off, and so does the
    /// older `NEAR_CACHE_SIZE=0`.
    pub near_cache_bytes: u64,
    /// `NEAR_CACHE_TTL`: how long a near-cache entry is trusted without asking
    /// the store; never more than `CACHE_TTL`.
    pub near_cache_ttl: Duration,
    /// `SHUTDOWN_GRACE_SECS`: how long a shutdown waits for in-flight
    /// requests (a sync may be one of them) before the process ends anyway.
    pub shutdown_grace: Duration,
}

/// Who may talk to the HTTP API, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// `HTTP_RATE_LIMIT`: requests per minute per client IP; `None` = off.
    pub http_rate_limit: Option<NonZeroU32>,
    /// `CORS_ORIGINS`: origins a browser may call the API from; empty means
    /// no CORS headers at all (same-origin only).
    pub cors_origins: Vec<String>,
    /// `READ_TOKEN`: when set, every `/api/` request needs it (or the admin
    /// token) as a bearer token; `None` = reads are open.
    pub read_token: Option<Secret>,
    /// `ALLOWED_HOSTS` plus the loopback names and the bound address:
    /// the host names (lowercase, IPv6 in brackets, no port) a request's
    /// `Host` may carry. Anything else is a DNS-rebinding page's request.
    pub allowed_hosts: Vec<String>,
    /// Connection limits of the HTTP server.
    pub connections: ConnectionLimits,
}

/// How long and how many connections the HTTP server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `HTTP_HEADER_TIMEOUT_SECS`: the longest a client may take to send a
    /// request's headers, from its first byte (or from connecting).
    pub header_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECS`: how long a keep-alive connection may wait
    /// for its next request.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections open at once; at the cap the
    /// longest-idle one is closed for a new one.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
        }
    }
}

/// How long a request may take and how much of the upstream one client may
/// hold: the budget belongs to people who wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `REQUEST_DEADLINE_SECS`: past it a request is answered 504 and
    /// whatever it still queued for is given up.
    pub request_deadline: Duration,
    /// `REFUND_DEADLINE_SECS`: the same for refund lists, their exports and a
    /// synchronous sync, which legitimately make many upstream calls.
    pub long_deadline: Duration,
    /// `INTERACTIVE_QUEUE_MAX`: lookups waiting for an upstream slot at once.
    pub interactive_queue: usize,
    /// `INTERACTIVE_QUEUE_PER_CLIENT`: of those, how many one client address
    /// may hold at most (under the fair share that applies anyway).
    pub queue_per_client: usize,
    /// `UPSTREAM_BODY_MAX_MB` in bytes: the largest upstream answer read.
    pub upstream_body_max: u64,
}

/// How several replicas share one upstream budget (issue #7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetConfig {
    /// `FLEET_BUDGET`: with Redis, take every upstream slot from the fleet's
    /// schedule in Redis (on by default; ignored on the embedded store).
    pub shared: bool,
    /// `FLEET_SIZE_HINT`: how many replicas share the budget; while Redis is
    /// unreachable each one uses `API_RATE_LIMIT / FLEET_SIZE_HINT`.
    pub size_hint: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub store: StoreConfig,
    /// `CACHE_TTL`: how long a member record lives in the store.
    pub cache_ttl: Duration,
    /// `CACHE_ENABLED=false` sends every lookup to the upstream (seed §9).
    pub cache_enabled: bool,
    /// `CACHE_SOFT_TTL`: older hits are refreshed in the background.
    pub cache_soft_ttl: Duration,
    /// `NEGATIVE_CACHE_TTL`: how long "not a member" answers are remembered.
    pub negative_ttl: Duration,
    /// `NUMBER_SEARCH_WAIT_MS`: how long a lookup of an uncached number
    /// waits for the member-list search before a 503 that says how far it got.
    pub number_search_wait: Duration,
    /// `WARMUP_INTERVAL` (0 = off) and `WARMUP_BATCH`: scheduled refresh of
    /// the members closest to expiry.
    pub warmup_interval: Duration,
    pub warmup_batch: u64,
    pub upstream: UpstreamConfig,
    /// Admin endpoints are refused unless this is set.
    pub admin_token: Option<Secret>,
    pub reliability: ReliabilityConfig,
    pub edge: EdgeConfig,
    pub fleet: FleetConfig,
    pub limits: LimitsConfig,
}

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// A view over variables: the process environment, or a map in tests.
struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    /// The value, with empty strings treated as unset (as `.env` files
    /// commonly leave `REDIS_PASSWORD=`).
    fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &str,
        valid: impl Fn(&T) -> bool,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if valid(&v) => Ok(v),
                _ => Err(err(var, format!("expected {expected}, got {raw:?}"))),
            },
        }
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(err(var, format!("expected true or false, got {other:?}"))),
        }
    }
}

/// Reads `.env` from the working directory into the environment, without
/// overriding variables that are already set. A missing file is normal; a
/// malformed one is worth a warning only, because real environment
/// variables may still carry everything. Called before logging starts
/// (`RUST_LOG`, `LOG_FORMAT`) and again by [`Config::from_env`]; the second
/// read changes nothing.
pub fn load_dotenv() {
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("warning: .env could not be read: {e}");
    }
}

impl Config {
    /// Reads `.env` (if present) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        load_dotenv();
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Parses a configuration from a variable map (the whole environment).
    pub fn from_vars(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let v = Vars(map);
        let host = v.parse(
            "HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address",
            |_| true,
        )?;
        let port = v.parse("PORT", 3013u16, "a port number 1..65535", |p| *p > 0)?;
        let cache_ttl = v.parse("CACHE_TTL", 86_400u64, "seconds, 1..31536000", |s| {
            (1..=31_536_000).contains(s)
        })?;
        let cache_enabled = v.bool("CACHE_ENABLED", true)?;
        let soft_ttl = v.parse(
            "CACHE_SOFT_TTL",
            cache_ttl * 3 / 4,
            "seconds, 1..CACHE_TTL",
            |s| (1..=cache_ttl).contains(s),
        )?;
        let negative_ttl = v.parse("NEGATIVE_CACHE_TTL", 300u64, "seconds, 0..86400", |s| {
            *s <= 86_400
        })?;
        let number_search_wait = v.parse(
            "NUMBER_SEARCH_WAIT_MS",
            10_000u64,
            "milliseconds, 100..60000",
            |ms| (100..=60_000).contains(ms),
        )?;
        let warmup_interval = v.parse("WARMUP_INTERVAL", 600u64, "seconds, 0..86400", |s| {
            *s <= 86_400
        })?;
        let warmup_batch = v.parse("WARMUP_BATCH", 20u64, "an integer 0..1000", |b| *b <= 1000)?;
        let rate_per_min = v.parse("API_RATE_LIMIT", 50u32, "calls per minute, 1..6000", |r| {
            (1..=6000).contains(r)
        })?;
        let concurrency = v.parse("API_CONCURRENCY", 5usize, "an integer 1..50", |c| {
            (1..=50).contains(c)
        })?;
        let delay_ms = v.parse("API_REQUEST_DELAY", 200u64, "milliseconds, 0..60000", |d| {
            *d <= 60_000
        })?;
        let timeout_ms = v.parse(
            "API_TIMEOUT_MS",
            10_000u64,
            "milliseconds, 100..120000",
            |t| (100..=120_000).contains(t),
        )?;
        let max_retries = v.parse("API_MAX_RETRIES", 4usize, "an integer 0..10", |r| *r <= 10)?;
        let retry_base_ms = v.parse(
            "API_RETRY_BASE_MS",
            1_000u64,
            "milliseconds, 1..60000",
            |r| (1..=60_000).contains(r),
        )?;

        let x_version = v.get("ZSXQ_X_VERSION").unwrap_or(DEFAULT_X_VERSION);
        if !is_version(x_version) {
            return Err(err(
                "ZSXQ_X_VERSION",
                format!("expected a version like {DEFAULT_X_VERSION}, got {x_version:?}"),
            ));
        }
        let cool_down = v.parse("UPSTREAM_COOL_DOWN_SECS", 60u64, "seconds, 1..3600", |s| {
            (1..=3_600).contains(s)
        })?;
        let probe_every = v.parse("TOKEN_PROBE_SECS", 60u64, "seconds, 1..3600", |s| {
            (1..=3_600).contains(s)
        })?;
        let base_url = v.get("ZSXQ_API_BASE").unwrap_or("https://api.zsxq.com");
        let base_url = base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(err(
                "ZSXQ_API_BASE",
                format!("expected an http(s) URL, got {base_url:?}"),
            ));
        }
        let group_id = match v.get("ZSXQ_GROUP_ID") {
            None => {
                return Err(err(
                    "ZSXQ_GROUP_ID",
                    "not set: the id of your 星球 (group), digits only",
                ));
            }
            Some(raw) => GroupId::parse(raw).map_err(|e| err("ZSXQ_GROUP_ID", e.to_string()))?,
        };
        let auth = match (v.get("ZSXQ_ACCESS_TOKEN"), v.get("ZSXQ_AUTHORIZATION")) {
            (Some(t), _) => UpstreamAuth::Cookie(Secret::new(t)),
            (None, Some(t)) => UpstreamAuth::Header(Secret::new(t)),
            (None, None) => {
                return Err(err(
                    "ZSXQ_ACCESS_TOKEN",
                    "not set: give ZSXQ_ACCESS_TOKEN (cookie) or ZSXQ_AUTHORIZATION (header)",
                ));
            }
        };

        let store = Self::store_from(&v)?;
        let admin_token = match v.get("ADMIN_TOKEN") {
            None => None,
            Some(t) if t.len() < 16 => {
                return Err(err("ADMIN_TOKEN", "too short: use at least 16 characters"));
            }
            Some(t) => Some(Secret::new(t)),
        };

        let reliability = Self::reliability_from(&v, cache_ttl)?;
        let edge = Self::edge_from(&v, host)?;
        let limits = Self::limits_from(&v, rate_per_min)?;
        let fleet = FleetConfig {
            shared: v.bool("FLEET_BUDGET", true)?,
            size_hint: v.parse(
                "FLEET_SIZE_HINT",
                1u32,
                "the number of replicas, 1..100",
                |n| (1..=100).contains(n),
            )?,
        };

        Ok(Config {
            host,
            port,
            store,
            cache_ttl: Duration::from_secs(cache_ttl),
            cache_enabled,
            cache_soft_ttl: Duration::from_secs(soft_ttl.max(1)),
            negative_ttl: Duration::from_secs(negative_ttl),
            number_search_wait: Duration::from_millis(number_search_wait),
            warmup_interval: Duration::from_secs(warmup_interval),
            warmup_batch,
            upstream: UpstreamConfig {
                base_url,
                group_id,
                auth,
                rate_per_min,
                concurrency,
                request_delay: Duration::from_millis(delay_ms),
                timeout: Duration::from_millis(timeout_ms),
                max_retries,
                retry_base: Duration::from_millis(retry_base_ms),
                x_version: x_version.to_string(),
                refusal: RefusalPolicy {
                    cool_down: Duration::from_secs(cool_down),
                    probe_every: Duration::from_secs(probe_every),
                },
            },
            admin_token,
            reliability,
            edge,
            fleet,
            limits,
        })
    }

    fn limits_from(v: &Vars<'_>, rate_per_min: u32) -> Result<LimitsConfig, ConfigError> {
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
            crate::upstream::budget::default_queue_max(rate_per_min, Duration::from_secs(request))
                .min(10_000),
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

    fn reliability_from(v: &Vars<'_>, cache_ttl: u64) -> Result<ReliabilityConfig, ConfigError> {
        let store_timeout_ms =
            v.parse("STORE_TIMEOUT_MS", 50u64, "milliseconds, 5..5000", |t| {
                (5..=5_000).contains(t)
            })?;
        // Bounded by bytes since issue #8. NEAR_CACHE_SIZE (an entry count)
        // is still read so existing configurations stay valid; only its 0
        // ("off") still means something.
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

    fn edge_from(v: &Vars<'_>, host: IpAddr) -> Result<EdgeConfig, ConfigError> {
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
    fn store_from(v: &Vars<'_>) -> Result<StoreConfig, ConfigError> {
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

/// Whether `raw` is a browser origin: `http(s)://host[:port]`, nothing more
/// (the `Origin` header never carries a path, a query or a trailing slash).
fn is_origin(raw: &str) -> bool {
    let Some(rest) = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
    else {
        return false;
    };
    let (host_ok, port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, after)) => (
                addr.parse::<std::net::Ipv6Addr>().is_ok(),
                match after {
                    "" => None,
                    p => match p.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                },
            ),
            None => return false,
        }
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        (ok, port)
    };
    host_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Whether `name` is what `ALLOWED_HOSTS` takes: a DNS name or IPv4
/// address (letters, digits, `-`, `.`), or an IPv6 address in brackets.
fn is_host_name(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Percent-encodes a password for a URL's userinfo part.
fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("ZSXQ_GROUP_ID", "51122858222824"),
            ("ZSXQ_ACCESS_TOKEN", "tok-123"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.port, 3013);
        assert_eq!(c.cache_ttl, Duration::from_secs(86_400));
        assert!(c.cache_enabled);
        assert_eq!(c.upstream.rate_per_min, 50);
        assert_eq!(c.upstream.concurrency, 5);
        assert_eq!(c.upstream.request_delay, Duration::from_millis(200));
        assert_eq!(c.upstream.base_url, "https://api.zsxq.com");
        assert_eq!(c.upstream.x_version, "2.95.0");
        assert_eq!(c.upstream.refusal, RefusalPolicy::default());
        let c = Config::from_vars(&vars(&[("ZSXQ_X_VERSION", "2.83.0")])).unwrap();
        assert_eq!(c.upstream.x_version, "2.83.0");
        assert!(matches!(c.store, StoreConfig::Embedded { .. }));
        assert!(c.admin_token.is_none());
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            c.fleet,
            FleetConfig {
                shared: true,
                size_hint: 1
            }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "abc"),
            ("CACHE_TTL", "0"),
            ("CACHE_ENABLED", "maybe"),
            ("API_RATE_LIMIT", "-1"),
            ("API_CONCURRENCY", "0"),
            ("ZSXQ_GROUP_ID", "12ab"),
            ("REDIS_URL", "http://x"),
            ("ADMIN_TOKEN", "short"),
            ("CACHE_SOFT_TTL", "90000"),
            ("WARMUP_BATCH", "x"),
            ("STORE_TIMEOUT_MS", "0"),
            ("STORE_TIMEOUT_MS", "fast"),
            ("NEAR_CACHE_SIZE", "-1"),
            ("NEAR_CACHE_MB", "lots"),
            ("NEAR_CACHE_TTL", "0"),
            ("HTTP_RATE_LIMIT", "lots"),
            ("CORS_ORIGINS", "*"),
            (
                "CORS_ORIGINS",
                "https://ok.example, https://bad.example/path",
            ),
            ("SHUTDOWN_GRACE_SECS", "0"),
            ("FLEET_BUDGET", "sometimes"),
            ("FLEET_SIZE_HINT", "0"),
            ("FLEET_SIZE_HINT", "101"),
            ("ZSXQ_X_VERSION", "2.95"),
            ("ZSXQ_X_VERSION", "v2.95.0"),
            ("ZSXQ_X_VERSION", "2.95.0-beta"),
            ("UPSTREAM_COOL_DOWN_SECS", "0"),
            ("TOKEN_PROBE_SECS", "forever"),
            ("READ_TOKEN", "short"),
            ("PUBLIC_READS", "perhaps"),
            ("ALLOWED_HOSTS", "ops.example.com:8443"),
            ("ALLOWED_HOSTS", "https://ops.example.com"),
            ("ALLOWED_HOSTS", "*"),
            ("HTTP_HEADER_TIMEOUT_SECS", "0"),
            ("HTTP_HEADER_TIMEOUT_SECS", "301"),
            ("HTTP_IDLE_TIMEOUT_SECS", "0"),
            ("HTTP_MAX_CONNECTIONS", "7"),
            ("HTTP_MAX_CONNECTIONS", "many"),
        ] {
            let e = Config::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var, "{var}={value}");
            assert!(e.to_string().contains(var));
        }
    }

    #[test]
    fn reliability_and_edge_defaults_are_safe() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.reliability.store_timeout, Duration::from_millis(50));
        assert_eq!(c.reliability.near_cache_bytes, 16 << 20);
        assert_eq!(c.reliability.near_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.reliability.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.edge.http_rate_limit, None, "rate limit is off by default");
        assert!(c.edge.cors_origins.is_empty(), "no CORS unless configured");
    }

    #[test]
    fn open_reads_beyond_loopback_need_a_token_or_an_explicit_yes() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert!(c.edge.read_token.is_none(), "loopback: reads are open");
        assert_eq!(c.edge.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
        let e = Config::from_vars(&vars(&[("HOST", "0.0.0.0")])).unwrap_err();
        assert_eq!(e.var, "READ_TOKEN");
        assert!(e.message.contains("HOST=0.0.0.0") && e.message.contains("PUBLIC_READS"));
        let public =
            Config::from_vars(&vars(&[("HOST", "0.0.0.0"), ("PUBLIC_READS", "true")])).unwrap();
        assert!(public.edge.read_token.is_none());
        let token = Config::from_vars(&vars(&[
            ("HOST", "10.0.0.5"),
            ("READ_TOKEN", "read-token-0123456789"),
            ("ALLOWED_HOSTS", " Ops.Example.com, 10.0.0.9,::1,[fe80::1] "),
        ]))
        .unwrap();
        assert_eq!(
            token.edge.read_token.as_ref().map(Secret::expose),
            Some("read-token-0123456789")
        );
        assert_eq!(
            token.edge.allowed_hosts,
            [
                "localhost",
                "127.0.0.1",
                "[::1]",
                "10.0.0.5",
                "ops.example.com",
                "10.0.0.9",
                "[fe80::1]"
            ]
        );
        assert!(!format!("{token:?}").contains("read-token-0123456789"));
    }

    #[test]
    fn connection_limits_default_to_the_documented_values() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        let limits = c.edge.connections;
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(75));
        assert_eq!(limits.max_connections, 1024);
        let c = Config::from_vars(&vars(&[
            ("HTTP_HEADER_TIMEOUT_SECS", "3"),
            ("HTTP_IDLE_TIMEOUT_SECS", "5"),
            ("HTTP_MAX_CONNECTIONS", "64"),
        ]))
        .unwrap();
        assert_eq!(
            c.edge.connections,
            ConnectionLimits {
                header_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(5),
                max_connections: 64,
            }
        );
    }

    #[test]
    fn request_limits_default_to_30_s_what_the_rate_serves_and_8_mb_and_name_bad_values() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.limits.request_deadline, Duration::from_secs(30));
        assert_eq!(c.limits.long_deadline, Duration::from_secs(300));
        assert_eq!(
            (c.limits.interactive_queue, c.limits.queue_per_client),
            (32, 32),
            "50 a minute serve 25 in 30 s; at least 32"
        );
        assert_eq!(c.limits.upstream_body_max, 8 << 20);
        let c = Config::from_vars(&vars(&[("API_RATE_LIMIT", "2400")])).unwrap();
        assert_eq!(
            c.limits.interactive_queue, 1200,
            "what 30 s of the rate serve"
        );
        let c = Config::from_vars(&vars(&[("INTERACTIVE_QUEUE_MAX", "2")])).unwrap();
        assert_eq!(c.limits.queue_per_client, 2, "the cap follows the bound");
        for (pairs, var) in [
            (
                &[("REQUEST_DEADLINE_SECS", "0")][..],
                "REQUEST_DEADLINE_SECS",
            ),
            (
                &[("REQUEST_DEADLINE_SECS", "soon")],
                "REQUEST_DEADLINE_SECS",
            ),
            (
                &[
                    ("REQUEST_DEADLINE_SECS", "60"),
                    ("REFUND_DEADLINE_SECS", "30"),
                ],
                "REFUND_DEADLINE_SECS",
            ),
            (&[("REFUND_DEADLINE_SECS", "3601")], "REFUND_DEADLINE_SECS"),
            (&[("INTERACTIVE_QUEUE_MAX", "0")], "INTERACTIVE_QUEUE_MAX"),
            (
                &[
                    ("INTERACTIVE_QUEUE_MAX", "4"),
                    ("INTERACTIVE_QUEUE_PER_CLIENT", "5"),
                ],
                "INTERACTIVE_QUEUE_PER_CLIENT",
            ),
            (&[("UPSTREAM_BODY_MAX_MB", "0")], "UPSTREAM_BODY_MAX_MB"),
            (&[("UPSTREAM_BODY_MAX_MB", "8MB")], "UPSTREAM_BODY_MAX_MB"),
        ] {
            let e = Config::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}");
            assert!(e.to_string().contains(var), "{e}");
        }
    }

    #[test]
    fn the_near_cache_never_outlives_the_store() {
        let c = Config::from_vars(&vars(&[("CACHE_TTL", "20")])).unwrap();
        assert_eq!(c.reliability.near_cache_ttl, Duration::from_secs(20));
        let e =
            Config::from_vars(&vars(&[("CACHE_TTL", "20"), ("NEAR_CACHE_TTL", "21")])).unwrap_err();
        assert_eq!(e.var, "NEAR_CACHE_TTL");
    }

    #[test]
    fn cors_origins_and_rate_limit_parse() {
        let c = Config::from_vars(&vars(&[
            (
                "CORS_ORIGINS",
                " https://ops.example.com, http://localhost:5173,http://[::1]:8080 ",
            ),
            ("HTTP_RATE_LIMIT", "120"),
        ]))
        .unwrap();
        assert_eq!(
            c.edge.cors_origins,
            [
                "https://ops.example.com",
                "http://localhost:5173",
                "http://[::1]:8080"
            ]
        );
        assert_eq!(c.edge.http_rate_limit.map(|r| r.get()), Some(120));
        for bad in [
            "ops.example.com",
            "https://",
            "https://a.example/",
            "https://a.example:0",
            "https://a.example:99999",
            "https://[zz]:1",
            "ftp://a.example",
        ] {
            let e = Config::from_vars(&vars(&[("CORS_ORIGINS", bad)])).unwrap_err();
            assert_eq!(e.var, "CORS_ORIGINS", "{bad}");
        }
    }

    #[test]
    fn redis_host_variables_build_a_url() {
        let c = Config::from_vars(&vars(&[
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "p@ss word"),
            ("REDIS_DB", "2"),
        ]))
        .unwrap();
        let StoreConfig::Redis { url, .. } = c.store else {
            panic!("expected redis")
        };
        assert_eq!(url.expose(), "redis://:p%40ss%20word@cache.internal:6380/2");
    }

    #[test]
    fn several_redis_urls_select_a_cluster() {
        let c = Config::from_vars(&vars(&[
            ("REDIS_URL", "redis://10.0.0.1:7000,redis://10.0.0.2:7000"),
            ("REDIS_READ_FROM_REPLICAS", "true"),
        ]))
        .unwrap();
        assert!(matches!(
            c.store.redis_target(),
            Some(RedisTarget::Cluster {
                read_from_replicas: true,
                ..
            })
        ));
        let single = Config::from_vars(&vars(&[("REDIS_URL", "redis://10.0.0.1:7000")])).unwrap();
        assert!(matches!(
            single.store.redis_target(),
            Some(RedisTarget::Single(_))
        ));
        let forced = Config::from_vars(&vars(&[
            ("REDIS_URL", "redis://10.0.0.1:7000"),
            ("REDIS_CLUSTER", "true"),
        ]))
        .unwrap();
        assert!(forced.store.redis_target().unwrap().is_cluster());
        let e = Config::from_vars(&vars(&[(
            "REDIS_URL",
            "redis://:pw@10.0.0.1:7000,10.0.0.2:7000",
        )]))
        .unwrap_err();
        assert_eq!(e.var, "REDIS_URL");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e = Config::from_vars(&vars(&[
            ("REDIS_HOST", "cache"),
            ("REDIS_READ_FROM_REPLICAS", "true"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "REDIS_READ_FROM_REPLICAS");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Config::from_vars(&vars(&[("ADMIN_TOKEN", "admin-secret-0123456789")])).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("tok-123"));
        assert!(!printed.contains("admin-secret-0123456789"));
    }

    #[test]
    fn missing_group_or_token_is_refused() {
        let mut m = vars(&[]);
        m.remove("ZSXQ_GROUP_ID");
        assert_eq!(Config::from_vars(&m).unwrap_err().var, "ZSXQ_GROUP_ID");
        let mut m = vars(&[]);
        m.remove("ZSXQ_ACCESS_TOKEN");
        assert_eq!(Config::from_vars(&m).unwrap_err().var, "ZSXQ_ACCESS_TOKEN");
        let mut m = vars(&[("ZSXQ_AUTHORIZATION", "hdr")]);
        m.remove("ZSXQ_ACCESS_TOKEN");
        let c = Config::from_vars(&m).unwrap();
        assert!(matches!(c.upstream.auth, UpstreamAuth::Header(_)));
    }
}
