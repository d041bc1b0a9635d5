//! Talking to a node: its address, one connection, one deadline for the whole command,
//! retries while the network has no leader, and what each gRPC status means as an exit
//! code. Also what the node's messages must satisfy before anything else trusts them
//! (a checkpoint's canonical bytes decode and agree with its fields; a record's bytes hash
//! to its id).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::org::LedgerId;
use veritrace_ledger::record::SignedRecord;
use veritrace_proto::convert::{checkpoint_from_pb, hash_from_pb};
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

use crate::exit::{
    EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_VERIFY_FAILED, Failure, OrExit,
};

/// `rpc!(node, what, method, request)`: one unary call of the generated client through
/// [`Node::call`] (retried while the node is unavailable), the request cloned per attempt.
macro_rules! rpc {
    ($node:expr, $what:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $node
            .call($what, |mut c| {
                let r = req.clone();
                async move { c.$method(r).await }
            })
            .await
    }};
}
pub(crate) use rpc;

/// `try_rpc!(node, what, method, request)`: like [`rpc!`] through [`Node::try_call`].
macro_rules! try_rpc {
    ($node:expr, $what:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $node
            .try_call($what, |mut c| {
                let r = req.clone();
                async move { c.$method(r).await }
            })
            .await
    }};
}
pub(crate) use try_rpc;

/// Longest wait for the TCP and HTTP/2 connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest gRPC message sent or accepted (a bundle, a page of records); the node's limit.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// First pause before retrying a call the node answered with UNAVAILABLE; doubles each time.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);
/// Default of `--timeout`.
pub const TIMEOUT_SECS_DEFAULT: u64 = 30;

/// Where the node is and how long to keep trying.
#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    /// The node's gRPC address: host:port or http://host:port.
    #[arg(long, value_name = "ADDR")]
    pub node: String,
    /// Give up after this many seconds: retrying while there is no leader, waiting for a
    /// commit or for a checkpoint to form.
    #[arg(long, value_name = "SECS", default_value_t = TIMEOUT_SECS_DEFAULT)]
    pub timeout: u64,
}

/// `host:port` or `http://host:port` as the URI tonic wants. TLS is not offered by nodes.
pub fn endpoint_uri(addr: &str) -> Result<String> {
    let uri = if let Some(rest) = addr.strip_prefix("http://") {
        if rest.is_empty() {
            bail!("node address {addr:?} has no host");
        }
        addr.to_string()
    } else if addr.contains("://") {
        bail!("node address {addr:?}: only http:// is supported (or host:port)");
    } else {
        format!("http://{addr}")
    };
    let authority = uri.trim_start_matches("http://").trim_end_matches('/');
    let port_ok =
        authority.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok || authority.contains('/') {
        bail!("node address {addr:?} must be host:port or http://host:port");
    }
    Ok(uri)
}

/// A single-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .or_exit(EXIT_UNAVAILABLE)
}

/// A connected node and the command's deadline.
pub struct Node {
    addr: String,
    client: LedgerClient<Channel>,
    timeout: Duration,
    deadline: Instant,
}

impl Node {
    /// Connects once; a node that cannot be reached is reported at once (exit 4), not retried.
    pub async fn connect(args: &NodeArgs) -> Result<Node, Failure> {
        let uri = endpoint_uri(&args.node).or_bad_input()?;
        let endpoint = Endpoint::from_shared(uri)
            .with_context(|| format!("node address {:?}", args.node))
            .or_bad_input()?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|e| {
            Failure::new(EXIT_UNAVAILABLE, anyhow!("cannot connect to node {}: {}", args.node, error_chain(&e)))
        })?;
        let client = LedgerClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let timeout = Duration::from_secs(args.timeout);
        Ok(Node { addr: args.node.clone(), client, timeout, deadline: Instant::now() + timeout })
    }

    /// Starts a new `--timeout` period, for commands that check many things in turn.
    pub fn renew_deadline(&mut self) {
        self.deadline = Instant::now() + self.timeout;
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A client for calls that must not be bounded by the command's deadline (streams).
    pub fn client(&self) -> LedgerClient<Channel> {
        self.client.clone()
    }

    /// One unary call, retried while the node answers UNAVAILABLE (no leader, forwarding
    /// failed, connection lost) until the deadline. `what` names the call in errors.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Failure>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.try_call(what, f).await?.map_err(|s| status_failure(what, &self.addr, &s))
    }

    /// Like [`Node::call`], but a status that is not retried is handed back to the caller
    /// (the outer error is the deadline passing).
    pub async fn try_call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<Result<T, Status>, Failure>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut delay = RETRY_DELAY_MIN;
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            let status = match tokio::time::timeout(remaining, f(self.client.clone())).await {
                Ok(Ok(resp)) => return Ok(Ok(resp.into_inner())),
                Ok(Err(s)) if retryable(&s) => s,
                Ok(Err(s)) => return Ok(Err(s)),
                Err(_) => return Err(self.timed_out(what)),
            };
            if Instant::now() + delay >= self.deadline {
                let f = status_failure(what, &self.addr, &status);
                let err = f.err.map(|e| e.context(format!("gave up after --timeout {}s", self.timeout.as_secs())));
                return Err(Failure { code: f.code, err });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
    }

    /// Sleeps `delay` before polling again, or fails with `what` if the deadline would pass.
    pub async fn pause_or_give_up(&self, delay: Duration, what: &str) -> Result<(), Failure> {
        if Instant::now() + delay >= self.deadline {
            return Err(self.timed_out(what));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn timed_out(&self, what: &str) -> Failure {
        Failure::new(
            EXIT_UNAVAILABLE,
            anyhow!("{what}: node {} gave no answer within --timeout {}s", self.addr, self.timeout.as_secs()),
        )
    }

    pub async fn status(&self) -> Result<pb::StatusResponse, Failure> {
        rpc!(self, "status", status, pb::StatusRequest {})
    }

    /// The ledger the node serves: what records are signed for.
    pub async fn ledger_id(&self) -> Result<LedgerId, Failure> {
        let s = self.status().await?;
        LedgerId::new(s.ledger_id.clone())
            .with_context(|| format!("node {} reports ledger id {:?}", self.addr, s.ledger_id))
            .or_exit(EXIT_UNAVAILABLE)
    }

    /// A checkpoint, the latest complete one for height 0, decoded from its canonical bytes.
    pub async fn checkpoint(&self, height: u64) -> Result<Checkpoint, Failure> {
        let what = if height == 0 { "latest complete checkpoint".to_string() } else { format!("checkpoint {height}") };
        let cp = rpc!(self, &what, get_checkpoint, pb::GetCheckpointRequest { height })?;
        decode_checkpoint(&cp)
    }
}

/// Whether a status means "try again": the network has no leader yet, the node lost a peer,
/// or the channel is reconnecting.
fn retryable(s: &Status) -> bool {
    s.code() == Code::Unavailable || (s.code() == Code::Unknown && s.message().contains("not ready"))
}

/// What a node's error status means for the exit code (docs/cli.md).
pub fn status_failure(what: &str, addr: &str, s: &Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => EXIT_BAD_INPUT,
        Code::Unauthenticated | Code::PermissionDenied | Code::FailedPrecondition | Code::AlreadyExists => EXIT_REFUSED,
        Code::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_UNAVAILABLE,
    };
    let detail = match s.code() {
        Code::Unimplemented => format!("node {addr} does not implement this call ({})", s.message()),
        c => format!("node {addr} answered {c:?}: {}", s.message()),
    };
    Failure::new(code, anyhow!("{what}: {detail}"))
}

/// An error and its causes on one line (transport errors hide the useful part in a cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// The checkpoint in a node's message, decoded from its canonical bytes; a message whose
/// plain fields say something else is refused (exit 1): that node is not to be trusted.
pub fn decode_checkpoint(cp: &pb::Checkpoint) -> Result<Checkpoint, Failure> {
    checkpoint_from_pb(cp).map_err(|e| Failure::verify_failed(anyhow!("the node's checkpoint: {e}")))
}

/// A record a node sent: its canonical bytes decoded and hashed; the id must be the one the
/// node gave, or the node is serving something other than what was signed (exit 1).
pub fn decode_entry(entry: &pb::RecordEntry) -> Result<SignedRecord, Failure> {
    let record = SignedRecord::from_bytes(&entry.signed_record)
        .with_context(|| format!("record at log index {} from the node", entry.log_index))
        .or_exit(EXIT_VERIFY_FAILED)?;
    let claimed = node_hash("record id", &entry.record_id)?;
    let id = record.id();
    if id != claimed {
        return Err(Failure::verify_failed(anyhow!(
            "record at log index {}: its bytes hash to {id}, the node says {claimed}",
            entry.log_index
        )));
    }
    Ok(record)
}

/// A record id given on the command line: 64 hex digits.
pub fn parse_record_id(s: &str) -> Result<Hash32, String> {
    Hash32::from_hex(s).map_err(|e| format!("record id {s:?}: {e}"))
}

/// A 32-byte hash from a node's message (a root, a proof step).
pub fn node_hash(what: &str, bytes: &[u8]) -> Result<Hash32, Failure> {
    hash_from_pb(what, bytes).map_err(|e| Failure::verify_failed(anyhow!("the node's {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_http_uris_or_are_named_when_wrong() {
        assert_eq!(endpoint_uri("127.0.0.1:7000").unwrap(), "http://127.0.0.1:7000");
        assert_eq!(endpoint_uri("http://node-1.example:7000").unwrap(), "http://node-1.example:7000");
        for bad in ["https://x:1", "127.0.0.1", "http://", "x:port", "tcp://x:1", "x:1/path"] {
            let e = endpoint_uri(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        let cases = [
            (Code::InvalidArgument, EXIT_BAD_INPUT),
            (Code::Unauthenticated, EXIT_REFUSED),
            (Code::PermissionDenied, EXIT_REFUSED),
            (Code::FailedPrecondition, EXIT_REFUSED),
            (Code::AlreadyExists, EXIT_REFUSED),
            (Code::NotFound, EXIT_NOT_FOUND),
            (Code::Unavailable, EXIT_UNAVAILABLE),
            (Code::Internal, EXIT_UNAVAILABLE),
            (Code::Unimplemented, EXIT_UNAVAILABLE),
        ];
        for (code, exit) in cases {
            let f = status_failure("trace", "n:1", &Status::new(code, "why"));
            assert_eq!(f.code, exit, "{code:?}");
            assert!(format!("{:#}", f.err.unwrap()).contains("why"));
        }
    }
}
