//! Writing a genesis with `veritrace genesis init / add-org / add-validator / add-observer`,
//! then `genesis check` on it; bad input is named, exit code 2, and leaves the file as it
//! was. Offline: no node is started.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use veritrace_ledger::org::{Genesis, Role};

fn veritrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veritrace")).args(args).output().expect("run veritrace")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let o = veritrace(&args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// A new key file `NAME.key` in `dir`, and its public key.
fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let v = ok_json(&["key", "gen", "--out", path.to_str().unwrap()]);
    (path, v["public_key"].as_str().unwrap().to_string())
}

/// Runs a command that must be refused: exit 2, its output naming `named`, the genesis
/// byte for byte as it was.
fn refused(genesis: &Path, args: &[&str], named: &str) {
    let before = std::fs::read(genesis).unwrap();
    let o = veritrace(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert!(text(&o).contains(named), "{args:?} should name {named:?}: {}", text(&o));
    assert_eq!(std::fs::read(genesis).unwrap(), before, "{args:?} changed the file");
}

#[test]
fn a_genesis_written_step_by_step_checks_and_bad_input_leaves_it_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let genesis = d.join("genesis.json");
    let g = genesis.to_str().unwrap();
    let (samr, samr_pub) = key(d, "samr");
    let (_, customs_pub) = key(d, "customs");
    let (nutri, nutri_pub) = key(d, "nutri");
    let (node1, node1_pub) = key(d, "node-1");
    let (node2, _) = key(d, "node-2");
    let (_, node3_pub) = key(d, "node-3");
    let (obs, obs_pub) = key(d, "node-4");
    let (_, ccic_pub) = key(d, "ccic");
    let k = |p: &PathBuf| p.to_str().unwrap().to_string();

    let v = ok_json(&[
        "genesis",
        "init",
        "--ledger-id",
        "cn-quality-test",
        "-o",
        g,
        "--quorum",
        "2",
        "--genesis-time-ms",
        "1767225600000",
    ]);
    assert_eq!(v["ledger_id"], "cn-quality-test");
    assert_eq!(v["complete"], false, "{v}");
    // init never overwrites; an unfinished genesis does not pass check.
    refused(&genesis, &["genesis", "init", "--ledger-id", "other", "-o", g], "genesis.json");
    refused(&genesis, &["genesis", "check", g], "no validators");
    refused(&genesis, &["genesis", "init", "--ledger-id", "Bad Ledger", "-o", &k(&d.join("x.json"))], "Bad Ledger");
    assert!(!d.join("x.json").exists());

    ok_json(&[
        "genesis",
        "add-org",
        g,
        "samr",
        "--name",
        "State Administration for Market Regulation",
        "--role",
        "regulator",
        "--key",
        &k(&samr),
    ]);
    ok_json(&[
        "genesis",
        "add-org",
        g,
        "customs-pingtan",
        "--name",
        "Pingtan Customs",
        "--role",
        "regulator",
        "--public-key",
        &customs_pub,
    ]);
    let v = ok_json(&[
        "genesis",
        "add-org",
        g,
        "nutri",
        "--name",
        "Southern Cross Nutrition",
        "--role",
        "producer",
        "--prefix",
        "9312345",
        "--key",
        &k(&nutri),
    ]);
    assert_eq!(v["organisation"], "nutri");
    assert_eq!(v["public_key"], nutri_pub.as_str());
    ok_json(&[
        "genesis",
        "add-org",
        g,
        "ccic-au",
        "--name",
        "CCIC Australia",
        "--role",
        "inspection_body",
        "--scope",
        "GB 10765",
        "--public-key",
        &ccic_pub,
    ]);
    let v = ok_json(&["genesis", "add-validator", g, "node-1", "--org", "samr", "--key", &k(&node1)]);
    assert_eq!(v["complete"], true, "{v}");
    ok_json(&["genesis", "add-validator", g, "node-2", "--org", "customs-pingtan", "--key", &k(&node2)]);
    ok_json(&["genesis", "add-validator", g, "node-3", "--org", "ccic-au", "--public-key", &node3_pub]);
    let v = ok_json(&["genesis", "add-observer", g, "node-4", "--org", "nutri", "--key", &k(&obs)]);
    assert_eq!(
        (v["organisations"].as_u64(), v["validators"].as_u64(), v["observers"].as_u64()),
        (Some(4), Some(3), Some(1))
    );

    // The ledger's own parser and rules take it, and check agrees.
    let parsed = Genesis::from_json(&std::fs::read_to_string(&genesis).unwrap()).expect("a valid genesis");
    let v = ok_json(&["genesis", "check", g]);
    assert_eq!(v["hash"], parsed.hash().to_hex());
    assert_eq!(v["governance_quorum"], 2);
    assert_eq!(parsed.ledger_id.as_str(), "cn-quality-test");
    assert_eq!(parsed.genesis_time_ms, 1_767_225_600_000);
    let samr_org = parsed.organisations.iter().find(|o| o.id.as_str() == "samr").unwrap();
    assert!(samr_org.has_role(Role::Regulator));
    assert_eq!(samr_org.keys[0].public_key.to_hex(), samr_pub);
    assert_eq!(samr_org.keys[0].key_id.as_str(), "k1");
    let nutri_org = parsed.organisations.iter().find(|o| o.id.as_str() == "nutri").unwrap();
    assert_eq!(nutri_org.code_prefixes[0].scheme, "gs1");
    assert_eq!(nutri_org.code_prefixes[0].prefix, "9312345");
    assert_eq!(parsed.validators[0].public_key.to_hex(), node1_pub);
    assert_eq!(parsed.observers[0].public_key.to_hex(), obs_pub);
    assert_eq!(parsed.observers[0].org.as_str(), "nutri");

    // Refusals, each naming the offending value.
    let add_org = |id: &'static str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["genesis", "add-org", g, id, "--name", "X"].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: Vec<String>, named: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&genesis, &args, named);
    };
    run(add_org("samr", &["--role", "regulator", "--public-key", &samr_pub]), "\"samr\" is already in the genesis");
    run(add_org("audit", &["--role", "auditor", "--public-key", &samr_pub]), "auditor");
    run(add_org("boards", &["--role", "producer", "--prefix", "69x1234", "--public-key", &samr_pub]), "69x1234");
    run(
        add_org("shop", &["--role", "platform", "--prefix", "6901234", "--public-key", &samr_pub]),
        "code prefixes are only for producers",
    );
    run(add_org("Bad Org", &["--role", "platform", "--public-key", &samr_pub]), "Bad Org");
    run(add_org("shop", &["--role", "platform", "--public-key", "zz12"]), "zz12");
    run(add_org("shop", &["--role", "platform", "--key", &k(&d.join("missing.key"))]), "missing.key");
    run(add_org("shop", &["--role", "platform"]), "--public-key");
    let node_args = |cmd: &str, id: &str, org: &str, pubkey: &str| -> Vec<String> {
        ["genesis", cmd, g, id, "--org", org, "--public-key", pubkey].iter().map(|s| s.to_string()).collect()
    };
    let fresh = &key(d, "node-5").1;
    run(node_args("add-validator", "node-5", "nobody", fresh), "\"nobody\"");
    run(node_args("add-validator", "node-1", "samr", fresh), "\"node-1\" is already in the genesis as validator");
    run(node_args("add-observer", "node-4", "samr", fresh), "\"node-4\" is already in the genesis as observer");
    run(node_args("add-observer", "node-5", "samr", &node1_pub), &node1_pub);
    run(node_args("add-validator", "node-5", "samr", &obs_pub), "observer \"node-4\"");

    // A file that is not a genesis is named and left alone.
    let not_genesis = d.join("notes.json");
    std::fs::write(&not_genesis, "{\"format\": 1, \"colour\": \"blue\"}").unwrap();
    let args =
        ["genesis", "add-validator", not_genesis.to_str().unwrap(), "node-9", "--org", "samr", "--public-key", fresh];
    refused(&not_genesis, &args, "notes.json");
    // The genesis still checks after all the refusals.
    assert_eq!(ok_json(&["genesis", "check", g])["hash"], parsed.hash().to_hex());
}
