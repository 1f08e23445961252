//! A refund list as files: CSV, XLSX, a plain-text report, and the CLI's
//! table. Pure functions of a [`RefundList`]: nothing here fetches.
//!
//! Decisions:
//! - **Columns** are the original service's, in its order: 序号, 星球编号,
//!   星球昵称, 打卡天数, 是否合格, then 退款状态 (the operator's mark). A
//!   row without a number says so in the number cell ("缺失：<reason>") rather than leaving it blank, so a file
//!   handed on alone cannot pass for complete.
//! - **CSV** starts with a UTF-8 BOM (Excel otherwise reads UTF-8 as the
//!   local code page and garbles Chinese), ends lines with CRLF (RFC 4180)
//!   and quotes a field that holds a quote, comma or line break. A name
//!   starting with `=`, `+`, `-`, `@`, their full-width forms (`＝＋－＠`,
//!   which some spreadsheets fold to ASCII), whitespace (a spreadsheet may
//!   trim it and then see the formula) or a tab is prefixed with `'`, so a
//!   spreadsheet shows it rather than running it as a formula.
//! - **XLSX** via `rust_xlsxwriter`: real numbers in number columns, strings
//!   as strings (no formula interpretation, no escaping needed), the header
//!   row frozen.
//! - **Names are text, nothing more**: every export drops Unicode format
//!   characters (general category Cf: bidi embeddings, overrides and
//!   isolates, zero-width spaces and joiners, the BOM, invisible operators,
//!   tags) from names and titles. A right-to-left override in a nickname
//!   would otherwise visually reverse the rest of its line, making one
//!   person's number or verdict read as another's; a zero-width character
//!   makes two names that look the same differ, or hides a formula prefix.
//!   The JSON API keeps names as the upstream sent them (the page renders
//!   them as isolated text).
//! - **Text and table** also replace control characters in names with
//!   spaces so a name cannot break the layout; the table pads by display
//!   width (CJK and emoji take two columns in a terminal).
//! - **The rule** (required days, grace, ranking type) heads the text
//!   report and the table, fills a second XLSX sheet (规则), and travels as
//!   the `X-Refund-Rule` header of every download; the CSV keeps its one
//!   header line and adds no column for it, so scripts still parse it. A row whose
//!   days are unknown (not in the continuous ranking) says 未知, never 0.
//! - **File names**: an ASCII `filename` for old clients plus RFC 5987
//!   `filename*=UTF-8''…` carrying the camp's Chinese title.

use std::fmt::Write as _;

use super::{RefundList, RefundRow};

/// The column headers of CSV and XLSX exports.
/// 退款状态 is the operator's mark (`marks.rs`), 未知 when unread.
pub const COLUMNS: [&str; 6] = [
    "序号",
    "星球编号",
    "星球昵称",
    "打卡天数",
    "是否合格",
    "退款状态",
];

/// The name of the XLSX worksheet.
pub const SHEET_NAME: &str = "退款名单";

/// The name of the XLSX sheet that states the rule.
pub const RULE_SHEET_NAME: &str = "规则";

/// An export that could not be written (only XLSX can fail).
#[derive(Debug, thiserror::Error)]
#[error("could not write the xlsx file: {0}")]
pub struct ExportError(String);

/// Extra columns when the group has no member numbers at all: rows are then
/// told apart by alias and user id, and the reason is said once (in the
/// list's notice), not on every row.
pub const NO_NUMBERING_COLUMNS: [&str; 2] = ["星球备注", "用户ID"];

/// The group numbers none of its members (the list's statistics say so).
fn numbering_off(list: &RefundList) -> bool {
    list.statistics.numbering_notice.is_some()
}

/// The header: the columns above, and the two identifying ones when the
/// group has no numbers.
fn columns(list: &RefundList) -> Vec<&'static str> {
    let mut out = COLUMNS.to_vec();
    if numbering_off(list) {
        out.extend(NO_NUMBERING_COLUMNS);
    }
    out
}

/// The number cell's text: the number, or why there is none.
fn number_cell(row: &RefundRow, off: bool) -> String {
    match (row.planet_number, &row.number_missing_reason) {
        (Some(n), _) => n.to_string(),
        (None, _) if off => "无编号".to_string(),
        (None, Some(reason)) => format!("缺失：{reason}"),
        (None, None) => "缺失".to_string(),
    }
}

/// The days cell's text: the days, or 未知 when they could not be had.
fn days_cell(row: &RefundRow) -> String {
    match row.days_missing_reason {
        Some(_) => "未知".to_string(),
        None => row.checkined_days.to_string(),
    }
}

/// The rule as one ASCII header value, for scripts: what `X-Refund-Rule`
/// carries.
pub fn rule_header(list: &RefundList) -> String {
    format!(
        "required_days={}; grace_days={}; qualifying_days={}; ranking_type={}",
        list.rule.required().get(),
        list.rule.grace().get(),
        list.rule.threshold(),
        list.rule.ranking_type()
    )
}

fn qualified_cell(row: &RefundRow) -> &'static str {
    if row.is_qualified { "是" } else { "否" }
}

/// The refund status cell: the mark's label, 未知 when the marks could not
/// be read.
fn status_cell(row: &RefundRow) -> &'static str {
    row.refund_status.map_or("未知", |s| s.label())
}

/// The list as CSV bytes: BOM, header, one CRLF-terminated line per row.
pub fn csv(list: &RefundList) -> Vec<u8> {
    let mut out = String::with_capacity(64 + list.refund_list.len() * 48);
    out.push('\u{FEFF}');
    let off = numbering_off(list);
    push_csv_line(&mut out, columns(list).iter().map(|c| (*c).to_string()));
    for (i, row) in list.refund_list.iter().enumerate() {
        let mut fields = vec![
            (i + 1).to_string(),
            number_cell(row, off),
            defuse_formula(&visible(&row.planet_nickname)),
            days_cell(row),
            qualified_cell(row).to_string(),
            status_cell(row).to_string(),
        ];
        if off {
            fields.push(defuse_formula(&visible(&row.planet_alias)));
            fields.push(row.planet_user_id.to_string());
        }
        push_csv_line(&mut out, fields.into_iter());
    }
    out.into_bytes()
}

fn push_csv_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains(['"', ',', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

/// Keeps a spreadsheet from reading a name as a formula (CSV injection).
/// Runs on the name without its format characters, so none can hide the
/// prefix.
fn defuse_formula(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '＝', '＋', '－', '＠'])
        || text.starts_with(char::is_whitespace);
    if risky {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// Whether `c` is a Unicode format character (general category Cf):
/// invisible, and able to reorder or join the text around it.
fn is_format_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` without its format characters: what it shows, nothing more.
fn visible(text: &str) -> String {
    text.chars().filter(|c| !is_format_char(*c)).collect()
}

/// The list as an XLSX workbook.
pub fn xlsx(list: &RefundList) -> Result<Vec<u8>, ExportError> {
    use rust_xlsxwriter::{Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| ExportError(e.to_string());
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name(SHEET_NAME).map_err(fail)?;
    let bold = Format::new().set_bold();
    let off = numbering_off(list);
    for (col, title) in (0u16..).zip(columns(list)) {
        sheet
            .write_string_with_format(0, col, title, &bold)
            .map_err(fail)?;
    }
    for (row_index, row) in (1u32..).zip(&list.refund_list) {
        sheet
            .write_number(row_index, 0, f64::from(row_index))
            .map_err(fail)?;
        match row.planet_number {
            // Member numbers are far below 2^53, so f64 holds them exactly.
            Some(n) => sheet.write_number(row_index, 1, n.get() as f64),
            None => sheet.write_string(row_index, 1, number_cell(row, off)),
        }
        .map_err(fail)?;
        sheet
            .write_string(row_index, 2, visible(&row.planet_nickname))
            .map_err(fail)?;
        match row.days_missing_reason {
            Some(_) => sheet.write_string(row_index, 3, days_cell(row)),
            None => sheet.write_number(row_index, 3, f64::from(row.checkined_days)),
        }
        .map_err(fail)?;
        sheet
            .write_string(row_index, 4, qualified_cell(row))
            .map_err(fail)?;
        sheet
            .write_string(row_index, 5, status_cell(row))
            .map_err(fail)?;
        if off {
            sheet
                .write_string(row_index, 6, visible(&row.planet_alias))
                .map_err(fail)?;
            // Ids pass 2^53: text, never a number a spreadsheet would round.
            sheet
                .write_string(row_index, 7, row.planet_user_id.to_string())
                .map_err(fail)?;
        }
    }
    for (col, width) in [
        (0u16, 8.0),
        (1, 12.0),
        (2, 28.0),
        (3, 10.0),
        (4, 10.0),
        (5, 10.0),
        (6, 16.0),
        (7, 18.0),
    ] {
        sheet.set_column_width(col, width).map_err(fail)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(fail)?;
    let rules = workbook.add_worksheet();
    rules.set_name(RULE_SHEET_NAME).map_err(fail)?;
    let rule = list.rule;
    rules.write_string(0, 0, "打卡要求").map_err(fail)?;
    rules.write_string(0, 1, rule.describe()).map_err(fail)?;
    for (row, (label, value)) in (1u32..).zip([
        ("required_days", rule.required().get()),
        ("grace_days", rule.grace().get()),
        ("qualifying_days", rule.threshold()),
    ]) {
        rules.write_string(row, 0, label).map_err(fail)?;
        rules.write_number(row, 1, f64::from(value)).map_err(fail)?;
    }
    rules.write_string(4, 0, "ranking_type").map_err(fail)?;
    rules
        .write_string(4, 1, rule.ranking_type().as_str())
        .map_err(fail)?;
    rules.set_column_width(1, 40.0).map_err(fail)?;
    workbook.save_to_buffer().map_err(fail)
}

/// A name safe to print on one line: no format characters, control
/// characters as spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .filter(|c| !is_format_char(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `#177`, or `#?` when the number is missing; in a group without numbers
/// the user id and alias that tell the row apart.
fn number_label(row: &RefundRow, off: bool) -> String {
    match row.planet_number {
        Some(n) => format!("#{n}"),
        None if off && row.planet_alias.trim().is_empty() => format!("ID {}", row.planet_user_id),
        None if off => format!(
            "ID {}（备注：{}）",
            row.planet_user_id,
            one_line(&row.planet_alias)
        ),
        None => "#?".to_string(),
    }
}

/// The plain-text report: totals, the qualified, the unqualified with the
/// days each still lacked, and every missing number with its reason.
pub fn text(list: &RefundList) -> String {
    let s = &list.statistics;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{} 退款名单", one_line(&list.title));
    let _ = writeln!(
        out,
        "训练营编号：{}    打卡要求：{}",
        list.checkin_id,
        list.rule.describe()
    );
    let _ = writeln!(
        out,
        "总人数：{}    合格：{}    不合格：{}    合格率：{:.2}%",
        s.total_count, s.qualified_count, s.unqualified_count, s.qualified_rate
    );
    let off = numbering_off(list);
    if let Some(notice) = s.numbering_notice {
        let _ = writeln!(out, "{notice}");
    }
    if !list.complete {
        let _ = writeln!(out, "注意：名单不完整，请核对后再据此退款：");
        for reason in &list.incomplete_reasons {
            let _ = writeln!(out, "  - {}", one_line(reason));
        }
    } else if list.missing_count == 0 {
        let _ = writeln!(out, "名单完整：每位参与者都有星球编号。");
    } else if !off {
        let _ = writeln!(
            out,
            "名单完整；{} 人没有分配星球编号（见各行）。",
            list.missing_count
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "合格名单（{} 人）：", s.qualified_count);
    for (i, row) in list
        .refund_list
        .iter()
        .filter(|r| r.is_qualified)
        .enumerate()
    {
        let _ = writeln!(
            out,
            "  {}. {} {} — {} 天 [{}]{}",
            i + 1,
            number_label(row, off),
            one_line(&row.planet_nickname),
            days_cell(row),
            status_cell(row),
            missing_note(row, off)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "不合格名单（{} 人）：", s.unqualified_count);
    for (i, row) in list
        .refund_list
        .iter()
        .filter(|r| !r.is_qualified)
        .enumerate()
    {
        let shortfall = match &row.days_missing_reason {
            Some(reason) => format!("天数未知：{reason}"),
            None => format!(
                "{} 天，还差 {} 天",
                row.checkined_days,
                list.rule.threshold().saturating_sub(row.checkined_days)
            ),
        };
        let _ = writeln!(
            out,
            "  {}. {} {} — {}{}",
            i + 1,
            number_label(row, off),
            one_line(&row.planet_nickname),
            shortfall,
            missing_note(row, off)
        );
    }
    out
}

fn missing_note(row: &RefundRow, off: bool) -> String {
    match &row.number_missing_reason {
        // Without numbering the reason was said once, at the top.
        Some(_) if off => String::new(),
        Some(reason) => format!("（无星球编号：{reason}）"),
        None => String::new(),
    }
}

/// Columns a terminal gives `text`: two for CJK and emoji, none for
/// combining marks and joiners, one otherwise. An approximation of Unicode
/// East Asian Width that is right for the names Zsxq members use.
pub fn display_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let cp = u32::from(c);
    match cp {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F | 0x20D0..=0x20FF => 0,
        _ if c.is_control() => 0,
        0x1100..=0x115F
        | 0x2600..=0x27BF
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F680..=0x1F6FF
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// The list as an aligned table for a terminal, followed by the totals and,
/// when incomplete, the reasons for every missing number.
pub fn table(list: &RefundList) -> String {
    let off = numbering_off(list);
    let mut cells: Vec<[String; 6]> = vec![COLUMNS.map(str::to_string)];
    for (i, row) in list.refund_list.iter().enumerate() {
        let number = match row.planet_number {
            Some(n) => n.to_string(),
            None if off => number_label(row, off),
            None => "缺失".to_string(),
        };
        cells.push([
            (i + 1).to_string(),
            number,
            one_line(&row.planet_nickname),
            days_cell(row),
            qualified_cell(row).to_string(),
            status_cell(row).to_string(),
        ]);
    }
    let mut widths = [0usize; 6];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(display_width(cell));
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}（{}）  打卡要求 {}",
        one_line(&list.title),
        list.checkin_id,
        list.rule.describe()
    );
    for line in &cells {
        let mut text = String::new();
        for (col, (cell, width)) in line.iter().zip(widths).enumerate() {
            if col > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if col + 1 < line.len() {
                text.push_str(&" ".repeat(width.saturating_sub(display_width(cell))));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    }
    let s = &list.statistics;
    let _ = writeln!(
        out,
        "合计 {} 人，合格 {} 人，不合格 {} 人，合格率 {:.2}%",
        s.total_count, s.qualified_count, s.unqualified_count, s.qualified_rate
    );
    if !list.complete {
        let _ = writeln!(out, "名单不完整：{} 人没有星球编号", list.missing_count);
        for row in list
            .refund_list
            .iter()
            .filter(|r| r.planet_number.is_none())
        {
            let _ = writeln!(
                out,
                "  {} ({}): {}",
                one_line(&row.planet_nickname),
                row.planet_user_id,
                row.number_missing_reason.as_deref().unwrap_or("原因未知")
            );
        }
    }
    out
}

/// `Content-Disposition` for a download of `list` with extension `ext`
/// (`csv`, `xlsx`, `txt`): an ASCII fallback name plus the UTF-8 one with
/// the camp's title (RFC 6266 / RFC 5987).
pub fn content_disposition(list: &RefundList, ext: &str) -> String {
    let ascii = format!("refund-list-{}.{ext}", list.checkin_id);
    let title: String = one_line(&list.title)
        .chars()
        .filter(|c| !matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let utf8 = format!("{}-退款名单.{ext}", title.trim());
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(&utf8)
    )
}

/// RFC 5987 `value-chars`: unreserved ASCII stays, everything else is
/// percent-encoded byte by byte.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::batch::ResolveReport;
    use crate::domain::{CheckinId, MemberNumber, RankingType, UserId};
    use crate::refund::{RankingSource, Rule, Statistics};

    fn row(id: u64, number: Option<u64>, name: &str, days: u32) -> RefundRow {
        RefundRow {
            planet_user_id: UserId::new(id).unwrap(),
            planet_number: number.and_then(MemberNumber::new),
            planet_nickname: name.into(),
            planet_alias: String::new(),
            checkined_days: days,
            required_days: 7,
            is_qualified: days >= 7,
            number_missing_reason: number
                .is_none()
                .then(|| "该用户已退出星球 (left the group)".to_string()),
            days_missing_reason: None,
            refund_status: Some(crate::store::marks::RefundStatus::Pending),
            refund_note: None,
            refund_updated_at: None,
            position: id,
        }
    }

    fn list(rows: Vec<RefundRow>) -> RefundList {
        let missing_count = rows.iter().filter(|r| r.planet_number.is_none()).count();
        RefundList {
            checkin_id: CheckinId::new(123_456_789_012_345).unwrap(),
            title: "7天AI写作训练营".into(),
            status: "over".into(),
            checkin_days: 7,
            required_days: 7,
            grace_days: 0,
            ranking_type: RankingType::Accumulated,
            rule: Rule::default(),
            complete: missing_count == 0,
            incomplete_reasons: (missing_count > 0)
                .then(|| format!("{missing_count} 人的编号未能取到"))
                .into_iter()
                .collect(),
            missing_count,
            statistics: Statistics::of(&rows, Rule::default()),
            refund_list: rows,
            ranking_source: RankingSource::Upstream,
            ranking_reads: Vec::new(),
            lookup: ResolveReport::default(),
            generated_at: String::new(),
        }
    }

    #[test]
    fn csv_has_a_bom_crlf_lines_and_quotes_what_needs_quoting() {
        let l = list(vec![
            row(1, Some(177), "Tom \"The Cat\" Li", 9),
            row(2, Some(2), "a,b", 3),
            row(3, None, "=HYPERLINK(\"x\")", 7),
            row(4, Some(4), "🐱猫猫", 7),
        ]);
        let bytes = csv(&l);
        assert!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]));
        let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "序号,星球编号,星球昵称,打卡天数,是否合格,退款状态"
        );
        assert_eq!(lines[1], "1,177,\"Tom \"\"The Cat\"\" Li\",9,是,未退款");
        assert_eq!(lines[2], "2,2,\"a,b\",3,否,未退款");
        assert_eq!(
            lines[3],
            "3,缺失：该用户已退出星球 (left the group),\"'=HYPERLINK(\"\"x\"\")\",7,是,未退款"
        );
        assert_eq!(lines[4], "4,4,🐱猫猫,7,是,未退款");
        assert_eq!(lines[5], "", "the last line ends with CRLF too");
        assert!(!text.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn the_text_report_has_totals_both_lists_and_the_days_still_needed() {
        let l = list(vec![row(1, Some(177), "青弦", 7), row(2, None, "小李", 3)]);
        let t = text(&l);
        assert!(
            t.contains("总人数：2    合格：1    不合格：1    合格率：50.00%"),
            "{t}"
        );
        assert!(t.contains("1. #177 青弦 — 7 天"), "{t}");
        assert!(
            t.contains("1. #? 小李 — 3 天，还差 4 天（无星球编号：该用户已退出星球"),
            "{t}"
        );
        assert!(t.contains("名单不完整"), "{t}");
        assert!(t.contains("  - 1 人的编号未能取到"), "{t}");
    }

    #[test]
    fn a_group_without_numbers_is_said_once_and_rows_carry_alias_and_id() {
        let unassigned = |id: u64, name: &str, alias: &str, days: u32| RefundRow {
            planet_alias: alias.into(),
            number_missing_reason: Some(crate::domain::NO_NUMBER_ASSIGNED.to_string()),
            ..row(id, None, name, days)
        };
        let l = list(vec![
            unassigned(454881884228, "青弦", "组长", 7),
            unassigned(412451285841818, "=cmd", "", 3),
        ]);
        assert!(l.statistics.numbering_notice.is_some());
        let csv = String::from_utf8(csv(&l)).unwrap();
        let lines: Vec<&str> = csv.trim_start_matches('\u{FEFF}').split("\r\n").collect();
        assert_eq!(
            lines[0],
            "序号,星球编号,星球昵称,打卡天数,是否合格,退款状态,星球备注,用户ID"
        );
        assert_eq!(lines[1], "1,无编号,青弦,7,是,未退款,组长,454881884228");
        assert_eq!(lines[2], "2,无编号,'=cmd,3,否,未退款,,412451285841818");
        let t = text(&l);
        assert_eq!(t.matches("没有成员编号").count(), 1, "said once: {t}");
        assert!(
            t.contains("1. ID 454881884228（备注：组长） 青弦 — 7 天 [未退款]\n"),
            "{t}"
        );
        assert!(!t.contains("no number assigned"), "not on every row: {t}");
        let table = table(&l);
        assert!(table.contains("ID 412451285841818"), "{table}");
    }

    #[test]
    fn table_columns_line_up_by_display_width() {
        let l = list(vec![
            row(1, Some(1), "🐱猫猫", 7),
            row(2, Some(22), "bob", 3),
        ]);
        let t = table(&l);
        // Header and rows: the days column starts at the same display column.
        let starts: Vec<usize> = t
            .lines()
            .skip(1)
            .take(3)
            .map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                let at = line.find(cells[3]).unwrap();
                display_width(&line[..at])
            })
            .collect();
        assert_eq!(starts.len(), 3);
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}\n{t}");
        assert_eq!(display_width("🐱猫猫"), 6);
        assert_eq!(display_width("ab、"), 4);
    }

    #[test]
    fn content_disposition_carries_an_ascii_name_and_the_utf8_title() {
        let l = list(vec![]);
        let cd = content_disposition(&l, "csv");
        assert!(cd.starts_with(
            "attachment; filename=\"refund-list-123456789012345.csv\"; filename*=UTF-8''"
        ));
        assert!(cd.ends_with(".csv"));
        assert!(cd.contains("7%E5%A4%A9AI"), "{cd}");
        assert!(cd.is_ascii());
    }

    /// Bidi controls, zero-width characters and other format characters
    /// (category Cf), one of each kind.
    const FORMAT_CHARS: [char; 16] = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}', '\u{200B}', '\u{200D}',
        '\u{2060}', '\u{FEFF}',
    ];

    #[test]
    fn every_export_drops_format_characters_from_names() {
        let sneaky: String = FORMAT_CHARS.iter().fold("小".to_string(), |mut s, c| {
            s.push(*c);
            s
        }) + "张\u{202E}321";
        let l = list(vec![
            row(1, Some(177), &sneaky, 9),
            row(2, None, "\u{2067}李四\u{2069}", 3),
        ]);
        let csv = String::from_utf8(csv(&l)).unwrap();
        let text = text(&l);
        let table = table(&l);
        for (kind, out) in [("csv", &csv[3..]), ("text", &text), ("table", &table)] {
            assert!(!out.chars().any(is_format_char), "{kind}: {out:?}");
            assert!(
                out.contains("小张321") && out.contains("李四"),
                "{kind}: {out}"
            );
        }
        assert!(csv.starts_with('\u{FEFF}'), "the BOM itself stays");
        let sheet = sheet_xml(&xlsx(&l).unwrap());
        assert!(sheet.contains("小张321"), "{sheet}");
        assert!(!sheet.chars().any(is_format_char));
        for c in FORMAT_CHARS {
            assert!(is_format_char(c), "{:04X}", u32::from(c));
        }
        for kept in ['a', '张', '🐱', '\u{FE0F}', '\u{0301}', ' '] {
            assert!(!is_format_char(kept), "{:04X}", u32::from(kept));
        }
    }

    /// The shared strings of an XLSX file (where its text cells live).
    fn sheet_xml(bytes: &[u8]) -> String {
        use std::io::Read as _;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut xml = String::new();
        zip.by_name("xl/sharedStrings.xml")
            .unwrap()
            .read_to_string(&mut xml)
            .unwrap();
        xml
    }

    #[test]
    fn formulas_are_defused_behind_spaces_full_width_signs_and_invisible_characters() {
        for name in [
            "=1+1",
            "+cmd",
            "-2",
            "@SUM(A1)",
            " =1+1",
            "\t=1",
            "\r=1",
            "＝1+1",
            "＋1",
            "－1",
            "＠x",
            "\u{200B}=HYPERLINK(\"http://x\")",
            "\u{202E}=1",
        ] {
            let l = list(vec![row(1, Some(1), name, 7)]);
            let csv = String::from_utf8(csv(&l)).unwrap();
            let cell = csv.lines().nth(1).unwrap().split(',').nth(2).unwrap();
            let cell = cell.trim_start_matches('"');
            assert!(cell.starts_with('\''), "{name:?} -> {cell:?}");
        }
        for name in ["小张", "a=b", "1+1", "Tom"] {
            let l = list(vec![row(1, Some(1), name, 7)]);
            let csv = String::from_utf8(csv(&l)).unwrap();
            assert!(csv.contains(&format!(",{name},")), "{name} is left alone");
        }
    }

    #[test]
    fn xlsx_is_a_zip_file() {
        let bytes = xlsx(&list(vec![row(1, Some(177), "<b>加粗</b>小张", 7)])).unwrap();
        assert!(bytes.starts_with(b"PK"));
    }
}
