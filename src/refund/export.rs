//! A refund list as files: CSV, XLSX, a plain-text report, and the CLI's
//! table. Pure functions of a [`RefundList`]: nothing here fetches.
//!
//! Decisions:
//! - **Columns** are the original service's (SPEC §3): 序号, 星球编号,
//!   星球昵称, 打卡天数, 是否合格. A row without a number says so in the
//!   number cell ("缺失：<reason>") rather than leaving it blank, so a file
//!   handed on alone cannot pass for complete.
//! - **CSV** starts with a UTF-8 BOM (Excel otherwise reads UTF-8 as the
//!   local code page and garbles Chinese), ends lines with CRLF (RFC 4180)
//!   and quotes a field that holds a quote, comma or line break. A name
//!   starting with `=`, `+`, `-`, `@` or a tab is prefixed with `'`, so a
//!   spreadsheet shows it rather than running it as a formula.
//! - **XLSX** via `rust_xlsxwriter`: real numbers in number columns, strings
//!   as strings (no formula interpretation, no escaping needed), the header
//!   row frozen.
//! - **Text and table** replace control characters in names with spaces so
//!   a name cannot break the layout; the table pads by display width (CJK
//!   and emoji take two columns in a terminal).
//! - **File names**: an ASCII `filename` for old clients plus RFC 5987
//!   `filename*=UTF-8''…` carrying the camp's Chinese title.

use std::fmt::Write as _;

use super::{RefundList, RefundRow};

/// The column headers of CSV and XLSX exports.
pub const COLUMNS: [&str; 5] = ["序号", "星球编号", "星球昵称", "打卡天数", "是否合格"];

/// The name of the XLSX worksheet.
pub const SHEET_NAME: &str = "退款名单";

/// An export that could not be written (only XLSX can fail).
#[derive(Debug, thiserror::Error)]
#[error("could not write the xlsx file: {0}")]
pub struct ExportError(String);

/// The number cell's text: the number, or why there is none.
fn number_cell(row: &RefundRow) -> String {
    match (row.planet_number, &row.number_missing_reason) {
        (Some(n), _) => n.to_string(),
        (None, Some(reason)) => format!("缺失：{reason}"),
        (None, None) => "缺失".to_string(),
    }
}

fn qualified_cell(row: &RefundRow) -> &'static str {
    if row.is_qualified { "是" } else { "否" }
}

/// The list as CSV bytes: BOM, header, one CRLF-terminated line per row.
pub fn csv(list: &RefundList) -> Vec<u8> {
    let mut out = String::with_capacity(64 + list.refund_list.len() * 48);
    out.push('\u{FEFF}');
    push_csv_line(&mut out, COLUMNS.iter().map(|c| (*c).to_string()));
    for (i, row) in list.refund_list.iter().enumerate() {
        push_csv_line(
            &mut out,
            [
                (i + 1).to_string(),
                number_cell(row),
                defuse_formula(&row.planet_nickname),
                row.checkined_days.to_string(),
                qualified_cell(row).to_string(),
            ]
            .into_iter(),
        );
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
fn defuse_formula(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// The list as an XLSX workbook.
pub fn xlsx(list: &RefundList) -> Result<Vec<u8>, ExportError> {
    use rust_xlsxwriter::{Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| ExportError(e.to_string());
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name(SHEET_NAME).map_err(fail)?;
    let bold = Format::new().set_bold();
    for (col, title) in (0u16..).zip(COLUMNS) {
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
            None => sheet.write_string(row_index, 1, number_cell(row)),
        }
        .map_err(fail)?;
        sheet
            .write_string(row_index, 2, row.planet_nickname.as_str())
            .map_err(fail)?;
        sheet
            .write_number(row_index, 3, f64::from(row.checkined_days))
            .map_err(fail)?;
        sheet
            .write_string(row_index, 4, qualified_cell(row))
            .map_err(fail)?;
    }
    for (col, width) in [(0u16, 8.0), (1, 12.0), (2, 28.0), (3, 10.0), (4, 10.0)] {
        sheet.set_column_width(col, width).map_err(fail)?;
    }
    sheet.set_freeze_panes(1, 0).map_err(fail)?;
    workbook.save_to_buffer().map_err(fail)
}

/// A name safe to print on one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `#177`, or `#?` when the number is missing.
fn number_label(row: &RefundRow) -> String {
    match row.planet_number {
        Some(n) => format!("#{n}"),
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
        "训练营编号：{}    打卡要求：{} 天",
        list.checkin_id, list.required_days
    );
    let _ = writeln!(
        out,
        "总人数：{}    合格：{}    不合格：{}    合格率：{:.2}%",
        s.total_count, s.qualified_count, s.unqualified_count, s.qualified_rate
    );
    if list.complete {
        let _ = writeln!(out, "名单完整：每位参与者都有星球编号。");
    } else {
        let _ = writeln!(
            out,
            "注意：名单不完整，{} 人没有星球编号（原因见各行）。",
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
            "  {}. {} {} — {} 天{}",
            i + 1,
            number_label(row),
            one_line(&row.planet_nickname),
            row.checkined_days,
            missing_note(row)
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
        let _ = writeln!(
            out,
            "  {}. {} {} — {} 天，还差 {} 天{}",
            i + 1,
            number_label(row),
            one_line(&row.planet_nickname),
            row.checkined_days,
            row.required_days.saturating_sub(row.checkined_days),
            missing_note(row)
        );
    }
    out
}

fn missing_note(row: &RefundRow) -> String {
    match &row.number_missing_reason {
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
    let mut cells: Vec<[String; 5]> = vec![COLUMNS.map(str::to_string)];
    for (i, row) in list.refund_list.iter().enumerate() {
        let number = row
            .planet_number
            .map_or_else(|| "缺失".to_string(), |n| n.to_string());
        cells.push([
            (i + 1).to_string(),
            number,
            one_line(&row.planet_nickname),
            row.checkined_days.to_string(),
            qualified_cell(row).to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(display_width(cell));
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}（{}）  打卡要求 {} 天",
        one_line(&list.title),
        list.checkin_id,
        list.required_days
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
    use crate::domain::{CheckinId, MemberNumber, UserId};
    use crate::refund::{RankingSource, Statistics};

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
            complete: missing_count == 0,
            incomplete_reasons: Vec::new(),
            missing_count,
            statistics: Statistics::of(&rows),
            refund_list: rows,
            ranking_source: RankingSource::Upstream,
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
        assert_eq!(lines[0], "序号,星球编号,星球昵称,打卡天数,是否合格");
        assert_eq!(lines[1], "1,177,\"Tom \"\"The Cat\"\" Li\",9,是");
        assert_eq!(lines[2], "2,2,\"a,b\",3,否");
        assert_eq!(
            lines[3],
            "3,缺失：该用户已退出星球 (left the group),\"'=HYPERLINK(\"\"x\"\")\",7,是"
        );
        assert_eq!(lines[4], "4,4,🐱猫猫,7,是");
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
        assert!(t.contains("名单不完整，1 人"), "{t}");
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

    #[test]
    fn xlsx_is_a_zip_file() {
        let bytes = xlsx(&list(vec![row(1, Some(177), "<b>加粗</b>小张", 7)])).unwrap();
        assert!(bytes.starts_with(b"PK"));
    }
}
