//! The workspace's shape, as the connector kit promises it (CONNECTORS.md): no file grows past
//! one job's size, and each connector's tests build no other network's crate, so an author
//! working on one network compiles that network alone.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "corpus" && name != "artifacts" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_in_the_workspace_is_over_800_lines() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "connectors", "tools", "fuzz", "benches"] {
        rust_files(&Path::new(ROOT).join(dir), &mut files);
    }
    assert!(
        files.len() > 100,
        "found only {} files: wrong root?",
        files.len()
    );
    let mut long: Vec<(usize, String)> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            let name = f.strip_prefix(ROOT).unwrap_or(f).display().to_string();
            (lines > 800).then_some((lines, name))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

/// The connector crates: every folder in `connectors/` but the SDK and the testkit.
fn networks() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("connectors"))
        .expect("connectors/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "sdk" && n != "testkit")
        .collect();
    names.sort();
    names
}

/// The packages `cargo tree` lists for `package` with its dev-dependencies (what its tests build).
fn tree(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args(["tree", "--offline", "--locked", "-p", package])
        .args([
            "-e",
            "normal,dev,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn each_connectors_tests_build_without_another_networks_crate() {
    let networks = networks();
    assert!(networks.len() >= 7, "connectors found: {networks:?}");
    // What one network's crate pulls in that no other should compile.
    let own: &[(&str, &str)] = &[("matrix", "matrix-sdk"), ("xmpp", "tokio-xmpp")];
    for net in networks.iter().map(String::as_str).chain(["testkit"]) {
        let packages = tree(&format!("passerelle-{net}"));
        assert!(
            packages.iter().any(|p| p == "passerelle-sdk"),
            "{net}: {packages:?}"
        );
        for other in networks.iter().filter(|o| *o != net) {
            let crate_name = format!("passerelle-{other}");
            assert!(
                !packages.contains(&crate_name),
                "the tests of passerelle-{net} build {crate_name}"
            );
        }
        for (owner, dependency) in own {
            if *owner != net {
                assert!(
                    !packages.iter().any(|p| p == dependency),
                    "the tests of passerelle-{net} build {dependency}, which only {owner} needs"
                );
            }
        }
    }
    // And the check can see what it looks for.
    assert!(tree("passerelle-xmpp").iter().any(|p| p == "tokio-xmpp"));
}
