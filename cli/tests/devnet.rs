//! `veritrace devnet` end to end through the binary, with real node processes: up, status,
//! demo, down, up again on the same directory; kill, pause, resume, restart, partition and
//! heal, each seen in `status --json`, and the network recovering.
//!
//! Networks are made with `--net auto`: in namespaces (partitions work) when the tests run
//! as root, on loopback otherwise, where `partition` must refuse and say why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn node_bin() -> PathBuf {
    veritrace_devnet::locate::node_binary_for_tests().expect("node binary")
}

fn veritrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veritrace")).args(args).output().expect("run veritrace")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `veritrace devnet ARGS --dir DIR --json`, expects success, returns the last JSON line.
fn devnet(dir: &Path, args: &[&str]) -> Value {
    let o = devnet_raw(dir, args);
    assert!(o.status.success(), "devnet {args:?} failed ({}): {}", o.status, text(&o));
    last_json(&o)
}

fn devnet_raw(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["devnet"];
    all.extend_from_slice(&args[..1]);
    all.extend(["--dir", dir.to_str().expect("utf-8 dir"), "--json"]);
    all.extend_from_slice(&args[1..]);
    veritrace(&all)
}

fn last_json(o: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in {}", text(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn node<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["nodes"].as_array().expect("nodes").iter().find(|n| n["node_id"] == id).expect("node in status")
}

/// Polls `status --json` until `pred` holds.
fn wait_status(dir: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = devnet(dir, &["status"]);
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}; last status: {s:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every node that runs answers, with the same height and roots.
fn agreed(s: &Value) -> bool {
    let running: Vec<&Value> = s["nodes"].as_array().expect("nodes").iter().filter(|n| !n["pid"].is_null()).collect();
    running.iter().all(|n| {
        n["up"] == true
            && n["log_root"].is_string()
            && n["height"] == running[0]["height"]
            && n["log_root"] == running[0]["log_root"]
            && n["state_root"] == running[0]["state_root"]
    })
}

/// Brings the network down (processes, namespaces) whatever happens; keeps the directory
/// if the test failed.
struct Guard {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Guard {
    fn new() -> Guard {
        let temp = tempfile::tempdir().expect("temp dir");
        Guard { dir: temp.path().join("net"), _temp: Some(temp) }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.dir.join("devnet.json").exists() {
            let _ = devnet_raw(&self.dir, &["down"]);
        }
        if std::thread::panicking()
            && let Some(t) = self._temp.take()
        {
            eprintln!("kept {} (node logs under nodes/*/node.log)", t.keep().display());
        }
    }
}

#[test]
fn up_status_demo_down_and_up_again_keeps_the_data() {
    let g = Guard::new();
    let bin = node_bin();
    let up =
        devnet(&g.dir, &["up", "--validators", "3", "--observers", "1", "--node-bin", bin.to_str().expect("utf-8")]);
    assert_eq!(up["created"], true, "{up:#}");
    assert!(up["leader"].is_string(), "a leader on return: {up:#}");
    let nodes = up["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n["up"] == true && n["pid"].is_u64()), "every node serves: {up:#}");

    let s = devnet(&g.dir, &["status"]);
    let roles: Vec<&str> =
        s["nodes"].as_array().expect("nodes").iter().map(|n| n["role"].as_str().expect("role")).collect();
    assert_eq!(roles, ["validator", "validator", "validator", "observer"]);
    for n in s["nodes"].as_array().expect("nodes") {
        for field in ["org", "log_root", "state_root", "grpc", "http", "raft_role"] {
            assert!(n[field].is_string(), "{field} of {}: {n:#}", n["node_id"]);
        }
        assert!(n["complete_checkpoint_height"].is_u64());
    }
    let human = veritrace(&["devnet", "status", "--dir", g.dir.to_str().expect("utf-8")]);
    assert!(human.status.success() && text(&human).contains("LOG ROOT"), "{}", text(&human));

    let demo = devnet(&g.dir, &["demo"]);
    assert_eq!(demo["ok"], true, "{demo:#}");
    let steps = demo["steps"].as_array().expect("steps");
    assert_eq!(steps.len() as u64, veritrace_devnet::demo::STEP_COUNT);
    assert!(steps[..steps.len() - 1].iter().all(|s| s["accepted"] == true), "{demo:#}");
    let refused = steps.last().expect("last step");
    assert_eq!(
        (refused["accepted"].clone(), refused["reject_reason"].clone()),
        (false.into(), "subject_recalled".into())
    );
    let codes = demo["codes"].as_array().expect("codes");
    assert_eq!(codes.len(), 4);
    for c in codes {
        // Every code traces, its bundle verifies offline, and its consumer page is served.
        for part in ["trace", "bundle"] {
            assert_eq!(c[part]["state"], "ok", "{part} of {}: {c:#}", c["code"]);
        }
        assert!(c["trace"]["records"].as_array().is_some_and(|r| r.len() >= 3), "{c:#}");
        assert!(c["bundle"]["verdict"]["records"].as_u64().expect("records") >= 3, "{c:#}");
        assert!(c["page_url"].as_str().expect("url").ends_with(c["code"].as_str().expect("code")));
        assert_eq!(c["page_status"], 200, "consumer page of {}: {c:#}", c["code"]);
    }
    let before = wait_status(&g.dir, "every node has applied the demo", agreed);
    let height = node(&before, "node-1")["height"].as_u64().expect("height");
    assert!(height >= veritrace_devnet::demo::STEP_COUNT, "{before:#}");

    // `up` on a running network changes nothing.
    let again = devnet(&g.dir, &["up"]);
    assert_eq!(again["created"], false);
    for id in ["node-1", "node-2", "node-3", "node-4"] {
        assert_eq!(node(&again, id)["pid"], node(&before, id)["pid"], "{id} kept its process");
    }

    let down = devnet(&g.dir, &["down"]);
    assert_eq!(down["purged"], false);
    let s = devnet(&g.dir, &["status"]);
    assert!(s["nodes"].as_array().expect("nodes").iter().all(|n| n["pid"].is_null() && n["up"] == false), "{s:#}");

    // `up` again: the same network and its data.
    let again = devnet(&g.dir, &["up"]);
    assert_eq!(again["created"], false);
    let after = wait_status(&g.dir, "the restarted network agrees", agreed);
    for id in ["node-1", "node-2", "node-3", "node-4"] {
        assert!(node(&after, id)["height"].as_u64().expect("height") >= height, "{id} lost data: {after:#}");
    }
    assert_eq!(node(&after, "node-1")["log_root"], node(&before, "node-1")["log_root"], "same log after restart");
    let o = devnet_raw(&g.dir, &["up", "--validators", "5"]);
    assert_eq!(o.status.code(), Some(2), "a different shape is refused: {}", text(&o));

    let purged = devnet(&g.dir, &["down", "--purge"]);
    assert_eq!(purged["purged"], true);
    assert!(!g.dir.exists());
}

#[test]
fn kill_pause_resume_restart_partition_heal_and_add_node_show_in_status_and_the_network_recovers() {
    let g = Guard::new();
    let bin = node_bin();
    let up =
        devnet(&g.dir, &["up", "--validators", "3", "--observers", "1", "--node-bin", bin.to_str().expect("utf-8")]);
    let leader = up["leader"].as_str().expect("leader").to_string();
    let follower = ["node-1", "node-2", "node-3"].into_iter().find(|n| *n != leader).expect("follower").to_string();

    // kill: the follower is down; the network goes on; restart brings it back.
    let k = devnet(&g.dir, &["kill", &follower]);
    assert!(k["status"]["pid"].is_null() && k["status"]["up"] == false, "{k:#}");
    let r = devnet(&g.dir, &["restart", &follower]);
    assert!(r["status"]["pid"].is_u64() && r["status"]["up"] == true, "{r:#}");

    // pause / resume.
    let p = devnet(&g.dir, &["pause", &follower]);
    assert!(p["status"]["paused"] == true && p["status"]["up"] == false, "{p:#}");
    let r = devnet(&g.dir, &["resume", &follower]);
    assert!(r["status"]["paused"] == false && r["status"]["up"] == true, "{r:#}");

    let net_mode = up["net"].as_str().expect("net").to_string();
    if net_mode == "loopback" {
        let o = devnet_raw(&g.dir, &["partition", &follower]);
        assert_eq!(o.status.code(), Some(2));
        let err = last_json(&o)["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains("127.0.0.1") && err.contains("--net netns"), "{err}");
    } else {
        // partition: the follower is cut off and falls behind while the demo plays.
        let cut = devnet(&g.dir, &["partition", &follower]);
        assert_eq!(cut["cuts"].as_array().expect("cuts").len(), 6, "{cut:#}");
        let before = node(&devnet(&g.dir, &["status"]), &follower)["height"].as_u64().expect("height");
        assert_eq!(devnet(&g.dir, &["demo"])["ok"], true);
        let s = devnet(&g.dir, &["status"]);
        let f = node(&s, &follower);
        assert_eq!(f["height"].as_u64(), Some(before), "the cut-off follower stays behind: {s:#}");
        assert_eq!(f["cut_off_from"].as_array().expect("cuts").len(), 3);
        let top = s["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["height"].as_u64()).max();
        assert!(top > Some(before), "the others went on: {s:#}");

        let healed = devnet(&g.dir, &["heal"]);
        assert_eq!(healed["healed"].as_array().expect("healed").len(), 6);
        wait_status(&g.dir, "the follower catches up after the heal", |s| {
            agreed(s)
                && node(s, &follower)["height"].as_u64() >= top
                && s["cuts"].as_array().is_none_or(|c| c.is_empty())
        });
    }

    // Kill the leader: another validator leads; restarted, the old one follows.
    let s = devnet(&g.dir, &["status"]);
    let leader = s["leader"].as_str().expect("leader").to_string();
    devnet(&g.dir, &["kill", &leader]);
    wait_status(&g.dir, "another validator leads", |s| s["leader"].as_str().is_some_and(|l| l != leader));
    devnet(&g.dir, &["restart", &leader]);
    wait_status(&g.dir, "every node agrees again", |s| {
        agreed(s) && s["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["up"] == true))
    });

    let logs = devnet(&g.dir, &["logs", &leader, "--lines", "5"]);
    assert!(logs["lines"].as_array().is_some_and(|l| !l.is_empty() && l.len() <= 5), "{logs:#}");

    // add-node: an organisation outside the network is bad input; a free validator
    // operator's node is admitted by governance and becomes the fifth node, a voter.
    let o = devnet_raw(&g.dir, &["add-node", "--org", "nobody"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(last_json(&o)["error"].as_str().is_some_and(|e| e.contains("\"nobody\"")), "{}", text(&o));
    let added = devnet(&g.dir, &["add-node"]);
    assert_eq!(
        (added["added"]["node_id"].as_str(), added["added"]["org"].as_str()),
        (Some("node-5"), Some("hunan-qi"))
    );
    assert!(
        added["added"]["voters"].as_array().is_some_and(|v| v.len() == 4 && v.contains(&"node-5".into())),
        "{added:#}"
    );
    wait_status(&g.dir, "node-5 holds the same ledger", |s| agreed(s) && node(s, "node-5")["up"] == true);
    devnet(&g.dir, &["down", "--purge"]);
}
