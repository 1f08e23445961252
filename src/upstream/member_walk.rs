//! Paging through the documented member list, newest member first, without
//! missing or repeating anybody at the page boundaries.

use std::collections::HashSet;

use super::{MAX_PAGES, MEMBER_PAGE, Priority, Upstream, UpstreamError};
use crate::domain::{Member, UserId, parse_zsxq_time_ms};

/// Pages through the documented member list, newest member first, one
/// page per [`MemberWalk::next_page`], so a caller writes each page before
/// asking for the next and memory does not grow with the group.
///
/// The list has no `has_more` and no page token: the next page is asked with
/// `end_time` = the last row's `join_time`. That bound is inclusive and
/// several members can share one millisecond, so:
/// - rows at the boundary millisecond come again on the next page; they are
///   dropped by `user_id` (only ids of that one millisecond are kept, since
///   no other row can repeat in a descending walk);
/// - a full page whose rows all share the boundary millisecond cannot move
///   the cursor; the walk steps one millisecond back rather than loop, and
///   records that members of that millisecond beyond one page may be missing
///   ([`MemberWalk::complete`] is then false);
/// - a page shorter than `count` is the last one;
/// - a row newer than the cursor, or a last row whose time cannot be read,
///   means the upstream is not paging as documented: an error, never a
///   guess.
///
/// Listing refusals (11507/1006/1030) come back as errors for the caller to
/// fall back on. The facts are in docs/UPSTREAM.md.
pub struct MemberWalk<'a> {
    /// Where the pages come from.
    api: &'a dyn Upstream,
    /// Every page is asked with it.
    priority: Priority,
    /// Where the next page ends; `None` before the first page.
    cursor: Option<Cursor>,
    /// Ids already handed out whose join time is the cursor's millisecond.
    boundary: HashSet<UserId>,
    /// Pages read, bounded by `MAX_PAGES`.
    pages: usize,
    /// Distinct members handed out.
    members: u64,
    /// Of `members`, those with a number.
    numbered: u64,
    /// A page shorter than a full one came: the list is over.
    ended: bool,
    /// Milliseconds the walk had to step over with a full page in hand.
    skipped: Vec<String>,
}

/// Where the next member-list page ends.
#[derive(Debug, Clone)]
struct Cursor {
    /// Sent as `end_time`, in the upstream's own format.
    text: String,
    /// The same instant, unix milliseconds, for comparing rows.
    ms: i64,
}

impl<'a> MemberWalk<'a> {
    pub fn new(api: &'a dyn Upstream, priority: Priority) -> Self {
        Self {
            api,
            priority,
            cursor: None,
            boundary: HashSet::new(),
            pages: 0,
            members: 0,
            numbered: 0,
            ended: false,
            skipped: Vec::new(),
        }
    }

    /// The next members not handed out before; `None` once the list ended.
    /// A page can come back empty (all repeats) while the walk goes on.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Member>>, UpstreamError> {
        if self.ended {
            return Ok(None);
        }
        if self.pages >= MAX_PAGES {
            return Err(UpstreamError::Malformed("member list did not end".into()));
        }
        let end_time = self.cursor.as_ref().map(|c| c.text.as_str());
        let raw = self
            .api
            .member_list_page(end_time, MEMBER_PAGE, self.priority)
            .await?;
        self.pages += 1;
        let full = raw.len() >= MEMBER_PAGE as usize;
        let last = match raw.last() {
            None => None,
            Some(m) => Some(Cursor {
                ms: parse_zsxq_time_ms(&m.join_time).ok_or_else(|| {
                    UpstreamError::Malformed(format!(
                        "member list row without a readable join_time: {:?}",
                        m.join_time
                    ))
                })?,
                text: m.join_time.clone(),
            }),
        };
        let mut fresh = Vec::with_capacity(raw.len());
        let mut on_page = HashSet::with_capacity(raw.len());
        for m in raw {
            let ms = m.join_time_ms();
            if let Some(c) = &self.cursor {
                if ms > c.ms {
                    return Err(UpstreamError::Malformed(format!(
                        "member list answered a member newer than end_time {}",
                        c.text
                    )));
                }
                if ms == c.ms && self.boundary.contains(&m.user_id) {
                    continue;
                }
            }
            if on_page.insert(m.user_id) {
                fresh.push(m);
            }
        }
        self.members += fresh.len() as u64;
        self.numbered += fresh.iter().filter(|m| m.number.is_some()).count() as u64;
        match last {
            Some(last) if full => {
                let stuck = self.cursor.as_ref().is_some_and(|c| c.ms == last.ms);
                if stuck {
                    // A whole page inside one millisecond: step over it.
                    self.skipped.push(last.text.clone());
                    self.boundary.clear();
                    self.cursor = Some(Cursor {
                        text: zsxq_time_before(&last.text).ok_or_else(|| {
                            UpstreamError::Malformed(format!(
                                "cannot step back from join_time {:?}",
                                last.text
                            ))
                        })?,
                        ms: last.ms - 1,
                    });
                } else {
                    self.boundary = fresh
                        .iter()
                        .filter(|m| m.join_time_ms() == last.ms)
                        .map(|m| m.user_id)
                        .collect();
                    self.cursor = Some(last);
                }
            }
            _ => self.ended = true,
        }
        Ok(Some(fresh))
    }

    /// Upstream pages read so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Distinct members handed out so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Of [`MemberWalk::members`], those with a number.
    pub fn numbered(&self) -> u64 {
        self.numbered
    }

    /// The list ended and nobody can have been skipped.
    pub fn complete(&self) -> bool {
        self.ended && self.skipped.is_empty()
    }

    /// Join times (upstream format) at which more members joined than one
    /// page holds, so some of them may not have been seen.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// The upstream-format time one millisecond before `raw`, in `raw`'s offset.
fn zsxq_time_before(raw: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(raw))
        .ok()?;
    let before = t.checked_sub_signed(chrono::TimeDelta::milliseconds(1))?;
    Some(before.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string())
}
