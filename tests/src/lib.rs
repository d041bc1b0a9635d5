//! Shared harness of the workspace-level tests (`tests/tests/`): a devnet network of real
//! `veritrace-node` processes, gRPC clients to its nodes, records signed by the cast's
//! organisations, and the waits multi-process tests need. Everything it starts is
//! stopped when the [`Network`] handle drops.

pub mod browser;
pub mod faults;
pub mod load;

use std::time::{Duration, Instant};

use veritrace_devnet::config::{RaftSettings, Tuning};
use veritrace_devnet::{Network, NetworkSpec};
use veritrace_ledger::ids::{Gtin, Lot, SerialRange, SubjectId};
use veritrace_ledger::org::{KeyId, OrgId};
use veritrace_ledger::record::{CodeSet, IssueCodes, Product, Record, RecordBody, SignedRecord};
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

/// Longest wait for a network to settle (leader, agreement).
pub const WAIT: Duration = Duration::from_secs(60);

pub type Client = LedgerClient<tonic::transport::Channel>;

/// Starts a network of `validators` + `observers` nodes and waits for a leader.
pub fn network(validators: u32, observers: u32, snapshot_interval: Option<u64>) -> Network {
    let bin = veritrace_devnet::locate::node_binary_for_tests().expect("node binary");
    let mut spec = NetworkSpec::temp(validators, observers, bin).expect("network spec");
    spec.tuning = Tuning { raft: RaftSettings { snapshot_interval, ..Default::default() }, ..Default::default() };
    let net = Network::create(spec).expect("create network");
    net.start_all().expect("start nodes");
    net.wait_for_leader(WAIT).expect("a leader");
    net
}

/// Now, in unix ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// Infant formula under nutri's GS1 company prefix.
pub fn formula_gtin() -> Gtin {
    Gtin::under_company_prefix(veritrace_devnet::cast::NUTRI_GS1_PREFIX, 1).expect("valid gtin")
}

/// `record` signed by the cast organisation `org` with its key `k1`.
pub fn sign(net: &Network, org: &str, nonce: u64, body: RecordBody) -> SignedRecord {
    let record = Record {
        author: OrgId::new(org).expect("org id"),
        key_id: KeyId::new("k1").expect("key id"),
        time_ms: now_ms(),
        nonce,
        body,
    };
    SignedRecord::sign(net.ledger_id(), record, net.cast().key(org).unwrap_or_else(|| panic!("no key for {org}")))
}

/// An issuance of `count` formula items by nutri in lot `lot` (serials `{lot}-0000`...).
pub fn issue_lot(lot: &str, count: u64) -> RecordBody {
    RecordBody::IssueCodes(IssueCodes {
        product: Product {
            gtin: formula_gtin(),
            name: "Infant formula".into(),
            model: String::new(),
            spec: String::new(),
            standard: "GB 10765-2021".into(),
        },
        lot: Lot::parse(lot).expect("lot"),
        production_date: "2026-11-01".into(),
        expiry_date: None,
        codes: CodeSet::Range(SerialRange { prefix: format!("{lot}-"), start: 0, count, width: 4 }),
        factory: String::new(),
    })
}

/// A distinct, valid issuance by nutri: lot `{tag}-{n}` of 100 items.
pub fn issue(net: &Network, tag: &str, n: u64) -> SignedRecord {
    sign(net, "nutri", n, issue_lot(&format!("{tag}-{n}"), 100))
}

/// The lot subject of a formula lot.
pub fn formula_lot(lot: &str) -> SubjectId {
    format!("01/{}/10/{lot}", formula_gtin()).parse().expect("lot subject")
}

/// Item `i` of a formula lot issued by [`issue_lot`].
pub fn formula_item(lot: &str, i: u64) -> SubjectId {
    format!("01/{}/21/{lot}-{i:04}", formula_gtin()).parse().expect("item subject")
}

pub async fn client(net: &Network, node: &str) -> Client {
    let addr = net.grpc_addr(node).expect("grpc address");
    LedgerClient::connect(format!("http://{addr}")).await.expect("grpc connect")
}

pub async fn status(net: &Network, node: &str) -> pb::StatusResponse {
    client(net, node).await.status(pb::StatusRequest {}).await.expect("status").into_inner()
}

/// Polls `probe` every 200 ms until it answers; panics after [`WAIT`], naming `what`.
pub async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Commits records through `nodes`, in turn, until each of them has built a snapshot and
/// purged its Raft log past the first entry, so that a member starting from nothing can
/// only catch up by snapshot; returns how many it committed. Panics after [`WAIT`].
///
/// A snapshot is built in the background a while after its index is applied (seconds on a
/// loaded machine): a test that restarted a wiped member as soon as the others agree could
/// race it, and the member catch up from the log instead. Committing rather than only
/// waiting keeps this from depending on where each node's snapshot schedule stands when
/// the load stops: each record is a block, which moves the schedule on.
pub async fn log_purged(net: &Network, nodes: &[String]) -> u64 {
    let mut committed = 0;
    wait_for(&format!("{nodes:?} to purge their raft logs"), async || {
        let mut purged = Vec::new();
        for n in nodes {
            purged.push(status(net, n).await.raft_purged_index);
        }
        if purged.iter().all(|p| *p > 0) {
            return Some(());
        }
        println!("raft logs of {nodes:?} purged to {purged:?}; committing one more record");
        commit(net, &nodes[committed as usize % nodes.len()], &issue(net, "purge", committed)).await;
        committed += 1;
        None
    })
    .await;
    committed
}

/// Waits until the nodes report the same height and roots; returns one of their statuses.
pub async fn agree(net: &Network, nodes: &[String]) -> pb::StatusResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(status(net, n).await);
        }
        let same = all.windows(2).all(|w| {
            w[0].height == w[1].height && w[0].log_root == w[1].log_root && w[0].state_root == w[1].state_root
        });
        if same {
            return all.remove(0);
        }
        assert!(
            Instant::now() < deadline,
            "nodes never agreed: {:?}",
            all.iter().map(|s| (s.height, s.log_size)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `node` holds a complete checkpoint at `height` or later (validators'
/// signatures reach a node a moment after the blocks they sign); panics after [`WAIT`].
pub async fn checkpoint_at(net: &Network, node: &str, height: u64) -> pb::StatusResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(net, node).await;
        if s.complete_checkpoint_height >= height {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{node} never held a complete checkpoint at {height}: at {}",
            s.complete_checkpoint_height
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits one record and waits for its commit; panics unless it is accepted.
pub async fn commit(net: &Network, node: &str, record: &SignedRecord) -> pb::Receipt {
    let deadline = Instant::now() + WAIT;
    loop {
        let req = pb::SubmitRequest { signed_record: record.to_bytes(), wait_for_commit: true };
        match client(net, node).await.submit(req).await {
            Ok(r) => {
                let r = r.into_inner().receipt.expect("a receipt");
                assert_eq!(r.status, pb::ReceiptStatus::Accepted as i32, "record refused: {}", r.message);
                return r;
            }
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("submission to {node} failed: {s}"),
        }
    }
}
