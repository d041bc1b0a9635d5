//! A full disk (docs/faults.md, "Storage faults"): a follower's data directory on a small
//! tmpfs that is filled while the node runs under load. The node must stop with the error
//! (exit non-zero, saying the disk is full) rather than linger as a member that can neither
//! vote nor apply; the others go on committing; once space is freed the node starts, catches
//! up and holds every record acknowledged meanwhile.
//!
//! Mounting needs root (CAP_SYS_ADMIN), as the network-namespace tests do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use veritrace_devnet::netns;
use veritrace_tests::load::{complaints, has_all, last_run_log, refusal, start_load};
use veritrace_tests::{WAIT, agree, commit, issue, network, wait_for};

/// Set on a machine where tests may not mount file systems, to skip this one.
const SKIP_ENV: &str = "VERITRACE_TESTS_SKIP_MOUNT";
/// The tmpfs: room for the node's stores (a few MB here) and its growth until filled.
const DISK_BYTES: u64 = 64 << 20;
/// What is left free when the disk is filled: less than a snapshot and a memtable flush.
const LEFT_FREE_BYTES: u64 = 1 << 20;

/// `Ok` if this process may mount a tmpfs, else why not.
fn may_mount() -> Result<(), String> {
    match netns::has_capability(netns::CAP_SYS_ADMIN_BIT)? {
        true => Ok(()),
        false => Err("mounting a tmpfs needs root (CAP_SYS_ADMIN), which this process lacks".into()),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A tmpfs of [`DISK_BYTES`] over a stopped node's data directory, holding a copy of what
/// was there. Unmounted when dropped, lazily (a node killed by the network's drop may still
/// hold files open), and the directory's own contents put back.
struct SmallDisk {
    dir: PathBuf,
    aside: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let aside = dir.with_extension("before-tmpfs");
        std::fs::rename(dir, &aside).expect("move the data directory aside");
        std::fs::create_dir(dir).expect("mount point");
        let disk = SmallDisk { dir: dir.to_path_buf(), aside };
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"]).arg(dir));
        run(Command::new("cp").arg("-a").arg(disk.aside.join(".")).arg(dir));
        disk
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&self.dir).output().expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Fills all but [`LEFT_FREE_BYTES`] with a file of zeros (written: tmpfs takes a page
    /// only when it is written); returns its size.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let size = self.free_bytes().saturating_sub(LEFT_FREE_BYTES);
        let mut file = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n]).expect("write the filler");
            left -= n as u64;
        }
        size
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        if std::fs::remove_dir(&self.dir).is_ok() {
            let _ = std::fs::rename(&self.aside, &self.dir);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_fills_exits_with_the_error_and_catches_up_once_space_is_freed() {
    if !netns::needed_for_test("the full-disk test", SKIP_ENV, may_mount()) {
        return;
    }
    // A snapshot every 20 blocks: the filled node writes snapshots as well as both stores.
    let net = Arc::new(network(3, 0, Some(20)));
    let nodes = net.node_ids();
    for i in 0..20 {
        commit(&net, &nodes[i % nodes.len()], &issue(&net, "D", i as u64)).await;
    }
    agree(&net, &nodes).await;
    let leader = net.wait_for_leader(WAIT).expect("a leader");
    let target = nodes.iter().find(|n| **n != leader).expect("a follower").clone();
    let others: Vec<String> = nodes.iter().filter(|n| **n != target).cloned().collect();

    net.stop(&target).expect("stop");
    // Declared after `net`, so dropped first: unmounted even if the test fails.
    let disk = SmallDisk::mount(&net.data_dir(&target).expect("data dir"));
    net.start(&target).expect("start on the small disk");
    let load = start_load(&net, &others, "D");
    let filled = disk.fill();
    let t = Instant::now();

    // It stops by itself, with the error.
    wait_for(&format!("{target} to exit on its full disk"), async || {
        (!net.is_running(&target).expect("is running")).then_some(())
    })
    .await;
    let log = last_run_log(&net, &target);
    assert!(
        log.contains("Error: this node cannot go on") && log.contains("raft stopped"),
        "{target} did not stop with the raft error: {log}"
    );
    assert!(log.contains("No space left on device"), "{target} stopped but did not say the disk was full: {log}");
    let stopped_after = t.elapsed();
    let cause = refusal(&log);

    // The others went on without it; then it starts once space is freed, catches up and
    // holds every record acknowledged meanwhile.
    disk.free();
    let t = Instant::now();
    net.start(&target).expect("start once space is freed");
    let acked = load.finish().await;
    assert!(!acked.is_empty(), "nothing was committed while {target} was down");
    let after = agree(&net, &nodes).await;
    has_all(&net, &target, &acked).await;
    println!(
        "full disk: {target} (filler {filled} bytes) exited {:.2} s after the disk filled: {cause}\n\
         restarted on freed space, it agrees at height {} after {:.2} s, holding all {} records \
         acknowledged meanwhile; its complaints: {}",
        stopped_after.as_secs_f64(),
        after.height,
        t.elapsed().as_secs_f64(),
        acked.len(),
        complaints(&net, &target).len()
    );
    net.stop(&target).expect("stop");
}
