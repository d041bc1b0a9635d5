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

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::types::ConsensusRaft;

/// One node's hold on its elections, kept by its [`RpcServer`](crate::RpcServer): while a
/// snapshot holds them off, the number of snapshot RPCs received since (counted so that a
/// fallback timer knows whether another one came after it was armed).
#[derive(Clone, Default)]
pub(crate) struct ElectionHold(Arc<Mutex<Option<u64>>>);

/// Whether the node's state machine is still behind the snapshot it was given (openraft
/// records the snapshot when the install starts and the applied id when it ends).
fn installing(raft: &ConsensusRaft) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    m.snapshot > m.last_applied
}

impl ElectionHold {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called for each snapshot chunk before it reaches Raft: turns elections off and
    /// returns the hold's generation, for [`ElectionHold::after_snapshot_chunk`].
    pub(crate) fn snapshot_chunk_arrived(&self, raft: &ConsensusRaft) -> u64 {
        raft.runtime_config().elect(false);
        let mut held = self.held();
        let generation = match *held {
            Some(n) => n + 1,
            None => {
                tracing::info!("receiving a snapshot: elections off until a leader is heard from after it");
                0
            }
        };
        *held = Some(generation);
        generation
    }

    /// Called once a snapshot chunk was answered: arms the fallback that turns elections
    /// back on if neither a leader nor another chunk shows up.
    pub(crate) fn after_snapshot_chunk(&self, raft: &ConsensusRaft, generation: u64) {
        let config = raft.config();
        let quiet = Duration::from_millis(config.install_snapshot_timeout + config.election_timeout_max);
        let (hold, raft) = (self.clone(), raft.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(quiet).await;
                // A later chunk armed its own fallback; a leader heard from ended the hold.
                if *hold.held() != Some(generation) {
                    return;
                }
                if installing(&raft) {
                    continue;
                }
                let mut held = hold.held();
                if *held == Some(generation) {
                    *held = None;
                    raft.runtime_config().elect(true);
                    tracing::warn!("no leader heard from since the last snapshot rpc: elections back on");
                }
                return;
            }
        });
    }

    /// Called when the node accepted an append-entries request (its vote allowed it, so its
    /// election timer was just reset): turns elections back on if a snapshot held them off
    /// and its install is over.
    pub(crate) fn leader_heard(&self, raft: &ConsensusRaft) {
        let mut held = self.held();
        if held.is_none() || installing(raft) {
            return;
        }
        *held = None;
        raft.runtime_config().elect(true);
        tracing::info!("leader heard from after the snapshot install: elections back on");
    }
}
