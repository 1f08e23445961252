//! Camps and refund lists: the consumer the member cache exists for. Every
//! parameter arrives parsed (`extract.rs`, `params.rs`); the work is in
//! `refund/`.
//!
//! Routing note: axum 0.8 (matchit) routes `…/{checkin_id}/refund-list.csv`
//! as its own static segment next to `…/refund-list` and `…/refund-list/text`
//! because the parameter is a whole segment before them; the tests request
//! every one of these paths, so a router change that breaks this shows up.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ok};
use super::extract::{Json, JsonObject, Path, Query};
use super::params::{self, int_param};
use crate::domain::{CheckinId, RankingType};
use crate::refund::rules::GraceTooLarge;
use crate::refund::{GraceDays, RefundList, RequiredDays, Rule, export};
use crate::upstream::{Camp, CampScope};

/// Set on every export: whether every row has its number, so a script can
/// tell an incomplete file without parsing it.
const COMPLETE_HEADER: HeaderName = HeaderName::from_static("x-refund-list-complete");

/// Set on every export: the rule the list was judged by
/// (`export::rule_header`), since a CSV has no room for it.
const RULE_HEADER: HeaderName = HeaderName::from_static("x-refund-rule");

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

int_param! {
    /// `count` of `GET /api/camps`: how many camps to list.
    CampCount("count", 1, 100, default 20)
}

/// The query of `GET /api/camps`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct CampsQuery {
    #[serde(deserialize_with = "scope")]
    scope: CampScope,
    count: CampCount,
}

impl Default for CampsQuery {
    /// `over`: the camps refund lists are made for.
    fn default() -> Self {
        Self {
            scope: CampScope::Over,
            count: CampCount::default(),
        }
    }
}

fn scope<'de, D: Deserializer<'de>>(d: D) -> Result<CampScope, D::Error> {
    let options = CampScope::ALL.map(|scope| (scope.as_str(), scope));
    params::query_choice(d, "scope", &options)
}

/// `GET /api/camps?scope=ongoing|over|closed&count=` (scope defaults to
/// `over`; count 1..100, default 20).
pub async fn list(
    State(app): State<Arc<AppState>>,
    Query(q): Query<CampsQuery>,
) -> Result<Response, ApiError> {
    let camps = app.refunds.camps(q.scope).await?;
    let count = usize::try_from(q.count.get()).unwrap_or(usize::MAX);
    let items: Vec<CampItem<'_>> = camps.iter().take(count).map(CampItem::from).collect();
    Ok(ok(
        "查询成功",
        serde_json::json!({ "scope": q.scope.as_str(), "count": items.len(), "camps": items }),
    ))
}

/// The rule of a refund list as a query asks for it: `required_days` (7
/// when absent), `grace_days` (0), `ranking_type` (`accumulated`). Read
/// field by field, then checked together ([`Rule::new`]): a grace that is
/// not below the requirement is refused by the same mapper as a bad field.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuleInQuery {
    #[serde(deserialize_with = "days_in_query")]
    required_days: RequiredDays,
    #[serde(deserialize_with = "grace_in_query")]
    grace_days: GraceDays,
    #[serde(deserialize_with = "kind_in_query")]
    ranking_type: RankingType,
}

/// The query of a refund list's exports: its rule.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RuleInQuery")]
pub struct RefundQuery {
    rule: Rule,
}

impl TryFrom<RuleInQuery> for RefundQuery {
    type Error = GraceTooLarge;

    fn try_from(q: RuleInQuery) -> Result<Self, GraceTooLarge> {
        let rule = Rule::new(q.required_days, q.grace_days, q.ranking_type)?;
        Ok(Self { rule })
    }
}

int_param! {
    /// `page_size` of a refund list page.
    RefundPageSize("page_size", 1, 100, default 20)
}

int_param! {
    /// `index` of a refund list page: the ranking position it continues
    /// after (0 = the start).
    RankIndex("index", 0, u64::from(u32::MAX), default 0)
}

/// The query of `GET /api/camps/{checkin_id}/refund-list` as read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PageInQuery {
    #[serde(flatten)]
    rule: RuleInQuery,
    page_size: RefundPageSize,
    index: RankIndex,
}

/// The query of `GET /api/camps/{checkin_id}/refund-list`: one page.
#[derive(Debug, Deserialize)]
#[serde(try_from = "PageInQuery")]
pub struct RefundPageQuery {
    rule: Rule,
    page_size: RefundPageSize,
    index: RankIndex,
}

impl TryFrom<PageInQuery> for RefundPageQuery {
    type Error = GraceTooLarge;

    fn try_from(q: PageInQuery) -> Result<Self, GraceTooLarge> {
        Ok(Self {
            rule: RefundQuery::try_from(q.rule)?.rule,
            page_size: q.page_size,
            index: q.index,
        })
    }
}

/// The body of `POST /api/camps/{checkin_id}/refund-list` as read.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RuleInBody {
    #[serde(deserialize_with = "days_in_body")]
    required_days: RequiredDays,
    #[serde(deserialize_with = "grace_in_body")]
    grace_days: GraceDays,
    #[serde(deserialize_with = "kind_in_body")]
    ranking_type: RankingType,
}

/// The body of `POST /api/camps/{checkin_id}/refund-list`: its rule.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RuleInBody")]
pub struct RefundBody {
    rule: Rule,
}

impl TryFrom<RuleInBody> for RefundBody {
    type Error = GraceTooLarge;

    fn try_from(b: RuleInBody) -> Result<Self, GraceTooLarge> {
        let rule = Rule::new(b.required_days, b.grace_days, b.ranking_type)?;
        Ok(Self { rule })
    }
}

impl JsonObject for RefundBody {
    const FIELDS: &'static [&'static str] = &["required_days", "grace_days", "ranking_type"];
    const EXAMPLE: &'static str =
        r#"{"required_days": 7, "grace_days": 0, "ranking_type": "accumulated"}"#;
}

/// The bounds of `required_days`, as the parameter readers take them.
const DAYS: (u64, u64) = (RequiredDays::MIN as u64, RequiredDays::MAX as u64);

fn days_in_query<'de, D: Deserializer<'de>>(d: D) -> Result<RequiredDays, D::Error> {
    required_days(params::query_int(d, "required_days", DAYS.0, DAYS.1)?)
}

fn days_in_body<'de, D: Deserializer<'de>>(d: D) -> Result<RequiredDays, D::Error> {
    required_days(params::json_int(d, "required_days", DAYS.0, DAYS.1)?)
}

/// `days`, already within the bounds, as the domain type.
fn required_days<E: de::Error>(days: u64) -> Result<RequiredDays, E> {
    u32::try_from(days)
        .ok()
        .and_then(RequiredDays::new)
        .ok_or_else(|| E::custom(format!("required_days {days} is out of range")))
}

fn grace_in_query<'de, D: Deserializer<'de>>(d: D) -> Result<GraceDays, D::Error> {
    grace_days(params::query_int(
        d,
        "grace_days",
        0,
        GraceDays::MAX.into(),
    )?)
}

fn grace_in_body<'de, D: Deserializer<'de>>(d: D) -> Result<GraceDays, D::Error> {
    grace_days(params::json_int(d, "grace_days", 0, GraceDays::MAX.into())?)
}

/// `days`, already within the bounds, as the domain type.
fn grace_days<E: de::Error>(days: u64) -> Result<GraceDays, E> {
    u32::try_from(days)
        .ok()
        .and_then(GraceDays::new)
        .ok_or_else(|| E::custom(format!("grace_days {days} is out of range")))
}

/// The words `ranking_type` takes.
const RANKING_TYPES: [(&str, RankingType); 2] = [
    ("accumulated", RankingType::Accumulated),
    ("continuous", RankingType::Continuous),
];

fn kind_in_query<'de, D: Deserializer<'de>>(d: D) -> Result<RankingType, D::Error> {
    params::query_choice(d, "ranking_type", &RANKING_TYPES)
}

fn kind_in_body<'de, D: Deserializer<'de>>(d: D) -> Result<RankingType, D::Error> {
    params::json_choice(d, "ranking_type", &RANKING_TYPES)
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

/// `POST /api/camps/{checkin_id}/refund-list` body `{"required_days": 7,
/// "grace_days": 0, "ranking_type": "accumulated"}` (each optional).
pub async fn refund_list(
    State(app): State<Arc<AppState>>,
    Path(id): Path<CheckinId>,
    Json(body): Json<RefundBody>,
) -> Result<Response, ApiError> {
    let list = app.refunds.refund_list(id, body.rule).await?;
    Ok(ok(&list_message(&list), list))
}

/// `GET /api/camps/{checkin_id}/refund-list?required_days=&grace_days=&ranking_type=&page_size=&index=`:
/// one page, continuing after ranking position `index` (0 = the start).
pub async fn refund_page(
    State(app): State<Arc<AppState>>,
    Path(id): Path<CheckinId>,
    Query(q): Query<RefundPageQuery>,
) -> Result<Response, ApiError> {
    let page_size = usize::try_from(q.page_size.get()).unwrap_or(usize::MAX);
    let page = app
        .refunds
        .refund_page(id, q.rule, q.index.get(), page_size)
        .await?;
    let message = if page.complete {
        "查询成功"
    } else {
        "查询成功，但本页有成员缺少星球编号 (some numbers on this page are missing)"
    };
    Ok(ok(message, page))
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
    if let Ok(rule) = HeaderValue::from_str(&export::rule_header(list)) {
        headers.insert(RULE_HEADER, rule);
    }
    headers.insert(
        COMPLETE_HEADER,
        HeaderValue::from_static(if list.complete { "true" } else { "false" }),
    );
    response
}

/// What every export of a refund list is asked with: the camp and its rule
/// (`required_days`, `grace_days`, `ranking_type`).
type ExportArgs = (State<Arc<AppState>>, Path<CheckinId>, Query<RefundQuery>);

/// The files a refund list is exported as.
#[derive(Debug, Clone, Copy)]
enum Format {
    Text,
    Csv,
    Xlsx,
}

/// `GET /api/camps/{checkin_id}/refund-list/text?required_days=&grace_days=&ranking_type=`
pub async fn refund_text(args: ExportArgs) -> Result<Response, ApiError> {
    export(args, Format::Text).await
}

/// `GET /api/camps/{checkin_id}/refund-list.csv?required_days=&grace_days=&ranking_type=`
pub async fn refund_csv(args: ExportArgs) -> Result<Response, ApiError> {
    export(args, Format::Csv).await
}

/// `GET /api/camps/{checkin_id}/refund-list.xlsx?required_days=&grace_days=&ranking_type=`
pub async fn refund_xlsx(args: ExportArgs) -> Result<Response, ApiError> {
    export(args, Format::Xlsx).await
}

/// The refund list of the camp, as a file in `format`.
async fn export(
    (State(app), Path(id), Query(q)): ExportArgs,
    format: Format,
) -> Result<Response, ApiError> {
    let list = app.refunds.refund_list(id, q.rule).await?;
    let (body, content_type, extension) = match format {
        Format::Text => (
            export::text(&list).into_bytes(),
            "text/plain; charset=utf-8",
            None,
        ),
        Format::Csv => (export::csv(&list), "text/csv; charset=utf-8", Some("csv")),
        Format::Xlsx => (
            export::xlsx(&list).map_err(|e| {
                tracing::error!(error = %e, "xlsx export failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "生成 Excel 文件失败，请改用 CSV 导出 (could not write the xlsx file; use the CSV export)",
                )
            })?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Some("xlsx"),
        ),
    };
    let disposition = extension.map(|ext| export::content_disposition(&list, ext));
    Ok(download(&list, body, content_type, disposition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_refund_body(body: &[u8]) -> Result<RequiredDays, ApiError> {
        parse_rule(body).map(Rule::required)
    }

    fn parse_rule(body: &[u8]) -> Result<Rule, ApiError> {
        super::super::extract::parse_body::<RefundBody>(body).map(|b| b.rule)
    }

    fn query_rule(query: &str) -> Result<Rule, ApiError> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        super::super::extract::parse_query::<RefundPageQuery>(&uri).map(|q| q.rule)
    }

    #[test]
    fn grace_and_ranking_type_are_read_from_bodies_and_queries() {
        let rule =
            parse_rule(br#"{"required_days": 7, "grace_days": 2, "ranking_type": "continuous"}"#)
                .unwrap();
        assert_eq!(
            (rule.threshold(), rule.ranking_type()),
            (5, RankingType::Continuous)
        );
        assert_eq!(parse_rule(b"{}").unwrap(), Rule::default());
        let rule =
            query_rule("required_days=10&grace_days=3&ranking_type=continuous&index=0").unwrap();
        assert_eq!(
            (rule.threshold(), rule.ranking_type()),
            (7, RankingType::Continuous)
        );
        assert_eq!(query_rule("").unwrap(), Rule::default());
    }

    #[test]
    fn a_bad_grace_or_ranking_type_says_what_to_fix() {
        let body = |b: &[u8]| parse_rule(b).unwrap_err().message;
        let query = |q: &str| query_rule(q).unwrap_err().message;
        for message in [
            body(br#"{"required_days": 5, "grace_days": 5}"#),
            query("required_days=5&grace_days=5"),
        ] {
            assert!(
                message.contains("got grace_days 5 with required_days 5"),
                "{message}"
            );
        }
        assert!(body(br#"{"grace_days": 7}"#).contains("required_days 7"));
        for message in [
            body(br#"{"grace_days": -1}"#),
            body(br#"{"grace_days": 1.5}"#),
            body(br#"{"grace_days": "1"}"#),
            query("grace_days=-1"),
            query("grace_days=1.5"),
        ] {
            assert!(
                message.contains("grace_days must be an integer from 0 to 364"),
                "{message}"
            );
        }
        for message in [
            body(br#"{"ranking_type": "streak"}"#),
            query("ranking_type=streak"),
        ] {
            assert!(
                message.contains("ranking_type must be one of accumulated|continuous"),
                "{message}"
            );
        }
    }

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
