//! The append-only Merkle log: RFC 9162 (Certificate Transparency v2) §2.1 tree shape,
//! hashed with blake3.
//!
//! # Tree shape
//!
//! For an ordered list of `n` leaf inputs `D[n]` the Merkle Tree Hash is
//!
//! ```text
//! MTH({})      = blake3("")
//! MTH({d0})    = blake3(0x00 || d0)                              (leaf_hash)
//! MTH(D[n])    = blake3(0x01 || MTH(D[0:k]) || MTH(D[k:n]))     (node_hash)
//!                where k is the largest power of two smaller than n
//! ```
//!
//! The distinct 0x00 / 0x01 prefixes keep a leaf from ever being passed off as an interior
//! node (second-preimage resistance). Inclusion proofs (`PATH`, §2.1.3) and consistency
//! proofs (`PROOF` / `SUBPROOF`, §2.1.4) are the RFC's, bit for bit, so any RFC 9162
//! verifier that swaps SHA-256 for blake3 accepts them.
//!
//! # Storage: perfect subtrees only
//!
//! The store holds one hash per *perfect* subtree: node `(level L, index i)` is the MTH of
//! leaves `[i·2^L, (i+1)·2^L)` and is written once the last of those leaves exists; level 0
//! holds the leaf hashes. Because the log is append-only, a perfect subtree is final the
//! moment it is complete, so nodes are write-once and every historical tree size can be
//! served from the same set of nodes: no per-size snapshots, no rewrites, and an append of
//! `b` leaves writes fewer than `2b` nodes.
//!
//! Non-perfect subtrees (the ragged right edge of a tree of size `n`) are never stored.
//! Every subtree the RFC recursion visits is left-aligned on a multiple of its own
//! rounded-up power of two, so its hash is a right-to-left fold of the perfect subtrees in
//! the binary decomposition of its width, `popcount(width) <= 64` reads.
//!
//! # Why proofs cost O(log n) reads
//!
//! * `root_at(n)`: one read per set bit of `n`.
//! * Inclusion: the audit path walks from the root down; each step contributes one sibling.
//!   A sibling to the *left* is always a perfect subtree (one read). A sibling to the *right*
//!   may be ragged, but once the path steps left it is inside a perfect subtree and every
//!   later sibling is perfect; so at most one sibling is a fold, giving
//!   `depth + popcount(n) <= 2·log2(n) + 1` reads.
//! * Consistency: the same argument applies to `SUBPROOF`'s descent, so again at most one
//!   ragged fold plus one read per level.
//! * Append: the right-edge frontier (one perfect subtree per set bit of the old size) is
//!   read once, then kept in memory, so appending `b` leaves costs `popcount(size)` reads
//!   and about `2b` hashes, not `b·log n` reads.
//!
//! Each root, proof and append works out every node it needs before reading any, then asks
//! the store for all of them in one call ([`LogNodeStore::log_nodes`]), which a store can
//! answer from a cache and one batched read.
//!
//! # Size-0 convention for consistency
//!
//! RFC 9162 defines `PROOF(m, D[n])` only for `0 < m <= n`. We treat the empty tree as a
//! prefix of every tree: `consistency_proof(store, 0, n)` is the empty proof, and
//! `verify_consistency(0, n, old_root, new_root, [])` succeeds iff `old_root` is the
//! empty-tree root (and, for `n == 0`, `new_root` is too). Nothing can be checked about
//! `new_root` when `n > 0`; callers must authenticate it (a signed tree head) separately.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash32, StorageError};

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// A u64 size has at most 64 set bits, so a tree has at most 64 levels of perfect subtrees.
const MAX_LEVELS: usize = 64;

/// `blake3(0x00 || input)`: the hash of one log entry.
pub fn leaf_hash(input: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]);
    h.update(input);
    h.finalize().into()
}

/// `blake3(0x01 || left || right)`: an interior node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE_PREFIX]);
    h.update(left.as_bytes());
    h.update(right.as_bytes());
    h.finalize().into()
}

/// `blake3("")`: the root of the tree with no leaves.
pub fn empty_root() -> Hash32 {
    blake3::hash(b"").into()
}

/// Read access to the perfect-subtree hashes of the log.
pub trait LogNodeStore {
    /// The hash of node `(level, index)`, covering leaves `[index·2^level, (index+1)·2^level)`,
    /// or `None` if it has not been written.
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError>;

    /// Several nodes, answered in the order asked. Roots, proofs and appends know every node
    /// they need before they read any, and ask for them in one call; a store that can fetch
    /// many keys faster than one at a time (RocksDB's batched multi-get, a cache) overrides
    /// this.
    fn log_nodes(&self, nodes: &[(u8, u64)]) -> Result<Vec<Option<Hash32>>, StorageError> {
        nodes.iter().map(|&(level, index)| self.log_node(level, index)).collect()
    }
}

/// A `HashMap`-backed [`LogNodeStore`] for tests and small tools.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    nodes: HashMap<(u8, u64), Hash32>,
}

impl MemLogStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, level: u8, index: u64, hash: Hash32) {
        self.nodes.insert((level, index), hash);
    }

    /// Writes every node of an [`append`] result.
    pub fn apply(&mut self, append: &LogAppend) {
        for &(level, index, hash) in &append.nodes {
            self.insert(level, index, hash);
        }
    }

    /// Number of stored nodes.
    pub fn len(&self) -> u64 {
        self.nodes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl LogNodeStore for MemLogStore {
    fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
        Ok(self.nodes.get(&(level, index)).copied())
    }
}

/// Failure while building a root or proof from the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("log node missing from store: level {level}, index {index}")]
    MissingNode { level: u8, index: u64 },
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old_size} exceeds new tree size {new_size}")]
    OldSizeExceedsNewSize { old_size: u64, new_size: u64 },
    #[error("appending {count} leaves to a log of size {size} overflows u64")]
    SizeOverflow { size: u64, count: u64 },
}

/// A proof that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old_size} exceeds new tree size {new_size}")]
    OldSizeExceedsNewSize { old_size: u64, new_size: u64 },
    #[error("wrong proof length: expected {expected} hashes, got {got}")]
    WrongProofLength { expected: u64, got: u64 },
    #[error("root mismatch: computed {computed}, expected {expected}")]
    RootMismatch { computed: Hash32, expected: Hash32 },
    #[error("old root mismatch: computed {computed}, expected {expected}")]
    OldRootMismatch { computed: Hash32, expected: Hash32 },
    #[error("new root mismatch: computed {computed}, expected {expected}")]
    NewRootMismatch { computed: Hash32, expected: Hash32 },
    #[error("tree size {size} given with two different roots: old {old_root}, new {new_root}")]
    SameSizeRootsDiffer { size: u64, old_root: Hash32, new_root: Hash32 },
}

/// The outcome of [`append`]: nodes to write atomically, and the resulting tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    /// Every perfect subtree completed by the append, as `(level, index, hash)`, in creation
    /// order (children before parents).
    pub nodes: Vec<(u8, u64, Hash32)>,
    pub new_size: u64,
    pub new_root: Hash32,
}

/// Largest power of two strictly below `n`, for `n >= 2`: the RFC's split point `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The stored nodes a root, proof or append is made of, listed before anything is read so
/// that the store can fetch them in one call ([`LogNodeStore::log_nodes`]). Each part of
/// the result is one perfect subtree or the hash of a ragged range, folded from the
/// perfect subtrees of the range's binary decomposition.
struct Plan {
    nodes: Vec<(u8, u64)>,
    /// Where each part's nodes end in `nodes`; a part starts where the one before ended.
    ends: Vec<usize>,
}

impl Plan {
    /// An empty plan, with room for the nodes of any proof: at most one ragged range (up to
    /// 64 nodes) plus one node per level.
    fn new() -> Plan {
        Plan { nodes: Vec::with_capacity(2 * MAX_LEVELS), ends: Vec::with_capacity(MAX_LEVELS) }
    }

    /// The perfect subtree `[start, start + width)`; `width` is a power of two and `start`
    /// a multiple of it, which the RFC recursion guarantees for every left half it produces.
    fn perfect(&mut self, start: u64, width: u64) {
        let level = width.trailing_zeros() as u8;
        self.nodes.push((level, start >> level));
        self.ends.push(self.nodes.len());
    }

    /// MTH of leaves `[start, end)`, `start < end`, for a range the RFC recursion can produce
    /// (`start` aligned to the power of two at or above the width). Such a range splits into
    /// the perfect subtrees of its width's binary decomposition, largest first.
    fn range(&mut self, start: u64, end: u64) {
        debug_assert!(start < end);
        let width = end - start;
        let mut pos = start;
        for level in (0..MAX_LEVELS as u8).rev() {
            if width >> level & 1 == 1 {
                self.nodes.push((level, pos >> level));
                pos += 1 << level;
            }
        }
        self.ends.push(self.nodes.len());
    }

    /// Reads every planned node in one call and returns the parts, in plan order. The first
    /// missing node, in plan order, is the error.
    fn read(self, store: &impl LogNodeStore) -> Result<Vec<Hash32>, MerkleError> {
        let got = store.log_nodes(&self.nodes)?;
        if got.len() != self.nodes.len() {
            return Err(MerkleError::Storage(StorageError(format!(
                "asked the store for {} log nodes, got {}",
                self.nodes.len(),
                got.len()
            ))));
        }
        let hashes = self
            .nodes
            .iter()
            .zip(got)
            .map(|(&(level, index), h)| h.ok_or(MerkleError::MissingNode { level, index }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut start = 0;
        Ok(self
            .ends
            .iter()
            .map(|&end| {
                let part = fold_right(&hashes[start..end]);
                start = end;
                part
            })
            .collect())
    }
}

/// MTH nests the smaller (rightmost) subtrees on the right, hence the right-to-left fold.
/// Every planned part has at least one node; the empty root is only a fallback.
fn fold_right(parts: &[Hash32]) -> Hash32 {
    parts.iter().rev().copied().reduce(|right, left| node_hash(&left, &right)).unwrap_or_else(empty_root)
}

/// Computes the nodes completed by appending `leaves` (leaf hashes, see [`leaf_hash`]) to a
/// log of `size` leaves, and the new root. Reads only the `popcount(size)` frontier nodes;
/// nothing is written, the caller persists `nodes` atomically.
pub fn append(store: &impl LogNodeStore, size: u64, leaves: &[Hash32]) -> Result<LogAppend, MerkleError> {
    let count = u64::try_from(leaves.len()).unwrap_or(u64::MAX);
    let new_size = size.checked_add(count).ok_or(MerkleError::SizeOverflow { size, count })?;

    // frontier[L] is occupied exactly when bit L of the current size is set: it is the
    // rightmost complete subtree at that level that has no parent yet. Appending a leaf is
    // then a binary increment, each carry hashing a frontier entry with the new right child.
    let mut frontier: [Option<Hash32>; MAX_LEVELS] = [None; MAX_LEVELS];
    let mut plan = Plan::new();
    let levels: Vec<usize> = (0..MAX_LEVELS).filter(|level| size >> level & 1 == 1).collect();
    for &level in &levels {
        plan.perfect(((size >> level) - 1) << level, 1 << level);
    }
    for (level, hash) in levels.into_iter().zip(plan.read(store)?) {
        frontier[level] = Some(hash);
    }

    let mut nodes = Vec::with_capacity(leaves.len().saturating_mul(2));
    for (pos, leaf) in (size..new_size).zip(leaves) {
        let mut hash = *leaf;
        let mut level = 0usize;
        let mut index = pos;
        nodes.push((0, pos, hash));
        while let Some(left) = frontier[level].take() {
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            nodes.push((level as u8, index, hash));
        }
        frontier[level] = Some(hash);
    }

    Ok(LogAppend { nodes, new_size, new_root: fold_frontier(&frontier) })
}

/// Root from the per-level frontier: smaller (rightmost) subtrees nest on the right.
fn fold_frontier(frontier: &[Option<Hash32>; MAX_LEVELS]) -> Hash32 {
    frontier.iter().flatten().copied().reduce(|right, left| node_hash(&left, &right)).unwrap_or_else(empty_root)
}

/// MTH of the first `size` leaves, for any size the store has reached.
pub fn root_at(store: &impl LogNodeStore, size: u64) -> Result<Hash32, MerkleError> {
    if size == 0 {
        return Ok(empty_root());
    }
    let mut plan = Plan::new();
    plan.range(0, size);
    Ok(plan.read(store)?.pop().unwrap_or_else(empty_root))
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[size])`: sibling hashes ordered leaf to root.
pub fn inclusion_proof(store: &impl LogNodeStore, index: u64, size: u64) -> Result<Vec<Hash32>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // Walk the recursion top-down (root to leaf) and reverse at the end, since
    // PATH(m, D[n]) = PATH(m', child) : sibling puts the outermost sibling last.
    let mut plan = Plan::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            plan.range(mid, hi);
            hi = mid;
        } else {
            plan.perfect(lo, mid - lo);
            lo = mid;
        }
    }
    let mut path = plan.read(store)?;
    path.reverse();
    Ok(path)
}

/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[new_size])`. Empty when `old_size` is 0 or equal to
/// `new_size` (see the module docs for the size-0 convention).
pub fn consistency_proof(store: &impl LogNodeStore, old_size: u64, new_size: u64) -> Result<Vec<Hash32>, MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OldSizeExceedsNewSize { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // Iterative SUBPROOF(m, D[lo:hi], whole): `whole` is the RFC's flag b, true while the
    // old tree is still the entire left edge of the current subtree, in which case the
    // verifier already knows its hash and it is omitted.
    let mut plan = Plan::new();
    let (mut lo, mut hi, mut whole) = (0u64, new_size, true);
    loop {
        if old_size == hi {
            if !whole {
                plan.range(lo, hi);
            }
            break;
        }
        let mid = lo + split_point(hi - lo);
        if old_size <= mid {
            plan.range(mid, hi);
            hi = mid;
        } else {
            plan.perfect(lo, mid - lo);
            lo = mid;
            whole = false;
        }
    }
    let mut path = plan.read(store)?;
    path.reverse();
    Ok(path)
}

/// Audit path length the RFC 9162 §2.1.3.2 loop consumes for `index < size`: the same
/// index arithmetic with the hashing left out, so the length can be reported up front.
fn inclusion_proof_len(index: u64, size: u64) -> u64 {
    let (mut fnode, mut snode) = (index, size - 1);
    let mut len = 0;
    while snode != 0 {
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
        len += 1;
    }
    len
}

/// Proof length the RFC 9162 §2.1.4.2 loop consumes for `0 < old_size < new_size`.
fn consistency_proof_len(old_size: u64, new_size: u64) -> u64 {
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut steps = 0;
    while snode != 0 {
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
        steps += 1;
    }
    // The seed hash is the old root itself when old_size is a power of two (step 2 prepends
    // it); otherwise the proof must carry it.
    if old_size.is_power_of_two() { steps } else { steps + 1 }
}

fn proof_len(proof: &[Hash32]) -> u64 {
    u64::try_from(proof.len()).unwrap_or(u64::MAX)
}

/// RFC 9162 §2.1.3.2: checks that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// with root `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash32,
    index: u64,
    size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let got = proof_len(proof);
    if got != expected {
        return Err(ProofError::WrongProofLength { expected, got });
    }

    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        // Unreachable after the length check; kept so the loop reads as the RFC's.
        if snode == 0 {
            return Err(ProofError::WrongProofLength { expected, got });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength { expected, got });
    }
    if r != *root {
        return Err(ProofError::RootMismatch { computed: r, expected: *root });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree (`old_size`, `old_root`) is a prefix of the tree
/// (`new_size`, `new_root`). Equal sizes need an empty proof and equal roots; `old_size == 0`
/// needs an empty proof and the empty-tree root (module docs).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let expected = if old_size == 0 || old_size == new_size { 0 } else { consistency_proof_len(old_size, new_size) };
    let got = proof_len(proof);
    if got != expected {
        return Err(ProofError::WrongProofLength { expected, got });
    }
    if old_size == new_size && old_root != new_root {
        return Err(ProofError::SameSizeRootsDiffer { size: old_size, old_root: *old_root, new_root: *new_root });
    }
    if old_size == 0 && *old_root != empty_root() {
        return Err(ProofError::OldRootMismatch { computed: empty_root(), expected: *old_root });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(());
    }

    // Step 2 prepends old_root when old_size is a power of two; seeding from it directly
    // avoids copying the proof.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(ProofError::WrongProofLength { expected, got }),
        }
    };

    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        // Unreachable after the length check; kept so the loop reads as the RFC's.
        if snode == 0 {
            return Err(ProofError::WrongProofLength { expected, got });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength { expected, got });
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch { computed: fr, expected: *old_root });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch { computed: sr, expected: *new_root });
    }
    Ok(())
}

/// An inclusion proof as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub path: Vec<Hash32>,
}

impl InclusionProof {
    pub fn from_store(store: &impl LogNodeStore, index: u64, size: u64) -> Result<Self, MerkleError> {
        Ok(Self { index, size, path: inclusion_proof(store, index, size)? })
    }

    pub fn verify(&self, leaf_hash: &Hash32, root: &Hash32) -> Result<(), ProofError> {
        verify_inclusion(leaf_hash, self.index, self.size, &self.path, root)
    }
}

/// A consistency proof as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<Hash32>,
}

impl ConsistencyProof {
    pub fn from_store(store: &impl LogNodeStore, old_size: u64, new_size: u64) -> Result<Self, MerkleError> {
        Ok(Self { old_size, new_size, path: consistency_proof(store, old_size, new_size)? })
    }

    pub fn verify(&self, old_root: &Hash32, new_root: &Hash32) -> Result<(), ProofError> {
        verify_consistency(self.old_size, self.new_size, old_root, new_root, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    // ---- reference implementation, transcribed from the RFC 9162 §2.1 recursions ----

    fn ref_split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn ref_mth(d: &[Vec<u8>]) -> Hash32 {
        match d.len() {
            0 => empty_root(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = ref_split(n);
                node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
            }
        }
    }

    fn ref_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash32> {
        let n = d.len();
        if n == 1 {
            return Vec::new();
        }
        let k = ref_split(n);
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    fn ref_proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash32> {
        ref_subproof(m, d, true)
    }

    fn ref_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash32> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![ref_mth(d)] };
        }
        let k = ref_split(n);
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], b);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    // ---- fixtures ----

    fn leaf_input(i: u64) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    fn leaf_hashes(range: std::ops::Range<u64>) -> Vec<Hash32> {
        range.map(|i| leaf_hash(&leaf_input(i))).collect()
    }

    /// A log of `n` leaves built with one `append` call.
    fn build_store(n: u64) -> MemLogStore {
        let mut store = MemLogStore::new();
        let out = append(&store, 0, &leaf_hashes(0..n)).expect("append to empty store");
        store.apply(&out);
        store
    }

    fn flipped(path: &[Hash32], at: usize) -> Vec<Hash32> {
        let mut p = path.to_vec();
        p[at].0[at % 32] ^= 0x01;
        p
    }

    struct CountingStore<'a> {
        inner: &'a MemLogStore,
        reads: Cell<u64>,
    }

    impl<'a> CountingStore<'a> {
        fn new(inner: &'a MemLogStore) -> Self {
            Self { inner, reads: Cell::new(0) }
        }

        fn take_reads(&self) -> u64 {
            self.reads.replace(0)
        }
    }

    impl LogNodeStore for CountingStore<'_> {
        fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.log_node(level, index)
        }
    }

    struct FailingStore;

    impl LogNodeStore for FailingStore {
        fn log_node(&self, _: u8, _: u64) -> Result<Option<Hash32>, StorageError> {
            Err(StorageError("disk unplugged".into()))
        }
    }

    /// Serves only the nodes of a log of `base_size` leaves from `base` (which may hold
    /// more), plus whatever was written on top: appends starting at `base_size` must not
    /// lean on nodes they are supposed to create.
    struct Overlay<'a> {
        base: &'a MemLogStore,
        base_size: u64,
        top: MemLogStore,
    }

    impl LogNodeStore for Overlay<'_> {
        fn log_node(&self, level: u8, index: u64) -> Result<Option<Hash32>, StorageError> {
            let end = (index + 1).checked_shl(u32::from(level)).unwrap_or(u64::MAX);
            if end <= self.base_size { self.base.log_node(level, index) } else { self.top.log_node(level, index) }
        }
    }

    const BIG: u64 = 100_000;

    /// A 100,000-leaf log built one leaf at a time, with the root after every append.
    struct BigLog {
        store: MemLogStore,
        roots: Vec<Hash32>,
    }

    fn big_log() -> &'static BigLog {
        static LOG: OnceLock<BigLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let mut store = MemLogStore::new();
            let mut roots = vec![empty_root()];
            for (size, leaf) in (0..BIG).zip(leaf_hashes(0..BIG)) {
                let out = append(&store, size, &[leaf]).expect("single append");
                store.apply(&out);
                roots.push(out.new_root);
            }
            BigLog { store, roots }
        })
    }

    fn root_of(log: &BigLog, size: u64) -> Hash32 {
        log.roots[usize::try_from(size).expect("size fits usize")]
    }

    fn nodes_for_size(size: u64) -> u64 {
        (0..64).map(|level| size >> level).sum()
    }

    // ---- exhaustive checks against the reference for small trees ----

    #[test]
    fn hash_primitives_are_domain_separated() {
        assert_eq!(empty_root(), Hash32::from(blake3::hash(b"")));
        assert_eq!(leaf_hash(b"x"), Hash32::from(blake3::hash(b"\x00x")));
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut cat = vec![0x01];
        cat.extend_from_slice(a.as_bytes());
        cat.extend_from_slice(b.as_bytes());
        assert_eq!(node_hash(&a, &b), Hash32::from(blake3::hash(&cat)));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        assert_ne!(leaf_hash(&cat[1..]), node_hash(&a, &b));
    }

    #[test]
    fn roots_match_reference_for_sizes_0_to_64() {
        let inputs: Vec<Vec<u8>> = (0..64).map(leaf_input).collect();
        let mut store = MemLogStore::new();
        assert_eq!(root_at(&store, 0).unwrap(), empty_root());
        for size in 0..64u64 {
            let out = append(&store, size, &[leaf_hash(&inputs[size as usize])]).unwrap();
            store.apply(&out);
            assert_eq!(out.new_size, size + 1);
            assert_eq!(out.new_root, ref_mth(&inputs[..=size as usize]), "size {}", size + 1);
            assert_eq!(store.len(), nodes_for_size(size + 1));
        }
        // Every historical root stays servable from the final store.
        for size in 0..=64u64 {
            assert_eq!(root_at(&store, size).unwrap(), ref_mth(&inputs[..size as usize]), "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_reference_for_sizes_up_to_64() {
        let inputs: Vec<Vec<u8>> = (0..64).map(leaf_input).collect();
        let store = build_store(64);
        for size in 1..=64u64 {
            let d = &inputs[..size as usize];
            let root = ref_mth(d);
            for index in 0..size {
                let leaf = leaf_hash(&inputs[index as usize]);
                let path = inclusion_proof(&store, index, size).unwrap();
                assert_eq!(path, ref_path(index as usize, d), "({index}, {size})");
                verify_inclusion(&leaf, index, size, &path, &root).unwrap_or_else(|e| panic!("({index}, {size}): {e}"));

                for at in 0..path.len() {
                    let bad = flipped(&path, at);
                    assert!(matches!(
                        verify_inclusion(&leaf, index, size, &bad, &root),
                        Err(ProofError::RootMismatch { .. })
                    ));
                }
                let other_leaf = leaf_hash(b"not in the log");
                assert!(verify_inclusion(&other_leaf, index, size, &path, &root).is_err());
                for wrong in [index.wrapping_sub(1), index + 1, size - 1 - index, 0] {
                    if wrong != index && wrong < size {
                        assert!(
                            verify_inclusion(&leaf, wrong, size, &path, &root).is_err(),
                            "index {index} proof accepted at {wrong}, size {size}"
                        );
                    }
                }
                for wrong in [size - 1, size + 1] {
                    if wrong > index && wrong != size && wrong <= 64 {
                        let wrong_root = ref_mth(&inputs[..wrong as usize]);
                        assert!(
                            verify_inclusion(&leaf, index, wrong, &path, &wrong_root).is_err(),
                            "({index}, {size}) proof accepted at size {wrong}"
                        );
                    }
                }
                let mut longer = path.clone();
                longer.push(root);
                assert!(matches!(
                    verify_inclusion(&leaf, index, size, &longer, &root),
                    Err(ProofError::WrongProofLength { .. })
                ));
                if !path.is_empty() {
                    assert!(matches!(
                        verify_inclusion(&leaf, index, size, &path[1..], &root),
                        Err(ProofError::WrongProofLength { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_match_reference_for_sizes_up_to_64() {
        let inputs: Vec<Vec<u8>> = (0..64).map(leaf_input).collect();
        let roots: Vec<Hash32> = (0..=64).map(|n| ref_mth(&inputs[..n])).collect();
        let store = build_store(64);
        for new in 1..=64u64 {
            let d = &inputs[..new as usize];
            let new_root = roots[new as usize];
            for old in 1..=new {
                let old_root = roots[old as usize];
                let path = consistency_proof(&store, old, new).unwrap();
                assert_eq!(path, ref_proof(old as usize, d), "({old}, {new})");
                verify_consistency(old, new, &old_root, &new_root, &path)
                    .unwrap_or_else(|e| panic!("({old}, {new}): {e}"));

                for at in 0..path.len() {
                    let bad = flipped(&path, at);
                    assert!(
                        verify_consistency(old, new, &old_root, &new_root, &bad).is_err(),
                        "({old}, {new}) tampered at {at} accepted"
                    );
                }
                if old < new {
                    assert!(verify_consistency(old, new, &new_root, &new_root, &path).is_err());
                    assert!(verify_consistency(old, new, &old_root, &old_root, &path).is_err());
                } else {
                    assert!(path.is_empty());
                }
                for wrong_old in [old - 1, old + 1] {
                    if wrong_old > 0 && wrong_old <= new && wrong_old != old {
                        let r = roots[wrong_old as usize];
                        assert!(
                            verify_consistency(wrong_old, new, &r, &new_root, &path).is_err(),
                            "({old}, {new}) proof accepted for old size {wrong_old}"
                        );
                    }
                }
                for wrong_new in [new - 1, new + 1] {
                    if wrong_new >= old && wrong_new <= 64 && wrong_new != new {
                        let r = roots[wrong_new as usize];
                        assert!(
                            verify_consistency(old, wrong_new, &old_root, &r, &path).is_err(),
                            "({old}, {new}) proof accepted for new size {wrong_new}"
                        );
                    }
                }
                let mut longer = path.clone();
                longer.push(new_root);
                assert!(matches!(
                    verify_consistency(old, new, &old_root, &new_root, &longer),
                    Err(ProofError::WrongProofLength { .. })
                ));
                if !path.is_empty() {
                    assert!(matches!(
                        verify_consistency(old, new, &old_root, &new_root, &path[1..]),
                        Err(ProofError::WrongProofLength { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn old_size_zero_is_consistent_with_any_tree_via_the_empty_root() {
        let store = build_store(10);
        for new in 0..=10u64 {
            let new_root = root_at(&store, new).unwrap();
            let path = consistency_proof(&store, 0, new).unwrap();
            assert!(path.is_empty());
            verify_consistency(0, new, &empty_root(), &new_root, &path).unwrap();
            assert_eq!(
                verify_consistency(0, new, &new_root, &new_root, &path).err(),
                (new > 0).then_some(ProofError::OldRootMismatch { computed: empty_root(), expected: new_root }),
            );
            assert_eq!(
                verify_consistency(0, new, &empty_root(), &new_root, &[new_root]),
                Err(ProofError::WrongProofLength { expected: 0, got: 1 })
            );
        }
        let bogus = leaf_hash(b"bogus");
        assert_eq!(
            verify_consistency(0, 0, &bogus, &bogus, &[]),
            Err(ProofError::OldRootMismatch { computed: empty_root(), expected: bogus })
        );
    }

    #[test]
    fn verifier_errors_name_the_values() {
        let h = leaf_hash(b"x");
        let g = leaf_hash(b"y");
        let e = verify_inclusion(&h, 5, 5, &[], &h).unwrap_err();
        assert_eq!(e, ProofError::IndexOutOfRange { index: 5, size: 5 });
        assert_eq!(e.to_string(), "leaf index 5 is out of range for tree size 5");

        let e = verify_inclusion(&h, 0, 4, &[h], &h).unwrap_err();
        assert_eq!(e, ProofError::WrongProofLength { expected: 2, got: 1 });
        assert_eq!(e.to_string(), "wrong proof length: expected 2 hashes, got 1");

        let e = verify_inclusion(&h, 0, 1, &[], &g).unwrap_err();
        assert_eq!(e.to_string(), format!("root mismatch: computed {}, expected {}", h.to_hex(), g.to_hex()));

        let e = verify_consistency(3, 2, &h, &h, &[]).unwrap_err();
        assert_eq!(e.to_string(), "old tree size 3 exceeds new tree size 2");

        let e = verify_consistency(7, 7, &h, &g, &[]).unwrap_err();
        assert_eq!(e, ProofError::SameSizeRootsDiffer { size: 7, old_root: h, new_root: g });
        assert!(e.to_string().starts_with("tree size 7 given with two different roots"));

        // 3 -> 4: seed D[2], then D[3] and D[0:2] (RFC 9162 §2.1.4.3 example shape).
        let e = verify_consistency(3, 4, &h, &g, &[]).unwrap_err();
        assert_eq!(e, ProofError::WrongProofLength { expected: 3, got: 0 });

        let store = build_store(8);
        let e = root_at(&store, 9).unwrap_err();
        assert_eq!(e, MerkleError::MissingNode { level: 0, index: 8 });
        assert_eq!(e.to_string(), "log node missing from store: level 0, index 8");
    }

    #[test]
    fn store_failures_are_errors_not_panics() {
        let store = build_store(8);
        assert_eq!(inclusion_proof(&store, 8, 8), Err(MerkleError::IndexOutOfRange { index: 8, size: 8 }));
        assert_eq!(
            consistency_proof(&store, 9, 8),
            Err(MerkleError::OldSizeExceedsNewSize { old_size: 9, new_size: 8 })
        );
        assert!(matches!(inclusion_proof(&store, 0, 12), Err(MerkleError::MissingNode { .. })));
        assert!(matches!(consistency_proof(&store, 3, 12), Err(MerkleError::MissingNode { .. })));
        assert!(matches!(append(&MemLogStore::new(), 5, &[leaf_hash(b"x")]), Err(MerkleError::MissingNode { .. })));
        let failing = FailingStore;
        let storage = MerkleError::Storage(StorageError("disk unplugged".into()));
        assert_eq!(root_at(&failing, 3), Err(storage.clone()));
        assert_eq!(inclusion_proof(&failing, 1, 3), Err(storage.clone()));
        assert_eq!(consistency_proof(&failing, 1, 3), Err(storage.clone()));
        assert_eq!(append(&failing, 3, &[]), Err(storage.clone()));
        assert_eq!(storage.to_string(), "storage: disk unplugged");
        // Nothing to read: the empty tree and empty proofs never touch the store.
        assert_eq!(root_at(&failing, 0), Ok(empty_root()));
        assert_eq!(consistency_proof(&failing, 3, 3), Ok(Vec::new()));
        assert_eq!(
            append(&failing, u64::MAX, &[leaf_hash(b"x")]),
            Err(MerkleError::SizeOverflow { size: u64::MAX, count: 1 })
        );
    }

    #[test]
    fn empty_append_is_a_no_op() {
        let store = build_store(13);
        let out = append(&store, 13, &[]).unwrap();
        assert!(out.nodes.is_empty());
        assert_eq!(out.new_size, 13);
        assert_eq!(out.new_root, root_at(&store, 13).unwrap());
    }

    #[test]
    fn transport_structs_wrap_the_verifiers() {
        let store = build_store(21);
        let root = root_at(&store, 21).unwrap();
        let old_root = root_at(&store, 6).unwrap();
        let leaf = leaf_hash(&leaf_input(17));

        let incl = InclusionProof::from_store(&store, 17, 21).unwrap();
        assert_eq!(incl.path, inclusion_proof(&store, 17, 21).unwrap());
        incl.verify(&leaf, &root).unwrap();
        assert!(incl.verify(&leaf, &old_root).is_err());

        let cons = ConsistencyProof::from_store(&store, 6, 21).unwrap();
        assert_eq!(cons.path, consistency_proof(&store, 6, 21).unwrap());
        cons.verify(&old_root, &root).unwrap();
        assert!(cons.verify(&root, &root).is_err());
    }

    // ---- cost ----

    #[test]
    fn proofs_at_a_million_leaves_take_logarithmic_reads() {
        // 2^20 - 1: every bit set, the worst case for ragged right edges.
        const N: u64 = (1 << 20) - 1;
        let store = build_store(N);
        let counting = CountingStore::new(&store);
        let sizes = [N, 1_000_000, 999_999, 524_289, 524_288];
        for size in sizes {
            let bound = 3 * u64::from(64 - (size - 1).leading_zeros());
            let root = root_at(&counting, size).unwrap();
            assert!(counting.take_reads() <= u64::from(size.count_ones()));

            for index in [0, 1, size / 3, size / 2, size - 2, size - 1] {
                let path = inclusion_proof(&counting, index, size).unwrap();
                let reads = counting.take_reads();
                assert!(reads <= bound, "inclusion ({index}, {size}): {reads} reads");
                verify_inclusion(&leaf_hash(&leaf_input(index)), index, size, &path, &root).unwrap();
            }
            for old in [1, 2, 3, 1000, 65_537, size / 2, size - 1] {
                let old_root = root_at(&store, old).unwrap();
                let path = consistency_proof(&counting, old, size).unwrap();
                let reads = counting.take_reads();
                assert!(reads <= bound, "consistency ({old}, {size}): {reads} reads");
                verify_consistency(old, size, &old_root, &root, &path).unwrap();
            }
        }

        // An append of 1000 leaves reads only the frontier of the old size.
        let out = append(&counting, 1_000_000, &leaf_hashes(1_000_000..1_001_000)).unwrap();
        assert!(counting.take_reads() <= u64::from(1_000_000u64.count_ones()));
        assert_eq!(out.new_root, root_at(&store, 1_001_000).unwrap());
    }

    // ---- properties against the 100,000-leaf log ----

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_proofs_verify_against_root_at(
            (size, index, old) in (1..=BIG).prop_flat_map(|n| (Just(n), 0..n, 0..=n)),
        ) {
            let log = big_log();
            let root = root_at(&log.store, size).unwrap();
            prop_assert_eq!(root, root_of(log, size));
            let old_root = root_at(&log.store, old).unwrap();
            prop_assert_eq!(old_root, root_of(log, old));

            let leaf = leaf_hash(&leaf_input(index));
            let path = inclusion_proof(&log.store, index, size).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &path, &root), Ok(()));
            for at in 0..path.len() {
                let bad = flipped(&path, at);
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            if index + 1 < size {
                prop_assert!(verify_inclusion(&leaf, index + 1, size, &path, &root).is_err());
            }
            if size < BIG {
                let bigger = root_of(log, size + 1);
                prop_assert!(verify_inclusion(&leaf, index, size + 1, &path, &bigger).is_err());
            }

            let proof = consistency_proof(&log.store, old, size).unwrap();
            prop_assert_eq!(verify_consistency(old, size, &old_root, &root, &proof), Ok(()));
            for at in 0..proof.len() {
                let bad = flipped(&proof, at);
                prop_assert!(verify_consistency(old, size, &old_root, &root, &bad).is_err());
            }
            if 1 < old && old < size {
                let smaller = root_of(log, old - 1);
                prop_assert!(verify_consistency(old - 1, size, &smaller, &root, &proof).is_err());
            }
        }

        #[test]
        fn batched_appends_match_single_appends(
            start in 0..BIG - 4_000,
            batches in prop::collection::vec(0usize..500, 1..8),
        ) {
            let log = big_log();
            let mut store = Overlay { base: &log.store, base_size: start, top: MemLogStore::new() };
            let mut size = start;
            for batch in batches {
                let end = size + batch as u64;
                let out = append(&store, size, &leaf_hashes(size..end)).unwrap();
                prop_assert_eq!(out.new_size, end);
                prop_assert_eq!(out.new_root, root_of(log, end));
                prop_assert_eq!(out.nodes.len() as u64, nodes_for_size(end) - nodes_for_size(size));
                for &(level, index, hash) in &out.nodes {
                    prop_assert_eq!(log.store.log_node(level, index).unwrap(), Some(hash));
                }
                store.top.apply(&out);
                size = end;
            }
            prop_assert_eq!(root_at(&store, size).unwrap(), root_of(log, size));
        }
    }
}
