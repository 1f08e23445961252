//! What `bench hot` measured, and the table it prints with a verdict per
//! target.

use zsxq_test_support::seed_layout::LayoutFigures;

use super::{MEMORY_RATIO_TARGET, PAGING_RATIO_TARGET, RSS_TARGET_MB};

/// One `wrk` run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WrkFigures {
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) errors: u64,
}

impl WrkFigures {
    /// Each figure's median over `runs` (errors: the total).
    pub(super) fn median(runs: &[Self]) -> Self {
        let median = |figure: fn(&Self) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            percentile(&values, 0.5)
        };
        Self {
            rps: median(|f| f.rps),
            p50_ms: median(|f| f.p50_ms),
            p99_ms: median(|f| f.p99_ms),
            errors: runs.iter().map(|f| f.errors).sum(),
        }
    }
}

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
pub(super) struct Report {
    /// (connections, service, nginx), each the median of `rounds` runs.
    pub(super) hot: Vec<(u32, WrkFigures, WrkFigures)>,
    pub(super) rounds: usize,
    /// (connections, (rps, p50 ms))
    pub(super) redis_get: Vec<(u32, (f64, f64))>,
    /// (user id, upstream calls, replicas)
    pub(super) stampede: Vec<(u64, u64, usize)>,
    pub(super) paging_small: (f64, f64),
    pub(super) paging_large: (f64, f64),
    pub(super) large: usize,
    /// Redis bytes per member, ours and the straightforward layout's on the
    /// same members in the same run: ("long" | "short" fields, figures).
    pub(super) memory: Vec<(&'static str, LayoutFigures)>,
    pub(super) rss_mb: Vec<f64>,
}

impl Report {
    /// Prints the table; whether every target was met.
    pub(super) fn print(&self) -> bool {
        let mut all_ok = true;
        let mut verdict = |ok: bool| {
            all_ok &= ok;
            if ok { "PASS" } else { "FAIL" }
        };
        println!();
        println!(
            "== hot GET /api/users/:id (near-cache hit), wrk -t2, same machine, same run, median of {} alternating rounds ==",
            self.rounds
        );
        println!(
            "{:>6} | {:>12} {:>9} {:>9} {:>6} | {:>12} {:>9} {:>9} {:>6} | {:>9} {:>9}",
            "conns",
            "service rps",
            "p50 ms",
            "p99 ms",
            "errors",
            "nginx rps",
            "p50 ms",
            "p99 ms",
            "errors",
            "rps ratio",
            "verdict"
        );
        for (conns, s, n) in &self.hot {
            let ratio = s.rps / n.rps;
            let ok = ratio >= 1.0 && (*conns < 1000 || s.p99_ms <= n.p99_ms);
            println!(
                "{conns:>6} | {:>12.0} {:>9.2} {:>9.2} {:>6} | {:>12.0} {:>9.2} {:>9.2} {:>6} | {:>9.2} {:>9}",
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors,
                n.rps,
                n.p50_ms,
                n.p99_ms,
                n.errors,
                ratio,
                verdict(ok)
            );
        }
        for (conns, (rps, p50)) in &self.redis_get {
            let service = self
                .hot
                .iter()
                .find(|(c, ..)| c == conns)
                .map_or(f64::NAN, |(_, s, _)| s.rps);
            println!(
                "floor: redis-benchmark -t get -c {conns}: {rps:.0} rps, p50 {p50:.3} ms (service at {:.2}× of it)",
                service / rps
            );
        }
        if self.stampede.is_empty() {
            // --hot-only: nothing else was measured.
            return all_ok;
        }
        println!();
        println!("== cold stampede (simulator at 200 ms a call) ==");
        for (id, calls, replicas) in &self.stampede {
            println!(
                "member {id}: {calls} upstream call(s) for the stampede over {replicas} replica(s)   {}",
                verdict(*calls == 1)
            );
        }
        println!();
        println!("== paging GET /api/users (page_size 50, random pages, both sorts and orders) ==");
        let ratio = self.paging_large.0 / self.paging_small.0;
        println!(
            "  1 000 members: p50 {:.2} ms, p99 {:.2} ms",
            self.paging_small.0, self.paging_small.1
        );
        println!(
            "{:>7} members: p50 {:.2} ms, p99 {:.2} ms   p50 ratio {ratio:.2} (target ≤ {PAGING_RATIO_TARGET})   {}",
            self.large,
            self.paging_large.0,
            self.paging_large.1,
            verdict(ratio <= PAGING_RATIO_TARGET)
        );
        println!();
        println!("== memory ==");
        for (kind, f) in &self.memory {
            println!(
                "Redis used_memory per member, {kind} fields (every key and index): ours {:.0} B (indexes {:.0} B); \
                 straightforward seed layout on the same members: {:.0} B; ratio {:.2} (target ≤ {MEMORY_RATIO_TARGET})   {}",
                f.ours,
                f.index_share,
                f.straightforward,
                f.ratio(),
                verdict(f.ratio() <= MEMORY_RATIO_TARGET && f.not_listpack.is_empty())
            );
            if !f.not_listpack.is_empty() {
                println!(
                    "  {} keys not listpack-encoded, e.g. {:?}",
                    f.not_listpack.len(),
                    &f.not_listpack[..f.not_listpack.len().min(3)]
                );
            }
        }
        let worst = self.rss_mb.iter().copied().fold(0.0, f64::max);
        println!(
            "service RSS with {} members in Redis: {} MB (target ≤ {RSS_TARGET_MB})   {}",
            self.large,
            self.rss_mb
                .iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            verdict(worst <= RSS_TARGET_MB)
        );
        all_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_summarised_by_each_figures_median() {
        let run = |rps, p99_ms, errors| WrkFigures {
            rps,
            p50_ms: 1.0,
            p99_ms,
            errors,
        };
        let m = WrkFigures::median(&[run(90.0, 9.0, 1), run(50.0, 3.0, 0), run(70.0, 5.0, 2)]);
        assert_eq!(m.rps, 70.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.errors, 3);
    }
}
