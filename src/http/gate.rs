//! Who may ask what, checked before anything else runs: the `Host` a
//! request names, the read token, and what a request that changes or
//! spends something may look like. The checks run in `pipeline.rs`, before
//! the hot route and the router alike, so no route escapes them.
//!
//! Decisions:
//! - **Host allowlist.** A page on `attacker.example` that rebinds its name
//!   to `127.0.0.1` reaches the service from the operator's own browser;
//!   the only trace is the `Host` header, which keeps the attacker's name.
//!   So a request is served only when its host (port ignored) is a loopback
//!   name, the bound address or in `ALLOWED_HOSTS`; else 421 Misdirected
//!   Request. The probe paths (`/healthz`, `/readyz`, `/metrics`) are
//!   exempt: load balancers and Prometheus address a replica by its IP, and
//!   none of them shows a member.
//! - **Read token.** With `READ_TOKEN` set, every `/api/` request needs
//!   `Authorization: Bearer <READ_TOKEN or ADMIN_TOKEN>`; admin routes then
//!   still check for the admin token themselves. The page (`/`, `/assets/…`)
//!   and the probes stay open: they carry no member data. Tokens are
//!   compared as SHA-1 digests in constant time, as the admin check does.
//! - **Requests that change or spend something** (POST, PUT, PATCH, DELETE)
//!   carry JSON or nothing: a body or a `Content-Type` other than
//!   `application/json` is 415. A browser sends `text/plain`, form and
//!   multipart bodies cross-site without asking; `application/json` needs a
//!   preflight, which no CORS answer grants unless `CORS_ORIGINS` says so.
//!   A body-less cross-site POST needs no preflight either, so an `Origin`
//!   that is neither an allowed host nor in `CORS_ORIGINS` is refused too
//!   (403); browsers send `Origin` with every such request.

use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Secret;

/// Paths a load balancer or Prometheus polls: never held to the Host
/// allowlist or the read token, nor rate limited (`edge.rs`).
pub(super) const HEALTH_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The longest host name echoed back in a refusal.
const ECHO_LIMIT: usize = 80;

type Digest = [u8; 20];

/// The SHA-1 digest a token is compared by, so tokens of any length are
/// compared in the same time (here and by the admin check, `extract.rs`).
pub(super) fn token_digest(raw: &[u8]) -> Digest {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(raw);
    sha.digest().bytes()
}

/// The checks, configured once.
pub struct Gate {
    /// Host names a request may name (lowercase, IPv6 in brackets).
    allowed_hosts: Vec<String>,
    /// Digests of the tokens that open `/api/` (the read token and, when
    /// set, the admin token); `None` when `READ_TOKEN` is not set.
    read_tokens: Option<Vec<Digest>>,
    /// `CORS_ORIGINS`: origins that may send unsafe requests too.
    cors_origins: Vec<String>,
}

impl std::fmt::Debug for Gate {
    /// Without the token digests: nothing derived from a token is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("allowed_hosts", &self.allowed_hosts)
            .field("reads_need_token", &self.reads_need_token())
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl Gate {
    pub fn new(
        allowed_hosts: Vec<String>,
        read_token: Option<&Secret>,
        admin_token: Option<&Secret>,
        cors_origins: Vec<String>,
    ) -> Self {
        let read_tokens = read_token.map(|read| {
            std::iter::once(read)
                .chain(admin_token)
                .map(|t| token_digest(t.expose().as_bytes()))
                .collect()
        });
        Self {
            allowed_hosts,
            read_tokens,
            cors_origins,
        }
    }

    /// Whether reads need a token.
    pub fn reads_need_token(&self) -> bool {
        self.read_tokens.is_some()
    }

    /// The 421 answer when `request` names a host that is not served here.
    pub fn refuse_host(&self, request: &Request) -> Option<Response> {
        if HEALTH_PATHS.contains(&request.uri().path()) {
            return None;
        }
        // Borrowed, not copied: this runs on the hot route too.
        let named = request.uri().host().or_else(|| {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            Some(host_part(value))
        });
        let host = named.map(|h| h.trim_end_matches('.'));
        if host.is_some_and(|h| self.allows_host(h)) {
            return None;
        }
        let message = match host {
            None => "请求缺少 Host 头 (send a Host header naming this service)".to_string(),
            Some(h) => format!(
                "不受理此主机名的请求 (Host {:?} is not served here: use the service's address, or add the name to ALLOWED_HOSTS)",
                h.chars().take(ECHO_LIMIT).collect::<String>()
            ),
        };
        Some(ApiError::new(StatusCode::MISDIRECTED_REQUEST, message).into_response())
    }

    fn allows_host(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// The 401 answer when `/api/` needs a token that `request` lacks.
    pub fn refuse_without_token(&self, request: &Request) -> Option<Response> {
        let tokens = self.read_tokens.as_ref()?;
        if !request.uri().path().starts_with("/api/") {
            return None;
        }
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        let given = token_digest(given);
        // Every token is compared, so the time does not say which matched.
        let matched = tokens
            .iter()
            .fold(subtle::Choice::from(0), |any, t| any | given.ct_eq(t));
        if bool::from(matched) {
            return None;
        }
        let mut answer = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "需要读取令牌 (send Authorization: Bearer <READ_TOKEN>; the admin token works too)",
        )
        .into_response();
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"zsxq-cache\""),
        );
        Some(answer)
    }

    /// The 415 or 403 answer when an unsafe `request` carries something
    /// other than JSON, or comes from a page of another site.
    pub fn refuse_unsafe(&self, request: &Request) -> Option<Response> {
        if !matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return None;
        }
        let headers = request.headers();
        if let Some(origin) = headers.get(header::ORIGIN)
            && !self.allows_origin(origin)
        {
            let shown: String = String::from_utf8_lossy(origin.as_bytes())
                .chars()
                .take(ECHO_LIMIT)
                .collect();
            return Some(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "拒绝来自其他网站的请求 (a page on {shown:?} may not change anything here: open the service's own page, or add the origin to CORS_ORIGINS)"
                    ),
                )
                .into_response(),
            );
        }
        // What hyper knows of the body (its Content-Length, or chunks to
        // come), rather than the headers: an in-process body has neither.
        let body = request.body();
        let has_body = !body.is_end_stream() && body.size_hint().exact() != Some(0);
        let json = match headers.get(header::CONTENT_TYPE) {
            None => !has_body,
            Some(value) => is_json(value),
        };
        if json {
            return None;
        }
        Some(
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "请求体必须是 JSON (send the body with Content-Type: application/json, or send no body)",
            )
            .into_response(),
        )
    }

    /// Whether an `Origin` is this service (an allowed host, any scheme
    /// and port: nginx may terminate TLS on another port) or configured.
    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.cors_origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(authority) = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
        else {
            return false; // "null" and the like: a sandboxed or local page
        };
        self.allows_host(host_part(authority))
    }
}

/// The host of a `Host` value or an origin's authority, without the port
/// (IPv6 keeps its brackets).
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::{request, with_body};

    fn gate(read: Option<&str>) -> Gate {
        let hosts = ["localhost", "127.0.0.1", "[::1]", "ops.example.com"]
            .map(String::from)
            .into();
        let read = read.map(Secret::new);
        let admin = Secret::new("admin-token-0123456789");
        Gate::new(
            hosts,
            read.as_ref(),
            Some(&admin),
            vec!["https://dash.example.org".into()],
        )
    }

    fn status(answer: Option<Response>) -> Option<u16> {
        answer.map(|r| r.status().as_u16())
    }

    #[test]
    fn hosts_are_matched_without_port_or_case_and_probes_are_exempt() {
        let g = gate(None);
        for host in [
            "localhost",
            "127.0.0.1:3013",
            "[::1]:80",
            "OPS.example.com",
            "ops.example.com.",
        ] {
            let r = request(Method::GET, "/api/users", &[("host", host)]);
            assert_eq!(status(g.refuse_host(&r)), None, "{host}");
        }
        for host in [
            "attacker.example",
            "127.0.0.1.attacker.example",
            "[::2]",
            "",
        ] {
            let r = request(Method::GET, "/api/users/1", &[("host", host)]);
            assert_eq!(status(g.refuse_host(&r)), Some(421), "{host:?}");
        }
        let none = request(Method::GET, "/", &[]);
        assert_eq!(status(g.refuse_host(&none)), Some(421));
        let absolute = request(Method::GET, "http://attacker.example/api/users", &[]);
        assert_eq!(status(g.refuse_host(&absolute)), Some(421));
        for probe in HEALTH_PATHS {
            let r = request(Method::GET, probe, &[("host", "10.1.2.3:3013")]);
            assert_eq!(status(g.refuse_host(&r)), None, "{probe}");
        }
    }

    #[test]
    fn the_read_token_or_the_admin_token_opens_the_api_only() {
        let g = gate(Some("read-token-0123456789"));
        assert!(g.reads_need_token());
        let with = |auth: &str| {
            let r = request(Method::GET, "/api/users", &[("authorization", auth)]);
            status(g.refuse_without_token(&r))
        };
        assert_eq!(with("Bearer read-token-0123456789"), None);
        assert_eq!(with("Bearer admin-token-0123456789"), None);
        assert_eq!(with("Bearer read-token-012345678"), Some(401));
        assert_eq!(with("read-token-0123456789"), Some(401));
        assert_eq!(with("Bearer "), Some(401));
        let bare = request(Method::GET, "/api/users/1", &[]);
        let answer = g.refuse_without_token(&bare).expect("refused");
        assert!(answer.headers().contains_key(header::WWW_AUTHENTICATE));
        for open in ["/", "/assets/app.js", "/healthz", "/readyz", "/metrics"] {
            let r = request(Method::GET, open, &[]);
            assert_eq!(status(g.refuse_without_token(&r)), None, "{open}");
        }
        let off = gate(None);
        assert_eq!(status(off.refuse_without_token(&bare)), None);
    }

    #[test]
    fn unsafe_requests_carry_json_or_nothing_and_come_from_this_site() {
        let g = gate(None);
        let check = |method: Method, headers: &[(&str, &str)]| {
            status(g.refuse_unsafe(&request(method, "/api/users/sync", headers)))
        };
        let json = ("content-type", "application/json");
        assert_eq!(check(Method::POST, &[json, ("content-length", "2")]), None);
        assert_eq!(
            check(
                Method::POST,
                &[("content-type", "Application/JSON; charset=utf-8")]
            ),
            None
        );
        assert_eq!(check(Method::POST, &[]), None, "no body at all");
        assert_eq!(check(Method::DELETE, &[("content-length", "0")]), None);
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
        ] {
            assert_eq!(
                check(Method::POST, &[("content-type", bad)]),
                Some(415),
                "{bad}"
            );
        }
        let bodied = |method: Method, body: &str| {
            status(g.refuse_unsafe(&with_body(method, "/api/camps/1/refund-list", &[], body)))
        };
        assert_eq!(bodied(Method::POST, "{\"required_days\": 7}"), Some(415));
        assert_eq!(bodied(Method::DELETE, "x"), Some(415));
        assert_eq!(bodied(Method::POST, ""), None);
        assert_eq!(check(Method::GET, &[("content-type", "text/plain")]), None);
        for (origin, expected) in [
            ("http://127.0.0.1:3013", None),
            ("https://ops.example.com", None),
            ("https://dash.example.org", None),
            ("https://attacker.example", Some(403)),
            ("null", Some(403)),
            ("https://dash.example.org:8443", Some(403)),
        ] {
            assert_eq!(
                check(Method::POST, &[json, ("origin", origin)]),
                expected,
                "{origin}"
            );
        }
    }
}
