//! The simulator's command line and configuration.

use super::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimConfig,
}

#[test]
fn command_line_defaults_match_the_default_config() {
    let cli = Cli::try_parse_from(["sim"]).expect("no flags needed");
    assert_eq!(cli.sim, SimConfig::default());
}

#[test]
fn every_flag_parses_under_its_documented_name() {
    let cli = Cli::try_parse_from([
        "sim",
        "--port=4000",
        "--members=10",
        "--seed=9",
        "--latency-ms=5",
        "--rate-per-min=50",
        "--reject-ratio=0.25",
        "--token=t",
        "--no-member-list",
        "--group-id=77",
        "--fault=http-500",
        "--slow-ms=12",
        "--unnumbered-ratio=0.5",
        "--tied-joins=250",
    ])
    .expect("valid flags");
    let expected = SimConfig {
        port: 4000,
        members: 10,
        seed: 9,
        latency_ms: 5,
        rate_per_min: 50,
        reject_ratio: 0.25,
        token: "t".into(),
        no_member_list: true,
        group_id: 77,
        fault: SimFault::Http500,
        slow_ms: 12,
        lenient_headers: false,
        ban_after: 0,
        unnumbered_ratio: 0.5,
        tied_joins: 250,
    };
    assert_eq!(cli.sim, expected);
}

#[test]
fn a_reject_ratio_outside_zero_to_one_is_refused() {
    for bad in ["1.5", "-0.1", "NaN", "half"] {
        assert!(
            Cli::try_parse_from(["sim", "--reject-ratio", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn debug_output_never_shows_the_token() {
    let cfg = SimConfig {
        token: "secret-value".into(),
        ..SimConfig::for_tests()
    };
    assert!(!format!("{cfg:?}").contains("secret-value"));
}
