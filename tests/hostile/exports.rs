//! Names chosen to deceive: bidi overrides that reverse the rest of a line,
//! zero-width characters, and formula prefixes, through every export of a
//! refund list built from a simulator whose members carry those names.

use std::io::Read as _;

use zsxq_sim::{SimConfig, generate};
use zsxq_test_support::TestApp;

/// Names given to the first participants of the benchmark camp.
const NAMES: [&str; 6] = [
    "小\u{202E}王\u{202C}",             // reverses what follows on its line
    "\u{2067}李四\u{2069}",             // an isolate
    "张\u{200B}三\u{200D}",             // zero-width space and joiner
    "\u{FEFF}=HYPERLINK(\"http://x\")", // a formula behind a BOM
    "＝1+1",                            // a full-width equals sign
    " =SUM(A1)",                        // a formula behind a space
];

/// What each name shows once format characters are dropped.
const SHOWN: [&str; 6] = ["小王", "李四", "张三", "", "", ""];

/// Format characters (category Cf) used in [`NAMES`].
fn is_planted(c: char) -> bool {
    matches!(
        c,
        '\u{202E}' | '\u{202C}' | '\u{2067}' | '\u{2069}' | '\u{200B}' | '\u{200D}' | '\u{FEFF}'
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_show_names_as_plain_text_and_defuse_formulas() {
    let sim_cfg = SimConfig::for_tests();
    let mut data = generate(sim_cfg.seed, sim_cfg.members, sim_cfg.group_id);
    let camp = data.benchmark_camp().expect("benchmark camp").clone();
    for (i, name) in NAMES.iter().enumerate() {
        let user_id = camp.participants[i].0;
        let member = data
            .members
            .iter_mut()
            .find(|m| m.user_id == user_id)
            .expect("a participant is a member");
        member.name = (*name).to_string();
    }
    let app = TestApp::builder().sim(sim_cfg).sim_data(data).spawn().await;
    let addr = app.addr;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/api/camps/{}/refund-list", camp.checkin_id);
    let get = |suffix: &str| {
        let url = format!("{base}{suffix}");
        let http = http.clone();
        async move {
            let resp = http.get(url).send().await.expect("export");
            assert_eq!(resp.status(), 200);
            resp.bytes().await.expect("body").to_vec()
        }
    };

    // The JSON keeps what the upstream sent; the page renders it as text.
    let json: serde_json::Value =
        serde_json::from_slice(&get("?page_size=100").await).expect("json");
    let rows = json["data"]["refund_list"].as_array().expect("rows");
    assert!(rows.iter().any(|r| r["planet_nickname"] == NAMES[0]));

    let text = String::from_utf8(get("/text").await).unwrap();
    let csv = String::from_utf8(get(".csv").await).unwrap();
    let xlsx = get(".xlsx").await;
    let mut strings = String::new();
    zip::ZipArchive::new(std::io::Cursor::new(xlsx))
        .unwrap()
        .by_name("xl/sharedStrings.xml")
        .unwrap()
        .read_to_string(&mut strings)
        .unwrap();
    let csv_body = csv
        .strip_prefix('\u{FEFF}')
        .expect("the BOM leads the file");
    for (kind, out) in [
        ("text", text.as_str()),
        ("csv", csv_body),
        ("xlsx", &strings),
    ] {
        let planted: Vec<String> = out
            .chars()
            .filter(|c| is_planted(*c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(planted.is_empty(), "{kind} keeps {planted:?}");
        for shown in SHOWN.iter().filter(|s| !s.is_empty()) {
            assert!(out.contains(shown), "{kind} lacks {shown}");
        }
    }
    for formula in ["'=HYPERLINK(", "'＝1+1", "' =SUM(A1)"] {
        assert!(
            csv_body.contains(formula),
            "CSV defuses {formula}: {csv_body}"
        );
    }
}
