//! The one envelope every JSON answer uses and the one error type handlers
//! return.
//!
//! `{"code": <http status>, "message": "...", "data": ..., "timestamp": <ms>}`.
//! Errors carry `data: null` and a message that says what to fix. Internal
//! causes are logged with their chain and never leaked: a client sees "the
//! upstream is throttling us", not a Redis error string.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::cache::LookupError;
use crate::config::DEFAULT_X_VERSION;
use crate::refund::RefundError;
use crate::upstream::UpstreamError;
use crate::upstream::refusal::utc_time;

/// A successful answer in the envelope.
pub fn ok<T: Serialize>(message: &str, data: T) -> Response {
    envelope(
        StatusCode::OK,
        message,
        serde_json::to_value(data).unwrap_or(Value::Null),
    )
}

/// An answer with `status` in the envelope.
pub fn envelope(status: StatusCode, message: &str, data: Value) -> Response {
    let body = serde_json::json!({
        "code": status.as_u16(),
        "message": message,
        "data": data,
        "timestamp": chrono::Utc::now().timestamp_millis(),
    });
    (status, Json(body)).into_response()
}

/// A failed request as its client is told: status, a message that says
/// what to fix (Chinese, then English in parentheses), and when to retry.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least 1) when the failure
    /// passes by itself: throttling, a full queue, a deadline.
    pub retry_after: Option<Duration>,
    /// Extra detail for the client (e.g. the running job's id on a 409);
    /// `null` otherwise.
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            data: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = envelope(self.status, &self.message, self.data.unwrap_or(Value::Null));
        if let Some(ra) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&ra.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        use UpstreamError as U;
        let (status, message) = match &e {
            U::NotMember { .. } => (StatusCode::NOT_FOUND, "用户不是本星球成员 (the user is not a member of this group)".to_string()),
            U::NotFound { .. } => (StatusCode::NOT_FOUND, "知识星球上不存在该资源 (not found on Zsxq)".to_string()),
            U::Throttled { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "知识星球接口限流，请稍后重试 (the Zsxq API is throttling us; retry in a minute)".to_string(),
            ),
            U::Timeout => (StatusCode::GATEWAY_TIMEOUT, "知识星球接口超时 (the Zsxq API did not answer in time)".to_string()),
            U::Unauthorized { .. } | U::Forbidden { code: 403, .. } => (
                StatusCode::BAD_GATEWAY,
                "知识星球拒绝了服务的令牌，请更新 ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION (Zsxq rejected the service's token; the operator must renew ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION)".to_string(),
            ),
            U::Refusing { since_ms, retry_after } => {
                let since = utc_time(*since_ms);
                let secs = retry_after.as_secs().max(1);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("知识星球自 {since} 起持续以 1059 拒绝请求，为保护令牌已暂停调用，约 {secs} 秒后重试 (upstream refusing (1059) since {since}: calls are paused to protect the token; retrying in {secs} s)"),
                )
            }
            U::TokenRejected { code, since_ms, retry_after } => {
                let since = utc_time(*since_ms);
                let secs = retry_after.as_secs().max(1);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("知识星球自 {since} 起拒绝服务的令牌（代码 {code}），已停止调用：请更新 ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION (token rejected since {since} (code {code}): calls stopped; renew ZSXQ_ACCESS_TOKEN / ZSXQ_AUTHORIZATION; next check in {secs} s)"),
                )
            }
            U::VersionTooOld { .. } => (
                StatusCode::BAD_GATEWAY,
                format!("知识星球认为客户端版本过旧：请把 ZSXQ_X_VERSION 设为网页版当前的版本号，如 {DEFAULT_X_VERSION} (Zsxq says the client version is too old: set ZSXQ_X_VERSION to the web client's current version, e.g. {DEFAULT_X_VERSION})"),
            ),
            U::Forbidden { .. } => (
                StatusCode::BAD_GATEWAY,
                "知识星球拒绝访问 (Zsxq refused access for the service's account)".to_string(),
            ),
            U::Transport(_) => (
                StatusCode::BAD_GATEWAY,
                "无法连接知识星球接口 (cannot reach the Zsxq API; retry later)".to_string(),
            ),
            U::Malformed(_) => (
                StatusCode::BAD_GATEWAY,
                "知识星球接口返回了无法识别的数据 (the Zsxq API answered something unreadable; nothing was cached)".to_string(),
            ),
            U::Http(status) => (
                StatusCode::BAD_GATEWAY,
                format!("知识星球接口异常 (the Zsxq API answered HTTP {status}; retry later)"),
            ),
            U::TooLarge { limit } => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "知识星球接口返回的数据超过 {} MB，未缓存 (the Zsxq API answered more than {} MB, the UPSTREAM_BODY_MAX_MB cap; nothing was cached)",
                    limit >> 20,
                    limit >> 20
                ),
            ),
            U::QueueFull {
                waiting,
                limit,
                per_client,
                retry_after,
            } => {
                let secs = retry_after.as_secs().max(1);
                let message = if *per_client {
                    format!(
                        "本地址已有 {waiting} 个查询在等待知识星球接口（上限 {limit}），请等它们完成或 {secs} 秒后重试 (this client address already has {waiting} lookups waiting for the Zsxq API, its share of {limit}; wait for them or retry in {secs} s)"
                    )
                } else {
                    format!(
                        "已有 {waiting} 个查询在等待知识星球接口，队列已满，请 {secs} 秒后重试 (the queue for the Zsxq API is full with {waiting} lookups; retry in {secs} s)"
                    )
                };
                (StatusCode::SERVICE_UNAVAILABLE, message)
            }
            U::Abandoned => (
                StatusCode::SERVICE_UNAVAILABLE,
                "查询已放弃，请重试 (the lookup was given up; retry)".to_string(),
            ),
            U::BadParameter { .. } | U::Other { .. } => (
                StatusCode::BAD_GATEWAY,
                "知识星球接口异常 (the Zsxq API failed; retry later)".to_string(),
            ),
        };
        if matches!(e, U::QueueFull { .. } | U::Abandoned) {
            // A refusal of ours, not an upstream failure; a flood of them
            // must not flood the log.
            tracing::debug!(error = %e, status = status.as_u16(), "lookup refused");
        } else {
            tracing::warn!(error = %e, status = status.as_u16(), "upstream error answered to client");
        }
        let retry_after = match &e {
            U::Throttled { retry_after, .. } => {
                Some(retry_after.unwrap_or(Duration::from_secs(30)))
            }
            U::QueueFull { retry_after, .. } => Some(*retry_after),
            U::Refusing { retry_after, .. } | U::TokenRejected { retry_after, .. } => {
                Some(*retry_after)
            }
            U::Timeout | U::Transport(_) | U::Http(_) | U::Abandoned => {
                Some(Duration::from_secs(5))
            }
            _ => None,
        };
        Self {
            status,
            message,
            retry_after,
            data: None,
        }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NumberNotFound(_) => ApiError::not_found(e.to_string()),
            LookupError::NumberSearchPending { .. } | LookupError::NumberSearchBusy => {
                let mut err = ApiError::unavailable(e.to_string());
                err.retry_after = Some(Duration::from_secs(5));
                err
            }
            LookupError::NumberUnknown(_) => {
                let mut err = ApiError::unavailable(e.to_string());
                err.retry_after = Some(Duration::from_secs(30));
                err
            }
            LookupError::Upstream(u) => u.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::CampNotFound(_) => ApiError::not_found(e.to_string()),
            RefundError::Upstream(u) => u.into(),
        }
    }
}
