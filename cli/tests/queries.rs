//! Reading a real network (3 validators, 1 observer) through the CLI: status, receipts,
//! traces (paged), recall impact, an organisation's records, checkpoints, inclusion proofs,
//! bundles exported and verified offline (and three edited copies refused for three
//! different reasons), and the audit monitor, including a fork it must catch.
//!
//! One network for the whole file: the steps run in order in one test, each a function.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Net, WAIT, item, json_of, lot, nutri_gtin, text, veritrace};
use serde_json::Value;
use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::org::NodeId;

/// Record ids and heights of the story the steps read back.
struct Story {
    issue_q1: Value,
    inspect_q1: Value,
    last_height: u64,
}

#[test]
fn query_commands_against_a_network() {
    let net = Net::start();
    let story = write_a_story(&net);
    status_and_receipts(&net, &story);
    trace_pages_through_the_whole_history(&net, &story);
    recall_impact_and_records_by_org(&net);
    checkpoints_and_inclusion_proofs(&net, &story);
    bundles_verify_offline_and_edited_copies_do_not(&net, &story);
    audit_remembers_checks_follows_and_catches_a_fork(&net);
}

fn write_a_story(net: &Net) -> Story {
    let gtin = nutri_gtin(2);
    let g = gtin.to_string();
    let issue_q1 = net.accepted(
        "node-1",
        "nutri",
        &[
            "issue",
            "--gtin",
            &g,
            "--lot",
            "Q1",
            "--production-date",
            "2026-03-01",
            "--name",
            "Formula stage 2",
            "--serials",
            "Q1-",
            "--width",
            "3",
            "--count",
            "50",
        ],
    );
    net.accepted(
        "node-2",
        "nutri",
        &[
            "issue",
            "--gtin",
            &g,
            "--lot",
            "Q2",
            "--production-date",
            "2026-03-02",
            "--name",
            "Formula stage 2",
            "--serials",
            "Q2-",
            "--width",
            "3",
            "--count",
            "10",
        ],
    );
    net.accepted(
        "node-3",
        "nutri",
        &["certify", "--gtin", &g, "--lot", "Q1", "--certificate-no", "COC-Q1", "--standard", "GB 10765-2021"],
    );
    let inspect_q1 = net.accepted(
        "node-1",
        "ccic-au",
        &[
            "inspect",
            "--report-no",
            "R-Q1",
            "--standard",
            "GB 10765-2021",
            "--result",
            "fail",
            "--item",
            "Vitamin A:60-180:41:fail",
            "--digest",
            &"ab".repeat(32),
            &lot(&gtin, "Q1"),
        ],
    );
    // Item 3 leaves the lot: shipped on its own to the importer, who receives it.
    net.accepted("node-2", "nutri", &["ship", "--to", "importer", &item(&gtin, "Q1-003")]);
    net.accepted("node-4", "importer", &["receive", "--from", "nutri", &item(&gtin, "Q1-003")]);
    // The rest of the lot goes to the carrier (in transit), then a regulator holds it.
    net.accepted("node-1", "nutri", &["ship", "--to", "logistics", &lot(&gtin, "Q1")]);
    let last = net.accepted("node-1", "samr", &["hold", "--reason", "vitamin A", &lot(&gtin, "Q1")]);
    // Every node has applied the story and holds a checkpoint over it before anyone reads.
    net.checkpoint_covering(last["height"].as_u64().unwrap());
    Story { issue_q1, inspect_q1, last_height: last["height"].as_u64().unwrap() }
}

fn status_and_receipts(net: &Net, story: &Story) {
    for node in ["node-1", "node-4"] {
        let s = net.query_ok(node, &["status"]);
        assert_eq!(s["ledger_id"], net.net.ledger_id().as_str(), "{s}");
        assert_eq!(s["node_id"], node);
        assert_eq!(s["voters"].as_array().unwrap().len(), 3, "{s}");
    }
    let s = net.query_ok("node-1", &["status"]);
    assert!(s["height"].as_u64().unwrap() >= story.last_height, "{s}");
    let id = story.issue_q1["record_id"].as_str().unwrap();
    let r = net.query_ok("node-3", &["receipt", id]);
    assert_eq!((r["status"].as_str(), r["log_index"].clone()), (Some("accepted"), story.issue_q1["log_index"].clone()));
    let o = net.query("node-3", &["receipt", &"00".repeat(32)]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let o = net.query("node-3", &["receipt", "xyz"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("xyz"), "{}", text(&o));
}

fn trace_pages_through_the_whole_history(net: &Net, story: &Story) {
    let gtin = nutri_gtin(2);
    let code = item(&gtin, "Q1-003");
    // Digital Link URI form; pages of 2 records must give what one page gives.
    let uri = format!("https://id.example.com/01/{gtin}/21/Q1-003");
    let whole = net.query_ok("node-2", &["trace", &uri]);
    let paged = net.query_ok("node-2", &["trace", &code, "--page-size", "2"]);
    assert_eq!(whole["code"], code.as_str());
    assert_eq!(whole["records"], paged["records"], "paging changed the history");
    let records = whole["records"].as_array().unwrap();
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    // The lot's history (issue, certify, inspect, ship of the lot, hold) and the item's own
    // (ship, receive), merged in log order; the other lot's issuance is not there.
    assert_eq!(
        kinds,
        ["issue_codes", "certify_conformity", "inspection", "ship", "receive", "ship", "regulatory"],
        "{whole}"
    );
    let indexes: Vec<u64> = records.iter().map(|r| r["log_index"].as_u64().unwrap()).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    assert_eq!(records[2]["record_id"], story.inspect_q1["record_id"]);
    assert_eq!(records[2]["record"]["record"]["body"]["inspection"]["result"], "fail");
    let subjects = whole["subjects"].as_array().unwrap();
    assert_eq!(subjects[0]["subject"], code.as_str());
    assert_eq!(subjects[0]["custodian"], "importer", "{whole}");
    assert_eq!(subjects[1]["subject"], lot(&gtin, "Q1"));
    // The item is held through its lot.
    assert_eq!(whole["effective_status"], "held", "{whole}");
    // Human form: the subjects and a line per record.
    let o = veritrace(&["trace", &code, "--node", &net.addr("node-3")]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("history, 7 records") && out.contains("inspection report R-Q1"), "{out}");
    // A code never issued.
    let o = net.query("node-1", &["trace", &item(&gtin, "Z-1")]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
}

fn recall_impact_and_records_by_org(net: &Net) {
    let gtin = nutri_gtin(2);
    let r = net.query_ok("node-1", &["recall-impact", &lot(&gtin, "Q1")]);
    assert_eq!(r["total_units"], 49 + 1, "{r}");
    let holdings = r["holdings"].as_array().unwrap();
    let held_by = |org: &str| {
        holdings.iter().filter(|h| h["custodian"] == org).map(|h| h["units"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!((held_by("nutri") + held_by("logistics"), held_by("importer")), (49, 1), "{r}");
    let o = net.query("node-1", &["recall-impact", &item(&gtin, "Q1-001")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let all = net.query_ok("node-1", &["records", "--org", "nutri"]);
    let list = all["records"].as_array().unwrap();
    assert!(list.len() >= 5, "{all}");
    assert!(list.iter().all(|r| r["author"] == "nutri"), "{all}");
    assert!(all["next_from"].is_null(), "{all}");
    let first = net.query_ok("node-1", &["records", "--org", "nutri", "--limit", "2", "--page-size", "1"]);
    assert_eq!(first["records"].as_array().unwrap().len(), 2);
    assert_eq!(first["records"][1], list[1]);
    let next = first["next_from"].as_u64().expect("more to come");
    let rest = net.query_ok("node-1", &["records", "--org", "nutri", "--from", &next.to_string()]);
    assert_eq!(rest["records"][0], list[2]);
    let o = net.query("node-1", &["records", "--org", "nobody"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
}

fn checkpoints_and_inclusion_proofs(net: &Net, story: &Story) {
    let h = net.checkpoint_covering(story.last_height);
    let g = net.genesis_str();
    let cp = net.query_ok("node-2", &["checkpoint", "--genesis", &g]);
    assert!(cp["height"].as_u64().unwrap() >= h, "{cp}");
    assert!(cp["verified_signers"].as_array().unwrap().len() >= 2, "{cp}");
    let at = net.query_ok("node-2", &["checkpoint", "--height", &cp["height"].to_string()]);
    assert_eq!(at["header_hash"], cp["header_hash"]);
    assert!(at["verified_signers"].is_null());

    let id = story.inspect_q1["record_id"].as_str().unwrap();
    let p = net.query_ok("node-4", &["proof", id, "--genesis", &g]);
    assert_eq!(p["log_index"], story.inspect_q1["log_index"], "{p}");
    assert_eq!(p["kind"], "inspection");
    assert!(!p["path"].as_array().unwrap().is_empty(), "{p}");
    assert!(p["verified_signers"].as_array().unwrap().len() >= 2, "{p}");
    let o = net.query("node-4", &["proof", &"11".repeat(32)]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));

    // Against another ledger's genesis the signatures do not verify.
    let other = net.dir().join("other-genesis.json");
    let mut g2 = net.net.genesis().clone();
    g2.validators.truncate(1);
    g2.validators[0].public_key = g2.organisations[0].keys[0].public_key;
    std::fs::write(&other, g2.to_json()).unwrap();
    let o = net.query("node-1", &["checkpoint", "--genesis", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// Exports bundles, verifies them offline, then edits a copy three ways.
fn bundles_verify_offline_and_edited_copies_do_not(net: &Net, story: &Story) {
    let gtin = nutri_gtin(2);
    net.checkpoint_covering(story.last_height);
    let g = net.genesis_str();
    let dir = net.dir();
    let code = item(&gtin, "Q1-003");
    let file = dir.join("q1-003.json");
    let f = file.to_str().unwrap();
    let b = net.query_ok("node-2", &["bundle", &code, "-o", f]);
    assert_eq!(b["records"].as_u64(), Some(7), "{b}");
    let h = b["height"].as_u64().unwrap().to_string();
    let o = veritrace(&["verify", f, "--genesis", &g]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("7 records"), "{}", text(&o));
    // Compact, verified before writing.
    let bin = dir.join("q1-003.bin");
    let b = net.query_ok("node-3", &["bundle", &code, "-o", bin.to_str().unwrap(), "--compact", "--genesis", &g]);
    assert!(b["verdict"]["signers"].as_array().unwrap().len() >= 2, "{b}");
    assert_ne!(std::fs::read(&bin).unwrap().first(), Some(&b'{'));
    let o = veritrace(&["verify", bin.to_str().unwrap(), "--genesis", &g, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json_of(&o)["verdict"]["records"], 7);

    let original: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let records = original["records"].as_array().unwrap().clone();
    // Another code's bundle at the same checkpoint holds a genuine record this one lacks.
    let other_file = dir.join("q2.json");
    net.query_ok("node-2", &["bundle", &lot(&gtin, "Q2"), "-o", other_file.to_str().unwrap(), "--height", &h]);
    let other: Value = serde_json::from_slice(&std::fs::read(&other_file).unwrap()).unwrap();
    let foreign = other["records"][0].clone();
    assert!(!records.contains(&foreign));

    let mut removed = original.clone();
    let gone = removed["records"].as_array_mut().unwrap().remove(1);
    assert_eq!(gone["record"]["record"]["body"].as_object().unwrap().keys().next().unwrap(), "certify_conformity");
    let mut added = original.clone();
    let list = added["records"].as_array_mut().unwrap();
    let at = list.iter().position(|r| r["log_index"].as_u64() > foreign["log_index"].as_u64()).unwrap_or(list.len());
    list.insert(at, foreign);
    let mut altered = original.clone();
    let inspection = altered["records"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["record"]["record"]["body"].get("inspection").is_some())
        .expect("the inspection record");
    inspection["record"]["record"]["body"]["inspection"]["result"] = "pass".into();

    let mut reasons = Vec::new();
    for (name, edited, expect) in [
        ("removed", removed, "which the bundle lacks"),
        ("added", added, "is in no subject's chain"),
        ("altered", altered, "inclusion proof"),
    ] {
        assert_ne!(edited, original);
        let path = dir.join(format!("q1-003-{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
        let o = veritrace(&["verify", path.to_str().unwrap(), "--genesis", &g]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let why = text(&o);
        assert!(why.contains(expect), "{name}: expected {expect:?} in {why}");
        reasons.push(why);
    }
    assert!(reasons[0] != reasons[1] && reasons[1] != reasons[2] && reasons[0] != reasons[2], "{reasons:?}");
}

fn audit_args<'a>(net_addr: &'a str, state: &'a str, genesis: &'a str) -> Vec<&'a str> {
    vec!["audit", "--node", net_addr, "--state", state, "--genesis", genesis, "--json"]
}

/// Submits a record and waits until a complete checkpoint covers it; returns that height.
fn advance(net: &Net, n: u64) -> u64 {
    // Release, then hold again, so the next call's release is valid too.
    let q1 = lot(&nutri_gtin(2), "Q1");
    let nonce = n.to_string();
    net.accepted("node-1", "samr", &["release", "--reason", "checked", "--nonce", &nonce, &q1]);
    let r = net.accepted("node-1", "samr", &["hold", "--reason", "again", "--nonce", &nonce, &q1]);
    net.checkpoint_covering(r["height"].as_u64().unwrap())
}

fn audit_remembers_checks_follows_and_catches_a_fork(net: &Net) {
    let dir = net.dir().join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let (s, g, addr) = (state.to_str().unwrap(), net.genesis_str(), net.addr("node-2"));
    let first = json_of(&veritrace(&audit_args(&addr, s, &g)));
    assert_eq!((first["ok"].clone(), first["status"].clone()), (true.into(), "first".into()), "{first}");
    assert!(state.is_file());
    let h1 = first["height"].as_u64().unwrap();

    let h2 = advance(net, 1);
    assert!(h2 > h1);
    let o = veritrace(&audit_args(&addr, s, &g));
    assert!(o.status.success(), "{}", text(&o));
    let second = json_of(&o);
    assert_eq!(second["status"], "consistent", "{second}");
    assert!(second["height"].as_u64().unwrap() >= h2);
    assert_eq!(second["previous"]["height"], h1);

    // --follow: a new checkpoint is checked as it forms.
    let mut child = Command::new(env!("CARGO_BIN_EXE_veritrace"))
        .args(audit_args(&addr, s, &g))
        .arg("--follow")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn audit --follow");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = rx.recv_timeout(WAIT).expect("audit --follow prints its first check");
    let start: Value = serde_json::from_str(&start).unwrap();
    let h3 = advance(net, 2);
    let deadline = Instant::now() + WAIT;
    let mut followed = None;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        if v["height"].as_u64().unwrap() >= h3 {
            followed = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let followed = followed.expect("audit --follow checked the new checkpoint");
    assert_eq!(followed["status"], "consistent", "{followed}");
    assert!(followed["previous"]["height"].as_u64() >= start["height"].as_u64(), "{followed}");

    // A fork: a quorum of the validators (two of three keys) signs a header at a height
    // already seen, with another log root. The auditor remembers it; the honest node's next
    // checkpoint cannot be consistent with it.
    let cp_json = net.query_ok("node-1", &["checkpoint"]);
    let mut forged: Checkpoint = serde_json::from_value(cp_json["checkpoint"].clone()).unwrap();
    forged.header.log_root = Hash32([7; 32]);
    forged.signatures = ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let key = veritrace_devnet::keyfile::read_key_file(&net.node_key(n)).unwrap();
            forged.header.sign(NodeId::new(*n).unwrap(), &key)
        })
        .collect();
    let forged_state = serde_json::json!({"format": 1, "ledger_id": net.net.ledger_id(), "checkpoint": forged});
    std::fs::write(&state, serde_json::to_string_pretty(&forged_state).unwrap()).unwrap();
    advance(net, 3);
    let o = veritrace(&audit_args(&addr, s, &g));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json_of(&o);
    assert!(v["error"].as_str().unwrap().contains("not an extension"), "{v}");
    assert_eq!(v["evidence"]["remembered"], serde_json::to_value(&forged).unwrap());
    assert!(v["evidence"]["received"]["header"]["height"].as_u64() > Some(forged.header.height), "{v}");
    let file = std::path::PathBuf::from(v["evidence_file"].as_str().unwrap());
    assert_eq!(file.parent(), Some(dir.as_path()));
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written, v["evidence"]);
    // The state was left as it was: the same fork is reported again.
    let o = veritrace(&["audit", "--node", &addr, "--state", s, "--genesis", &g]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("AUDIT FAILED") && text(&o).contains("remembered checkpoint"), "{}", text(&o));
    // A state file edited by hand (a signature that no longer verifies) is refused.
    let mut bad = forged_state.clone();
    bad["checkpoint"]["header"]["height"] = (forged.header.height + 1).into();
    std::fs::write(&state, bad.to_string()).unwrap();
    let o = veritrace(&audit_args(&addr, s, &g));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
