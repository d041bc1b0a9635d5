//! The libp2p layer of the node on 127.0.0.1 with ports chosen at run time: requests and
//! replies (large ones too), requests sharing request streams (concurrent ones, and one
//! after a timeout), refusal of identities outside the allow list and its change
//! at run time, refusal of oversized frames without allocating them, and a three-node
//! Raft cluster replicating through `P2pTransport`. Waits poll with a generous deadline;
//! nothing is asserted about time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use libp2p::request_response::Codec;
use libp2p::{Multiaddr, PeerId};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veritrace_consensus::config::ProposeError;
use veritrace_consensus::testkit::MemMachine;
use veritrace_consensus::{ConsensusConfig, ConsensusRaft, MachineStore, NodeId, Payload, PeerInfo, RocksLogStore};
use veritrace_node::p2p::{
    IDLE_STREAMS_PER_PEER_MAX, Inbound, NodeCodec, NodeRequest, NodeResponse, P2p, P2pConfig, P2pError, P2pTransport,
    PROTOCOL, REQUEST_BYTES_MAX, answer_raft, peer_id_of,
};

/// Records the largest single allocation made by each thread, so a test can show that
/// reading a frame did not allocate what the peer claimed.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// How long any one wait may take before the test fails: far above what it needs, so a
/// loaded machine slows the test down instead of failing it.
const WAIT: Duration = Duration::from_secs(120);
/// Capacity of each node's inbound channel in these tests.
const INBOUND_QUEUE: usize = 64;

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn peer_of(n: u8) -> PeerId {
    let public = SigningKey::from_bytes(&seed(n)).verifying_key().to_bytes();
    peer_id_of(&public).expect("valid public key")
}

fn localhost() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")
}

struct Node {
    p2p: P2p,
    task: JoinHandle<()>,
    inbound: mpsc::Receiver<Inbound>,
}

impl Node {
    async fn addr(&self) -> Multiaddr {
        self.p2p.listen_addrs().await.into_iter().next().expect("a listen address")
    }

    async fn stop(self) {
        self.p2p.shutdown().await;
        self.task.await.expect("p2p task");
    }

    /// The node's inbound requests, for a server task; the node keeps a closed receiver.
    fn take_inbound(&mut self) -> mpsc::Receiver<Inbound> {
        std::mem::replace(&mut self.inbound, mpsc::channel(1).1)
    }
}

/// A node with identity `n` allowing identities `allowed`, with `edit` applied to its config.
async fn start_node(n: u8, allowed: &[u8], edit: impl FnOnce(&mut P2pConfig)) -> Node {
    let mut cfg = P2pConfig::new(localhost(), seed(n));
    cfg.allowed = allowed.iter().map(|a| peer_of(*a)).collect();
    cfg.request_timeout = Duration::from_secs(30);
    edit(&mut cfg);
    let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let (p2p, task) = P2p::start(cfg, tx).await.expect("start p2p");
    Node { p2p, task, inbound }
}

/// Answers every request on `inbound` with `answer` until the channel closes; returns how
/// many it answered.
fn serve(mut inbound: mpsc::Receiver<Inbound>, answer: fn(NodeRequest) -> NodeResponse) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut answered = 0;
        while let Some(Inbound { request, reply, .. }) = inbound.recv().await {
            let _ = reply.send(answer(request));
            answered += 1;
        }
        answered
    })
}

/// Echo: a forward comes back as the concatenation of its submissions.
fn echo(request: NodeRequest) -> NodeResponse {
    match request {
        NodeRequest::Forward(items) => NodeResponse::Forwarded(items.concat()),
        NodeRequest::Signature(_) => NodeResponse::Ack,
        NodeRequest::Raft(_) => NodeResponse::Refused("no raft here".into()),
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allowed_peers_exchange_requests_and_large_replies() {
    let a = start_node(1, &[2], |_| {}).await;
    let b = start_node(2, &[1], |_| {}).await;
    assert_eq!(a.p2p.local_peer_id(), peer_of(1), "identity is the ed25519 node key");
    assert_ne!(a.addr().await.to_string(), "/ip4/127.0.0.1/tcp/0", "the bound port is reported");
    // A node cannot start without its key by omission.
    let (tx, _rx) = mpsc::channel(1);
    let unset = P2p::start(P2pConfig::default(), tx).await.map(|_| ());
    assert!(matches!(unset, Err(P2pError::InvalidSeed { .. })), "got {unset:?}");

    let Node { p2p: a_p2p, task: a_task, inbound: a_inbound } = a;
    let Node { p2p: b_p2p, task: b_task, inbound: b_inbound } = b;
    let a_served = serve(a_inbound, echo);
    let b_served = serve(b_inbound, echo);
    let b_addr = b_p2p.listen_addrs().await[0].clone();

    let reply = a_p2p.request(peer_of(2), Some(b_addr), NodeRequest::Signature(b"sig".to_vec())).await;
    assert!(matches!(reply, Ok(NodeResponse::Ack)), "got {reply:?}");

    // 10 MiB in two submissions, with a pattern so a reordering or a cut would show.
    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (first, second) = big.split_at(4 * 1024 * 1024 + 7);
    let forward = NodeRequest::Forward(vec![first.to_vec(), second.to_vec()]);
    // Now connected: no address needed.
    match a_p2p.request(peer_of(2), None, forward).await {
        Ok(NodeResponse::Forwarded(echoed)) => assert!(echoed == big, "the 10 MiB payload came back changed"),
        other => panic!("unexpected reply {other:?}"),
    }

    // The other direction, over the connection a opened.
    let reply = b_p2p.request(peer_of(1), None, NodeRequest::Forward(vec![b"x".to_vec()])).await;
    assert!(matches!(&reply, Ok(NodeResponse::Forwarded(r)) if r == b"x"), "got {reply:?}");
    assert_eq!(a_p2p.connected_peers().await, vec![peer_of(2)]);

    a_p2p.shutdown().await;
    b_p2p.shutdown().await;
    a_task.await.expect("p2p task");
    b_task.await.expect("p2p task");
    assert_eq!(a_served.await.expect("server"), 1);
    assert_eq!(b_served.await.expect("server"), 2);
    // After shutdown a handle reports the stop instead of hanging.
    let after = a_p2p.request(peer_of(2), None, NodeRequest::Signature(Vec::new())).await;
    assert!(matches!(after, Err(P2pError::Stopped)), "got {after:?}");
}

/// Answers each forward on its own task after `delay(request)`, echoing it.
fn serve_delayed(mut inbound: mpsc::Receiver<Inbound>, delay: fn(&[u8]) -> Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Inbound { request, reply, .. }) = inbound.recv().await {
            tokio::spawn(async move {
                if let NodeRequest::Forward(items) = &request {
                    tokio::time::sleep(delay(&items.concat())).await;
                }
                let _ = reply.send(echo(request));
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_request_streams_each_get_their_own_answer() {
    // Two senders burst at one receiver at once: many new streams arrive together, which
    // libp2p-stream can drop before they are served (the sender then resends them by
    // request-response); every request must still get its own answer.
    let a = start_node(1, &[2], |_| {}).await;
    let c = start_node(3, &[2], |_| {}).await;
    let mut b = start_node(2, &[1, 3], |_| {}).await;
    let b_addr = b.addr().await;
    // Later requests are answered sooner: answers come back in another order than sent.
    let served = serve_delayed(b.take_inbound(), |payload| Duration::from_millis(u64::from(200 - payload[0])));
    for sender in [&a, &c] {
        let first = sender.p2p.request(peer_of(2), Some(b_addr.clone()), NodeRequest::Forward(vec![vec![0]])).await;
        assert!(matches!(&first, Ok(NodeResponse::Forwarded(r)) if r == &[0]), "got {first:?}");
    }

    for round in 0..3u8 {
        let requests = (1..=40u8).flat_map(|i| {
            [(&a, 1u8), (&c, 3u8)].map(|(sender, n)| {
                let p2p = sender.p2p.clone();
                let payload = vec![i, round, n];
                tokio::spawn(async move {
                    let reply = p2p.request(peer_of(2), None, NodeRequest::Forward(vec![payload.clone()])).await;
                    (payload, reply)
                })
            })
        });
        for request in requests.collect::<Vec<_>>() {
            let (payload, reply) = request.await.expect("request task");
            assert!(
                matches!(&reply, Ok(NodeResponse::Forwarded(r)) if r == &payload),
                "request {payload:?} got {reply:?}"
            );
        }
        // The streams came back for the next requests, up to the per-peer limit.
        for sender in [&a, &c] {
            let idle = sender.p2p.idle_streams(&peer_of(2));
            assert!((1..=IDLE_STREAMS_PER_PEER_MAX).contains(&idle), "{idle} idle streams after round {round}");
        }
    }
    // One request at a time reuses one stream: none is added.
    let idle = a.p2p.idle_streams(&peer_of(2));
    for i in 0..5u8 {
        let reply = a.p2p.request(peer_of(2), None, NodeRequest::Forward(vec![vec![100 + i]])).await;
        assert!(matches!(&reply, Ok(NodeResponse::Forwarded(r)) if r == &[100 + i]), "got {reply:?}");
    }
    assert_eq!(a.p2p.idle_streams(&peer_of(2)), idle);

    for node in [a, b, c] {
        node.stop().await;
    }
    served.await.expect("server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_leaves_no_answer_for_the_next_one() {
    let a = start_node(1, &[2], |cfg| {
        cfg.connect_timeout = Duration::from_millis(250);
        cfg.request_timeout = Duration::from_millis(250);
    })
    .await;
    let mut b = start_node(2, &[1], |_| {}).await;
    let b_addr = b.addr().await;
    // A payload starting with 1 is answered after 1.5 s, others at once.
    let served =
        serve_delayed(b.take_inbound(), |payload| Duration::from_millis(if payload[0] == 1 { 1500 } else { 0 }));

    // The first request connects (through request-response); the second opens a stream.
    for _ in 0..2 {
        let warm = a.p2p.request(peer_of(2), Some(b_addr.clone()), NodeRequest::Forward(vec![vec![0, 0]])).await;
        assert!(matches!(&warm, Ok(NodeResponse::Forwarded(r)) if r == &[0, 0]), "got {warm:?}");
    }
    assert_eq!(a.p2p.idle_streams(&peer_of(2)), 1);

    let slow = a.p2p.request(peer_of(2), None, NodeRequest::Forward(vec![vec![1, 1]])).await;
    assert!(matches!(slow, Err(P2pError::Timeout { .. })), "got {slow:?}");
    // The slow answer arrives on the abandoned stream while these run; none may take it.
    for i in 2..12u8 {
        let reply = a.p2p.request(peer_of(2), None, NodeRequest::Forward(vec![vec![i, i]])).await;
        assert!(matches!(&reply, Ok(NodeResponse::Forwarded(r)) if r == &[i, i]), "request {i} got {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    a.stop().await;
    b.stop().await;
    served.await.expect("server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outside_the_allow_list_cannot_connect() {
    let server = start_node(1, &[2], |_| {}).await;
    let member = start_node(2, &[1], |_| {}).await;
    // The intruder would talk to the server; the server does not know it.
    let intruder = start_node(3, &[1], |_| {}).await;
    let server_addr = server.addr().await;
    let Node { p2p: server_p2p, task: server_task, inbound: mut server_inbound } = server;

    let refused = intruder
        .p2p
        .request(peer_of(1), Some(server_addr.clone()), NodeRequest::Signature(b"let me in".to_vec()))
        .await;
    assert!(refused.is_err(), "the intruder got a reply: {refused:?}");
    assert!(server_inbound.try_recv().is_err(), "the intruder's request reached the node");
    assert!(!server_p2p.connected_peers().await.contains(&peer_of(3)), "the intruder holds a connection");

    // A member still gets through.
    let member_request =
        member.p2p.request(peer_of(1), Some(server_addr.clone()), NodeRequest::Signature(b"s".to_vec()));
    let served = async {
        let inbound = server_inbound.recv().await.expect("the member's request");
        assert_eq!(inbound.from, peer_of(2));
        inbound.reply.send(NodeResponse::Ack).expect("reply");
    };
    let (reply, ()) = tokio::join!(member_request, served);
    assert!(matches!(reply, Ok(NodeResponse::Ack)), "got {reply:?}");

    // Governance admits the third node: now it gets through.
    server_p2p.set_allowed(vec![peer_of(2), peer_of(3)]).await;
    let admitted = intruder.p2p.request(peer_of(1), Some(server_addr.clone()), NodeRequest::Signature(b"3".to_vec()));
    let served = async {
        let inbound = server_inbound.recv().await.expect("the admitted node's request");
        assert_eq!(inbound.from, peer_of(3));
        inbound.reply.send(NodeResponse::Ack).expect("reply");
    };
    let (reply, ()) = tokio::join!(admitted, served);
    assert!(matches!(reply, Ok(NodeResponse::Ack)), "got {reply:?}");

    // And removed again: its connection is closed and it is refused once more.
    server_p2p.set_allowed(vec![peer_of(2)]).await;
    wait_for("the removed node's connection to close", async || {
        !server_p2p.connected_peers().await.contains(&peer_of(3))
    })
    .await;
    let refused = intruder.p2p.request(peer_of(1), Some(server_addr), NodeRequest::Signature(b"again".to_vec())).await;
    assert!(refused.is_err(), "the removed node got a reply: {refused:?}");
    assert!(server_inbound.try_recv().is_err(), "the removed node's request reached the node");

    // Refused locally too: a node does not send to an identity outside its own list.
    let local = member.p2p.request(peer_of(3), None, NodeRequest::Signature(Vec::new())).await;
    assert!(matches!(local, Err(P2pError::NotAllowed { .. })), "got {local:?}");

    server_p2p.shutdown().await;
    server_task.await.expect("p2p task");
    member.stop().await;
    intruder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_unread() {
    const LIMIT: u64 = 1024 * 1024;
    let receiver = start_node(1, &[2], |cfg| cfg.request_bytes_max = LIMIT).await;
    let sender = start_node(2, &[1], |_| {}).await;
    let Node { p2p: receiver_p2p, task: receiver_task, inbound: mut receiver_inbound } = receiver;
    let receiver_addr = receiver_p2p.listen_addrs().await[0].clone();

    let oversized = NodeRequest::Forward(vec![vec![7; 2 * LIMIT as usize]]);
    let refused = sender.p2p.request(peer_of(1), Some(receiver_addr), oversized).await;
    assert!(refused.is_err(), "an oversized request got a reply: {refused:?}");
    assert!(receiver_inbound.try_recv().is_err(), "the oversized request reached the node");

    // The receiver still answers requests within its limit from the same peer.
    let fits = sender.p2p.request(peer_of(1), None, NodeRequest::Forward(vec![vec![7; 1024]]));
    let served = async {
        let inbound = receiver_inbound.recv().await.expect("the request that fits");
        inbound.reply.send(NodeResponse::Ack).expect("reply");
    };
    let (reply, ()) = tokio::join!(fits, served);
    assert!(matches!(reply, Ok(NodeResponse::Ack)), "got {reply:?}");

    receiver_p2p.shutdown().await;
    receiver_task.await.expect("p2p task");
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_peers_are_dialled_and_redialled_after_a_restart() {
    let b = start_node(2, &[1], |_| {}).await;
    let b_addr = b.addr().await;
    let a = start_node(1, &[2], |cfg| {
        cfg.peers = vec![(peer_of(2), b_addr.clone())];
        cfg.redial_backoff_min = Duration::from_millis(50);
        cfg.redial_backoff_max = Duration::from_millis(500);
    })
    .await;
    wait_for("a to dial b", async || a.p2p.connected_peers().await.contains(&peer_of(2))).await;

    // b goes away and comes back at the same address: a notices and dials again on its own.
    b.stop().await;
    wait_for("a to see b gone", async || a.p2p.connected_peers().await.is_empty()).await;
    let b = start_node(2, &[1], |cfg| cfg.listen = b_addr.clone()).await;
    wait_for("a to dial b again", async || a.p2p.connected_peers().await.contains(&peer_of(2))).await;

    a.stop().await;
    b.stop().await;
}

#[test]
fn a_frame_is_refused_on_its_header_and_never_allocated_on_its_claim() {
    futures::executor::block_on(async {
        let mut codec = NodeCodec::default();

        // A claim past the limit is refused before any of the body is read.
        let mut over = ((REQUEST_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        over.extend_from_slice(&[0; 16]);
        let error = codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(over)).await.expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
        assert!(error.to_string().contains("over the limit"), "{error}");

        // A claim at the limit followed by 1 KiB: the reader fails at the end of the bytes,
        // having allocated for what arrived, not for the 64 MiB claimed.
        let mut short = (REQUEST_BYTES_MAX as u32).to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 1024]);
        LARGEST.with(|l| l.set(0));
        let error = codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(short)).await.expect_err("short");
        let largest = LARGEST.with(Cell::get);
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
        assert!(largest < 1024 * 1024, "reading a short frame allocated {largest} bytes at once");

        // Well-formed bytes round-trip; trailing garbage inside a frame is refused.
        let mut bytes = Vec::new();
        codec.write_request(&PROTOCOL, &mut bytes, NodeRequest::Signature(b"abc".to_vec())).await.expect("write");
        let back = codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(bytes.clone())).await.expect("read");
        assert!(matches!(back, NodeRequest::Signature(m) if m == b"abc"));
        let mut padded = bytes.clone();
        padded.push(0);
        let len = u32::from_be_bytes(padded[..4].try_into().expect("4 bytes")) + 1;
        padded[..4].copy_from_slice(&len.to_be_bytes());
        let error = codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(padded)).await.expect_err("trailing");
        assert!(error.to_string().contains("trailing"), "{error}");

        // A writer refuses to send past its own limit.
        let mut small = NodeCodec::new(16, 16);
        let mut sink = Vec::new();
        let error = small
            .write_request(&PROTOCOL, &mut sink, NodeRequest::Forward(vec![vec![0; 64]]))
            .await
            .expect_err("too large to send");
        assert!(error.to_string().contains("over the limit of 16 bytes"), "{error}");
        assert!(sink.is_empty(), "nothing written");
    });
}

#[test]
fn peer_ids_come_from_ed25519_public_keys() {
    assert_ne!(peer_of(1), peer_of(2));
    assert_eq!(peer_of(1), peer_of(1));
    // About half of all 32-byte strings are no curve point; take the first such one.
    let bad = (0..=255u8)
        .map(|b| {
            let mut key = [0u8; 32];
            key[0] = b;
            key
        })
        .find(|key| ed25519_dalek::VerifyingKey::from_bytes(key).is_err())
        .expect("a 32-byte string that is no ed25519 point");
    let error = peer_id_of(&bad).expect_err("not a public key");
    assert!(error.to_string().contains(&hex::encode(bad)), "{error}");
}

/// Raft over libp2p: a node is a `P2p`, a Raft node using `P2pTransport`, and a task
/// answering the Raft requests that arrive.
struct RaftNode {
    raft: ConsensusRaft,
    machine: MemMachine,
    p2p: P2p,
    p2p_task: JoinHandle<()>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

fn raft_config() -> ConsensusConfig {
    ConsensusConfig {
        cluster_name: "p2p-test".into(),
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 800,
        election_timeout_max_ms: 1_600,
        ..ConsensusConfig::default()
    }
}

async fn start_raft_node(id: NodeId, all: &[u8]) -> RaftNode {
    let n = id as u8;
    let others: Vec<u8> = all.iter().copied().filter(|o| *o != n).collect();
    let Node { p2p, task: p2p_task, mut inbound } = start_node(n, &others, |_| {}).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = raft_config();
    let log = RocksLogStore::open(&dir.path().join("log")).expect("open log store");
    let machine = MemMachine::new();
    let store = MachineStore::open(machine.clone(), &dir.path().join("snapshots"), config.snapshot_bytes_max)
        .expect("open machine store");
    let raft = veritrace_consensus::start_raft(id, &config, log, store, P2pTransport::new(p2p.clone()))
        .await
        .expect("start raft");
    let served = veritrace_consensus::RpcServer::new(raft.clone(), config.snapshot_bytes_max);
    let server = tokio::spawn(async move {
        while let Some(Inbound { request, reply, .. }) = inbound.recv().await {
            let served = served.clone();
            // One task per request, as the node does: a slow snapshot install must not hold
            // up votes and heartbeats behind it.
            tokio::spawn(async move {
                let response = match request {
                    NodeRequest::Raft(rpc) => answer_raft(&served, rpc).await,
                    other => NodeResponse::Refused(format!("unexpected {other:?}")),
                };
                let _ = reply.send(response);
            });
        }
    });
    RaftNode { raft, machine, p2p, p2p_task, server, _dir: dir }
}

async fn peer_info(node: &RaftNode) -> PeerInfo {
    PeerInfo {
        peer_id: node.p2p.local_peer_id().to_string(),
        addr: node.p2p.listen_addrs().await.into_iter().next().expect("a listen address").to_string(),
    }
}

async fn leader_of(raft: &ConsensusRaft) -> NodeId {
    let metrics =
        raft.wait(Some(WAIT)).metrics(|m| m.current_leader.is_some(), "a leader").await.expect("a leader is elected");
    metrics.current_leader.expect("checked above")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_raft_nodes_elect_and_replicate_over_libp2p() {
    let ids: [u8; 3] = [1, 2, 3];
    let mut nodes = BTreeMap::new();
    for id in ids {
        nodes.insert(NodeId::from(id), start_raft_node(NodeId::from(id), &ids).await);
    }
    let mut members = BTreeMap::new();
    for (id, node) in &nodes {
        members.insert(*id, peer_info(node).await);
    }
    nodes[&1].raft.initialize(members).await.expect("initialize");

    let payloads: Vec<Vec<u8>> = (0..100u32).map(|i| format!("payload-{i:03}").into_bytes()).collect();
    let mut last_index = 0;
    for payload in &payloads {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no stable leader to write {payload:?}");
            let leader = leader_of(&nodes[&1].raft).await;
            match veritrace_consensus::propose(&nodes[&leader].raft, Payload(payload.clone())).await {
                Ok(written) => {
                    last_index = written.log_id.index;
                    break;
                }
                // Only a refusal that guarantees the payload was not taken is retried.
                Err(ProposeError::Raft(e)) if e.forward_to_leader::<PeerInfo>().is_some() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    // The index of the last write, not the leader's metrics: those are published after the
    // write returns and may lag it.
    for node in nodes.values() {
        node.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(last_index), "caught up")
            .await
            .expect("node catches up");
    }
    let first = nodes[&1].machine.contents();
    let written: Vec<Vec<u8>> = first.payloads.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(written, payloads, "each payload applied once, in order");
    for node in nodes.values() {
        assert_eq!(node.machine.contents(), first, "state machines differ");
    }

    for node in nodes.into_values() {
        node.raft.shutdown().await.expect("raft shutdown");
        node.p2p.shutdown().await;
        node.p2p_task.await.expect("p2p task");
        // The inbound channel closed with the p2p task, so the server ends.
        node.server.await.expect("server task");
    }
}
