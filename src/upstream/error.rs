//! Typed upstream failures that keep the upstream's meaning; the codes and
//! where they come from are in `docs/UPSTREAM.md`.
//!
//! Zsxq answers almost everything with HTTP 200 and a numeric `code`; the
//! caller cares about a handful of meanings: retry later (throttled), the
//! person is not (or no longer) a member, it does not exist, we are not
//! allowed, or the upstream is broken. Messages never contain the token: the
//! token travels in headers, never in URLs, and reqwest errors are stripped of
//! their URL anyway.

use std::time::Duration;

/// Why an upstream call gave no answer; cloned to every caller of a shared
/// fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// 1059 (anti-abuse) or HTTP 429, still failing after the retry budget.
    #[error("upstream throttled the request (code {code})")]
    Throttled {
        code: i64,
        retry_after: Option<Duration>,
    },
    /// The queried user is not, or no longer, a member of the group
    /// (1008, 1031, 1037, 13002, 14210).
    #[error("user is not a member of the group (code {code}: {message})")]
    NotMember { code: i64, message: String },
    /// Group, camp or resource not found (404, 11102).
    #[error("not found upstream (code {code}: {message})")]
    NotFound { code: i64, message: String },
    /// The configured token is missing, wrong or expired (401).
    #[error(
        "upstream rejected our token (code {code}): check ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION"
    )]
    Unauthorized { code: i64 },
    /// The caller lacks a right: 403, 1005 not a member, 1006 not an admin,
    /// 1030 no permission, 11507 member list for admins only, 52010 not
    /// enrolled in the check-in.
    #[error("upstream refused access (code {code}: {message})")]
    Forbidden { code: i64, message: String },
    /// 1004: a parameter we sent was refused; a bug on our side.
    #[error("upstream refused a parameter (code {code}: {message})")]
    BadParameter { code: i64, message: String },
    /// Any other failure code.
    #[error("upstream failed (code {code}: {message})")]
    Other { code: i64, message: String },
    /// No answer within the timeout.
    #[error("upstream did not answer in time")]
    Timeout,
    /// Connection refused, reset, DNS…
    #[error("upstream unreachable: {0}")]
    Transport(String),
    /// A non-200 HTTP status other than 429.
    #[error("upstream answered HTTP {0}")]
    Http(u16),
    /// The body was not the envelope we expect, or a field was missing.
    #[error("upstream answer malformed: {0}")]
    Malformed(String),
    /// The answer was larger than `UPSTREAM_BODY_MAX_MB` (by its
    /// Content-Length or as read); it was not kept.
    #[error("upstream answer larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Nobody waited for the call any more: it was given up before it took
    /// a budget slot, so nothing was sent.
    #[error("nobody waits for this upstream call any more")]
    Abandoned,
    /// The interactive queue is full (`per_client: false`), or this client
    /// address already holds its share of it; nothing was queued.
    #[error("{waiting} lookups already wait for the upstream (limit {limit})")]
    QueueFull {
        waiting: usize,
        limit: usize,
        per_client: bool,
        retry_after: Duration,
    },
    /// The upstream says our `X-Version` is too old (`docs/UPSTREAM.md`).
    #[error(
        "upstream says the client version is too old (code {code}: {message}): set ZSXQ_X_VERSION to the web client's current version"
    )]
    VersionTooOld { code: i64, message: String },
    /// Not sent: the fleet pauses calls after a run of 1059 refusals
    /// (`refusal/`), since `since_ms` (unix ms), for `retry_after` more.
    #[error("upstream keeps refusing with 1059: calls paused to protect the token, retrying in {}s", retry_after.as_secs().max(1))]
    Refusing {
        since_ms: i64,
        retry_after: Duration,
    },
    /// Not sent: the upstream rejected the token (401/403) since `since_ms`;
    /// the next probe is in `retry_after`.
    #[error(
        "upstream rejected our token (code {code}): calls stopped until it is renewed; check ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION (next check in {}s)", retry_after.as_secs().max(1)
    )]
    TokenRejected {
        code: i64,
        since_ms: i64,
        retry_after: Duration,
    },
}

impl UpstreamError {
    /// Maps an envelope failure code to its meaning.
    pub fn from_code(code: i64, message: String) -> Self {
        if is_version_too_old(&message) {
            return Self::VersionTooOld { code, message };
        }
        match code {
            1059 => Self::Throttled {
                code,
                retry_after: None,
            },
            401 => Self::Unauthorized { code },
            1008 | 1031 | 1037 | 13002 | 14210 => Self::NotMember { code, message },
            404 | 11102 => Self::NotFound { code, message },
            403 | 1005 | 1006 | 1030 | 11507 | 52010 => Self::Forbidden { code, message },
            1004 => Self::BadParameter { code, message },
            _ => Self::Other { code, message },
        }
    }

    /// Worth another try after a pause: throttles, timeouts, transport
    /// failures and server-side HTTP errors. Everything else fails fast.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Timeout | Self::Transport(_) => true,
            Self::Http(status) => *status >= 500,
            _ => false,
        }
    }

    pub fn is_throttle(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    /// The member list is visible to admins only or we lack the right:
    /// fall back to per-member calls (11507 / 1006 / 1030;
    /// `docs/UPSTREAM.md`).
    pub fn is_listing_refused(&self) -> bool {
        matches!(
            self,
            Self::Forbidden {
                code: 11507 | 1006 | 1030,
                ..
            }
        )
    }

    /// A short machine-readable kind for stats and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::NotMember { .. } => "not_member",
            Self::NotFound { .. } => "not_found",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::BadParameter { .. } => "bad_parameter",
            Self::Other { .. } => "other",
            Self::Timeout => "timeout",
            Self::Transport(_) => "transport",
            Self::Http(_) => "http",
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::Abandoned => "abandoned",
            Self::QueueFull { .. } => "queue_full",
            Self::VersionTooOld { .. } => "version_too_old",
            Self::Refusing { .. } => "refusing",
            Self::TokenRejected { .. } => "token_rejected",
        }
    }
}

/// Whether an envelope's text says the client version is too old. No public
/// capture shows that answer's code, so its words decide ("版本过低",
/// "请升级", "version too old"; `docs/UPSTREAM.md`).
fn is_version_too_old(message: &str) -> bool {
    let lower = message.to_lowercase();
    (message.contains("版本")
        && ["低", "旧", "升级", "更新"]
            .iter()
            .any(|w| message.contains(w)))
        || (lower.contains("version")
            && ["old", "upgrade", "update"]
                .iter()
                .any(|w| lower.contains(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_their_meaning() {
        assert!(UpstreamError::from_code(1059, String::new()).is_throttle());
        assert!(UpstreamError::from_code(1059, String::new()).is_retryable());
        assert!(matches!(
            UpstreamError::from_code(1037, "left".into()),
            UpstreamError::NotMember { .. }
        ));
        assert!(matches!(
            UpstreamError::from_code(13002, String::new()),
            UpstreamError::NotMember { .. }
        ));
        assert!(matches!(
            UpstreamError::from_code(401, String::new()),
            UpstreamError::Unauthorized { .. }
        ));
        assert!(matches!(
            UpstreamError::from_code(11102, String::new()),
            UpstreamError::NotFound { .. }
        ));
        assert!(UpstreamError::from_code(11507, String::new()).is_listing_refused());
        assert!(UpstreamError::from_code(1006, String::new()).is_listing_refused());
        assert!(!UpstreamError::from_code(52010, String::new()).is_listing_refused());
        assert!(!UpstreamError::from_code(1004, String::new()).is_retryable());
        assert!(UpstreamError::Http(503).is_retryable());
        assert!(!UpstreamError::Http(404).is_retryable());
    }

    #[test]
    fn a_version_too_old_answer_names_the_variable_whatever_its_code() {
        for (code, text) in [
            (1001, "当前版本过低，请升级到最新版本"),
            (400, "client version too old, please upgrade"),
        ] {
            let e = UpstreamError::from_code(code, text.into());
            assert!(matches!(e, UpstreamError::VersionTooOld { .. }), "{e:?}");
            assert!(e.to_string().contains("ZSXQ_X_VERSION"), "{e}");
            assert!(!e.is_retryable());
        }
        assert!(matches!(
            UpstreamError::from_code(1059, "内部错误".into()),
            UpstreamError::Throttled { .. }
        ));
    }
}
