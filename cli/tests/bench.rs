//! `veritrace bench` against a real network (3 validators, 1 observer) for a second or two
//! per run, one record per request, in batches and with the other workloads (issuance,
//! traces, bundles): it runs end to end, every request succeeds, and the report has its
//! documented fields. The figures themselves are never judged here
//! (docs/performance.md). `bench-etcd` refuses a bad endpoint before connecting anywhere.

mod common;

use common::{Net, json_of, text, veritrace};

#[test]
fn bench_runs_against_a_network_with_no_errors() {
    let net = Net::start();
    let dir = net.net.dir().to_str().expect("utf-8 dir").to_string();
    for batch in ["1", "5"] {
        let o = veritrace(&["bench", "--dir", &dir, "--clients", "4", "--duration", "2", "--batch", batch, "--json"]);
        assert!(o.status.success(), "bench --batch {batch}: {}", text(&o));
        let v = json_of(&o);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["system"], "veritrace", "{v}");
        assert_eq!(v["errors"], 0, "{v}");
        assert_eq!(v["clients"], 4, "{v}");
        assert_eq!(v["batch"].as_u64().map(|b| b.to_string()).as_deref(), Some(batch), "{v}");
        let records = v["records"].as_u64().expect("records");
        let requests = v["requests"].as_u64().expect("requests");
        assert!(records > 0 && requests > 0, "{v}");
        assert!(v["records_per_s"].as_f64().is_some(), "{v}");
        for p in ["p50", "p90", "p99", "max"] {
            assert!(v["latency_ms"][p].as_f64().is_some_and(|x| x > 0.0), "{p}: {v}");
        }
        assert_eq!(v["targets"].as_array().map(Vec::len), Some(4), "every node is sent to: {v}");
    }

    // The other workloads: range issuance, traces, bundles verified here.
    for (workload, unit) in [("issue", "records"), ("trace", "traces"), ("bundle", "bundles")] {
        let args = ["bench", "--dir", &dir, "--clients", "2", "--duration", "1", "--workload", workload, "--json"];
        let o = veritrace(&args);
        assert!(o.status.success(), "bench --workload {workload}: {}", text(&o));
        let v = json_of(&o);
        assert_eq!(
            (v["ok"].clone(), v["errors"].clone(), v["workload"].as_str()),
            (true.into(), 0.into(), Some(workload)),
            "{v}"
        );
        assert!(v[unit].as_u64().is_some_and(|n| n > 0), "{unit}: {v}");
        assert!(v[format!("{unit}_per_s")].as_f64().is_some(), "{v}");
        assert_eq!(v["codes_per_s"].is_number(), workload == "issue", "{v}");
    }

    // Open loop: a paced run never sends more than it was asked to (100 due times in 2 s at
    // 50/s; fewer are sent if the clients fall behind), and says what it offered.
    // With --timeline, the run also comes in slices by due time: every request in one.
    let before_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let args =
        ["bench", "--dir", &dir, "--clients", "8", "--duration", "2", "--rate", "50", "--timeline", "0.5", "--json"];
    let o = veritrace(&args);
    assert!(o.status.success(), "bench --rate 50: {}", text(&o));
    let v = json_of(&o);
    assert_eq!((v["ok"].clone(), v["offered_per_s"].clone()), (true.into(), 50.0.into()), "{v}");
    let requests = v["requests"].as_u64().expect("requests");
    assert!((1..=100).contains(&requests), "50 records/s for 2 s: {v}");
    let t = &v["timeline"];
    assert_eq!(t["slice_s"], 0.5, "{v}");
    let start = t["start_unix_ms"].as_u64().expect("start_unix_ms");
    assert!(start >= before_ms, "the run starts after the command: {v}");
    let slices = t["slices"].as_array().expect("slices");
    // Due times run from 0 to under 2 s: four slices, each with its due requests.
    assert_eq!(slices.len(), 4, "{v}");
    for (i, s) in slices.iter().enumerate() {
        assert_eq!(s["from_s"].as_f64(), Some(0.5 * i as f64), "{v}");
        assert!(s["requests"].as_u64().is_some_and(|n| n > 0), "{v}");
        assert!(s["p50_ms"].as_f64().is_some_and(|p| p > 0.0), "{v}");
        assert!(s["p50_ms"].as_f64() <= s["p99_ms"].as_f64() && s["p99_ms"].as_f64() <= s["max_ms"].as_f64(), "{v}");
    }
    assert_eq!(slices.iter().map(|s| s["requests"].as_u64().unwrap()).sum::<u64>(), requests, "{v}");
    for bad in ["0", "0.001", "nan"] {
        let o = veritrace(&["bench", "--dir", &dir, "--clients", "1", "--duration", "1", "--timeline", bad]);
        assert_eq!(o.status.code(), Some(2), "--timeline {bad}: {}", text(&o));
        assert!(text(&o).to_lowercase().contains(&format!("--timeline {bad}")), "the value is named: {}", text(&o));
    }
    for bad in ["0", "-3", "nan"] {
        let o = veritrace(&["bench", "--dir", &dir, "--clients", "1", "--duration", "1", "--rate", bad]);
        assert_eq!(o.status.code(), Some(2), "--rate {bad}: {}", text(&o));
        assert!(text(&o).to_lowercase().contains(bad), "the value is named: {}", text(&o));
    }
    let o =
        veritrace(&["bench", "--dir", &dir, "--clients", "1", "--duration", "1", "--rate", "5", "--workload", "trace"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--workload trace"), "{}", text(&o));

    // Human output names the same figures.
    let o = veritrace(&["bench", "--dir", &dir, "--clients", "2", "--duration", "1"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for part in ["records/s", "p50", "p90", "p99", "max", "errors: 0"] {
        assert!(t.contains(part), "{part:?} missing: {t}");
    }
}

#[test]
fn bench_refuses_bad_counts_and_endpoints_before_connecting() {
    let o = veritrace(&["bench-etcd", "--endpoints", "https://127.0.0.1:1", "--clients", "1", "--duration", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("https://127.0.0.1:1"), "{}", text(&o));
    let o = veritrace(&["bench-etcd", "--endpoints", "127.0.0.1:1", "--clients", "0", "--duration", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--clients 0"), "{}", text(&o));
    let o = veritrace(&["bench-etcd", "--endpoints", "127.0.0.1:1", "--duration", "1", "--timeline", "0.001"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--timeline 0.001"), "{}", text(&o));
}
