//! The fault suite's harness (issue 8): concurrent clients that record a history of
//! submissions, a seeded nemesis that breaks a namespaces-mode network under that load,
//! and a checker that, after healing, holds every node's ledger against the history.
//!
//! The nemesis schedule (which fault, for how long, how long to rest, which candidate
//! node) is a pure function of the seed ([`schedule`]); which node is the leader when a
//! fault fires is decided by the running network, so a replay repeats the schedule, not
//! necessarily every election. docs/faults.md says what each fault does and what the
//! checker proves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use veritrace_devnet::config::{RaftSettings, Tuning};
use veritrace_devnet::{NetMode, Network, NetworkSpec};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::org::NodeId;
use veritrace_ledger::record::{GovernanceAction, RecordBody, SignedRecord};
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

use crate::{Client, WAIT, issue_lot, sign};

/// splitmix64: small, seedable, and the same on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `lo..hi` for a schedule (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.next_u64() % (hi - lo)
    }
}

/// One run of the suite: the network's shape and how long the nemesis works.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub validators: u32,
    /// An observer is what the nemesis adds as a validator and removes again.
    pub observers: u32,
    pub load_ms: u64,
    pub clients: u32,
    /// Every kind of fault at least once, however long that takes beyond `load_ms`.
    pub every_kind: bool,
}

/// Raft timings of the suite: elections in 1.5–3 s so that a fault costs a few seconds,
/// and a snapshot every 20 blocks so that a wiped node rejoins by snapshot.
pub const HEARTBEAT_MS: u64 = 300;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1_500;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 3_000;
pub const SNAPSHOT_INTERVAL: u64 = 20;
/// Longest wait of one client for one submission before it counts as unknown.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(8);
/// Environment variables: the profile (`long`) and a seed to replay.
pub const PROFILE_ENV: &str = "VERITRACE_FAULTS";
pub const SEED_ENV: &str = "VERITRACE_FAULTS_SEED";

/// The profiles `VERITRACE_FAULTS` selects: short (CI, default) or `long`.
pub fn profiles() -> Vec<Profile> {
    let long = std::env::var(PROFILE_ENV).is_ok_and(|v| v == "long");
    let (three_ms, five_ms) = if long { (600_000, 600_000) } else { (70_000, 45_000) };
    vec![
        Profile {
            name: "3 validators + 1 observer",
            validators: 3,
            observers: 1,
            load_ms: three_ms,
            clients: 6,
            every_kind: true,
        },
        Profile { name: "5 validators", validators: 5, observers: 0, load_ms: five_ms, clients: 6, every_kind: long },
    ]
}

/// The seed from `VERITRACE_FAULTS_SEED` (decimal or 0x-hex), else from the clock.
pub fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{SEED_ENV}={s:?}: {e}"))
        }
        Err(_) => crate::now_ms() ^ (u64::from(std::process::id()) << 32),
    }
}

/// What the nemesis does to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of the leader; started again after the hold.
    KillLeader,
    /// SIGKILL of a follower; started again after the hold.
    KillFollower,
    /// SIGSTOP of the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// The leader cut off, both ways, from every other node: a minority of one.
    IsolateLeader,
    /// Every node cut into groups none of which is a majority: no quorum anywhere.
    NoMajority,
    /// A one-way cut from the leader to one follower.
    OneWay,
    /// A random node partitioned off and healed again, six times in quick succession.
    Flapping,
    /// SIGTERM and start of a node.
    Restart,
    /// A validator stopped, its data deleted, started again: it rejoins by snapshot.
    WipeRejoin,
    /// The observer added as a validator by governance and removed again, under load.
    AddRemoveValidator,
}

const KINDS: [FaultKind; 10] = [
    FaultKind::KillLeader,
    FaultKind::KillFollower,
    FaultKind::PauseLeader,
    FaultKind::IsolateLeader,
    FaultKind::NoMajority,
    FaultKind::OneWay,
    FaultKind::Flapping,
    FaultKind::Restart,
    FaultKind::WipeRejoin,
    FaultKind::AddRemoveValidator,
];

/// One step of the schedule.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub hold_ms: u64,
    pub rest_ms: u64,
    /// Picks the target among the candidates (sorted by node id) when it fires.
    pub pick: u64,
}

/// The fault schedule of `seed` for a profile: the kinds in a seeded order (the membership
/// change only with an observer), every one of them if the profile says so, then seeded
/// kinds until its time is spent. Depends on nothing but its arguments.
pub fn schedule(seed: u64, p: &Profile) -> Vec<Fault> {
    let mut rng = SplitMix64::new(seed.wrapping_add(u64::from(p.validators).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let kinds: Vec<FaultKind> =
        KINDS.iter().copied().filter(|k| p.observers > 0 || *k != FaultKind::AddRemoveValidator).collect();
    let mut first = kinds.clone();
    for i in (1..first.len()).rev() {
        first.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    let mut out = Vec::new();
    let mut spent = 0u64;
    let mut i = 0usize;
    while spent < p.load_ms || (p.every_kind && i < first.len()) {
        let kind = if i < first.len() { first[i] } else { kinds[rng.range(0, kinds.len() as u64) as usize] };
        i += 1;
        let hold_ms = match kind {
            // Longer than the longest election timeout, so the others elect without it.
            FaultKind::PauseLeader => ELECTION_TIMEOUT_MAX_MS + rng.range(1_000, 3_000),
            FaultKind::Flapping => rng.range(500, 1_500),
            _ => rng.range(2_000, 6_000),
        };
        let rest_ms = rng.range(1_000, 3_000);
        let pick = rng.next_u64();
        spent += hold_ms + rest_ms + 3_000;
        out.push(Fault { kind, hold_ms, rest_ms, pick });
    }
    out
}

/// What became of one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An ACCEPTED receipt: the record is committed at this log index and height.
    Acked { log_index: u64, height: u64 },
    /// A definite refusal (an error status other than the retryable ones).
    Rejected { code: Code, message: String },
    /// Time-out, UNAVAILABLE and the like: it may or may not be committed.
    Unknown { why: String },
}

/// One submission of the history.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: u32,
    pub node: String,
    pub record_id: [u8; 32],
    pub signed: Vec<u8>,
    /// Re-issues a lot that an earlier acknowledged op issued: must be refused.
    pub must_fail: bool,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
}

/// A span when no quorum could hear some nodes: submissions through them that start
/// inside it cannot be acknowledged before it ends.
#[derive(Clone, Debug)]
pub struct NoQuorum {
    pub nodes: Vec<String>,
    pub from: Instant,
    pub to: Instant,
    pub what: String,
}

/// What the nemesis did.
#[derive(Debug, Default)]
pub struct NemesisLog {
    pub injected: u64,
    pub lines: Vec<String>,
    pub no_quorum: Vec<NoQuorum>,
    /// The nemesis's own submissions through nodes without quorum (part of the history).
    pub probes: Vec<Op>,
    pub errors: Vec<String>,
}

/// Client id of the nemesis's probes in the history.
pub const PROBE_CLIENT: u32 = u32::MAX;

/// Submits distinct records through `nodes` (in turn) until `hold` is over, each with a
/// time-out that ends inside it: while they have no quorum, none may be acknowledged.
fn probe(rt: &tokio::runtime::Handle, net: &Network, nodes: &[String], hold: Duration, log: &Mutex<NemesisLog>) {
    let end = Instant::now() + hold;
    let mut n = 0u64;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(200) {
            std::thread::sleep(left);
            return;
        }
        n += 1;
        let node = &nodes[n as usize % nodes.len()];
        let record = sign(net, "nutri", n, issue_lot(&format!("FP{}-{n}", crate::now_ms()), 10));
        let signed = record.to_bytes();
        let start = Instant::now();
        let outcome = rt.block_on(submit_once(net, node, &signed, left.min(Duration::from_millis(1_500))));
        let op = Op {
            client: PROBE_CLIENT,
            node: node.clone(),
            record_id: record.id().0,
            signed,
            must_fail: false,
            start,
            end: Instant::now(),
            outcome,
        };
        log.lock().expect("nemesis log").probes.push(op);
        std::thread::sleep(Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())));
    }
}

/// The network a profile runs on: namespaces mode with the suite's Raft timings.
pub fn fault_network(p: &Profile) -> Network {
    let bin = veritrace_devnet::locate::node_binary_for_tests().expect("node binary");
    let mut spec = NetworkSpec::temp(p.validators, p.observers, bin).expect("network spec");
    spec.net = NetMode::Namespaces;
    spec.tuning = Tuning {
        raft: RaftSettings {
            heartbeat_ms: Some(HEARTBEAT_MS),
            election_timeout_min_ms: Some(ELECTION_TIMEOUT_MIN_MS),
            election_timeout_max_ms: Some(ELECTION_TIMEOUT_MAX_MS),
            snapshot_interval: Some(SNAPSHOT_INTERVAL),
        },
        ..Default::default()
    };
    let net = Network::create(spec).expect("create network");
    net.start_all().expect("start nodes");
    net.wait_for_leader(WAIT).expect("a leader");
    net
}

async fn connect(net: &Network, node: &str) -> Result<Client, String> {
    let addr = net.grpc_addr(node).map_err(|e| format!("{e:#}"))?;
    LedgerClient::connect(format!("http://{addr}")).await.map_err(|e| e.to_string())
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted)
}

/// Submits once with `wait_for_commit` and classifies the answer.
async fn submit_once(net: &Network, node: &str, record: &[u8], timeout: Duration) -> Outcome {
    let req = pb::SubmitRequest { signed_record: record.to_vec(), wait_for_commit: true };
    let call = async {
        let mut c = connect(net, node).await.map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
        c.submit(req).await
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::Unknown { why: "time-out".into() },
        Ok(Ok(r)) => match r.into_inner().receipt {
            Some(r) if r.status == pb::ReceiptStatus::Accepted as i32 => {
                Outcome::Acked { log_index: r.log_index, height: r.height }
            }
            other => Outcome::Unknown { why: format!("no accepted receipt: {other:?}") },
        },
        Ok(Err(s)) if retryable(s.code()) => Outcome::Unknown { why: format!("{:?}: {}", s.code(), s.message()) },
        Ok(Err(s)) => Outcome::Rejected { code: s.code(), message: s.message().to_string() },
    }
}

/// One client: until `stop`, a distinct issuance through a random node per op, and now
/// and then a re-issue of a lot it had acknowledged (which the ledger must refuse).
pub async fn client_loop(net: Arc<Network>, id: u32, seed: u64, stop: Arc<AtomicBool>) -> Vec<Op> {
    let mut rng = SplitMix64::new(seed ^ (u64::from(id) + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
    let nodes = net.node_ids();
    let mut history = Vec::new();
    let mut acked_lots: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let node = nodes[rng.range(0, nodes.len() as u64) as usize].clone();
        let must_fail = !acked_lots.is_empty() && rng.range(0, 10) == 0;
        let (lot, nonce) = if must_fail {
            (acked_lots[rng.range(0, acked_lots.len() as u64) as usize].clone(), 1_000_000 + n)
        } else {
            (format!("FC{id}-{n}"), n)
        };
        let record = sign(&net, "nutri", nonce, issue_lot(&lot, 10));
        let signed = record.to_bytes();
        let start = Instant::now();
        let outcome = submit_once(&net, &node, &signed, SUBMIT_TIMEOUT).await;
        let end = Instant::now();
        if matches!(outcome, Outcome::Acked { .. }) && !must_fail {
            acked_lots.push(lot);
        }
        if !matches!(outcome, Outcome::Acked { .. }) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        history.push(Op { client: id, node, record_id: record.id().0, signed, must_fail, start, end, outcome });
    }
    history
}

/// Samples the latest complete checkpoint of a random node every second until `stop`.
pub async fn checkpoint_sampler(net: Arc<Network>, seed: u64, stop: Arc<AtomicBool>) -> Vec<pb::Checkpoint> {
    let mut rng = SplitMix64::new(seed ^ 0xc0ff_ee00);
    let nodes = net.node_ids();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let node = &nodes[rng.range(0, nodes.len() as u64) as usize];
        let call = async {
            let mut c = connect(&net, node).await.ok()?;
            c.get_checkpoint(pb::GetCheckpointRequest { height: 0 }).await.ok().map(|r| r.into_inner())
        };
        if let Ok(Some(cp)) = tokio::time::timeout(Duration::from_secs(2), call).await
            && cp.complete
        {
            out.push(cp);
        }
    }
    out
}

/// A governance record by samr approved by customs-pingtan (the cast's quorum of two).
fn governance(net: &Network, nonce: u64, action: GovernanceAction) -> SignedRecord {
    net.governance(nonce, action).expect("governance record")
}

/// Submits `record` through the leader (or any node) until it is accepted.
fn commit_blocking(rt: &tokio::runtime::Handle, net: &Network, record: &SignedRecord) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let bytes = record.to_bytes();
    loop {
        let node = net.leader().unwrap_or_else(|| net.validators()[0].clone());
        match rt.block_on(submit_once(net, &node, &bytes, SUBMIT_TIMEOUT)) {
            Outcome::Acked { .. } => return Ok(()),
            Outcome::Rejected { code, message } => return Err(format!("governance refused: {code:?} {message}")),
            Outcome::Unknown { why } if Instant::now() > deadline => return Err(format!("governance stuck: {why}")),
            Outcome::Unknown { .. } => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

fn voters_of(rt: &tokio::runtime::Handle, net: &Network) -> Option<Vec<String>> {
    let leader = net.leader()?;
    rt.block_on(async {
        let mut c = connect(net, &leader).await.ok()?;
        c.status(pb::StatusRequest {}).await.ok().map(|s| s.into_inner().voters)
    })
}

fn wait_voters(rt: &tokio::runtime::Handle, net: &Network, node: &str, member: bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = voters_of(rt, net)
            && v.iter().any(|n| n == node) == member
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{node} never became {}a voter", if member { "" } else { "not " }));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An error of devnet (anyhow) or of the file system, with its causes.
fn why(e: impl std::fmt::Display) -> String {
    format!("{e:#}")
}

fn pick(candidates: &[String], pick: u64) -> &str {
    &candidates[(pick % candidates.len() as u64) as usize]
}

/// Runs the schedule against the network (blocking; call it from a blocking thread).
/// Every fault is undone before the next one, and a leader awaited after it.
pub fn run_nemesis(rt: tokio::runtime::Handle, net: &Network, faults: &[Fault], log: &Mutex<NemesisLog>) {
    let note = |s: String| {
        eprintln!("nemesis: {s}");
        log.lock().expect("nemesis log").lines.push(s);
    };
    let err = |s: String| {
        eprintln!("nemesis error: {s}");
        log.lock().expect("nemesis log").errors.push(s);
    };
    let mut gov_nonce = 0u64;
    for f in faults {
        let leader = match net.wait_for_leader(WAIT) {
            Ok(l) => l,
            Err(e) => {
                err(format!("no leader before {:?}: {e:#}", f.kind));
                return;
            }
        };
        let all = net.node_ids();
        let followers: Vec<String> = all.iter().filter(|n| **n != leader).cloned().collect();
        let hold = Duration::from_millis(f.hold_ms);
        let outcome: Result<(), String> = (|| {
            match f.kind {
                FaultKind::KillLeader | FaultKind::KillFollower => {
                    let target =
                        if f.kind == FaultKind::KillLeader { leader.clone() } else { pick(&followers, f.pick).into() };
                    note(format!("{:?}: kill -9 {target} for {hold:?}", f.kind));
                    net.kill(&target).map_err(why)?;
                    std::thread::sleep(hold);
                    net.start(&target).map_err(why)?;
                }
                FaultKind::PauseLeader => {
                    note(format!("PauseLeader: SIGSTOP {leader} for {hold:?}"));
                    net.pause(&leader).map_err(why)?;
                    std::thread::sleep(hold);
                    net.resume(&leader).map_err(why)?;
                }
                FaultKind::IsolateLeader => {
                    note(format!("IsolateLeader: {leader} cut off for {hold:?}"));
                    net.partition(&[leader.as_str()]).map_err(why)?;
                    let from = Instant::now();
                    probe(&rt, net, std::slice::from_ref(&leader), hold, log);
                    let to = Instant::now();
                    net.heal().map_err(why)?;
                    log.lock().expect("nemesis log").no_quorum.push(NoQuorum {
                        nodes: vec![leader.clone()],
                        from,
                        to,
                        what: "isolated leader".into(),
                    });
                }
                FaultKind::NoMajority => {
                    // Groups holding fewer than a majority of the genesis validators.
                    let mut shuffled = all.clone();
                    let mut rng = SplitMix64::new(f.pick);
                    for i in (1..shuffled.len()).rev() {
                        shuffled.swap(i, rng.range(0, i as u64 + 1) as usize);
                    }
                    let size = ((net.validators().len() - 1) / 2).max(1);
                    let groups: Vec<Vec<String>> = shuffled.chunks(size).map(|c| c.to_vec()).collect();
                    note(format!("NoMajority: groups {groups:?} for {hold:?}"));
                    for g in &groups[..groups.len() - 1] {
                        net.partition(&g.iter().map(String::as_str).collect::<Vec<_>>()).map_err(why)?;
                    }
                    let from = Instant::now();
                    probe(&rt, net, &all, hold, log);
                    let to = Instant::now();
                    net.heal().map_err(why)?;
                    log.lock().expect("nemesis log").no_quorum.push(NoQuorum {
                        nodes: all.clone(),
                        from,
                        to,
                        what: "no majority".into(),
                    });
                }
                FaultKind::OneWay => {
                    let to = pick(&followers, f.pick);
                    note(format!("OneWay: {leader} -/-> {to} for {hold:?}"));
                    net.cut(&leader, to).map_err(why)?;
                    std::thread::sleep(hold);
                    net.heal().map_err(why)?;
                }
                FaultKind::Flapping => {
                    note(format!("Flapping: six partitions of {hold:?} each"));
                    let mut rng = SplitMix64::new(f.pick);
                    for _ in 0..6 {
                        let n = &all[rng.range(0, all.len() as u64) as usize];
                        net.partition(&[n.as_str()]).map_err(why)?;
                        std::thread::sleep(hold);
                        net.heal().map_err(why)?;
                        std::thread::sleep(hold);
                    }
                }
                FaultKind::Restart => {
                    let target = pick(&all, f.pick);
                    note(format!("Restart: {target}"));
                    net.restart(target).map_err(why)?;
                }
                FaultKind::WipeRejoin => {
                    let validators: Vec<String> = net.validators().into_iter().filter(|n| *n != leader).collect();
                    let target = pick(&validators, f.pick);
                    note(format!("WipeRejoin: {target} stopped, wiped, started after {hold:?}"));
                    let installed = || -> Result<usize, String> {
                        let log = std::fs::read_to_string(net.logs_path(target).map_err(why)?).map_err(why)?;
                        Ok(log.matches("installed ledger snapshot").count())
                    };
                    let before = installed().map_err(why)?;
                    net.stop(target).map_err(why)?;
                    net.wipe(target).map_err(why)?;
                    std::thread::sleep(hold);
                    // A snapshot is built a while after its index is applied: until the
                    // others have purged their log, the wiped node could replay it instead.
                    net.wait_until(WAIT, "the other nodes have purged their raft log", |net| {
                        let others: Vec<_> =
                            net.statuses().into_iter().filter(|s| s.node_id != *target && s.up).collect();
                        Ok(!others.is_empty() && others.iter().all(|s| s.raft_purged_index > 0))
                    })
                    .map_err(why)?;
                    net.start(target).map_err(why)?;
                    net.wait_until(WAIT, "the wiped node installs a snapshot", |_| {
                        Ok(installed().is_ok_and(|n| n > before))
                    })
                    .map_err(why)?;
                    note(format!("WipeRejoin: {target} rejoined by snapshot"));
                }
                FaultKind::AddRemoveValidator => {
                    let observer = net.genesis().observers[0].clone();
                    let obs = observer.node_id.to_string();
                    note(format!("AddRemoveValidator: {obs} added, removed after {hold:?}"));
                    gov_nonce += 1;
                    commit_blocking(&rt, net, &governance(net, gov_nonce, GovernanceAction::AddValidator(observer)))?;
                    wait_voters(&rt, net, &obs, true)?;
                    std::thread::sleep(hold);
                    gov_nonce += 1;
                    let remove = GovernanceAction::RemoveValidator { node_id: NodeId::new(obs.clone()).expect("id") };
                    commit_blocking(&rt, net, &governance(net, gov_nonce, remove))?;
                    wait_voters(&rt, net, &obs, false)?;
                }
            }
            Ok(())
        })();
        log.lock().expect("nemesis log").injected += 1;
        if let Err(e) = outcome {
            err(format!("{:?}: {e}", f.kind));
        }
        std::thread::sleep(Duration::from_millis(f.rest_ms));
    }
}

/// The checker's counts, printed as the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub operations: u64,
    pub acknowledged: u64,
    pub rejected: u64,
    pub unknown: u64,
    /// Unknown outcomes that turned out committed (allowed).
    pub unknown_committed: u64,
    /// Acknowledged but missing from some node's ledger.
    pub lost: u64,
    /// A record at more than one log index on some node.
    pub duplicated: u64,
    /// Acknowledged at one log index, found at another (or with other bytes).
    pub misplaced: u64,
    /// Refused, yet present in some node's ledger (or a re-issue acknowledged).
    pub rejected_present: u64,
    /// Records nobody in the history submitted.
    pub phantom: u64,
    pub divergent_nodes: u64,
    pub checkpoints_checked: u64,
    pub consistency_proofs: u64,
    /// Acknowledged through a node while it had no quorum.
    pub acked_without_quorum: u64,
    /// Submissions that started through a node while it had no quorum.
    pub probed_without_quorum: u64,
    pub faults_injected: u64,
}

impl Summary {
    pub fn line(&self, seed: u64) -> String {
        format!(
            "seed={seed} operations={} acknowledged={} rejected={} unknown={} (committed {}) lost={} duplicated={} \
             misplaced={} rejected_present={} phantom={} divergent_nodes={} acked_without_quorum={} (of {}) \
             checkpoints_checked={} consistency_proofs={} faults_injected={}",
            self.operations,
            self.acknowledged,
            self.rejected,
            self.unknown,
            self.unknown_committed,
            self.lost,
            self.duplicated,
            self.misplaced,
            self.rejected_present,
            self.phantom,
            self.divergent_nodes,
            self.acked_without_quorum,
            self.probed_without_quorum,
            self.checkpoints_checked,
            self.consistency_proofs,
            self.faults_injected
        )
    }

    /// True when the run proves what docs/faults.md says it proves.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.misplaced == 0
            && self.rejected_present == 0
            && self.phantom == 0
            && self.divergent_nodes == 0
            && self.acked_without_quorum == 0
    }
}

/// Heals everything, starts every stopped node, and waits until all nodes report the same
/// height and roots; returns their statuses (which may still differ after [`WAIT`]).
pub async fn heal_and_settle(net: &Network) -> Vec<pb::StatusResponse> {
    tokio::task::block_in_place(|| {
        net.heal().expect("heal");
        for n in net.node_ids() {
            if !net.is_running(&n).expect("node state") {
                net.start(&n).expect("start a stopped node");
            }
        }
        net.wait_for_leader(WAIT).expect("a leader after healing");
    });
    let nodes = net.node_ids();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut all = Vec::new();
        for n in &nodes {
            let s = async { connect(net, n).await.ok()?.status(pb::StatusRequest {}).await.ok() };
            match tokio::time::timeout(Duration::from_secs(5), s).await {
                Ok(Some(s)) => all.push(s.into_inner()),
                _ => all.push(pb::StatusResponse { node_id: n.clone(), ..Default::default() }),
            }
        }
        let same = all.windows(2).all(|w| {
            w[0].height == w[1].height && w[0].log_root == w[1].log_root && w[0].state_root == w[1].state_root
        }) && all[0].height > 0;
        if same || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A record in a node's log: (log index, id, signed bytes).
type Entry = (u64, [u8; 32], Vec<u8>);

/// Every record of `org` in `node`'s log, in log order.
async fn records_of(net: &Network, node: &str, org: &str) -> Result<Vec<Entry>, String> {
    let mut c = connect(net, node).await?;
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        // Below the page maximum: a full page of 1,000 comes back with `next_from` 0 (see the
        // report of issue 8), so the checker would stop after it.
        let req = pb::RecordsByOrgRequest { org: org.into(), from, limit: 500 };
        let page = c.records_by_org(req).await.map_err(|s| format!("{node}: records of {org}: {s}"))?.into_inner();
        for r in page.records {
            let id: [u8; 32] = r.record_id.as_slice().try_into().map_err(|_| format!("{node}: record id size"))?;
            out.push((r.log_index, id, r.signed_record));
        }
        if page.next_from == 0 {
            return Ok(out);
        }
        from = page.next_from;
    }
}

fn hash(bytes: &[u8]) -> Result<Hash32, String> {
    let a: [u8; 32] = bytes.try_into().map_err(|_| format!("a hash of {} bytes", bytes.len()))?;
    Ok(Hash32(a))
}

/// Holds every node's ledger against the history and the sampled checkpoints. Returns the
/// summary and a description of every violation.
pub async fn check(
    net: &Network,
    history: &[Op],
    mut checkpoints: Vec<pb::Checkpoint>,
    nemesis: &NemesisLog,
) -> (Summary, Vec<String>) {
    let mut s = Summary { faults_injected: nemesis.injected, ..Default::default() };
    let mut bad = Vec::new();
    let statuses = heal_and_settle(net).await;
    let nodes = net.node_ids();

    // Agreement on height and roots.
    let key = |st: &pb::StatusResponse| (st.height, st.log_size, st.log_root.clone(), st.state_root.clone());
    let mut votes: BTreeMap<_, u64> = BTreeMap::new();
    for st in &statuses {
        *votes.entry(key(st)).or_default() += 1;
    }
    let common = votes.iter().max_by_key(|(_, n)| **n).map(|(k, _)| k.clone()).expect("statuses");
    for st in &statuses {
        if key(st) != common {
            s.divergent_nodes += 1;
            bad.push(format!(
                "{} at height {} log size {} differs from the others",
                st.node_id, st.height, st.log_size
            ));
        }
    }

    // Every node's log, record by record.
    let by_id: BTreeMap<[u8; 32], &Op> = history.iter().map(|o| (o.record_id, o)).collect();
    let mut logs: Vec<(String, Vec<Entry>)> = Vec::new();
    for n in &nodes {
        let mut log = Vec::new();
        for org in ["nutri", "samr"] {
            match records_of(net, n, org).await {
                Ok(r) => log.extend(r),
                Err(e) => bad.push(e),
            }
        }
        log.sort_by_key(|(i, _, _)| *i);
        logs.push((n.clone(), log));
    }
    let mut lost = BTreeSet::new();
    let mut dup = BTreeSet::new();
    let mut misplaced = BTreeSet::new();
    let mut present_rejected = BTreeSet::new();
    let mut phantom = BTreeSet::new();
    for (node, log) in &logs {
        let mut at: BTreeMap<[u8; 32], Vec<(u64, &Vec<u8>)>> = BTreeMap::new();
        for (i, id, bytes) in log {
            at.entry(*id).or_default().push((*i, bytes));
        }
        let indices: BTreeSet<u64> = log.iter().map(|(i, _, _)| *i).collect();
        if indices.len() != log.len() {
            bad.push(format!("{node}: two records share a log index"));
        }
        for (id, places) in &at {
            if places.len() > 1 {
                dup.insert(*id);
                bad.push(format!("{node}: record {} at log indices {places:?}", Hash32(*id).to_hex()));
            }
            match by_id.get(id) {
                None => {
                    // samr's governance records are the nemesis's own.
                    let governance = veritrace_ledger::record::SignedRecord::from_bytes(places[0].1)
                        .map(|r| matches!(r.record.body, RecordBody::Governance(_)))
                        .unwrap_or(false);
                    if !governance {
                        phantom.insert(*id);
                        bad.push(format!("{node}: record {} is in no history", Hash32(*id).to_hex()));
                    }
                }
                Some(op) if matches!(op.outcome, Outcome::Rejected { .. }) => {
                    present_rejected.insert(*id);
                    bad.push(format!("{node}: refused record {} is at {places:?}", Hash32(*id).to_hex()));
                }
                Some(_) => {}
            }
        }
        for op in history {
            if let Outcome::Acked { log_index, .. } = op.outcome {
                match at.get(&op.record_id) {
                    None => {
                        lost.insert(op.record_id);
                        bad.push(format!(
                            "{node}: acknowledged record {} (log index {log_index}, via {}) is missing",
                            Hash32(op.record_id).to_hex(),
                            op.node
                        ));
                    }
                    Some(p) if p[0].0 != log_index || *p[0].1 != op.signed => {
                        misplaced.insert(op.record_id);
                        bad.push(format!(
                            "{node}: record {} acknowledged at {log_index} is at {}",
                            Hash32(op.record_id).to_hex(),
                            p[0].0
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    if let Some((first, log0)) = logs.first() {
        for (node, log) in &logs[1..] {
            let same = log.len() == log0.len() && log.iter().zip(log0).all(|(a, b)| a.0 == b.0 && a.1 == b.1);
            if !same && !statuses.iter().any(|st| st.node_id == *node && key(st) != common) {
                s.divergent_nodes += 1;
                bad.push(format!("{node}: its records differ from {first}'s"));
            }
        }
    }
    let in_log: BTreeSet<[u8; 32]> =
        logs.first().map(|(_, l)| l.iter().map(|(_, id, _)| *id).collect()).unwrap_or_default();
    for op in history {
        s.operations += 1;
        match &op.outcome {
            Outcome::Acked { .. } => {
                s.acknowledged += 1;
                if op.must_fail {
                    present_rejected.insert(op.record_id);
                    bad.push(format!("re-issue {} was acknowledged", Hash32(op.record_id).to_hex()));
                }
            }
            Outcome::Rejected { .. } => s.rejected += 1,
            Outcome::Unknown { .. } => {
                s.unknown += 1;
                if in_log.contains(&op.record_id) {
                    s.unknown_committed += 1;
                }
            }
        }
        for w in &nemesis.no_quorum {
            if w.nodes.contains(&op.node) && op.start > w.from && op.start < w.to {
                s.probed_without_quorum += 1;
                if matches!(op.outcome, Outcome::Acked { .. }) && op.end < w.to {
                    s.acked_without_quorum += 1;
                    bad.push(format!(
                        "{} acknowledged {} during {} (submitted {:?} into the fault)",
                        op.node,
                        Hash32(op.record_id).to_hex(),
                        w.what,
                        op.start - w.from
                    ));
                }
            }
        }
    }
    s.lost = lost.len() as u64;
    s.duplicated = dup.len() as u64;
    s.misplaced = misplaced.len() as u64;
    s.rejected_present = present_rejected.len() as u64;
    s.phantom = phantom.len() as u64;

    // Checkpoints: the ones sampled under load and every node's latest.
    for n in &nodes {
        let cp =
            async { connect(net, n).await.ok()?.get_checkpoint(pb::GetCheckpointRequest { height: 0 }).await.ok() };
        if let Ok(Some(cp)) = tokio::time::timeout(Duration::from_secs(5), cp).await {
            checkpoints.push(cp.into_inner());
        }
    }
    let mut by_height: BTreeMap<u64, pb::Checkpoint> = BTreeMap::new();
    for cp in checkpoints.into_iter().filter(|c| c.complete) {
        if let Err(e) = veritrace_proto::convert::checkpoint_from_pb(&cp) {
            bad.push(format!("checkpoint {}: {e}", cp.height));
            continue;
        }
        match by_height.get(&cp.height) {
            Some(old) if old.header_hash != cp.header_hash => {
                bad.push(format!("two complete checkpoints at height {} with different headers", cp.height));
                s.divergent_nodes += 1;
            }
            Some(_) => {}
            None => {
                by_height.insert(cp.height, cp);
            }
        }
    }
    let mut cps: Vec<pb::Checkpoint> = by_height.into_values().collect();
    if cps.len() > 40 {
        let step = cps.len().div_ceil(40);
        let last = cps.pop().expect("checkpoints");
        cps = cps.into_iter().step_by(step).collect();
        cps.push(last);
    }
    s.checkpoints_checked = cps.len() as u64;
    let mut turn = 0usize;
    for (i, old) in cps.iter().enumerate() {
        for new in &cps[i + 1..] {
            if new.log_size < old.log_size {
                bad.push(format!("checkpoint {} has a smaller log than checkpoint {}", new.height, old.height));
                continue;
            }
            if old.log_size == 0 {
                continue;
            }
            if new.log_size == old.log_size {
                if new.log_root != old.log_root {
                    bad.push(format!("checkpoints {} and {}: same log size, other roots", old.height, new.height));
                }
                continue;
            }
            let node = &nodes[turn % nodes.len()];
            turn += 1;
            let req = pb::ConsistencyProofRequest { old_size: old.log_size, new_size: new.log_size };
            let proof = match connect(net, node).await {
                Ok(mut c) => c.consistency_proof(req).await.map(|r| r.into_inner()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let verified = proof.and_then(|p| {
                let path = p.path.iter().map(|h| hash(h)).collect::<Result<Vec<_>, _>>()?;
                veritrace_ledger::merkle::verify_consistency(
                    old.log_size,
                    new.log_size,
                    &hash(&old.log_root)?,
                    &hash(&new.log_root)?,
                    &path,
                )
                .map_err(|e| e.to_string())
            });
            s.consistency_proofs += 1;
            if let Err(e) = verified {
                bad.push(format!("checkpoint {} -> {} via {node}: {e}", old.height, new.height));
            }
        }
    }
    for e in &nemesis.errors {
        bad.push(format!("nemesis: {e}"));
    }
    (s, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // The first outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn a_seed_replays_its_schedule_and_every_kind_is_in_it() {
        for p in profiles() {
            for seed in [0, 1, 2, u64::MAX] {
                let a = schedule(seed, &p);
                let b = schedule(seed, &p);
                let key = |s: &[Fault]| s.iter().map(|f| (f.kind, f.hold_ms, f.rest_ms, f.pick)).collect::<Vec<_>>();
                assert_eq!(key(&a), key(&b), "seed {seed}");
                if p.every_kind {
                    let kinds: BTreeSet<FaultKind> = a.iter().map(|f| f.kind).collect();
                    assert_eq!(kinds.len(), if p.observers > 0 { KINDS.len() } else { KINDS.len() - 1 }, "seed {seed}");
                }
                let pause = a.iter().find(|f| f.kind == FaultKind::PauseLeader);
                assert!(pause.is_none_or(|f| f.hold_ms > ELECTION_TIMEOUT_MAX_MS), "a pause outlasts elections");
            }
            assert_ne!(key_of(schedule(1, &p)), key_of(schedule(2, &p)), "seeds differ");
        }
    }

    fn key_of(s: Vec<Fault>) -> Vec<(FaultKind, u64)> {
        s.into_iter().map(|f| (f.kind, f.hold_ms)).collect()
    }
}
