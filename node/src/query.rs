//! Read queries of the gRPC API against the local store: records, traces, recall impact,
//! checkpoints, proofs and bundles. Each function takes the store (already locked, on the
//! blocking pool) and answers with a wire message or a `tonic::Status` naming the
//! offending value. Nothing here writes.

use std::collections::BTreeMap;

use tonic::Status;
use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::bundle::TraceBundle;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::kv::RocksBackend;
use veritrace_ledger::merkle;
use veritrace_ledger::org::{LedgerId, OrgId, ValidatorSet};
use veritrace_ledger::record::{RecordId, SignedRecord};
use veritrace_ledger::state::{Regulatory, StateKey, SubjectState};
use veritrace_ledger::store::{Store, StoreError};
use veritrace_proto::convert::{checkpoint_pb, hash_from_pb, record_entry_pb, subject_view_pb};
use veritrace_proto::v1 as pb;

pub type LedgerStore = Store<RocksBackend>;

/// Records per page when the request leaves the limit at 0.
pub const PAGE_DEFAULT: u32 = 100;
/// Most records per page.
pub const PAGE_MAX: u32 = 1_000;

/// A store failure as a status: a missing thing is NotFound, anything else is the node's
/// own fault (Internal), never the caller's.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        other => Status::internal(other.to_string()),
    }
}

fn page_limit(limit: u32) -> Result<u32, Status> {
    match limit {
        0 => Ok(PAGE_DEFAULT),
        l if l <= PAGE_MAX => Ok(l),
        l => Err(Status::invalid_argument(format!("limit {l} is above the page maximum {PAGE_MAX}"))),
    }
}

/// Parses a code in any form the ledger knows, or says which part is wrong.
pub fn parse_code(what: &str, code: &str) -> Result<SubjectId, Status> {
    if code.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    code.parse::<SubjectId>().map_err(|e| Status::invalid_argument(format!("{what} {code:?}: {e}")))
}

/// An accepted record by id, with its position and the height that accepted it.
pub fn record_by_id(store: &LedgerStore, id: &RecordId) -> Result<pb::RecordEntry, Status> {
    let (log_index, record) =
        store.record(id).map_err(store_status)?.ok_or_else(|| Status::not_found(format!("no record {id}")))?;
    entry(store, id, log_index, &record)
}

/// A record already read, with the height of the block that accepted it.
fn entry(store: &LedgerStore, id: &RecordId, log_index: u64, record: &SignedRecord) -> Result<pb::RecordEntry, Status> {
    let height = store.receipt(id).map_err(store_status)?.map(|r| r.height).unwrap_or_default();
    Ok(record_entry_pb(id, log_index, height, record))
}

pub fn get_record(store: &LedgerStore, req: &pb::GetRecordRequest) -> Result<pb::RecordEntry, Status> {
    match &req.which {
        Some(pb::get_record_request::Which::RecordId(b)) => {
            record_by_id(store, &hash_from_pb("record_id", b).map_err(Status::invalid_argument)?)
        }
        Some(pb::get_record_request::Which::LogIndex(i)) => {
            let size = store.head().log_size;
            if *i >= size {
                return Err(Status::not_found(format!("log index {i}: the log has {size} records")));
            }
            let id = store
                .record_id_at(*i)
                .map_err(store_status)?
                .ok_or_else(|| Status::internal(format!("log index {i} has no record id")))?;
            record_by_id(store, &id)
        }
        None => Err(Status::invalid_argument("give a record_id or a log_index")),
    }
}

/// Where a trace page continues: the next chain position of each traced subject.
fn parse_page_token(token: &str, subjects: usize) -> Result<Vec<u64>, Status> {
    if token.is_empty() {
        return Ok(vec![0; subjects]);
    }
    let bad = || Status::invalid_argument(format!("page_token {token:?} is not one this node handed out"));
    let pos: Vec<u64> = token.split('.').map(|p| p.parse::<u64>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    if pos.len() != subjects {
        return Err(bad());
    }
    Ok(pos)
}

/// The subjects a trace covers: the code, its lot (for an item), and the logistic unit
/// it or its lot is packed in, each with its state if it has one.
fn trace_subjects(store: &LedgerStore, code: &SubjectId) -> Result<Vec<(SubjectId, Option<SubjectState>)>, Status> {
    let state = store.subject_state(code).map_err(store_status)?;
    let mut out = Vec::new();
    let lot = match &state {
        Some(s) => s.lot.clone(),
        None => match store.issuance(code).map_err(store_status)? {
            Some(i) if &i.lot != code => Some(i.lot),
            Some(_) => None,
            None => return Err(Status::not_found(format!("code {code} was never issued on this ledger"))),
        },
    };
    out.push((code.clone(), state));
    if let Some(lot) = lot {
        let s = store.subject_state(&lot).map_err(store_status)?;
        out.push((lot, s));
    }
    let parents: Vec<SubjectId> = out.iter().filter_map(|(_, s)| s.as_ref().and_then(|s| s.parent.clone())).collect();
    for p in parents {
        if !out.iter().any(|(id, _)| id == &p) {
            let s = store.subject_state(&p).map_err(store_status)?;
            out.push((p, s));
        }
    }
    Ok(out)
}

/// What a consumer should be told of the code: the worst regulatory standing of it, its
/// lot and its unit; else its own status if it moves on its own, else its lot's.
pub fn effective_status(subjects: &[(SubjectId, Option<SubjectState>)]) -> String {
    let worst = subjects.iter().filter_map(|(_, s)| s.as_ref().map(|s| s.regulatory)).max();
    match worst {
        Some(Regulatory::Recalled) => return "recalled".into(),
        Some(Regulatory::Held) => return "held".into(),
        _ => {}
    }
    let own = subjects.first().and_then(|(_, s)| s.as_ref()).filter(|s| s.detached);
    own.or_else(|| subjects.iter().skip(1).find_map(|(_, s)| s.as_ref()))
        .or_else(|| subjects.first().and_then(|(_, s)| s.as_ref()))
        .map(|s| s.status().as_str().to_string())
        .unwrap_or_else(|| "active".into())
}

pub fn trace(store: &LedgerStore, req: &pb::TraceRequest) -> Result<pb::TraceResponse, Status> {
    let code = parse_code("code", &req.code)?;
    let limit = page_limit(req.limit)?;
    let subjects = trace_subjects(store, &code)?;
    let mut pos = parse_page_token(&req.page_token, subjects.len())?;

    // One page of each subject's chain (ascending log index), merged; a record naming
    // several traced subjects appears once.
    // Each record is read once, whichever chains name it.
    let mut loaded: BTreeMap<u64, (RecordId, SignedRecord)> = BTreeMap::new();
    let mut position: BTreeMap<RecordId, u64> = BTreeMap::new();
    let mut fetched: Vec<Vec<(u64, RecordId)>> = Vec::with_capacity(subjects.len());
    for ((sid, state), from) in subjects.iter().zip(&pos) {
        let count = state.as_ref().map_or(0, |s| s.record_count);
        let mut page = Vec::new();
        if *from < count {
            for id in store.subject_record_ids(sid, *from, limit).map_err(store_status)? {
                let idx = match position.get(&id) {
                    Some(idx) => *idx,
                    None => {
                        let (idx, rec) = store
                            .record(&id)
                            .map_err(store_status)?
                            .ok_or_else(|| Status::internal(format!("chain of {sid} names unknown record {id}")))?;
                        position.insert(id, idx);
                        loaded.insert(idx, (id, rec));
                        idx
                    }
                };
                page.push((idx, id));
            }
        }
        fetched.push(page);
    }
    let mut merged: Vec<(u64, RecordId)> = fetched.iter().flatten().copied().collect();
    merged.sort_by_key(|(idx, _)| *idx);
    merged.dedup_by_key(|(idx, _)| *idx);
    merged.truncate(limit as usize);
    let cutoff = merged.last().map(|(idx, _)| *idx);
    if let Some(cutoff) = cutoff {
        for (p, page) in pos.iter_mut().zip(&fetched) {
            *p += page.iter().take_while(|(idx, _)| *idx <= cutoff).count() as u64;
        }
    }
    let more = subjects.iter().zip(&pos).any(|((_, s), p)| *p < s.as_ref().map_or(0, |s| s.record_count));
    let records = merged
        .iter()
        .map(|(idx, _)| {
            let (id, rec) = &loaded[idx];
            entry(store, id, *idx, rec)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::TraceResponse {
        code: code.to_string(),
        effective_status: effective_status(&subjects),
        subjects: subjects.iter().map(|(id, s)| subject_view_pb(&id.to_string(), s.as_ref())).collect(),
        records,
        next_page_token: if more {
            pos.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
        } else {
            String::new()
        },
        height: store.head().height,
    })
}

pub fn recall_impact(store: &LedgerStore, req: &pb::RecallImpactRequest) -> Result<pb::RecallImpactResponse, Status> {
    let lot = parse_code("lot", &req.lot)?;
    if !matches!(lot, SubjectId::Lot { .. }) {
        return Err(Status::invalid_argument(format!("{lot} is not a lot (01/{{gtin}}/10/{{lot}})")));
    }
    let holdings = store.recall_impact(&lot).map_err(store_status)?;
    Ok(pb::RecallImpactResponse {
        lot: lot.to_string(),
        total_units: holdings.iter().map(|h| h.units).sum(),
        holdings: holdings
            .into_iter()
            .map(|h| pb::Holding {
                custodian: h.custodian.to_string(),
                status: h.status.as_str().into(),
                units: h.units,
            })
            .collect(),
        height: store.head().height,
    })
}

pub fn records_by_org(store: &LedgerStore, req: &pb::RecordsByOrgRequest) -> Result<pb::RecordsByOrgResponse, Status> {
    let org = OrgId::new(req.org.clone()).map_err(|e| Status::invalid_argument(format!("org {:?}: {e}", req.org)))?;
    let limit = page_limit(req.limit)?;
    if store.state_value(&StateKey::Org(org.clone())).map_err(store_status)?.is_none() {
        return Err(Status::not_found(format!("no organisation {org}")));
    }
    let ids = store.org_record_ids(&org, req.from, limit).map_err(store_status)?;
    // Whether a next page exists is asked separately: the store caps one scan at PAGE_MAX,
    // so asking for `limit + 1` at the maximum page would never see the next record.
    let next_from = match ids.last() {
        Some((last, _)) if ids.len() == limit as usize => {
            store.org_record_ids(&org, last + 1, 1).map_err(store_status)?.first().map_or(0, |(i, _)| *i)
        }
        _ => 0,
    };
    let records = ids.iter().map(|(_, id)| record_by_id(store, id)).collect::<Result<Vec<_>, _>>()?;
    Ok(pb::RecordsByOrgResponse { records, next_from })
}

/// The checkpoint at `height` with whether it is complete against `validators`.
pub fn checkpoint_at(
    store: &LedgerStore,
    ledger: &LedgerId,
    validators: &ValidatorSet,
    height: u64,
) -> Result<(Checkpoint, bool), Status> {
    let head = store.head().height;
    if height == 0 || height > head {
        return Err(Status::not_found(format!("no checkpoint at height {height}: heights run 1..={head}")));
    }
    let cp = store
        .checkpoint(height)
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("no checkpoint at height {height}")))?;
    let complete = cp.verify(ledger, validators).is_ok();
    Ok((cp, complete))
}

pub fn get_checkpoint(
    store: &LedgerStore,
    ledger: &LedgerId,
    validators: &ValidatorSet,
    height: u64,
) -> Result<pb::Checkpoint, Status> {
    let (cp, complete) = checkpoint_at(store, ledger, validators, height)?;
    Ok(checkpoint_pb(&cp, complete))
}

/// The log size a proof is for: the request's, or the latest complete checkpoint's.
fn proof_size(store: &LedgerStore, asked: u64, complete_size: Option<u64>) -> Result<u64, Status> {
    let size = store.head().log_size;
    let want = match (asked, complete_size) {
        (0, Some(s)) => s,
        (0, None) => return Err(Status::failed_precondition("no complete checkpoint yet; give a log size")),
        (s, _) => s,
    };
    if want > size {
        return Err(Status::invalid_argument(format!("log size {want} is beyond the log's {size} records")));
    }
    Ok(want)
}

fn root_at(store: &LedgerStore, size: u64) -> Result<Hash32, Status> {
    merkle::root_at(store, size).map_err(|e| Status::internal(format!("merkle log: {e}")))
}

pub fn inclusion_proof(
    store: &LedgerStore,
    req: &pb::InclusionProofRequest,
    complete_size: Option<u64>,
) -> Result<pb::InclusionProofResponse, Status> {
    let log_index = match &req.which {
        Some(pb::inclusion_proof_request::Which::RecordId(b)) => {
            let id = hash_from_pb("record_id", b).map_err(Status::invalid_argument)?;
            store.record(&id).map_err(store_status)?.ok_or_else(|| Status::not_found(format!("no record {id}")))?.0
        }
        Some(pb::inclusion_proof_request::Which::LogIndex(i)) => *i,
        None => return Err(Status::invalid_argument("give a record_id or a log_index")),
    };
    let log_size = proof_size(store, req.log_size, complete_size)?;
    if log_index >= log_size {
        return Err(Status::invalid_argument(format!("log index {log_index} is not in a log of {log_size} records")));
    }
    let id = store
        .record_id_at(log_index)
        .map_err(store_status)?
        .ok_or_else(|| Status::internal(format!("log index {log_index} has no record id")))?;
    let path = store.inclusion_proof(log_index, log_size).map_err(store_status)?;
    Ok(pb::InclusionProofResponse {
        log_index,
        log_size,
        leaf_hash: merkle::leaf_hash(id.as_bytes()).as_bytes().to_vec(),
        path: path.iter().map(|h| h.as_bytes().to_vec()).collect(),
        root: root_at(store, log_size)?.as_bytes().to_vec(),
    })
}

pub fn consistency_proof(
    store: &LedgerStore,
    req: &pb::ConsistencyProofRequest,
    complete_size: Option<u64>,
) -> Result<pb::ConsistencyProofResponse, Status> {
    let new_size = proof_size(store, req.new_size, complete_size)?;
    if req.old_size > new_size {
        return Err(Status::invalid_argument(format!("old size {} is larger than new size {new_size}", req.old_size)));
    }
    let path = store.consistency_proof(req.old_size, new_size).map_err(store_status)?;
    Ok(pb::ConsistencyProofResponse {
        old_size: req.old_size,
        new_size,
        path: path.iter().map(|h| h.as_bytes().to_vec()).collect(),
        old_root: root_at(store, req.old_size)?.as_bytes().to_vec(),
        new_root: root_at(store, new_size)?.as_bytes().to_vec(),
    })
}

/// The trace bundle of a code at a complete checkpoint.
pub fn bundle(store: &LedgerStore, code: &SubjectId, checkpoint: Checkpoint) -> Result<TraceBundle, Status> {
    store.bundle(code, checkpoint).map_err(|e| match e {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found at this checkpoint")),
        other => Status::internal(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veritrace_ledger::store::OpenOptions;
    use veritrace_ledger::testkit::Fixture;

    #[test]
    fn records_by_org_pages_past_a_full_maximum_page() {
        let fx = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path()).unwrap();
        let mut store = Store::create(backend, &fx.genesis, OpenOptions::default()).unwrap();
        let t = fx.genesis.genesis_time_ms + 1_000;
        let records = (0..PAGE_MAX as u64 + 1)
            .map(|i| fx.sign_nonce("nutri", t, i, fx.issue_range(&format!("P{i}"), 1)))
            .collect();
        store.apply_block(&fx.block(1, t, records)).unwrap();
        let page = |from| {
            records_by_org(&store, &pb::RecordsByOrgRequest { org: "nutri".into(), from, limit: PAGE_MAX }).unwrap()
        };
        let first = page(0);
        assert_eq!((first.records.len(), first.next_from), (PAGE_MAX as usize, u64::from(PAGE_MAX)));
        let second = page(first.next_from);
        assert_eq!((second.records.len(), second.next_from), (1, 0));
    }
}
