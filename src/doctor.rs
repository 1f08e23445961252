//! `zsxq-cache doctor`: checks a configuration against the real upstream
//! in a handful of calls and says, one line per check, what works and what
//! to do about what does not.
//!
//! Decisions:
//! - **The service's own parts.** The configuration is read exactly as
//!   `serve` reads it, the client is the service's client (same headers,
//!   same `X-Aduid` from the store, same refusal state: a fleet that is
//!   paused is not called by the doctor either), so a ✓ means the service
//!   will get the same answer.
//! - **Few calls.** Six requests at most (member list, one summary, camps
//!   ongoing and over, one ranking page, one statistics answer), each
//!   retried once on a throttle: at most twelve, usually six. A check that
//!   needs an earlier one to have passed is shown as not checked.
//! - **Exit status:** 0 the product will work, 1 it will not (a fatal ✗),
//!   2 the configuration is unusable (the variable is named). Some ✗ are not
//!   fatal: a member list visible to admins only (lookups fall back to one
//!   call per member), members without numbers (refund lists then identify
//!   people by nickname, alias and user id).
//! - **No secrets.** The token is never printed: the checks name the
//!   variable it came from.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::clock::SystemClock;
use crate::config::{Config, UpstreamAuth};
use crate::domain::RankingType;
use crate::upstream::device::DeviceId;
use crate::upstream::{
    Budget, CampScope, MEMBER_PAGE, Priority, Upstream, UpstreamError, ZsxqClient,
};

/// Exit status: the product will work.
pub const WORKS: u8 = 0;
/// Exit status: a fatal check failed.
pub const BROKEN: u8 = 1;
/// Exit status: the configuration cannot be used.
pub const BAD_CONFIG: u8 = 2;

/// How one check ended.
enum Check {
    Pass(String),
    /// Failed; `fatal` when the product cannot work without it.
    Fail {
        what: String,
        todo: String,
        fatal: bool,
    },
    /// Not run: an earlier check it needs failed.
    Skipped(&'static str),
}

/// The report being written, and whether a fatal check failed.
struct Report {
    out: String,
    broken: bool,
}

impl Report {
    fn line(&mut self, check: Check) {
        let _ = match check {
            Check::Pass(what) => writeln!(self.out, "✓ {what}"),
            Check::Fail { what, todo, fatal } => {
                self.broken |= fatal;
                writeln!(self.out, "✗ {what}\n    → {todo}")
            }
            Check::Skipped(what) => writeln!(self.out, "– {what}: not checked"),
        };
    }
}

/// Runs the checks on the variables of `vars` (the process environment in
/// the binary) and returns what to print and the exit status.
pub async fn run(vars: &HashMap<String, String>) -> (String, u8) {
    let config = match Config::from_vars(vars) {
        Ok(c) => c,
        Err(e) => {
            return (
                format!(
                    "✗ configuration: {e}\n    → set {} (see the configuration table in the README) and run doctor again\n",
                    e.var
                ),
                BAD_CONFIG,
            );
        }
    };
    let mut report = Report {
        out: String::new(),
        broken: false,
    };
    let variable = match config.upstream.auth {
        UpstreamAuth::Cookie(_) => "ZSXQ_ACCESS_TOKEN",
        UpstreamAuth::Header(_) => "ZSXQ_AUTHORIZATION",
    };
    let _ = writeln!(
        report.out,
        "zsxq-cache doctor: {} group {}, token from {variable}, X-Version {}",
        config.upstream.base_url, config.upstream.group_id, config.upstream.x_version
    );
    let (client, budget) = match client(&config, &mut report).await {
        Ok(parts) => parts,
        Err(e) => {
            let _ = writeln!(report.out, "✗ setting up: {e:#}");
            return (report.out, BAD_CONFIG);
        }
    };
    checks(&client, &config, variable, &mut report).await;
    let calls = budget.stats.calls.load(Ordering::Relaxed);
    let status = if report.broken { BROKEN } else { WORKS };
    let _ = writeln!(
        report.out,
        "{} (upstream calls: {calls})",
        if report.broken {
            "result: the product will NOT work until the ✗ above (those not marked \"not fatal\") are fixed"
        } else {
            "result: the product will work"
        }
    );
    (report.out, status)
}

/// The service's client, with one retry per call and the installation's
/// device id (a note when the store cannot be opened).
async fn client(config: &Config, report: &mut Report) -> anyhow::Result<(ZsxqClient, Arc<Budget>)> {
    let mut upstream = config.upstream.clone();
    upstream.max_retries = upstream.max_retries.min(1);
    let budget = Arc::new(Budget::new(
        upstream.rate_per_min,
        upstream.request_delay,
        upstream.concurrency,
    ));
    let refusal = Arc::new(crate::startup::build_refusal(config)?);
    let mut client = ZsxqClient::new(upstream, budget.clone())?.with_refusal(refusal);
    match crate::startup::open_store(&config.store, Arc::new(SystemClock)).await {
        Ok(store) => {
            let installation = crate::startup::installation(config);
            client = client.with_device(DeviceId::stored(store, &installation));
        }
        Err(e) => {
            client = client.with_device(DeviceId::unstored(&crate::startup::installation(config)));
            let _ = writeln!(
                report.out,
                "! the store could not be opened ({e:#}): the calls carry the installation's first device id, which may differ from the one the store keeps (stop `serve` when it holds the embedded store)"
            );
        }
    }
    Ok((client, budget))
}

async fn checks(api: &dyn Upstream, config: &Config, variable: &str, report: &mut Report) {
    let group = config.upstream.group_id;
    // 1. The member list: proves token, signature and group at once.
    let list = api
        .member_list_page(None, MEMBER_PAGE, Priority::Interactive)
        .await;
    let members = match list {
        Ok(members) => {
            report.line(Check::Pass("token accepted".into()));
            report.line(Check::Pass(
                "signature accepted (X-Signature, X-Aduid, X-Version)".into(),
            ));
            report.line(Check::Pass(format!("group {group} reachable")));
            report.line(Check::Pass(format!(
                "member list answers: {} members on the first page",
                members.len()
            )));
            let numbered = members.iter().filter(|m| m.number.is_some()).count();
            report.line(if numbered > 0 {
                Check::Pass(format!(
                    "members carry numbers: {numbered} of the first {}",
                    members.len()
                ))
            } else {
                Check::Fail {
                    what: format!("members carry numbers: none of the first {}", members.len()),
                    todo: "member numbering is off for this group (or not assigned yet): refund lists identify people by nickname, alias and user_id instead (not fatal)".into(),
                    fatal: false,
                }
            });
            members
        }
        Err(e) if e.is_listing_refused() => {
            report.line(Check::Pass("token accepted".into()));
            report.line(Check::Pass("signature accepted".into()));
            report.line(Check::Pass(format!("group {group} reachable")));
            report.line(Check::Fail {
                what: format!("member list answers: refused ({e})"),
                todo: "the list is visible to the owner and admins only (groups over 500 members): use an admin's token, or accept one upstream call per member for lookups and sync (not fatal)".into(),
                fatal: false,
            });
            report.line(Check::Skipped("members carry numbers"));
            Vec::new()
        }
        Err(e) => {
            first_call_failed(&e, config, variable, report);
            for what in [
                "a summary carries a number",
                "camps list",
                "first ranking page of the newest camp",
                "its statistics",
            ] {
                report.line(Check::Skipped(what));
            }
            return;
        }
    };

    // 2. One member summary: the per-member call lookups rely on.
    match members.first() {
        None => report.line(Check::Skipped("a summary carries a number")),
        Some(first) => match api.member_summary(first.user_id, Priority::Interactive).await {
            Ok(m) => report.line(match m.number {
                Some(n) => Check::Pass(format!(
                    "a summary carries a number: {} is number {n}",
                    m.user_id
                )),
                None => Check::Fail {
                    what: format!("a summary carries a number: {} has none", m.user_id),
                    todo: "numbering is off or not assigned for this member: their rows show why the number is missing (not fatal)".into(),
                    fatal: false,
                },
            }),
            Err(e) => report.line(Check::Fail {
                what: format!("a summary carries a number: {e}"),
                todo: todo_for(&e, variable),
                fatal: true,
            }),
        },
    }

    // 3. Camps, newest first across ongoing and over.
    let mut camps = Vec::new();
    let mut failed = None;
    for scope in [CampScope::Ongoing, CampScope::Over] {
        match api.camps(scope, 20, Priority::Interactive).await {
            Ok(found) => camps.extend(found),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failed {
        report.line(Check::Fail {
            what: format!("camps list: {e}"),
            todo: todo_for(&e, variable),
            fatal: true,
        });
        report.line(Check::Skipped("first ranking page of the newest camp"));
        report.line(Check::Skipped("its statistics"));
        return;
    }
    let Some(newest) = camps
        .iter()
        .max_by(|a, b| a.create_time.cmp(&b.create_time))
    else {
        report.line(Check::Pass(
            "camps list: answers, no ongoing or finished camp yet".into(),
        ));
        report.line(Check::Skipped("first ranking page of the newest camp"));
        report.line(Check::Skipped("its statistics"));
        return;
    };
    report.line(Check::Pass(format!(
        "camps list: {} ongoing or finished",
        camps.len()
    )));
    let (id, title) = (newest.checkin_id, newest.title.as_str());

    // 4. The newest camp's first ranking page and its statistics.
    match api
        .ranking_page(id, RankingType::Accumulated, 0, Priority::Interactive)
        .await
    {
        Ok(page) => report.line(Check::Pass(format!(
            "first ranking page of the newest camp 「{title}」 ({id}): {} rows",
            page.ranking_list.len()
        ))),
        Err(e) => report.line(Check::Fail {
            what: format!("first ranking page of the newest camp ({id}): {e}"),
            todo: todo_for(&e, variable),
            fatal: true,
        }),
    }
    match api.camp_statistics(id, Priority::Interactive).await {
        Ok(s) => report.line(Check::Pass(format!(
            "its statistics: {} joined, {} checked in at least once",
            s.joined_count, s.checkined_count
        ))),
        Err(e) => report.line(Check::Fail {
            what: format!("its statistics: {e}"),
            todo: todo_for(&e, variable),
            fatal: true,
        }),
    }
}

/// The first call failed: say which of token, signature and group it was.
fn first_call_failed(e: &UpstreamError, config: &Config, variable: &str, report: &mut Report) {
    use UpstreamError as U;
    let group = config.upstream.group_id;
    let fail = |what: String, todo: String| Check::Fail {
        what,
        todo,
        fatal: true,
    };
    match e {
        U::Unauthorized { .. } | U::TokenRejected { .. } | U::Forbidden { code: 403, .. } => {
            report.line(fail(format!("token accepted: {e}"), todo_for(e, variable)));
            report.line(Check::Skipped("signature accepted"));
            report.line(Check::Skipped("group reachable"));
        }
        U::Throttled { .. } | U::Refusing { .. } | U::VersionTooOld { .. } => {
            report.line(Check::Skipped("token accepted"));
            report.line(fail(
                format!("signature accepted: {e}"),
                todo_for(e, variable),
            ));
            report.line(Check::Skipped("group reachable"));
        }
        U::NotFound { .. } | U::Forbidden { .. } | U::NotMember { .. } => {
            report.line(Check::Pass("token accepted".into()));
            report.line(Check::Pass("signature accepted".into()));
            report.line(fail(
                format!("group {group} reachable: {e}"),
                "check ZSXQ_GROUP_ID (the digits in the group's web address) and that the token's account is a member of it".into(),
            ));
        }
        _ => {
            report.line(fail(
                format!("upstream reachable: {e}"),
                format!(
                    "check ZSXQ_API_BASE ({}) and the network; run doctor again",
                    config.upstream.base_url
                ),
            ));
            report.line(Check::Skipped("token accepted"));
            report.line(Check::Skipped("signature accepted"));
            report.line(Check::Skipped("group reachable"));
        }
    }
    report.line(Check::Skipped("member list answers"));
    report.line(Check::Skipped("members carry numbers"));
}

/// What to do about a failed call.
fn todo_for(e: &UpstreamError, variable: &str) -> String {
    use UpstreamError as U;
    match e {
        U::Unauthorized { .. } | U::TokenRejected { .. } | U::Forbidden { code: 403, .. } => {
            let source = if variable == "ZSXQ_AUTHORIZATION" {
                "the app's Authorization header"
            } else {
                "the web client's zsxq_access_token cookie"
            };
            format!(
                "the token is expired, revoked or not allowed: log in again, copy {source} into {variable}, and run doctor again"
            )
        }
        U::Throttled { .. } | U::Refusing { .. } => "Zsxq answers 1059, its throttle and anti-abuse / signature refusal: wait a few minutes and run doctor again; if it persists, check the machine's clock (X-Timestamp) and that no other client uses the same token".into(),
        U::VersionTooOld { .. } => "set ZSXQ_X_VERSION to the web client's current version (2.95.0 in 2025)".into(),
        U::Forbidden { code: 52010, .. } => "the token's account cannot see this camp's ranking: use the token of the group's owner or an admin".into(),
        U::Forbidden { .. } => "the token's account lacks a right in this group: use the token of the group's owner or an admin".into(),
        _ => "retry in a minute; if it persists, the upstream may have changed (see docs/UPSTREAM.md)".into(),
    }
}
