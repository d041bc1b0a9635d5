//! `veritrace import` against a real network (3 validators, 1 observer): a JSON-lines file
//! of record bodies goes in batch by batch, a million-code range as one record; a file
//! with a malformed line is refused whole, naming the line, before anything is sent; a
//! record the ledger rejects is named by its line in the summary, with exit code 3.
//!
//! One network for the whole file: the steps run in order in one test, each a function.

mod common;

use std::path::{Path, PathBuf};

use common::{Net, item, json_of, lot, nutri_gtin, sscc, text, veritrace};
use serde_json::{Value, json};

#[test]
fn import_against_a_network() {
    let net = Net::start();
    a_file_with_a_million_code_range_goes_in_as_one_record_per_line(&net);
    a_file_with_a_malformed_line_is_refused_whole(&net);
    records_the_ledger_rejects_are_named_by_line(&net);
}

/// The range every step uses: a million codes of lot M1.
const RANGE_COUNT: u64 = 1_000_000;

fn range_issue() -> Value {
    json!({"issue_codes": {
        "product": {"gtin": nutri_gtin(7).to_string(), "name": "Infant formula stage 2", "standard": "GB 10765-2021"},
        "lot": "M1",
        "production_date": "2026-02-01",
        "expiry_date": "2028-01-31",
        "codes": {"range": {"prefix": "M1-", "start": 0, "count": RANGE_COUNT, "width": 7}},
        "factory": "Melbourne",
    }})
}

/// Writes `lines` (each a JSON value, or raw text) as a JSON-lines file in the network's
/// directory.
fn write_lines(net: &Net, name: &str, lines: &[String]) -> PathBuf {
    let path = net.dir().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `veritrace import FILE --node ADDR(node-2) --key nutri --as nutri [extra...]`.
fn import(net: &Net, file: &Path, extra: &[&str]) -> std::process::Output {
    let key = net.key("nutri");
    let addr = net.addr("node-2");
    let mut args =
        vec!["import", file.to_str().unwrap(), "--node", &addr, "--key", key.to_str().unwrap(), "--as", "nutri"];
    args.extend(extra);
    veritrace(&args)
}

fn log_size(net: &Net) -> u64 {
    net.query_ok("node-1", &["status"])["log_size"].as_u64().unwrap()
}

fn a_file_with_a_million_code_range_goes_in_as_one_record_per_line(net: &Net) {
    let gtin = nutri_gtin(7);
    let g = gtin.to_string();
    let lines = [
        range_issue(),
        json!({"certify_conformity": {"gtin": g, "lot": "M1", "certificate_no": "COC-M1", "standard": "GB 10765-2021"}}),
        json!({"issue_codes": {
            "product": {"gtin": g, "name": "Infant formula stage 2"},
            "lot": "M2", "production_date": "2026-02-02", "codes": {"serials": ["M2-1", "M2-2"]},
        }}),
        json!({"aggregate": {"parent": sscc(7), "children": [item(&gtin, "M1-0000000"), item(&gtin, "M1-0000001")]}}),
        json!({"ship": {"to": "logistics", "subjects": [item(&gtin, "M2-1")], "location": "Melbourne"}}),
    ];
    let mut text_lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    // Blank lines are skipped, and do not shift the line numbers of the others.
    text_lines.insert(2, String::new());
    let file = write_lines(net, "good.jsonl", &text_lines);
    let before = log_size(net);

    let o = import(net, &file, &["--batch", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], 5, "{v}");
    assert_eq!(v["accepted"], 5, "{v}");
    assert_eq!(v["rejected"], json!([]), "{v}");
    assert_eq!(v["batches"], 3, "{v}");

    // Every node has applied the last block; the log grew by one record per line, so the
    // million codes are one record.
    net.applied_everywhere(v["height"].as_u64().unwrap());
    assert_eq!(log_size(net), before + 5, "{v}");
    assert_eq!(v["first_log_index"].as_u64().unwrap(), before, "{v}");
    assert_eq!(v["last_log_index"].as_u64().unwrap(), before + 4, "{v}");

    // The last code of the range traces to its issuance and its lot's certificate.
    let code = item(&gtin, "M1-0999999");
    let t = net.query_ok("node-3", &["trace", &code]);
    assert_eq!(t["code"], code.as_str(), "{t}");
    let kinds: Vec<&str> = t["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["issue_codes", "certify_conformity"], "{t}");
    let issued = &t["records"][0]["record"]["record"];
    assert_eq!(issued["author"], "nutri", "{t}");
    assert_eq!(issued["body"]["issue_codes"]["codes"]["range"]["count"], RANGE_COUNT, "{t}");
    let lot_m1 = lot(&gtin, "M1");
    let subjects = t["subjects"].as_array().unwrap();
    let lot_view = subjects.iter().find(|s| s["subject"] == lot_m1.as_str()).unwrap_or_else(|| panic!("{t}"));
    assert_eq!(lot_view["custodian"], "nutri", "{t}");
    // One past the range was never issued.
    let o = net.query("node-3", &["trace", &item(&gtin, "M1-1000000")]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    // The shipped item is in transit; the recall impact of the lot counts the million.
    let t = net.query_ok("node-1", &["trace", &item(&gtin, "M2-1")]);
    assert_eq!(t["subjects"][0]["in_transit_to"], "logistics", "{t}");
    let r = net.query_ok("node-1", &["recall-impact", &lot(&gtin, "M1")]);
    assert_eq!(r["total_units"], RANGE_COUNT, "{r}");
}

fn a_file_with_a_malformed_line_is_refused_whole(net: &Net) {
    let gtin = nutri_gtin(7);
    // The GTIN with a wrong check digit.
    let good = gtin.to_string();
    let last = good.as_bytes()[13] - b'0';
    let bad_gtin = format!("{}{}", &good[..13], (last + 1) % 10);
    let bad_gtin = bad_gtin.as_str();
    let lines = [
        json!({"sell": {"subjects": [item(&gtin, "M1-0000005")], "channel": "shop"}}).to_string(),
        json!({"sell": {"subjects": [format!("01/{bad_gtin}/21/M1-0000006")]}}).to_string(),
        json!({"sell": {"subjects": [item(&gtin, "M1-0000007")]}}).to_string(),
    ];
    let file = write_lines(net, "bad.jsonl", &lines);
    let before = log_size(net);

    let o = import(net, &file, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("line 2:") && out.contains(bad_gtin) && out.contains("check digit"), "{out}");
    assert!(out.contains("nothing was submitted") && !out.contains("line 1:") && !out.contains("line 3:"), "{out}");

    let o = import(net, &file, &["--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["exit_code"], 2, "{v}");
    assert_eq!(v["bad_line_count"], 1, "{v}");
    assert_eq!(v["bad_lines"][0]["line"], 2, "{v}");
    assert!(v["bad_lines"][0]["error"].as_str().unwrap().contains(bad_gtin), "{v}");

    // Not JSON, and the wrong shape, are named the same way.
    let mut lines = lines.to_vec();
    lines[1] = "{\"sell\": [not json".to_string();
    lines.push(json!({"sel": {"subjects": [item(&gtin, "M1-0000008")]}}).to_string());
    let file = write_lines(net, "bad2.jsonl", &lines);
    let o = import(net, &file, &["--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v = json_of(&o);
    let bad: Vec<u64> = v["bad_lines"].as_array().unwrap().iter().map(|b| b["line"].as_u64().unwrap()).collect();
    assert_eq!(bad, [2, 4], "{v}");
    assert!(v["bad_lines"][0]["error"].as_str().unwrap().contains("[not json"), "{v}");
    assert!(v["bad_lines"][1]["error"].as_str().unwrap().contains("`sel`"), "{v}");

    // Nothing reached the ledger.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(log_size(net), before);
    let t = net.query_ok("node-1", &["trace", &item(&gtin, "M1-0000005")]);
    assert!(t["records"].as_array().unwrap().iter().all(|r| r["kind"] != "sell"), "{t}");
}

fn records_the_ledger_rejects_are_named_by_line(net: &Net) {
    let gtin = nutri_gtin(7);
    let lines = [
        json!({"sell": {"subjects": [item(&gtin, "M1-0000009")], "channel": "shop"}}).to_string(),
        // The range again: its codes are issued already.
        range_issue().to_string(),
        json!({"sell": {"subjects": [item(&gtin, "M1-0000010")]}}).to_string(),
    ];
    let file = write_lines(net, "rejected.jsonl", &lines);
    let before = log_size(net);
    let o = import(net, &file, &["--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{v}");
    assert_eq!(rejected[0]["line"], 2, "{v}");
    assert_eq!(rejected[0]["kind"], "issue_codes", "{v}");
    assert_eq!(rejected[0]["reject_reason"], "already_issued", "{v}");
    net.applied_everywhere(v["height"].as_u64().unwrap());
    assert_eq!(log_size(net), before + 2);

    // The human summary names the line too.
    let file = write_lines(net, "again.jsonl", &[String::new(), range_issue().to_string()]);
    let o = import(net, &file, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("0 of 1 records accepted, 1 rejected:"), "{out}");
    assert!(out.contains("line 2: issue_codes record ") && out.contains("already_issued"), "{out}");

    // A node that cannot be reached: exit 4, and the import says nothing is known to be in.
    let key = net.key("nutri");
    let o = veritrace(&[
        "import",
        file.to_str().unwrap(),
        "--node",
        "127.0.0.1:1",
        "--key",
        key.to_str().unwrap(),
        "--as",
        "nutri",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("127.0.0.1:1"), "{}", text(&o));
}
