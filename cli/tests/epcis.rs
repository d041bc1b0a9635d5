//! EPCIS 2.0 through the `veritrace` binary and real networks (docs/epcis.md): a tin's
//! whole history played on one network (every record kind that makes an event), exported
//! with `epcis export` and from a node's HTTP endpoint, both valid against GS1's EPCIS 2.0
//! JSON schema; imported into a fresh network signed by the organisations' keys there,
//! exported again: the same events but for their ids and times. GS1's example documents
//! are refused with each event's index and reason, and nothing is submitted.
//!
//! GS1's files are read from `shared/epcis/` beside the clone; the schema is checked with
//! Python's jsonschema through `scripts/epcis_validate.py`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Net, item, json_of, lot, nutri_gtin, sscc, text};
use serde_json::Value;
use veritrace_ledger::testkit::{assert_valid_epcis, shared_epcis_dir};

/// Organisations that make the history, each with its key on the network.
const MAKERS: [&str; 6] = ["nutri", "ccic-au", "importer", "shop", "samr", "customs-pingtan"];

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The events of a document without what differs between two ledgers holding the same
/// history: event ids and times, record ids and log indexes.
fn comparable(doc: &Value) -> Vec<Value> {
    let mut events = doc["epcisBody"]["eventList"].as_array().expect("an event list").clone();
    for e in &mut events {
        let o = e.as_object_mut().unwrap();
        for k in ["eventID", "eventTime", "veritrace:recordId", "veritrace:logIndex"] {
            assert!(o.remove(k).is_some(), "every event has {k}: {e:?}");
        }
    }
    events
}

/// An HTTP response: status, `Content-Type`, body.
struct Resp {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` with an `Accept` header, on a blocking stream with timeouts.
fn get(addr: SocketAddr, path: &str, accept: &str) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, mut body) = raw.split_once("\r\n\r\n").expect("end of headers");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut dechunked = String::new();
    if header("transfer-encoding").contains("chunked") {
        loop {
            let (size, rest) = body.split_once("\r\n").expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            dechunked.push_str(&rest[..size]);
            body = &rest[size + 2..];
        }
        body = &dechunked;
    }
    Resp { status, content_type: header("content-type"), body: body.to_string() }
}

/// `veritrace epcis import FILE` into `node` signed by `orgs` (their key files on `net`).
fn import(net: &Net, node: &str, file: &Path, orgs: &[&str]) -> Output {
    let addr = net.addr(node);
    let keys: Vec<String> = orgs.iter().map(|o| net.key(o).to_str().unwrap().to_string()).collect();
    let mut args = vec!["epcis", "import", file.to_str().unwrap(), "--node", &addr, "--json"];
    for (o, k) in orgs.iter().zip(&keys) {
        args.extend(["--key", k, "--as", o]);
    }
    common::veritrace(&args)
}

fn height(net: &Net) -> u64 {
    net.query_ok("node-1", &["status"])["height"].as_u64().unwrap()
}

/// Plays the history of tin `E-0042` on `net`: issued in a range of lot E1, certified,
/// inspected (failed), packed on a pallet with another tin, shipped, received and unpacked by
/// the importer, its lot held and released, cleared by customs, shipped to and received by
/// the shop, sold, and its lot recalled.
fn play_history(net: &Net) -> String {
    let gtin = nutri_gtin(7);
    let g = gtin.to_string();
    let (tin, other, lot1, unit) = (item(&gtin, "E-0042"), item(&gtin, "E-0043"), lot(&gtin, "E1"), sscc(77));
    let pallet = format!("00/{unit}");
    let digest = blake3::hash(b"inspection report E1").to_hex().to_string();
    let steps: Vec<(&str, Vec<&str>)> = vec![
        (
            "nutri",
            vec![
                "issue",
                "--gtin",
                &g,
                "--lot",
                "E1",
                "--production-date",
                "2026-01-10",
                "--expiry-date",
                "2028-01-09",
                "--name",
                "Infant formula stage 2, 800 g",
                "--model",
                "S2-800",
                "--spec",
                "800 g tin",
                "--standard",
                "GB 10765-2021",
                "--factory",
                "Melbourne, VIC",
                "--serials",
                "E-",
                "--width",
                "4",
                "--from",
                "0",
                "--count",
                "100",
            ],
        ),
        (
            "nutri",
            vec![
                "certify",
                "--gtin",
                &g,
                "--lot",
                "E1",
                "--certificate-no",
                "COC-2026-E1",
                "--standard",
                "GB 10765-2021",
                "--statement",
                "factory inspection of lot E1",
            ],
        ),
        (
            "ccic-au",
            vec![
                "inspect",
                "--report-no",
                "CCIC-2026-E1",
                "--standard",
                "GB 10765-2021",
                "--result",
                "fail",
                "--item",
                "Protein:1.8-3.0 g/100 kcal:2.1 g/100 kcal:pass",
                "--item",
                "Melamine:<= 1 mg/kg:2.4 mg/kg:fail",
                "--digest",
                &digest,
                "--valid-until-ms",
                "1798761600123",
                &tin,
                &lot1,
            ],
        ),
        ("nutri", vec!["aggregate", "--parent", &unit, &tin, &other]),
        ("nutri", vec!["ship", "--to", "importer", "--location", "Port of Melbourne", &pallet]),
        ("importer", vec!["receive", "--from", "nutri", &pallet]),
        ("importer", vec!["disaggregate", "--parent", &unit, &tin, &other]),
        ("samr", vec!["hold", "--reason", "melamine above the limit", "--reference", "SAMR-2026-9", &lot1]),
        ("samr", vec!["release", "--reason", "retest passed", &lot1]),
        ("customs-pingtan", vec!["clear", "--reason", "declared", "--reference", "PT-2026-88", &tin]),
        ("importer", vec!["ship", "--to", "shop", &tin]),
        ("shop", vec!["receive", "--from", "importer", "--location", "Fuzhou", &tin]),
        ("shop", vec!["sell", "--channel", "shop front", &tin]),
        ("samr", vec!["recall", "--reason", "melamine above the limit", "--reference", "SAMR-2026-10", &lot1]),
    ];
    for (i, (org, cmd)) in steps.iter().enumerate() {
        let node = format!("node-{}", i % 4 + 1);
        net.accepted(&node, org, cmd);
    }
    tin
}

#[test]
fn epcis_round_trip_between_two_networks() {
    let dir = tempfile::tempdir().unwrap();
    let first_file = dir.path().join("first.jsonld");

    let first = {
        let net = Net::start();
        let tin = play_history(&net);
        let addr = net.addr("node-3");
        let out = common::veritrace(&[
            "epcis",
            "export",
            &tin,
            "--node",
            &addr,
            "-o",
            first_file.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let v = json_of(&out);
        assert_eq!((v["ok"].as_bool(), v["events"].as_u64()), (Some(true), Some(14)), "{v}");
        assert_valid_epcis(&first_file);
        let first = read_json(&first_file);
        assert_eq!(first["veritrace:code"], tin);
        let kinds: Vec<&str> = first["epcisBody"]["eventList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["veritrace:kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "issue_codes",
                "certify_conformity",
                "inspection",
                "aggregate",
                "ship",
                "receive",
                "disaggregate",
                "regulatory",
                "regulatory",
                "regulatory",
                "ship",
                "receive",
                "sell",
                "regulatory"
            ]
        );

        // Without -o the document goes to standard output.
        let out = common::veritrace(&["epcis", "export", &tin, "--node", &addr]);
        assert!(out.status.success(), "{}", text(&out));
        let printed: Value = serde_json::from_slice(&out.stdout).expect("the document on stdout");
        assert_eq!(comparable(&printed), comparable(&first));

        // The node's HTTP endpoint: the same events, from the bundle at the latest checkpoint.
        net.checkpoint_covering(height(&net));
        let http = net.net.http_addr("node-2").unwrap();
        let r = get(http, &format!("/{tin}/epcis"), "*/*");
        assert_eq!((r.status, r.content_type.as_str()), (200, "application/ld+json"), "{}", r.body);
        let served: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(served["epcisBody"], first["epcisBody"], "the CLI's and the node's events are the same");
        let served_file = dir.path().join("served.jsonld");
        std::fs::write(&served_file, &r.body).unwrap();
        assert_valid_epcis(&served_file);
        let h = served["veritrace:height"].as_u64().unwrap();
        let at = get(http, &format!("/{tin}/epcis?height={h}"), "*/*");
        assert_eq!(at.body, r.body, "at a named height: the same bytes");
        let negotiated = get(http, &format!("/{tin}?17=280109"), "application/ld+json");
        assert_eq!((negotiated.status, negotiated.content_type.as_str()), (200, "application/ld+json"));
        assert_eq!(negotiated.body, r.body);
        let page = get(http, &format!("/{tin}"), "text/html");
        assert!(page.body.contains(&format!("/{tin}/epcis?height=")), "the page links to its EPCIS document");
        let unknown = get(http, &format!("/{}/epcis", item(&nutri_gtin(7), "NEVER")), "application/ld+json");
        assert_eq!((unknown.status, unknown.content_type.as_str()), (404, "application/json"), "{}", unknown.body);
        first
    };

    // A fresh network: the same organisations, other keys.
    let net = Net::start();
    let before = height(&net);
    for example in [
        "Example_9.6.1-ObjectEvent.jsonld",
        "Example_9.6.2-ObjectEvent.jsonld",
        "Example_9.6.3-AggregationEvent.jsonld",
    ] {
        let out = import(&net, "node-1", &shared_epcis_dir().join(example), &["nutri"]);
        assert_eq!(out.status.code(), Some(2), "{example}: {}", text(&out));
        let v = json_of(&out);
        assert!(v["error"].as_str().unwrap().contains("nothing was submitted"), "{v}");
        let rejected = v["rejected"].as_array().unwrap();
        let indexes: Vec<u64> = rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        let want: &[u64] = if example.contains("9.6.1") { &[0, 1] } else { &[0] };
        assert_eq!(indexes, want, "{v}");
        assert!(rejected.iter().all(|r| r["event_id"].as_str().unwrap().starts_with("ni:///sha-256;")), "{v}");
    }
    // Signers missing: the events of organisations without a key are named, nothing sent.
    let out = import(&net, "node-1", &first_file, &["nutri"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v = json_of(&out);
    let rejected: Vec<(u64, &str)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(rejected[0], (2, "ccic-au made it; give --key FILE --as ccic-au to sign it"));
    assert_eq!(rejected.len(), 10, "{v}");
    assert_eq!(height(&net), before, "nothing was submitted");

    let out = import(&net, "node-4", &first_file, &MAKERS);
    assert!(out.status.success(), "{}", text(&out));
    let v = json_of(&out);
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 14, "{v}");
    for (r, e) in records.iter().zip(first["epcisBody"]["eventList"].as_array().unwrap()) {
        assert_eq!(r["source_record"], e["veritrace:recordId"]);
        assert_eq!(r["author"], e["veritrace:author"]);
        assert_ne!(r["record_id"], e["veritrace:recordId"]);
    }

    let tin = first["veritrace:code"].as_str().unwrap();
    let second_file = dir.path().join("second.jsonld");
    let addr = net.addr("node-2");
    let out = common::veritrace(&["epcis", "export", tin, "--node", &addr, "-o", second_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_valid_epcis(&second_file);
    let second = read_json(&second_file);
    assert_eq!(comparable(&first), comparable(&second), "the same events but for their ids and times");

    // Importing the same document again: the codes were issued already. The first event is
    // refused by the ledger (exit 3) and the rest is not submitted.
    let out = import(&net, "node-1", &first_file, &MAKERS);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!((v["index"].as_u64(), v["reject_reason"].as_str()), (Some(0), Some("already_issued")), "{v}");
    assert_eq!(v["records"], serde_json::json!([]));
}
