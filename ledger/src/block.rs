//! Blocks, their headers, and checkpoints (a header co-signed by validators).
//!
//! A block is what Raft orders: one entry, a batch of signed records chosen by the leader
//! with the leader's time. Applying it yields a header that commits to the log and the
//! state map. Each validator signs the header hash; a header with signatures from a quorum
//! of validators of distinct organisations is a checkpoint an auditor can trust without
//! trusting any one node.

use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Domain};
use crate::hash::Hash32;
use crate::org::{LedgerId, NodeId, OrgId, ValidatorSet};
use crate::record::{Sig, SignedRecord};

/// Most records in one block.
pub const BLOCK_RECORDS_MAX: usize = 10_000;
/// Largest block, in canonical bytes.
pub const BLOCK_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A batch of records proposed by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub height: u64,
    /// The leader's clock when it cut the block; apply's only notion of time.
    pub time_ms: u64,
    pub proposer: NodeId,
    pub records: Vec<SignedRecord>,
}

impl Block {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Block, codec::DecodeError> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return Err(codec::DecodeError::Malformed {
                what: "block",
                reason: format!("{} bytes, at most {BLOCK_BYTES_MAX}", bytes.len()),
            });
        }
        codec::decode("block", bytes)
    }
}

/// How the store keeps a block: its records in order, each either by id — when the log
/// holds it, so its bytes are in the `records` column family already — or inline (a
/// rejected record the log does not hold). Writing accepted records once instead of twice
/// takes about a fifth off the bytes a block commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredBlock {
    pub height: u64,
    pub time_ms: u64,
    pub proposer: NodeId,
    pub records: Vec<StoredRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredRecord {
    /// In the log; read it from the `records` column family.
    Logged(crate::record::RecordId),
    /// Not in the log: the signed record's canonical bytes.
    Inline(Vec<u8>),
}

/// The result of applying a block: what every honest node computes identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub ledger_id: LedgerId,
    pub height: u64,
    /// Hash of the previous header; for height 1, the genesis hash.
    pub prev_hash: Hash32,
    pub time_ms: u64,
    pub proposer: NodeId,
    /// Commits to the ids of all records of the block, accepted or not, in order.
    pub records_hash: Hash32,
    /// Commits to the block's receipts, in order.
    pub receipts_hash: Hash32,
    /// Leaves in the Merkle log after this block.
    pub log_size: u64,
    pub log_root: Hash32,
    pub state_root: Hash32,
}

impl BlockHeader {
    pub fn hash(&self) -> Hash32 {
        codec::domain_hash(Domain::Header, &codec::encode(self))
    }

    /// The message a validator signs to vouch for this header.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Domain::CheckpointSignature.context().as_bytes().to_vec();
        m.push(0);
        m.extend_from_slice(self.hash().as_bytes());
        m
    }

    /// A validator's signature over this header.
    pub fn sign(&self, node_id: NodeId, key: &SigningKey) -> CheckpointSignature {
        CheckpointSignature { node_id, signature: Sig(key.sign(&self.signing_message()).to_bytes()) }
    }
}

/// One validator's signature on a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSignature {
    pub node_id: NodeId,
    pub signature: Sig,
}

/// A header with the validator signatures gathered for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub header: BlockHeader,
    pub signatures: Vec<CheckpointSignature>,
}

/// Why a checkpoint is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is for ledger {got:?}, expected {expected:?}")]
    WrongLedger { got: String, expected: String },
    #[error("signature of node {node:?} does not verify against its validator key")]
    BadSignature { node: String },
    #[error("node {node:?} is not a validator of the trusted set")]
    UnknownValidator { node: String },
    #[error("only {got} validators of distinct organisations signed, quorum is {quorum}")]
    NoQuorum { got: u32, quorum: u32 },
}

impl Checkpoint {
    /// Checks the signatures against a trusted validator set. Unknown signers and second
    /// signatures of an organisation are not counted; a bad signature from a known
    /// validator is an error (someone is forging). Returns the organisations counted.
    pub fn verify(&self, ledger: &LedgerId, validators: &ValidatorSet) -> Result<Vec<String>, CheckpointError> {
        if &self.header.ledger_id != ledger {
            return Err(CheckpointError::WrongLedger {
                got: self.header.ledger_id.to_string(),
                expected: ledger.to_string(),
            });
        }
        let msg = self.header.signing_message();
        // The signatures of known validators, checked in one batch (one at a time only to
        // name a bad one).
        let signed: Vec<_> =
            self.signatures.iter().filter_map(|s| validators.get(&s.node_id).map(|v| (s, v))).collect();
        let msgs = vec![msg.as_slice(); signed.len()];
        let sigs: Vec<_> = signed.iter().map(|(s, _)| s.signature.to_dalek()).collect();
        let keys: Vec<_> = signed.iter().map(|(_, v)| v.public_key.verifying_key()).collect();
        let verdicts = crate::sigbatch::verify_each(&msgs, &sigs, &keys);
        if let Some(((s, _), _)) = signed.iter().zip(&verdicts).find(|(_, ok)| !**ok) {
            return Err(CheckpointError::BadSignature { node: s.node_id.to_string() });
        }
        let orgs: BTreeSet<String> = signed.iter().map(|(_, v)| v.org.to_string()).collect();
        let got = orgs.len() as u32;
        if got < validators.quorum() {
            return Err(CheckpointError::NoQuorum { got, quorum: validators.quorum() });
        }
        Ok(orgs.into_iter().collect())
    }

    /// Whether the validators the signatures name come from a quorum of organisations —
    /// the signatures themselves unchecked: the cheap test a node that checked each
    /// signature as it came makes before it checks the whole checkpoint once.
    pub fn names_a_quorum(&self, validators: &ValidatorSet) -> bool {
        let orgs: BTreeSet<&OrgId> =
            self.signatures.iter().filter_map(|s| validators.get(&s.node_id).map(|v| &v.org)).collect();
        orgs.len() as u32 >= validators.quorum()
    }

    /// Like [`Checkpoint::verify`] but also refuses signers outside the set.
    pub fn verify_strict_signers(
        &self,
        ledger: &LedgerId,
        validators: &ValidatorSet,
    ) -> Result<Vec<String>, CheckpointError> {
        if let Some(s) = self.signatures.iter().find(|s| validators.get(&s.node_id).is_none()) {
            return Err(CheckpointError::UnknownValidator { node: s.node_id.to_string() });
        }
        self.verify(ledger, validators)
    }
}
