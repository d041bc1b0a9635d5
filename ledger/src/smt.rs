//! The subject state map: an authenticated map from 32-byte keys (blake3 of a subject id) to
//! 32-byte value hashes (blake3 of the subject's canonical state bytes). Its root hash goes into
//! every block header, and an auditor checks membership and non-membership proofs against that
//! root offline with nothing but [`verify`].
//!
//! # Shape
//!
//! The map is a binary sparse Merkle tree over the 256 key bits, with each leaf compressed to
//! the shortest prefix that sets it apart (like Diem's Jellyfish Merkle tree, but binary). Bit
//! `d` of a key is bit `7 - d % 8` of byte `d / 8`, so bit 0 is the most significant bit of byte
//! 0; at depth `d` a path goes left when bit `d` is 0 and right when it is 1. Every subtree has
//! exactly one form, which makes the root a pure function of the map's contents, independent of
//! insertion order and batching:
//!
//! * a subtree holding no key is *empty*;
//! * a subtree holding one key is that key's *leaf*, placed where the subtree starts, with no
//!   chain of internal nodes and empty siblings above it;
//! * a subtree holding two or more keys is an *internal* node whose children are the subtrees
//!   for bit `d` = 0 and bit `d` = 1. One of them may be empty when all the keys agree on bit
//!   `d`, but then the other holds at least two keys and is itself internal.
//!
//! # Hashing
//!
//! ```text
//! empty                     = 32 zero bytes (Hash32::ZERO)
//! leaf(key, value_hash)     = blake3(0x10 || key || value_hash)
//! internal(left, right)     = blake3(0x11 || left || right)
//! ```
//!
//! The prefixes 0x10 and 0x11 keep these hashes apart from each other and from the Merkle log's
//! 0x00 and 0x01. The root of the empty map is the empty hash. A node is stored under its hash
//! as 66 bytes, `0x01 (encoding version) || tag || 64 bytes`, where the tag is the node's hash
//! prefix (0x10 leaf, 0x11 internal) and the 64 bytes are `key || value_hash` or
//! `left || right`; a node's hash is therefore blake3 of its encoding minus the version byte.
//!
//! # Proofs
//!
//! A proof for `key` ([`SmtProof`]) walks from the root along the bits of `key` until it meets a
//! leaf or an empty subtree. `siblings[i]` is the hash of the other child at depth `i`, listed
//! from the root down, so the walk ends at depth `d = siblings.len()` (at most 256); `leaf` is
//! the `(key, value_hash)` of the leaf met there, or `None` for an empty subtree. To verify
//! that `key` maps to `v` (membership) or is absent (non-membership, `v` = none):
//!
//! 1. reject more than 256 siblings;
//! 2. membership requires a leaf whose key is `key` and whose value hash is `v`;
//!    non-membership requires either no leaf, or a leaf whose key differs from `key` but shares
//!    its first `d` bits (that other key owns the whole subtree, so `key` cannot be in it);
//! 3. reject, as non-canonical, a non-empty path whose last sibling is empty (that leaf would
//!    have been hoisted, and an internal node cannot have two empty children) and an empty
//!    subtree at depth 256 (an internal node at depth 255 holds exactly two keys, one per side);
//! 4. start from the leaf hash (or the empty hash) and, for `i` from `d - 1` down to 0, hash
//!    `internal(current, siblings[i])` if bit `i` of `key` is 0, else
//!    `internal(siblings[i], current)`; the result must equal the root.
//!
//! Given the canonical shape and the domain-separated hashes, each (root, key) pair has exactly
//! one valid proof, barring blake3 collisions.
//!
//! # Storage, deletion and pruning
//!
//! Storage is content-addressed and versionless: node hash -> node. [`update`] never changes
//! or removes a node; it returns the nodes of the new paths for the caller to write atomically
//! next to the block that commits the new root. Old roots therefore stay readable, which is
//! how proofs against an older checkpoint's root keep working. Nothing is ever deleted:
//! pruning is deliberately absent. So is key deletion, because subjects are never removed from
//! the ledger; without it a subtree never shrinks, so an update never has to hoist a leaf.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash32, StorageError};

/// Number of key bits, and so the greatest depth a node can sit at.
const KEY_BITS: u16 = 256;
const LEAF_PREFIX: u8 = 0x10;
const INTERNAL_PREFIX: u8 = 0x11;
const ENCODING_VERSION: u8 = 1;
const ENCODED_LEN: usize = 66;

/// A stored node. Empty subtrees have no node: they are [`Hash32::ZERO`] in their parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmtNode {
    Internal { left: Hash32, right: Hash32 },
    Leaf { key: Hash32, value_hash: Hash32 },
}

impl SmtNode {
    pub fn hash(&self) -> Hash32 {
        match self {
            SmtNode::Internal { left, right } => internal_hash(left, right),
            SmtNode::Leaf { key, value_hash } => leaf_hash(key, value_hash),
        }
    }

    /// `0x01 || tag || 64 bytes`, see the module doc.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_array().to_vec()
    }

    /// [`SmtNode::encode`] without allocating.
    pub fn encode_array(&self) -> [u8; ENCODED_LEN] {
        let (tag, a, b) = self.parts();
        let mut out = [0u8; ENCODED_LEN];
        out[0] = ENCODING_VERSION;
        out[1] = tag;
        out[2..34].copy_from_slice(a.as_bytes());
        out[34..].copy_from_slice(b.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SmtNode, SmtError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(SmtError::EncodingLength(0));
        };
        if version != ENCODING_VERSION {
            return Err(SmtError::EncodingVersion(version));
        }
        let Some((&tag, body)) = rest.split_first() else {
            return Err(SmtError::EncodingLength(bytes.len()));
        };
        if tag != LEAF_PREFIX && tag != INTERNAL_PREFIX {
            return Err(SmtError::EncodingTag(tag));
        }
        let Ok::<&[u8; 64], _>(body) = body.try_into() else {
            return Err(SmtError::EncodingLength(bytes.len()));
        };
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&body[..32]);
        b.copy_from_slice(&body[32..]);
        let (a, b) = (Hash32(a), Hash32(b));
        Ok(if tag == LEAF_PREFIX {
            SmtNode::Leaf { key: a, value_hash: b }
        } else {
            SmtNode::Internal { left: a, right: b }
        })
    }

    fn parts(&self) -> (u8, &Hash32, &Hash32) {
        match self {
            SmtNode::Internal { left, right } => (INTERNAL_PREFIX, left, right),
            SmtNode::Leaf { key, value_hash } => (LEAF_PREFIX, key, value_hash),
        }
    }
}

fn hash_parts(prefix: u8, a: &Hash32, b: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = prefix;
    buf[1..33].copy_from_slice(a.as_bytes());
    buf[33..].copy_from_slice(b.as_bytes());
    blake3::hash(&buf).into()
}

fn leaf_hash(key: &Hash32, value_hash: &Hash32) -> Hash32 {
    hash_parts(LEAF_PREFIX, key, value_hash)
}

fn internal_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    hash_parts(INTERNAL_PREFIX, left, right)
}

/// Bit `depth` of `key`, most significant bit of byte 0 first. `depth` must be below 256;
/// callers only ask for bits of paths that still have an internal node to descend through.
fn bit(key: &Hash32, depth: u16) -> bool {
    let byte = key.0[usize::from(depth / 8)];
    (byte >> (7 - depth % 8)) & 1 == 1
}

/// How many leading bits `a` and `b` share (256 when equal).
fn shared_prefix_bits(a: &Hash32, b: &Hash32) -> u16 {
    let mut bits = 0u16;
    for (x, y) in a.0.iter().zip(b.0.iter()) {
        let diff = x ^ y;
        if diff != 0 {
            // leading_zeros of a non-zero u8 is at most 7, so it fits.
            return bits + diff.leading_zeros() as u16;
        }
        bits += 8;
    }
    bits
}

/// Errors from reading or updating the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtError {
    #[error("reading the state map: {0}")]
    Storage(#[from] StorageError),
    #[error("state map node {0} is missing from the store")]
    MissingNode(Hash32),
    #[error("state map node {requested} is corrupt: the stored node hashes to {actual}")]
    NodeHashMismatch { requested: Hash32, actual: Hash32 },
    #[error("state map node {hash} at depth {depth} is corrupt: {reason}")]
    CorruptNode { hash: Hash32, depth: u16, reason: String },
    #[error("state map node encoding must be {ENCODED_LEN} bytes, got {0}")]
    EncodingLength(usize),
    #[error("unsupported state map node encoding version {0}, expected {ENCODING_VERSION}")]
    EncodingVersion(u8),
    #[error("unknown state map node tag {0:#04x}, expected 0x10 (leaf) or 0x11 (internal)")]
    EncodingTag(u8),
}

/// Reasons a proof does not check out. Each names the values involved so that an auditor's
/// report can say exactly what disagreed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtProofError {
    #[error("proof has {0} siblings, but a key's path is at most 256 long")]
    TooManySiblings(usize),
    #[error(
        "non-canonical proof: the last sibling (depth {depth}) is empty, so the subtree at the \
         end of the path would have been hoisted"
    )]
    EmptyLastSibling { depth: u16 },
    #[error("non-canonical proof: it ends in an empty subtree at depth 256, which cannot occur")]
    EmptyAtFullDepth,
    #[error("key {key} is claimed absent, but the proof ends in its leaf with value hash {value_hash}")]
    KeyPresent { key: Hash32, value_hash: Hash32 },
    #[error("key {key} is claimed present, but the proof ends in an empty subtree at depth {depth}")]
    EndsInEmpty { key: Hash32, depth: u16 },
    #[error(
        "key {key} is claimed present, but the proof ends in the leaf of key {leaf_key} at depth \
         {depth}"
    )]
    EndsInOtherLeaf { key: Hash32, leaf_key: Hash32, depth: u16 },
    #[error(
        "leaf key {leaf_key} shares only {shared} leading bits with key {key}, but the proof's \
         path is {depth} bits long"
    )]
    LeafOffPath { key: Hash32, leaf_key: Hash32, shared: u16, depth: u16 },
    #[error("key {key} has value hash {actual} in the proof, expected {expected}")]
    ValueMismatch { key: Hash32, expected: Hash32, actual: Hash32 },
    #[error("root mismatch: proof computes {computed}, expected {expected}")]
    RootMismatch { computed: Hash32, expected: Hash32 },
}

/// Read access to content-addressed nodes. `Ok(None)` means the store has no such node; the
/// tree functions turn that into [`SmtError::MissingNode`].
pub trait SmtNodeStore {
    fn smt_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StorageError>;
}

/// An in-memory store, for tests and tools.
#[derive(Clone, Debug, Default)]
pub struct MemSmtStore(HashMap<Hash32, SmtNode>);

impl MemSmtStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `node` under `hash` as given, the way a database write would: the hash is not
    /// checked here but on every read.
    pub fn insert(&mut self, hash: Hash32, node: SmtNode) {
        self.0.insert(hash, node);
    }

    /// Stores `node` under its own hash and returns that hash.
    pub fn insert_node(&mut self, node: SmtNode) -> Hash32 {
        let hash = node.hash();
        self.0.insert(hash, node);
        hash
    }

    /// Writes every node of an update.
    pub fn apply(&mut self, update: &SmtUpdate) {
        self.0.reserve(update.nodes.len());
        for (hash, node) in &update.nodes {
            self.insert(*hash, node.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl SmtNodeStore for MemSmtStore {
    fn smt_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StorageError> {
        Ok(self.0.get(hash).cloned())
    }
}

/// The outcome of [`update`]: the new root and the nodes it needs that the old root's tree did
/// not have, to be written atomically with whatever commits `new_root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtUpdate {
    pub new_root: Hash32,
    pub nodes: Vec<(Hash32, SmtNode)>,
}

/// A membership or non-membership proof; see the module doc for how to check one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SmtProof {
    /// Sibling hashes along the key's path, from the root down.
    pub siblings: Vec<Hash32>,
    /// The `(key, value_hash)` of the leaf at the end of the path, `None` for an empty subtree.
    pub leaf: Option<(Hash32, Hash32)>,
}

/// Reads a node and checks it really is the node asked for, so that a corrupt store cannot
/// slip wrong data into proofs or into the nodes of a new root.
fn load(store: &impl SmtNodeStore, hash: &Hash32) -> Result<SmtNode, SmtError> {
    let node = store.smt_node(hash)?.ok_or(SmtError::MissingNode(*hash))?;
    let actual = node.hash();
    if actual != *hash {
        return Err(SmtError::NodeHashMismatch { requested: *hash, actual });
    }
    Ok(node)
}

fn internal_too_deep(hash: Hash32) -> SmtError {
    SmtError::CorruptNode { hash, depth: KEY_BITS, reason: "internal node below the last key bit".to_string() }
}

/// Inserts or overwrites `key -> value_hash` for every entry of `changes` in the tree rooted at
/// `root`; when a key appears more than once the last entry wins. Nothing is written: the
/// returned [`SmtUpdate`] lists the new nodes. There is no deletion (subjects are never removed
/// from the ledger).
///
/// Changes are sorted by key and applied in one pass, so every touched node is read once and
/// rebuilt once: about `k * log2(n)` reads and writes for `k` changes into `n` keys. Because each
/// path is rebuilt in a single visit, the pass never needs to read back a node it made itself;
/// the list of new nodes is the only overlay.
pub fn update(store: &impl SmtNodeStore, root: Hash32, changes: &[(Hash32, Hash32)]) -> Result<SmtUpdate, SmtError> {
    let mut sorted = changes.to_vec();
    // Stable, so entries for one key keep their order and the last one can win below.
    sorted.sort_by_key(|change| change.0);
    let mut deduped: Vec<(Hash32, Hash32)> = Vec::with_capacity(sorted.len());
    for (key, value_hash) in sorted {
        match deduped.last_mut() {
            Some(last) if last.0 == key => last.1 = value_hash,
            _ => deduped.push((key, value_hash)),
        }
    }
    let mut updater = Updater { store, nodes: Vec::new() };
    let new_root = updater.apply(root, 0, &deduped)?;
    Ok(SmtUpdate { new_root, nodes: updater.nodes })
}

struct Updater<'s, S> {
    store: &'s S,
    /// New nodes in post-order, so the nodes made under one subtree form a suffix that can be
    /// dropped when that subtree comes out unchanged.
    nodes: Vec<(Hash32, SmtNode)>,
}

impl<S: SmtNodeStore> Updater<'_, S> {
    fn put(&mut self, node: SmtNode) -> Hash32 {
        let hash = node.hash();
        self.nodes.push((hash, node));
        hash
    }

    /// Applies `changes` (sorted, distinct keys, all sharing the subtree's `depth`-bit path) to
    /// the subtree `hash` at `depth` and returns the new subtree hash.
    fn apply(&mut self, hash: Hash32, depth: u16, changes: &[(Hash32, Hash32)]) -> Result<Hash32, SmtError> {
        let Some(first) = changes.first() else {
            return Ok(hash);
        };
        if hash == Hash32::ZERO {
            return Ok(self.build(depth, changes));
        }
        let mark = self.nodes.len();
        let new_hash = match load(self.store, &hash)? {
            SmtNode::Leaf { key, value_hash } => {
                let shared = shared_prefix_bits(&key, &first.0);
                if shared < depth {
                    return Err(SmtError::CorruptNode {
                        hash,
                        depth,
                        reason: format!("leaf key {key} shares only {shared} bits with the path of key {}", first.0),
                    });
                }
                match changes.binary_search_by(|c| c.0.cmp(&key)) {
                    // The leaf's own key is among the changes and overrides it.
                    Ok(_) => self.build(depth, changes),
                    Err(pos) => {
                        let mut merged = Vec::with_capacity(changes.len() + 1);
                        merged.extend_from_slice(&changes[..pos]);
                        merged.push((key, value_hash));
                        merged.extend_from_slice(&changes[pos..]);
                        self.build(depth, &merged)
                    }
                }
            }
            SmtNode::Internal { left, right } => {
                if depth >= KEY_BITS {
                    return Err(internal_too_deep(hash));
                }
                let split = changes.partition_point(|c| !bit(&c.0, depth));
                let (to_left, to_right) = changes.split_at(split);
                let new_left = self.apply(left, depth + 1, to_left)?;
                let new_right = self.apply(right, depth + 1, to_right)?;
                // Keys are only ever added, so a subtree with two or more keys keeps them and
                // stays internal: no hoisting is needed.
                self.put(SmtNode::Internal { left: new_left, right: new_right })
            }
        };
        if new_hash == hash {
            // Rewriting values to what they were: the subtree already exists in the store.
            self.nodes.truncate(mark);
        }
        Ok(new_hash)
    }

    /// Builds the canonical subtree at `depth` for `entries` (sorted, distinct keys sharing the
    /// `depth`-bit path).
    fn build(&mut self, depth: u16, entries: &[(Hash32, Hash32)]) -> Hash32 {
        match entries {
            [] => Hash32::ZERO,
            [(key, value_hash)] => self.put(SmtNode::Leaf { key: *key, value_hash: *value_hash }),
            _ => {
                // Two distinct keys sharing `depth` bits differ at some bit >= depth, so
                // depth < 256 here and `bit` is in range.
                let split = entries.partition_point(|e| !bit(&e.0, depth));
                let (to_left, to_right) = entries.split_at(split);
                let left = self.build(depth + 1, to_left);
                let right = self.build(depth + 1, to_right);
                self.put(SmtNode::Internal { left, right })
            }
        }
    }
}

/// The value hash stored for `key` under `root`, or `None` if the key is absent.
pub fn get(store: &impl SmtNodeStore, root: Hash32, key: &Hash32) -> Result<Option<Hash32>, SmtError> {
    let mut current = root;
    let mut depth = 0u16;
    loop {
        if current == Hash32::ZERO {
            return Ok(None);
        }
        match load(store, &current)? {
            SmtNode::Leaf { key: leaf_key, value_hash } => return Ok((leaf_key == *key).then_some(value_hash)),
            SmtNode::Internal { left, right } => {
                if depth >= KEY_BITS {
                    return Err(internal_too_deep(current));
                }
                current = if bit(key, depth) { right } else { left };
                depth += 1;
            }
        }
    }
}

/// Calls `f(key, value_hash)` for every key under `root`, reading (and hash-checking) every
/// node once, depth first: what the store's full integrity check compares with its state
/// entries. O(size of the map), against O(size × depth) for a [`get`] of each key. A leaf
/// must sit on its key's path (its key starts with the bits that lead to it), as [`get`]
/// and [`prove`] expect; an internal node must not sit below the last key bit.
pub fn for_each_leaf(
    store: &impl SmtNodeStore,
    root: Hash32,
    mut f: impl FnMut(&Hash32, &Hash32),
) -> Result<(), SmtError> {
    // (node, its depth, the path to it: the first `depth` bits matter)
    let mut stack = vec![(root, 0u16, Hash32::ZERO)];
    while let Some((hash, depth, path)) = stack.pop() {
        if hash == Hash32::ZERO {
            continue;
        }
        match load(store, &hash)? {
            SmtNode::Leaf { key, value_hash } => {
                if shared_prefix_bits(&key, &path) < depth {
                    return Err(SmtError::CorruptNode {
                        hash,
                        depth,
                        reason: format!("leaf of key {key} is off its key's path"),
                    });
                }
                f(&key, &value_hash);
            }
            SmtNode::Internal { left, right } => {
                if depth >= KEY_BITS {
                    return Err(internal_too_deep(hash));
                }
                let mut to_right = path;
                to_right.0[usize::from(depth / 8)] |= 0x80 >> (depth % 8);
                stack.push((right, depth + 1, to_right));
                stack.push((left, depth + 1, path));
            }
        }
    }
    Ok(())
}

/// A proof of `key`'s value (or absence) under `root`, to be checked with [`verify`].
pub fn prove(store: &impl SmtNodeStore, root: Hash32, key: &Hash32) -> Result<SmtProof, SmtError> {
    let mut siblings = Vec::new();
    let mut current = root;
    let mut depth = 0u16;
    loop {
        if current == Hash32::ZERO {
            return Ok(SmtProof { siblings, leaf: None });
        }
        match load(store, &current)? {
            SmtNode::Leaf { key: leaf_key, value_hash } => {
                return Ok(SmtProof { siblings, leaf: Some((leaf_key, value_hash)) });
            }
            SmtNode::Internal { left, right } => {
                if depth >= KEY_BITS {
                    return Err(internal_too_deep(current));
                }
                let (next, sibling) = if bit(key, depth) { (right, left) } else { (left, right) };
                siblings.push(sibling);
                current = next;
                depth += 1;
            }
        }
    }
}

/// Checks `proof` against `root`: with `Some(v)` that `key` maps to `v`, with `None` that `key`
/// is absent. The steps are those of the module doc.
pub fn verify(root: &Hash32, key: &Hash32, value_hash: Option<&Hash32>, proof: &SmtProof) -> Result<(), SmtProofError> {
    let depth = match u16::try_from(proof.siblings.len()) {
        Ok(d) if d <= KEY_BITS => d,
        _ => return Err(SmtProofError::TooManySiblings(proof.siblings.len())),
    };
    let end = match (proof.leaf, value_hash) {
        (Some((leaf_key, leaf_value)), Some(expected)) => {
            if leaf_key != *key {
                return Err(SmtProofError::EndsInOtherLeaf { key: *key, leaf_key, depth });
            }
            if leaf_value != *expected {
                return Err(SmtProofError::ValueMismatch { key: *key, expected: *expected, actual: leaf_value });
            }
            leaf_hash(&leaf_key, &leaf_value)
        }
        (Some((leaf_key, leaf_value)), None) => {
            if leaf_key == *key {
                return Err(SmtProofError::KeyPresent { key: *key, value_hash: leaf_value });
            }
            let shared = shared_prefix_bits(&leaf_key, key);
            if shared < depth {
                return Err(SmtProofError::LeafOffPath { key: *key, leaf_key, shared, depth });
            }
            leaf_hash(&leaf_key, &leaf_value)
        }
        (None, Some(_)) => return Err(SmtProofError::EndsInEmpty { key: *key, depth }),
        (None, None) => {
            if depth == KEY_BITS {
                return Err(SmtProofError::EmptyAtFullDepth);
            }
            Hash32::ZERO
        }
    };
    if proof.siblings.last() == Some(&Hash32::ZERO) {
        return Err(SmtProofError::EmptyLastSibling { depth: depth - 1 });
    }
    let mut computed = end;
    for (i, sibling) in (0..depth).zip(proof.siblings.iter()).rev() {
        computed = if bit(key, i) { internal_hash(sibling, &computed) } else { internal_hash(&computed, sibling) };
    }
    if computed != *root {
        return Err(SmtProofError::RootMismatch { computed, expected: *root });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Instant;

    type Model = BTreeMap<Hash32, Hash32>;

    fn h(data: &[u8]) -> Hash32 {
        blake3::hash(data).into()
    }

    fn with_bit_flipped(key: &Hash32, depth: u16) -> Hash32 {
        let mut out = *key;
        out.0[usize::from(depth / 8)] ^= 0x80 >> (depth % 8);
        out
    }

    /// The root straight from the definition in the module doc, written without the module's
    /// helpers so that it cross-checks hashing and shape.
    fn reference_root(model: &Model) -> Hash32 {
        fn hash3(prefix: u8, a: &Hash32, b: &Hash32) -> Hash32 {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&[prefix]);
            hasher.update(&a.0);
            hasher.update(&b.0);
            hasher.finalize().into()
        }
        fn go(entries: &[(Hash32, Hash32)], depth: usize) -> Hash32 {
            match entries {
                [] => Hash32::ZERO,
                [(k, v)] => hash3(0x10, k, v),
                _ => {
                    let is_right = |k: &Hash32| (k.0[depth / 8] >> (7 - depth % 8)) & 1 == 1;
                    let left: Vec<_> = entries.iter().copied().filter(|e| !is_right(&e.0)).collect();
                    let right: Vec<_> = entries.iter().copied().filter(|e| is_right(&e.0)).collect();
                    hash3(0x11, &go(&left, depth + 1), &go(&right, depth + 1))
                }
            }
        }
        let entries: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        go(&entries, 0)
    }

    fn apply(store: &mut MemSmtStore, root: Hash32, changes: &[(Hash32, Hash32)]) -> Hash32 {
        let up = update(store, root, changes).expect("update");
        for (hash, node) in &up.nodes {
            assert_eq!(*hash, node.hash(), "update emitted a node under the wrong hash");
        }
        let distinct: BTreeSet<_> = up.nodes.iter().map(|(hash, _)| *hash).collect();
        assert_eq!(distinct.len(), up.nodes.len(), "update emitted a node twice");
        store.apply(&up);
        up.new_root
    }

    /// Every way we know to break a valid proof; each variant must be rejected.
    fn tampered(
        key: &Hash32,
        value: Option<&Hash32>,
        proof: &SmtProof,
    ) -> Vec<(&'static str, Hash32, Option<Hash32>, SmtProof)> {
        let mut out = Vec::new();
        let v = value.copied();
        let n = proof.siblings.len();
        let mut indices = vec![0, n / 2, n.saturating_sub(1)];
        indices.dedup();
        for &i in indices.iter().filter(|&&i| i < n) {
            for bit_pos in [0u16, 255] {
                let mut p = proof.clone();
                p.siblings[i] = with_bit_flipped(&p.siblings[i], bit_pos);
                out.push(("flip sibling bit", *key, v, p));
            }
        }
        if let Some((lk, lv)) = proof.leaf {
            let mut p = proof.clone();
            p.leaf = Some((lk, with_bit_flipped(&lv, 255)));
            out.push(("flip leaf value", *key, v, p));
            let mut p = proof.clone();
            p.leaf = Some((with_bit_flipped(&lk, 255), lv));
            out.push(("flip leaf key", *key, v, p));
            let mut p = proof.clone();
            p.leaf = None;
            out.push(("drop leaf", *key, None, p));
        } else {
            let mut p = proof.clone();
            p.leaf = Some((*key, h(b"forged")));
            out.push(("forge leaf", *key, Some(h(b"forged")), p));
        }
        match value {
            Some(value) => {
                out.push(("flip claimed value", *key, Some(with_bit_flipped(value, 7)), proof.clone()));
                out.push(("claim absent", *key, None, proof.clone()));
                for bit_pos in [0u16, 255] {
                    out.push(("flip key", with_bit_flipped(key, bit_pos), v, proof.clone()));
                }
            }
            None => {
                out.push(("claim present", *key, Some(h(b"any")), proof.clone()));
                // Flipping a key bit beyond the path leaves a key the same proof rightly shows
                // absent, so only bits on the path count as tampering.
                if n > 0 {
                    for depth in [0u16, (n - 1) as u16] {
                        out.push(("flip key on path", with_bit_flipped(key, depth), None, proof.clone()));
                    }
                }
            }
        }
        if n > 0 {
            let mut p = proof.clone();
            p.siblings.pop();
            out.push(("drop last sibling", *key, v, p));
            let mut p = proof.clone();
            p.siblings.remove(0);
            out.push(("drop first sibling", *key, v, p));
        }
        for extra in [Hash32::ZERO, h(b"extra")] {
            let mut p = proof.clone();
            p.siblings.push(extra);
            out.push(("add last sibling", *key, v, p));
            let mut p = proof.clone();
            p.siblings.insert(0, extra);
            out.push(("add first sibling", *key, v, p));
        }
        out
    }

    fn check_proof(
        store: &MemSmtStore,
        root: Hash32,
        key: &Hash32,
        value: Option<&Hash32>,
    ) -> Result<(), TestCaseError> {
        let proof = prove(store, root, key).expect("prove");
        let verdict = verify(&root, key, value, &proof);
        prop_assert!(verdict.is_ok(), "key {key} value {value:?}: {verdict:?} for {proof:?}");
        for (what, k, v, p) in tampered(key, value, &proof) {
            prop_assert!(verify(&root, &k, v.as_ref(), &p).is_err(), "tampered proof accepted ({what}) for key {key}");
        }
        Ok(())
    }

    fn check_state(store: &MemSmtStore, root: Hash32, model: &Model, probes: &[Hash32]) -> Result<(), TestCaseError> {
        prop_assert_eq!(root, reference_root(model));
        let mut leaves = Model::new();
        for_each_leaf(store, root, |k, v| {
            leaves.insert(*k, *v);
        })
        .expect("walk");
        prop_assert_eq!(&leaves, model, "the walk finds every entry once");
        for (key, value) in model {
            prop_assert_eq!(get(store, root, key).expect("get"), Some(*value));
            check_proof(store, root, key, Some(value))?;
        }
        // Absent keys: the probes plus near neighbours of present keys, which end their paths
        // in foreign leaves deep in the tree.
        let neighbours =
            model.keys().flat_map(|k| [with_bit_flipped(k, 255), with_bit_flipped(k, 200), with_bit_flipped(k, 0)]);
        for key in probes.iter().copied().chain(neighbours) {
            if model.contains_key(&key) {
                continue;
            }
            prop_assert_eq!(get(store, root, &key).expect("get"), None);
            check_proof(store, root, &key, None)?;
        }
        Ok(())
    }

    /// Keys drawn near two anchors: the first `shared` bits copied from an anchor, the rest
    /// random, so that long shared prefixes (up to identical keys) are common.
    fn key_strategy() -> impl Strategy<Value = Hash32> {
        let anchors = [h(b"anchor 0"), Hash32([0xff; 32])];
        (0usize..2, prop_oneof![Just(0u16), 0u16..=256, 240u16..=256], any::<[u8; 32]>()).prop_map(
            move |(a, shared, random)| {
                let mut key = Hash32(random);
                for depth in 0..shared {
                    if bit(&key, depth) != bit(&anchors[a], depth) {
                        key = with_bit_flipped(&key, depth);
                    }
                }
                key
            },
        )
    }

    fn value_strategy() -> impl Strategy<Value = Hash32> {
        prop_oneof![any::<[u8; 32]>().prop_map(Hash32), (0u8..3).prop_map(|b| Hash32([b; 32]))]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn matches_btreemap_model(
            batches in prop::collection::vec(
                prop::collection::vec((key_strategy(), value_strategy()), 0..10),
                1..5,
            ),
            probes in prop::collection::vec(key_strategy(), 0..8),
        ) {
            let mut store = MemSmtStore::new();
            let mut root = Hash32::ZERO;
            let mut model = Model::new();
            let mut history = vec![(root, model.clone())];
            check_state(&store, root, &model, &probes)?;
            for batch in &batches {
                root = apply(&mut store, root, batch);
                model.extend(batch.iter().copied());
                check_state(&store, root, &model, &probes)?;
                history.push((root, model.clone()));
            }
            // Old roots still prove their old contents, including the absence of later keys.
            for (old_root, old_model) in &history {
                let later: Vec<Hash32> =
                    model.keys().filter(|k| !old_model.contains_key(*k)).copied().collect();
                let probes: Vec<Hash32> = probes.iter().copied().chain(later).collect();
                check_state(&store, *old_root, old_model, &probes)?;
            }
        }

        #[test]
        fn root_is_independent_of_order_and_batching(
            entries in prop::collection::vec((key_strategy(), value_strategy()), 0..40),
            seed in any::<u64>(),
        ) {
            // Distinct keys, so that order cannot matter for the final contents.
            let model: Model = entries.iter().copied().collect();
            let distinct: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            let expected = reference_root(&model);

            let mut store = MemSmtStore::new();
            let one_shot = apply(&mut store, Hash32::ZERO, &entries);
            prop_assert_eq!(one_shot, expected);

            let mut store = MemSmtStore::new();
            let mut root = Hash32::ZERO;
            for e in distinct.iter().rev() {
                root = apply(&mut store, root, std::slice::from_ref(e));
            }
            prop_assert_eq!(root, expected);

            // A seeded shuffle and seeded batch sizes.
            let mut shuffled = distinct.clone();
            let mut state = seed | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for i in (1..shuffled.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let mut store = MemSmtStore::new();
            let mut root = Hash32::ZERO;
            let mut rest = &shuffled[..];
            while !rest.is_empty() {
                let take = 1 + (next() % 7) as usize;
                let (batch, tail) = rest.split_at(take.min(rest.len()));
                root = apply(&mut store, root, batch);
                rest = tail;
            }
            prop_assert_eq!(root, expected);
        }
    }

    #[test]
    fn empty_map() {
        let store = MemSmtStore::new();
        let key = h(b"k");
        assert_eq!(get(&store, Hash32::ZERO, &key), Ok(None));
        let proof = prove(&store, Hash32::ZERO, &key).unwrap();
        assert_eq!(proof, SmtProof { siblings: vec![], leaf: None });
        assert_eq!(verify(&Hash32::ZERO, &key, None, &proof), Ok(()));
        assert_eq!(
            verify(&Hash32::ZERO, &key, Some(&h(b"v")), &proof),
            Err(SmtProofError::EndsInEmpty { key, depth: 0 })
        );
        let up = update(&store, Hash32::ZERO, &[]).unwrap();
        assert_eq!(up, SmtUpdate { new_root: Hash32::ZERO, nodes: vec![] });
    }

    #[test]
    fn single_key_is_a_bare_leaf() {
        let mut store = MemSmtStore::new();
        let (key, value) = (h(b"k"), h(b"v"));
        let root = apply(&mut store, Hash32::ZERO, &[(key, value)]);
        assert_eq!(root, h(&[&[0x10u8][..], &key.0, &value.0].concat()));
        assert_eq!(store.len(), 1);
        let proof = prove(&store, root, &key).unwrap();
        assert_eq!(proof, SmtProof { siblings: vec![], leaf: Some((key, value)) });
        assert_eq!(verify(&root, &key, Some(&value), &proof), Ok(()));
        // Any other key is absent: it ends in this leaf at depth 0.
        let other = h(b"other");
        let proof = prove(&store, root, &other).unwrap();
        assert_eq!(proof.leaf, Some((key, value)));
        assert_eq!(verify(&root, &other, None, &proof), Ok(()));
        assert_eq!(
            verify(&root, &key, None, &prove(&store, root, &key).unwrap()),
            Err(SmtProofError::KeyPresent { key, value_hash: value })
        );
    }

    #[test]
    fn keys_differing_only_in_the_last_bit() {
        let mut store = MemSmtStore::new();
        let a = Hash32([0u8; 32]);
        let b = with_bit_flipped(&a, 255);
        let (va, vb) = (h(b"a"), h(b"b"));
        let root = apply(&mut store, Hash32::ZERO, &[(b, vb), (a, va)]);
        let model: Model = [(a, va), (b, vb)].into_iter().collect();
        assert_eq!(root, reference_root(&model));
        // 256 internal nodes: a chain of 255 with empty right children, then the split.
        assert_eq!(store.len(), 258);
        let proof = prove(&store, root, &a).unwrap();
        assert_eq!(proof.siblings.len(), 256);
        assert!(proof.siblings[..255].iter().all(|s| *s == Hash32::ZERO));
        assert_eq!(proof.siblings[255], SmtNode::Leaf { key: b, value_hash: vb }.hash());
        assert_eq!(verify(&root, &a, Some(&va), &proof), Ok(()));
        assert_eq!(verify(&root, &b, Some(&vb), &prove(&store, root, &b).unwrap()), Ok(()));

        // A key leaving the chain at bit 254 ends in the empty sibling at depth 255.
        let c = with_bit_flipped(&a, 254);
        let proof = prove(&store, root, &c).unwrap();
        assert_eq!((proof.siblings.len(), proof.leaf), (255, None));
        assert_eq!(verify(&root, &c, None, &proof), Ok(()));
        // A key leaving at bit 0 ends in the empty right child of the root.
        let d = with_bit_flipped(&a, 0);
        let proof = prove(&store, root, &d).unwrap();
        assert_eq!((proof.siblings.len(), proof.leaf), (1, None));
        assert_eq!(verify(&root, &d, None, &proof), Ok(()));

        // Overwriting one of them and adding a third key near both keeps everything provable.
        let vb2 = h(b"b2");
        let root2 = apply(&mut store, root, &[(b, vb2), (c, h(b"c"))]);
        let mut model2 = model.clone();
        model2.extend([(b, vb2), (c, h(b"c"))]);
        assert_eq!(root2, reference_root(&model2));
        assert_eq!(get(&store, root2, &b), Ok(Some(vb2)));
        assert_eq!(get(&store, root, &b), Ok(Some(vb)));
        assert_eq!(verify(&root, &b, Some(&vb), &prove(&store, root, &b).unwrap()), Ok(()));
        assert_eq!(verify(&root2, &c, Some(&h(b"c")), &prove(&store, root2, &c).unwrap()), Ok(()));
    }

    #[test]
    fn later_entries_win_and_no_op_writes_add_no_nodes() {
        let mut store = MemSmtStore::new();
        let (k, v1, v2) = (h(b"k"), h(b"v1"), h(b"v2"));
        let others: Vec<_> = (0u32..50).map(|i| (h(&i.to_le_bytes()), h(b"x"))).collect();
        let root = apply(&mut store, Hash32::ZERO, &others);
        let root = apply(&mut store, root, &[(k, v1), (k, v2)]);
        assert_eq!(get(&store, root, &k), Ok(Some(v2)));
        let up = update(&store, root, &[(k, v1), (k, v2), others[3]]).unwrap();
        assert_eq!(up, SmtUpdate { new_root: root, nodes: vec![] });
    }

    #[test]
    fn node_encoding() {
        let leaf = SmtNode::Leaf { key: h(b"k"), value_hash: h(b"v") };
        let internal = SmtNode::Internal { left: h(b"l"), right: Hash32::ZERO };
        for node in [&leaf, &internal] {
            let bytes = node.encode();
            assert_eq!(bytes.len(), 66);
            assert_eq!(bytes[0], 1);
            assert_eq!(node.hash(), h(&bytes[1..]));
            assert_eq!(SmtNode::decode(&bytes).as_ref(), Ok(node));
        }
        assert_eq!(leaf.encode()[1], 0x10);
        assert_eq!(internal.encode()[1], 0x11);

        let good = leaf.encode();
        assert_eq!(SmtNode::decode(&[]), Err(SmtError::EncodingLength(0)));
        assert_eq!(SmtNode::decode(&[1]), Err(SmtError::EncodingLength(1)));
        assert_eq!(SmtNode::decode(&good[..65]), Err(SmtError::EncodingLength(65)));
        assert_eq!(SmtNode::decode(&[&good[..], &[0]].concat()), Err(SmtError::EncodingLength(67)));
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(SmtNode::decode(&bad), Err(SmtError::EncodingVersion(2)));
        let mut bad = good.clone();
        bad[1] = 0x01;
        assert_eq!(SmtNode::decode(&bad), Err(SmtError::EncodingTag(0x01)));
        assert_eq!(
            SmtError::EncodingTag(0x01).to_string(),
            "unknown state map node tag 0x01, expected 0x10 (leaf) or 0x11 (internal)"
        );
    }

    #[test]
    fn missing_and_corrupt_nodes_are_errors() {
        let mut store = MemSmtStore::new();
        let entries: Vec<_> = (0u32..20).map(|i| (h(&i.to_le_bytes()), h(b"v"))).collect();
        let root = apply(&mut store, Hash32::ZERO, &entries);
        let key = entries[0].0;
        let leaf_hash = SmtNode::Leaf { key, value_hash: h(b"v") }.hash();

        let mut missing = store.clone();
        missing.0.remove(&leaf_hash);
        assert_eq!(get(&missing, root, &key), Err(SmtError::MissingNode(leaf_hash)));
        assert_eq!(prove(&missing, root, &key), Err(SmtError::MissingNode(leaf_hash)));
        assert_eq!(update(&missing, root, &[(key, h(b"w"))]), Err(SmtError::MissingNode(leaf_hash)));
        assert_eq!(for_each_leaf(&missing, root, |_, _| ()), Err(SmtError::MissingNode(leaf_hash)));
        assert_eq!(get(&MemSmtStore::new(), root, &key), Err(SmtError::MissingNode(root)));

        let mut corrupt = store.clone();
        let wrong = SmtNode::Leaf { key, value_hash: h(b"w") };
        corrupt.insert(leaf_hash, wrong.clone());
        let err = SmtError::NodeHashMismatch { requested: leaf_hash, actual: wrong.hash() };
        assert_eq!(get(&corrupt, root, &key), Err(err.clone()));
        assert_eq!(prove(&corrupt, root, &key), Err(err.clone()));
        assert_eq!(for_each_leaf(&corrupt, root, |_, _| ()), Err(err.clone()));
        assert_eq!(update(&corrupt, root, &[(key, h(b"x"))]), Err(err));

        // A leaf whose key is off the path it hangs on (only reachable through a hash collision
        // or a foreign writer) is reported, not silently rebuilt.
        let mut off_path = MemSmtStore::new();
        let stray = off_path.insert_node(SmtNode::Leaf { key: Hash32([0xff; 32]), value_hash: h(b"v") });
        let root = off_path.insert_node(SmtNode::Internal { left: stray, right: Hash32::ZERO });
        assert!(matches!(
            update(&off_path, root, &[(Hash32::ZERO, h(b"v"))]),
            Err(SmtError::CorruptNode { depth: 1, .. })
        ));
        assert!(matches!(for_each_leaf(&off_path, root, |_, _| ()), Err(SmtError::CorruptNode { depth: 1, .. })));
        let on_path = off_path.insert_node(SmtNode::Internal { left: Hash32::ZERO, right: stray });
        let mut found = Vec::new();
        for_each_leaf(&off_path, on_path, |k, _| found.push(*k)).unwrap();
        assert_eq!(found, [Hash32([0xff; 32])]);

        struct Failing;
        impl SmtNodeStore for Failing {
            fn smt_node(&self, _: &Hash32) -> Result<Option<SmtNode>, StorageError> {
                Err(StorageError("disk on fire".into()))
            }
        }
        let err = get(&Failing, root, &key).unwrap_err();
        assert_eq!(err, SmtError::Storage(StorageError("disk on fire".into())));
        assert_eq!(err.to_string(), "reading the state map: storage: disk on fire");
    }

    #[test]
    fn verify_rejects_malformed_proofs() {
        let key = Hash32::ZERO;
        let too_long = SmtProof { siblings: vec![h(b"s"); 257], leaf: None };
        assert_eq!(verify(&h(b"r"), &key, None, &too_long), Err(SmtProofError::TooManySiblings(257)));

        let full_depth_empty = SmtProof { siblings: vec![h(b"s"); 256], leaf: None };
        assert_eq!(verify(&h(b"r"), &key, None, &full_depth_empty), Err(SmtProofError::EmptyAtFullDepth));

        // A leaf under an internal node with an empty sibling would have been hoisted, even if
        // the hashes chain up to the claimed root.
        let (other, v) = (with_bit_flipped(&key, 200), h(b"v"));
        let mut chained = leaf_hash(&other, &v);
        chained = internal_hash(&chained, &Hash32::ZERO);
        let hoistable = SmtProof { siblings: vec![Hash32::ZERO], leaf: Some((other, v)) };
        assert_eq!(verify(&chained, &key, None, &hoistable), Err(SmtProofError::EmptyLastSibling { depth: 0 }));
        assert_eq!(verify(&chained, &other, Some(&v), &hoistable), Err(SmtProofError::EmptyLastSibling { depth: 0 }));

        let off_path = SmtProof { siblings: vec![h(b"s"); 3], leaf: Some((with_bit_flipped(&key, 1), v)) };
        assert_eq!(
            verify(&h(b"r"), &key, None, &off_path),
            Err(SmtProofError::LeafOffPath { key, leaf_key: with_bit_flipped(&key, 1), shared: 1, depth: 3 })
        );

        let single = SmtProof { siblings: vec![], leaf: Some((key, v)) };
        let root = leaf_hash(&key, &v);
        let err = verify(&h(b"r"), &key, Some(&v), &single).unwrap_err();
        assert_eq!(err, SmtProofError::RootMismatch { computed: root, expected: h(b"r") });
        assert_eq!(
            err.to_string(),
            format!("root mismatch: proof computes {}, expected {}", root.to_hex(), h(b"r").to_hex())
        );
        assert_eq!(
            verify(&root, &key, Some(&h(b"w")), &single),
            Err(SmtProofError::ValueMismatch { key, expected: h(b"w"), actual: v })
        );
    }

    /// Counts reads so that the cost of an update can be checked, not just timed.
    struct Counting<'a> {
        inner: &'a MemSmtStore,
        reads: Cell<u64>,
    }

    impl SmtNodeStore for Counting<'_> {
        fn smt_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StorageError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.smt_node(hash)
        }
    }

    #[test]
    fn hundred_thousand_keys_in_batches() {
        const BATCH: u32 = 1_000;
        const BATCHES: u32 = 100;
        let started = Instant::now();
        let mut store = MemSmtStore::new();
        let mut root = Hash32::ZERO;
        let key = |i: u32| h(&i.to_le_bytes());
        let value = |i: u32| h(&(i ^ 0x5555_5555).to_le_bytes());
        for b in 0..BATCHES {
            let changes: Vec<_> = (b * BATCH..(b + 1) * BATCH).map(|i| (key(i), value(i))).collect();
            let counting = Counting { inner: &store, reads: Cell::new(0) };
            let up = update(&counting, root, &changes).unwrap();
            let n_after = f64::from((b + 1) * BATCH);
            // Each change touches about log2(n) nodes, fewer where batch paths overlap.
            let budget = (f64::from(BATCH) * (n_after.log2() + 2.0)) as u64;
            assert!(counting.reads.get() <= budget, "{} reads > {budget}", counting.reads.get());
            assert!(up.nodes.len() as u64 <= budget, "{} writes > {budget}", up.nodes.len());
            store.apply(&up);
            root = up.new_root;
        }
        let built = started.elapsed();
        // Overwrite a scattered batch in a full tree, then spot-check reads and proofs.
        let changes: Vec<_> = (0..BATCH).map(|i| (key(i * 97), h(b"new"))).collect();
        let counting = Counting { inner: &store, reads: Cell::new(0) };
        let up = update(&counting, root, &changes).unwrap();
        let (reads, writes) = (counting.reads.get(), up.nodes.len());
        store.apply(&up);
        let new_root = up.new_root;
        for i in (0..BATCHES * BATCH).step_by(997) {
            let expected = if i % 97 == 0 && i / 97 < BATCH { h(b"new") } else { value(i) };
            assert_eq!(get(&store, new_root, &key(i)), Ok(Some(expected)));
            assert_eq!(get(&store, root, &key(i)), Ok(Some(value(i))));
            let proof = prove(&store, new_root, &key(i)).unwrap();
            assert_eq!(verify(&new_root, &key(i), Some(&expected), &proof), Ok(()));
            let absent = key(BATCHES * BATCH + i);
            let proof = prove(&store, new_root, &absent).unwrap();
            assert_eq!(verify(&new_root, &absent, None, &proof), Ok(()));
        }
        eprintln!(
            "100k keys in batches of 1k: built in {built:?}; overwrite of 1k scattered keys: \
             {reads} reads, {writes} writes; total {:?}; {} nodes stored",
            started.elapsed(),
            store.len()
        );
    }
}
