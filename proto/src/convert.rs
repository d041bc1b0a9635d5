//! Conversions between ledger types and their wire messages. The wire carries canonical
//! bytes next to the plain fields wherever a client may want to check something offline
//! (checkpoints, records): the plain fields are for reading, the canonical bytes for
//! verifying, and [`checkpoint_from_pb`] refuses a message whose two disagree.

use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::codec;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::record::{RecordId, SignedRecord};
use veritrace_ledger::state::SubjectState;

use crate::v1 as pb;

/// A checkpoint on the wire; `complete` is the serving node's judgement against its
/// current validator set (a client re-checks against the validators it trusts).
pub fn checkpoint_pb(cp: &Checkpoint, complete: bool) -> pb::Checkpoint {
    let h = &cp.header;
    pb::Checkpoint {
        ledger_id: h.ledger_id.to_string(),
        height: h.height,
        header_hash: h.hash().as_bytes().to_vec(),
        prev_hash: h.prev_hash.as_bytes().to_vec(),
        time_ms: h.time_ms,
        proposer: h.proposer.to_string(),
        log_size: h.log_size,
        log_root: h.log_root.as_bytes().to_vec(),
        state_root: h.state_root.as_bytes().to_vec(),
        signatures: cp
            .signatures
            .iter()
            .map(|s| pb::CheckpointSignature { node_id: s.node_id.to_string(), signature: s.signature.0.to_vec() })
            .collect(),
        complete,
        canonical: codec::encode(cp),
    }
}

/// Decodes a checkpoint from its canonical bytes and checks that the plain fields say the
/// same (height, sizes, roots, header hash).
pub fn checkpoint_from_pb(m: &pb::Checkpoint) -> Result<Checkpoint, String> {
    let cp: Checkpoint = codec::decode("checkpoint", &m.canonical).map_err(|e| e.to_string())?;
    let h = &cp.header;
    let agree = h.height == m.height
        && h.log_size == m.log_size
        && h.log_root.as_bytes().as_slice() == m.log_root.as_slice()
        && h.state_root.as_bytes().as_slice() == m.state_root.as_slice()
        && h.hash().as_bytes().as_slice() == m.header_hash.as_slice()
        && h.ledger_id.as_str() == m.ledger_id;
    if !agree {
        return Err(format!("checkpoint at height {}: plain fields disagree with its canonical bytes", m.height));
    }
    Ok(cp)
}

/// A 32-byte hash from a bytes field named `what`.
pub fn hash_from_pb(what: &str, bytes: &[u8]) -> Result<Hash32, String> {
    let a: [u8; 32] =
        bytes.try_into().map_err(|_| format!("{what} must be 32 bytes, got {} ({})", bytes.len(), hex(bytes)))?;
    Ok(Hash32(a))
}

fn hex(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let s: String = bytes.iter().take(MAX).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > MAX { format!("{s}...") } else { s }
}

/// An accepted record and where it is.
pub fn record_entry_pb(id: &RecordId, log_index: u64, height: u64, record: &SignedRecord) -> pb::RecordEntry {
    pb::RecordEntry {
        record_id: id.as_bytes().to_vec(),
        log_index,
        height,
        kind: record.record.body.kind().as_str().to_string(),
        author: record.record.author.to_string(),
        time_ms: record.record.time_ms,
        signed_record: record.to_bytes(),
        json: serde_json::to_string(record).unwrap_or_default(),
    }
}

/// What the ledger knows of a subject; `state` is `None` for an item that follows its lot.
pub fn subject_view_pb(subject: &str, state: Option<&SubjectState>) -> pb::SubjectView {
    let Some(s) = state else {
        return pb::SubjectView { subject: subject.to_string(), ..Default::default() };
    };
    pb::SubjectView {
        subject: subject.to_string(),
        has_state: true,
        status: s.status().as_str().to_string(),
        custodian: s.custodian.to_string(),
        in_transit_to: s.in_transit_to.as_ref().map(|o| o.to_string()).unwrap_or_default(),
        lot: s.lot.as_ref().map(|l| l.to_string()).unwrap_or_default(),
        parent: s.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        origin: s.origin.to_string(),
        units: s.units,
        record_count: s.record_count,
        chain: s.chain.as_bytes().to_vec(),
        customs_cleared: s.customs_cleared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veritrace_ledger::testkit::Fixture;

    #[test]
    fn checkpoint_round_trips_and_refuses_disagreeing_fields() {
        let fx = Fixture::new();
        let mut store = fx.mem_store();
        let t = fx.genesis.genesis_time_ms + 1_000;
        let block = fx.block(1, t, vec![fx.sign("nutri", t, fx.issue_range("L1", 10))]);
        let (header, _) = store.apply_block(&block).expect("apply");
        let cp = fx.checkpoint(&header);
        let mut m = checkpoint_pb(&cp, true);
        assert_eq!(checkpoint_from_pb(&m).expect("round trip"), cp);
        m.log_size += 1;
        let err = checkpoint_from_pb(&m).expect_err("plain field edited");
        assert!(err.contains("disagree"), "{err}");
    }

    #[test]
    fn hash_fields_name_their_length() {
        let err = hash_from_pb("record id", &[1, 2, 3]).expect_err("short");
        assert_eq!(err, "record id must be 32 bytes, got 3 (010203)");
    }
}
