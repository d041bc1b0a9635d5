//! EPCIS 2.0 export and import on a ledger in memory: a trace bundle's records exported,
//! the document valid against GS1's EPCIS 2.0 JSON schema, imported into a fresh ledger
//! (records signed again by the same organisations, applied by the rules), exported again
//! with the same events but for record ids and times; and GS1's example documents
//! imported: every event either mapped or rejected with its index and reason.
//!
//! GS1's files are read from `shared/epcis/` beside the clone; the schema is checked with
//! Python's jsonschema through `scripts/epcis_validate.py`.

use serde_json::{Value, json};
use veritrace_ledger::block::BlockHeader;
use veritrace_ledger::bundle::TraceBundle;
use veritrace_ledger::epcis::{self, DocumentInfo, ImportedEvent, Rejection};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Gtin, Lot, Serial, Sscc, SubjectId};
use veritrace_ledger::kv::MemBackend;
use veritrace_ledger::org::{KeyId, OrgId};
use veritrace_ledger::record::*;
use veritrace_ledger::store::Store;
use veritrace_ledger::testkit::{Fixture, NUTRI_PREFIX, T0_MS, assert_valid_epcis, gtin, shared_epcis_dir};
use veritrace_ledger::view::Outcome;

/// Asserts that `doc` is valid against GS1's EPCIS 2.0 JSON schema.
fn assert_valid_document(name: &str, doc: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.jsonld"));
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    assert_valid_epcis(&path);
}

fn sscc() -> Sscc {
    Sscc::parse("093123450000000012").unwrap()
}

fn apply(fx: &Fixture, store: &mut Store<MemBackend>, records: Vec<SignedRecord>, t: u64) -> BlockHeader {
    let height = store.head().height + 1;
    let (header, receipts) = store.apply_block(&fx.block(height, t, records)).unwrap();
    for r in &receipts {
        assert!(matches!(r.outcome, Outcome::Accepted { .. }), "{r:?}");
    }
    header
}

/// Every kind an event can be, in an order the rules accept: a tin of lot L1 is issued,
/// certified, inspected, packed on a pallet, shipped, received, unpacked, held and released
/// (its lot), cleared, sold, and its lot recalled. `(author, body)`.
fn chain(fx: &Fixture) -> Vec<(&'static str, RecordBody)> {
    let lot = fx.lot_id("L1");
    let item = fx.item("L1", 42);
    let other = fx.item("L1", 43);
    let unit = SubjectId::LogisticUnit { sscc: sscc() };
    let reg = |action, subjects: Vec<SubjectId>, reason: &str, reference: &str| {
        RecordBody::Regulatory(RegulatoryAction {
            action,
            subjects,
            reason: reason.into(),
            reference: reference.into(),
        })
    };
    vec![
        ("nutri", fx.issue_range("L1", 6_000)),
        (
            "nutri",
            RecordBody::CertifyConformity(CertifyConformity {
                gtin: gtin(NUTRI_PREFIX, 1),
                lot: Lot::parse("L1").unwrap(),
                certificate_no: "COC-2026-001".into(),
                standard: "GB 10765-2021".into(),
                statement: "factory inspection of lot L1".into(),
            }),
        ),
        (
            "ccic-au",
            RecordBody::Inspection(InspectionReport {
                subjects: vec![item.clone(), lot.clone()],
                report_no: "CCIC-AU-2026-0117".into(),
                standard: "GB 10765-2021".into(),
                result: Verdict::Fail,
                test_items: vec![
                    TestItem {
                        name: "Protein".into(),
                        requirement: "1.8-3.0 g/100 kcal".into(),
                        measured: "2.1 g/100 kcal".into(),
                        verdict: Verdict::Pass,
                    },
                    TestItem {
                        name: "Melamine".into(),
                        requirement: "<= 1 mg/kg".into(),
                        measured: "2.4 mg/kg".into(),
                        verdict: Verdict::Fail,
                    },
                ],
                document_digest: Hash32::from(blake3::hash(b"inspection report")),
                valid_until_ms: Some(T0_MS + 365 * 86_400_000 + 7),
            }),
        ),
        ("nutri", RecordBody::Aggregate(Aggregation { parent: sscc(), children: vec![item.clone(), other.clone()] })),
        (
            "nutri",
            RecordBody::Ship(Ship {
                to: fx.org_id("importer"),
                subjects: vec![unit.clone()],
                location: "Port of Melbourne".into(),
            }),
        ),
        (
            "importer",
            RecordBody::Receive(Receive { from: fx.org_id("nutri"), subjects: vec![unit], location: String::new() }),
        ),
        ("importer", RecordBody::Disaggregate(Aggregation { parent: sscc(), children: vec![item.clone(), other] })),
        ("samr", reg(RegulatoryKind::Hold, vec![lot.clone()], "melamine above the limit", "SAMR-2026-9")),
        ("samr", reg(RegulatoryKind::Release, vec![lot.clone()], "retest passed", "")),
        ("customs-pingtan", reg(RegulatoryKind::CustomsClearance, vec![item.clone()], "declared", "PT-2026-88")),
        ("importer", RecordBody::Sell(Sell { subjects: vec![item], channel: "cross-border shop".into() })),
        ("samr", reg(RegulatoryKind::Recall, vec![lot], "melamine above the limit", "SAMR-2026-10")),
    ]
}

/// Applies `records` one block each from `t` on; the bundle of tin 42 at the end.
fn ledger_with(fx: &Fixture, records: Vec<SignedRecord>, t: u64) -> TraceBundle {
    let mut store = fx.mem_store();
    let mut header = None;
    for (i, r) in records.into_iter().enumerate() {
        header = Some(apply(fx, &mut store, vec![r], t + i as u64 * 1000));
    }
    let cp = fx.checkpoint(&header.expect("records"));
    store.bundle(&fx.item("L1", 42), cp).unwrap()
}

fn export(fx: &Fixture, b: &TraceBundle) -> Value {
    let records: Vec<(u64, &SignedRecord)> = b.records.iter().map(|r| (r.log_index, &r.record)).collect();
    let info = DocumentInfo {
        ledger_id: fx.ledger(),
        code: &b.code,
        height: b.checkpoint.header.height,
        created_ms: b.checkpoint.header.time_ms,
    };
    epcis::export_document(&info, &records)
}

/// The events of a document without what differs between two ledgers holding the same
/// history: event ids, event times, record ids and log indexes.
fn comparable(doc: &Value) -> Vec<Value> {
    let mut events = doc["epcisBody"]["eventList"].as_array().unwrap().clone();
    for e in &mut events {
        let o = e.as_object_mut().unwrap();
        for k in ["eventID", "eventTime", "veritrace:recordId", "veritrace:logIndex"] {
            assert!(o.remove(k).is_some(), "every event has {k}");
        }
    }
    events
}

#[test]
fn a_trace_exports_valid_epcis_and_round_trips_through_a_fresh_ledger() {
    let fx = Fixture::new();
    let t = T0_MS + 10_000;
    let signed: Vec<SignedRecord> =
        chain(&fx).into_iter().enumerate().map(|(i, (a, b))| fx.sign(a, t + i as u64 * 1000, b)).collect();
    let bundle = ledger_with(&fx, signed.clone(), t);
    assert_eq!(bundle.records.len(), signed.len(), "the tin's trace holds the whole chain");
    let first = export(&fx, &bundle);
    assert_valid_document("trace", &first);
    let events = first["epcisBody"]["eventList"].as_array().unwrap();
    for (e, r) in events.iter().zip(&signed) {
        assert_eq!(e["eventID"], format!("urn:veritrace:record:{}", r.id()));
        assert_eq!(e["eventTime"], veritrace_ledger::time::format_time(r.record.time_ms));
    }

    // Import into a fresh ledger: each event signed by its author an hour later.
    let imported: Vec<ImportedEvent> =
        epcis::import_document(&first).unwrap().into_iter().collect::<Result<_, Rejection>>().unwrap();
    let later = t + 3_600_000;
    let again: Vec<SignedRecord> = imported
        .iter()
        .map(|ev| {
            let author = ev.author.clone().expect("exported events name their author");
            let m = fx.member(author.as_str());
            let record =
                epcis::record_of(ev, author, m.key_id.clone(), later + u64::from(ev.index) * 1000, u64::from(ev.index))
                    .unwrap();
            assert_eq!(record.body, signed[ev.index as usize].record.body, "event {}", ev.index);
            assert_eq!(ev.source_record, Some(signed[ev.index as usize].id()));
            SignedRecord::sign(fx.ledger(), record, &m.key)
        })
        .collect();
    let second = export(&fx, &ledger_with(&fx, again, later));
    assert_valid_document("trace-again", &second);
    assert_eq!(comparable(&first), comparable(&second));
    assert_ne!(first["epcisBody"]["eventList"][0]["eventID"], second["epcisBody"]["eventList"][0]["eventID"]);
}

#[test]
fn issuances_of_listed_serials_and_other_schemes_export_valid_epcis() {
    let fx = Fixture::new();
    let issue = |lot: &str, codes: CodeSet| {
        RecordBody::IssueCodes(IssueCodes {
            product: fx.formula(),
            lot: Lot::parse(lot).unwrap(),
            production_date: "2026-01-10".into(),
            expiry_date: None,
            codes,
            factory: String::new(),
        })
    };
    let serials = CodeSet::Serials(vec![Serial::parse("A/1").unwrap(), Serial::parse("A\"2").unwrap()]);
    let codes = CodeSet::Codes(vec![
        "custom:acme-trace:X%<1>".parse().unwrap(),
        "ccc:2021011234567890".parse().unwrap(),
        "ecode:10000000000000000001".parse().unwrap(),
    ]);
    let lot_only = RecordBody::Sell(Sell { subjects: vec![fx.lot_id("L2")], channel: String::new() });
    let lots_only = RecordBody::Aggregate(Aggregation { parent: sscc(), children: vec![fx.lot_id("L2")] });
    let records: Vec<SignedRecord> = [issue("L2", serials), issue("L3", codes), lot_only, lots_only]
        .into_iter()
        .map(|b| fx.sign("nutri", T0_MS, b))
        .collect();
    let pairs: Vec<(u64, &SignedRecord)> = records.iter().enumerate().map(|(i, r)| (i as u64, r)).collect();
    let code = fx.lot_id("L2");
    let doc = epcis::export_document(
        &DocumentInfo { ledger_id: fx.ledger(), code: &code, height: 1, created_ms: u64::MAX },
        &pairs,
    );
    assert_eq!(doc["creationDate"], "9999-12-31T23:59:59.999Z");
    assert_eq!(
        doc["epcisBody"]["eventList"][0]["epcList"],
        json!(["https://id.gs1.org/01/09312345000012/21/A%2F1", "https://id.gs1.org/01/09312345000012/21/A%222"])
    );
    assert_eq!(doc["epcisBody"]["eventList"][1]["epcList"][0], "urn:veritrace:subject:custom:acme-trace:X%25%3C1%3E");
    assert_valid_document("issuances", &doc);
    for (ev, r) in epcis::import_document(&doc).unwrap().into_iter().zip(&records) {
        assert_eq!(ev.unwrap().body, r.record.body);
    }
}

fn gs1_example(name: &str) -> Value {
    let path = shared_epcis_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(index, reason)` of each rejected event, or the record kind of each mapped one.
fn outcomes(doc: &Value) -> Vec<Result<RecordKind, (u32, String)>> {
    epcis::import_document(doc)
        .unwrap()
        .into_iter()
        .map(|r| r.map(|ev| ev.body.kind()).map_err(|r| (r.index, r.reason)))
        .collect()
}

#[test]
fn gs1_examples_are_rejected_with_the_index_and_reason_of_each_event() {
    let shipping_then_receiving = outcomes(&gs1_example("Example_9.6.1-ObjectEvent.jsonld"));
    let [Err((0, ship)), Err((1, receive))] = shipping_then_receiving.as_slice() else {
        panic!("{shipping_then_receiving:?}")
    };
    assert!(ship.starts_with("shipping needs the organisation it goes to"), "{ship}");
    assert!(receive.starts_with("receiving needs the organisation it comes from"), "{receive}");

    let by_weight = outcomes(&gs1_example("Example_9.6.2-ObjectEvent.jsonld"));
    let [Err((0, weight))] = by_weight.as_slice() else { panic!("{by_weight:?}") };
    assert_eq!(
        weight,
        "quantityList[0]: quantity 200 KGM of 01/04012345123456/10/998877: the ledger records whole lots, not \
         quantities"
    );

    let observed_packing = outcomes(&gs1_example("Example_9.6.3-AggregationEvent.jsonld"));
    let [Err((0, observe))] = observed_packing.as_slice() else { panic!("{observed_packing:?}") };
    assert!(observe.starts_with("an AggregationEvent with action OBSERVE observes a packing"), "{observe}");
}

#[test]
fn gs1_examples_map_once_they_name_the_organisations() {
    // GS1's shipping and receiving events, with the parties named as veritrace organisations.
    let mut doc = gs1_example("Example_9.6.1-ObjectEvent.jsonld");
    let events = doc["epcisBody"]["eventList"].as_array_mut().unwrap();
    events[0]["destinationList"] = json!([{"type": "possessing_party", "destination": "urn:veritrace:org:importer"}]);
    events[1]["sourceList"] = json!([{"type": "possessing_party", "source": "urn:veritrace:org:nutri"}]);
    let mapped: Vec<ImportedEvent> =
        epcis::import_document(&doc).unwrap().into_iter().collect::<Result<_, Rejection>>().unwrap();
    let gtin = Gtin::parse("10614141073464").unwrap();
    let item = |s: &str| SubjectId::item(gtin.clone(), Serial::parse(s).unwrap());
    assert_eq!(
        mapped[0].body,
        RecordBody::Ship(Ship {
            to: OrgId::new("importer").unwrap(),
            subjects: vec![item("2017"), item("2018")],
            location: "urn:epc:id:sgln:0614141.07346.1234".into(),
        })
    );
    assert_eq!(mapped[0].event_time_ms, 1_112_582_011_116, "2005-04-03T20:33:31.116000-06:00");
    assert_eq!(mapped[0].dropped, ["bizTransactionList"]);
    assert_eq!(
        mapped[1].body,
        RecordBody::Receive(Receive {
            from: OrgId::new("nutri").unwrap(),
            subjects: vec![item("2018")],
            location: "urn:epc:id:sgln:0012345.11111.0".into(),
        })
    );
    assert_eq!(mapped[1].dropped, ["bizTransactionList", "example:myField", "readPoint"]);
    assert_eq!((mapped[0].author.clone(), mapped[1].author.clone()), (None, None));
    let record = epcis::record_of(&mapped[1], OrgId::new("importer").unwrap(), KeyId::new("k1").unwrap(), T0_MS, 1);
    assert!(record.is_ok(), "{record:?}");
}
