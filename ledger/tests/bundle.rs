//! Trace bundles: built from a store, verified offline, and refused when tampered with.

use veritrace_ledger::bundle::{BundleError, TraceBundle, verify_bundle};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::record::*;
use veritrace_ledger::testkit::{Fixture, T0_MS};
use veritrace_ledger::view::Outcome;

/// A formula chain: issue, inspect, ship, receive, clear customs, sell one tin.
fn chain() -> (Fixture, TraceBundle) {
    let fx = Fixture::new();
    let mut store = fx.mem_store();
    let lot = fx.lot_id("L1");
    let item = fx.item("L1", 42);
    let mut t = T0_MS + 10_000;
    let mut height = 0;
    let mut apply = |records: Vec<SignedRecord>, t: u64| {
        height += 1;
        let (header, receipts) = store.apply_block(&fx.block(height, t, records)).unwrap();
        for r in &receipts {
            assert!(matches!(r.outcome, Outcome::Accepted { .. }), "{r:?}");
        }
        header
    };
    apply(vec![fx.sign("nutri", t, fx.issue_range("L1", 6_000))], t);
    t += 1000;
    let report = RecordBody::Inspection(InspectionReport {
        subjects: vec![lot.clone()],
        report_no: "CCIC-AU-2026-0117".into(),
        standard: "GB 10765-2021".into(),
        result: Verdict::Pass,
        test_items: vec![],
        document_digest: Hash32(*blake3::hash(b"pre-shipment report").as_bytes()),
        valid_until_ms: None,
    });
    apply(vec![fx.sign("ccic-au", t, report)], t);
    t += 1000;
    let ship =
        RecordBody::Ship(Ship { to: fx.org_id("importer"), subjects: vec![lot.clone()], location: "Melbourne".into() });
    let noise = fx.sign("boards", t, {
        let mut b = fx.issue_range("X", 1);
        if let RecordBody::IssueCodes(ic) = &mut b {
            ic.product.gtin = veritrace_ledger::testkit::gtin(veritrace_ledger::testkit::BOARDS_PREFIX, 7);
        }
        b
    });
    apply(vec![fx.sign("nutri", t, ship), noise], t);
    t += 1000;
    let recv = RecordBody::Receive(Receive {
        from: fx.org_id("nutri"),
        subjects: vec![lot.clone()],
        location: "Pingtan".into(),
    });
    apply(vec![fx.sign("importer", t, recv)], t);
    t += 1000;
    let clear = RecordBody::Regulatory(RegulatoryAction {
        action: RegulatoryKind::CustomsClearance,
        subjects: vec![lot.clone()],
        reason: "pre-shipment inspection matches the consignment".into(),
        reference: "PT-2026-88".into(),
    });
    apply(vec![fx.sign("customs-pingtan", t, clear)], t);
    t += 1000;
    let sell = RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "cross-border shop".into() });
    let header = apply(vec![fx.sign("importer", t, sell)], t);
    let cp = fx.checkpoint(&header);
    let bundle = store.bundle(&item, cp).unwrap();
    (fx, bundle)
}

#[test]
fn an_honest_bundle_verifies_in_json_and_bytes() {
    let (fx, b) = chain();
    assert_eq!(b.subjects[0].subject, b.code);
    assert_eq!(b.records.len(), 6, "five lot records and the sale; the boards record is not about this code");
    let v = verify_bundle(&b, &fx.genesis.validator_set()).unwrap();
    assert_eq!(v.signers.len(), 3);
    let json = TraceBundle::from_json(&b.to_json()).unwrap();
    assert_eq!(json, b);
    let bytes = TraceBundle::from_bytes(&b.to_bytes()).unwrap();
    verify_bundle(&bytes, &fx.genesis.validator_set()).unwrap();
}

#[test]
fn an_untouched_item_is_covered_by_its_lot() {
    let (fx, b) = chain();
    let mut store = fx.mem_store();
    let t = T0_MS + 10_000;
    let (header, _) = store.apply_block(&fx.block(1, t, vec![fx.sign("nutri", t, fx.issue_range("L1", 10))])).unwrap();
    let item = fx.item("L1", 3);
    let bundle = store.bundle(&item, fx.checkpoint(&header)).unwrap();
    assert!(bundle.subjects[0].state.is_none());
    verify_bundle(&bundle, &fx.genesis.validator_set()).unwrap();
    // Claim a code the lot never issued.
    let mut forged = bundle.clone();
    forged.code = fx.item("L1", 10);
    forged.subjects[0].subject = forged.code.clone();
    assert!(verify_bundle(&forged, &fx.genesis.validator_set()).is_err());
    drop(b);
}

fn expect_err(b: &TraceBundle, fx: &Fixture) -> BundleError {
    verify_bundle(b, &fx.genesis.validator_set()).expect_err("tampered bundle verified")
}

#[test]
fn a_removed_record_is_caught() {
    let (fx, mut b) = chain();
    // Hide the inspection: drop it from the records and from the lot's chain.
    let idx = b.records.iter().position(|r| r.record.record.body.kind() == RecordKind::Inspection).unwrap();
    let log_index = b.records.remove(idx).log_index;
    for s in &mut b.subjects {
        s.chain.retain(|i| *i != log_index);
    }
    let e = expect_err(&b, &fx);
    assert!(matches!(e, BundleError::Subject { .. }), "{e}");
}

#[test]
fn an_added_record_is_caught() {
    let (fx, mut b) = chain();
    let extra = b.records[0].clone();
    let mut forged = extra.clone();
    forged.log_index = 999;
    b.records.push(forged);
    let e = expect_err(&b, &fx);
    assert!(matches!(e, BundleError::Record { index: 999, .. }), "{e}");
}

#[test]
fn reordered_records_are_caught() {
    let (fx, mut b) = chain();
    let lot = b.subjects.iter_mut().find(|s| matches!(s.subject, SubjectId::Lot { .. })).unwrap();
    lot.chain.swap(0, 1);
    let e = expect_err(&b, &fx);
    assert!(e.to_string().contains("chain"), "{e}");
}

#[test]
fn an_altered_record_is_caught() {
    let (fx, mut b) = chain();
    let r = b.records.iter_mut().find(|r| r.record.record.body.kind() == RecordKind::Inspection).unwrap();
    if let RecordBody::Inspection(rep) = &mut r.record.record.body {
        rep.result = Verdict::Fail;
    }
    // Its id changes, so its inclusion proof fails before its signature is even checked.
    let e = expect_err(&b, &fx);
    assert!(matches!(e, BundleError::Record { .. }), "{e}");
    assert!(e.to_string().contains("inclusion") || e.to_string().contains("signature"), "{e}");
}

#[test]
fn a_forged_signature_is_caught() {
    let (fx, mut b) = chain();
    // The inspection re-signed with another organisation's key: the signature is part of
    // the signed bytes, so the id changes too, and whichever check comes first refuses it.
    let r = b.records.iter_mut().find(|r| r.record.record.body.kind() == RecordKind::Inspection).unwrap();
    let forged = SignedRecord::sign(fx.ledger(), r.record.record.clone(), &fx.member("nutri").key);
    r.record = forged;
    let e = expect_err(&b, &fx);
    assert!(matches!(e, BundleError::Record { .. }), "{e}");
}

#[test]
fn an_altered_state_is_caught() {
    let (fx, mut b) = chain();
    let lot = b.subjects.iter_mut().find(|s| matches!(s.subject, SubjectId::Lot { .. })).unwrap();
    if let Some(st) = &mut lot.state {
        st.regulatory = veritrace_ledger::state::Regulatory::Clear;
        st.customs_cleared = false;
    }
    let e = expect_err(&b, &fx);
    assert!(e.to_string().contains("state proof"), "{e}");
}

#[test]
fn a_checkpoint_without_quorum_is_refused() {
    let (fx, mut b) = chain();
    b.checkpoint.signatures.truncate(1);
    let e = expect_err(&b, &fx);
    assert!(matches!(e, BundleError::Checkpoint(_)), "{e}");
    // A lying header (another log root) breaks every signature.
    let (fx, mut b) = chain();
    b.checkpoint.header.log_root = Hash32::ZERO;
    assert!(matches!(expect_err(&b, &fx), BundleError::Checkpoint(_)));
}
