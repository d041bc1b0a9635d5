//! Load for fault tests: clients that keep committing records while a node is broken,
//! and the checks that nothing they were told was committed is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use veritrace_devnet::Network;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::record::SignedRecord;
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

use crate::{client, issue};

/// Records committed while a fault is made, with the log index each receipt gave.
pub type Acked = Vec<([u8; 32], u64)>;

/// Clients that submit records one at a time through `via`, round robin, until told to
/// stop. A record whose submission failed (the leader died, no leader yet) is submitted
/// again as the same bytes until it is acknowledged: a duplicate answers with the
/// original receipt, so nothing is counted twice and nothing acknowledged is missed.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Acked>>,
}

pub const LOAD_CLIENTS: usize = 3;
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(8);

pub fn start_load(net: &Arc<Network>, via: &[String], tag: &str) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..LOAD_CLIENTS)
        .map(|c| {
            let (net, via, stop, tag) = (net.clone(), via.to_vec(), stop.clone(), format!("{tag}c{c}"));
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut turn = c;
                for n in 0.. {
                    let record = issue(&net, &tag, n);
                    while !stop.load(Ordering::Relaxed) {
                        turn += 1;
                        let receipt = submit_once(&net, &via[turn % via.len()], &record).await;
                        // A pending receipt (a duplicate of one still in flight) is no answer yet.
                        if let Some(r) = receipt.filter(|r| r.status != pb::ReceiptStatus::Pending as i32) {
                            assert_eq!(r.status, pb::ReceiptStatus::Accepted as i32, "record refused: {}", r.message);
                            acked.push((r.record_id.try_into().expect("32-byte record id"), r.log_index));
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                acked
            })
        })
        .collect();
    Load { stop, tasks }
}

/// One submission with a deadline; `None` when its outcome is unknown.
pub async fn submit_once(net: &Network, node: &str, record: &SignedRecord) -> Option<pb::Receipt> {
    let addr = net.grpc_addr(node).ok()?;
    let req = pb::SubmitRequest { signed_record: record.to_bytes(), wait_for_commit: true };
    let call = async {
        let mut c = LedgerClient::connect(format!("http://{addr}")).await.ok()?;
        c.submit(req).await.ok()?.into_inner().receipt
    };
    tokio::time::timeout(SUBMIT_TIMEOUT, call).await.ok().flatten()
}

impl Load {
    pub async fn finish(self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for t in self.tasks {
            acked.extend(t.await.expect("load client"));
        }
        acked
    }
}

// ---- checks ---------------------------------------------------------------------------

/// Every acknowledged record is in `node`'s ledger at the log index its receipt gave.
pub async fn has_all(net: &Network, node: &str, acked: &Acked) {
    let mut c = client(net, node).await;
    for (id, index) in acked {
        let req = pb::GetRecordRequest { which: Some(pb::get_record_request::Which::RecordId(id.to_vec())) };
        let entry = c
            .get_record(req)
            .await
            .unwrap_or_else(|e| panic!("{node} lost acknowledged record {}: {e}", Hash32(*id)))
            .into_inner();
        assert_eq!(entry.log_index, *index, "{node}: record {} moved", Hash32(*id));
    }
}

/// The node's log from its last start on.
pub fn last_run_log(net: &Network, node: &str) -> String {
    let log = std::fs::read_to_string(net.logs_path(node).expect("log path")).expect("read node log");
    let from = log.rfind("=== veritrace-devnet: start").unwrap_or(0);
    log[from..].to_string()
}

/// The error a node printed as it exited (refusing to start, or stopping), on one line and
/// without a backtrace: from the line that starts `Error: ` (log lines before it may hold
/// the words, inside a type's name).
pub fn refusal(log: &str) -> String {
    let from = log.match_indices("Error: ").map(|(i, _)| i).find(|&i| i == 0 || log[..i].ends_with('\n')).unwrap_or(0);
    let to = log.find("Stack backtrace").unwrap_or(log.len());
    log[from..to].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lines of the node's last run at warning level or worse (the levels are coloured, so
/// matched without the spaces around them), for the test's output.
pub fn complaints(net: &Network, node: &str) -> Vec<String> {
    last_run_log(net, node)
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
        .map(|l| l.to_string())
        .collect()
}
