//! The upstream envelope: every answer HTTP 200, success or failure told
//! by `succeeded` and `code`, with the words upstream uses per code.

use super::*;

/// A successful answer: `{"succeeded": true, "resp_data": ...}`.
pub(super) struct Success(pub(super) Value);

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        Json(json!({"succeeded": true, "resp_data": self.0})).into_response()
    }
}

/// A failed answer: `{"succeeded": false, "code": N, "info"?, "error"?,
/// "resp_data": {}}`. Which of `info` and `error` appear varies by code on
/// purpose, so clients learn to read both (upstream, either may be empty or
/// absent: `docs/UPSTREAM.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) code: u32,
    info: Option<String>,
    error: Option<String>,
}

impl Failure {
    pub(super) fn new(code: u32) -> Self {
        Self {
            code,
            info: None,
            error: None,
        }
    }

    pub(super) fn info(mut self, text: impl Into<String>) -> Self {
        self.info = Some(text.into());
        self
    }

    pub(super) fn error(mut self, text: impl Into<String>) -> Self {
        self.error = Some(text.into());
        self
    }

    pub(super) fn unauthenticated() -> Self {
        Self::new(401).info("登录已过期，请重新登录")
    }

    pub(super) fn bad_param(what: &str) -> Self {
        Self::new(1004)
            .info("参数错误")
            .error(format!("invalid parameter: {what}"))
    }

    pub(super) fn bad_signature() -> Self {
        Self::new(1059).info("").error("签名校验失败")
    }

    pub(super) fn bad_device() -> Self {
        Self::new(1059).info("设备状态异常")
    }

    /// A banned token: upstream's 401, with its own words.
    pub(super) fn banned() -> Self {
        Self::new(401).info("账号存在异常，请重新登录")
    }

    /// The answer to an `X-Version` below [`MIN_X_VERSION`]; its code is our
    /// assumption (`docs/UPSTREAM.md`), the client goes by the words.
    pub(super) fn version_too_old() -> Self {
        Self::new(1001)
            .info("当前版本过低，请升级到最新版本")
            .error("version too old")
    }

    pub(super) fn throttled(why: Throttle) -> Self {
        match why {
            Throttle::Random => Self::new(1059).error("内部错误，请稍后重试"),
            Throttle::RateLimited => Self::new(1059).info("").error("操作太频繁，请稍后再试"),
        }
    }

    pub(super) fn group_not_found() -> Self {
        Self::new(11102).info("星球不存在").error("group not found")
    }

    pub(super) fn not_in_group() -> Self {
        Self::new(13002).info("该用户不在星球中")
    }

    pub(super) fn member_left() -> Self {
        Self::new(1037).error("该用户已退出星球")
    }

    pub(super) fn member_list_refused() -> Self {
        Self::new(11507).error("超过500人的星球，成员列表仅星主和管理员可见")
    }

    pub(super) fn checkin_not_found() -> Self {
        Self::new(404).info("checkin not found")
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("succeeded".into(), Value::Bool(false));
        body.insert("code".into(), Value::from(self.code));
        if let Some(info) = self.info {
            body.insert("info".into(), Value::String(info));
        }
        if let Some(error) = self.error {
            body.insert("error".into(), Value::String(error));
        }
        body.insert("resp_data".into(), json!({}));
        Json(Value::Object(body)).into_response()
    }
}
