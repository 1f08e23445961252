//! Tests of reading the configuration from a variable map.

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
    let e = Config::from_vars(&vars(&[("CACHE_TTL", "20"), ("NEAR_CACHE_TTL", "21")])).unwrap_err();
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
