//! Every configuration the repository writes (the shipped examples, README's blocks, the
//! test and demo configurations in `tests/fixtures/config`) parses to the same values and
//! problems as it did before the config split.

use super::{MINIMAL, problem_keys};
use crate::config::*;

/// Lines of keys added since the goldens were written, at their defaults.
const NEW_KEY_LINES: [&str; 5] = [
    "freeswitch: None,",
    "reconcile_wait_ms: 60000,",
    "callcenter_agent: None,",
    "recordings: None,",
    "transfer_logs: PerAgent,",
];

/// What the code makes of `text`, in the goldens' format.
fn dump(text: &str) -> String {
    let mut out = String::new();
    match Config::parse(text) {
        Ok(c) => {
            out.push_str(&format!("{c:#?}\n--\n"));
            for p in c.problems() {
                out.push_str(&format!("{}: {}\n", p.key, p.message));
            }
        }
        Err(e) => out.push_str(&format!("parse error: {e}\n")),
    }
    out
}

/// (Debug lines without the new keys, problems as a sorted list without `*_file` keys).
fn comparable(dump: &str) -> (Vec<String>, Vec<String>) {
    let (debug, problems) = dump.split_once("\n--\n").unwrap_or((dump, ""));
    let debug = debug
        .lines()
        .filter(|l| !NEW_KEY_LINES.contains(&l.trim()))
        .map(String::from)
        .collect();
    let mut problems: Vec<String> = problems
        .lines()
        .filter(|l| {
            !l.split_once(": ")
                .is_some_and(|(key, _)| key.ends_with("_file"))
        })
        .map(String::from)
        .collect();
    problems.sort();
    (debug, problems)
}

/// Every configuration of the repository with the golden the old code wrote for it.
fn examples() -> Vec<(String, String, &'static str)> {
    macro_rules! fixture {
        ($name:literal) => {
            (
                $name.to_string(),
                include_str!(concat!("../../../tests/fixtures/config/", $name, ".toml"))
                    .to_string(),
                include_str!(concat!("../../../tests/fixtures/config/", $name, ".golden")),
            )
        };
    }
    let mut cases = vec![
        fixture!("tests_common"),
        fixture!("asterisk_live"),
        fixture!("asterisk_e2e_custom"),
        fixture!("demo"),
        fixture!("http_allow_from"),
        fixture!("bad_values"),
        (
            "examples/pbxlink.toml".into(),
            include_str!("../../../examples/pbxlink.toml").into(),
            include_str!("../../../tests/fixtures/config/examples_pbxlink.golden"),
        ),
        (
            "packaging/pbxlink.toml".into(),
            include_str!("../../../packaging/pbxlink.toml").into(),
            include_str!("../../../tests/fixtures/config/packaging_pbxlink.golden"),
        ),
    ];
    let readme_goldens = [
        include_str!("../../../tests/fixtures/config/readme_block_0.golden"),
        include_str!("../../../tests/fixtures/config/readme_block_1.golden"),
        include_str!("../../../tests/fixtures/config/readme_block_2.golden"),
        include_str!("../../../tests/fixtures/config/readme_block_3.golden"),
    ];
    let blocks: Vec<&str> = include_str!("../../../README.md")
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(b))
        .collect();
    assert_eq!(
        blocks.len(),
        readme_goldens.len(),
        "README.md's toml blocks changed: add a golden for the new one"
    );
    for (i, (block, golden)) in blocks.iter().zip(readme_goldens).enumerate() {
        let mut text = String::from(
            "[leadsquared]\ncall_log_url = \"https://x.invalid/k\"\ndefault_country_code = \"91\"\n",
        );
        if !block.contains("[asterisk") {
            text.push_str("[asterisk]\ncdr_csv = \"/x\"\n");
        }
        text.push_str(block);
        cases.push((format!("README.md toml block {i}"), text, golden));
    }
    cases
}

#[test]
fn every_example_configuration_loads_to_the_same_values_as_before() {
    for (name, text, golden) in examples() {
        let (debug, problems) = comparable(&dump(&text));
        let (old_debug, old_problems) = comparable(golden);
        assert!(
            debug == old_debug,
            "{name}: parsed differently than before:\n{}",
            debug
                .iter()
                .zip(&old_debug)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("now {a}\nwas {b}"))
                .chain(std::iter::once(format!(
                    "({} lines now, {} before)",
                    debug.len(),
                    old_debug.len()
                )))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(problems, old_problems, "{name}: problems changed");
    }
}

#[test]
fn the_parsed_values_are_typed_at_load() {
    let c = Config::parse(include_str!(
        "../../../tests/fixtures/config/asterisk_live.toml"
    ))
    .expect("parses");
    let ast = c.asterisk.as_ref().expect("[asterisk]");
    assert_eq!(ast.cdr_time_zone.zone(), Some(chrono_tz::Asia::Kolkata));
    assert_eq!(c.leadsquared.time_zone.zone(), Some(chrono_tz::UTC));
    let columns = ast.custom_columns().expect("custom");
    assert_eq!(columns.len(), 22);
    assert_eq!(columns[1], "src");
    let c = Config::parse(include_str!(
        "../../../tests/fixtures/config/http_allow_from.toml"
    ))
    .expect("parses");
    let http = c.http.expect("[http]");
    let networks: Vec<String> = http
        .allow_from
        .networks()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        networks,
        ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
    );
    let csv = Config::parse(MINIMAL).expect("parses");
    assert_eq!(csv.asterisk.expect("[asterisk]").custom_columns(), None);
}

#[test]
fn the_examples_commented_freeswitch_block_names_real_keys() {
    let example = include_str!("../../../examples/pbxlink.toml");
    let start = example
        .find("# [freeswitch]\n")
        .expect("a [freeswitch] block");
    let end = start
        + example[start..]
            .find("\n\n")
            .expect("the block ends with a blank line");
    let mut block = String::new();
    for line in example[start..end].lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let is_setting = rest.starts_with('[')
            || rest.starts_with("  ")
            || rest
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if is_setting {
            block.push_str(rest);
            block.push('\n');
        }
    }
    let text = example.replacen("# [freeswitch]\n", &block, 1);
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{block}"));
    let fs = c.freeswitch.as_ref().expect("[freeswitch]");
    assert_eq!(fs.cdr_columns.len(), 13);
    assert!(fs.esl.is_some());
    let keys: Vec<String> = problem_keys(&c)
        .into_iter()
        .filter(|k| k != "freeswitch.esl.password_file")
        .collect();
    assert_eq!(
        keys,
        ["freeswitch.cdr_template"],
        "the example shows both ways of naming columns (and a password file, which this \
         machine may lack)"
    );
}
