//! The gRPC API against a real network (3 validators + 1 observer): every query answers
//! what the ledger holds and its proofs verify offline; every class of bad input gets its
//! status code and a message naming the offending value, and leaves the roots of every
//! node unchanged. Beside the ledger service a node serves the standard gRPC health check
//! and server reflection, which name it.

use std::time::Duration;

use prost::Message;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use veritrace_devnet::Network;
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::merkle;
use veritrace_ledger::org::OrgId;
use veritrace_ledger::record::{IssueCodes, Receive};
use veritrace_ledger::record::{RecordBody, RegulatoryAction, RegulatoryKind, Ship, SignedRecord};
use veritrace_proto::convert::checkpoint_from_pb;
use veritrace_proto::v1 as pb;
use veritrace_tests::*;

/// The full name of the ledger service, as health and reflection know it.
const LEDGER_SERVICE: &str = "veritrace.v1.Ledger";

fn hash(b: &[u8]) -> Hash32 {
    Hash32(b.try_into().expect("32 bytes"))
}

/// Roots every node agrees on.
async fn roots(net: &Network) -> (Vec<u8>, Vec<u8>) {
    let s = agree(net, &net.node_ids()).await;
    (s.log_root, s.state_root)
}

/// Submits `record` to `node`, expects the status `code` with `needle` in its message, and
/// checks that no node's roots moved.
async fn refused(net: &Network, node: &str, record_bytes: Vec<u8>, code: Code, needle: &str) -> tonic::Status {
    let before = roots(net).await;
    let req = pb::SubmitRequest { signed_record: record_bytes, wait_for_commit: true };
    let err = client(net, node).await.submit(req).await.expect_err("bad input must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(needle), "message {:?} does not name {needle:?}", err.message());
    assert_eq!(roots(net).await, before, "roots moved after a refused record");
    err
}

/// The receipt a rejected `Submit` carries in its status details.
fn receipt_of(err: &tonic::Status) -> pb::Receipt {
    pb::Receipt::decode(err.details()).expect("a receipt in the status details")
}

fn regulatory(action: RegulatoryKind, lot: &str) -> RecordBody {
    RecordBody::Regulatory(RegulatoryAction {
        action,
        subjects: vec![formula_lot(lot)],
        reason: "failed inspection".into(),
        reference: "SAMR-2026-0042".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_and_proofs_and_every_bad_input_class() {
    let net = network(3, 1, None);
    let nodes = net.node_ids();
    let observer = net.observers()[0].clone();
    let v0 = nodes[0].clone();

    // A small chain: nutri issues lot A (10 items), ships it to the importer, who receives
    // it; the regulator recalls it.
    let issued = issue_records(&net);
    for r in &issued {
        commit(&net, &v0, r).await;
    }
    let lot = formula_lot("API-A");
    let item = formula_item("API-A", 3);

    // ---- queries ----
    let mut c = client(&net, &observer).await;
    agree(&net, &nodes).await;
    let full = c.trace(pb::TraceRequest { code: item.to_string(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(full.code, item.to_string());
    assert_eq!(full.subjects.len(), 2, "the item and its lot");
    assert!(!full.subjects[0].has_state, "an item that moved with its lot has no state of its own");
    assert_eq!(full.subjects[1].subject, lot.to_string());
    assert_eq!(full.subjects[1].custodian, "importer");
    assert_eq!(full.effective_status, "recalled", "a lot's recall covers its items");
    let kinds: Vec<&str> = full.records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["issue_codes", "ship", "receive", "regulatory"]);
    assert!(full.records.windows(2).all(|w| w[0].log_index < w[1].log_index));
    assert!(full.next_page_token.is_empty());
    // Paged: 3 then 1, the same records.
    let p1 = c
        .trace(pb::TraceRequest { code: item.to_string(), limit: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.records.len(), 3);
    assert!(!p1.next_page_token.is_empty());
    let p2 = c
        .trace(pb::TraceRequest { code: item.to_string(), limit: 3, page_token: p1.next_page_token })
        .await
        .unwrap()
        .into_inner();
    assert!(p2.next_page_token.is_empty());
    let paged: Vec<u64> = p1.records.iter().chain(&p2.records).map(|r| r.log_index).collect();
    assert_eq!(paged, full.records.iter().map(|r| r.log_index).collect::<Vec<_>>());
    // The record by id and by log index is the one traced, and its bytes are what was signed.
    let recall = full.records.last().unwrap();
    let by_index = c
        .get_record(pb::GetRecordRequest { which: Some(pb::get_record_request::Which::LogIndex(recall.log_index)) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_index, *recall);
    assert_eq!(SignedRecord::from_bytes(&recall.signed_record).unwrap(), issued[3]);

    let impact = c.recall_impact(pb::RecallImpactRequest { lot: lot.to_string() }).await.unwrap().into_inner().holdings;
    assert_eq!(impact, vec![pb::Holding { custodian: "importer".into(), status: "recalled".into(), units: 10 }]);
    let by_org = c
        .records_by_org(pb::RecordsByOrgRequest { org: "nutri".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_org.records.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["issue_codes", "ship"]);

    // Checkpoints, proofs and bundles verify against the genesis validators alone.
    let validators = net.genesis().validator_set();
    let cp_pb = wait_complete(&mut c, recall.height).await;
    let cp = checkpoint_from_pb(&cp_pb).expect("checkpoint decodes");
    cp.verify(net.ledger_id(), &validators).expect("checkpoint has a quorum of validator signatures");
    let proof = c
        .inclusion_proof(pb::InclusionProofRequest {
            which: Some(pb::inclusion_proof_request::Which::RecordId(recall.record_id.clone())),
            log_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.log_size, cp.header.log_size);
    let path: Vec<Hash32> = proof.path.iter().map(|p| hash(p)).collect();
    let leaf = merkle::leaf_hash(&recall.record_id);
    merkle::verify_inclusion(&leaf, proof.log_index, proof.log_size, &path, &cp.header.log_root)
        .expect("inclusion proof verifies against the checkpoint's root");
    let cons =
        c.consistency_proof(pb::ConsistencyProofRequest { old_size: 1, new_size: 0 }).await.unwrap().into_inner();
    let path: Vec<Hash32> = cons.path.iter().map(|p| hash(p)).collect();
    merkle::verify_consistency(1, cons.new_size, &hash(&cons.old_root), &cp.header.log_root, &path)
        .expect("consistency proof verifies");
    for format in [pb::BundleFormat::Json, pb::BundleFormat::Compact] {
        let b = c
            .get_bundle(pb::GetBundleRequest { code: item.to_string(), format: format as i32, height: 0 })
            .await
            .unwrap()
            .into_inner();
        let bundle = match format {
            pb::BundleFormat::Json => TraceBundle::from_json(std::str::from_utf8(&b.bundle).unwrap()).unwrap(),
            pb::BundleFormat::Compact => TraceBundle::from_bytes(&b.bundle).unwrap(),
        };
        let verdict = verify_bundle(&bundle, &validators).expect("bundle verifies offline");
        assert_eq!(verdict.records, 4);
    }

    // The checkpoint stream: the latest first, then a newer one after another block.
    let mut stream = c.watch_checkpoints(pb::WatchCheckpointsRequest { after_height: 0 }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("the latest checkpoint");
    assert!(first.complete);
    commit(&net, &v0, &issue(&net, "API-W", 0)).await;
    let next = tokio::time::timeout(WAIT, stream.message()).await.expect("a newer checkpoint").unwrap().unwrap();
    assert!(next.height > first.height && next.complete);

    // ---- bad input, one class at a time ----
    // INVALID_ARGUMENT: bytes that are no record; a record of invalid form.
    refused(&net, &v0, b"not a record".to_vec(), Code::InvalidArgument, "record 0").await;
    let mut bad_date = issue_lot("API-X", 5);
    if let RecordBody::IssueCodes(IssueCodes { production_date, .. }) = &mut bad_date {
        *production_date = "2026-13-01".into();
    }
    refused(&net, &v0, sign(&net, "nutri", 0, bad_date).to_bytes(), Code::InvalidArgument, "2026-13-01").await;
    // UNAUTHENTICATED: a forged signature, refused by every node.
    let mut forged = issue(&net, "API-F", 0);
    forged.signature.0[7] ^= 1;
    for n in &nodes {
        refused(&net, n, forged.to_bytes(), Code::Unauthenticated, "does not verify").await;
    }
    // PERMISSION_DENIED: a platform issuing codes; a producer issuing under another's prefix.
    let e = refused(
        &net,
        &v0,
        sign(&net, "importer", 0, issue_lot("API-R", 5)).to_bytes(),
        Code::PermissionDenied,
        "role_not_allowed",
    )
    .await;
    assert_eq!(receipt_of(&e).reject_reason, "role_not_allowed");
    refused(
        &net,
        &v0,
        sign(&net, "boards", 0, issue_lot("API-P", 5)).to_bytes(),
        Code::PermissionDenied,
        "prefix_not_allowed",
    )
    .await;
    // FAILED_PRECONDITION: shipping a recalled lot.
    let ship_recalled = RecordBody::Ship(Ship {
        to: OrgId::new("shop").unwrap(),
        subjects: vec![lot.clone()],
        location: String::new(),
    });
    let e =
        refused(&net, &v0, sign(&net, "importer", 9, ship_recalled).to_bytes(), Code::FailedPrecondition, "recalled")
            .await;
    assert!(e.message().contains(&lot.to_string()), "{}", e.message());
    // ALREADY_EXISTS: issuing a code a second time.
    refused(
        &net,
        &v0,
        sign(&net, "nutri", 77, issue_lot("API-A", 10)).to_bytes(),
        Code::AlreadyExists,
        "already_issued",
    )
    .await;
    // NOT_FOUND (unknown_subject): shipping a lot that was never issued.
    let never_lot = formula_lot("API-NEVER");
    let ship_unknown = RecordBody::Ship(Ship {
        to: OrgId::new("importer").unwrap(),
        subjects: vec![never_lot.clone()],
        location: String::new(),
    });
    let e =
        refused(&net, &v0, sign(&net, "nutri", 78, ship_unknown).to_bytes(), Code::NotFound, "unknown_subject").await;
    assert!(e.message().contains(&never_lot.to_string()), "{}", e.message());
    assert_eq!(receipt_of(&e).reject_reason, "unknown_subject");
    // NOT_FOUND: unknown code, record, lot, organisation.
    let before = roots(&net).await;
    let never = formula_item("API-NEVER", 1).to_string();
    let e = c.trace(pb::TraceRequest { code: never.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&never), "{}", e.message());
    let e = c
        .get_record(pb::GetRecordRequest { which: Some(pb::get_record_request::Which::RecordId(vec![7; 32])) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&"07".repeat(32)), "{}", e.message());
    let none = formula_lot("API-NONE").to_string();
    let e = c.recall_impact(pb::RecallImpactRequest { lot: none.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&none), "{}", e.message());
    let beyond = status(&net, &v0).await.height + 1_000_000;
    let e = c.get_checkpoint(pb::GetCheckpointRequest { height: beyond }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains(&beyond.to_string()), "{}", e.message());
    let e = c.records_by_org(pb::RecordsByOrgRequest { org: "nobody".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((e.code(), e.message().contains("nobody")), (Code::NotFound, true), "{e:?}");
    // INVALID_ARGUMENT on queries: a bad check digit, a bad serial character, a bad limit.
    for code in ["01/09312345000013/21/X1", "01/09312345000012/21/bad serial"] {
        let e = c.trace(pb::TraceRequest { code: code.into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{code}: {e:?}");
        assert!(e.message().contains(code), "{}", e.message());
    }
    let e = c.trace(pb::TraceRequest { code: item.to_string(), limit: 5_000, ..Default::default() }).await.unwrap_err();
    assert_eq!((e.code(), e.message().contains("5000")), (Code::InvalidArgument, true), "{e:?}");
    let e = c.get_receipt(pb::GetReceiptRequest { record_id: vec![1, 2, 3] }).await.unwrap_err();
    assert_eq!((e.code(), e.message().contains("3")), (Code::InvalidArgument, true), "{e:?}");
    assert_eq!(roots(&net).await, before, "queries change nothing");

    // A duplicate of an accepted record answers with the original receipt.
    let again = commit(&net, &observer, &issued[0]).await;
    let original = c
        .get_receipt(pb::GetReceiptRequest { record_id: issued[0].id().as_bytes().to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.log_index, again.height), (original.log_index, original.height));

    // UNAVAILABLE: a follower whose leader and other follower are gone.
    let leader = net.leader().expect("leader");
    let validators_up: Vec<String> = net.validators();
    let follower = validators_up.iter().find(|n| **n != leader).unwrap().clone();
    for n in validators_up.iter().filter(|n| **n != follower) {
        net.kill(n).unwrap();
    }
    let mut f = client(&net, &follower).await;
    let alone = status(&net, &follower).await;
    let req = pb::SubmitRequest { signed_record: issue(&net, "API-U", 0).to_bytes(), wait_for_commit: true };
    let e = tokio::time::timeout(Duration::from_secs(45), f.submit(req))
        .await
        .expect("an answer, not a hang")
        .expect_err("no quorum, no commit");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // It still thinks the dead leader leads (unreachable), or has noticed that none does.
    let msg = e.message();
    assert!(msg.contains("no leader") || msg.contains("leader unreachable"), "{e:?}");
    let after = status(&net, &follower).await;
    assert_eq!(
        (after.height, after.log_root, after.state_root),
        (alone.height, alone.log_root, alone.state_root),
        "the lone follower's roots moved without a quorum"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_serves_and_reflection_lists_the_ledger_service() {
    let net = network(1, 0, None);
    let node = net.node_ids()[0].clone();
    let endpoint = format!("http://{}", net.grpc_addr(&node).expect("grpc address"));
    let channel =
        tonic::transport::Endpoint::from_shared(endpoint).expect("endpoint").connect().await.expect("connect");

    // grpc.health.v1: the server as a whole ("") and the ledger service are SERVING; a
    // service the node does not have is NOT_FOUND.
    let mut health = HealthClient::new(channel.clone());
    for service in ["", LEDGER_SERVICE] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.expect("health check");
        assert_eq!(r.into_inner().status(), ServingStatus::Serving, "service {service:?}");
    }
    let e = health.check(HealthCheckRequest { service: "veritrace.v1.Nothing".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // grpc.reflection.v1: the service list names the ledger.
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(futures::stream::iter([ask])).await.expect("reflection stream").into_inner();
    let answer = tokio::time::timeout(WAIT, answers.message())
        .await
        .expect("a reflection answer")
        .expect("reflection answer")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&LEDGER_SERVICE), "{names:?}");
}

/// nutri issues lot API-A, ships it to the importer, who receives it; samr recalls it.
fn issue_records(net: &Network) -> Vec<SignedRecord> {
    let lot = formula_lot("API-A");
    vec![
        sign(net, "nutri", 0, issue_lot("API-A", 10)),
        sign(
            net,
            "nutri",
            1,
            RecordBody::Ship(Ship {
                to: OrgId::new("importer").unwrap(),
                subjects: vec![lot.clone()],
                location: "Melbourne".into(),
            }),
        ),
        sign(
            net,
            "importer",
            2,
            RecordBody::Receive(Receive {
                from: OrgId::new("nutri").unwrap(),
                subjects: vec![lot],
                location: "Pingtan".into(),
            }),
        ),
        sign(net, "samr", 3, regulatory(RegulatoryKind::Recall, "API-A")),
    ]
}

/// Waits until the node has a complete checkpoint at or above `height`; returns it.
async fn wait_complete(c: &mut Client, height: u64) -> pb::Checkpoint {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(cp) = c.get_checkpoint(pb::GetCheckpointRequest { height: 0 }).await {
            let cp = cp.into_inner();
            if cp.height >= height {
                assert!(cp.complete);
                return cp;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no complete checkpoint at height {height}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
