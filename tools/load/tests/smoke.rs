//! The load tool itself, end to end on small runs: real InspIRCd and Synapse, the real daemon
//! (the debug build beside the tool), the figures line parsed back. The real measurements are in
//! `docs/performance.md`; these only prove the tool counts what arrives.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle-load"))
        .args(args)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "passerelle-load {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The figures of one path (`direct:` or `passerelle:`) as `key=value` pairs.
fn figures<'a>(line: &'a str, path: &str) -> Vec<(&'a str, &'a str)> {
    let start = line.find(path).expect("the path's figures") + path.len();
    let end = line[start..].find('|').map_or(line.len(), |e| start + e);
    line[start..end]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

fn get<'a>(f: &[(&'a str, &'a str)], key: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no {key} in {f:?}"))
        .1
}

fn assert_all_arrived(line: &str, path: &str, n: &str) {
    let f = figures(line, path);
    for (key, want) in [
        ("sent", n),
        ("delivered", n),
        ("lost", "0"),
        ("duplicated", "0"),
        ("reordered", "0"),
    ] {
        assert_eq!(get(&f, key), want, "{path} {key} in: {line}");
    }
    let rate: f64 = get(&f, "throughput")
        .trim_end_matches("msg/s")
        .parse()
        .expect("a throughput");
    assert!(rate > 0.0, "{path} throughput in: {line}");
}

#[test]
fn an_irc_burst_is_counted_on_both_paths() {
    let line = run(&[
        "irc",
        "--messages",
        "300",
        "--window",
        "50",
        "--idle-secs",
        "3",
    ]);
    assert!(line.starts_with("irc->irc burst n=300"), "{line}");
    assert_all_arrived(&line, "direct:", "300");
    assert_all_arrived(&line, "passerelle:", "300");
    assert!(line.contains("stopped_cleanly=true"), "{line}");
    assert!(line.contains("peak="), "{line}");
}

#[test]
fn paced_api_posts_are_counted() {
    let line = run(&[
        "api",
        "--messages",
        "100",
        "--rate",
        "200",
        "--idle-secs",
        "3",
    ]);
    assert!(line.starts_with("api->irc 200/s n=100"), "{line}");
    assert_all_arrived(&line, "direct:", "100");
    assert_all_arrived(&line, "passerelle:", "100");
}

#[test]
fn start_up_is_timed_on_the_example_config() {
    // Read when the test runs, not when it was built: clones at other paths share one target
    // directory, and a test binary that cargo found fresh may have been built from another one.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let example = format!("{dir}/../../config.example.toml");
    let line = run(&[
        "startup",
        "--config",
        &example,
        "--runs",
        "2",
        "--idle-secs",
        "0",
    ]);
    assert!(line.starts_with("startup "), "{line}");
    assert!(line.contains("new store: min="), "{line}");
    assert!(line.contains("existing store: min="), "{line}");
    assert!(line.contains("idle rss max="), "{line}");
}

#[test]
fn a_matrix_burst_is_counted_on_both_paths() {
    let line = run(&["matrix", "--messages", "40", "--idle-secs", "5"]);
    assert!(line.starts_with("matrix->irc burst n=40"), "{line}");
    assert_all_arrived(&line, "direct:", "40");
    assert_all_arrived(&line, "passerelle:", "40");
    assert!(line.contains("stopped_cleanly=true"), "{line}");
}

#[test]
fn api_posts_are_counted_on_sqlite_and_on_postgresql_in_one_run() {
    let out = run(&[
        "api",
        "--messages",
        "100",
        "--rate",
        "200",
        "--idle-secs",
        "3",
        "--store",
        "sqlite,postgres",
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("api->irc")).collect();
    assert_eq!(lines.len(), 2, "one line per store: {out}");
    for (line, store) in lines.iter().zip(["sqlite", "postgres"]) {
        assert!(line.contains(&format!("store={store} |")), "{line}");
        assert_all_arrived(line, "passerelle:", "100");
        assert!(line.contains("stopped_cleanly=true"), "{line}");
    }
}

#[test]
fn the_cost_of_an_account_is_measured() {
    let line = run(&["accounts", "--pairs", "3", "--idle-secs", "2"]);
    assert!(line.starts_with("accounts store=sqlite idle=2s"), "{line}");
    assert!(line.contains("| 6 accounts: ready"), "{line}");
    assert!(line.contains("per added account: rss="), "{line}");
}
