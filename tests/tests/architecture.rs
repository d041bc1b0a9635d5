//! Crate boundaries from ARCHITECTURE.md, checked on the real dependency graph.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Normal (non-dev, non-build) dependency closure of each workspace package, by name.
fn closures() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_string()))
        .collect();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap().to_string();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        edges.insert(id, deps);
    }
    let mut out = BTreeMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let root = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![root.to_string()];
        while let Some(id) = stack.pop() {
            for d in edges.get(&id).into_iter().flatten() {
                if seen.insert(names[d].clone()) {
                    stack.push(d.clone());
                }
            }
        }
        out.insert(names[root].clone(), seen);
    }
    out
}

#[test]
fn the_ledger_knows_nothing_of_runtime_network_raft_or_protobuf() {
    let c = closures();
    let ledger = &c["veritrace-ledger"];
    for banned in ["tokio", "libp2p", "tonic", "prost", "openraft"] {
        assert!(!ledger.contains(banned), "veritrace-ledger depends on {banned}");
    }
}

#[test]
fn dependencies_point_the_documented_way() {
    let c = closures();
    let has = |from: &str, to: &str| c[from].contains(to);
    assert!(!has("veritrace-consensus", "veritrace-ledger"), "consensus must stay generic over the ledger");
    assert!(!has("veritrace-devnet", "veritrace-node"), "devnet launches the node binary, it does not link it");
    assert!(!has("veritrace-ledger", "veritrace-proto"), "ledger types do not know the wire format");
    for (pkg, deps) in &c {
        assert!(!deps.contains(pkg), "{pkg} depends on itself");
    }
}
