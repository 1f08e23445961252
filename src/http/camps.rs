//! Camps and refund lists (SPEC §3, issue #4): the consumer the seed was
//! written for. Parameters are parsed here into domain types; the work is in
//! `refund/`.
//!
//! Routing note: axum 0.8 (matchit) routes `…/{checkin_id}/refund-list.csv`
//! as its own static segment next to `…/refund-list` and `…/refund-list/text`
//! because the parameter is a whole segment before them; the tests request
//! every one of these paths, so a router change that breaks this shows up.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ok};
use super::users::{enum_param, int_param};
use crate::domain::CheckinId;
use crate::refund::{RefundList, RequiredDays, export};
use crate::upstream::{Camp, CampScope};

/// Set on every export: whether every row has its number, so a script can
/// tell an incomplete file without parsing it.
const COMPLETE_HEADER: HeaderName = HeaderName::from_static("x-refund-list-complete");

/// A camp in `GET /api/camps`.
#[derive(Serialize)]
struct CampItem<'a> {
    checkin_id: CheckinId,
    title: &'a str,
    /// The rule text, e.g. "完成7天打卡，押金39全退".
    text: &'a str,
    checkin_days: u32,
    status: &'a str,
    joined_count: u64,
    expiration_time: &'a str,
    create_time: &'a str,
}

impl<'a> From<&'a Camp> for CampItem<'a> {
    fn from(c: &'a Camp) -> Self {
        Self {
            checkin_id: c.checkin_id,
            title: &c.title,
            text: &c.text,
            checkin_days: c.checkin_days,
            status: &c.status,
            // Older answers carry the count only under statistics.
            joined_count: c.joined_count.max(c.statistics.joined_count),
            expiration_time: &c.validity.expiration_time,
            create_time: &c.create_time,
        }
    }
}

/// `GET /api/camps?scope=ongoing|over|closed&count=` (scope defaults to
/// `over`: the camps refund lists are made for; count 1..100, default 20).
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let raw_scope = enum_param(&q, "scope", "over", &["ongoing", "over", "closed"])?;
    let scope = CampScope::parse(raw_scope).unwrap_or(CampScope::Over);
    let count = int_param(&q, "count", 20, 1, 100)? as usize;
    let camps = app.refunds.camps(scope).await?;
    let items: Vec<CampItem<'_>> = camps.iter().take(count).map(CampItem::from).collect();
    Ok(ok(
        "查询成功",
        serde_json::json!({ "scope": scope.as_str(), "count": items.len(), "camps": items }),
    ))
}

fn checkin_id(raw: &str) -> Result<CheckinId, ApiError> {
    CheckinId::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn required_days_error() -> ApiError {
    ApiError::bad_request(format!(
        "required_days 必须是 {} 到 {} 之间的整数 (required_days must be an integer from {} to {})",
        RequiredDays::MIN,
        RequiredDays::MAX,
        RequiredDays::MIN,
        RequiredDays::MAX
    ))
}

/// `required_days` from the query string; 7 when absent.
fn required_days_query(q: &HashMap<String, String>) -> Result<RequiredDays, ApiError> {
    let days = int_param(
        q,
        "required_days",
        u64::from(RequiredDays::DEFAULT.get()),
        u64::from(RequiredDays::MIN),
        u64::from(RequiredDays::MAX),
    )?;
    u32::try_from(days)
        .ok()
        .and_then(RequiredDays::new)
        .ok_or_else(required_days_error)
}

/// Parses `{"required_days": n}`; an empty body means the default (7).
pub fn parse_refund_body(body: &[u8]) -> Result<RequiredDays, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RequiredDays::DEFAULT);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "请求体不是合法的 JSON (the body is not valid JSON: {e})"
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "请求体必须是 JSON 对象，如 {\"required_days\": 7} (the body must be a JSON object)",
        ));
    };
    let mut days = RequiredDays::DEFAULT;
    for (key, value) in &map {
        match key.as_str() {
            "required_days" => {
                days = value
                    .as_u64()
                    .and_then(|d| u32::try_from(d).ok())
                    .and_then(RequiredDays::new)
                    .ok_or_else(required_days_error)?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "未知字段 {other:?}，只接受 required_days (unknown field {other:?}; expected required_days)"
                )));
            }
        }
    }
    Ok(days)
}

fn list_message(list: &RefundList) -> String {
    if list.complete {
        "生成成功".to_string()
    } else {
        format!(
            "生成完成，但名单不完整，原因见 incomplete_reasons (list incomplete: {})",
            list.incomplete_reasons.join("; ")
        )
    }
}

/// `POST /api/camps/:checkinId/refund-list` body `{"required_days": 7}`.
pub async fn refund_list(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = checkin_id(&raw)?;
    let required = parse_refund_body(&body)?;
    let list = app.refunds.refund_list(id, required).await?;
    Ok(ok(&list_message(&list), list))
}

/// `GET /api/camps/:checkinId/refund-list?required_days=&page_size=&index=`:
/// one page, continuing after ranking position `index` (0 = the start).
pub async fn refund_page(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = checkin_id(&raw)?;
    let required = required_days_query(&q)?;
    let page_size = int_param(&q, "page_size", 20, 1, 100)? as usize;
    let index = int_param(&q, "index", 0, 0, u64::from(u32::MAX))?;
    let page = app
        .refunds
        .refund_page(id, required, index, page_size)
        .await?;
    let message = if page.complete {
        "查询成功"
    } else {
        "查询成功，但本页有成员缺少星球编号 (some numbers on this page are missing)"
    };
    Ok(ok(message, page))
}

async fn build(
    app: &AppState,
    raw: &str,
    q: &HashMap<String, String>,
) -> Result<RefundList, ApiError> {
    let id = checkin_id(raw)?;
    let required = required_days_query(q)?;
    Ok(app.refunds.refund_list(id, required).await?)
}

fn download(
    list: &RefundList,
    body: Vec<u8>,
    content_type: &'static str,
    disposition: Option<String>,
) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(value) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        COMPLETE_HEADER,
        HeaderValue::from_static(if list.complete { "true" } else { "false" }),
    );
    response
}

/// `GET /api/camps/:checkinId/refund-list/text?required_days=`
pub async fn refund_text(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let list = build(&app, &raw, &q).await?;
    let body = export::text(&list).into_bytes();
    Ok(download(&list, body, "text/plain; charset=utf-8", None))
}

/// `GET /api/camps/:checkinId/refund-list.csv?required_days=`
pub async fn refund_csv(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let list = build(&app, &raw, &q).await?;
    let body = export::csv(&list);
    let disposition = export::content_disposition(&list, "csv");
    Ok(download(
        &list,
        body,
        "text/csv; charset=utf-8",
        Some(disposition),
    ))
}

/// `GET /api/camps/:checkinId/refund-list.xlsx?required_days=`
pub async fn refund_xlsx(
    State(app): State<Arc<AppState>>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let list = build(&app, &raw, &q).await?;
    let body = export::xlsx(&list).map_err(|e| {
        tracing::error!(error = %e, "xlsx export failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "生成 Excel 文件失败，请改用 CSV 导出 (could not write the xlsx file; use the CSV export)",
        )
    })?;
    let disposition = export::content_disposition(&list, "xlsx");
    Ok(download(
        &list,
        body,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some(disposition),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_bodies_default_to_7_and_refuse_anything_else() {
        assert_eq!(parse_refund_body(b"").unwrap().get(), 7);
        assert_eq!(parse_refund_body(b"{}").unwrap().get(), 7);
        assert_eq!(
            parse_refund_body(br#"{"required_days": 21}"#)
                .unwrap()
                .get(),
            21
        );
        for bad in [
            &br#"{"required_days": 0}"#[..],
            br#"{"required_days": 366}"#,
            br#"{"required_days": "7"}"#,
            br#"{"required_days": 7.5}"#,
            br#"{"required_days": -1}"#,
            br#"{"days": 7}"#,
            b"[7]",
            b"{nope",
        ] {
            let e = parse_refund_body(bad).unwrap_err();
            assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
