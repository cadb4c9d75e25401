//! The crate boundaries of ARCHITECTURE.md, checked: dependencies point one way
//! (node → api → raft → storage-engine, all over model), and only the named crate may
//! use each heavyweight dependency.

use std::collections::BTreeMap;

fn dependencies(krate: &str) -> Vec<String> {
    // Where cargo runs the test, not where it was compiled (see api/tests/modules.rs).
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let path = format!("{root}/../{krate}/Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().split('.').next().unwrap_or("").to_string();
                if !name.is_empty() && !name.starts_with('#') {
                    deps.push(name);
                }
            }
        }
    }
    deps
}

#[test]
fn dependencies_point_one_way() {
    let crates = ["model", "storage-engine", "raft", "api", "node"];
    let deps: BTreeMap<&str, Vec<String>> = crates.iter().map(|c| (*c, dependencies(c))).collect();
    let allowed_internal: BTreeMap<&str, &[&str]> = [
        ("model", &[][..]),
        ("storage-engine", &["model"][..]),
        ("raft", &["model", "storage-engine"][..]),
        ("api", &["model"][..]),
        ("node", &["model", "storage-engine", "raft", "api"][..]),
    ]
    .into_iter()
    .collect();
    for (krate, list) in &deps {
        for d in list {
            if crates.contains(&d.as_str()) {
                assert!(
                    allowed_internal[krate].contains(&d.as_str()),
                    "{krate} must not depend on {d}"
                );
            }
        }
    }
    let owners: &[(&str, &str)] = &[
        ("rocksdb", "storage-engine"),
        ("openraft", "raft"),
        ("tonic", "raft"),
        ("clap", "node"),
        ("anyhow", "node"),
        ("tracing-subscriber", "node"),
        ("axum", "api"),
    ];
    for (dep, owner) in owners {
        for (krate, list) in &deps {
            if list.iter().any(|d| d == dep) {
                assert_eq!(
                    krate, owner,
                    "only {owner} may depend on {dep}, but {krate} does"
                );
            }
        }
    }
}
