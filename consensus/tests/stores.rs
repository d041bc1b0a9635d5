//! What openraft's suite does not check: that the stores keep their state across a close
//! and reopen, refuse what they must, and that the network adapter sizes RPCs.

use std::path::Path;
use std::time::Duration;

use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use veritrace_consensus::codec::CodecError;
use veritrace_consensus::log_store::LogStoreError;
use veritrace_consensus::machine::MachineStoreError;
use veritrace_consensus::network::Network;
use veritrace_consensus::testkit::{MemMachine, local_peer};
use veritrace_consensus::types::{Entry, LogId, SnapshotMeta};
use veritrace_consensus::{
    MachineStore, Payload, PeerInfo, RaftRpc, RaftRpcReply, RaftTransport, RocksLogStore, TransportError,
};

const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

fn normal(term: u64, index: u64, bytes: &[u8]) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(Payload(bytes.to_vec())) }
}

fn membership(term: u64, index: u64) -> Entry {
    let members = [(1, local_peer(1)), (2, local_peer(2))].into_iter().collect::<std::collections::BTreeMap<_, _>>();
    let config = Membership::new(vec![members.keys().copied().collect()], members);
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(config) }
}

/// Every byte of a snapshot's data, from its start.
async fn bytes_of(mut file: Box<tokio::fs::File>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    let mut out = Vec::new();
    file.read_to_end(&mut out).await.expect("read");
    out
}

/// A donor machine, its store in `dir`, that applied a membership and entries 2..=40 of
/// 300 bytes each.
async fn donor(dir: &Path) -> (MemMachine, MachineStore<MemMachine>) {
    let donor = MemMachine::new();
    let mut store = MachineStore::open(donor.clone(), dir, SNAPSHOT_BYTES_MAX).expect("open");
    let entries = std::iter::once(membership(1, 1)).chain((2..=40).map(|i| normal(1, i, &[i as u8; 300])));
    store.apply(entries).await.expect("apply");
    (donor, store)
}

/// A snapshot built from `store` now: its metadata and bytes.
async fn built_snapshot(store: &mut MachineStore<MemMachine>) -> (SnapshotMeta, Vec<u8>) {
    let built = store.get_snapshot_builder().await.build_snapshot().await.expect("build");
    (built.meta, bytes_of(built.snapshot).await)
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn log_store_keeps_log_vote_and_purge_across_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = RocksLogStore::open(dir.path()).expect("open");
        store.blocking_append((1..=10).map(|i| blank(1, i))).await.expect("append");
        store.save_vote(&Vote::new(3, 2)).await.expect("vote");
        store.save_committed(Some(log_id(1, 6))).await.expect("committed");
        store.purge(log_id(1, 3)).await.expect("purge");
        store.truncate(log_id(1, 8)).await.expect("truncate");
        // A new term overwrites from the truncation point.
        store.blocking_append([blank(2, 8)]).await.expect("append after truncate");
    }
    let mut store = RocksLogStore::open(dir.path()).expect("reopen");
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    let entries = store.try_get_log_entries(0..100).await.expect("entries");
    assert_eq!(indexes(&entries), vec![4, 5, 6, 7, 8]);
    assert_eq!(entries[4].log_id, log_id(2, 8));
    assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
    assert_eq!(store.read_committed().await.expect("committed"), Some(log_id(1, 6)));

    // Purging everything leaves the last purged id as the last log id.
    store.purge(log_id(2, 8)).await.expect("purge all");
    drop(store);
    let mut store = RocksLogStore::open(dir.path()).expect("reopen");
    let state = store.get_log_state().await.expect("log state");
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2, 8)), Some(log_id(2, 8))));
    assert!(store.try_get_log_entries(..).await.expect("entries").is_empty());
}

fn set_format_byte(dir: &Path, byte: u8) {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, ["raft_log", "raft_meta"]).expect("raw open");
    let meta = db.cf_handle("raft_meta").expect("raft_meta");
    db.put_cf(meta, b"format", [byte]).expect("put");
}

#[test]
fn log_store_refuses_another_format() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(RocksLogStore::open(dir.path()).expect("open"));
    set_format_byte(dir.path(), 9);
    match RocksLogStore::open(dir.path()) {
        Err(e @ LogStoreError::Format { got: 9, expected: 1 }) => {
            assert_eq!(e.to_string(), "raft log store format version 9, expected 1")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store of format 9"),
    }
}

#[tokio::test]
async fn machine_store_resumes_without_reapplying() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    {
        let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
        let replies = store
            .apply([blank(1, 1), membership(1, 2), normal(1, 3, b"a"), normal(1, 4, b"b"), blank(1, 5)])
            .await
            .expect("apply");
        assert_eq!(replies.len(), 5);
        assert!(replies[0].0.is_empty() && replies[1].0.is_empty() && replies[4].0.is_empty());
        assert_eq!(replies[3].0, machine.contents().hash.to_be_bytes().to_vec());
    }
    // A new adapter over the same machine (as after a restart) knows where it stopped:
    // the trailing blank entry was saved although it carried no data.
    let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("reopen");
    let (applied, members) = store.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 5)));
    assert_eq!(*members.log_id(), Some(log_id(1, 2)));
    assert_eq!(members.voter_ids().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(machine.applies(), 2);
    assert_eq!(machine.contents().payloads, vec![(3, b"a".to_vec()), (4, b"b".to_vec())]);
}

/// openraft builds a snapshot concurrently with the applies that follow the builder's
/// creation, so the copy is taken when the builder runs, and its metadata must name the
/// data it holds: the last log id and membership come from the blob stored with them.
#[tokio::test]
async fn a_snapshot_names_the_last_entry_whose_data_it_holds_while_applies_go_on() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
    store.apply([membership(1, 1), normal(1, 2, b"a")]).await.expect("apply");
    let mut builder = store.get_snapshot_builder().await;
    // The machine goes on before the snapshot is taken.
    store.apply([normal(1, 3, b"b"), blank(1, 4)]).await.expect("apply while a snapshot is pending");
    let now = machine.contents();
    assert_eq!(now.payloads.len(), 2);
    let snapshot = builder.build_snapshot().await.expect("build");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 4)), "the blob saved after the trailing blank entry");
    assert_eq!(*snapshot.meta.last_membership.log_id(), Some(log_id(1, 1)));
    let restored = MemMachine::new();
    let mut landed = restored.clone();
    let data = bytes_of(snapshot.snapshot).await;
    veritrace_consensus::Machine::restore_from(&mut landed, &mut &data[..], b"blob").expect("restore");
    assert_eq!(restored.contents(), now, "the snapshot holds the data its metadata names");
}

#[tokio::test]
async fn snapshot_survives_reopen_and_respects_its_limit() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    let built = {
        let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
        store.apply([membership(1, 1), normal(1, 2, b"x")]).await.expect("apply");
        store.get_snapshot_builder().await.build_snapshot().await.expect("build")
    };
    let mut store = MachineStore::open(MemMachine::new(), dir.path(), SNAPSHOT_BYTES_MAX).expect("reopen");
    let current = store.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 2)));
    assert_eq!(bytes_of(current.snapshot).await, bytes_of(built.snapshot).await);

    // A machine whose snapshot is over the limit cannot build one.
    let small = tempfile::tempdir().expect("temporary directory");
    let mut store = MachineStore::open(MemMachine::new(), small.path(), 16).expect("open");
    store.apply([normal(1, 1, &[7; 64])]).await.expect("apply");
    let err = store.get_snapshot_builder().await.build_snapshot().await.expect_err("over the limit");
    assert!(err.to_string().contains("over the limit of 16 bytes"), "{err}");
    assert!(store.get_current_snapshot().await.expect("current").is_none());
}

#[tokio::test]
async fn a_received_snapshot_is_streamed_to_a_file_installed_and_kept_as_current() {
    use tokio::io::AsyncWriteExt;
    let donor_dir = tempfile::tempdir().expect("temporary directory");
    let (donor, mut donor_store) = donor(donor_dir.path()).await;
    let (meta, data) = built_snapshot(&mut donor_store).await;
    assert_eq!(files_in(donor_dir.path()), vec!["00000000000000000001.snap", "current.meta"]);

    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
    // An abandoned transfer first: its file goes when the next one begins.
    let mut abandoned = store.begin_receiving_snapshot().await.expect("begin");
    abandoned.write_all(b"half a snapshot").await.expect("write");
    drop(abandoned);
    // Chunks as openraft writes them: out of order is allowed, by offset.
    let mut file = store.begin_receiving_snapshot().await.expect("begin");
    assert_eq!(files_in(dir.path()), vec!["00000000000000000002.recv"]);
    use tokio::io::AsyncSeekExt;
    let half = data.len() / 2;
    file.seek(std::io::SeekFrom::Start(half as u64)).await.expect("seek");
    file.write_all(&data[half..]).await.expect("write");
    file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    file.write_all(&data[..half]).await.expect("write");
    file.shutdown().await.expect("shutdown");
    store.install_snapshot(&meta, file).await.expect("install");

    assert_eq!(machine.contents(), donor.contents());
    assert_eq!(store.applied_state().await.expect("applied").0, Some(log_id(1, 40)));
    assert_eq!(files_in(dir.path()), vec!["00000000000000000002.snap", "current.meta"], "kept, not copied");
    let current = store.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.meta, meta);
    assert_eq!(bytes_of(current.snapshot).await, data);

    // A snapshot the machine refuses is not kept, and the current one stays.
    let mut bad = store.begin_receiving_snapshot().await.expect("begin");
    bad.write_all(&data[..data.len() - 1]).await.expect("write");
    let mut newer = meta.clone();
    newer.last_log_id = Some(log_id(2, 50));
    store.install_snapshot(&newer, bad).await.expect_err("a truncated snapshot");
    assert_eq!(files_in(dir.path()), vec!["00000000000000000002.snap", "current.meta"]);

    // Leftovers of a crash are removed on open; the current snapshot stays.
    drop(store);
    for leftover in
        ["00000000000000000007.tmp", "00000000000000000008.recv", "00000000000000000001.snap", "current.meta.tmp"]
    {
        std::fs::write(dir.path().join(leftover), b"x").expect("write");
    }
    let mut store = MachineStore::open(machine, dir.path(), SNAPSHOT_BYTES_MAX).expect("reopen");
    assert_eq!(files_in(dir.path()), vec!["00000000000000000002.snap", "current.meta"]);
    let current = store.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(bytes_of(current.snapshot).await, data);
}

#[tokio::test]
async fn a_snapshot_is_staged_as_its_chunks_arrive_and_one_that_cannot_be_is_read_whole() {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let donor_dir = tempfile::tempdir().expect("temporary directory");
    let (donor, mut donor_store) = donor(donor_dir.path()).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");

    // In order, a chunk at a time: the stager reads each as it lands.
    let (meta, data) = built_snapshot(&mut donor_store).await;
    let mut file = store.begin_receiving_snapshot().await.expect("begin");
    for chunk in data.chunks(data.len() / 4 + 1) {
        file.write_all(chunk).await.expect("write");
        file.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.install_snapshot(&meta, file).await.expect("install");
    assert_eq!(machine.contents(), donor.contents());
    assert_eq!((machine.restores(), machine.staged_restores()), (1, 1), "installed from what was staged");

    // The second half first: the stager reads the hole before it as zeros and refuses the
    // stream, and the install reads the whole file instead.
    donor_store.apply((41..=60).map(|i| normal(1, i, &[i as u8; 300]))).await.expect("apply");
    let (meta, data) = built_snapshot(&mut donor_store).await;
    let mut file = store.begin_receiving_snapshot().await.expect("begin");
    let half = data.len() / 2;
    file.seek(std::io::SeekFrom::Start(half as u64)).await.expect("seek");
    file.write_all(&data[half..]).await.expect("write");
    file.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    file.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
    file.write_all(&data[..half]).await.expect("write");
    store.install_snapshot(&meta, file).await.expect("install");
    assert_eq!(machine.contents(), donor.contents());
    assert_eq!((machine.restores(), machine.staged_restores()), (2, 1), "read whole, not staged");
    assert_eq!(store.applied_state().await.expect("applied").0, Some(log_id(1, 60)));
}

#[test]
fn machine_store_refuses_a_corrupt_snapshot_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("current.meta"), [1, 0, 0]).expect("write");
    match MachineStore::open(MemMachine::new(), dir.path(), SNAPSHOT_BYTES_MAX) {
        Err(MachineStoreError::SnapshotMalformed { reason, .. }) => assert_eq!(reason, "truncated metadata length"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a corrupt snapshot"),
    }
}

#[test]
fn rpc_wire_round_trip_and_refusals() {
    let rpc = RaftRpc::Vote(VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 9))));
    let bytes = rpc.encode().expect("encode");
    assert_eq!(bytes[0], 1, "wire version byte");
    assert_eq!(rpc.encoded_len().expect("len"), bytes.len() as u64);
    match RaftRpc::decode(&bytes).expect("decode") {
        RaftRpc::Vote(req) => assert_eq!((req.vote, req.last_log_id), (Vote::new(4, 2), Some(log_id(3, 9)))),
        other => panic!("decoded {other:?}"),
    }
    let mut wrong = bytes.clone();
    wrong[0] = 2;
    assert!(matches!(RaftRpc::decode(&wrong), Err(CodecError::Version { got: 2, expected: 1, .. })));
    assert!(matches!(RaftRpc::decode(&bytes[..bytes.len() - 1]), Err(CodecError::Malformed { .. })));
    let refused = RaftRpcReply::Refused { reason: "too big".into() };
    assert!(matches!(
        RaftRpcReply::decode(&refused.encode().expect("encode")),
        Ok(RaftRpcReply::Refused { reason }) if reason == "too big"
    ));
}

/// A transport for node-side checks: every peer is unreachable.
#[derive(Clone)]
struct Nowhere;

impl RaftTransport for Nowhere {
    async fn call(&self, target: u64, _peer: &PeerInfo, _rpc: RaftRpc) -> Result<RaftRpcReply, TransportError> {
        Err(TransportError::Unreachable { target, reason: "nowhere".into() })
    }
}

#[tokio::test]
async fn oversized_append_entries_asks_for_fewer_entries() {
    let mut client = Network::new(Nowhere).new_client(2, &local_peer(2)).await;
    let option = RPCOption::new(std::time::Duration::from_secs(1));
    let big = vec![0u8; 30 * 1024 * 1024];
    let request = |n: u64| AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: (1..=n).map(|i| normal(1, i, &big)).collect(),
        leader_commit: None,
    };
    match client.append_entries(request(3), option.clone()).await {
        Err(RPCError::PayloadTooLarge(e)) => assert_eq!(e.entries_hint(), 2),
        other => panic!("expected payload too large, got {other:?}"),
    }
    // Two entries of 30 MiB fit in 64 MiB: they go to the transport, which cannot reach
    // the peer, and Raft is told to back off.
    match client.append_entries(request(2), option).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected unreachable, got {other:?}"),
    }
}

/// A machine that, as after a crash in the middle of a snapshot install, holds a
/// snapshot's data up to `last` while the snapshot file in `snapshots` still holds an
/// older one, up to 3.
async fn machine_ahead_of_its_snapshot_file(snapshots: &Path, last: u64) -> MemMachine {
    let machine = MemMachine::new();
    let mut store = MachineStore::open(machine.clone(), snapshots, SNAPSHOT_BYTES_MAX).expect("open");
    store.apply([membership(1, 1), normal(1, 2, b"a"), normal(1, 3, b"b")]).await.expect("apply");
    store.get_snapshot_builder().await.build_snapshot().await.expect("build");

    let donor = MemMachine::new();
    let donor_dir = tempfile::tempdir().expect("temporary directory");
    let mut donor_store = MachineStore::open(donor.clone(), donor_dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
    let entries = std::iter::once(membership(1, 1)).chain((2..=last).map(|i| normal(1, i, &i.to_be_bytes())));
    donor_store.apply(entries).await.expect("apply");
    let installed = donor_store.get_snapshot_builder().await.build_snapshot().await.expect("build");

    let blob = veritrace_consensus::machine::AppliedState {
        last_applied: installed.meta.last_log_id,
        last_membership: installed.meta.last_membership.clone(),
    }
    .encode()
    .expect("blob");
    let mut landed = machine.clone();
    let data = bytes_of(installed.snapshot).await;
    veritrace_consensus::Machine::restore_from(&mut landed, &mut &data[..], &blob).expect("restore");
    machine
}

#[tokio::test]
async fn a_crash_between_snapshot_install_and_its_file_is_repaired_before_raft_starts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let snapshots = dir.path().join("snapshots");
    let machine = machine_ahead_of_its_snapshot_file(&snapshots, 10).await;
    // The follower's log ends before what the install applied, so openraft purges up to
    // last-applied (10) when it starts, past the snapshot file (3): unrepaired, openraft's
    // startup check `purge_upto <= snapshot_last_log_id` panics.
    let mut log = RocksLogStore::open(&dir.path().join("log")).expect("open log store");
    log.blocking_append([membership(1, 1), blank(1, 2), blank(1, 3), blank(1, 4)]).await.expect("append");

    let store = MachineStore::open(machine.clone(), &snapshots, SNAPSHOT_BYTES_MAX).expect("open machine store");
    let config = veritrace_consensus::ConsensusConfig { cluster_name: "repair".into(), ..Default::default() };
    let transport = veritrace_consensus::testkit::LocalTransport::new(config.snapshot_bytes_max);
    let raft = veritrace_consensus::start_raft(1, &config, log, store, transport).await.expect("start raft");
    // A call through Raft's core fails if the core panicked on start.
    assert!(raft.is_initialized().await.expect("raft core runs"));
    let metrics = raft.metrics().borrow().clone();
    assert_eq!(metrics.snapshot, Some(log_id(1, 10)));
    assert_eq!(metrics.purged, Some(log_id(1, 10)));
    assert_eq!(metrics.last_applied, Some(log_id(1, 10)));
    raft.shutdown().await.expect("shutdown");

    let mut reopened = MachineStore::open(machine, &snapshots, SNAPSHOT_BYTES_MAX).expect("reopen");
    let current = reopened.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 10)));
}

#[tokio::test]
async fn reconcile_leaves_a_consistent_snapshot_alone_and_refuses_a_log_purged_past_applied() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let machine = MemMachine::new();
    let mut store = MachineStore::open(machine.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
    store.apply([membership(1, 1), normal(1, 2, b"a"), normal(1, 3, b"b")]).await.expect("apply");
    let built = store.get_snapshot_builder().await.build_snapshot().await.expect("build");

    // The usual restart: the log runs past last-applied and is purged up to the snapshot.
    store.reconcile_with_log(Some(log_id(1, 3)), Some(log_id(1, 9))).await.expect("consistent");
    let current = store.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.meta, built.meta, "a consistent snapshot is not rebuilt");

    match store.reconcile_with_log(Some(log_id(1, 8)), Some(log_id(1, 9))).await {
        Err(e @ MachineStoreError::PurgedPastApplied { .. }) => {
            let text = e.to_string();
            assert!(text.contains("purged up to T1-N1-8") && text.contains("applied only up to T1-N1-3"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_machine_that_lost_writes_the_snapshot_holds_is_restored_from_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let first = MemMachine::new();
    let mut store = MachineStore::open(first.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("open");
    store.apply([membership(1, 1), normal(1, 2, b"a"), normal(1, 3, b"b")]).await.expect("apply");
    store.get_snapshot_builder().await.build_snapshot().await.expect("build");
    drop(store);

    // The machine's own store lost everything (a torn tail), while the log was purged up to
    // the snapshot: restoring from the snapshot file is the only way back.
    let fresh = MemMachine::new();
    let mut store = MachineStore::open(fresh.clone(), dir.path(), SNAPSHOT_BYTES_MAX).expect("reopen");
    store.reconcile_with_log(Some(log_id(1, 3)), Some(log_id(1, 7))).await.expect("restored");
    assert_eq!(fresh.contents(), first.contents());
    assert_eq!(fresh.restores(), 1);
    let (applied, members) = store.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(*members.log_id(), Some(log_id(1, 1)));
}

#[tokio::test]
async fn a_fenced_purge_is_held_until_the_snapshot_covers_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = RocksLogStore::open(dir.path()).expect("open");
    store.blocking_append((1..=6).map(|i| blank(1, i))).await.expect("append");
    let (covered, watermark) = tokio::sync::watch::channel(Some(log_id(1, 2)));
    store.fence_purges(watermark);
    store.purge(log_id(1, 2)).await.expect("purge inside the snapshot");
    assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(1, 2)));

    // Past the snapshot: the purge returns at once (openraft waits on it in its core loop)
    // and deletes nothing yet.
    store.purge(log_id(1, 5)).await.expect("purge past the snapshot is held");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
    assert_eq!(store.try_get_log_entries(3..7).await.expect("read").len(), 4);

    // An append carries the held purge out in its own batch, once the snapshot covers it.
    let mut writer = store.clone();
    let append = tokio::spawn(async move { writer.blocking_append([blank(1, 7)]).await.map(|_| writer) });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!append.is_finished(), "the append purged past the snapshot");
    assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(1, 2)));
    covered.send_replace(Some(log_id(1, 5)));
    let mut store = append.await.expect("join").expect("append once covered");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    let left: Vec<u64> = store.try_get_log_entries(0..10).await.expect("read").iter().map(|e| e.log_id.index).collect();
    assert_eq!(left, [6, 7]);

    // A covered purge overtakes a held one.
    store.purge(log_id(1, 7)).await.expect("held");
    covered.send_replace(Some(log_id(1, 6)));
    store.purge(log_id(1, 6)).await.expect("covered purge");
    assert_eq!(store.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(1, 6)));

    // If the state machine goes away, an append behind a held purge fails instead of
    // waiting for ever, and nothing is written.
    let mut writer = store.clone();
    let append = tokio::spawn(async move { writer.blocking_append([blank(1, 8)]).await });
    drop(covered);
    let err = append.await.expect("join").expect_err("no snapshot will cover it");
    assert!(err.to_string().contains("the state machine stopped"), "{err}");
    let state = store.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 6)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
}
