//! Every record command against a real network (3 validators, 1 observer): each kind
//! accepted, rules violated and rejected with their reason and exit code 3, bad input named
//! with exit code 2 before anything is sent, an unreachable node with exit code 4.
//!
//! One network for the whole file: the steps run in order in one test, each a function.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Net, item, json_of, lot, nutri_gtin, sscc, text, veritrace};

#[test]
fn record_commands_against_a_network() {
    let net = Net::start();
    issue_certify_inspect(&net);
    custody_through_a_logistic_unit(&net);
    custody_of_a_lot_and_regulatory_actions(&net);
    rules_violated_are_rejected_with_their_reason(&net);
    governance_with_co_signing_regulators(&net);
    bad_input_is_named_before_anything_is_sent(&net);
    validators_added_and_removed(&net);
}

fn issue_certify_inspect(net: &Net) {
    let gtin = nutri_gtin(1);
    let g = gtin.to_string();
    // A range, through a follower or the observer (forwarded to the leader).
    let r = net.accepted(
        "node-4",
        "nutri",
        &[
            "issue",
            "--gtin",
            &g,
            "--lot",
            "A1",
            "--production-date",
            "2026-01-10",
            "--expiry-date",
            "2028-01-09",
            "--name",
            "Infant formula stage 1",
            "--standard",
            "GB 10765-2021",
            "--serials",
            "A1-",
            "--width",
            "4",
            "--from",
            "0",
            "--count",
            "100",
        ],
    );
    assert_eq!(r["kind"], "issue_codes");
    // A list of serials; a short GTIN-13 form is accepted and padded.
    let gtin13 = &g[1..];
    net.accepted(
        "node-2",
        "nutri",
        &[
            "issue",
            "--gtin",
            gtin13,
            "--lot",
            "A2",
            "--production-date",
            "2026-01-11",
            "--name",
            "Infant formula",
            "--serial",
            "X-1",
            "--serial",
            "X-2",
        ],
    );
    let r = net.accepted(
        "node-1",
        "nutri",
        &["certify", "--gtin", &g, "--lot", "A1", "--certificate-no", "COC-2026-001", "--standard", "GB 10765-2021"],
    );
    assert_eq!(r["kind"], "certify_conformity");
    let doc = net.dir().join("report-a1.pdf");
    std::fs::write(&doc, b"%PDF-1.7 inspection report A1").unwrap();
    let r = net.accepted(
        "node-3",
        "ccic-au",
        &[
            "inspect",
            "--report-no",
            "CCIC-2026-0001",
            "--standard",
            "GB 10765-2021",
            "--result",
            "pass",
            "--item",
            "Protein:1.8-3.0 g/100 kcal:2.1 g/100 kcal:pass",
            "--item",
            "Melamine:<= 1 mg/kg:ND:pass",
            "--document",
            doc.to_str().unwrap(),
            &lot(&gtin, "A1"),
        ],
    );
    assert_eq!(r["kind"], "inspection");
    // The same report on a code, by digest.
    let digest = blake3::hash(b"another report").to_hex().to_string();
    net.accepted(
        "node-1",
        "ccic-au",
        &[
            "inspect",
            "--report-no",
            "CCIC-2026-0002",
            "--standard",
            "GB 10765-2021",
            "--result",
            "fail",
            "--item",
            "Vitamin A:60-180 ug/100 kcal:41 ug/100 kcal:fail",
            "--digest",
            &digest,
            &item(&gtin, "A1-0099"),
        ],
    );
}

fn custody_through_a_logistic_unit(net: &Net) {
    let gtin = nutri_gtin(1);
    let unit = sscc(1);
    let (a, b) = (item(&gtin, "A1-0000"), item(&gtin, "A1-0001"));
    let r = net.accepted("node-1", "nutri", &["aggregate", "--parent", &unit, &a, &b]);
    assert_eq!(r["kind"], "aggregate");
    let unit_path = format!("00/{unit}");
    let r = net.accepted("node-2", "nutri", &["ship", "--to", "logistics", "--location", "Melbourne", &unit_path]);
    assert_eq!(r["kind"], "ship");
    let r = net.accepted("node-3", "logistics", &["receive", "--from", "nutri", &unit_path]);
    assert_eq!(r["kind"], "receive");
    let r = net.accepted("node-1", "logistics", &["disaggregate", "--parent", &unit_path, &a, &b]);
    assert_eq!(r["kind"], "disaggregate");
    let r = net.accepted("node-1", "logistics", &["sell", "--channel", "direct", &a]);
    assert_eq!(r["kind"], "sell");
}

fn custody_of_a_lot_and_regulatory_actions(net: &Net) {
    let gtin = nutri_gtin(1);
    let a1 = lot(&gtin, "A1");
    net.accepted("node-1", "nutri", &["ship", "--to", "importer", &a1]);
    net.accepted("node-2", "importer", &["receive", "--from", "nutri", &a1]);
    let actions = [
        ("clear", "customs-pingtan", "declaration checked"),
        ("hold", "samr", "inspection pending"),
        ("release", "samr", "inspection passed"),
        ("recall", "samr", "vitamin A below the standard"),
    ];
    for (cmd, org, reason) in actions {
        let r = net.accepted("node-1", org, &[cmd, "--reason", reason, "--reference", "CASE-7", &a1]);
        assert_eq!(r["kind"], "regulatory", "{cmd}");
    }
    // The human form names the log index.
    let key = net.key("samr");
    let addr = net.addr("node-2");
    let o = veritrace(&[
        "hold",
        "--reason",
        "lot two too",
        &lot(&gtin, "A2"),
        "--node",
        &addr,
        "--key",
        key.to_str().unwrap(),
        "--as",
        "samr",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("accepted: regulatory record ") && out.contains("at log index"), "{out}");
}

fn rules_violated_are_rejected_with_their_reason(net: &Net) {
    let gtin = nutri_gtin(1);
    // A recalled lot does not ship.
    let o = net.signed("node-1", "importer", &["ship", "--to", "shop", &lot(&gtin, "A1")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!((v["ok"].clone(), v["status"].clone()), (false.into(), "rejected".into()), "{v}");
    assert_eq!((v["reject_code"].as_u64(), v["reject_reason"].as_str()), (Some(12), Some("subject_recalled")), "{v}");
    assert_eq!(v["record_id"].as_str().map(str::len), Some(64), "{v}");
    // Only the custodian ships (human output: code, name, message).
    let key = net.key("shop");
    let addr = net.addr("node-3");
    let o = veritrace(&[
        "ship",
        "--to",
        "importer",
        &item(&gtin, "A1-0050"),
        "--node",
        &addr,
        "--key",
        key.to_str().unwrap(),
        "--as",
        "shop",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("rejected: ship record ") && out.contains(": 9 not_custodian: "), "{out}");
    // A code is issued once, ever.
    let o = net.signed(
        "node-2",
        "nutri",
        &[
            "issue",
            "--gtin",
            gtin.as_str(),
            "--lot",
            "A3",
            "--production-date",
            "2026-02-01",
            "--name",
            "Formula",
            "--serials",
            "A1-",
            "--width",
            "4",
            "--from",
            "50",
            "--count",
            "10",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(json_of(&o)["reject_reason"], "already_issued");
    // A record timed far from the block's time.
    let o = net.signed("node-1", "samr", &["hold", "--reason", "old", "--time-ms", "1000", &lot(&gtin, "A2")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(json_of(&o)["reject_reason"], "time_out_of_window");
    // Signed with another organisation's key.
    let key = net.key("importer");
    let o = veritrace(&[
        "sell",
        &item(&gtin, "A1-0070"),
        "--node",
        &net.addr("node-1"),
        "--key",
        key.to_str().unwrap(),
        "--as",
        "nutri",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("signature"), "{}", text(&o));
}

fn governance_with_co_signing_regulators(net: &Net) {
    let dir = net.dir();
    let newco_key = dir.join("newco.key");
    let o = veritrace(&["key", "gen", "--out", newco_key.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let public = json_of(&o)["public_key"].as_str().unwrap().to_string();
    let approve = format!("{}:customs-pingtan", net.key("customs-pingtan").display());
    let add =
        ["gov", "add-org", "newco", "--name", "New Cold Chain Co.", "--role", "logistics", "--public-key", &public];
    // One regulator is not the quorum of two.
    let o = net.signed("node-1", "samr", &add);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(json_of(&o)["reject_reason"], "quorum_not_met");
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().map(|s| s.to_string()).chain(["--approve".to_string(), approve.clone()]).collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = net.accepted("node-2", "samr", &refs);
        assert_eq!(r["kind"], "governance", "{args:?}");
        // The next submission may arrive at another node: it must know the change.
        net.applied_everywhere(r["height"].as_u64().unwrap());
    };
    run(with(&add));
    let k2 = dir.join("newco-k2.key");
    let o = veritrace(&["key", "gen", "--out", k2.to_str().unwrap(), "--json"]);
    let public2 = json_of(&o)["public_key"].as_str().unwrap().to_string();
    run(with(&["gov", "add-key", "newco", "--new-key-id", "k2", "--public-key", &public2]));
    run(with(&[
        "gov",
        "update-org",
        "newco",
        "--name",
        "New Cold Chain Co.",
        "--role",
        "logistics",
        "--role",
        "platform",
    ]));
    // The new organisation can act with its new key...
    let gtin = nutri_gtin(1);
    let ship_as_newco = || {
        veritrace(&[
            "ship",
            "--to",
            "shop",
            &lot(&gtin, "A2"),
            "--node",
            &net.addr("node-1"),
            "--key",
            k2.to_str().unwrap(),
            "--as",
            "newco",
            "--key-id",
            "k2",
            "--json",
        ])
    };
    let o = ship_as_newco();
    // ...and is refused on the rules (it holds nothing), not on its key.
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let reason = json_of(&o)["reject_reason"].as_str().map(str::to_string);
    assert!(
        reason.as_deref().is_some_and(|r| !["key_not_valid", "bad_signature", "unknown_organisation"].contains(&r)),
        "{}",
        text(&o)
    );
    run(with(&["gov", "revoke-key", "newco", "k2"]));
    let o = ship_as_newco();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("key"), "{}", text(&o));
}

fn bad_input_is_named_before_anything_is_sent(net: &Net) {
    let key = net.key("nutri");
    let key = key.to_str().unwrap();
    let addr = net.addr("node-1");
    let common = ["--node", addr.as_str(), "--key", key];
    let issue = ["issue", "--lot", "B", "--name", "x", "--as", "nutri"];
    let good = ["--gtin", "09312345000012"];
    let zeros = "0".repeat(64);
    let cases: [(Vec<&str>, &str); 6] = [
        (
            [&issue[..], &["--gtin", "09312345000013", "--production-date", "2026-01-01", "--serial", "1"]].concat(),
            "09312345000013",
        ),
        ([&issue[..], &good, &["--production-date", "2026-13-01", "--serial", "1"]].concat(), "2026-13-01"),
        (
            [
                &issue[..],
                &good,
                &["--production-date", "2026-01-01", "--serials", "P", "--width", "2", "--count", "500"],
            ]
            .concat(),
            "500",
        ),
        (vec!["ship", "--as", "nutri", "--to", "importer", "01/09312345000019/21/X"], "09312345000019"),
        (
            vec![
                "inspect",
                "--as",
                "ccic-au",
                "--report-no",
                "R",
                "--standard",
                "S",
                "--result",
                "maybe",
                "--digest",
                &zeros,
                "ecode:1234567890123456",
            ],
            "maybe",
        ),
        (vec!["sell", "--as", "Not-An-Org", "01/09312345000012/21/A1-0002"], "Not-An-Org"),
    ];
    for (cmd, named) in cases {
        let mut args = cmd.clone();
        args.extend(common);
        let o = veritrace(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", text(&o));
        assert!(text(&o).contains(named), "{cmd:?} does not name {named:?}: {}", text(&o));
    }
    // A missing key file, in JSON.
    let o = veritrace(&[
        "sell",
        "01/09312345000012/21/A1-0002",
        "--node",
        &addr,
        "--key",
        "/nonexistent/k.key",
        "--as",
        "nutri",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("/nonexistent/k.key"), "{v}");
    // A usage error in JSON.
    let o = veritrace(&["ship", "--json", "--node", &addr]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["ok"], false);
    // Nobody listens: exit 4, naming the address.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap().to_string();
    drop(free);
    let o = veritrace(&["sell", "01/09312345000012/21/A1-0002", "--node", &dead, "--key", key, "--as", "nutri"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains(&dead), "{}", text(&o));
    let o = veritrace(&["status", "--node", "https://example.invalid:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

fn validators_added_and_removed(net: &Net) {
    // The observer's node (run by the importer) is promoted, then removed again.
    let o = veritrace(&["key", "show", net.node_key("node-4").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let public = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let approve = format!("{}:customs-pingtan", net.key("customs-pingtan").display());
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
    let r = net.accepted(
        "node-1",
        "samr",
        &["gov", "add-validator", "node-4", "--org", "importer", "--public-key", &public, "--approve", &approve],
    );
    assert_eq!(r["kind"], "governance");
    let r = net.accepted(
        "node-1",
        "samr",
        &["gov", "remove-validator", "node-4", "--approve", &approve, "--nonce", &stamp],
    );
    assert_eq!(r["kind"], "governance");
    // Removing what is not a validator conflicts with the state.
    let o = net.signed("node-1", "samr", &["gov", "remove-validator", "node-9", "--approve", &approve]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(json_of(&o)["reject_reason"], "conflict");
}
