//! The api crate's modules import each other without cycles: shared helpers live in modules
//! that import none of their users (`common.rs`), so a new service is a new module, not a new
//! knot. Reads `src/*.rs` and follows `crate::<module>` references (the crate root excepted).

use std::collections::{BTreeMap, BTreeSet};

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    // The directory cargo runs the test from, not the one baked in at compile time: a test
    // binary reused from another checkout of the same sources must read this checkout.
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let dir = std::path::Path::new(&root).join("src");
    let files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".rs")?
                .to_string();
            Some((name, std::fs::read_to_string(e.path()).ok()?))
        })
        .filter(|(name, _)| name != "lib")
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
    files
        .into_iter()
        .map(|(name, text)| {
            // `crate::m::…`, `crate::m;` and the names inside `use crate::{a, b::c, …}`.
            let mut named: BTreeSet<String> = BTreeSet::new();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                if let Some(list) = rest.strip_prefix('{') {
                    let list = &list[..list.find('}').unwrap_or(list.len())];
                    for item in list.split(',') {
                        named.insert(item.trim().split("::").next().unwrap_or("").to_string());
                    }
                } else {
                    let end = rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    named.insert(rest[..end].to_string());
                }
            }
            let uses = modules
                .iter()
                .filter(|m| **m != name && named.contains(*m))
                .cloned()
                .collect();
            (name, uses)
        })
        .collect()
}

#[test]
fn api_modules_have_no_import_cycles() {
    let g = graph();
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            visit(g, next, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(&g, m, &mut Vec::new(), &mut done);
    }
    assert!(g
        .get("common")
        .is_some_and(|u| !u.contains("rows") && !u.contains("databases")));
}
