//! Staging a snapshot while its chunks arrive.
//!
//! openraft 0.9 writes each received chunk into the file
//! [`RaftStateMachine::begin_receiving_snapshot`](openraft::storage::RaftStateMachine::begin_receiving_snapshot)
//! handed out, one chunk RPC at a time, and calls `install_snapshot` only after the last.
//! Reading the whole file only then leaves the machine's work (on a ledger: decode, hash
//! and write a million records' table files, seconds) after the transfer. Instead
//! [`Staging`] runs the machine's [`RestoreStager`] on a thread of its own from the start
//! of the transfer, reading the file through a [`TailReader`] that follows it as it grows:
//! the reader waits at the end of what has landed until more lands, until the adapter says
//! the file is whole ([`Staging::finish`]), or until the transfer is abandoned.
//!
//! The stager reads the file's bytes as they are when it reaches them, so what it staged
//! is the snapshot only if the stream checks itself (the ledger's ends with its count and
//! hash): chunks that arrived out of order would leave a hole it read as zeros. A stager
//! must refuse a stream that is not whole, as
//! [`Machine::restore_from`](crate::Machine::restore_from) must, and when staging failed
//! for any reason the adapter restores from the whole file instead.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::machine::{MachineError, RestoreStager, SNAPSHOT_IO_BUFFER_BYTES, StagedRestore};

/// How long the reader waits at the end of the file before it looks again: new bytes come
/// in through openraft's own writes, which nothing here can wait on.
const TAIL_POLL: Duration = Duration::from_millis(2);

/// How long the file may stop growing before the reader gives up: openraft then resends
/// or abandons the snapshot, and the install (if any) reads the whole file instead.
pub const TAIL_IDLE_MAX: Duration = Duration::from_secs(120);

/// What the adapter has said of the file being followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Chunks are still coming.
    Arriving,
    /// The last chunk landed and was flushed: the file's end is the snapshot's.
    Whole,
    /// The transfer is over without an install from this file.
    Abandoned,
}

/// The state of a followed file, shared by the adapter and the reader.
#[derive(Debug)]
struct Tail {
    arrival: Mutex<Arrival>,
    changed: Condvar,
}

impl Tail {
    fn set(&self, arrival: Arrival) {
        *self.arrival.lock().unwrap_or_else(PoisonError::into_inner) = arrival;
        self.changed.notify_all();
    }

    /// The state now, or after `wait` at most if it is still [`Arrival::Arriving`].
    fn after(&self, wait: Duration) -> Arrival {
        let arrival = self.arrival.lock().unwrap_or_else(PoisonError::into_inner);
        let (arrival, _) = self
            .changed
            .wait_timeout_while(arrival, wait, |a| *a == Arrival::Arriving)
            .unwrap_or_else(PoisonError::into_inner);
        *arrival
    }
}

/// Reads a file that is still being written, from its start, through its own offset
/// (positioned reads, so the writer's offset on a shared descriptor is left alone). At the
/// end of what has landed it waits for more; it reports the end of the file only once the
/// file is whole.
pub struct TailReader {
    file: File,
    offset: u64,
    tail: Arc<Tail>,
    idle_max: Duration,
}

impl TailReader {
    fn new(file: File, tail: Arc<Tail>, idle_max: Duration) -> Self {
        TailReader { file, offset: 0, tail, idle_max }
    }
}

impl Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let idle_since = Instant::now();
        loop {
            let n = self.file.read_at(buf, self.offset)?;
            if n > 0 {
                self.offset += n as u64;
                return Ok(n);
            }
            match self.tail.after(TAIL_POLL) {
                Arrival::Arriving if idle_since.elapsed() >= self.idle_max => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the snapshot file stopped growing at byte {} for {:?}", self.offset, self.idle_max),
                    ));
                }
                Arrival::Arriving => {}
                Arrival::Whole => {
                    // Bytes may have landed between the read above and the word.
                    let n = self.file.read_at(buf, self.offset)?;
                    self.offset += n as u64;
                    return Ok(n);
                }
                Arrival::Abandoned => {
                    // Not `Interrupted`, which readers retry.
                    return Err(io::Error::other(format!(
                        "the snapshot transfer was abandoned at byte {}",
                        self.offset
                    )));
                }
            }
        }
    }
}

/// A snapshot being staged from a received file while its chunks arrive (see the module
/// docs). Dropped before [`Staging::finish`], the transfer counts as abandoned: the stager
/// stops and drops what it staged.
pub struct Staging {
    tail: Arc<Tail>,
    /// The stager's thread; taken by [`Staging::finish`].
    stager: Option<std::thread::JoinHandle<Result<StagedRestore, MachineError>>>,
}

impl Staging {
    /// Starts `stager` on a thread of its own, reading `file` (a descriptor of the file
    /// being received, which may share its offset with the writer's) as it grows.
    pub fn start(stager: Box<dyn RestoreStager>, file: File) -> io::Result<Staging> {
        Self::start_with(stager, file, TAIL_IDLE_MAX)
    }

    fn start_with(stager: Box<dyn RestoreStager>, file: File, idle_max: Duration) -> io::Result<Staging> {
        let tail = Arc::new(Tail { arrival: Mutex::new(Arrival::Arriving), changed: Condvar::new() });
        let reader = TailReader::new(file, tail.clone(), idle_max);
        // Not joined if the adapter goes first (shutdown): the stager then stops at its next
        // read and drops what it staged.
        let stager = std::thread::Builder::new()
            .name("snapshot-stage".into())
            .spawn(move || stager.stage(&mut BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, reader)))?;
        Ok(Staging { tail, stager: Some(stager) })
    }

    /// Says the file is whole (its last chunk landed and was flushed) and waits for the
    /// stager: what it staged, or why it could not.
    pub fn finish(mut self) -> Result<StagedRestore, MachineError> {
        self.tail.set(Arrival::Whole);
        let stager = self.stager.take().expect("taken only here");
        stager.join().unwrap_or_else(|_| Err(MachineError::Snapshot { reason: "the staging thread panicked".into() }))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Not finished: nothing will install from this file.
        if self.stager.is_some() {
            self.tail.set(Arrival::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc;

    use super::*;

    /// A stager that reads the whole stream and hands it over as it read it.
    struct Collect;

    impl RestoreStager for Collect {
        fn stage(self: Box<Self>, input: &mut dyn Read) -> Result<StagedRestore, MachineError> {
            let mut bytes = Vec::new();
            input.read_to_end(&mut bytes).map_err(|e| MachineError::Snapshot { reason: e.to_string() })?;
            Ok(Box::new(bytes))
        }
    }

    impl Staging {
        /// What the stager ended with, without saying the file is whole.
        fn finish_after_stall(mut self) -> Result<StagedRestore, MachineError> {
            self.stager.take().expect("running").join().expect("the stager did not panic")
        }
    }

    /// [`Collect`], sending its error (empty if none) where the test can see it.
    struct Report(mpsc::Sender<String>);

    impl RestoreStager for Report {
        fn stage(self: Box<Self>, input: &mut dyn Read) -> Result<StagedRestore, MachineError> {
            let staged = Box::new(Collect).stage(input);
            let _ = self.0.send(staged.as_ref().err().map(ToString::to_string).unwrap_or_default());
            staged
        }
    }

    fn bytes_of(staged: StagedRestore) -> Vec<u8> {
        *staged.downcast::<Vec<u8>>().expect("the stager's own type")
    }

    #[test]
    fn the_reader_follows_the_file_as_it_grows_and_ends_only_once_it_is_whole() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("snap.recv");
        let mut writer = File::create(&path).expect("create");
        let staging = Staging::start(Box::new(Collect), File::open(&path).expect("open")).expect("start");
        let want: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in want.chunks(30_000) {
            writer.write_all(chunk).expect("write");
            std::thread::sleep(Duration::from_millis(15));
        }
        // The stager is still waiting for more: nothing said the file is whole.
        assert!(
            !staging.stager.as_ref().is_some_and(|s| s.is_finished()),
            "the stager ended before the file was whole"
        );
        assert_eq!(bytes_of(staging.finish().expect("staged")), want);
    }

    #[test]
    fn an_abandoned_or_stalled_transfer_ends_the_stager_with_an_error() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("snap.recv");
        std::fs::write(&path, b"half a snapshot").expect("write");

        let (tx, reported) = mpsc::channel();
        let staging = Staging::start(Box::new(Report(tx)), File::open(&path).expect("open")).expect("start");
        drop(staging);
        let e = reported.recv_timeout(Duration::from_secs(10)).expect("the stager ended");
        assert!(e.contains("abandoned at byte 15"), "{e}");

        let stalled =
            Staging::start_with(Box::new(Collect), File::open(&path).expect("open"), Duration::from_millis(50))
                .expect("start");
        let e = stalled.finish_after_stall().expect_err("stalled");
        assert!(e.to_string().contains("stopped growing at byte 15"), "{e}");
    }
}
