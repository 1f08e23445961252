//! The extractors handlers take their input with — [`Query`], [`Json`],
//! [`Path`] and [`Admin`] — and the one place where what they refuse becomes
//! an answer: [`Rejection`] into [`ApiError`]. Handlers receive typed
//! values only (the parameter types of `params.rs`, the domain ids); a bad
//! input never reaches them.
//!
//! Decisions:
//! - **A query is read into a map first, then into its type.** axum's
//!   `Query` decodes the pairs into a map of names to values, so a repeated
//!   parameter keeps its last value and an unknown one is ignored; the
//!   typed struct is read from that map in the order of the names, so of
//!   two bad parameters the same one is named every time. Read straight
//!   from the query string, `?page=1&page=2` would be refused as a
//!   duplicate field.
//! - **A body is read as JSON first, then into its type.** An empty body is
//!   `{}` (every default); text that is not JSON, JSON that is not an object
//!   and a field the type does not have each get their own message, and a
//!   key given twice keeps its last value. The `Content-Type` is not checked
//!   here: `gate.rs` refuses a body that is not JSON before routing, and a
//!   POST without a body has none.
//! - **Framework refusals keep their status** (413 for a body over the
//!   limit, 400 for a path segment or query that is not UTF-8) and get their
//!   message from the same mapper as ours; `edge.rs` sends what axum refuses
//!   outside these extractors through it too.
//! - **The admin check is an extractor.** An admin handler takes
//!   `_admin: Admin`, so the check is in its signature and runs before the
//!   body is read. It is closed when `ADMIN_TOKEN` is not set, and compares
//!   digests in constant time, as the read token is compared (`gate.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use serde::de::value::{Error as ValueError, MapDeserializer};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::gate::token_digest;
use crate::cache::jobs::JobId;
use crate::domain::{CheckinId, MemberNumber, UserId};

/// Why a request's input was refused before its handler ran.
#[derive(Debug)]
pub enum Rejection {
    /// What axum itself refused (a body over the limit or cut short, a path
    /// segment or a query that is not UTF-8), with its status and text.
    Framework { status: StatusCode, detail: String },
    /// A path segment that is not what it must be; the message says why.
    Path(String),
    /// A query parameter that is not what it must be; the message says why.
    Query(String),
    /// A body that is not JSON.
    NotJson(serde_json::Error),
    /// A JSON body that is not an object; `example` shows one.
    NotObject { example: &'static str },
    /// A field the body does not have.
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    /// A body field that is not what it must be; the message says why.
    Field(String),
    /// An admin endpoint while `ADMIN_TOKEN` is not set.
    AdminClosed,
    /// An admin endpoint without the admin token.
    NotAdmin,
}

impl Rejection {
    /// What axum refused, with its status and text.
    fn framework(status: StatusCode, detail: String) -> Self {
        Self::Framework { status, detail }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Framework { status, detail } => {
                ApiError::new(status, framework_message(status, &detail))
            }
            Rejection::Path(message) | Rejection::Query(message) | Rejection::Field(message) => {
                ApiError::bad_request(message)
            }
            Rejection::NotJson(e) => ApiError::bad_request(format!(
                "请求体不是合法的 JSON (the body is not valid JSON: {e})"
            )),
            Rejection::NotObject { example } => ApiError::bad_request(format!(
                "请求体必须是 JSON 对象，如 {example} (the body must be a JSON object, e.g. {example})"
            )),
            Rejection::UnknownField { field, expected } => ApiError::bad_request(format!(
                "未知字段 {field:?}，只接受 {} (unknown field {field:?}; expected {})",
                expected.join("、"),
                expected.join(", ")
            )),
            Rejection::AdminClosed => ApiError::new(
                StatusCode::FORBIDDEN,
                "管理接口未启用：请配置 ADMIN_TOKEN (admin endpoints are disabled until ADMIN_TOKEN is set)",
            ),
            Rejection::NotAdmin => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "需要管理员令牌 (send Authorization: Bearer <ADMIN_TOKEN>)",
            ),
        }
    }
}

/// A message that says what to fix, for a framework refusal with `detail`
/// text.
fn framework_message(status: StatusCode, detail: &str) -> String {
    let detail: String = detail.chars().take(200).collect();
    let with_detail = |zh: &str, en: &str| {
        if detail.is_empty() {
            format!("{zh} ({en})")
        } else {
            format!("{zh} ({en}: {detail})")
        }
    };
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            with_detail("请求体过大", "the request body is larger than 64 KiB")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            with_detail("请求体类型不支持", "send Content-Type: application/json")
        }
        s if s.is_server_error() => "服务内部错误 (internal error; the cause was logged)".into(),
        _ => with_detail("请求无效", "the request is malformed"),
    }
}

/// The query string as `T`, a struct of the parameter types in
/// `params.rs` (absent parameters take `T`'s defaults, unknown ones are
/// ignored).
#[derive(Debug, Clone, Copy)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(&parts.uri).map(Query)
    }
}

/// The query string of `uri` as `T`.
pub fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(uri)
            .map_err(|e| Rejection::framework(e.status(), e.body_text()))?;
    T::deserialize(MapDeserializer::<_, ValueError>::new(pairs.into_iter()))
        .map_err(|e| Rejection::Query(e.to_string()).into())
}

/// A JSON request body: an object whose fields are all optional, so an
/// empty body means every default.
pub trait JsonObject: DeserializeOwned {
    /// The fields it has, for the message that refuses any other.
    const FIELDS: &'static [&'static str];
    /// What it looks like, for the message that refuses a body that is not
    /// an object.
    const EXAMPLE: &'static str;
}

/// The request body as `T` (see [`JsonObject`]).
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

impl<T: JsonObject, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| Rejection::framework(e.status(), e.body_text()))?;
        parse_body(&body).map(Json)
    }
}

/// `body` as `T`: blank is `{}`.
pub fn parse_body<T: JsonObject>(body: &[u8]) -> Result<T, ApiError> {
    let map = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(body).map_err(Rejection::NotJson)? {
            Value::Object(map) => map,
            _ => {
                return Err(Rejection::NotObject {
                    example: T::EXAMPLE,
                }
                .into());
            }
        }
    };
    if let Some(field) = map.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        return Err(Rejection::UnknownField {
            field: field.clone(),
            expected: T::FIELDS,
        }
        .into());
    }
    T::deserialize(Value::Object(map)).map_err(|e| Rejection::Field(e.to_string()).into())
}

/// A value read from a route's one path parameter.
pub trait PathParam: Sized {
    /// `raw` (percent-decoded) as `Self`, or what it must be.
    fn parse_segment(raw: &str) -> Result<Self, String>;
}

impl PathParam for UserId {
    fn parse_segment(raw: &str) -> Result<Self, String> {
        UserId::parse(raw).map_err(|e| e.to_string())
    }
}

impl PathParam for MemberNumber {
    fn parse_segment(raw: &str) -> Result<Self, String> {
        MemberNumber::parse(raw).map_err(|e| e.to_string())
    }
}

impl PathParam for CheckinId {
    fn parse_segment(raw: &str) -> Result<Self, String> {
        CheckinId::parse(raw).map_err(|e| e.to_string())
    }
}

impl PathParam for JobId {
    fn parse_segment(raw: &str) -> Result<Self, String> {
        JobId::parse(raw)
            .ok_or_else(|| "job_id 必须是 32 位十六进制字符 (job_id must be 32 hex digits)".into())
    }
}

/// The route's path parameter as `T`.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T: PathParam, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| Rejection::framework(e.status(), e.body_text()))?;
        path_param(&raw).map(Path)
    }
}

/// `raw`, one decoded path segment, as `T`: what [`Path`] does once axum
/// has matched the route, for the requests the pipeline answers itself.
pub fn path_param<T: PathParam>(raw: &str) -> Result<T, ApiError> {
    T::parse_segment(raw).map_err(|message| Rejection::Path(message).into())
}

/// Proof that the request carries `Authorization: Bearer <ADMIN_TOKEN>`.
/// Only this extractor makes one.
#[derive(Debug)]
pub struct Admin(());

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let Some(expected) = &app.admin_token else {
            return Err(Rejection::AdminClosed.into());
        };
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Digests of equal length are compared, so neither the bytes nor the
        // length of the token leak through timing (`ct_eq` on slices of
        // different lengths returns early). An empty token never matches:
        // `ADMIN_TOKEN` has at least 16 characters.
        let matched =
            token_digest(given.as_bytes()).ct_eq(&token_digest(expected.expose().as_bytes()));
        if bool::from(matched) {
            Ok(Admin(()))
        } else {
            Err(Rejection::NotAdmin.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Body {
        #[serde(deserialize_with = "flag")]
        flag: bool,
    }

    fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        super::super::params::json_flag(d, "flag")
    }

    impl JsonObject for Body {
        const FIELDS: &'static [&'static str] = &["flag"];
        const EXAMPLE: &'static str = r#"{"flag": true}"#;
    }

    fn refused(body: &[u8]) -> String {
        let e = parse_body::<Body>(body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        e.message
    }

    #[test]
    fn a_blank_body_is_every_default_and_a_repeated_key_keeps_its_last_value() {
        assert!(!parse_body::<Body>(b"").unwrap().flag);
        assert!(!parse_body::<Body>(b" \n").unwrap().flag);
        assert!(
            parse_body::<Body>(br#"{"flag": false, "flag": true}"#)
                .unwrap()
                .flag
        );
    }

    #[test]
    fn each_kind_of_bad_body_says_what_to_fix() {
        assert!(refused(b"{nope").contains("not valid JSON"));
        assert!(refused(b"[true]").contains(r#"e.g. {"flag": true}"#));
        let unknown = refused(br#"{"flgs": true}"#);
        assert!(
            unknown.contains("unknown field \"flgs\"; expected flag"),
            "{unknown}"
        );
        assert!(refused(br#"{"flag": 1}"#).contains("flag must be a boolean"));
    }

    super::super::params::int_param! {
        /// A page number, as `GET /api/users` takes it.
        Page("page", 1, 1_000_000, default 1)
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Params {
        page: Page,
    }

    #[test]
    fn a_query_keeps_the_last_of_a_repeated_parameter_and_ignores_unknown_ones() {
        let page = |q: &str| {
            let uri: Uri = format!("/api/users?{q}").parse().unwrap();
            parse_query::<Params>(&uri).map(|p| p.page.get())
        };
        assert_eq!(page("").unwrap(), 1);
        assert_eq!(page("page=2&page=3&other=x").unwrap(), 3);
        assert_eq!(page("page=%205").unwrap(), 5);
        let e = page("page=0").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("page must be an integer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn framework_messages_keep_the_detail_and_never_are_empty() {
        let m = framework_message(StatusCode::BAD_REQUEST, "Invalid URL: bad");
        assert!(m.contains("Invalid URL: bad"));
        assert!(framework_message(StatusCode::PAYLOAD_TOO_LARGE, "").contains("64 KiB"));
        assert!(!framework_message(StatusCode::INTERNAL_SERVER_ERROR, "secret").contains("secret"));
    }
}
