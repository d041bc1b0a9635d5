//! Shared by the end-to-end tests: a devnet of real `veritrace-node` processes (3 validators,
//! 1 observer) and the built `veritrace` binary run against it. The network is killed and
//! its directory removed when [`Net`] is dropped, also when a test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use veritrace_devnet::Network;
use veritrace_devnet::cast::org_key_path;
use veritrace_ledger::ids::{Gtin, SubjectId};
use veritrace_ledger::org::OrgId;

/// Longest wait for a leader, a checkpoint, or one command.
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs the `veritrace` binary.
pub fn veritrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veritrace")).args(args).output().expect("run veritrace")
}

/// Everything the command printed, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The last JSON line of the command's stdout.
pub fn json_of(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_else(|| panic!("no output: {}", text(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not json ({e}): {line}\n{}", text(o)))
}

/// The GTIN-14 of item reference `item_ref` under `nutri`'s GS1 company prefix.
pub fn nutri_gtin(item_ref: u32) -> Gtin {
    Gtin::under_company_prefix(veritrace_devnet::cast::NUTRI_GS1_PREFIX, item_ref).unwrap()
}

/// An SSCC under `nutri`'s prefix with serial reference `n`.
pub fn sscc(n: u32) -> String {
    let body = format!("0{}{n:09}", veritrace_devnet::cast::NUTRI_GS1_PREFIX);
    format!("{body}{}", veritrace_ledger::ids::gs1_check_digit(&body).unwrap())
}

/// Canonical id of item `serial` of `gtin`.
pub fn item(gtin: &Gtin, serial: &str) -> String {
    format!("01/{gtin}/21/{serial}")
}

/// Canonical id of lot `lot` of `gtin`.
pub fn lot(gtin: &Gtin, lot: &str) -> String {
    format!("01/{gtin}/10/{lot}")
}

pub fn parse_subject(s: &str) -> SubjectId {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A running network.
pub struct Net {
    pub net: Network,
}

impl Net {
    /// Three validators and an observer, with a leader.
    pub fn start() -> Net {
        let bin = veritrace_devnet::locate::node_binary_for_tests().expect("node binary");
        let net = Network::temp(3, 1, bin).expect("create network");
        net.start_all().expect("start nodes");
        net.wait_for_leader(WAIT).expect("a leader");
        Net { net }
    }

    /// The gRPC address of `node` as `host:port`.
    pub fn addr(&self, node: &str) -> String {
        self.net.grpc_addr(node).expect("grpc address").to_string()
    }

    pub fn genesis(&self) -> PathBuf {
        self.net.genesis_path()
    }

    pub fn genesis_str(&self) -> String {
        self.genesis().to_str().expect("utf-8 path").to_string()
    }

    /// The key file devnet wrote for organisation `org`.
    pub fn key(&self, org: &str) -> PathBuf {
        let path = org_key_path(&self.net.dir().join(veritrace_devnet::network::KEYS_DIR), &OrgId::new(org).unwrap());
        assert!(path.is_file(), "no key file {}", path.display());
        path
    }

    /// The key file of validator or observer `node`.
    pub fn node_key(&self, node: &str) -> PathBuf {
        self.net.node_dir(node).expect("node dir").join(veritrace_devnet::network::NODE_KEY_FILE)
    }

    /// `veritrace CMD... --node ADDR(node) --key KEY(org) --as ORG` with `--json`.
    pub fn signed(&self, node: &str, org: &str, cmd: &[&str]) -> Output {
        let key = self.key(org);
        let addr = self.addr(node);
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(["--node", &addr, "--key", key.to_str().unwrap(), "--as", org, "--json"]);
        veritrace(&args)
    }

    /// Like [`Net::signed`], and the record must be accepted: returns the receipt.
    pub fn accepted(&self, node: &str, org: &str, cmd: &[&str]) -> Value {
        let o = self.signed(node, org, cmd);
        assert!(o.status.success(), "{cmd:?} by {org} failed: {}", text(&o));
        let v = json_of(&o);
        assert_eq!(v["status"], "accepted", "{cmd:?}: {v}");
        assert_eq!(v["record_id"].as_str().map(str::len), Some(64), "{v}");
        v
    }

    /// `veritrace CMD... --node ADDR(node)`, with `--json`.
    pub fn query(&self, node: &str, cmd: &[&str]) -> Output {
        let addr = self.addr(node);
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend(["--node", &addr, "--json"]);
        veritrace(&args)
    }

    /// Like [`Net::query`]; it must succeed: its JSON.
    pub fn query_ok(&self, node: &str, cmd: &[&str]) -> Value {
        let o = self.query(node, cmd);
        assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
        let v = json_of(&o);
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    /// Waits until every node holds a complete checkpoint at `height` or above (each node
    /// gathers the validators' signatures itself, so one node may be a moment behind
    /// another); returns the lowest such height.
    pub fn checkpoint_covering(&self, height: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let heights: Vec<u64> = self
                .net
                .node_ids()
                .iter()
                .map(|n| self.query_ok(n, &["status"])["complete_checkpoint_height"].as_u64().unwrap())
                .collect();
            let lowest = heights.iter().copied().min().unwrap_or(0);
            if lowest >= height {
                return lowest;
            }
            assert!(Instant::now() < deadline, "complete checkpoints {heights:?} never all reached height {height}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every node has applied block `height`: a node checks a submission's
    /// signature against the keys in its own copy of the ledger, and reads come from it.
    pub fn applied_everywhere(&self, height: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let heights: Vec<u64> =
                self.net.node_ids().iter().map(|n| self.query_ok(n, &["status"])["height"].as_u64().unwrap()).collect();
            if heights.iter().all(|h| *h >= height) {
                return;
            }
            assert!(Instant::now() < deadline, "heights {heights:?} never all reached {height}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The network's directory (for state and bundle files of a test).
    pub fn dir(&self) -> &Path {
        self.net.dir()
    }
}
