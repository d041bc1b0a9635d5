//! Elections held off on a node while it receives and installs a snapshot.
//!
//! openraft 0.9 lets a follower's election timer run out during a long snapshot install,
//! and the follower then deposes a healthy leader:
//!
//! - the leader sends a follower nothing but the snapshot's chunks while a snapshot is in
//!   flight to it: a heartbeat goes only to a target with nothing in flight (its
//!   `initiate_replication`), and the last chunk is answered only once the install is done;
//! - the chunks do not reset the follower's timer (they go to the snapshot stream, not the
//!   vote); the last one does, once, when the install starts;
//! - a wiped node learns that it is a voter from the snapshot's membership, at that same
//!   moment.
//!
//! So once an install lasts longer than the leader lease plus the election timeout (3–4 s
//! by default; a million records take about 16 s), the follower stands for election the
//! moment it is done, the leader sees the higher term and steps down, and the cluster
//! waits for an election. A lagging voter that needs a snapshot can even stand while the
//! chunks are still arriving.
//!
//! The fix uses openraft's runtime switch (`Raft::runtime_config().elect`): each snapshot
//! chunk turns elections off on the receiving node, and they come back on with the first
//! append-entries the node accepts after the install is over — the leader resumes its
//! heartbeats as soon as the install's reply reaches it. Accepting that request reset the
//! node's timer, so elections never come back on over a timer that already ran out. If no
//! leader is heard from (the leader died during the transfer), they come back on anyway
//! once a snapshot RPC has been quiet for the install-snapshot timeout plus the largest
//! election timeout: the node must be able to stand. Meanwhile it still votes, so the
//! others can elect a leader, whose first append-entries turns its elections back on.
//!
//! A Raft handle has no room for state of ours and a transport holds only the handle, so
//! the holds are kept here, one per Raft node of the process, found by its metrics channel.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use openraft::RaftMetrics;
use tokio::sync::watch;

use crate::types::{ConsensusRaft, NodeId, PeerInfo};

/// A node whose elections are off because of a snapshot: `generation` counts the snapshot
/// RPCs it received, so a fallback timer knows whether another one came since.
struct Hold {
    metrics: watch::Receiver<RaftMetrics<NodeId, PeerInfo>>,
    generation: u64,
}

static HOLDS: Mutex<Vec<Hold>> = Mutex::new(Vec::new());

fn holds() -> std::sync::MutexGuard<'static, Vec<Hold>> {
    HOLDS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the node's state machine is still behind the snapshot it was given (openraft
/// records the snapshot when the install starts and the applied id when it ends).
fn installing(raft: &ConsensusRaft) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.snapshot > m.last_applied
}

/// Called for each snapshot chunk before it reaches Raft: turns elections off and returns
/// the hold's generation, for [`after_snapshot_chunk`].
pub(crate) fn snapshot_chunk_arrived(raft: &ConsensusRaft) -> u64 {
    raft.runtime_config().elect(false);
    let metrics = raft.metrics();
    let mut holds = holds();
    // Nodes that stopped: their metrics sender is gone.
    holds.retain(|h| h.metrics.has_changed().is_ok());
    match holds.iter_mut().find(|h| h.metrics.same_channel(&metrics)) {
        Some(hold) => {
            hold.generation += 1;
            hold.generation
        }
        None => {
            tracing::info!("receiving a snapshot: elections off until a leader is heard from after it");
            holds.push(Hold { metrics, generation: 0 });
            0
        }
    }
}

/// Called once a snapshot chunk was answered: arms the fallback that turns elections back
/// on if neither a leader nor another chunk shows up.
pub(crate) fn after_snapshot_chunk(raft: &ConsensusRaft, generation: u64) {
    let config = raft.config();
    let quiet = Duration::from_millis(config.install_snapshot_timeout + config.election_timeout_max);
    let raft = raft.clone();
    tokio::spawn(async move {
        let mine = |raft: &ConsensusRaft, holds: &[Hold]| {
            let metrics = raft.metrics();
            holds.iter().position(|h| h.metrics.same_channel(&metrics) && h.generation == generation)
        };
        loop {
            tokio::time::sleep(quiet).await;
            // A later chunk armed its own fallback; a leader heard from removed the hold.
            if mine(&raft, &holds()).is_none() {
                return;
            }
            if installing(&raft) {
                continue;
            }
            let mut holds = holds();
            if let Some(at) = mine(&raft, &holds) {
                holds.swap_remove(at);
                raft.runtime_config().elect(true);
                tracing::warn!("no leader heard from since the last snapshot rpc: elections back on");
            }
            return;
        }
    });
}

/// Called when the node accepted an append-entries request (its vote allowed it, so its
/// election timer was just reset): turns elections back on if a snapshot held them off and
/// its install is over.
pub(crate) fn leader_heard(raft: &ConsensusRaft) {
    let metrics = raft.metrics();
    let mut holds = holds();
    let Some(at) = holds.iter().position(|h| h.metrics.same_channel(&metrics)) else { return };
    drop(metrics);
    if installing(raft) {
        return;
    }
    holds.swap_remove(at);
    raft.runtime_config().elect(true);
    tracing::info!("leader heard from after the snapshot install: elections back on");
}
