//! The node's services around Raft: taking submissions (check, forward to the leader,
//! batch into blocks, wait for commit), gathering checkpoint signatures, keeping Raft
//! membership in line with the ledger's validator set, and answering peers.
//!
//! Every queue is bounded: a full submission queue answers "busy", a slow checkpoint
//! listener misses announcements and re-reads the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use veritrace_consensus::{ConsensusRaft, NodeId as RaftId, Payload, PeerInfo, RaftRpc, RpcServer};
use veritrace_ledger::apply::RejectCode;
use veritrace_ledger::block::{BlockHeader, CheckpointSignature};
use veritrace_ledger::codec;
use veritrace_ledger::org::{Genesis, LedgerId, NodeId, OrgId, Organisation, PublicKey, ValidatorSet};
use veritrace_ledger::record::{RecordId, SignedRecord};
use veritrace_ledger::state::{StateKey, StateValue};
use veritrace_ledger::view::{Outcome, Receipt};

use crate::config::{BatchConfig, CHECKPOINT_EVERY_BLOCKS_MAX, CheckpointConfig};
use crate::machine::{AppliedBlock, Proposal, SharedStore, SnapshotGate};
use crate::members::{Members, raft_id_of};
use crate::p2p::{Inbound, NodeRequest, NodeResponse, P2p};

/// How long a forwarded submission may wait for the leader's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Forwarding requests a node has out to the leader at once (see [`forwarder`]).
const FORWARDS_IN_FLIGHT_MAX: usize = 4;
/// Records and record bytes a forwarding request gathers before it leaves (a submission on
/// its own may carry more: it goes alone, as the client sent it).
const FORWARD_RECORDS_MAX: usize = 2_000;
const FORWARD_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Submission checks running at once, each on one blocking thread (see [`checker`]).
const CHECKS_IN_FLIGHT_MAX: usize = 2;
/// Records one submission check takes: it reads the store for all of them under one hold
/// of the store lock, which a block's apply waits for, so a group stays a few ms of reads.
const CHECK_RECORDS_MAX: usize = 512;
/// Checkpoint signatures being sent at once; beyond, a signature is dropped (the next
/// block's checkpoint supersedes it) rather than crowding out Raft traffic.
pub const SIGNATURE_SENDS_MAX: usize = 64;
/// Checkpoint signatures kept for heights this node has not applied yet.
pub const EARLY_SIGNATURE_HEIGHTS_MAX: usize = 4_096;

/// Why a submission was not taken. Mapped to gRPC status codes in one place (grpc.rs).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("record {index}: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("record {index}: {reason}")]
    BadSignature { index: usize, reason: String },
    #[error("no leader is known yet; retry shortly")]
    NoLeader,
    #[error("the leader's submission queue is full; retry shortly")]
    Busy,
    #[error("leader unreachable: {0}")]
    Forward(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error(
        "this node installed a snapshot at height {0} and waits for a complete checkpoint to verify it; retry shortly"
    )]
    Unverified(u64),
}

impl SubmitError {
    /// The error of a forwarded subset of a submission, with record indices taken back to
    /// the submission: `positions[i]` is where the subset's record `i` stood in it.
    fn at_positions(self, positions: &[usize]) -> SubmitError {
        let at = |i: usize| positions.get(i).copied().unwrap_or(i);
        match self {
            SubmitError::Malformed { index, reason } => SubmitError::Malformed { index: at(index), reason },
            SubmitError::BadSignature { index, reason } => SubmitError::BadSignature { index: at(index), reason },
            other => other,
        }
    }
}

/// A forwarded submission's refusal on its way back from the leader. The leader's
/// precheck keeps its verdict, so a client that submits through a follower gets the status
/// it would get from the leader (an unknown author is UNAUTHENTICATED, not "retry"); any
/// other refusal is the leader's trouble and reaches the client as unavailable.
#[derive(Debug, Serialize, Deserialize)]
enum ForwardRefusal {
    Malformed { index: u32, reason: String },
    BadSignature { index: u32, reason: String },
    Unavailable(String),
}

impl From<SubmitError> for ForwardRefusal {
    fn from(e: SubmitError) -> Self {
        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        match e {
            SubmitError::Malformed { index: i, reason } => ForwardRefusal::Malformed { index: index(i), reason },
            SubmitError::BadSignature { index: i, reason } => ForwardRefusal::BadSignature { index: index(i), reason },
            other => ForwardRefusal::Unavailable(other.to_string()),
        }
    }
}

impl From<ForwardRefusal> for SubmitError {
    fn from(r: ForwardRefusal) -> Self {
        match r {
            ForwardRefusal::Malformed { index, reason } => SubmitError::Malformed { index: index as usize, reason },
            ForwardRefusal::BadSignature { index, reason } => {
                SubmitError::BadSignature { index: index as usize, reason }
            }
            ForwardRefusal::Unavailable(why) => SubmitError::Forward(why),
        }
    }
}

/// One record's fate as the submitter sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SubmitOutcome {
    /// Queued at the leader, not waited for.
    Pending(RecordId),
    Decided(Receipt),
}

/// A submission forwarded from another node to the leader.
#[derive(Serialize, Deserialize)]
struct ForwardRequest {
    records: Vec<SignedRecord>,
    wait: bool,
}

/// The leader's answer to one forwarded submission.
type ForwardAnswer = Result<Vec<SubmitOutcome>, ForwardRefusal>;

/// A submission waiting for the [`forwarder`]: its [`ForwardRequest`], encoded once, as
/// the part of a `NodeRequest::Forward` it will travel in.
struct ForwardJob {
    part: Vec<u8>,
    records: usize,
    reply: oneshot::Sender<Result<Vec<SubmitOutcome>, SubmitError>>,
}

/// A submission waiting for the [`checker`].
struct CheckJob {
    records: Vec<SignedRecord>,
    reply: oneshot::Sender<Result<Checked, SubmitError>>,
}

/// A submission that passed its check: the receipt of each record committed before, by
/// position, and the records still to commit with their positions.
type Checked = (Vec<Option<SubmitOutcome>>, Vec<(usize, SignedRecord)>);

/// What a submission's check reads under the store lock: the key each record's signature is
/// to be verified with (none where a follower does not know the author's key yet: the
/// leader decides), up to the first record refused for anything but its signature; that
/// refusal (a storage error is one too, met at the same place in the order); and, when
/// there is none, the receipts of records committed before.
struct Screened {
    keys: Vec<Option<PublicKey>>,
    refusal: Option<SubmitError>,
    receipts: Vec<Option<Receipt>>,
}

impl Screened {
    fn refused(refusal: SubmitError) -> Screened {
        Screened { keys: Vec::new(), refusal: Some(refusal), receipts: Vec::new() }
    }

    /// The check's verdict, once the signatures are verified (with no lock held): the
    /// first refused record in order, or the records with their earlier receipts.
    fn conclude(self, ledger: &LedgerId, records: Vec<SignedRecord>) -> Result<Checked, SubmitError> {
        for (index, (r, key)) in records.iter().zip(&self.keys).enumerate() {
            if let Some(key) = key
                && !r.verify_author_remembered(ledger, key)
            {
                return Err(SubmitError::BadSignature {
                    index,
                    reason: format!("signature of {} with key {} does not verify", r.record.author, r.record.key_id),
                });
            }
        }
        if let Some(refusal) = self.refusal {
            return Err(refusal);
        }
        let mut out: Vec<Option<SubmitOutcome>> = vec![None; records.len()];
        let mut fresh = Vec::new();
        for (i, (r, receipt)) in records.into_iter().zip(self.receipts).enumerate() {
            match receipt {
                Some(rc) if matches!(rc.outcome, Outcome::Accepted { .. }) => out[i] = Some(SubmitOutcome::Decided(rc)),
                _ => fresh.push((i, r)),
            }
        }
        Ok((out, fresh))
    }
}

/// What [`GroupCommit`] needs of a queued item: the records and bytes it adds to a group.
trait Queued {
    fn records(&self) -> usize;
    fn bytes(&self) -> usize;
}

impl Queued for Pending {
    fn records(&self) -> usize {
        1
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Queued for CheckJob {
    fn records(&self) -> usize {
        self.records.len()
    }
    fn bytes(&self) -> usize {
        0
    }
}

impl Queued for ForwardJob {
    fn records(&self) -> usize {
        self.records
    }
    fn bytes(&self) -> usize {
        self.part.len()
    }
}

/// Group commit over a queue, for the leader's blocks and a follower's forwards alike: a
/// group starts with the first item queued once one of `slots` is free, and takes every
/// item queued by then — lingering up to `linger` for more — while it stays within
/// `records_max` and `bytes_max`. An item that would pass a limit opens the next group (an
/// item past a limit on its own goes alone). An idle queue sends a lone item at once; a
/// busy one sends few, large groups.
struct GroupCommit<T> {
    rx: mpsc::Receiver<T>,
    carried: Option<T>,
    slots: Arc<Semaphore>,
    records_max: usize,
    bytes_max: usize,
    linger: Duration,
}

impl<T: Queued> GroupCommit<T> {
    fn new(rx: mpsc::Receiver<T>, slots: usize, records_max: usize, bytes_max: usize, linger: Duration) -> Self {
        GroupCommit { rx, carried: None, slots: Arc::new(Semaphore::new(slots)), records_max, bytes_max, linger }
    }

    /// The next group with the slot it holds until dropped; `None` once the queue is
    /// closed and empty.
    async fn next(&mut self) -> Option<(Vec<T>, tokio::sync::OwnedSemaphorePermit)> {
        let first = match self.carried.take() {
            Some(item) => item,
            None => self.rx.recv().await?,
        };
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let until = Instant::now() + self.linger;
        let (mut records, mut bytes) = (first.records(), first.bytes());
        let mut group = vec![first];
        while records < self.records_max && bytes < self.bytes_max {
            let item = match self.rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) if !self.linger.is_zero() => {
                    match tokio::time::timeout_at(until.into(), self.rx.recv()).await {
                        Ok(Some(item)) => item,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            if records + item.records() > self.records_max || bytes + item.bytes() > self.bytes_max {
                self.carried = Some(item);
                break;
            }
            records += item.records();
            bytes += item.bytes();
            group.push(item);
        }
        Some((group, slot))
    }
}

/// A validator's signature on a header, as sent to every other node
/// (`NodeRequest::Signature` carries its canonical bytes).
#[derive(Serialize, Deserialize)]
pub struct SignatureMessage {
    pub header: BlockHeader,
    pub signature: CheckpointSignature,
}

struct Pending {
    record: SignedRecord,
    bytes: usize,
    reply: Option<oneshot::Sender<Result<Receipt, SubmitError>>>,
}

/// Shared state of the running services.
pub struct Services {
    pub node_id: NodeId,
    pub raft_id: RaftId,
    pub genesis: Genesis,
    pub store: SharedStore,
    pub raft: ConsensusRaft,
    pub p2p: P2p,
    /// The network's members: the genesis' nodes and the validators governance admitted.
    pub members: Members,
    /// The node key: it signs checkpoints while the node is a validator.
    pub node_key: ed25519_dalek::SigningKey,
    pub public_key: PublicKey,
    /// Height of the latest complete checkpoint (quorum of distinct organisations);
    /// subscribers learn of each newer one.
    complete: tokio::sync::watch::Sender<u64>,
    check_tx: mpsc::Sender<CheckJob>,
    submit_tx: mpsc::Sender<Pending>,
    forward_tx: mpsc::Sender<ForwardJob>,
    early_signatures: std::sync::Mutex<BTreeMap<u64, Vec<SignatureMessage>>>,
    /// Answers peers' Raft RPCs with this node's Raft.
    raft_rpc: RpcServer,
    evidence_dir: std::path::PathBuf,
    /// Signatures received on a header other than ours at the same height.
    checkpoint_conflicts: std::sync::atomic::AtomicU64,
    gate: Arc<SnapshotGate>,
}

impl Services {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        node_id: NodeId,
        genesis: Genesis,
        store: SharedStore,
        raft: ConsensusRaft,
        p2p: P2p,
        members: Members,
        node_key: ed25519_dalek::SigningKey,
        batch: BatchConfig,
        checkpoint: CheckpointConfig,
        snapshot_bytes_max: u64,
        evidence_dir: std::path::PathBuf,
        gate: Arc<SnapshotGate>,
        inbound: mpsc::Receiver<Inbound>,
        applied: tokio::sync::broadcast::Receiver<BlockHeader>,
    ) -> Arc<Services> {
        let public = PublicKey::from_bytes(node_key.verifying_key().to_bytes()).expect("node key is a valid point");
        let raft_id = raft_id_of(&public);
        let (check_tx, check_rx) = mpsc::channel(batch.queue_max as usize);
        let (submit_tx, submit_rx) = mpsc::channel(batch.queue_max as usize);
        let (forward_tx, forward_rx) = mpsc::channel(batch.queue_max as usize);
        let s = Arc::new(Services {
            node_id,
            raft_id,
            genesis,
            store,
            raft_rpc: RpcServer::new(raft.clone(), snapshot_bytes_max),
            raft,
            p2p,
            members,
            node_key,
            public_key: public,
            complete: tokio::sync::watch::Sender::new(0),
            check_tx,
            submit_tx,
            forward_tx,
            early_signatures: Default::default(),
            evidence_dir,
            checkpoint_conflicts: Default::default(),
            gate,
        });
        s.recompute_complete_height();
        tokio::spawn(checker(s.clone(), check_rx));
        tokio::spawn(batcher(s.clone(), submit_rx, batch));
        tokio::spawn(forwarder(s.clone(), forward_rx));
        tokio::spawn(answer_peers(s.clone(), inbound));
        tokio::spawn(sign_checkpoints(s.clone(), applied, checkpoint));
        tokio::spawn(reconcile_membership(s.clone()));
        tokio::spawn(follow_members(s.clone()));
        s
    }

    /// The Raft id of the current leader, if known.
    pub fn leader(&self) -> Option<RaftId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub fn validators(&self) -> ValidatorSet {
        let store = self.store.read().expect("store lock");
        self.validators_of(&store)
    }

    /// The current validator set, from a store the caller has locked.
    pub fn validators_of(&self, store: &crate::query::LedgerStore) -> ValidatorSet {
        match store.state_value(&StateKey::Validators) {
            Ok(Some(StateValue::Validators(v))) => v,
            _ => self.genesis.validator_set(),
        }
    }

    /// The log size of the complete checkpoint at `height` (`None` for none).
    pub fn complete_log_size(&self, store: &crate::query::LedgerStore, height: u64) -> Option<u64> {
        if height == 0 {
            return None;
        }
        store.header(height).ok().flatten().map(|h| h.log_size)
    }

    /// Checks form, size and the author's signature, then queues the records at the
    /// leader (forwarding them if this node is not the leader). With `wait`, returns once
    /// each is committed; a record committed before gets its original receipt.
    pub async fn submit(
        self: &Arc<Self>,
        records: Vec<SignedRecord>,
        wait: bool,
    ) -> Result<Vec<SubmitOutcome>, SubmitError> {
        self.check_serving()?;
        let (reply, checked) = oneshot::channel();
        self.check_tx.try_send(CheckJob { records, reply }).map_err(|_| SubmitError::Busy)?;
        let (mut out, fresh) =
            checked.await.map_err(|_| SubmitError::Storage("the submission check stopped".into()))??;
        if !fresh.is_empty() {
            let (idx, recs): (Vec<usize>, Vec<SignedRecord>) = fresh.into_iter().unzip();
            let decided = if self.is_leader() {
                self.enqueue(recs, wait).await?
            } else {
                self.forward(recs, wait).await.map_err(|e| e.at_positions(&idx))?
            };
            for (i, d) in idx.into_iter().zip(decided) {
                out[i] = Some(d);
            }
        }
        Ok(out.into_iter().map(|o| o.expect("every record decided")).collect())
    }

    /// Checks a group of submissions (see [`checker`]): form, author and key under one hold
    /// of the store lock, which apply's write of a block waits for; then each signature,
    /// with the lock released. Answers each submitter.
    fn check_group(&self, jobs: Vec<CheckJob>) {
        let is_leader = self.is_leader();
        let screened: Vec<Screened> = match self.store.read() {
            Ok(store) => {
                // A group is mostly a few authors: read and decode each one's organisation once.
                let mut orgs = BTreeMap::new();
                jobs.iter().map(|job| screen(&store, &mut orgs, is_leader, &job.records)).collect()
            }
            Err(_) => jobs.iter().map(|_| Screened::refused(SubmitError::Storage("lock poisoned".into()))).collect(),
        };
        for (job, screened) in jobs.into_iter().zip(screened) {
            let _ = job.reply.send(screened.conclude(&self.genesis.ledger_id, job.records));
        }
    }

    async fn enqueue(&self, records: Vec<SignedRecord>, wait: bool) -> Result<Vec<SubmitOutcome>, SubmitError> {
        let mut waits = Vec::new();
        let mut out = Vec::new();
        for record in records {
            let id = record.id();
            let bytes = record.to_bytes().len();
            let (tx, rx) = if wait {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
            self.submit_tx.try_send(Pending { record, bytes, reply: tx }).map_err(|_| SubmitError::Busy)?;
            waits.push((id, rx));
        }
        for (id, rx) in waits {
            out.push(match rx {
                None => SubmitOutcome::Pending(id),
                Some(rx) => {
                    let r = rx.await.map_err(|_| SubmitError::Commit("the batcher stopped".into()))??;
                    SubmitOutcome::Decided(r)
                }
            });
        }
        Ok(out)
    }

    /// Hands the records to the [`forwarder`], which sends them to the leader with whatever
    /// other submissions this node is forwarding at the time.
    async fn forward(&self, records: Vec<SignedRecord>, wait: bool) -> Result<Vec<SubmitOutcome>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let job = ForwardJob { records: records.len(), part: codec::encode(&ForwardRequest { records, wait }), reply };
        self.forward_tx.try_send(job).map_err(|_| SubmitError::Busy)?;
        answer.await.map_err(|_| SubmitError::Forward("the forwarder stopped".into()))?
    }

    /// Sends submissions to the leader in one request, one part each, and returns each
    /// part's answer in order.
    async fn forward_parts(&self, parts: Vec<Vec<u8>>) -> Result<Vec<ForwardAnswer>, SubmitError> {
        let count = parts.len();
        let leader = self.leader().ok_or(SubmitError::NoLeader)?;
        let member = self.members.get(&leader).ok_or(SubmitError::NoLeader)?;
        let peer = member.peer.peer_id.parse().map_err(|e| SubmitError::Forward(format!("leader peer id: {e}")))?;
        let addr = member.addr();
        let req = NodeRequest::Forward(parts);
        let resp = tokio::time::timeout(FORWARD_TIMEOUT, self.p2p.request(peer, addr, req))
            .await
            .map_err(|_| {
                SubmitError::Forward(format!("no answer from leader {} in {FORWARD_TIMEOUT:?}", member.node_id))
            })?
            .map_err(|e| SubmitError::Forward(e.to_string()))?;
        match resp {
            NodeResponse::Forwarded(bytes) => {
                let answers: Vec<ForwardAnswer> =
                    codec::decode("forward reply", &bytes).map_err(|e| SubmitError::Forward(e.to_string()))?;
                if answers.len() != count {
                    return Err(SubmitError::Forward(format!(
                        "the leader answered {} of {count} forwarded submissions",
                        answers.len()
                    )));
                }
                Ok(answers)
            }
            NodeResponse::Refused(why) => Err(SubmitError::Forward(why)),
            _ => Err(SubmitError::Forward("unexpected reply from leader".into())),
        }
    }

    /// Refuses service while an installed snapshot waits for its checkpoint.
    pub fn check_serving(&self) -> Result<(), SubmitError> {
        match self.gate.pending() {
            None => Ok(()),
            Some(h) => Err(SubmitError::Unverified(h)),
        }
    }

    /// Height of the latest complete checkpoint this node knows (0: none yet).
    pub fn complete_height(&self) -> u64 {
        *self.complete.borrow()
    }

    /// Signatures received on a header that differs from ours at its height, since start.
    pub fn checkpoint_conflicts(&self) -> u64 {
        self.checkpoint_conflicts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Follows the latest complete checkpoint height.
    pub fn watch_complete(&self) -> tokio::sync::watch::Receiver<u64> {
        self.complete.subscribe()
    }

    fn mark_complete(&self, height: u64) {
        self.complete.send_if_modified(|h| {
            let newer = height > *h;
            if newer {
                *h = height;
            }
            newer
        });
    }

    /// Re-derives the latest complete checkpoint height, looking back at most
    /// [`CHECKPOINT_EVERY_BLOCKS_MAX`] blocks (every cadence signs at least that often).
    fn recompute_complete_height(&self) {
        let validators = self.validators();
        let Ok(store) = self.store.read() else { return };
        let head = store.head().height;
        for h in (head.saturating_sub(CHECKPOINT_EVERY_BLOCKS_MAX)..=head).rev() {
            if let Ok(Some(cp)) = store.checkpoint(h)
                && cp.verify(&self.genesis.ledger_id, &validators).is_ok()
            {
                self.mark_complete(h);
                return;
            }
        }
    }

    /// Takes a peer's signature on `header`: checked against its validator's key, then
    /// kept ([`Services::keep_signature`]).
    fn take_signature(&self, msg: SignatureMessage) {
        let validators = self.validators();
        let Some(v) = validators.get(&msg.signature.node_id) else {
            tracing::warn!(node = %msg.signature.node_id, "checkpoint signature from a node outside the validator set");
            return;
        };
        if v.public_key
            .verifying_key()
            .verify_strict(&msg.header.signing_message(), &msg.signature.signature.to_dalek())
            .is_err()
        {
            tracing::warn!(node = %msg.signature.node_id, height = msg.header.height, "forged checkpoint signature");
            return;
        }
        self.keep_signature(msg, &validators);
    }

    /// Keeps a signature known to be good (ours, or checked by [`Services::take_signature`]):
    /// stored if the header is ours at that height; evidence kept, and a shout, if it is not.
    fn keep_signature(&self, msg: SignatureMessage, validators: &ValidatorSet) {
        let Ok(store) = self.store.read() else { return };
        let ours = match store.header(msg.header.height) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "reading header for a checkpoint signature");
                return;
            }
        };
        match ours {
            None => {
                drop(store);
                let mut early = self.early_signatures.lock().expect("early signatures lock");
                if early.len() < EARLY_SIGNATURE_HEIGHTS_MAX || early.contains_key(&msg.header.height) {
                    early.entry(msg.header.height).or_default().push(msg);
                }
            }
            Some(h) if h == msg.header => {
                if let Err(e) = store.put_checkpoint_signature(h.height, &msg.signature) {
                    tracing::error!(error = %e, "storing a checkpoint signature");
                    return;
                }
                let gate_waits = self.gate.pending().is_some();
                if !gate_waits && h.height <= self.complete_height() {
                    // A later checkpoint is complete already: nothing to decide here.
                    return;
                }
                let Ok(Some(cp)) = store.checkpoint(h.height) else { return };
                if gate_waits {
                    self.gate.offer(&store, &cp);
                }
                // Every stored signature was checked before it was stored: the whole
                // checkpoint is checked once, when its signers reach a quorum.
                if cp.names_a_quorum(validators) && cp.verify(&self.genesis.ledger_id, validators).is_ok() {
                    self.mark_complete(h.height);
                }
            }
            Some(h) => {
                self.checkpoint_conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    height = h.height,
                    node = %msg.signature.node_id,
                    ours = %h.hash(),
                    theirs = %msg.header.hash(),
                    "CHECKPOINT CONFLICT: a validator signed a different header at this height; evidence kept"
                );
                let _ = std::fs::create_dir_all(&self.evidence_dir);
                let path = self.evidence_dir.join(format!("conflict-{}-{}.json", h.height, msg.signature.node_id));
                let evidence = serde_json::json!({ "ours": h, "theirs": msg.header, "signature": msg.signature });
                if let Err(e) = std::fs::write(&path, evidence.to_string()) {
                    tracing::error!(error = %e, path = %path.display(), "writing checkpoint conflict evidence");
                }
            }
        }
    }
}

/// This node's Raft log by index, as `Status` and `/metrics` report it (0 for none). Raft
/// entries are blocks and membership changes, so these are not heights.
#[derive(Clone, Copy, Debug)]
pub struct RaftLogIndexes {
    pub last: u64,
    pub applied: u64,
    pub snapshot: u64,
    /// Entries up to here are deleted, covered by the snapshot.
    pub purged: u64,
}

impl RaftLogIndexes {
    pub fn of(m: &openraft::RaftMetrics<RaftId, PeerInfo>) -> RaftLogIndexes {
        use openraft::LogIdOptionExt;
        RaftLogIndexes {
            last: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.index().unwrap_or(0),
            snapshot: m.snapshot.index().unwrap_or(0),
            purged: m.purged.index().unwrap_or(0),
        }
    }
}

/// Reads what one submission's check needs from the store ([`Screened`]), checking each
/// record's form, author and key in order up to the first refused. `orgs` caches the
/// organisations read for the group.
fn screen(
    store: &crate::query::LedgerStore,
    orgs: &mut BTreeMap<OrgId, Option<Organisation>>,
    is_leader: bool,
    records: &[SignedRecord],
) -> Screened {
    let mut keys = Vec::with_capacity(records.len());
    for (index, r) in records.iter().enumerate() {
        match screen_record(store, orgs, is_leader, index, r) {
            Ok(key) => keys.push(key),
            Err(refusal) => return Screened { keys, refusal: Some(refusal), receipts: Vec::new() },
        }
    }
    match records.iter().map(|r| store.receipt(&r.id())).collect() {
        Ok(receipts) => Screened { keys, refusal: None, receipts },
        Err(e) => Screened { keys, refusal: Some(SubmitError::Storage(e.to_string())), receipts: Vec::new() },
    }
}

/// One record's form, author and key: the key its signature is to be verified with, or
/// none where a follower does not know the author or the key yet (the leader, and apply on
/// every node, decide).
fn screen_record(
    store: &crate::query::LedgerStore,
    orgs: &mut BTreeMap<OrgId, Option<Organisation>>,
    is_leader: bool,
    index: usize,
    r: &SignedRecord,
) -> Result<Option<PublicKey>, SubmitError> {
    r.validate_form().map_err(|e| SubmitError::Malformed { index, reason: e.to_string() })?;
    let author = &r.record.author;
    if !orgs.contains_key(author) {
        let org = match store.state_value(&StateKey::Org(author.clone())) {
            Ok(Some(StateValue::Org(o))) => Some(o),
            Ok(_) => None,
            Err(e) => return Err(SubmitError::Storage(e.to_string())),
        };
        orgs.insert(author.clone(), org);
    }
    let refusal = |reason| SubmitError::BadSignature { index, reason };
    let key = match orgs[author].as_ref().map(|org| org.key(&r.record.key_id)) {
        Some(Some(key)) => key,
        _ if !is_leader => return Ok(None),
        None => return Err(refusal(format!("author {author} is not a known organisation"))),
        Some(None) => return Err(refusal(format!("{author} has no key {}", r.record.key_id))),
    };
    // Apply's key rule, checked early: a key revoked here is revoked on the leader too (it
    // is never behind this node), so any node may refuse it.
    if let Some(reason) = key.refusal(author, r.record.time_ms) {
        return Err(refusal(reason));
    }
    Ok(Some(key.public_key))
}

/// Checks submissions a group at a time ([`GroupCommit`]: [`CHECKS_IN_FLIGHT_MAX`] groups
/// at once, each on one blocking thread, up to [`CHECK_RECORDS_MAX`] records). The store is
/// read under one hold of its lock per group, and signatures are verified after it is
/// released. A blocking task per submission, as before, put hundreds of threads on two
/// cores under load, each holding the lock through a signature check while apply waited.
async fn checker(s: Arc<Services>, rx: mpsc::Receiver<CheckJob>) {
    let mut groups = GroupCommit::new(rx, CHECKS_IN_FLIGHT_MAX, CHECK_RECORDS_MAX, usize::MAX, Duration::ZERO);
    while let Some((jobs, slot)) = groups.next().await {
        let s = s.clone();
        tokio::task::spawn_blocking(move || {
            s.check_group(jobs);
            drop(slot);
        });
    }
}

/// Collects queued records into blocks ([`GroupCommit`]: up to `in_flight_max` proposed at
/// once, each within `records_max` and `bytes_max`, lingering `deadline_ms` — 0 by default —
/// for more) and proposes them, answering each waiter with its receipt.
async fn batcher(s: Arc<Services>, rx: mpsc::Receiver<Pending>, cfg: BatchConfig) {
    let linger = Duration::from_millis(cfg.deadline_ms);
    let mut blocks =
        GroupCommit::new(rx, cfg.in_flight_max as usize, cfg.records_max as usize, cfg.bytes_max as usize, linger);
    while let Some((batch, slot)) = blocks.next().await {
        let s = s.clone();
        tokio::spawn(async move {
            propose_batch(&s, batch).await;
            drop(slot);
        });
    }
}

/// On a node that is not the leader: sends queued submissions to the leader, up to
/// [`FORWARDS_IN_FLIGHT_MAX`] requests at once, each carrying every submission queued by
/// the time it leaves ([`GroupCommit`]): a busy follower sends a few large requests per
/// block instead of one per client, which is most of its network work under load.
async fn forwarder(s: Arc<Services>, rx: mpsc::Receiver<ForwardJob>) {
    let mut requests =
        GroupCommit::new(rx, FORWARDS_IN_FLIGHT_MAX, FORWARD_RECORDS_MAX, FORWARD_BYTES_MAX, Duration::ZERO);
    while let Some((jobs, slot)) = requests.next().await {
        let s = s.clone();
        tokio::spawn(async move {
            let (parts, replies): (Vec<Vec<u8>>, Vec<_>) = jobs.into_iter().map(|j| (j.part, j.reply)).unzip();
            match s.forward_parts(parts).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer.map_err(SubmitError::from));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn propose_batch(s: &Arc<Services>, batch: Vec<Pending>) {
    let (records, replies): (Vec<SignedRecord>, Vec<_>) = batch.into_iter().map(|p| (p.record, p.reply)).unzip();
    let ids: Vec<RecordId> = records.iter().map(SignedRecord::id).collect();
    let proposal = Proposal { time_ms: now_ms(), proposer: s.node_id.clone(), records };
    let result = veritrace_consensus::propose(&s.raft, Payload(proposal.encode())).await;
    let receipts = match result {
        Ok(resp) => match AppliedBlock::decode(&resp.data.0) {
            Ok(applied) => Ok(applied.receipts),
            Err(e) => Err(SubmitError::Commit(format!("undecodable apply result: {e}"))),
        },
        Err(e) => Err(SubmitError::Commit(e.to_string())),
    };
    match receipts {
        Ok(receipts) => {
            for ((reply, receipt), id) in replies.into_iter().zip(receipts).zip(ids) {
                let Some(reply) = reply else { continue };
                // A duplicate answers with the receipt of the original, never a second one.
                let receipt = match &receipt.outcome {
                    Outcome::Rejected { code: RejectCode::Duplicate, .. } => {
                        // The store lock is blocking: take it off the runtime's workers.
                        let s2 = s.clone();
                        let original = tokio::task::spawn_blocking(move || {
                            s2.store.read().ok().and_then(|st| st.receipt(&id).ok().flatten())
                        })
                        .await
                        .ok()
                        .flatten();
                        original.unwrap_or(receipt)
                    }
                    _ => receipt,
                };
                let _ = reply.send(Ok(receipt));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "proposing a block failed");
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Answers requests from peers: Raft RPCs, forwarded submissions, checkpoint signatures.
async fn answer_peers(s: Arc<Services>, mut inbound: mpsc::Receiver<Inbound>) {
    while let Some(msg) = inbound.recv().await {
        let s = s.clone();
        tokio::spawn(async move {
            let reply = match msg.request {
                NodeRequest::Raft(rpc) => match raft_sender_refusal(&s, &msg.from, &rpc).await {
                    None => crate::p2p::answer_raft(&s.raft_rpc, rpc).await,
                    Some(reason) => {
                        tracing::warn!(peer = %msg.from, "refused: {reason}");
                        NodeResponse::Refused(reason)
                    }
                },
                NodeRequest::Forward(parts) => {
                    // Each part is one client's submission, decided on its own: a refused
                    // part does not refuse the others it travelled with.
                    let handles: Vec<_> = parts
                        .into_iter()
                        .map(|bytes| {
                            let s = s.clone();
                            tokio::spawn(async move {
                                match codec::decode::<ForwardRequest>("forward", &bytes) {
                                    Ok(req) if s.is_leader() => {
                                        s.submit(req.records, req.wait).await.map_err(Into::into)
                                    }
                                    Ok(_) => Err(ForwardRefusal::Unavailable("not the leader".into())),
                                    Err(e) => Err(ForwardRefusal::Unavailable(e.to_string())),
                                }
                            })
                        })
                        .collect();
                    let mut answers: Vec<ForwardAnswer> = Vec::with_capacity(handles.len());
                    for h in handles {
                        answers.push(h.await.unwrap_or_else(|e| Err(ForwardRefusal::Unavailable(e.to_string()))));
                    }
                    NodeResponse::Forwarded(codec::encode(&answers))
                }
                NodeRequest::Signature(bytes) => {
                    match codec::decode::<SignatureMessage>("checkpoint signature", &bytes) {
                        Ok(m) => {
                            let s2 = s.clone();
                            let _ = tokio::task::spawn_blocking(move || s2.take_signature(m)).await;
                            NodeResponse::Ack
                        }
                        Err(e) => NodeResponse::Refused(e.to_string()),
                    }
                }
            };
            let _ = msg.reply.send(reply);
        });
    }
}

/// Validators sign applied headers at the cadence of [`CheckpointConfig`] and send each
/// signature to every other member: every height that is a multiple of `every_blocks`
/// (only the newest such one when applied headers queue up behind this task), and the head
/// once no newer block follows within `idle_ms`.
async fn sign_checkpoints(
    s: Arc<Services>,
    mut applied: tokio::sync::broadcast::Receiver<BlockHeader>,
    cadence: CheckpointConfig,
) {
    let sends = Arc::new(Semaphore::new(SIGNATURE_SENDS_MAX));
    let idle = Duration::from_millis(cadence.idle_ms);
    let mut last_height = 0;
    // The newest header applied and not signed, signed if the chain pauses after it.
    let mut unsigned: Option<BlockHeader> = None;
    loop {
        let next = match unsigned.take() {
            None => applied.recv().await,
            Some(head) => match tokio::time::timeout(idle, applied.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    sign_and_send(&s, head, &sends).await;
                    continue;
                }
            },
        };
        let header = match next {
            Ok(h) => h,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "checkpoint signer lagged; skipping to newer blocks");
                continue;
            }
            Err(_) => return,
        };
        if header.height > last_height + 1 {
            // A jump (a snapshot installed): the checkpoints it brought may be complete.
            let s2 = s.clone();
            let _ = tokio::task::spawn_blocking(move || s2.recompute_complete_height()).await;
        }
        last_height = header.height;
        let early = s.early_signatures.lock().expect("early signatures lock").remove(&header.height);
        for m in early.into_iter().flatten() {
            let s2 = s.clone();
            let _ = tokio::task::spawn_blocking(move || s2.take_signature(m)).await;
        }
        if signs_at_once(header.height, applied.len() as u64, cadence.every_blocks) {
            sign_and_send(&s, header, &sends).await;
        } else {
            unsigned = Some(header);
        }
    }
}

/// Whether a header at `height`, with `queued` applied headers already waiting behind it,
/// is signed as soon as it is applied: the multiples of `every`, except one that a queued
/// header supersedes (queued headers are the next heights, so they reach the next multiple
/// when `queued >= every`). Every other header is signed only if the chain pauses after it.
fn signs_at_once(height: u64, queued: u64, every: u64) -> bool {
    height.is_multiple_of(every) && queued < every
}

/// Signs `header` if this node is a validator — one in the genesis, or one governance made
/// a validator since (a node it removed stops) — keeps the signature and sends it to every
/// other member: validators gather quorums, observers serve checkpoints too.
async fn sign_and_send(s: &Arc<Services>, header: BlockHeader, sends: &Arc<Semaphore>) {
    let s2 = s.clone();
    let Ok(validators) = tokio::task::spawn_blocking(move || s2.validators()).await else { return };
    if !validators.validators.iter().any(|v| v.public_key == s.public_key && v.node_id == s.node_id) {
        return;
    }
    let signature = header.sign(s.node_id.clone(), &s.node_key);
    let height = header.height;
    let msg = SignatureMessage { header, signature };
    let bytes = codec::encode(&msg);
    let s2 = s.clone();
    let _ = tokio::task::spawn_blocking(move || s2.keep_signature(msg, &validators)).await;
    for m in s.members.all() {
        if m.node_id == s.node_id {
            continue;
        }
        let (Some(peer), addr) = (m.peer_id(), m.addr()) else { continue };
        let Ok(permit) = sends.clone().try_acquire_owned() else {
            tracing::debug!(height, "checkpoint signature sends at capacity; skipping");
            continue;
        };
        let p2p = s.p2p.clone();
        let req = NodeRequest::Signature(bytes.clone());
        tokio::spawn(async move {
            if let Err(e) = p2p.request(peer, addr, req).await {
                tracing::debug!(error = %e, "sending a checkpoint signature");
            }
            drop(permit);
        });
    }
}

/// On the leader: makes Raft's membership follow the ledger — genesis observers as
/// learners, the validator set (genesis, then governance) as voters — one change at a time.
/// A validator governance admitted joins as a learner once the leader knows its address,
/// and becomes a voter once caught up; one it removed, and the genesis does not name, is
/// then taken out of Raft altogether.
async fn reconcile_membership(s: Arc<Services>) {
    let mut tick = tokio::time::interval(MEMBERS_TICK);
    let mut refused_last: Option<BTreeSet<RaftId>> = None;
    let mut unreachable_last: BTreeSet<RaftId> = BTreeSet::new();
    loop {
        tick.tick().await;
        if !s.is_leader() {
            continue;
        }
        let membership = s.raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let known: BTreeSet<RaftId> = membership.nodes().map(|(id, _)| *id).collect();
        let s2 = s.clone();
        let Ok(validators) = tokio::task::spawn_blocking(move || s2.validators()).await else { continue };
        let wanted_voters: BTreeSet<RaftId> = validators.validators.iter().map(|v| raft_id_of(&v.public_key)).collect();
        let wanted_learners: BTreeSet<RaftId> = s.genesis.observers.iter().map(|o| raft_id_of(&o.public_key)).collect();
        let mut unreachable = BTreeSet::new();
        for id in wanted_voters.iter().chain(&wanted_learners) {
            if known.contains(id) {
                continue;
            }
            let Some(m) = s.members.get(id) else { continue };
            if m.peer.addr.is_empty() {
                // Admitted, but it has not connected to say where it listens.
                if !unreachable_last.contains(id) {
                    tracing::info!(node = %m.node_id, "waiting for an admitted node to connect before adding it to raft");
                }
                unreachable.insert(*id);
                continue;
            }
            tracing::info!(node = %m.node_id, addr = %m.peer.addr, "adding raft learner");
            if let Err(e) = s.raft.add_learner(*id, m.peer.clone(), false).await {
                tracing::warn!(node = %m.node_id, error = %e, "adding learner failed");
            }
        }
        unreachable_last = unreachable;
        let wanted_voters: BTreeSet<RaftId> = wanted_voters.into_iter().filter(|id| known.contains(id)).collect();
        if voters == wanted_voters || wanted_voters.is_empty() {
            // Voters as wanted: drop learners nobody wants (a removed validator the genesis
            // does not name), which also ends their admission to the network.
            let stale: BTreeSet<RaftId> = known
                .iter()
                .filter(|id| !voters.contains(id) && !wanted_learners.contains(id) && !s.members.in_genesis(id))
                .copied()
                .collect();
            if !stale.is_empty() {
                tracing::info!(?stale, "removing raft learners no longer admitted");
                if let Err(e) = s.raft.change_membership(ChangeMembers::RemoveNodes(stale), false).await {
                    tracing::warn!(error = %e, "removing learners refused");
                }
            }
            continue;
        }
        // One voter at a time: first add a missing one, else remove a surplus one.
        let mut next = voters.clone();
        if let Some(add) = wanted_voters.difference(&voters).next() {
            next.insert(*add);
        } else if let Some(remove) = voters.difference(&wanted_voters).next() {
            next.remove(remove);
        }
        // Refused while it would lose quorum: the new voter set needs a majority that is
        // connected and caught up, or the cluster would stall (or, removing, lose the
        // nodes that carry it). It is retried every tick, so it goes through once they are.
        let live = live_voters(&s, &next).await;
        let quorum = next.len() / 2 + 1;
        if live.len() < quorum {
            if refused_last.as_ref() != Some(&next) {
                tracing::warn!(
                    ?next,
                    live = live.len(),
                    quorum,
                    "membership change refused for now: it would lose quorum (too few voters connected and caught up)"
                );
                refused_last = Some(next);
            }
            continue;
        }
        refused_last = None;
        tracing::info!(?next, "changing raft voters");
        if let Err(e) = s.raft.change_membership(next, true).await {
            tracing::warn!(error = %e, "membership change refused");
        }
    }
}

/// How often the node brings its member table, allow list and Raft membership in line
/// with the ledger.
pub const MEMBERS_TICK: Duration = Duration::from_millis(500);

/// On every node: keeps the member table ([`Members`]) and with it the network's allow
/// list and dial list in line with the ledger's validator set and Raft's membership.
async fn follow_members(s: Arc<Services>) {
    let mut tick = tokio::time::interval(MEMBERS_TICK);
    loop {
        tick.tick().await;
        let s2 = s.clone();
        let Ok(validators) = tokio::task::spawn_blocking(move || s2.validators()).await else { continue };
        let raft: BTreeMap<RaftId, PeerInfo> = s
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect();
        let identified = s.p2p.identified_addrs().await;
        if !s.members.update(&validators, &raft, &identified) {
            continue;
        }
        let members = s.members.all();
        let allowed = members.iter().filter_map(|m| m.peer_id()).collect();
        let dial =
            members.iter().filter(|m| m.raft_id != s.raft_id).filter_map(|m| Some((m.peer_id()?, m.addr()?))).collect();
        s.p2p.set_members(allowed, dial).await;
    }
}

/// Why a Raft RPC from `from` is refused, if it is: the sender must be a member, the
/// message must name the sender's own Raft id (a member cannot speak for another), and
/// that node must be able to vote — a voter of this node's Raft membership or a validator
/// of its ledger (Raft lets a voter this node has not heard of yet through), or, while
/// this node has no membership yet (it is joining), a validator of the genesis.
async fn raft_sender_refusal(s: &Arc<Services>, from: &libp2p::PeerId, rpc: &RaftRpc) -> Option<String> {
    let Some(member) = s.members.by_peer(from) else {
        return Some(format!("raft message from {from}, which is not a member"));
    };
    let vote = match rpc {
        RaftRpc::AppendEntries(r) => &r.vote,
        RaftRpc::Vote(r) => &r.vote,
        RaftRpc::InstallSnapshot(r) => &r.vote,
    };
    let claimed = vote.leader_id().voted_for();
    if claimed != Some(member.raft_id) {
        return Some(format!(
            "raft message from {} ({}) names raft node {claimed:?}, not its own",
            member.node_id, member.raft_id
        ));
    }
    let (is_voter, joining) = {
        let metrics = s.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        (membership.voter_ids().any(|id| id == member.raft_id), membership.nodes().next().is_none())
    };
    let names =
        |set: &[veritrace_ledger::org::Validator]| set.iter().any(|v| raft_id_of(&v.public_key) == member.raft_id);
    if is_voter || (joining && names(&s.genesis.validators)) {
        return None;
    }
    let s2 = s.clone();
    let validators = tokio::task::spawn_blocking(move || s2.validators()).await.unwrap_or_default();
    (!names(&validators.validators))
        .then(|| format!("raft message from {}, which is not a voting member", member.node_id))
}

/// Raft log entries a voter may lag behind the leader and still count as live.
pub const LIVE_LAG_ENTRIES_MAX: u64 = 64;

/// Of `voters`, those that are live from the leader's view: itself, and every other voter
/// it is connected to over libp2p whose replicated log is within [`LIVE_LAG_ENTRIES_MAX`].
async fn live_voters(s: &Services, voters: &BTreeSet<RaftId>) -> BTreeSet<RaftId> {
    let connected: BTreeSet<String> = s.p2p.connected_peers().await.iter().map(|p| p.to_string()).collect();
    let metrics = s.raft.metrics().borrow().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = |id: &RaftId| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .is_some_and(|l| l.index + LIVE_LAG_ENTRIES_MAX >= last)
    };
    voters
        .iter()
        .filter(|id| {
            **id == s.raft_id || (s.members.get(id).is_some_and(|m| connected.contains(&m.peer.peer_id)) && matched(id))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_sign_the_same_heights_under_load_and_only_the_newest_when_behind() {
        let signed: Vec<u64> = (1..=40).filter(|h| signs_at_once(*h, 0, 8)).collect();
        assert_eq!(signed, [8, 16, 24, 32, 40]);
        // Behind: 16 is superseded by 24, which is queued already; 24 with 7 queued is not.
        assert!(!signs_at_once(16, 8, 8));
        assert!(signs_at_once(24, 7, 8));
        // Every block, as before the cadence, unless a newer one waits.
        assert!((1..=10).all(|h| signs_at_once(h, 0, 1)));
        assert!(!signs_at_once(5, 1, 1));
    }

    /// An item of `records` records and `bytes` bytes, named by `id`.
    struct Item(u32, usize, usize);

    impl Queued for Item {
        fn records(&self) -> usize {
            self.1
        }
        fn bytes(&self) -> usize {
            self.2
        }
    }

    fn ids(group: &[Item]) -> Vec<u32> {
        group.iter().map(|i| i.0).collect()
    }

    #[tokio::test]
    async fn groups_take_what_is_queued_within_the_limits_and_carry_the_rest() {
        let (tx, rx) = mpsc::channel(16);
        // At most 5 records and 100 bytes a group.
        let mut groups = GroupCommit::new(rx, 1, 5, 100, Duration::ZERO);
        for item in [Item(1, 1, 40), Item(2, 1, 40), Item(3, 1, 40), Item(4, 4, 10), Item(5, 9, 10), Item(6, 1, 1)] {
            tx.send(item).await.unwrap();
        }
        // 3 would pass 100 bytes: it opens the next group instead of overshooting.
        let (first, slot) = groups.next().await.unwrap();
        assert_eq!(ids(&first), [1, 2]);
        drop(slot);
        // 5 would pass 5 records with 3 and 4; on its own, past the limit, it goes alone.
        let (second, slot) = groups.next().await.unwrap();
        assert_eq!(ids(&second), [3, 4]);
        drop(slot);
        let (third, slot) = groups.next().await.unwrap();
        assert_eq!(ids(&third), [5]);
        drop(slot);
        drop(tx);
        let (last, slot) = groups.next().await.unwrap();
        assert_eq!(ids(&last), [6]);
        drop(slot);
        assert!(groups.next().await.is_none(), "a closed, empty queue ends");
    }

    #[tokio::test]
    async fn a_group_waits_for_a_free_slot_and_takes_what_queued_meanwhile() {
        let (tx, rx) = mpsc::channel(16);
        let mut groups = GroupCommit::new(rx, 1, 100, 1_000, Duration::ZERO);
        tx.send(Item(1, 1, 1)).await.unwrap();
        let (first, slot) = groups.next().await.unwrap();
        assert_eq!(ids(&first), [1]);
        for id in 2..=4 {
            tx.send(Item(id, 1, 1)).await.unwrap();
        }
        // The only slot is taken: the next group forms once it is released.
        let next = tokio::spawn(async move { groups.next().await.map(|(g, _)| ids(&g)) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished(), "a group formed while every slot was taken");
        tx.send(Item(5, 1, 1)).await.unwrap();
        drop(slot);
        assert_eq!(next.await.unwrap(), Some(vec![2, 3, 4, 5]));
    }
}
