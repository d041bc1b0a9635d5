//! The bad-input catalogue of issue 8 (docs/faults.md, "Bad input catalogue") against one
//! real network of three validator processes: every kind of bad input a client or a peer
//! can send goes in through the gRPC API (or libp2p, for the peer items), gets its
//! specific status code and a reason naming the offending value, and leaves the log size,
//! log root and state root of every node as they were.
//!
//! Where an input is checked decides what happens to the height. The node's precheck on
//! submit (protobuf decoding, record decoding and size, form, a known author and key, the
//! author's signature) refuses before anything is queued: no block, the height stays. A
//! record that passes it and breaks a ledger rule is ordered into a block like any other
//! and rejected by every node on apply: that block holds only the rejected record, so the
//! height grows by one while the log and the state map stay as they were (apply merges a
//! record's changes only when it is accepted; receipts live outside both).

use std::time::Instant;

use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use veritrace_devnet::Network;
use veritrace_devnet::NetworkSpec;
use veritrace_devnet::cast::BOARDS_GS1_PREFIX;
use veritrace_devnet::config::{NodeConfigFile, PeerEntry};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Gtin, Lot, Serial, SerialRange, Sscc, SubjectId, gs1_check_digit};
use veritrace_ledger::org::{KeyId, OrgId, OrgKey, PublicKey, RECORD_TIME_WINDOW_MS_DEFAULT};
use veritrace_ledger::record::{
    Aggregation, CodeSet, GovernanceAction, InspectionReport, IssueCodes, Product, RECORD_BYTES_MAX, Receive, Record,
    RecordBody, RegulatoryAction, RegulatoryKind, Ship, SignedRecord, TestItem, Verdict,
};
use veritrace_proto::v1 as pb;
use veritrace_tests::*;

/// Where a bad input is refused (docs/faults.md names them the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checked {
    /// By the precheck of the node that received it (or of the leader it forwarded to):
    /// nothing queued, no block.
    Precheck,
    /// On apply, by every node: one block more, holding only the rejected record.
    Apply,
}

impl Checked {
    fn blocks(self) -> u64 {
        match self {
            Checked::Precheck => 0,
            Checked::Apply => 1,
        }
    }
}

/// What every node reports of its ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    height: u64,
    log_size: u64,
    log_root: Vec<u8>,
    state_root: Vec<u8>,
}

/// The head of every node, once they agree (it asserts they are equal field by field).
async fn heads(net: &Network) -> Head {
    let nodes = net.node_ids();
    agree(net, &nodes).await;
    let mut all = Vec::new();
    for n in &nodes {
        let s = status(net, n).await;
        all.push((
            n.clone(),
            Head { height: s.height, log_size: s.log_size, log_root: s.log_root, state_root: s.state_root },
        ));
    }
    for (n, h) in &all[1..] {
        assert_eq!(h, &all[0].1, "{n} and {} differ", all[0].0);
    }
    all.remove(0).1
}

/// Asserts that no node's log or state map moved since `before`, and that the height grew
/// by what `checked` implies.
async fn assert_unchanged(net: &Network, before: &Head, checked: Checked, what: &str) {
    let after = heads(net).await;
    assert_eq!(after.height, before.height + checked.blocks(), "{what}: height after a {checked:?} refusal");
    assert_eq!(
        (after.log_size, &after.log_root, &after.state_root),
        (before.log_size, &before.log_root, &before.state_root),
        "{what}: the log or the state map moved"
    );
}

async fn submit(net: &Network, node: &str, bytes: Vec<u8>) -> Result<pb::Receipt, tonic::Status> {
    let req = pb::SubmitRequest { signed_record: bytes, wait_for_commit: true };
    client(net, node).await.submit(req).await.map(|r| r.into_inner().receipt.expect("a receipt"))
}

async fn submit_batch(net: &Network, node: &str, records: Vec<Vec<u8>>) -> Result<Vec<pb::Receipt>, tonic::Status> {
    let req = pb::SubmitBatchRequest { signed_records: records, wait_for_commit: true };
    client(net, node).await.submit_batch(req).await.map(|r| r.into_inner().receipts)
}

/// Submits `bytes` to `node`; expects the precheck to refuse them with `code` and a message
/// holding every one of `needles`; checks that nothing moved on any node.
async fn prechecked(net: &Network, node: &str, bytes: Vec<u8>, code: Code, needles: &[&str]) -> tonic::Status {
    let what = needles.first().copied().unwrap_or_default();
    let before = heads(net).await;
    let err = submit(net, node, bytes).await.expect_err("bad input must be refused");
    assert_eq!(err.code(), code, "{what} at {node}: {err:?}");
    for needle in needles {
        assert!(err.message().contains(needle), "{node}: message {:?} does not name {needle:?}", err.message());
    }
    assert!(err.details().is_empty(), "a precheck refusal carries no receipt: {err:?}");
    println!("catalogue: {node}: {:?} {}", err.code(), err.message());
    assert_unchanged(net, &before, Checked::Precheck, what).await;
    err
}

/// Submits `record` to `node`; expects it ordered and rejected on apply with `reason`, the
/// status `code` and every one of `needles` in the message; checks that every node holds
/// the same rejected receipt and that nothing but the height moved.
async fn rejected(
    net: &Network,
    node: &str,
    record: &SignedRecord,
    code: Code,
    reason: &str,
    needles: &[&str],
) -> tonic::Status {
    let before = heads(net).await;
    let err = submit(net, node, record.to_bytes()).await.expect_err("bad input must be refused");
    assert_eq!(err.code(), code, "{reason} at {node}: {err:?}");
    assert!(err.message().contains(&format!("({reason})")), "{node}: message {:?} lacks ({reason})", err.message());
    for needle in needles {
        assert!(err.message().contains(needle), "{node}: message {:?} does not name {needle:?}", err.message());
    }
    let receipt = pb::Receipt::decode(err.details()).expect("a receipt in the status details");
    assert_eq!(receipt.status, pb::ReceiptStatus::Rejected as i32);
    assert_eq!(receipt.reject_reason, reason);
    assert_eq!(receipt.record_id, record.id().as_bytes().to_vec());
    assert_eq!(receipt.height, before.height + 1, "rejected in the next block");
    println!("catalogue: {node}: {:?} {}", err.code(), err.message());
    assert_unchanged(net, &before, Checked::Apply, reason).await;
    // Every node decided the same: the same receipt by id, and no record at that id.
    for n in net.node_ids() {
        let mut c = client(net, &n).await;
        let id = record.id().as_bytes().to_vec();
        let r = c.get_receipt(pb::GetReceiptRequest { record_id: id.clone() }).await.expect("receipt").into_inner();
        assert_eq!(r, receipt, "{n} holds another receipt");
        let which = Some(pb::get_record_request::Which::RecordId(id));
        let e = c.get_record(pb::GetRecordRequest { which }).await.expect_err("a rejected record is not in the log");
        assert_eq!(e.code(), Code::NotFound, "{n}: {e:?}");
    }
    err
}

/// A record by `org` with key `key_id` at `time_ms`, ready to be signed with any key.
fn record(org: &str, key_id: &str, time_ms: u64, nonce: u64, body: RecordBody) -> Record {
    Record { author: org_id(org), key_id: KeyId::new(key_id).expect("key id"), time_ms, nonce, body }
}

fn org_id(org: &str) -> OrgId {
    OrgId::new(org).expect("org id")
}

/// A governance record by samr, approved by `approvers` (each with its own key `k1`).
fn governance(net: &Network, nonce: u64, action: GovernanceAction, approvers: &[&str]) -> SignedRecord {
    let mut g = sign(net, "samr", nonce, RecordBody::Governance(action));
    for a in approvers {
        g.approve(net.ledger_id(), org_id(a), KeyId::new("k1").expect("key id"), net.cast().key(a).expect("key"));
    }
    g
}

fn regulatory(action: RegulatoryKind, subject: SubjectId) -> RecordBody {
    RecordBody::Regulatory(RegulatoryAction {
        action,
        subjects: vec![subject],
        reason: "bad input catalogue".into(),
        reference: "SAMR-2026-0808".into(),
    })
}

fn ship(to: &str, subject: SubjectId) -> RecordBody {
    RecordBody::Ship(Ship { to: org_id(to), subjects: vec![subject], location: String::new() })
}

fn inspection(subjects: Vec<SubjectId>, standard: &str, test_items: Vec<TestItem>) -> RecordBody {
    RecordBody::Inspection(InspectionReport {
        subjects,
        report_no: "R-0808".into(),
        standard: standard.into(),
        result: Verdict::Pass,
        test_items,
        document_digest: Hash32::ZERO,
        valid_until_ms: None,
    })
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length): canonical
/// bytes whose length prefixes still hold, carrying a value the types would never build.
fn replace_once(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap_or_else(|| panic!("{from} absent"));
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to.as_bytes());
    out
}

/// `digits` with its last (check) digit changed.
fn wrong_check_digit(digits: &str) -> String {
    let (body, check) = digits.split_at(digits.len() - 1);
    let d = check.parse::<u8>().expect("a digit");
    format!("{body}{}", (d + 1) % 10)
}

/// Sends raw bytes as the body of a gRPC call: whatever they are, with no protobuf
/// encoding on the way. Answers are returned as raw bytes too.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls `method` of `veritrace.v1.Ledger` on `node` with `body` as the message bytes.
async fn raw_call(net: &Network, node: &str, method: &str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let addr = net.grpc_addr(node).expect("grpc address");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!("/veritrace.v1.Ledger/{method}"))
        .expect("method path");
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(|r| r.into_inner())
}

/// A message that shares `SubmitRequest`'s field numbers with other wire types: field 1
/// (`signed_record`, bytes) as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireTypes {
    #[prost(uint64, tag = "1")]
    signed_record: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bad_input_is_refused_with_its_reason_and_changes_nothing() {
    let started = Instant::now();
    let net = network(3, 0, None);
    let nodes = net.node_ids();
    let leader = net.leader().expect("a leader");
    let followers: Vec<String> = nodes.iter().filter(|n| **n != leader).cloned().collect();
    let follower = followers[0].clone();
    let gtin = formula_gtin();
    let window = net.genesis().record_time_window_ms;
    assert_eq!(window, RECORD_TIME_WINDOW_MS_DEFAULT);

    // ---- set-up: valid records that bring about the states the catalogue needs ----
    // Lot A is nutri's and stays with nutri; lot S is in transit to the importer; lot H is
    // held and lot R recalled by samr. boards rotates its key: k2 added, k3 added but not
    // valid for a day, k1 revoked.
    let issued_a = sign(&net, "nutri", 1, issue_lot("BI-A", 10));
    let mut setup = vec![
        issued_a.clone(),
        sign(&net, "nutri", 2, issue_lot("BI-S", 10)),
        sign(&net, "nutri", 3, ship("importer", formula_lot("BI-S"))),
        sign(&net, "nutri", 4, issue_lot("BI-H", 10)),
        sign(&net, "samr", 5, regulatory(RegulatoryKind::Hold, formula_lot("BI-H"))),
        sign(&net, "nutri", 6, issue_lot("BI-R", 10)),
        sign(&net, "samr", 7, regulatory(RegulatoryKind::Recall, formula_lot("BI-R"))),
    ];
    let boards_k2 = veritrace_ledger::testkit::key("bad input: boards k2");
    let boards_k3 = veritrace_ledger::testkit::key("bad input: boards k3");
    let day_ms = 24 * 60 * 60 * 1000;
    for (nonce, key_id, key, valid_from_ms) in [(8, "k2", &boards_k2, 0), (9, "k3", &boards_k3, now_ms() + day_ms)] {
        let key = OrgKey {
            key_id: KeyId::new(key_id).expect("key id"),
            public_key: PublicKey::from_bytes(key.verifying_key().to_bytes()).expect("public key"),
            valid_from_ms,
            valid_until_ms: None,
            revoked_at_ms: None,
        };
        setup.push(governance(
            &net,
            nonce,
            GovernanceAction::AddKey { org: org_id("boards"), key },
            &["customs-pingtan"],
        ));
    }
    let revoke_k1 = GovernanceAction::RevokeKey { org: org_id("boards"), key_id: KeyId::new("k1").expect("key id") };
    setup.push(governance(&net, 10, revoke_k1, &["customs-pingtan"]));
    // The rotation works: boards signs with k2.
    let boards_gtin = Gtin::under_company_prefix(BOARDS_GS1_PREFIX, 7).expect("gtin");
    let boards_issue = |lot: &str| {
        RecordBody::IssueCodes(IssueCodes {
            product: Product {
                gtin: boards_gtin.clone(),
                name: "Particle board".into(),
                model: String::new(),
                spec: String::new(),
                standard: "GB/T 4897-2015".into(),
            },
            lot: Lot::parse(lot).expect("lot"),
            production_date: "2026-11-02".into(),
            expiry_date: None,
            codes: CodeSet::Range(SerialRange { prefix: format!("{lot}-"), start: 0, count: 5, width: 4 }),
            factory: String::new(),
        })
    };
    setup.push(SignedRecord::sign(
        net.ledger_id(),
        record("boards", "k2", now_ms(), 11, boards_issue("BB-2")),
        &boards_k2,
    ));
    let mut original = None;
    for r in &setup {
        let receipt = commit(&net, &leader, r).await;
        original.get_or_insert(receipt);
    }
    let original = original.expect("a receipt");
    let base = heads(&net).await;
    println!("catalogue: set-up committed at height {}, log size {}", base.height, base.log_size);

    // ---- forged signature: one bit of nutri's signature flipped ----
    let mut forged = issue(&net, "BI-F", 0);
    forged.signature.0[7] ^= 1;
    for n in &nodes {
        prechecked(
            &net,
            n,
            forged.to_bytes(),
            Code::Unauthenticated,
            &["signature of nutri with key k1 does not verify"],
        )
        .await;
    }

    // ---- a signature by another organisation's key: nutri's record, the importer's key ----
    let other_key = SignedRecord::sign(
        net.ledger_id(),
        record("nutri", "k1", now_ms(), 0, issue_lot("BI-O", 5)),
        net.cast().key("importer").expect("key"),
    );
    for n in &nodes {
        prechecked(
            &net,
            n,
            other_key.to_bytes(),
            Code::Unauthenticated,
            &["signature of nutri with key k1 does not verify"],
        )
        .await;
    }

    // ---- unknown organisation; unknown key id of a known one ----
    // A follower that does not know the author forwards the record to the leader, whose
    // precheck decides (the author may have been added by a block the follower has not
    // applied yet); the client gets the leader's answer.
    let stranger = veritrace_ledger::testkit::key("bad input: stranger");
    let unknown_org =
        SignedRecord::sign(net.ledger_id(), record("nobody", "k1", now_ms(), 0, issue_lot("BI-U", 5)), &stranger);
    let unknown_key = SignedRecord::sign(
        net.ledger_id(),
        record("nutri", "k9", now_ms(), 0, issue_lot("BI-K", 5)),
        net.cast().key("nutri").expect("key"),
    );
    for n in &nodes {
        prechecked(
            &net,
            n,
            unknown_org.to_bytes(),
            Code::Unauthenticated,
            &["author nobody is not a known organisation"],
        )
        .await;
        prechecked(&net, n, unknown_key.to_bytes(), Code::Unauthenticated, &["nutri has no key k9"]).await;
    }

    // In a batch through a follower, the leader's verdict names the record's place in the
    // batch the client sent (the replayed record before it is answered by the follower
    // itself, and only the other one is forwarded).
    let before = heads(&net).await;
    let e = submit_batch(&net, &follower, vec![issued_a.to_bytes(), unknown_org.to_bytes()])
        .await
        .expect_err("an unknown author in a batch");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("record 1: author nobody is not a known organisation"), "{e:?}");
    println!("catalogue: {follower}: SubmitBatch: {:?} {}", e.code(), e.message());
    assert_unchanged(&net, &before, Checked::Precheck, "unknown author in a batch").await;

    // The first refused record in the batch's order is named, whatever the check found
    // first: the store names the unknown author before the signatures are verified.
    for n in &nodes {
        let e = submit_batch(&net, n, vec![forged.to_bytes(), unknown_org.to_bytes()])
            .await
            .expect_err("a forged signature before an unknown author");
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("record 0: signature of nutri with key k1 does not verify"), "{n}: {e:?}");
    }
    assert_unchanged(&net, &before, Checked::Precheck, "forged signature before an unknown author").await;

    // ---- revoked (rotated-out) key; a key not valid yet ----
    // Refused on submit, by any node (a key revoked on a follower is revoked on the leader,
    // which is never behind it); apply makes the same checks at the block's place in the
    // log (ledger/tests/rules.rs).
    let revoked = SignedRecord::sign(
        net.ledger_id(),
        record("boards", "k1", now_ms(), 0, boards_issue("BB-1")),
        net.cast().key("boards").expect("key"),
    );
    prechecked(&net, &follower, revoked.to_bytes(), Code::Unauthenticated, &["record 0: key k1 of boards is revoked"])
        .await;
    let early =
        SignedRecord::sign(net.ledger_id(), record("boards", "k3", now_ms(), 0, boards_issue("BB-3")), &boards_k3);
    prechecked(
        &net,
        &leader,
        early.to_bytes(),
        Code::Unauthenticated,
        &["record 0: key k3 of boards is not valid at record time"],
    )
    .await;

    // ---- replayed record: the original receipt, nothing added ----
    for n in &nodes {
        let before = heads(&net).await;
        let again = submit(&net, n, issued_a.to_bytes()).await.expect("a replay answers with the original receipt");
        assert_eq!(again, original, "{n}: not the original receipt");
        let batch = submit_batch(&net, n, vec![issued_a.to_bytes(), issued_a.to_bytes()]).await.expect("batch");
        assert_eq!(batch, vec![original.clone(), original.clone()], "{n}: not the original receipts");
        assert_unchanged(&net, &before, Checked::Precheck, "replay").await;
    }
    println!("catalogue: replay of log index {} answered with its receipt by every node", original.log_index);
    // A new record twice in one batch: the second is a duplicate on apply and answers with
    // the first one's receipt; the log grows by one.
    let twice = issue(&net, "BI-T", 0);
    let before = heads(&net).await;
    let receipts = submit_batch(&net, &follower, vec![twice.to_bytes(), twice.to_bytes()]).await.expect("batch");
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].status, pb::ReceiptStatus::Accepted as i32, "{:?}", receipts[0]);
    assert_eq!(receipts[1], receipts[0], "the duplicate answers with the original's receipt");
    // (Both usually share one block; the height is not asserted, as the batcher may cut
    // the batch between them, and then the duplicate is rejected in a block of its own.)
    let after = heads(&net).await;
    assert_eq!(after.log_size, before.log_size + 1, "a record twice in a batch is logged once");

    // ---- a code issued twice: the same range again; one serial of it in another lot ----
    let lot_a = formula_lot("BI-A").to_string();
    let reissue = sign(&net, "nutri", 21, issue_lot("BI-A", 10));
    rejected(&net, &follower, &reissue, Code::AlreadyExists, "already_issued", &["BI-A-0000..BI-A-0009", &lot_a]).await;
    let mut one_serial = issue_lot("BI-A2", 1);
    if let RecordBody::IssueCodes(ic) = &mut one_serial {
        ic.codes = CodeSet::Serials(vec![Serial::parse("BI-A-0003").expect("serial")]);
    }
    let item_a3 = formula_item("BI-A", 3).to_string();
    rejected(
        &net,
        &leader,
        &sign(&net, "nutri", 22, one_serial),
        Code::AlreadyExists,
        "already_issued",
        &[&item_a3, &lot_a],
    )
    .await;

    // ---- issue under another producer's prefix: nutri issues a boards GTIN ----
    let mut foreign_prefix = issue_lot("BI-P", 5);
    if let RecordBody::IssueCodes(ic) = &mut foreign_prefix {
        ic.product.gtin = boards_gtin.clone();
    }
    rejected(
        &net,
        &follower,
        &sign(&net, "nutri", 23, foreign_prefix),
        Code::PermissionDenied,
        "prefix_not_allowed",
        &[boards_gtin.as_str(), "nutri"],
    )
    .await;

    // ---- ship by a non-custodian: the importer ships nutri's lot A ----
    let by_stranger = sign(&net, "importer", 24, ship("shop", formula_lot("BI-A")));
    rejected(
        &net,
        &follower,
        &by_stranger,
        Code::PermissionDenied,
        "not_custodian",
        &[&lot_a, "its custodian is nutri"],
    )
    .await;

    // ---- receive by the wrong organisation: lot S goes to the importer, the shop takes it ----
    let lot_s = formula_lot("BI-S");
    let wrong_recipient = sign(
        &net,
        "shop",
        25,
        RecordBody::Receive(Receive { from: org_id("nutri"), subjects: vec![lot_s.clone()], location: String::new() }),
    );
    rejected(
        &net,
        &leader,
        &wrong_recipient,
        Code::PermissionDenied,
        "not_recipient",
        &[&format!("{lot_s} was shipped to importer, not shop")],
    )
    .await;

    // ---- ship of a held unit (an item of the held lot H) and of the recalled lot R ----
    let item_h = formula_item("BI-H", 3);
    rejected(
        &net,
        &follower,
        &sign(&net, "nutri", 26, ship("importer", item_h.clone())),
        Code::FailedPrecondition,
        "subject_held",
        &[&format!("{item_h} is held by a regulator")],
    )
    .await;
    let lot_r = formula_lot("BI-R");
    rejected(
        &net,
        &follower,
        &sign(&net, "nutri", 27, ship("importer", lot_r.clone())),
        Code::FailedPrecondition,
        "subject_recalled",
        &[&format!("{lot_r} is recalled")],
    )
    .await;

    // ---- inspection outside the body's scope: hunan-qi (GB/T 4897) reports on formula ----
    let out_of_scope = sign(&net, "hunan-qi", 28, inspection(vec![formula_lot("BI-A")], "GB 10765-2021", vec![]));
    rejected(
        &net,
        &leader,
        &out_of_scope,
        Code::PermissionDenied,
        "out_of_scope",
        &["\"GB 10765-2021\" is outside the inspection scope of hunan-qi"],
    )
    .await;

    // ---- governance without quorum ----
    // samr alone; samr approving itself; a producer approving; a forged approval.
    let shop_key = |id: &str| GovernanceAction::AddKey {
        org: org_id("shop"),
        key: OrgKey {
            key_id: KeyId::new(id).expect("key id"),
            public_key: PublicKey::from_bytes(stranger.verifying_key().to_bytes()).expect("public key"),
            valid_from_ms: 0,
            valid_until_ms: None,
            revoked_at_ms: None,
        },
    };
    let alone = governance(&net, 30, shop_key("k7"), &[]);
    rejected(
        &net,
        &follower,
        &alone,
        Code::PermissionDenied,
        "quorum_not_met",
        &["1 distinct regulators signed, governance needs 2"],
    )
    .await;
    let mut self_approved = governance(&net, 31, shop_key("k7"), &[]);
    self_approved.approve(
        net.ledger_id(),
        org_id("samr"),
        KeyId::new("k1").expect("key id"),
        net.cast().key("samr").expect("key"),
    );
    rejected(&net, &leader, &self_approved, Code::InvalidArgument, "malformed", &["samr approves twice"]).await;
    let mut by_producer = governance(&net, 32, shop_key("k7"), &[]);
    by_producer.approve(
        net.ledger_id(),
        org_id("nutri"),
        KeyId::new("k1").expect("key id"),
        net.cast().key("nutri").expect("key"),
    );
    rejected(
        &net,
        &follower,
        &by_producer,
        Code::PermissionDenied,
        "role_not_allowed",
        &["approver nutri is not a regulator"],
    )
    .await;
    let mut forged_approval = governance(&net, 33, shop_key("k7"), &["customs-pingtan"]);
    forged_approval.approvals[0].signature.0[3] ^= 1;
    rejected(
        &net,
        &follower,
        &forged_approval,
        Code::Unauthenticated,
        "bad_signature",
        &["approval of customs-pingtan with key k1 does not verify"],
    )
    .await;

    // ---- record time outside the window around the block time: too old, too new ----
    for (nonce, time_ms) in [(34, now_ms() - window - 60_000), (35, now_ms() + window + 60_000)] {
        let r = SignedRecord::sign(
            net.ledger_id(),
            record("nutri", "k1", time_ms, nonce, issue_lot(&format!("BI-W{nonce}"), 5)),
            net.cast().key("nutri").expect("key"),
        );
        rejected(
            &net,
            &follower,
            &r,
            Code::InvalidArgument,
            "time_out_of_window",
            &[&format!("record time {time_ms} ms is more than {window} ms from block time")],
        )
        .await;
    }

    // ---- malformed protobuf ----
    // Bytes that are no protobuf message at all (a varint that never ends), and a message
    // whose field 1 has the wrong wire type, sent as the raw body of a gRPC call. The codec
    // (veritrace_proto::codec) decodes the request before the service sees it and answers
    // INVALID_ARGUMENT, where tonic-prost alone would say INTERNAL.
    let garbage = vec![0xff; 16];
    let wrong_wire = WrongWireTypes { signed_record: 7 }.encode_to_vec();
    for (method, body) in [
        ("Submit", garbage.clone()),
        ("SubmitBatch", garbage.clone()),
        ("Submit", wrong_wire.clone()),
        ("Trace", wrong_wire),
    ] {
        let before = heads(&net).await;
        let e = raw_call(&net, &follower, method, body).await.expect_err("no protobuf, no answer");
        assert_eq!(e.code(), Code::InvalidArgument, "{method}: {e:?}");
        assert!(
            e.message().contains("malformed protobuf message: failed to decode Protobuf message"),
            "{method}: {e:?}"
        );
        println!("catalogue: {follower}: {method}: {:?} {}", e.code(), e.message());
        assert_unchanged(&net, &before, Checked::Precheck, "malformed protobuf").await;
    }
    // A well-formed request whose record bytes are no signed record.
    prechecked(&net, &leader, b"not a record".to_vec(), Code::InvalidArgument, &["record 0: bytes: signed record"])
        .await;

    // ---- an oversized record, alone and in a batch; an oversized batch ----
    // Form-valid but for its size: 10,000 subjects and 256 test items of 1,000 bytes each.
    let many: Vec<SubjectId> = (0..10_000).map(|i| formula_item("BI-BIG", i)).collect();
    let items: Vec<TestItem> = (0..256)
        .map(|i| TestItem {
            name: format!("{i:04}{}", "n".repeat(996)),
            requirement: "r".repeat(1_000),
            measured: "m".repeat(1_000),
            verdict: Verdict::Pass,
        })
        .collect();
    let big = sign(&net, "ccic-au", 40, inspection(many, "GB 10765-2021", items));
    let big_len = big.to_bytes().len();
    assert!(big_len > RECORD_BYTES_MAX && big.record.validate_form().is_ok(), "{big_len} bytes");
    let too_large = format!("record is {big_len} bytes, at most {RECORD_BYTES_MAX} allowed");
    prechecked(&net, &follower, big.to_bytes(), Code::InvalidArgument, &[&format!("record 0: {too_large}")]).await;
    let fine = [issue(&net, "BI-B", 0), issue(&net, "BI-B", 1)];
    let before = heads(&net).await;
    let e = submit_batch(&net, &leader, vec![fine[0].to_bytes(), fine[1].to_bytes(), big.to_bytes()])
        .await
        .expect_err("a batch with an oversized record");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(&format!("record 2: {too_large}")), "{e:?}");
    println!("catalogue: {leader}: SubmitBatch: {:?} {}", e.code(), e.message());
    assert_unchanged(&net, &before, Checked::Precheck, "batch with an oversized record").await;
    let mut c = client(&net, &leader).await;
    let e = c.get_receipt(pb::GetReceiptRequest { record_id: fine[0].id().as_bytes().to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "nothing of a refused batch is queued: {e:?}");
    // One record more than a batch may hold.
    let e = submit_batch(&net, &follower, vec![fine[0].to_bytes(); 10_001]).await.expect_err("10,001 records");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("10001 records in one batch, at most 10000"), "{e:?}");
    println!("catalogue: {follower}: SubmitBatch: {:?} {}", e.code(), e.message());
    // A request over the gRPC message limit (64 MiB): refused by the transport on its
    // length prefix.
    let e = submit_batch(&net, &follower, vec![vec![0u8; 1 << 20]; 65]).await.expect_err("65 MiB");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("message length too large"), "{e:?}");
    println!("catalogue: {follower}: SubmitBatch: {:?} {}", e.code(), e.message());
    assert_unchanged(&net, &before, Checked::Precheck, "oversized batches").await;

    // ---- invalid GTIN, SSCC, lot and serial ----
    // In queries: Trace and GetBundle parse a code, RecallImpact a lot.
    let bad_gtin = wrong_check_digit(gtin.as_str());
    let sscc_body = format!("0{}{:09}", veritrace_devnet::cast::NUTRI_GS1_PREFIX, 808);
    let sscc = format!("{sscc_body}{}", gs1_check_digit(&sscc_body).expect("check digit"));
    let parent = Sscc::parse(&sscc).expect("valid sscc");
    let bad_sscc = wrong_check_digit(&sscc);
    let bad_codes = [
        (format!("01/{bad_gtin}/21/X1"), "check digit"),
        (format!("00/{bad_sscc}"), "check digit"),
        (format!("01/{gtin}/10/{}", "L".repeat(21)), "at most 20"),
        (format!("01/{gtin}/21/bad serial"), "not in the gs1 ai encodable character set 82"),
    ];
    let before = heads(&net).await;
    let mut c = client(&net, &follower).await;
    for (code, why) in &bad_codes {
        let trace = c.trace(pb::TraceRequest { code: code.clone(), ..Default::default() }).await.unwrap_err();
        let bundle = c
            .get_bundle(pb::GetBundleRequest { code: code.clone(), format: pb::BundleFormat::Json as i32, height: 0 })
            .await
            .unwrap_err();
        for e in [&trace, &bundle] {
            assert_eq!(e.code(), Code::InvalidArgument, "{code}: {e:?}");
            assert!(e.message().contains(code.as_str()) && e.message().contains(why), "{code}: {e:?}");
        }
        println!("catalogue: Trace/GetBundle: {:?} {}", trace.code(), trace.message());
    }
    for lot in [format!("01/{bad_gtin}/10/BI-A"), format!("01/{gtin}/10/{}", "L".repeat(21))] {
        let e = c.recall_impact(pb::RecallImpactRequest { lot: lot.clone() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{lot}: {e:?}");
        assert!(e.message().contains(&lot), "{lot}: {e:?}");
    }
    assert_unchanged(&net, &before, Checked::Precheck, "queries with invalid codes").await;
    // In records: canonical bytes carrying a GTIN with a wrong check digit, a lot and a
    // serial with a character outside GS1's set, an SSCC with a wrong check digit. The
    // node cannot decode them into a record.
    let issue_g = issue(&net, "BI-G", 0).to_bytes();
    let issue_l = issue(&net, "BI-L0", 0).to_bytes();
    let ship_s = sign(&net, "nutri", 50, ship("importer", formula_item("BI-A", 1))).to_bytes();
    let pack = sign(
        &net,
        "nutri",
        51,
        RecordBody::Aggregate(Aggregation { parent: parent.clone(), children: vec![formula_item("BI-A", 2)] }),
    )
    .to_bytes();
    let bad_records = [
        (replace_once(&issue_g, gtin.as_str(), &bad_gtin), bad_gtin.clone()),
        (replace_once(&issue_l, "BI-L0", "BI L0"), "BI L0".to_string()),
        (replace_once(&ship_s, "BI-A-0001", "BI-A#0001"), "BI-A#0001".to_string()),
        (replace_once(&pack, &sscc, &bad_sscc), bad_sscc.clone()),
    ];
    for (bytes, value) in bad_records {
        assert!(SignedRecord::from_bytes(&bytes).is_err(), "{value} decodes");
        prechecked(&net, &follower, bytes, Code::InvalidArgument, &["record 0: bytes: signed record", &value]).await;
    }
    // And the one code form a record's types let through: a serial range whose prefix
    // holds a character outside GS1's set, refused by the form check.
    let mut bad_range = issue_lot("BI-N", 5);
    if let RecordBody::IssueCodes(ic) = &mut bad_range {
        ic.codes = CodeSet::Range(SerialRange { prefix: "BI N-".into(), start: 0, count: 5, width: 4 });
    }
    prechecked(
        &net,
        &leader,
        sign(&net, "nutri", 52, bad_range).to_bytes(),
        Code::InvalidArgument,
        &["codes.range", "\"BI N-\""],
    )
    .await;

    // ---- a peer with an unknown identity; Raft messages from a non-member ----
    intruder(&net).await;
    twin(&net).await;

    let end = heads(&net).await;
    println!(
        "catalogue: done in {:.1} s; height {} -> {} (rejected on apply), log size {} (set-up and the batch duplicate only)",
        started.elapsed().as_secs_f64(),
        base.height,
        end.height,
        end.log_size
    );
}

/// A node process whose key the genesis does not hold dials the real validators as if it
/// were a member, and — founding a Raft cluster of itself and their identities — asks
/// them for votes. The validators refuse its connection once Noise shows who it is, so no
/// request of any kind (Raft vote, forwarded submission, checkpoint signature) reaches
/// them: no node counts it as a peer, the term and leader stay, nothing moves.
async fn intruder(net: &Network) {
    let nodes = net.node_ids();
    let before = heads(net).await;
    let terms: Vec<u64> = nodes.iter().map(|n| net.status(n).expect("status").term).collect();
    let leader = net.leader();

    let bin = veritrace_devnet::locate::node_binary_for_tests().expect("node binary");
    let foreign = Network::create(NetworkSpec::temp(3, 0, bin).expect("spec")).expect("foreign network");
    // Its genesis: its own node-1 (a key the real network never saw) beside the real
    // node-2 and node-3, so it dials them under the identities they prove.
    let mut genesis = foreign.genesis().clone();
    let real = net.genesis();
    for (ours, theirs) in genesis.validators.iter_mut().zip(&real.validators).skip(1) {
        ours.public_key = theirs.public_key;
    }
    std::fs::write(foreign.genesis_path(), genesis.to_json()).expect("write genesis");
    let config_path = foreign.config_path("node-1").expect("config path");
    let mut config = NodeConfigFile::read(&config_path).expect("config");
    config.peers = nodes[1..]
        .iter()
        .map(|n| PeerEntry { node_id: n.clone(), p2p_addr: net.p2p_addr(n).expect("p2p address") })
        .collect();
    std::fs::write(&config_path, config.to_toml().expect("config toml")).expect("write config");
    foreign.start("node-1").expect("the intruder starts");

    let intruder_log = foreign.logs_path("node-1").expect("log path");
    let peer_id = wait_for("the intruder's peer id", async || {
        let log = std::fs::read_to_string(&intruder_log).ok()?;
        let line = log.lines().find(|l| l.contains("p2p listening"))?;
        let at = line.find("12D3KooW")?;
        Some(line[at..].chars().take_while(char::is_ascii_alphanumeric).collect::<String>())
    })
    .await;
    // Refused by the validators it dialled, each time it tried.
    for n in &nodes[1..] {
        let log = net.logs_path(n).expect("log path");
        wait_for(&format!("{n} to refuse the intruder"), async || {
            let log = std::fs::read_to_string(&log).ok()?;
            log.lines()
                .find(|l| l.contains("refused an inbound connection") && l.contains(&peer_id))
                .map(str::to_string)
        })
        .await;
    }
    // It got as far as an election: it asked them for votes and heard nothing.
    let mut c = client(&foreign, "node-1").await;
    wait_for("the intruder to stand for election", async || {
        let s = c.status(pb::StatusRequest {}).await.ok()?.into_inner();
        (s.role == "candidate").then_some(())
    })
    .await;

    for n in &nodes {
        let s = status(net, n).await;
        assert!(!s.peers.contains(&peer_id), "{n} counts the intruder as a peer: {:?}", s.peers);
    }
    let terms_after: Vec<u64> = nodes.iter().map(|n| net.status(n).expect("status").term).collect();
    assert_eq!(terms_after, terms, "a vote request of the intruder reached a validator");
    assert_eq!(net.leader(), leader);
    assert_unchanged(net, &before, Checked::Precheck, "intruder").await;
    println!("catalogue: intruder {peer_id} refused by {:?}; terms {terms:?} unchanged", &nodes[1..]);
}

/// A second node process started on a running node's config (its own ports, the same
/// data directory: a copied config, a launcher started twice) stops at once with a
/// message naming the directory and the process that holds it; the running node and the
/// network carry on, and nothing in the directory is touched.
async fn twin(net: &Network) {
    let before = heads(net).await;
    let leader = net.leader();
    let config_path = net.config_path("node-1").expect("config path");
    let mut config = NodeConfigFile::read(&config_path).expect("config");
    config.p2p_listen = "/ip4/127.0.0.1/tcp/0".into();
    config.grpc_listen = "127.0.0.1:0".into();
    config.http_listen = "127.0.0.1:0".into();
    let dir = config_path.parent().expect("config dir");
    let twin_path = dir.join("twin.toml");
    std::fs::write(&twin_path, config.to_toml().expect("config toml")).expect("write twin config");
    let bin = veritrace_devnet::locate::node_binary_for_tests().expect("node binary");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config").arg(&twin_path).current_dir(dir).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output()).await.expect("the twin exits").expect("run the twin");
    std::fs::remove_file(&twin_path).expect("remove twin config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the twin ran: {stderr}");
    let holder = net.pid("node-1").expect("pid").expect("node-1 runs");
    let data_dir = std::fs::canonicalize(net.data_dir("node-1").expect("data dir")).expect("canonical data dir");
    assert!(stderr.contains(&format!("data_dir {} is in use by process {holder}", data_dir.display())), "{stderr}");

    assert_eq!(net.leader(), leader);
    status(net, "node-1").await;
    assert_unchanged(net, &before, Checked::Precheck, "twin").await;
    let said = stderr.lines().find(|l| l.contains("is in use by")).unwrap_or_default();
    println!("catalogue: a twin of node-1 on its data_dir refused: {}", said.trim());
}
