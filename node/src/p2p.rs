//! Node-to-node networking: libp2p over TCP + Noise + Yamux. One kind of exchange, a
//! [`NodeRequest`] answered by a [`NodeResponse`], carries Raft RPCs, submissions forwarded
//! to the leader and checkpoint signatures between the members of a ledger.
//!
//! One task owns the libp2p `Swarm`; the rest of the node talks to it through [`P2p`], a
//! cheap, cloneable handle over a bounded command channel. Requests from peers reach the
//! node as [`Inbound`] values on a bounded channel the node hands to [`P2p::start`]; each
//! carries a oneshot for the answer. [`P2pTransport`] plugs the handle into
//! `veritrace-consensus` as its [`RaftTransport`], and [`answer_raft`] is the matching
//! receiving side.
//!
//! Two protocols carry the exchange, with the same frames:
//! - [`STREAM_PROTOCOL_NAME`], the fast path: request streams kept open between connected
//!   peers and used for one request after another (see `Streams`). The caller writes to
//!   the stream and reads the reply itself, so a request crosses no task but the
//!   connection's own. A block's Raft traffic is four requests; a new stream and two trips
//!   through the swarm task for each made a one-record block cost 4.3 ms of CPU across
//!   three nodes, against 2.9 ms this way.
//! - [`PROTOCOL_NAME`], request-response through the swarm task, one stream per request:
//!   for a peer this node is not connected to (it dials with the addresses it knows), for
//!   a peer that does not speak the stream protocol, and again for a request whose new
//!   stream failed (a receiver drops a new stream that arrives while it hands over
//!   another; a request sent twice is harmless, see `Streams::request`).
//!
//! Architecture invariants:
//! - Permissioned at connection time. A node's libp2p identity is its ed25519 node key;
//!   only identities in the allow list may hold a connection. The node fills the list with
//!   the genesis validators and observers at start, and keeps it in line with the ledger's
//!   validator set and Raft's membership through [`P2p::set_members`] (so a validator
//!   admitted by governance can connect, and a removed one is cut off). Noise proves the
//!   remote identity, then libp2p's allow-list behaviour refuses any other before a single
//!   stream is opened, in both directions. Removing a peer from the list closes its
//!   connections.
//! - Addresses: configured peers are dialled at start and again whenever their connection
//!   drops; [`P2p::set_members`] adds more. Once connected, libp2p's identify protocol tells
//!   each side the other's listen address ([`P2p::identified_addrs`]), which is how the
//!   leader learns where a node admitted by governance listens.
//! - Bounded everywhere: the command channel, the inbound channel (when it is full a peer
//!   is answered [`NodeResponse::Refused`] instead of stalling the swarm), requests in
//!   flight each way, streams per connection, and every frame on the wire
//!   ([`REQUEST_BYTES_MAX`], [`RESPONSE_BYTES_MAX`]). A frame's claimed length is checked
//!   before it is read, and its buffer grows only with the bytes that actually arrive.
//! - The wire format of the protocol is bincode 2 through serde with a fixed configuration
//!   (big-endian, fixed-width integers, a size limit) behind a 4-byte big-endian length.
//!   The protocol name carries the version: a change to [`NodeRequest`] or [`NodeResponse`]
//!   is a new protocol name, not a version byte.
//!
//! Deliberately absent: peer discovery beyond identify on allowed connections (members
//! come from the genesis and the ledger, their addresses from the node's config, Raft's
//! membership and identify), gossip, and any knowledge of what forwarded submissions or
//! signature messages contain — they are opaque bytes here.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::allow_block_list::{self, AllowedPeers};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionDenied, DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, identity, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use veritrace_consensus::network::RPC_BYTES_MAX;
use veritrace_consensus::{NodeId, PeerInfo, RaftRpc, RaftRpcReply, RaftTransport, RpcServer, TransportError};

/// Name of the one request-response protocol between nodes; its last segment is the
/// protocol version.
pub const PROTOCOL_NAME: &str = "/veritrace/node/1";
/// [`PROTOCOL_NAME`] as libp2p's protocol type.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);
/// Name of the protocol of persistent request streams: [`PROTOCOL_NAME`]'s frames, a
/// request then its response, again and again on one stream.
pub const STREAM_PROTOCOL_NAME: &str = "/veritrace/node-stream/1";
/// [`STREAM_PROTOCOL_NAME`] as libp2p's protocol type.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new(STREAM_PROTOCOL_NAME);
/// Idle request streams kept per peer; one that comes back when this many wait is closed.
/// A peer needs one per request it has in flight to another at once: Raft's append, a
/// vote, a snapshot chunk, forwards and signatures.
pub const IDLE_STREAMS_PER_PEER_MAX: usize = 8;
/// Request streams from peers served at once, across all peers; more are closed unread.
pub const INBOUND_STREAMS_MAX: usize = 1024;
/// Protocol version the identify exchange announces (listen addresses between members).
pub const IDENTIFY_PROTOCOL_NAME: &str = "/veritrace/identify/1";

/// Room in a request for everything around the largest Raft RPC: the [`NodeRequest`]
/// variant tag (the RPC's own limit already counts its contents).
pub const REQUEST_ENVELOPE_BYTES_MAX: u64 = 64 * 1024;
/// Largest encoded request: one Raft RPC of up to the consensus limit (64 MiB, which fits
/// a snapshot chunk or a full append-entries) in its envelope. Forwarded submissions and
/// signature messages share the limit.
pub const REQUEST_BYTES_MAX: u64 = RPC_BYTES_MAX + REQUEST_ENVELOPE_BYTES_MAX;
/// Largest encoded response. Raft replies are small; a forwarded batch answers with at
/// most one receipt per submission, far below this.
pub const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Length of the frame header: a big-endian u32 byte count.
const FRAME_HEADER_BYTES: usize = 4;
/// Bytes reserved up front for a frame body: a peer claiming a large frame gets memory as
/// it sends, not on its word.
const FRAME_PREALLOC_BYTES_MAX: u64 = 64 * 1024;

// A frame length travels as a u32, and bincode's limit is a usize.
const _: () = assert!(REQUEST_BYTES_MAX <= u32::MAX as u64 && RESPONSE_BYTES_MAX <= REQUEST_BYTES_MAX);
const DECODE_BYTES_MAX: usize = REQUEST_BYTES_MAX as usize;

/// Streams (requests in either direction) open at once on one connection. Raft sends one
/// append-entries per follower at a time, so this leaves room for votes, snapshots and
/// forwarded submissions while bounding what one peer can make this node buffer.
pub const STREAMS_PER_CONNECTION_MAX: usize = 512;
/// Commands queued from handles to the swarm task; senders wait when it is full.
pub const COMMAND_QUEUE_MAX: usize = 256;
/// Outbound requests awaiting a reply (or a connection); more fail with [`P2pError::Busy`].
pub const OUTBOUND_PENDING_MAX: usize = 1024;
/// Inbound requests handed to the node and not answered yet; more are refused as busy.
pub const INBOUND_PENDING_MAX: usize = 1024;

/// Default time for one request: sending it, the peer's work and the reply. Generous: the
/// last chunk of a snapshot is answered only once the whole snapshot is installed and
/// checked (`raft.install_snapshot_timeout_ms` may be up to this), and a chunk may cross a
/// slow WAN link. Requests that must fail sooner carry their own deadline (Raft appends
/// openraft's, forwarded submissions `FORWARD_TIMEOUT`).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
/// Default time for TCP connect, Noise handshake and Yamux negotiation.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time a connection with no open stream is kept.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default first wait before dialling a configured peer again.
pub const REDIAL_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(500);
/// Default longest wait between dials of a configured peer.
pub const REDIAL_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(30);
/// How long [`P2p::start`] waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A request from one node to another.
#[derive(Serialize, Deserialize)]
pub enum NodeRequest {
    /// A Raft RPC, answered with [`NodeResponse::Raft`].
    Raft(RaftRpc),
    /// Submissions for the leader, opaque here; answered with [`NodeResponse::Forwarded`].
    Forward(Vec<Vec<u8>>),
    /// A checkpoint signature message, opaque here; answered with [`NodeResponse::Ack`].
    Signature(Vec<u8>),
}

/// The answer to a [`NodeRequest`].
#[derive(Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, moved a few times and never stored in bulk: boxing buys nothing"
)]
pub enum NodeResponse {
    Raft(RaftRpcReply),
    /// The leader's reply to forwarded submissions, opaque here.
    Forwarded(Vec<u8>),
    Ack,
    /// The receiver would not handle the request (busy, shutting down, not its role); the
    /// reason says why.
    Refused(String),
}

// Forwarded payloads run to megabytes: log their sizes, not their bytes.
impl fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRequest::Raft(rpc) => f.debug_tuple("Raft").field(rpc).finish(),
            NodeRequest::Forward(items) => {
                let bytes: usize = items.iter().map(Vec::len).sum();
                write!(f, "Forward({} submissions, {bytes} bytes)", items.len())
            }
            NodeRequest::Signature(message) => write!(f, "Signature({} bytes)", message.len()),
        }
    }
}

impl fmt::Debug for NodeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeResponse::Raft(reply) => f.debug_tuple("Raft").field(reply).finish(),
            NodeResponse::Forwarded(reply) => write!(f, "Forwarded({} bytes)", reply.len()),
            NodeResponse::Ack => f.write_str("Ack"),
            NodeResponse::Refused(reason) => f.debug_tuple("Refused").field(reason).finish(),
        }
    }
}

/// A networking failure, naming the peer, address or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("invalid ed25519 public key {key}: {reason}")]
    InvalidPublicKey { key: String, reason: String },
    #[error("invalid node key seed: {reason}")]
    InvalidSeed { reason: String },
    #[error("invalid p2p setting {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot build the libp2p transport: {reason}")]
    Transport { reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("invalid peer id {value:?}: {reason}")]
    InvalidPeerId { value: String, reason: String },
    #[error("invalid multiaddr {value:?}: {reason}")]
    InvalidAddr { value: String, reason: String },
    #[error("peer {peer} is not in the allow list")]
    NotAllowed { peer: PeerId },
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: PeerId, reason: String },
    #[error("request to peer {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    #[error("request to peer {peer} timed out after {after_ms} ms")]
    Timeout { peer: PeerId, after_ms: u64 },
    #[error("request to peer {peer} not sent: {max} requests already in flight")]
    Busy { peer: PeerId, max: u64 },
    #[error("the p2p task has stopped")]
    Stopped,
}

/// The libp2p identity of the node whose ed25519 public key is `public_key`: how the node
/// turns the validator and observer keys of the genesis into its allow list.
pub fn peer_id_of(public_key: &[u8; 32]) -> Result<PeerId, P2pError> {
    let key = identity::ed25519::PublicKey::try_from_bytes(public_key)
        .map_err(|e| P2pError::InvalidPublicKey { key: hex::encode(public_key), reason: e.to_string() })?;
    Ok(identity::PublicKey::from(key).to_peer_id())
}

/// Parses a Raft member's [`PeerInfo`]: its base58 peer id and, unless empty, its address.
pub fn parse_peer_info(peer: &PeerInfo) -> Result<(PeerId, Option<Multiaddr>), P2pError> {
    let peer_id = PeerId::from_str(&peer.peer_id)
        .map_err(|e| P2pError::InvalidPeerId { value: peer.peer_id.clone(), reason: e.to_string() })?;
    let addr = if peer.addr.is_empty() {
        None
    } else {
        let addr = Multiaddr::from_str(&peer.addr)
            .map_err(|e| P2pError::InvalidAddr { value: peer.addr.clone(), reason: e.to_string() })?;
        Some(addr)
    };
    Ok((peer_id, addr))
}

type WireConfig = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
>;

fn wire_config() -> WireConfig {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<DECODE_BYTES_MAX>()
}

/// The codec of [`PROTOCOL_NAME`]: each message is a length-prefixed bincode frame, refused
/// past its limit on both the writing and the reading side. Public so its limits can be
/// tested on raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct NodeCodec {
    request_bytes_max: u64,
    response_bytes_max: u64,
}

impl Default for NodeCodec {
    fn default() -> Self {
        NodeCodec { request_bytes_max: REQUEST_BYTES_MAX, response_bytes_max: RESPONSE_BYTES_MAX }
    }
}

impl NodeCodec {
    /// A codec with other limits, each at most [`REQUEST_BYTES_MAX`].
    pub fn new(request_bytes_max: u64, response_bytes_max: u64) -> Self {
        assert!(
            request_bytes_max <= REQUEST_BYTES_MAX && response_bytes_max <= REQUEST_BYTES_MAX,
            "codec limits {request_bytes_max} / {response_bytes_max} bytes are over {REQUEST_BYTES_MAX} bytes"
        );
        NodeCodec { request_bytes_max, response_bytes_max }
    }
}

fn invalid_data(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// `value` as one frame, header and body, refused past `max` bytes of body.
fn encode_frame<V: Serialize>(what: &str, max: u64, value: &V) -> io::Result<Vec<u8>> {
    let mut frame = vec![0; FRAME_HEADER_BYTES];
    bincode::serde::encode_into_std_write(value, &mut frame, wire_config())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("cannot encode {what}: {e}")))?;
    let len = (frame.len() - FRAME_HEADER_BYTES) as u64;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} of {len} bytes is over the limit of {max} bytes"),
        ));
    }
    // Checked against `max`, which is at most u32::MAX (see the assertion on the limits).
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Writes a frame in one write, so it leaves in as few Yamux and Noise frames as it can.
async fn write_frame<T, V>(io: &mut T, what: &str, max: u64, value: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: Serialize,
{
    let frame = encode_frame(what, max, value)?;
    io.write_all(&frame).await?;
    io.flush().await
}

async fn read_frame<T, V>(io: &mut T, what: &str, max: u64) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: serde::de::DeserializeOwned,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    io.read_exact(&mut header).await?;
    let len = u64::from(u32::from_be_bytes(header));
    if len > max {
        return Err(invalid_data(format!("{what} of {len} bytes is over the limit of {max} bytes")));
    }
    let mut body = Vec::with_capacity(len.min(FRAME_PREALLOC_BYTES_MAX) as usize);
    (&mut *io).take(len).read_to_end(&mut body).await?;
    if body.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what} ended after {} of {len} bytes", body.len()),
        ));
    }
    let (value, read) = bincode::serde::decode_from_slice(&body, wire_config())
        .map_err(|e| invalid_data(format!("malformed {what}: {e}")))?;
    if read != body.len() {
        return Err(invalid_data(format!("{what} has {} trailing bytes", body.len() - read)));
    }
    Ok(value)
}

impl request_response::Codec for NodeCodec {
    type Protocol = StreamProtocol;
    type Request = NodeRequest;
    type Response = NodeResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<NodeRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, "request", self.request_bytes_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<NodeResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, "response", self.response_bytes_max).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: NodeRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, "request", self.request_bytes_max, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: NodeResponse) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, "response", self.response_bytes_max, &res).await
    }
}

/// Networking settings of one node.
#[derive(Clone)]
pub struct P2pConfig {
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/7000` (port 0 picks one; see
    /// [`P2p::listen_addrs`]).
    pub listen: Multiaddr,
    /// The node's ed25519 secret key seed: its libp2p identity.
    pub node_key_seed: [u8; 32],
    /// Identities that may connect, in either direction.
    pub allowed: Vec<PeerId>,
    /// Peers to dial at start and to dial again, with backoff, whenever the connection
    /// drops.
    pub peers: Vec<(PeerId, Multiaddr)>,
    /// Time for one request, from sending it to its reply.
    pub request_timeout: Duration,
    /// Time to establish a connection (TCP, Noise, Yamux).
    pub connect_timeout: Duration,
    /// Time a connection with no open stream is kept.
    pub idle_timeout: Duration,
    pub redial_backoff_min: Duration,
    pub redial_backoff_max: Duration,
    /// Largest request this node sends or accepts, at most [`REQUEST_BYTES_MAX`].
    pub request_bytes_max: u64,
    /// Largest response this node sends or accepts, at most [`REQUEST_BYTES_MAX`].
    pub response_bytes_max: u64,
}

/// The named defaults, an empty allow list and no peers to dial, with placeholders for the
/// two settings that have no default: `listen` (every interface, any port) and
/// `node_key_seed` (all zero, which [`P2p::start`] refuses, so a node cannot start with a
/// well-known identity by omission).
impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: Multiaddr::empty()
                .with(libp2p::multiaddr::Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED))
                .with(libp2p::multiaddr::Protocol::Tcp(0)),
            node_key_seed: [0; 32],
            allowed: Vec::new(),
            peers: Vec::new(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            redial_backoff_min: REDIAL_BACKOFF_MIN_DEFAULT,
            redial_backoff_max: REDIAL_BACKOFF_MAX_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX,
            response_bytes_max: RESPONSE_BYTES_MAX,
        }
    }
}

impl P2pConfig {
    /// The defaults, listening on `listen` with identity `node_key_seed`.
    pub fn new(listen: Multiaddr, node_key_seed: [u8; 32]) -> Self {
        P2pConfig { listen, node_key_seed, ..P2pConfig::default() }
    }

    fn check(&self) -> Result<(), P2pError> {
        if self.node_key_seed == [0; 32] {
            return Err(P2pError::InvalidSeed { reason: "all zero: node_key_seed is not set".into() });
        }
        for (field, value) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("redial_backoff_min", self.redial_backoff_min),
        ] {
            if value.is_zero() {
                return Err(P2pError::Config { field, reason: "must be above zero".into() });
            }
        }
        if self.redial_backoff_min > self.redial_backoff_max {
            return Err(P2pError::Config {
                field: "redial_backoff_max",
                reason: format!(
                    "{:?} is below redial_backoff_min {:?}",
                    self.redial_backoff_max, self.redial_backoff_min
                ),
            });
        }
        for (field, value) in
            [("request_bytes_max", self.request_bytes_max), ("response_bytes_max", self.response_bytes_max)]
        {
            if value == 0 || value > REQUEST_BYTES_MAX {
                return Err(P2pError::Config {
                    field,
                    reason: format!("{value} bytes is not within 1..={REQUEST_BYTES_MAX} bytes"),
                });
            }
        }
        Ok(())
    }
}

// The seed is a secret: never print it.
impl fmt::Debug for P2pConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pConfig")
            .field("listen", &self.listen)
            .field("node_key_seed", &"<secret>")
            .field("allowed", &self.allowed)
            .field("peers", &self.peers)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("redial_backoff_min", &self.redial_backoff_min)
            .field("redial_backoff_max", &self.redial_backoff_max)
            .field("request_bytes_max", &self.request_bytes_max)
            .field("response_bytes_max", &self.response_bytes_max)
            .finish()
    }
}

/// A request from a peer, for the node to answer through `reply`. Dropping `reply` answers
/// [`NodeResponse::Refused`]; so does not answering within the request timeout.
#[derive(Debug)]
pub struct Inbound {
    pub from: PeerId,
    pub request: NodeRequest,
    pub reply: oneshot::Sender<NodeResponse>,
}

#[allow(clippy::large_enum_variant, reason = "requests are most commands; the queue is bounded")]
enum Command {
    Request {
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: NodeRequest,
        reply: oneshot::Sender<Result<NodeResponse, P2pError>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    SetAllowed {
        peers: Vec<PeerId>,
        /// Peers to keep dialled, beside the configured ones; `None` leaves them as they are.
        dial: Option<Vec<(PeerId, Multiaddr)>>,
        done: oneshot::Sender<()>,
    },
    IdentifiedAddrs {
        reply: oneshot::Sender<HashMap<PeerId, Multiaddr>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// A handle on the running network task. Cheap to clone; the task stops on
/// [`P2p::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct P2p {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    /// Longest a request may take end to end: connecting, then the request itself.
    request_deadline: Duration,
    streams: Arc<Streams>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so a refused peer is turned away before any other behaviour sets up a handler.
    allow: allow_block_list::Behaviour<AllowedPeers>,
    rpc: request_response::Behaviour<NodeCodec>,
    streams: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
}

impl P2p {
    /// Builds the swarm, starts listening on `cfg.listen` and spawns the task that owns it.
    /// Returns once the listener is bound. Requests from peers are delivered on `inbound`.
    pub async fn start(cfg: P2pConfig, inbound: mpsc::Sender<Inbound>) -> Result<(P2p, JoinHandle<()>), P2pError> {
        cfg.check()?;
        // `ed25519_from_bytes` wipes the bytes it is given: hand it a copy.
        let keypair = identity::Keypair::ed25519_from_bytes(cfg.node_key_seed)
            .map_err(|e| P2pError::InvalidSeed { reason: e.to_string() })?;
        let local_peer_id = keypair.public().to_peer_id();

        let mut allow = allow_block_list::Behaviour::<AllowedPeers>::default();
        for peer in &cfg.allowed {
            allow.allow_peer(*peer);
        }
        let rpc = request_response::Behaviour::with_codec(
            NodeCodec { request_bytes_max: cfg.request_bytes_max, response_bytes_max: cfg.response_bytes_max },
            [(PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout)
                .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX),
        );
        let identify =
            identify::Behaviour::new(identify::Config::new(IDENTIFY_PROTOCOL_NAME.to_string(), keypair.public()));
        let streams = libp2p_stream::Behaviour::new();
        let mut control = streams.new_control();
        let incoming = control.accept(STREAM_PROTOCOL).expect("a new behaviour has no protocol registered");
        let behaviour = Behaviour { allow, rpc, streams, identify };
        let idle_timeout = cfg.idle_timeout;
        let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .map_err(|e| P2pError::Transport { reason: e.to_string() })?
            .with_behaviour(|_| behaviour);
        let mut swarm = builder
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
            .with_connection_timeout(cfg.connect_timeout)
            .build();

        swarm
            .listen_on(cfg.listen.clone())
            .map_err(|e| P2pError::Listen { addr: cfg.listen.clone(), reason: e.to_string() })?;
        let first = wait_listening(&mut swarm, &cfg.listen).await?;
        info!(peer = %local_peer_id, addr = %first, "p2p listening");

        let limits = NodeCodec { request_bytes_max: cfg.request_bytes_max, response_bytes_max: cfg.response_bytes_max };
        let streams = Arc::new(Streams { control, peers: Mutex::new(HashMap::new()), limits });
        let (stop_streams, streams_stopped) = oneshot::channel();
        tokio::spawn(accept_streams(incoming, inbound.clone(), limits, cfg.request_timeout, streams_stopped));
        let (listen_tx, listen_rx) = watch::channel(vec![first]);
        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let now = Instant::now();
        let redial = cfg
            .peers
            .iter()
            .filter(|(peer, _)| *peer != local_peer_id)
            .map(|(peer, addr)| (*peer, Redial::new(addr.clone(), cfg.redial_backoff_min, now)))
            .collect();
        let task = Task {
            swarm,
            commands: command_rx,
            inbound,
            outbound: HashMap::new(),
            replies: FuturesUnordered::new(),
            configured: cfg.peers.iter().map(|(peer, _)| *peer).collect(),
            redial,
            dial_errors: HashMap::new(),
            remote_addrs: HashMap::new(),
            identified: HashMap::new(),
            listen_addrs: listen_tx,
            request_timeout: cfg.request_timeout,
            backoff_min: cfg.redial_backoff_min,
            backoff_max: cfg.redial_backoff_max,
            streams: streams.clone(),
            _stop_streams: stop_streams,
        };
        let handle = tokio::spawn(task.run());
        let p2p = P2p {
            commands: command_tx,
            local_peer_id,
            listen_addrs: listen_rx,
            request_deadline: cfg.connect_timeout + cfg.request_timeout,
            streams,
        };
        Ok((p2p, handle))
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The addresses the node listens on, with the port the system chose for port 0.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.borrow().clone()
    }

    /// Sends `request` to `peer` and waits for its response: on a request stream if
    /// connected, otherwise through the swarm task, dialling `addr` (or the configured
    /// address of `peer`).
    pub async fn request(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: NodeRequest,
    ) -> Result<NodeResponse, P2pError> {
        if self.commands.is_closed() {
            return Err(P2pError::Stopped);
        }
        let deadline = Instant::now() + self.request_deadline;
        let timed_out = || P2pError::Timeout { peer, after_ms: millis(self.request_deadline) };
        match tokio::time::timeout_at(deadline, self.streams.request(peer, &request)).await {
            Ok(Some(result)) => return result,
            Ok(None) => {}
            Err(_) => return Err(timed_out()),
        }
        let (reply, response) = oneshot::channel();
        self.commands.send(Command::Request { peer, addr, request, reply }).await.map_err(|_| P2pError::Stopped)?;
        match tokio::time::timeout_at(deadline, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(P2pError::Stopped),
            Err(_) => Err(timed_out()),
        }
    }

    /// Idle request streams this node holds to `peer` (see `Streams`), for tests and
    /// diagnostics: 0 when not connected.
    pub fn idle_streams(&self, peer: &PeerId) -> usize {
        self.streams.peers().get(peer).map_or(0, |p| p.idle.len())
    }

    /// Peers with at least one open connection; empty once stopped.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (reply, peers) = oneshot::channel();
        if self.commands.send(Command::ConnectedPeers { reply }).await.is_err() {
            return Vec::new();
        }
        peers.await.unwrap_or_default()
    }

    /// Replaces the allow list, closing the connections of peers no longer in it. Returns
    /// once the new list is in force.
    pub async fn set_allowed(&self, peers: Vec<PeerId>) {
        self.set_allowed_and_dial(peers, None).await
    }

    /// Replaces the allow list (as [`P2p::set_allowed`]) and the peers dialled beside the
    /// configured ones: each of `dial` is dialled until connected and again whenever its
    /// connection drops; a peer dropped from `dial` (and not configured) is no longer.
    pub async fn set_members(&self, allowed: Vec<PeerId>, dial: Vec<(PeerId, Multiaddr)>) {
        self.set_allowed_and_dial(allowed, Some(dial)).await
    }

    async fn set_allowed_and_dial(&self, peers: Vec<PeerId>, dial: Option<Vec<(PeerId, Multiaddr)>>) {
        let (done, applied) = oneshot::channel();
        if self.commands.send(Command::SetAllowed { peers, dial, done }).await.is_ok() {
            // An error means the task stopped: no list is in force any more.
            let _ = applied.await;
        }
    }

    /// The listen address each connected (or once connected) peer announced through
    /// identify, for peers still allowed; empty once stopped.
    pub async fn identified_addrs(&self) -> HashMap<PeerId, Multiaddr> {
        let (reply, addrs) = oneshot::channel();
        if self.commands.send(Command::IdentifiedAddrs { reply }).await.is_err() {
            return HashMap::new();
        }
        addrs.await.unwrap_or_default()
    }

    /// Stops the network task, closing every connection; returns once it has. Requests in
    /// flight fail with [`P2pError::Stopped`].
    pub async fn shutdown(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            // An error means the task already stopped.
            let _ = stopped.await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Polls a fresh swarm until its listener reports an address; nothing else can happen yet
/// (no dial has been made), so no event is lost.
async fn wait_listening(swarm: &mut Swarm<Behaviour>, listen: &Multiaddr) -> Result<Multiaddr, P2pError> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some()).await.map_err(|_| {
            P2pError::Listen { addr: listen.clone(), reason: format!("no address after {} ms", millis(LISTEN_TIMEOUT)) }
        })?;
        match event {
            SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
            SwarmEvent::ListenerClosed { reason, .. } => {
                let reason = match reason {
                    Ok(()) => "listener closed".to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(P2pError::Listen { addr: listen.clone(), reason });
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(P2pError::Listen { addr: listen.clone(), reason: error.to_string() });
            }
            other => debug!(event = ?other, "p2p event before listening"),
        }
    }
}

/// Dial state of a peer kept connected.
struct Redial {
    addr: Multiaddr,
    /// Wait before the next dial after a failure.
    backoff: Duration,
    /// When to dial next; `None` while connected or while a dial is under way.
    due: Option<Instant>,
    /// When the current connection was established.
    since: Option<Instant>,
}

impl Redial {
    fn new(addr: Multiaddr, backoff: Duration, due: Instant) -> Self {
        Redial { addr, backoff, due: Some(due), since: None }
    }
}

type Reply = (ResponseChannel<NodeResponse>, PeerId, NodeResponse);

struct Pending {
    peer: PeerId,
    reply: oneshot::Sender<Result<NodeResponse, P2pError>>,
}

/// The owner of the swarm.
struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    outbound: HashMap<OutboundRequestId, Pending>,
    /// The node's answers to inbound requests, each bounded by the request timeout.
    replies: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// Peers named in the config: always dialled.
    configured: HashSet<PeerId>,
    /// Peers kept connected: the configured ones and those [`P2p::set_members`] adds.
    redial: HashMap<PeerId, Redial>,
    /// Why the last dial of a peer failed, to explain the requests that fail with it. Only
    /// allowed or configured peers are dialled, which bounds it.
    dial_errors: HashMap<PeerId, String>,
    /// The remote address of each connected peer's latest connection.
    remote_addrs: HashMap<PeerId, Multiaddr>,
    /// Listen addresses announced through identify, one per allowed peer.
    identified: HashMap<PeerId, Multiaddr>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    request_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    /// Told which peers are connected, for the request streams.
    streams: Arc<Streams>,
    /// Dropped with the task, which stops taking request streams from peers.
    _stop_streams: oneshot::Sender<()>,
}

impl Task {
    async fn run(mut self) {
        let stopped = loop {
            let next_dial = self.redial.values().filter_map(|r| r.due).min();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => break Some(done),
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can use the network any more.
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                Some((channel, peer, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    if self.swarm.behaviour_mut().rpc.send_response(channel, response).is_err() {
                        debug!(%peer, "answer dropped: the request timed out or its connection closed");
                    }
                }
                () = sleep_until(next_dial), if next_dial.is_some() => self.dial_due(),
            }
        };
        // Dropping the swarm closes every connection; requests in flight see their reply
        // senders dropped.
        drop(self);
        info!("p2p stopped");
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request { peer, addr, request, reply } => self.send_request(peer, addr, request, reply),
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::SetAllowed { peers, dial, done } => {
                self.set_allowed(peers);
                if let Some(dial) = dial {
                    self.set_dial(dial);
                }
                let _ = done.send(());
            }
            Command::IdentifiedAddrs { reply } => {
                let _ = reply.send(self.identified.clone());
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn send_request(
        &mut self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: NodeRequest,
        reply: oneshot::Sender<Result<NodeResponse, P2pError>>,
    ) {
        if self.outbound.len() >= OUTBOUND_PENDING_MAX {
            let _ = reply.send(Err(P2pError::Busy { peer, max: OUTBOUND_PENDING_MAX as u64 }));
            return;
        }
        // Refuse here, with a clear error, what the allow list would refuse as a dial failure.
        if !self.swarm.behaviour().allow.allowed_peers().contains(&peer) {
            let _ = reply.send(Err(P2pError::NotAllowed { peer }));
            return;
        }
        // libp2p forgets an address whose dial failed; the configured and the announced
        // ones stay usable.
        let mut addrs: Vec<Multiaddr> = addr.into_iter().collect();
        for known in [self.redial.get(&peer).map(|r| &r.addr), self.identified.get(&peer)].into_iter().flatten() {
            if !addrs.contains(known) {
                addrs.push(known.clone());
            }
        }
        let id = self.swarm.behaviour_mut().rpc.send_request_with_addresses(&peer, request, addrs);
        self.outbound.insert(id, Pending { peer, reply });
    }

    fn set_allowed(&mut self, peers: Vec<PeerId>) {
        let new: HashSet<PeerId> = peers.into_iter().collect();
        let allow = &mut self.swarm.behaviour_mut().allow;
        let old: Vec<PeerId> = allow.allowed_peers().iter().copied().collect();
        for peer in old.iter().filter(|p| !new.contains(p)) {
            // Also closes its connections.
            allow.disallow_peer(*peer);
            self.identified.remove(peer);
            self.remote_addrs.remove(peer);
            if !self.configured.contains(peer) {
                self.redial.remove(peer);
            }
            info!(%peer, "peer removed from the allow list");
        }
        for peer in new {
            if allow.allow_peer(peer) {
                info!(%peer, "peer added to the allow list");
            }
        }
    }

    /// Keeps `dial` dialled beside the configured peers; forgets the others it added.
    fn set_dial(&mut self, dial: Vec<(PeerId, Multiaddr)>) {
        let local = *self.swarm.local_peer_id();
        let wanted: HashMap<PeerId, Multiaddr> = dial.into_iter().filter(|(p, _)| *p != local).collect();
        let configured = &self.configured;
        self.redial.retain(|peer, _| configured.contains(peer) || wanted.contains_key(peer));
        let now = Instant::now();
        for (peer, addr) in wanted {
            if self.configured.contains(&peer) {
                continue;
            }
            match self.redial.get_mut(&peer) {
                Some(r) => r.addr = addr,
                None => {
                    debug!(%peer, %addr, "keeping a member dialled");
                    let mut r = Redial::new(addr, self.backoff_min, now);
                    if self.swarm.is_connected(&peer) {
                        (r.due, r.since) = (None, Some(now));
                    }
                    self.redial.insert(peer, r);
                }
            }
        }
    }

    /// Keeps the listen address a peer announced, preferring one on the address the peer
    /// reached us from (a node listening on every interface announces them all).
    fn on_identified(&mut self, peer: PeerId, listen_addrs: Vec<Multiaddr>) {
        use libp2p::multiaddr::Protocol;
        let ip_of = |a: &Multiaddr| {
            a.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            })
        };
        let usable: Vec<&Multiaddr> =
            listen_addrs.iter().filter(|a| ip_of(a).is_some_and(|ip| !ip.is_unspecified())).collect();
        let remote_ip = self.remote_addrs.get(&peer).and_then(ip_of);
        let chosen = usable.iter().find(|a| ip_of(a) == remote_ip).or(usable.first());
        if let Some(addr) = chosen {
            if self.identified.get(&peer) != Some(*addr) {
                debug!(%peer, %addr, "peer announced its listen address");
            }
            self.identified.insert(peer, (*addr).clone());
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc(event),
            SwarmEvent::Behaviour(BehaviourEvent::Allow(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Streams(())) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                if let identify::Event::Received { peer_id, info, .. } = event {
                    self.on_identified(peer_id, info.listen_addrs);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.streams.connected(peer_id);
                self.remote_addrs.insert(peer_id, endpoint.get_remote_address().clone());
                self.dial_errors.remove(&peer_id);
                if let Some(r) = self.redial.get_mut(&peer_id) {
                    r.due = None;
                    r.since.get_or_insert_with(Instant::now);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                if num_established == 0 {
                    self.streams.disconnected(&peer_id);
                }
                if num_established == 0
                    && let Some(r) = self.redial.get_mut(&peer_id)
                {
                    // A connection that lasted resets the backoff; one that keeps dropping
                    // at once (the peer refuses us) keeps backing off.
                    if r.since.take().is_some_and(|since| since.elapsed() >= self.backoff_max) {
                        r.backoff = self.backoff_min;
                    }
                    schedule(r, self.backoff_max);
                }
            }
            SwarmEvent::IncomingConnectionError { error, send_back_addr, peer_id, .. } => match error {
                ListenError::Denied { cause } => {
                    warn!(peer = ?peer_id, addr = %send_back_addr, "refused an inbound connection: {}", denial(&cause));
                }
                other => debug!(peer = ?peer_id, addr = %send_back_addr, "inbound connection failed: {other}"),
            },
            SwarmEvent::OutgoingConnectionError { error, peer_id, .. } => {
                match &error {
                    DialError::Denied { cause } => {
                        warn!(peer = ?peer_id, "refused an outbound connection: {}", denial(cause));
                    }
                    DialError::WrongPeerId { obtained, address } => {
                        warn!(peer = ?peer_id, %obtained, %address, "dialled address belongs to another identity");
                    }
                    other => debug!(peer = ?peer_id, "dial failed: {other}"),
                }
                if let Some(peer) = peer_id {
                    self.dial_errors.insert(peer, error.to_string());
                }
                if let Some(r) = peer_id.and_then(|p| self.redial.get_mut(&p))
                    && r.due.is_none()
                    && r.since.is_none()
                {
                    schedule(r, self.backoff_max);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "p2p listening");
                self.listen_addrs.send_modify(|addrs| {
                    if !addrs.contains(&address) {
                        addrs.push(address);
                    }
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.send_modify(|addrs| addrs.retain(|a| *a != address));
            }
            SwarmEvent::ListenerClosed { addresses, reason, .. } => {
                warn!(?addresses, ?reason, "p2p listener closed");
                self.listen_addrs.send_modify(|addrs| addrs.retain(|a| !addresses.contains(a)));
            }
            SwarmEvent::ListenerError { error, .. } => warn!("p2p listener error: {error}"),
            other => debug!(event = ?other, "p2p event"),
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<NodeRequest, NodeResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                self.on_inbound(peer, request, channel);
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(pending) = self.outbound.remove(&request_id) {
                    let _ = pending.reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                let Some(pending) = self.outbound.remove(&request_id) else { return };
                debug_assert_eq!(pending.peer, peer);
                let error = match error {
                    OutboundFailure::DialFailure => {
                        let reason = self.dial_errors.get(&peer).cloned().unwrap_or_else(|| "cannot connect".into());
                        P2pError::Unreachable { peer, reason }
                    }
                    OutboundFailure::Timeout => P2pError::Timeout { peer, after_ms: millis(self.request_timeout) },
                    OutboundFailure::ConnectionClosed => {
                        P2pError::Request { peer, reason: "connection closed before the reply".into() }
                    }
                    OutboundFailure::UnsupportedProtocols => {
                        P2pError::Request { peer, reason: format!("peer does not speak {PROTOCOL_NAME}") }
                    }
                    OutboundFailure::Io(e) => P2pError::Request { peer, reason: e.to_string() },
                };
                let _ = pending.reply.send(Err(error));
            }
            Event::InboundFailure { peer, error, .. } => {
                // A malformed or oversized request is refused here; the peer sees its
                // stream close.
                warn!(%peer, "inbound request failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(&mut self, from: PeerId, request: NodeRequest, channel: ResponseChannel<NodeResponse>) {
        let refuse = |task: &mut Task, channel, reason: &str| {
            if task.swarm.behaviour_mut().rpc.send_response(channel, NodeResponse::Refused(reason.into())).is_err() {
                debug!(peer = %from, "refusal dropped: the connection closed");
            }
        };
        if self.replies.len() >= INBOUND_PENDING_MAX {
            warn!(peer = %from, "refused a request: {INBOUND_PENDING_MAX} requests already await the node");
            return refuse(self, channel, "busy");
        }
        match hand_to_node(&self.inbound, from, request) {
            Ok(answer) => {
                let timeout = self.request_timeout;
                self.replies.push(async move { (channel, from, node_answer(answer, timeout).await) }.boxed());
            }
            Err(refusal) => refuse(self, channel, refusal),
        }
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        for (peer, r) in &mut self.redial {
            if r.due.is_none_or(|due| due > now) {
                continue;
            }
            r.due = None;
            if self.swarm.is_connected(peer) {
                continue;
            }
            let opts = DialOpts::peer_id(*peer)
                .addresses(vec![r.addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => debug!(%peer, addr = %r.addr, "dialling"),
                // A dial is already under way; its outcome schedules the next one.
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    debug!(%peer, addr = %r.addr, "cannot dial: {e}");
                    schedule(r, self.backoff_max);
                }
            }
        }
    }
}

/// Why a connection was denied: the allow list's own message ("peer ... is not in the allow
/// list") rather than libp2p's generic "connection denied".
fn denial(cause: &ConnectionDenied) -> String {
    match std::error::Error::source(cause) {
        Some(inner) => inner.to_string(),
        None => cause.to_string(),
    }
}

fn schedule(r: &mut Redial, backoff_max: Duration) {
    r.due = Some(Instant::now() + r.backoff);
    r.backoff = (r.backoff * 2).min(backoff_max);
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Hands a peer's request to the node; the receiver gets the node's answer. Refused with a
/// reason for the peer when the node's queue is full or the node is stopping.
fn hand_to_node(
    inbound: &mpsc::Sender<Inbound>,
    from: PeerId,
    request: NodeRequest,
) -> Result<oneshot::Receiver<NodeResponse>, &'static str> {
    let (reply, answer) = oneshot::channel();
    match inbound.try_send(Inbound { from, request, reply }) {
        Ok(()) => Ok(answer),
        Err(mpsc::error::TrySendError::Full(_)) => {
            warn!(peer = %from, "refused a request: the node's inbound queue is full");
            Err("busy")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err("shutting down"),
    }
}

/// The node's answer to a request [`hand_to_node`] passed on; refused as "no answer" if the
/// node dropped it or took longer than `timeout`.
async fn node_answer(answer: oneshot::Receiver<NodeResponse>, timeout: Duration) -> NodeResponse {
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(response)) => response,
        _ => NodeResponse::Refused("no answer".into()),
    }
}

/// The request streams of [`STREAM_PROTOCOL_NAME`], this node's side: streams it opened
/// to connected peers and keeps for its next requests.
///
/// A stream carries one request at a time: the caller takes an idle stream (or opens one),
/// writes its request, reads the response and puts the stream back. Requests in flight to
/// one peer at once each have their own stream, so a snapshot chunk never holds up an
/// append. A stream that failed, or whose request timed out, is dropped, never reused: its
/// next bytes could be the answer to the abandoned request.
struct Streams {
    control: libp2p_stream::Control,
    /// Connected peers (kept by the swarm task), each with its idle streams.
    peers: Mutex<HashMap<PeerId, PeerStreams>>,
    limits: NodeCodec,
}

#[derive(Default)]
struct PeerStreams {
    idle: Vec<libp2p::Stream>,
    /// The peer refused the protocol on this connection: use request-response.
    unsupported: bool,
}

impl Streams {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, PeerStreams>> {
        // Only plain field updates happen under the lock: a panic cannot leave it half done.
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connected(&self, peer: PeerId) {
        self.peers().entry(peer).or_default();
    }

    fn disconnected(&self, peer: &PeerId) {
        self.peers().remove(peer);
    }

    /// An idle stream to `peer`; `Err` if the peer is not connected or does not speak the
    /// protocol.
    fn take_idle(&self, peer: &PeerId) -> Result<Option<libp2p::Stream>, ()> {
        match self.peers().get_mut(peer) {
            Some(p) if !p.unsupported => Ok(p.idle.pop()),
            _ => Err(()),
        }
    }

    fn put_idle(&self, peer: PeerId, stream: libp2p::Stream) {
        if let Some(p) = self.peers().get_mut(&peer)
            && p.idle.len() < IDLE_STREAMS_PER_PEER_MAX
        {
            p.idle.push(stream);
        }
    }

    fn mark_unsupported(&self, peer: &PeerId) {
        if let Some(p) = self.peers().get_mut(peer) {
            p.unsupported = true;
            p.idle.clear();
        }
    }

    /// Sends `request` on a stream and reads its response. `None` when the stream path
    /// cannot carry it (not connected, the protocol refused, no stream opened, or the new
    /// stream failed): the caller then sends it by request-response. Sending a request twice
    /// is safe — Raft RPCs are idempotent, a forwarded record already taken is answered with
    /// its receipt, a checkpoint signature is stored once.
    async fn request(&self, peer: PeerId, request: &NodeRequest) -> Option<Result<NodeResponse, P2pError>> {
        let frame = match encode_frame("request", self.limits.request_bytes_max, request) {
            Ok(frame) => frame,
            Err(e) => return Some(Err(P2pError::Request { peer, reason: e.to_string() })),
        };
        loop {
            let idle = self.take_idle(&peer).ok()?;
            let reused = idle.is_some();
            let mut stream = match idle {
                Some(stream) => stream,
                None => match self.control.clone().open_stream(peer, STREAM_PROTOCOL).await {
                    Ok(stream) => stream,
                    Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                        debug!(%peer, "peer does not speak {STREAM_PROTOCOL_NAME}: requests go one stream each");
                        self.mark_unsupported(&peer);
                        return None;
                    }
                    Err(e) => {
                        debug!(%peer, "no request stream: {e}");
                        return None;
                    }
                },
            };
            match self.exchange(&mut stream, &frame).await {
                Ok(response) => {
                    self.put_idle(peer, stream);
                    return Some(Ok(response));
                }
                // An idle stream may have closed since its last use (its peer ended it, or
                // the connection is going): try the next.
                Err(e) if reused => debug!(%peer, "idle request stream failed: {e}"),
                // A new stream can be dropped before it is served: libp2p-stream hands
                // inbound streams over a channel with no room for a second one arriving at
                // the same moment.
                Err(e) => {
                    debug!(%peer, "new request stream failed: {e}");
                    return None;
                }
            }
        }
    }

    /// Writes a request frame on `stream` and reads the response frame.
    async fn exchange(&self, stream: &mut libp2p::Stream, frame: &[u8]) -> io::Result<NodeResponse> {
        stream.write_all(frame).await?;
        stream.flush().await?;
        read_frame(stream, "response", self.limits.response_bytes_max).await
    }
}

/// Takes the request streams peers open to this node, each served by a task of its own,
/// until `stop` resolves (the swarm task dropped its sender).
async fn accept_streams(
    mut incoming: libp2p_stream::IncomingStreams,
    inbound: mpsc::Sender<Inbound>,
    limits: NodeCodec,
    timeout: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let open = Arc::new(Semaphore::new(INBOUND_STREAMS_MAX));
    loop {
        let (peer, stream) = tokio::select! {
            _ = &mut stop => return,
            next = incoming.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            warn!(%peer, "closed a request stream: {INBOUND_STREAMS_MAX} are open");
            continue;
        };
        let inbound = inbound.clone();
        tokio::spawn(async move {
            serve_stream(peer, stream, &inbound, limits, timeout).await;
            drop(permit);
        });
    }
}

/// Answers the requests of one stream from `from`, one after another, until the peer closes
/// it or breaks the protocol (a frame over the limit or malformed: the stream is closed).
async fn serve_stream(
    from: PeerId,
    mut stream: libp2p::Stream,
    inbound: &mpsc::Sender<Inbound>,
    limits: NodeCodec,
    timeout: Duration,
) {
    loop {
        let request = match read_frame(&mut stream, "request", limits.request_bytes_max).await {
            Ok(request) => request,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return debug!(peer = %from, "request stream closed"),
            Err(e) => return warn!(peer = %from, "inbound request failed: {e}"),
        };
        let response = match hand_to_node(inbound, from, request) {
            Ok(answer) => node_answer(answer, timeout).await,
            Err(refusal) => NodeResponse::Refused(refusal.into()),
        };
        if let Err(e) = write_frame(&mut stream, "response", limits.response_bytes_max, &response).await {
            return debug!(peer = %from, "cannot answer on a request stream: {e}");
        }
    }
}

/// [`RaftTransport`] over [`P2p`]: each Raft RPC is one [`NodeRequest::Raft`].
#[derive(Clone)]
pub struct P2pTransport {
    p2p: P2p,
}

impl P2pTransport {
    pub fn new(p2p: P2p) -> Self {
        P2pTransport { p2p }
    }
}

impl RaftTransport for P2pTransport {
    async fn call(&self, target: NodeId, peer: &PeerInfo, rpc: RaftRpc) -> Result<RaftRpcReply, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { target, reason };
        let failed = |reason: String| TransportError::Failed { target, reason };
        let (peer_id, addr) = parse_peer_info(peer).map_err(|e| unreachable(e.to_string()))?;
        match self.p2p.request(peer_id, addr, NodeRequest::Raft(rpc)).await {
            Ok(NodeResponse::Raft(reply)) => Ok(reply),
            Ok(NodeResponse::Refused(reason)) => Err(failed(format!("peer {peer_id} refused: {reason}"))),
            Ok(other) => Err(failed(format!("peer {peer_id} answered a raft rpc with {other:?}"))),
            // Not connected and cannot be: Raft backs off instead of retrying at once.
            Err(e @ (P2pError::Unreachable { .. } | P2pError::NotAllowed { .. } | P2pError::Stopped)) => {
                Err(unreachable(e.to_string()))
            }
            Err(e) => Err(failed(e.to_string())),
        }
    }
}

/// Answers a Raft RPC from a peer with the local node (through [`RpcServer`], which bounds
/// snapshots and holds elections off during an install).
pub async fn answer_raft(server: &RpcServer, rpc: RaftRpc) -> NodeResponse {
    NodeResponse::Raft(server.serve(rpc).await)
}
