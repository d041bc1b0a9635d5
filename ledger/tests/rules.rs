//! Every apply rule, once accepting and once rejecting, through a real store on memory.
//! A rejected record must leave the roots as they were.

use veritrace_ledger::apply::RejectCode;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Sscc, SubjectId};
use veritrace_ledger::kv::MemBackend;
use veritrace_ledger::org::{CodePrefix, KeyId, OrgKey, Organisation, PublicKey, Role};
use veritrace_ledger::record::*;
use veritrace_ledger::state::{Regulatory, Status};
use veritrace_ledger::store::Store;
use veritrace_ledger::testkit::{self, Fixture, T0_MS};
use veritrace_ledger::view::{Outcome, Receipt};

/// A ledger under test: the fixture, its store, and a clock for block times.
struct Chain {
    fx: Fixture,
    store: Store<MemBackend>,
    now: u64,
}

impl Chain {
    fn new() -> Chain {
        let fx = Fixture::new();
        let store = fx.mem_store();
        Chain { fx, store, now: T0_MS + 60_000 }
    }

    fn rec(&self, author: &str, body: RecordBody) -> SignedRecord {
        self.fx.sign(author, self.now, body)
    }

    /// Applies one block of records and returns their receipts.
    fn block(&mut self, records: Vec<SignedRecord>) -> Vec<Receipt> {
        self.now += 1_000;
        let b = self.fx.block(self.store.head().height + 1, self.now, records);
        self.store.apply_block(&b).expect("block applies").1
    }

    fn accept(&mut self, author: &str, body: RecordBody) -> Receipt {
        let r = self.rec(author, body);
        let receipt = self.block(vec![r]).remove(0);
        assert!(matches!(receipt.outcome, Outcome::Accepted { .. }), "expected acceptance, got {receipt:?}");
        receipt
    }

    /// Submits a record that must be rejected with `code`, and checks nothing changed.
    fn reject(&mut self, author: &str, body: RecordBody, code: RejectCode) -> String {
        let r = self.rec(author, body);
        self.reject_signed(r, code)
    }

    fn reject_signed(&mut self, r: SignedRecord, code: RejectCode) -> String {
        let before = self.store.head().clone();
        let receipt = self.block(vec![r]).remove(0);
        let after = self.store.head();
        assert_eq!(before.log_root, after.log_root, "a rejected record changed the log");
        assert_eq!(before.state_root, after.state_root, "a rejected record changed the state");
        match receipt.outcome {
            Outcome::Rejected { code: got, message } => {
                assert_eq!(got, code, "wrong reject code, message: {message}");
                message
            }
            other => panic!("expected rejection {code:?}, got {other:?}"),
        }
    }

    fn status(&self, s: &SubjectId) -> Status {
        self.store.subject_state(s).unwrap().expect("subject has state").status()
    }

    fn org(&self, id: &str) -> veritrace_ledger::org::OrgId {
        self.fx.org_id(id)
    }

    fn issue(&mut self, lot: &str, count: u64) -> SubjectId {
        let body = self.fx.issue_range(lot, count);
        self.accept("nutri", body);
        self.fx.lot_id(lot)
    }

    fn ship(&self, to: &str, subjects: Vec<SubjectId>) -> RecordBody {
        RecordBody::Ship(Ship { to: self.org(to), subjects, location: "Melbourne".into() })
    }

    fn receive(&self, from: &str, subjects: Vec<SubjectId>) -> RecordBody {
        RecordBody::Receive(Receive { from: self.org(from), subjects, location: "Pingtan".into() })
    }

    fn regulate(&self, action: RegulatoryKind, subjects: Vec<SubjectId>) -> RecordBody {
        RecordBody::Regulatory(RegulatoryAction { action, subjects, reason: "test".into(), reference: "case-1".into() })
    }
}

fn inspection(subjects: Vec<SubjectId>, standard: &str, result: Verdict) -> RecordBody {
    RecordBody::Inspection(InspectionReport {
        subjects,
        report_no: "CCIC-2026-0001".into(),
        standard: standard.into(),
        result,
        test_items: vec![TestItem {
            name: "protein".into(),
            requirement: ">= 1.8 g/100 kJ".into(),
            measured: "2.1 g/100 kJ".into(),
            verdict: result,
        }],
        document_digest: Hash32(*blake3::hash(b"report pdf").as_bytes()),
        valid_until_ms: None,
    })
}

#[test]
fn producer_issues_under_its_prefix_and_others_may_not() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 6_000);
    let st = c.store.subject_state(&lot).unwrap().unwrap();
    assert_eq!(st.units, 6_000);
    assert_eq!(st.custodian.as_str(), "nutri");

    let body = c.fx.issue_range("L2", 10);
    let msg = c.reject("importer", body, RejectCode::RoleNotAllowed);
    assert!(msg.contains("importer"), "{msg}");

    // boards is a producer, but the formula GTIN is under nutri's prefix.
    let body = c.fx.issue_range("L3", 10);
    let msg = c.reject("boards", body, RejectCode::PrefixNotAllowed);
    assert!(msg.contains(testkit::NUTRI_PREFIX) || msg.contains("gtin"), "{msg}");
}

#[test]
fn a_code_is_issued_once_ever() {
    let mut c = Chain::new();
    c.issue("L1", 100);
    // The same serials again, in another lot: the range overlaps.
    let RecordBody::IssueCodes(mut again) = c.fx.issue_range("L1", 50) else { unreachable!() };
    again.lot = veritrace_ledger::ids::Lot::parse("L9").unwrap();
    let msg = c.reject("nutri", RecordBody::IssueCodes(again.clone()), RejectCode::AlreadyIssued);
    assert!(msg.contains("L1-000000"), "{msg}");

    // A listed serial inside the earlier range.
    again.codes = CodeSet::Serials(vec![veritrace_ledger::ids::Serial::parse("L1-000042").unwrap()]);
    c.reject("nutri", RecordBody::IssueCodes(again.clone()), RejectCode::AlreadyIssued);

    // A listed serial outside it is fine, and then a range over it is refused.
    again.codes = CodeSet::Serials(vec![veritrace_ledger::ids::Serial::parse("L1-000500").unwrap()]);
    c.accept("nutri", RecordBody::IssueCodes(again.clone()));
    let RecordBody::IssueCodes(mut wide) = c.fx.issue_range("L1", 1_000) else { unreachable!() };
    wide.lot = veritrace_ledger::ids::Lot::parse("L8").unwrap();
    if let CodeSet::Range(r) = &mut wide.codes {
        r.start = 200;
        r.count = 400;
    }
    let msg = c.reject("nutri", RecordBody::IssueCodes(wide.clone()), RejectCode::AlreadyIssued);
    assert!(msg.contains("L1-000500"), "{msg}");

    // Two issuances of the same codes in one block: the second is refused.
    let first = c.rec("nutri", c.fx.issue_range("M1", 10));
    let RecordBody::IssueCodes(mut dup) = c.fx.issue_range("M1", 10) else { unreachable!() };
    dup.lot = veritrace_ledger::ids::Lot::parse("M2").unwrap();
    let second = c.rec("nutri", RecordBody::IssueCodes(dup));
    let receipts = c.block(vec![first, second]);
    assert!(matches!(receipts[0].outcome, Outcome::Accepted { .. }));
    assert!(matches!(receipts[1].outcome, Outcome::Rejected { code: RejectCode::AlreadyIssued, .. }));
}

#[test]
fn a_million_codes_in_one_constant_size_record() {
    let mut c = Chain::new();
    let r = c.rec("nutri", c.fx.issue_range("BIG", 1_000_000));
    assert!(r.to_bytes().len() < 1_024, "range record is {} bytes", r.to_bytes().len());
    let receipt = c.block(vec![r]).remove(0);
    assert!(matches!(receipt.outcome, Outcome::Accepted { .. }));
    let item = c.fx.item("BIG", 999_999);
    assert_eq!(c.store.issuance(&item).unwrap().unwrap().lot, c.fx.lot_id("BIG"));
    assert!(c.store.issuance(&c.fx.item("BIG", 1_000_000)).unwrap().is_none());
}

#[test]
fn only_the_custodian_ships_and_only_the_recipient_receives() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 10);
    let msg = c.reject("importer", c.ship("shop", vec![lot.clone()]), RejectCode::NotCustodian);
    assert!(msg.contains("nutri"), "{msg}");
    c.accept("nutri", c.ship("importer", vec![lot.clone()]));
    assert_eq!(c.status(&lot), Status::InTransit);
    // Shipping again while in transit is refused.
    c.reject("nutri", c.ship("shop", vec![lot.clone()]), RejectCode::WrongTransitState);
    let msg = c.reject("shop", c.receive("nutri", vec![lot.clone()]), RejectCode::NotRecipient);
    assert!(msg.contains("importer"), "{msg}");
    c.reject("importer", c.receive("logistics", vec![lot.clone()]), RejectCode::NotCustodian);
    c.accept("importer", c.receive("nutri", vec![lot.clone()]));
    let st = c.store.subject_state(&lot).unwrap().unwrap();
    assert_eq!(st.custodian.as_str(), "importer");
    assert_eq!(st.status(), Status::Active);
    // Items without entries of their own moved with the lot.
    c.accept("importer", c.ship("shop", vec![c.fx.item("L1", 3)]));
    let item = c.store.subject_state(&c.fx.item("L1", 3)).unwrap().unwrap();
    assert_eq!(item.in_transit_to.as_ref().map(|o| o.as_str()), Some("shop"));
    assert_eq!(c.store.subject_state(&lot).unwrap().unwrap().units, 9);
}

#[test]
fn unknown_subjects_and_organisations_are_refused() {
    let mut c = Chain::new();
    c.issue("L1", 10);
    c.reject("nutri", c.ship("importer", vec![c.fx.item("L1", 10)]), RejectCode::UnknownSubject);
    let body = RecordBody::Ship(Ship {
        to: veritrace_ledger::org::OrgId::new("nobody").unwrap(),
        subjects: vec![c.fx.lot_id("L1")],
        location: String::new(),
    });
    c.reject("nutri", body, RejectCode::UnknownOrganisation);
}

#[test]
fn nothing_held_or_recalled_ships() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 10);
    c.reject("nutri", c.regulate(RegulatoryKind::Hold, vec![lot.clone()]), RejectCode::RoleNotAllowed);
    c.accept("samr", c.regulate(RegulatoryKind::Hold, vec![lot.clone()]));
    assert_eq!(c.status(&lot), Status::Held);
    c.reject("nutri", c.ship("importer", vec![lot.clone()]), RejectCode::SubjectHeld);
    // An item of a held lot is held too.
    c.reject("nutri", c.ship("importer", vec![c.fx.item("L1", 1)]), RejectCode::SubjectHeld);
    c.accept("samr", c.regulate(RegulatoryKind::Release, vec![lot.clone()]));
    c.reject("samr", c.regulate(RegulatoryKind::Release, vec![lot.clone()]), RejectCode::Conflict);
    c.accept("nutri", c.ship("importer", vec![c.fx.item("L1", 1)]));
    c.accept("customs-pingtan", c.regulate(RegulatoryKind::Recall, vec![lot.clone()]));
    assert_eq!(c.status(&lot), Status::Recalled);
    let msg = c.reject("nutri", c.ship("importer", vec![c.fx.item("L1", 2)]), RejectCode::SubjectRecalled);
    assert!(msg.contains("recalled"), "{msg}");
    c.reject("nutri", c.ship("importer", vec![lot.clone()]), RejectCode::SubjectRecalled);
    c.reject("samr", c.regulate(RegulatoryKind::CustomsClearance, vec![lot]), RejectCode::SubjectRecalled);
}

#[test]
fn customs_clearance_and_sale() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 10);
    c.accept("customs-pingtan", c.regulate(RegulatoryKind::CustomsClearance, vec![lot.clone()]));
    assert!(c.store.subject_state(&lot).unwrap().unwrap().customs_cleared);
    let item = c.fx.item("L1", 5);
    c.reject(
        "shop",
        RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "web".into() }),
        RejectCode::NotCustodian,
    );
    c.accept("nutri", RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "web".into() }));
    assert_eq!(c.status(&item), Status::Sold);
    c.reject(
        "nutri",
        RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "web".into() }),
        RejectCode::SubjectSold,
    );
    c.reject("nutri", c.ship("importer", vec![item]), RejectCode::SubjectSold);
}

#[test]
fn inspection_bodies_report_within_scope() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 10);
    c.accept("ccic-au", inspection(vec![lot.clone()], "GB 10765-2021", Verdict::Pass));
    let msg =
        c.reject("ccic-au", inspection(vec![lot.clone()], "GB/T 4897-2015", Verdict::Pass), RejectCode::OutOfScope);
    assert!(msg.contains("GB/T 4897-2015"), "{msg}");
    c.reject("nutri", inspection(vec![lot.clone()], "GB 10765-2021", Verdict::Pass), RejectCode::RoleNotAllowed);
    // An inspection of one code gives it history, but it still moves with its lot.
    let item = c.fx.item("L1", 7);
    c.accept("ccic-au", inspection(vec![item.clone()], "GB 10765-2021", Verdict::Fail));
    c.accept("nutri", c.ship("importer", vec![lot.clone()]));
    c.accept("importer", c.receive("nutri", vec![lot]));
    c.accept("importer", c.ship("shop", vec![item.clone()]));
    assert_eq!(c.store.subject_state(&item).unwrap().unwrap().record_count, 2);
}

#[test]
fn certificate_of_conformity_only_by_the_lots_producer() {
    let mut c = Chain::new();
    c.issue("L1", 10);
    let cert = |c: &Chain| {
        RecordBody::CertifyConformity(CertifyConformity {
            gtin: testkit::gtin(testkit::NUTRI_PREFIX, 1),
            lot: veritrace_ledger::ids::Lot::parse("L1").unwrap(),
            certificate_no: "COC-1".into(),
            standard: c.fx.formula().standard,
            statement: "factory inspection passed".into(),
        })
    };
    c.reject("boards", cert(&c), RejectCode::NotCustodian);
    c.accept("nutri", cert(&c));
}

#[test]
fn logistic_units_carry_their_children() {
    let mut c = Chain::new();
    c.issue("L1", 10);
    let body = format!("0{}000000001", testkit::NUTRI_PREFIX);
    let sscc = Sscc::parse(&format!("{body}{}", veritrace_ledger::ids::gs1_check_digit(&body).unwrap())).unwrap();
    let unit = SubjectId::LogisticUnit { sscc: sscc.clone() };
    let items: Vec<SubjectId> = (0..3).map(|i| c.fx.item("L1", i)).collect();
    let pack = RecordBody::Aggregate(Aggregation { parent: sscc.clone(), children: items.clone() });
    c.reject("importer", pack.clone(), RejectCode::NotCustodian);
    c.accept("nutri", pack);
    // A packed item moves only with its unit.
    c.reject("nutri", c.ship("importer", vec![items[0].clone()]), RejectCode::Conflict);
    c.accept("nutri", c.ship("importer", vec![unit.clone()]));
    c.accept("importer", c.receive("nutri", vec![unit.clone()]));
    for i in &items {
        let st = c.store.subject_state(i).unwrap().unwrap();
        assert_eq!(st.custodian.as_str(), "importer", "{i}");
        assert_eq!(st.record_count, 3, "{i}: pack, ship, receive");
    }
    let unpack = RecordBody::Disaggregate(Aggregation { parent: sscc, children: vec![items[0].clone()] });
    c.accept("importer", unpack);
    c.accept("importer", c.ship("shop", vec![items[0].clone()]));
    assert_eq!(c.store.subject_state(&unit).unwrap().unwrap().units, 2);
}

#[test]
fn record_time_must_be_within_the_window() {
    let mut c = Chain::new();
    let far = c.now + 3_600_000;
    let r = c.fx.sign("nutri", far, c.fx.issue_range("L1", 10));
    let msg = c.reject_signed(r, RejectCode::TimeOutOfWindow);
    assert!(msg.contains(&far.to_string()), "{msg}");
}

#[test]
fn no_record_is_applied_twice() {
    let mut c = Chain::new();
    let r = c.rec("nutri", c.fx.issue_range("L1", 10));
    let receipts = c.block(vec![r.clone(), r.clone()]);
    assert!(matches!(receipts[0].outcome, Outcome::Accepted { .. }));
    assert!(matches!(receipts[1].outcome, Outcome::Rejected { code: RejectCode::Duplicate, .. }));
    c.reject_signed(r, RejectCode::Duplicate);
}

#[test]
fn forged_signatures_and_bad_keys_are_refused() {
    let mut c = Chain::new();
    let mut r = c.rec("nutri", c.fx.issue_range("L1", 10));
    r.signature.0[0] ^= 1;
    c.reject_signed(r, RejectCode::BadSignature);
    // Signed by another organisation's key.
    let mut r = c.rec("boards", c.fx.issue_range("L1", 10));
    r.record.author = c.org("nutri");
    c.reject_signed(r, RejectCode::BadSignature);
    let mut rec = c.rec("nutri", c.fx.issue_range("L1", 10)).record;
    rec.key_id = KeyId::new("k9").unwrap();
    let r = SignedRecord::sign(c.fx.ledger(), rec, &c.fx.member("nutri").key);
    c.reject_signed(r, RejectCode::KeyNotValid);
    // Signed for another ledger.
    let rec = c.rec("nutri", c.fx.issue_range("L1", 10)).record;
    let other = veritrace_ledger::org::LedgerId::new("other-ledger").unwrap();
    let r = SignedRecord::sign(&other, rec, &c.fx.member("nutri").key);
    c.reject_signed(r, RejectCode::BadSignature);
}

fn new_org(id: &str) -> Organisation {
    Organisation {
        id: veritrace_ledger::org::OrgId::new(id).unwrap(),
        name: "Fujian Dairy".into(),
        roles: [Role::Producer].into_iter().collect(),
        keys: vec![OrgKey {
            key_id: KeyId::new("k1").unwrap(),
            public_key: PublicKey::from_bytes(testkit::key(id).verifying_key().to_bytes()).unwrap(),
            valid_from_ms: 0,
            valid_until_ms: None,
            revoked_at_ms: None,
        }],
        code_prefixes: vec![CodePrefix { scheme: "gs1".into(), prefix: "6912345".into() }],
        inspection_scope: vec![],
    }
}

#[test]
fn governance_needs_the_regulator_quorum() {
    let mut c = Chain::new();
    let body = RecordBody::Governance(GovernanceAction::AddOrganisation(new_org("fj-dairy")));
    let msg = c.reject("samr", body.clone(), RejectCode::QuorumNotMet);
    assert!(msg.contains("needs 2"), "{msg}");
    c.reject("nutri", body.clone(), RejectCode::RoleNotAllowed);
    // An approval from a non-regulator does not count.
    let mut r = c.rec("samr", body.clone());
    let m = c.fx.member("ccic-au");
    r.approve(c.fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    c.reject_signed(r, RejectCode::RoleNotAllowed);
    // The same regulator twice does not count twice.
    let mut r = c.rec("samr", body.clone());
    let m = c.fx.member("samr");
    r.approve(c.fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    c.reject_signed(r, RejectCode::Malformed);

    let mut r = c.rec("samr", body);
    let m = c.fx.member("customs-pingtan");
    r.approve(c.fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    let receipt = c.block(vec![r]).remove(0);
    assert!(matches!(receipt.outcome, Outcome::Accepted { .. }), "{receipt:?}");
}

#[test]
fn revoked_keys_sign_nothing_more() {
    let mut c = Chain::new();
    let body =
        RecordBody::Governance(GovernanceAction::RevokeKey { org: c.org("nutri"), key_id: KeyId::new("k1").unwrap() });
    let mut r = c.rec("samr", body);
    let m = c.fx.member("customs-pingtan");
    r.approve(c.fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    assert!(matches!(c.block(vec![r]).remove(0).outcome, Outcome::Accepted { .. }));
    let msg = c.reject("nutri", c.fx.issue_range("L1", 10), RejectCode::KeyNotValid);
    assert!(msg.contains("revoked"), "{msg}");
}

#[test]
fn keys_outside_their_validity_are_refused() {
    let mut c = Chain::new();
    let mut org = new_org("fj-dairy");
    org.keys[0].valid_until_ms = Some(c.now);
    let mut r = c.rec("samr", RecordBody::Governance(GovernanceAction::AddOrganisation(org)));
    let m = c.fx.member("customs-pingtan");
    r.approve(c.fx.ledger(), m.id.clone(), m.key_id.clone(), &m.key);
    assert!(matches!(c.block(vec![r]).remove(0).outcome, Outcome::Accepted { .. }));
    let rec = Record {
        author: veritrace_ledger::org::OrgId::new("fj-dairy").unwrap(),
        key_id: KeyId::new("k1").unwrap(),
        time_ms: c.now + 1,
        nonce: 0,
        body: c.fx.issue_range("L1", 1),
    };
    let r = SignedRecord::sign(c.fx.ledger(), rec, &testkit::key("fj-dairy"));
    let msg = c.reject_signed(r, RejectCode::KeyNotValid);
    assert!(msg.contains("not valid at"), "{msg}");
}

#[test]
fn weak_keys_are_refused_at_registration() {
    // The identity point: a small-order key that batch verification would not catch.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let err = PublicKey::from_bytes(weak).unwrap_err();
    assert!(err.to_string().contains("weak"), "{err}");
}

#[test]
fn a_rejected_record_among_accepted_ones_leaves_no_trace() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 10);
    let good = c.rec("nutri", c.ship("importer", vec![lot.clone()]));
    let bad = c.rec("importer", c.ship("shop", vec![c.fx.item("L1", 1)]));
    let receipts = c.block(vec![bad, good]);
    assert!(matches!(receipts[0].outcome, Outcome::Rejected { code: RejectCode::NotCustodian, .. }));
    assert!(matches!(receipts[1].outcome, Outcome::Accepted { log_index: 1 }));
    assert!(c.store.subject_state(&c.fx.item("L1", 1)).unwrap().is_none(), "rejected record left an entry");
    assert_eq!(c.store.subject_state(&lot).unwrap().unwrap().record_count, 2);
    let st = c.store.subject_state(&lot).unwrap().unwrap();
    assert_eq!(st.regulatory, Regulatory::Clear);
}

#[test]
fn recall_impact_counts_units_by_holder() {
    let mut c = Chain::new();
    let lot = c.issue("L1", 100);
    c.accept("nutri", c.ship("importer", vec![c.fx.item("L1", 1), c.fx.item("L1", 2)]));
    c.accept("importer", c.receive("nutri", vec![c.fx.item("L1", 1), c.fx.item("L1", 2)]));
    c.accept("importer", RecordBody::Sell(Sell { subjects: vec![c.fx.item("L1", 2)], channel: "web".into() }));
    c.accept("samr", c.regulate(RegulatoryKind::Recall, vec![lot.clone()]));
    let impact = c.store.recall_impact(&lot).unwrap();
    let find = |org: &str| impact.iter().filter(|h| h.custodian.as_str() == org).map(|h| h.units).sum::<u64>();
    assert_eq!(find("nutri"), 98);
    assert_eq!(find("importer"), 2);
    assert!(impact.iter().all(|h| h.status == Status::Recalled), "{impact:?}");
    let held = c.store.holdings(&c.org("importer"), None, 10).unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(c.store.org_record_ids(&c.org("nutri"), 0, 10).unwrap().len(), 2);
    assert_eq!(c.store.subject_record_ids(&lot, 0, 10).unwrap().len(), 2);
}

#[test]
fn a_duplicate_keeps_the_original_receipt() {
    let mut c = Chain::new();
    let r = c.rec("nutri", c.fx.issue_range("L1", 10));
    let first = c.block(vec![r.clone()]).remove(0);
    c.reject_signed(r.clone(), RejectCode::Duplicate);
    assert_eq!(c.store.receipt(&r.id()).unwrap(), Some(first));
}

#[test]
fn apply_is_a_pure_function_of_view_and_block() {
    let c = Chain::new();
    let b = c.fx.block(
        1,
        c.now,
        vec![c.rec("nutri", c.fx.issue_range("L1", 10)), c.rec("importer", c.fx.issue_range("L2", 1))],
    );
    let one = veritrace_ledger::apply::apply_block(&c.store, &b).unwrap();
    let two = veritrace_ledger::apply::apply_block(&c.store, &b).unwrap();
    assert_eq!(one.header, two.header);
    assert_eq!(one.receipts, two.receipts);
    assert_eq!(one.states, two.states);
    assert_eq!(c.store.head().height, 0, "apply alone wrote nothing");
}

#[test]
fn overlapping_ranges_always_share_a_bucket() {
    use veritrace_ledger::ids::SerialRange;
    use veritrace_ledger::view::RangeBucket;
    let prefixes = ["", "A", "A1", "A12", "B", "1", "12", "A-", "A-1"];
    let mut pairs = 0;
    for p1 in prefixes {
        for p2 in prefixes {
            for w1 in 1..=4u8 {
                for w2 in 1..=4u8 {
                    let a = SerialRange { prefix: p1.into(), start: 0, count: 10u64.pow(w1 as u32), width: w1 };
                    let b = SerialRange { prefix: p2.into(), start: 0, count: 10u64.pow(w2 as u32), width: w2 };
                    if a.overlaps(&b) {
                        pairs += 1;
                        assert_eq!(RangeBucket::of_range(&a), RangeBucket::of_range(&b), "{a:?} / {b:?}");
                        let s = a.serial_at(3).unwrap();
                        if b.contains(&s) {
                            assert_eq!(RangeBucket::of_serial(s.as_str()), RangeBucket::of_range(&b));
                        }
                    }
                }
            }
        }
    }
    assert!(pairs > 20, "the cases exercise overlaps: {pairs}");
}
