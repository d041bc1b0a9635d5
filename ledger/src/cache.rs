//! The store's in-memory caches: the upper levels of the Merkle log, the state-map nodes and
//! the state entries the last blocks wrote.
//!
//! Each cache holds exactly what the backend holds for the keys it has, so reading through
//! it cannot change an answer: log nodes and state-map nodes never change once written, and
//! a state entry changes only when the store commits a block, which updates the cache in the
//! same step. The store fills them only in `&mut self` methods (open, commit, snapshot
//! install), so readers sharing the store need no lock. Every cache has a named bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::hash::Hash32;
use crate::smt::SmtNode;
use crate::state::{StateKey, StateValue, StateWrite};

/// Most Merkle-log node hashes kept in memory (the log cache): 32 MiB of hashes, every level
/// from 1 up at a million leaves (a proof then reads one node from the backend), from 11 up
/// at a billion.
pub const LOG_CACHE_NODES_MAX: u64 = 1 << 20;
/// Most state-map nodes kept in memory (the state-map cache), about 8 MiB.
pub const SMT_CACHE_NODES_MAX: usize = 1 << 16;
/// Most state entries kept in memory (the state cache). Only subject, organisation and
/// validator-set entries are kept (the contents of a logistic unit can be large), so about
/// 32 MiB at worst and a few MiB for the usual subject entries.
pub const STATE_CACHE_ENTRIES_MAX: usize = 1 << 16;

/// The upper levels of the Merkle log, so that a proof reads only its lowest few nodes from
/// the backend. A perfect subtree never changes once complete, so a copy cannot go stale: the
/// store loads the levels on open and every committed block appends the nodes it completed.
/// Each cached level is a prefix of that level's nodes (`levels[l - min_level][i]` is node
/// `(l, i)`); reads past it go to the backend. The lowest level held rises as the log grows,
/// keeping at most [`LOG_CACHE_NODES_MAX`] hashes (tests choose a smaller bound).
pub(crate) struct LogTop {
    max_nodes: u64,
    min_level: u8,
    levels: Vec<Vec<Hash32>>,
}

impl Default for LogTop {
    fn default() -> Self {
        LogTop::empty(LOG_CACHE_NODES_MAX)
    }
}

impl LogTop {
    /// An empty cache that will hold at most `max_nodes` hashes.
    pub(crate) fn empty(max_nodes: u64) -> LogTop {
        LogTop { max_nodes, min_level: 0, levels: Vec::new() }
    }

    pub(crate) fn max_nodes(&self) -> u64 {
        self.max_nodes
    }

    /// The lowest level whose nodes, with those of every level above, fit in `max_nodes`
    /// for a log of `size` leaves.
    pub(crate) fn min_level_for(size: u64, max_nodes: u64) -> u8 {
        (0u8..64).find(|&l| (l..64).map(|k| size >> k).sum::<u64>() <= max_nodes).unwrap_or(64)
    }

    /// Levels from `min_level` up, each a gap-free prefix of that level's nodes.
    pub(crate) fn new(max_nodes: u64, min_level: u8, levels: Vec<Vec<Hash32>>) -> LogTop {
        LogTop { max_nodes, min_level, levels }
    }

    pub(crate) fn get(&self, level: u8, index: u64) -> Option<Hash32> {
        let nodes = self.levels.get(usize::from(level.checked_sub(self.min_level)?))?;
        nodes.get(usize::try_from(index).ok()?).copied()
    }

    fn len(&self) -> u64 {
        self.levels.iter().map(|l| l.len() as u64).sum()
    }

    /// Drops the lowest levels the bound no longer allows at the new `size`, then adds the
    /// nodes a committed block completed (in creation order, so each level's indexes ascend).
    pub(crate) fn extend(&mut self, nodes: &[(u8, u64, Hash32)], size: u64) {
        let min = Self::min_level_for(size, self.max_nodes);
        while self.min_level < min {
            if !self.levels.is_empty() {
                self.levels.remove(0);
            }
            self.min_level += 1;
        }
        for &(level, index, hash) in nodes {
            let Some(at) = level.checked_sub(self.min_level).map(usize::from) else { continue };
            if self.levels.len() <= at {
                self.levels.resize_with(at + 1, Vec::new);
            }
            if self.levels[at].len() as u64 == index {
                self.levels[at].push(hash);
            }
        }
        debug_assert!(self.len() <= self.max_nodes, "log cache holds {} nodes", self.len());
    }
}

/// Hashes a [`Hash32`] key by its own leading bytes: keys here are blake3 outputs of data
/// nobody can steer to a chosen hash, so they are spread evenly already, and SipHash over 32
/// bytes would cost more than the lookup it serves.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type DigestMap<V> = HashMap<Hash32, V, BuildHasherDefault<DigestHasher>>;

/// State-map nodes the store itself wrote lately, so that an update finds the paths the last
/// blocks rewrote (the levels near the root, rewritten by every block) in memory. Readers
/// still hash every node they get ([`crate::smt`] checks each against the hash it asked for),
/// so the cache does not weaken that check. Emptied when full, then refilled with the latest
/// block's nodes, so it always holds the current root's newest paths.
#[derive(Default)]
pub(crate) struct RecentSmtNodes {
    nodes: DigestMap<SmtNode>,
}

impl RecentSmtNodes {
    pub(crate) fn get(&self, hash: &Hash32) -> Option<&SmtNode> {
        self.nodes.get(hash)
    }

    pub(crate) fn extend(&mut self, mut nodes: Vec<(Hash32, SmtNode)>) {
        if self.nodes.len() + nodes.len() > SMT_CACHE_NODES_MAX {
            self.nodes.clear();
        }
        // Nodes come in post-order: the last ones are the new root and the paths under it.
        let skip = nodes.len().saturating_sub(SMT_CACHE_NODES_MAX);
        self.nodes.extend(nodes.drain(skip..));
    }
}

/// Current state entries the last blocks wrote, decoded: the subjects a ledger is busy with
/// and the organisations signing for them, so apply does not read and decode them again.
/// Holds the value the States column family holds for each key it has (a commit writes both),
/// never an older one. Emptied when full, then refilled with the latest block's entries —
/// except the validator set, which every checkpoint signature is checked against: it stays
/// (see [`RecentStates::pin_validators`]).
#[derive(Default)]
pub(crate) struct RecentStates {
    states: HashMap<StateKey, StateValue>,
    validators: Option<StateValue>,
}

impl RecentStates {
    pub(crate) fn get(&self, key: &StateKey) -> Option<&StateValue> {
        match key {
            StateKey::Validators => self.validators.as_ref(),
            _ => self.states.get(key),
        }
    }

    /// Keeps the current validator set (read from the store on open) until a block
    /// changes it.
    pub(crate) fn pin_validators(&mut self, value: StateValue) {
        self.validators = Some(value);
    }

    pub(crate) fn extend(&mut self, mut states: Vec<StateWrite>) {
        if let Some(at) = states.iter().position(|s| s.key == StateKey::Validators) {
            self.validators = Some(states.swap_remove(at).value);
        }
        let n = states.iter().filter(|s| !matches!(s.value, StateValue::Contents(_))).count();
        if self.states.len() + n > STATE_CACHE_ENTRIES_MAX {
            self.states.clear();
        }
        for s in states {
            if matches!(s.value, StateValue::Contents(_)) {
                // A logistic unit's contents: not kept, and no older copy may stay behind.
                self.states.remove(&s.key);
            } else if self.states.len() < STATE_CACHE_ENTRIES_MAX {
                self.states.insert(s.key, s.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_top_keeps_the_bound_and_gap_free_prefixes() {
        let max = LOG_CACHE_NODES_MAX;
        assert_eq!(LogTop::min_level_for(0, max), 0);
        assert_eq!(LogTop::min_level_for(100_000, max), 0);
        assert_eq!(LogTop::min_level_for(1_000_000, max), 1);
        assert_eq!(LogTop::min_level_for(1_000_000_000, max), 11);
        let h = |l: u8, i: u64| Hash32(*blake3::hash(&[&[l][..], &i.to_be_bytes()].concat()).as_bytes());
        let mut top = LogTop::default();
        // Leaves 0..4 complete nodes (0,0..4), (1,0..2), (2,0).
        let nodes: Vec<_> = [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1), (2, 0)]
            .into_iter()
            .map(|(l, i)| (l, i, h(l, i)))
            .collect();
        top.extend(&nodes, 4);
        assert_eq!(top.get(2, 0), Some(h(2, 0)));
        assert_eq!(top.get(0, 3), Some(h(0, 3)));
        assert_eq!(top.get(0, 4), None);
        // A node after a gap is not kept: the backend answers for it.
        top.extend(&[(0, 6, h(0, 6))], 7);
        assert_eq!(top.get(0, 6), None);
        // Past the bound the lowest levels go.
        top.extend(&[], 2_000_000);
        assert_eq!(top.get(0, 0), None);
        assert_eq!(top.get(1, 0), None);
        assert_eq!(top.get(2, 0), Some(h(2, 0)));
    }
}
