//! When this node builds its snapshots: every `raft.snapshot_interval` applied entries, at a
//! phase of the interval of its own, so that the members of a network do not all build at
//! the same log index.
//!
//! openraft's own policy (`LogsSinceLast`) snapshots every member at the same index, since
//! they apply the same log: a flush of every column family, a checkpoint and a file of
//! hundreds of MB, on every validator at once. On a machine the members share, or behind a
//! leader that needs a quorum of them, that is one stall of all of them instead of three
//! smaller ones apart (docs/performance.md, session 13). So openraft is told never to
//! snapshot on its own (`SnapshotPolicy::Never`) and [`schedule`] asks it to, through
//! `Raft::trigger`, when this node reaches its next index of [`next_snapshot_at`].

use openraft::LogIdOptionExt;
use tokio::sync::watch;
use veritrace_consensus::ConsensusRaft;

/// The applied log index at which a member builds its next snapshot.
///
/// The members, in the order of their Raft ids, take phases spread evenly over the interval:
/// member `rank` of `members` snapshots at `interval · rank / members + k · interval`. The
/// next of those indexes comes at least half an interval after `since` (the newest snapshot
/// this node has, or the index it last asked one at), so a snapshot installed from the
/// leader, whose index is the leader's phase, is not followed by one of this node's own a
/// few entries later. Between two snapshots there are half an interval to one and a half.
pub fn next_snapshot_at(interval: u64, rank: u64, members: u64, since: u64) -> u64 {
    let interval = interval.max(1);
    let phase = ((u128::from(interval) * u128::from(rank)) / u128::from(members.max(1))) as u64 % interval;
    let floor = since.saturating_add(interval / 2);
    if floor < phase {
        return phase;
    }
    let steps = (floor - phase) / interval + 1;
    phase.saturating_add(steps.saturating_mul(interval))
}

/// When to ask for the next snapshot, from what the metrics say.
///
/// openraft skips a snapshot asked for while one is being built. So the index asked at only
/// stands while no snapshot older than it completes: when the one under way finishes below
/// it, the ask was skipped, and the next is due from that snapshot: usually at once.
#[derive(Debug, Default)]
struct Asks {
    /// The applied index at the last ask, while it may still be honoured.
    asked_at: u64,
    /// The newest snapshot seen.
    seen: u64,
}

impl Asks {
    /// Whether to ask now, given this node's newest snapshot, its applied index and where
    /// the next one falls due; records the ask.
    fn ask_now(&mut self, snapshot: u64, applied: u64, due_from: impl Fn(u64) -> u64) -> bool {
        if snapshot > self.seen {
            self.seen = snapshot;
            if snapshot < self.asked_at {
                self.asked_at = snapshot;
            }
        }
        if applied >= due_from(self.seen.max(self.asked_at)) {
            self.asked_at = applied;
            return true;
        }
        false
    }
}

/// Asks Raft for a snapshot each time this node's applied index reaches
/// [`next_snapshot_at`], until `shutdown` is set or Raft stops. The node's rank (how many
/// members have a smaller Raft id) and the number of members are read from the membership
/// in force, so they follow governance.
pub async fn schedule(raft: ConsensusRaft, interval: u64, mut shutdown: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    let mut asks = Asks::default();
    loop {
        let asked = {
            // Runs at every applied block: counts the members, collects nothing.
            let m = metrics.borrow_and_update();
            let members = m.membership_config.membership().nodes().count() as u64;
            let rank = m.membership_config.membership().nodes().filter(|(id, _)| **id < m.id).count() as u64;
            let applied = m.last_applied.index().unwrap_or(0);
            let snapshot = m.snapshot.index().unwrap_or(0);
            asks.ask_now(snapshot, applied, |since| next_snapshot_at(interval, rank, members, since))
                .then_some((applied, snapshot))
        };
        if let Some((applied, snapshot)) = asked {
            tracing::info!(applied, snapshot, "asking for a snapshot");
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "raft stopped; snapshots are no longer scheduled");
                return;
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_snapshots_every_interval_at_a_phase_of_its_own() {
        let (interval, members) = (900, 3);
        let run = |rank| {
            let mut at = vec![next_snapshot_at(interval, rank, members, 0)];
            while at.len() < 4 {
                at.push(next_snapshot_at(interval, rank, members, *at.last().unwrap()));
            }
            at
        };
        assert_eq!(run(0), [900, 1800, 2700, 3600]);
        assert_eq!(run(1), [1200, 2100, 3000, 3900]);
        assert_eq!(run(2), [600, 1500, 2400, 3300]);
        // A node that built its snapshot a few entries late keeps its phase.
        assert_eq!(next_snapshot_at(interval, 1, members, 1207), 2100);
    }

    #[test]
    fn after_an_installed_snapshot_the_next_own_one_is_at_least_half_an_interval_away() {
        for since in [0, 1, 299, 300, 301, 599, 600, 601, 1_000_003] {
            for rank in 0..4 {
                let next = next_snapshot_at(600, rank, 4, since);
                assert!(next >= since + 300 && next <= since + 900, "rank {rank} since {since}: {next}");
                assert_eq!(next % 600, 150 * rank, "rank {rank} keeps its phase");
            }
        }
    }

    #[test]
    fn an_ask_skipped_while_a_snapshot_was_built_is_made_again_when_that_one_finishes() {
        let due = |since| next_snapshot_at(20, 0, 1, since);
        let mut asks = Asks::default();
        assert!(!asks.ask_now(0, 19, due));
        assert!(asks.ask_now(0, 20, due), "due at 20");
        // openraft builds it at 23 (what was applied when the build began), slowly. The
        // next falls due at 40 and is asked for at 41, while that build is under way: openraft
        // skips it.
        assert!(!asks.ask_now(0, 30, due));
        assert!(asks.ask_now(0, 41, due));
        assert!(!asks.ask_now(0, 44, due), "one ask per interval");
        // The build at 23 completes, below the ask: the ask was skipped and is made again.
        assert!(asks.ask_now(23, 45, due), "the ask at 41 was skipped");
        // Honoured (built at 46, after the ask): the next is due an interval on.
        assert!(!asks.ask_now(46, 50, due));
        assert!(!asks.ask_now(46, 59, due));
        assert!(asks.ask_now(46, 60, due));
    }

    #[test]
    fn odd_inputs_give_an_index_not_a_panic() {
        assert_eq!(next_snapshot_at(1, 0, 1, 0), 1);
        assert_eq!(next_snapshot_at(0, 0, 0, 5), 6);
        // A rank past the members (a node not yet in the membership) still lands in the interval.
        assert_eq!(next_snapshot_at(1000, 5, 3, 0), 666);
        assert_eq!(next_snapshot_at(u64::MAX, 1, 2, u64::MAX), u64::MAX);
    }
}
