//! The HTTP client for the Zsxq API: headers, signature, envelope, retries.
//!
//! Every request carries the token (cookie or `Authorization`, never in the
//! URL), `X-Version` (`ZSXQ_X_VERSION`), `X-Aduid` (the installation's device
//! id, `device.rs`), `X-Timestamp`, `X-Request-Id` and `X-Signature` =
//! lower-hex `sha1(url + " " + timestamp + " " + request_id)` as the web
//! client does. Each attempt first takes a slot from the shared [`Budget`];
//! retryable failures (1059, 429, timeouts, 5xx) are retried with exponential
//! backoff and jitter (backon), honouring `Retry-After`, bounded in count and
//! in total delay. Everything else fails fast with its typed error. The
//! [`Refusal`] guard sits around each attempt: while the fleet cools down
//! after a run of 1059s, or the token is rejected, attempts fail at once
//! (not retryable), so retries stop and waiters get their answer.
//!
//! Answers are bounded (`UPSTREAM_BODY_MAX_MB`, 8 MB by default; the largest
//! real answer, a member-list page of 200, is tens of kilobytes): a
//! Content-Length over the cap is refused before the body is read, and a body
//! without one is read chunk by chunk and dropped the moment it passes the
//! cap, so a broken or hostile upstream cannot make the process hold
//! 100 MB. Over the cap is [`UpstreamError::TooLarge`] (a 502), never cached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::budget::Budget;
use super::device::DeviceId;
use super::error::UpstreamError;
use super::priority::Priority;
use super::refusal::Refusal;
use super::wire::{self, Camp, CheckinStatistics, RankingPage};
use super::{CampScope, Upstream};
use crate::config::{UpstreamAuth, UpstreamConfig};
use crate::domain::{CheckinId, Member, RankingType, UserId};

const USER_AGENT: &str = concat!("zsxq-cache/", env!("CARGO_PKG_VERSION"));

/// Largest answer read when not configured (`UPSTREAM_BODY_MAX_MB`).
pub const DEFAULT_BODY_MAX: u64 = 8 << 20;

/// The [`Upstream`] the product uses: the real Zsxq API over HTTPS.
pub struct ZsxqClient {
    /// One connection pool for every call, with the configured timeouts.
    http: reqwest::Client,
    /// Base URL, group, token, version, timeout and retry bounds.
    cfg: UpstreamConfig,
    /// Every attempt takes a slot here first; shared with the cache.
    budget: Arc<Budget>,
    /// Largest answer body read, in bytes.
    body_max: u64,
    /// Sent as `X-Aduid`.
    device: DeviceId,
    /// Stops calls during a 1059 storm or with a rejected token.
    refusal: Arc<Refusal>,
}

impl ZsxqClient {
    pub fn new(cfg: UpstreamConfig, budget: Arc<Budget>) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| UpstreamError::Transport(e.without_url().to_string()))?;
        let refusal = Arc::new(Refusal::local(cfg.refusal));
        Ok(Self {
            http,
            cfg,
            budget,
            body_max: DEFAULT_BODY_MAX,
            device: DeviceId::process(),
            refusal,
        })
    }

    /// Reads answers of at most `bytes` (at least 1 KiB).
    pub fn with_body_limit(mut self, bytes: u64) -> Self {
        self.body_max = bytes.max(1024);
        self
    }

    /// Sends the installation's device id kept in the store.
    pub fn with_device(mut self, device: DeviceId) -> Self {
        self.device = device;
        self
    }

    /// Shares the refusal state (with the fleet, through Redis).
    pub fn with_refusal(mut self, refusal: Arc<Refusal>) -> Self {
        self.refusal = refusal;
        self
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    fn group_path(&self) -> String {
        format!("{}/v2/groups/{}", self.cfg.base_url, self.cfg.group_id)
    }

    /// GET with budget, retries and envelope decoding.
    async fn get(&self, url: String, priority: Priority) -> Result<Value, UpstreamError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.cfg.retry_base)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.cfg.max_retries)
            .with_total_delay(Some(Duration::from_secs(60)))
            .with_jitter()
            // backon without its `std` feature seeds every backoff alike, so
            // all callers would retry in lockstep; seed each one freshly.
            .with_jitter_seed(rand::random());
        let result = (|| self.guarded_attempt(&url, priority))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(UpstreamError::is_retryable)
            .adjust(|e, dur| match e {
                UpstreamError::Throttled { retry_after: Some(ra), .. } => Some(*ra),
                _ => dur,
            })
            .notify(|e, dur| {
                self.budget.record_retry(priority);
                tracing::warn!(error = %e, retry_in_ms = dur.as_millis() as u64, "upstream call failed, retrying");
            })
            .await;
        match &result {
            // Not a failure: nobody wanted the answer any more.
            Err(UpstreamError::Abandoned) => {
                tracing::debug!("queued upstream call given up: nobody waits for it");
            }
            Err(e) => tracing::warn!(error = %e, kind = e.kind(), "upstream call failed"),
            Ok(_) => {}
        }
        result
    }

    /// One attempt under the refusal guard: refused at once while calls
    /// are held back, its answer recorded.
    async fn guarded_attempt(&self, url: &str, priority: Priority) -> Result<Value, UpstreamError> {
        if let Some(refused) = self.refusal.refused_now() {
            return Err(refused);
        }
        let result = self.attempt(url, priority).await;
        if self.refusal.record(&result).await {
            self.budget.forgive_penalty();
        }
        result
    }

    /// One HTTP attempt, after taking a budget slot.
    async fn attempt(&self, url: &str, priority: Priority) -> Result<Value, UpstreamError> {
        // A wait for a slot ends as soon as calls are held back.
        let _permit = tokio::select! {
            permit = self.budget.acquire(priority) => permit?,
            refused = self.refusal.refused() => return Err(refused),
        };
        self.refusal.admit().await?;
        self.budget.record_call(priority);
        let device = self.device.get().await;
        let response = self
            .http
            .get(url)
            .headers(self.headers(url, device))
            .send()
            .await
            .map_err(classify_reqwest)?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(120)));
            self.budget.on_throttle(priority);
            return Err(UpstreamError::Throttled {
                code: 429,
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Http(status.as_u16()));
        }
        let body = self.read_body(response).await?;
        match wire::decode_envelope(&body) {
            Err(e) if e.is_throttle() => {
                self.budget.on_throttle(priority);
                Err(e)
            }
            other => {
                if other.is_ok() {
                    self.budget.on_success();
                }
                other
            }
        }
    }

    /// The whole body, if it is at most `body_max` bytes: the declared
    /// length is checked first, then the body is read chunk by chunk.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let too_large = UpstreamError::TooLarge {
            limit: self.body_max,
        };
        let declared = response.content_length();
        if declared.is_some_and(|n| n > self.body_max) {
            return Err(too_large);
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(64 * 1024) as usize);
        while let Some(chunk) = response.chunk().await.map_err(classify_reqwest)? {
            if (body.len() + chunk.len()) as u64 > self.body_max {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn headers(&self, url: &str, device: &str) -> HeaderMap {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        let signature = sign(url, &timestamp, &request_id);
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        put("x-version", &self.cfg.x_version);
        put("x-aduid", device);
        put("x-timestamp", &timestamp);
        put("x-request-id", &request_id);
        put("x-signature", &signature);
        match &self.cfg.auth {
            UpstreamAuth::Cookie(t) => put("cookie", &format!("zsxq_access_token={}", t.expose())),
            UpstreamAuth::Header(t) => put("authorization", t.expose()),
        }
        // Mark the credential as sensitive so it is never printed by
        // reqwest/hyper debug output.
        for name in ["cookie", "authorization"] {
            if let Some(v) = h.get_mut(name) {
                v.set_sensitive(true);
            }
        }
        h
    }
}

/// Lower-hex `sha1(url + " " + timestamp + " " + request_id)`, as the web
/// client signs (`docs/UPSTREAM.md`, Headers).
pub fn sign(url: &str, timestamp: &str, request_id: &str) -> String {
    let mut s = sha1_smol::Sha1::new();
    s.update(url.as_bytes());
    s.update(b" ");
    s.update(timestamp.as_bytes());
    s.update(b" ");
    s.update(request_id.as_bytes());
    s.digest().to_string()
}

/// Percent-encodes a query value: a time's `+0800` offset would otherwise
/// read as a space. Only unreserved characters stay as they are.
fn query_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Maps a reqwest failure to its meaning. A body that stopped arriving
/// (connection closed or reset mid-answer) is a transport failure, retried
/// like any other; a complete body we cannot decode is malformed, and is not
/// (the upstream would send the same again). URLs are stripped: they carry
/// no token, but the message stays short and stable.
fn classify_reqwest(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else if e.is_decode() {
        UpstreamError::Malformed(e.without_url().to_string())
    } else if e.is_body() {
        UpstreamError::Transport(format!("answer cut off: {}", e.without_url()))
    } else {
        UpstreamError::Transport(e.without_url().to_string())
    }
}

#[async_trait]
impl Upstream for ZsxqClient {
    async fn member_summary(
        &self,
        id: UserId,
        priority: Priority,
    ) -> Result<Member, UpstreamError> {
        let url = format!("{}/members/{id}/summary", self.group_path());
        wire::member_from(self.get(url, priority).await?, id)
    }

    async fn member(&self, id: UserId, priority: Priority) -> Result<Member, UpstreamError> {
        let url = format!("{}/members/{id}", self.group_path());
        wire::member_from(self.get(url, priority).await?, id)
    }

    async fn member_list_page(
        &self,
        end_time: Option<&str>,
        count: u32,
        priority: Priority,
    ) -> Result<Vec<Member>, UpstreamError> {
        let count = count.clamp(1, 200);
        // The documented defaults, spelled out: a default that changes
        // upstream must not change what we read.
        let mut url = format!(
            "{}/members?count={count}&sort=join_time&order=desc&filter=joined",
            self.group_path()
        );
        if let Some(t) = end_time {
            url.push_str("&end_time=");
            url.push_str(&query_escape(t));
        }
        wire::field(self.get(url, priority).await?, "members")
    }

    async fn camp_statistics(
        &self,
        checkin: CheckinId,
        priority: Priority,
    ) -> Result<CheckinStatistics, UpstreamError> {
        let url = format!("{}/checkins/{checkin}/statistics", self.group_path());
        wire::field(self.get(url, priority).await?, "statistics")
    }

    async fn camps(
        &self,
        scope: CampScope,
        count: u32,
        priority: Priority,
    ) -> Result<Vec<Camp>, UpstreamError> {
        let url = format!(
            "{}/checkins?scope={}&count={}",
            self.group_path(),
            scope.as_str(),
            count.clamp(1, 100)
        );
        wire::field(self.get(url, priority).await?, "checkins")
    }

    async fn ranking_page(
        &self,
        checkin: CheckinId,
        kind: RankingType,
        index: u64,
        priority: Priority,
    ) -> Result<RankingPage, UpstreamError> {
        let url = format!(
            "{}/checkins/{checkin}/ranking_list?type={kind}&index={index}",
            self.group_path()
        );
        let data = self.get(url, priority).await?;
        serde_json::from_value(data)
            .map_err(|e| UpstreamError::Malformed(format!("ranking page: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lower_hex_sha1_of_url_timestamp_and_request_id() {
        // Expected value from `printf '<url> <ts> <id>' | sha1sum`.
        assert_eq!(
            sign(
                "https://api.zsxq.com/v2/groups/1/members/2/summary",
                "1730080000",
                "0f8fad5b-d9cb-469f-a165-70867728950e"
            ),
            "f14ee9afcf41c91012ed608070fc6a7b5914dff4"
        );
    }

    #[test]
    fn a_time_in_the_query_keeps_its_offset() {
        assert_eq!(
            query_escape("2024-09-04T22:39:05.287+0800"),
            "2024-09-04T22:39:05.287%2B0800"
        );
    }
}
