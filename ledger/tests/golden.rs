//! Golden vectors: the canonical bytes, ids and signatures of one record of every kind, a
//! block header and a checkpoint signature, pinned in `tests/golden/vectors.json`.
//!
//! A failure here means the protocol changed: signed bytes, ids or hashes would differ
//! from what existing ledgers hold. If the change is deliberate, bump the format version
//! and regenerate with `VERITRACE_BLESS=1 cargo test -p veritrace-ledger --test golden`.

use std::collections::BTreeMap;

use veritrace_ledger::block::BlockHeader;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Lot, Serial, Sscc, SubjectId};
use veritrace_ledger::org::{KeyId, NodeId, OrgKey, PublicKey};
use veritrace_ledger::record::*;
use veritrace_ledger::testkit::{self, Fixture, T0_MS};

fn sscc() -> Sscc {
    let body = format!("0{}000000001", testkit::NUTRI_PREFIX);
    Sscc::parse(&format!("{body}{}", veritrace_ledger::ids::gs1_check_digit(&body).unwrap())).unwrap()
}

fn records(fx: &Fixture) -> Vec<(&'static str, SignedRecord)> {
    let t = T0_MS + 1_000;
    let lot = fx.lot_id("L1");
    let item = fx.item("L1", 1);
    let gtin = testkit::gtin(testkit::NUTRI_PREFIX, 1);
    let mut out = vec![
        ("issue_codes_range", fx.sign("nutri", t, fx.issue_range("L1", 1_000_000))),
        (
            "issue_codes_serials",
            fx.sign(
                "nutri",
                t,
                RecordBody::IssueCodes(IssueCodes {
                    product: fx.formula(),
                    lot: Lot::parse("L2").unwrap(),
                    production_date: "2026-01-10".into(),
                    expiry_date: None,
                    codes: CodeSet::Serials(vec![Serial::parse("A/1").unwrap(), Serial::parse("A/2").unwrap()]),
                    factory: "Melbourne".into(),
                }),
            ),
        ),
        (
            "certify_conformity",
            fx.sign(
                "nutri",
                t,
                RecordBody::CertifyConformity(CertifyConformity {
                    gtin: gtin.clone(),
                    lot: Lot::parse("L1").unwrap(),
                    certificate_no: "COC-2026-001".into(),
                    standard: "GB 10765-2021".into(),
                    statement: "factory inspection passed".into(),
                }),
            ),
        ),
        (
            "inspection",
            fx.sign(
                "ccic-au",
                t,
                RecordBody::Inspection(InspectionReport {
                    subjects: vec![lot.clone()],
                    report_no: "CCIC-AU-2026-0117".into(),
                    standard: "GB 10765-2021".into(),
                    result: Verdict::Pass,
                    test_items: vec![TestItem {
                        name: "protein".into(),
                        requirement: "1.8-3.0 g/100 kcal".into(),
                        measured: "2.2".into(),
                        verdict: Verdict::Pass,
                    }],
                    document_digest: Hash32(*blake3::hash(b"report").as_bytes()),
                    valid_until_ms: Some(T0_MS + 86_400_000),
                }),
            ),
        ),
        (
            "ship",
            fx.sign(
                "nutri",
                t,
                RecordBody::Ship(Ship {
                    to: fx.org_id("importer"),
                    subjects: vec![lot.clone()],
                    location: "Melbourne".into(),
                }),
            ),
        ),
        (
            "receive",
            fx.sign(
                "importer",
                t,
                RecordBody::Receive(Receive {
                    from: fx.org_id("nutri"),
                    subjects: vec![lot.clone()],
                    location: "Pingtan".into(),
                }),
            ),
        ),
        (
            "aggregate",
            fx.sign("nutri", t, RecordBody::Aggregate(Aggregation { parent: sscc(), children: vec![item.clone()] })),
        ),
        (
            "disaggregate",
            fx.sign("nutri", t, RecordBody::Disaggregate(Aggregation { parent: sscc(), children: vec![item.clone()] })),
        ),
        ("sell", fx.sign("shop", t, RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "web".into() }))),
    ];
    for (name, action) in [
        ("regulatory_hold", RegulatoryKind::Hold),
        ("regulatory_release", RegulatoryKind::Release),
        ("regulatory_recall", RegulatoryKind::Recall),
        ("regulatory_customs_clearance", RegulatoryKind::CustomsClearance),
    ] {
        let body = RecordBody::Regulatory(RegulatoryAction {
            action,
            subjects: vec![lot.clone(), SubjectId::LogisticUnit { sscc: sscc() }],
            reason: "test".into(),
            reference: "case-7".into(),
        });
        out.push((name, fx.sign("samr", t, body)));
    }
    let key = OrgKey {
        key_id: KeyId::new("k2").unwrap(),
        public_key: PublicKey::from_bytes(testkit::key("nutri/k2").verifying_key().to_bytes()).unwrap(),
        valid_from_ms: T0_MS,
        valid_until_ms: None,
        revoked_at_ms: None,
    };
    let mut gov = fx.sign("samr", t, RecordBody::Governance(GovernanceAction::AddKey { org: fx.org_id("nutri"), key }));
    let m = fx.member("customs-pingtan");
    gov.approve(fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    out.push(("governance_add_key", gov));
    out
}

fn header() -> BlockHeader {
    let h = |s: &str| Hash32(*blake3::hash(s.as_bytes()).as_bytes());
    BlockHeader {
        ledger_id: Fixture::new().genesis.ledger_id.clone(),
        height: 7,
        prev_hash: h("prev"),
        time_ms: T0_MS + 7_000,
        proposer: NodeId::new("node-1").unwrap(),
        records_hash: h("records"),
        receipts_hash: h("receipts"),
        log_size: 42,
        log_root: h("log"),
        state_root: h("state"),
    }
}

fn vectors() -> BTreeMap<String, BTreeMap<&'static str, String>> {
    let fx = Fixture::new();
    let mut out = BTreeMap::new();
    for (name, r) in records(&fx) {
        let mut v = BTreeMap::new();
        v.insert("bytes", hex::encode(r.to_bytes()));
        v.insert("id", r.id().to_hex());
        v.insert("signature", hex::encode(r.signature.0));
        out.insert(format!("record/{name}"), v);
    }
    let h = header();
    let sig = h.sign(fx.validator_keys[0].0.clone(), &fx.validator_keys[0].1);
    let mut v = BTreeMap::new();
    v.insert("bytes", hex::encode(veritrace_ledger::codec::encode(&h)));
    v.insert("hash", h.hash().to_hex());
    v.insert("signature", hex::encode(sig.signature.0));
    out.insert("block_header".into(), v);
    let mut v = BTreeMap::new();
    v.insert("hash", fx.genesis.hash().to_hex());
    out.insert("genesis".into(), v);
    out
}

#[test]
fn golden_vectors_are_unchanged() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vectors.json");
    let now = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("VERITRACE_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let pinned = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate with VERITRACE_BLESS=1)", path.display()));
    let pinned: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&pinned).unwrap();
    let now: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&now).unwrap();
    for (name, want) in &pinned {
        let got = now.get(name).unwrap_or_else(|| panic!("vector {name} is no longer produced"));
        for (field, w) in want {
            assert_eq!(got.get(field), Some(w), "golden vector {name}.{field} changed: a protocol change");
        }
    }
    for name in now.keys() {
        assert!(pinned.contains_key(name), "new vector {name} is not pinned: regenerate with VERITRACE_BLESS=1");
    }
}

#[test]
fn every_record_kind_has_a_vector() {
    let fx = Fixture::new();
    let kinds: std::collections::BTreeSet<RecordKind> =
        records(&fx).iter().map(|(_, r)| r.record.body.kind()).collect();
    assert_eq!(kinds.len(), 10, "a record kind lacks a golden vector: {kinds:?}");
}

#[test]
fn canonical_bytes_round_trip_and_refuse_trailing_or_versioned_junk() {
    let fx = Fixture::new();
    for (name, r) in records(&fx) {
        let bytes = r.to_bytes();
        assert_eq!(SignedRecord::from_bytes(&bytes).unwrap(), r, "{name}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SignedRecord::from_bytes(&longer).is_err(), "{name}: trailing byte accepted");
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(SignedRecord::from_bytes(&v2).is_err(), "{name}: version 2 accepted");
        assert!(SignedRecord::from_bytes(&bytes[..bytes.len() - 1]).is_err(), "{name}: truncation accepted");
    }
}
