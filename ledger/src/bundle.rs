//! Trace bundles: everything about one code, checkable offline against a trusted
//! validator set, trusting no node.
//!
//! A bundle holds a checkpoint, the state-map entries (with proofs) of the code, its lot
//! and its logistic unit, the organisations that signed the records (with proofs), and
//! every record in those subjects' chains with its inclusion proof. [`verify_bundle`]
//! checks every signature and Merkle path and recomputes every subject's hash chain from
//! the records given, so a record left out, added, reordered or altered is caught. The
//! JSON form is specified in docs/proofs.md; the compact form is the canonical encoding.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::block::{Checkpoint, CheckpointError};
use crate::codec;
use crate::hash::Hash32;
use crate::ids::SubjectId;
use crate::kv::Backend;
use crate::merkle;
use crate::org::{OrgId, Organisation, ValidatorSet};
use crate::record::{CodeSet, RecordBody, SignedRecord};
use crate::smt::{self, SmtProof};
use crate::state::{StateKey, StateValue, SubjectState, chain_link};
use crate::store::{Store, StoreError};

/// Format version of bundles.
pub const BUNDLE_FORMAT: u32 = 1;
/// Most records a bundle may hold; longer histories are paged through the API instead.
pub const BUNDLE_RECORDS_MAX: usize = 10_000;

/// A record with its place in the log and the inclusion proof at the checkpoint's size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub log_index: u64,
    pub record: SignedRecord,
    pub inclusion: Vec<Hash32>,
}

/// One subject's entry in the state map at the checkpoint, with its proof, and the log
/// indexes of its chain's records in chain order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSubject {
    pub subject: SubjectId,
    /// `None` when the subject has no entry of its own (an item that only moved with its
    /// lot); the proof is then a non-membership proof.
    pub state: Option<SubjectState>,
    pub proof: SmtProof,
    pub chain: Vec<u64>,
}

/// An organisation's entry at the checkpoint, for its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleOrg {
    pub org: Organisation,
    pub proof: SmtProof,
}

/// Everything about one code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBundle {
    pub format: u32,
    pub code: SubjectId,
    pub checkpoint: Checkpoint,
    /// The code first, then its lot, then its logistic unit if packed.
    pub subjects: Vec<BundleSubject>,
    pub orgs: Vec<BundleOrg>,
    /// Ascending log index, each record once.
    pub records: Vec<BundleRecord>,
}

impl TraceBundle {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundle serialises to json")
    }

    pub fn from_json(s: &str) -> Result<TraceBundle, BundleError> {
        serde_json::from_str(s).map_err(|e| BundleError::Decode(e.to_string()))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn from_bytes(b: &[u8]) -> Result<TraceBundle, BundleError> {
        codec::decode("trace bundle", b).map_err(|e| BundleError::Decode(e.to_string()))
    }
}

/// Why a bundle does not verify. Each names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle does not decode: {0}")]
    Decode(String),
    #[error("bundle format {0} is not supported")]
    Format(u32),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("organisation {org}: state proof does not verify: {reason}")]
    OrgProof { org: String, reason: String },
    #[error("record at log index {index}: {reason}")]
    Record { index: u64, reason: String },
    #[error("subject {subject}: {reason}")]
    Subject { subject: String, reason: String },
    #[error("record at log index {0} is in no subject's chain")]
    Unreferenced(u64),
    #[error("the bundle does not cover code {code}: {reason}")]
    Coverage { code: String, reason: String },
}

/// What a verified bundle established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BundleVerdict {
    pub height: u64,
    pub signers: Vec<String>,
    pub validators: u32,
    pub records: u32,
}

/// Checks a bundle offline against a trusted validator set (from genesis). Every record
/// signature, inclusion path, state proof and subject chain; the checkpoint's quorum; and
/// that the code is covered: it has an entry, or its lot's chain holds its issuance.
pub fn verify_bundle(b: &TraceBundle, trusted: &ValidatorSet) -> Result<BundleVerdict, BundleError> {
    if b.format != BUNDLE_FORMAT {
        return Err(BundleError::Format(b.format));
    }
    let header = &b.checkpoint.header;
    let signers = b.checkpoint.verify(&header.ledger_id, trusted)?;

    let mut orgs: BTreeMap<&OrgId, &Organisation> = BTreeMap::new();
    for o in &b.orgs {
        let key = StateKey::Org(o.org.id.clone()).map_key();
        let vh = StateValue::Org(o.org.clone()).value_hash();
        smt::verify(&header.state_root, &key, Some(&vh), &o.proof)
            .map_err(|e| BundleError::OrgProof { org: o.org.id.to_string(), reason: e.to_string() })?;
        orgs.insert(&o.org.id, &o.org);
    }

    let mut by_index: BTreeMap<u64, (Hash32, &SignedRecord)> = BTreeMap::new();
    let mut prev: Option<u64> = None;
    // Signatures are checked in one batch after the other checks; only if the batch fails
    // are they checked one by one, to name the record.
    let mut sigs: Vec<(u64, Vec<u8>, ed25519_dalek::Signature, ed25519_dalek::VerifyingKey)> = Vec::new();
    for r in &b.records {
        let bad = |reason: String| BundleError::Record { index: r.log_index, reason };
        if prev.is_some_and(|p| p >= r.log_index) {
            return Err(bad("records are not in ascending log order".into()));
        }
        prev = Some(r.log_index);
        let rec = &r.record.record;
        let org = orgs.get(&rec.author).ok_or_else(|| bad(format!("author {} is not in the bundle", rec.author)))?;
        let key = org.key(&rec.key_id).ok_or_else(|| bad(format!("{} has no key {}", rec.author, rec.key_id)))?;
        if !key.valid_at(rec.time_ms) {
            return Err(bad(format!("key {} of {} was not valid at {} ms", rec.key_id, rec.author, rec.time_ms)));
        }
        sigs.push((
            r.log_index,
            crate::record::signing_message(&header.ledger_id, rec),
            r.record.signature.to_dalek(),
            key.public_key.verifying_key(),
        ));
        let id = r.record.id();
        merkle::verify_inclusion(
            &merkle::leaf_hash(id.as_bytes()),
            r.log_index,
            header.log_size,
            &r.inclusion,
            &header.log_root,
        )
        .map_err(|e| bad(format!("inclusion proof: {e}")))?;
        by_index.insert(r.log_index, (id, &r.record));
    }

    let msgs: Vec<&[u8]> = sigs.iter().map(|(_, m, _, _)| m.as_slice()).collect();
    let dsigs: Vec<ed25519_dalek::Signature> = sigs.iter().map(|(_, _, s, _)| *s).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = sigs.iter().map(|(_, _, _, k)| *k).collect();
    let verdicts = crate::sigbatch::verify_each(&msgs, &dsigs, &keys);
    if let Some(((index, ..), _)) = sigs.iter().zip(&verdicts).find(|(_, ok)| !**ok) {
        let author = by_index.get(index).map(|(_, r)| r.record.author.to_string()).unwrap_or_default();
        return Err(BundleError::Record { index: *index, reason: format!("signature of {author} does not verify") });
    }

    let mut referenced = BTreeSet::new();
    for s in &b.subjects {
        let bad = |reason: String| BundleError::Subject { subject: s.subject.to_string(), reason };
        let key = StateKey::Subject(s.subject.clone()).map_key();
        let vh = s.state.as_ref().map(|st| StateValue::Subject(st.clone()).value_hash());
        smt::verify(&header.state_root, &key, vh.as_ref(), &s.proof).map_err(|e| bad(format!("state proof: {e}")))?;
        let mut chain = Hash32::ZERO;
        for i in &s.chain {
            let (id, _) =
                by_index.get(i).ok_or_else(|| bad(format!("chain names log index {i}, which the bundle lacks")))?;
            chain = chain_link(&chain, id);
            referenced.insert(*i);
        }
        let (want_chain, want_count) = s.state.as_ref().map_or((Hash32::ZERO, 0), |st| (st.chain, st.record_count));
        if s.chain.len() as u64 != want_count {
            return Err(bad(format!("{} records given, the ledger counts {want_count}", s.chain.len())));
        }
        if chain != want_chain {
            return Err(bad(format!(
                "records recompute chain {chain}, the ledger says {want_chain}: a record is missing, extra, altered or out of order"
            )));
        }
    }
    if let Some(i) = by_index.keys().find(|i| !referenced.contains(i)) {
        return Err(BundleError::Unreferenced(*i));
    }
    check_coverage(b, &by_index)?;
    Ok(BundleVerdict {
        height: header.height,
        signers,
        validators: trusted.validators.len() as u32,
        records: b.records.len() as u32,
    })
}

/// The bundle must be about its code: the code comes first; if it has no entry of its own
/// its lot must follow and the lot's chain must hold an issuance that covers the code.
fn check_coverage(b: &TraceBundle, by_index: &BTreeMap<u64, (Hash32, &SignedRecord)>) -> Result<(), BundleError> {
    let cov = |reason: String| Err(BundleError::Coverage { code: b.code.to_string(), reason });
    let Some(first) = b.subjects.first() else { return cov("no subjects".into()) };
    if first.subject != b.code {
        return cov(format!("first subject is {}", first.subject));
    }
    let lot_id = match (&first.state, &b.code) {
        (Some(st), _) => match &st.lot {
            Some(l) => l.clone(),
            None => return Ok(()), // a lot, a unit, or a code with history of its own
        },
        (None, SubjectId::Lot { .. }) => return cov("the lot is not on the ledger".into()),
        (None, _) => {
            let Some(lot) = b.subjects.get(1) else { return cov("the code has no entry and no lot is given".into()) };
            lot.subject.clone()
        }
    };
    let Some(lot) = b.subjects.iter().find(|s| s.subject == lot_id) else {
        return cov(format!("its lot {lot_id} is not in the bundle"));
    };
    let issued = lot.chain.iter().filter_map(|i| by_index.get(i)).any(|(_, r)| match &r.record.body {
        RecordBody::IssueCodes(ic) => match (&ic.codes, &b.code) {
            (CodeSet::Range(range), SubjectId::Item { gtin, serial }) => {
                *gtin == ic.product.gtin && range.contains(serial)
            }
            (CodeSet::Serials(list), SubjectId::Item { gtin, serial }) => {
                *gtin == ic.product.gtin && list.contains(serial)
            }
            (CodeSet::Codes(list), code) => list.contains(code),
            _ => false,
        },
        _ => false,
    });
    if !issued {
        return cov(format!("no issuance in lot {lot_id}'s chain covers it"));
    }
    Ok(())
}

impl<B: Backend> Store<B> {
    /// Builds the trace bundle of `code` at `checkpoint` (whose header must be one of this
    /// store's). Records after the checkpoint are left out.
    pub fn bundle(&self, code: &SubjectId, checkpoint: Checkpoint) -> Result<TraceBundle, StoreError> {
        let header = &checkpoint.header;
        let root = header.state_root;
        let mut subjects = Vec::new();
        let mut want: Vec<SubjectId> = vec![code.clone()];
        let mut i = 0;
        while i < want.len() && i < 3 {
            let sid = want[i].clone();
            i += 1;
            let (value, proof) = self.state_at(&root, &StateKey::Subject(sid.clone()))?;
            let state = match value {
                Some(StateValue::Subject(s)) => Some(s),
                Some(_) => {
                    return Err(StoreError::Corrupt {
                        what: format!("state of {sid}"),
                        reason: "not a subject".into(),
                    });
                }
                None => None,
            };
            match &state {
                Some(st) => {
                    for up in [&st.lot, &st.parent].into_iter().flatten() {
                        if !want.contains(up) {
                            want.push(up.clone());
                        }
                    }
                }
                None if sid == *code => {
                    let Some(iss) = self.issuance(code)? else {
                        return Err(StoreError::NotFound(format!("code {code}")));
                    };
                    want.push(iss.lot);
                }
                None => {}
            }
            subjects.push((sid, state, proof));
        }

        let mut records: BTreeMap<u64, SignedRecord> = BTreeMap::new();
        let mut out_subjects = Vec::new();
        for (sid, state, proof) in subjects {
            let count = state.as_ref().map_or(0, |s| s.record_count);
            let mut chain = Vec::new();
            let mut from = 0;
            while (chain.len() as u64) < count {
                let ids = self.subject_record_ids(&sid, from, crate::store::PAGE_MAX)?;
                if ids.is_empty() {
                    return Err(StoreError::Corrupt {
                        what: format!("chain of {sid}"),
                        reason: format!("{} of {count} records indexed", chain.len()),
                    });
                }
                for id in ids {
                    if chain.len() as u64 == count {
                        break;
                    }
                    let (idx, rec) = self.record(&id)?.ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
                    chain.push(idx);
                    records.insert(idx, rec);
                }
                from = chain.len() as u64;
            }
            out_subjects.push(BundleSubject { subject: sid, state, proof, chain });
        }
        if records.len() > BUNDLE_RECORDS_MAX {
            return Err(StoreError::Corrupt {
                what: format!("bundle of {code}"),
                reason: format!("{} records, at most {BUNDLE_RECORDS_MAX}", records.len()),
            });
        }

        let authors: BTreeSet<OrgId> = records.values().map(|r| r.record.author.clone()).collect();
        let mut orgs = Vec::new();
        for a in authors {
            let (value, proof) = self.state_at(&root, &StateKey::Org(a.clone()))?;
            let Some(StateValue::Org(org)) = value else {
                return Err(StoreError::Corrupt {
                    what: format!("organisation {a}"),
                    reason: "not in the state map".into(),
                });
            };
            orgs.push(BundleOrg { org, proof });
        }
        let records = records
            .into_iter()
            .map(|(log_index, record)| {
                Ok(BundleRecord { log_index, inclusion: self.inclusion_proof(log_index, header.log_size)?, record })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(TraceBundle { format: BUNDLE_FORMAT, code: code.clone(), checkpoint, subjects: out_subjects, orgs, records })
    }
}
