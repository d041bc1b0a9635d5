//! gRPC clients of a node (`veritrace.v1.Ledger`) with bounded waits, and a blocking
//! `Status` for the synchronous [`crate::Network`] handle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use veritrace_ledger::record::SignedRecord;
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

/// Longest wait for a gRPC connection.
pub const GRPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a quick RPC (status, receipts, queries).
pub const GRPC_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an RPC that waits for a commit; above the node's own commit wait.
pub const GRPC_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response a client accepts (a trace bundle of a long history).
pub const GRPC_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Pause between retries of a submission the node could not take.
pub const SUBMIT_RETRY_INTERVAL: Duration = Duration::from_millis(300);

/// A client of the node at `addr` whose calls each time out after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<LedgerClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("grpc endpoint {addr}"))?
        .connect_timeout(GRPC_CONNECT_TIMEOUT)
        .timeout(timeout);
    let channel = endpoint.connect().await.with_context(|| format!("connect to grpc {addr}"))?;
    Ok(LedgerClient::new(channel).max_decoding_message_size(GRPC_RESPONSE_BYTES_MAX))
}

/// The node's `Status` RPC.
pub async fn status(addr: SocketAddr) -> Result<pb::StatusResponse> {
    let mut c = connect(addr, GRPC_QUERY_TIMEOUT).await?;
    let r = c.status(pb::StatusRequest {}).await.with_context(|| format!("Status from {addr}"))?;
    Ok(r.into_inner())
}

/// [`status`] from synchronous code ([`block_on`]).
pub fn status_blocking(addr: SocketAddr) -> Result<pb::StatusResponse> {
    block_on(status(addr))
}

/// Runs `f` from synchronous code, on a runtime of its own in a thread of its own, so it
/// works whether or not the caller runs inside a tokio runtime.
pub fn block_on<T: Send>(f: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("build a tokio runtime")?;
            rt.block_on(f)
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a call on its own runtime panicked")))
    })
}

/// Submits `signed` with wait-for-commit through `client` (a node at `via`) and returns
/// its receipt, accepted or rejected, retrying while the node cannot take it (no leader
/// during an election) for up to `timeout`: resubmitting the same signed record is
/// answered with its original receipt, so a retry never applies anything twice.
pub async fn submit_until_decided(
    client: &mut LedgerClient<Channel>,
    signed: &SignedRecord,
    timeout: Duration,
    via: &str,
) -> Result<pb::Receipt> {
    let deadline = Instant::now() + timeout;
    let request = pb::SubmitRequest { signed_record: signed.to_bytes(), wait_for_commit: true };
    let id = signed.id();
    loop {
        match client.submit(request.clone()).await {
            Ok(r) => {
                let receipt = r.into_inner().receipt.context("Submit answered without a receipt")?;
                if receipt.status != pb::ReceiptStatus::Pending as i32 {
                    return Ok(receipt);
                }
                // Queued but not decided within the node's wait: ask again below.
                if let Ok(r) = client.get_receipt(pb::GetReceiptRequest { record_id: id.as_bytes().to_vec() }).await {
                    let r = r.into_inner();
                    if r.status != pb::ReceiptStatus::Pending as i32 {
                        return Ok(r);
                    }
                }
            }
            Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) => {}
            Err(s) => {
                // A rejected record is an error status carrying its receipt (docs/api.md).
                if let Ok(receipt) = <pb::Receipt as prost::Message>::decode(s.details())
                    && receipt.status == pb::ReceiptStatus::Rejected as i32
                {
                    return Ok(receipt);
                }
                bail!("Submit of record {id} to {via}: {s}")
            }
        }
        if Instant::now() >= deadline {
            bail!("record {id} was not decided within {timeout:?} at {via}");
        }
        tokio::time::sleep(SUBMIT_RETRY_INTERVAL).await;
    }
}
