//! Node processes: spawning one with its output in a log file, learning from its stdout
//! when it serves, signalling it, and waiting for it to end.
//!
//! A node prints progress lines on stdout while it starts (verifying a big ledger takes
//! minutes), then its serving line. A launch is given up when the node is silent for too
//! long, not when it is slow: each line it prints restarts the clock, up to a ceiling on
//! the whole start ([`ServeLimits`]).
//!
//! A process is either *owned* (this process spawned it and holds its `Child`, so it can
//! reap it) or *adopted* (found by pid in a network's manifest, started by an earlier
//! devnet process). An adopted pid is trusted only while its start time in `/proc` is the
//! one recorded, so a recycled pid is never signalled.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::Deserialize;

/// How often a wait for a process to end looks again.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait for a process that closed its stdout, or was sent SIGKILL, to be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of one stdout line kept; the serving line is about a hundred.
const STDOUT_LINE_BYTES_MAX: usize = 64 * 1024;

/// The line a node prints on stdout once it serves.
#[derive(Debug, Deserialize)]
struct ServingLine {
    event: String,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// The addresses a node announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// How long a launch waits for the serving line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Longest time without any line on the node's stdout (progress or serving).
    pub silence: Duration,
    /// Longest time from the spawn to the serving line, however much the node reports.
    pub ceiling: Duration,
}

/// How a launch ended before the node served.
#[derive(Debug)]
pub enum LaunchError {
    /// It exited (or closed its stdout) first.
    Exited { status: String },
    /// It printed nothing for `silence`; it has been killed.
    Silent { silence: Duration },
    /// It kept printing but did not serve within `ceiling` of its spawn; it has been killed.
    OverCeiling { ceiling: Duration },
}

/// A node process and, if owned, the thread copying its stdout into its log.
pub enum NodeProcess {
    Owned { child: Child, drain: Option<JoinHandle<()>> },
    Adopted { pid: u32, start_ticks: Option<u64> },
}

impl NodeProcess {
    pub fn pid(&self) -> u32 {
        match self {
            NodeProcess::Owned { child, .. } => child.id(),
            NodeProcess::Adopted { pid, .. } => *pid,
        }
    }

    /// Whether the process still runs (a stopped process runs; a zombie does not).
    pub fn is_alive(&mut self) -> bool {
        match self {
            NodeProcess::Owned { child, .. } => matches!(child.try_wait(), Ok(None)),
            NodeProcess::Adopted { pid, start_ticks } => proc_alive(*pid, *start_ticks),
        }
    }

    /// Sends `signal`; a process that is already gone is not an error.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid() as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("send {signal} to pid {}", self.pid())),
        }
    }

    /// Waits up to `timeout` for the process to end (and reaps it if owned); true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                self.join_drain();
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
    }

    /// Lets the process run on after this handle is gone: nothing is killed or reaped.
    pub fn release(self) {
        if let NodeProcess::Owned { drain, .. } = self {
            // The drain thread keeps copying stdout for as long as this process lives.
            drop(drain);
        }
    }

    fn join_drain(&mut self) {
        if let NodeProcess::Owned { drain, .. } = self
            && let Some(d) = drain.take()
        {
            // The pipe is at end of file once the process is gone, so this is quick.
            let _ = d.join();
        }
    }

    /// A description of how an owned process ended, for error messages.
    fn exit_status(&mut self) -> String {
        match self {
            NodeProcess::Owned { child, .. } => match child.try_wait() {
                Ok(Some(s)) => s.to_string(),
                Ok(None) => "still running".to_string(),
                Err(e) => format!("unknown ({e})"),
            },
            NodeProcess::Adopted { .. } => "unknown (not our child)".to_string(),
        }
    }
}

/// A node process that has been started and has not announced itself yet.
/// Dropping it without [`Launch::wait`] kills the process, so no error path can leave a
/// node running that nothing tracks.
pub struct Launch {
    process: Option<NodeProcess>,
    serving: mpsc::Receiver<Serving>,
    heard: Arc<LastLine>,
}

/// When the node last printed a line on stdout, in ms after its spawn. Written by the
/// stdout reader on every line, read by [`Launch::wait`]: a clock, not a queue, so a node
/// that nobody is waiting for yet (the others of `start_all` are waited for in turn) can
/// chatter without anything piling up, and the wait still sees its latest line.
struct LastLine {
    spawned_at: Instant,
    after_spawn_ms: AtomicU64,
}

impl LastLine {
    fn heard(&self) {
        self.after_spawn_ms.store(self.spawned_at.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.spawned_at + Duration::from_millis(self.after_spawn_ms.load(Ordering::Relaxed))
    }
}

/// How a node process is started: the node binary itself, or the node binary inside a
/// network namespace.
#[derive(Clone, Debug)]
pub struct Launcher {
    program: PathBuf,
    leading_args: Vec<OsString>,
}

impl Launcher {
    /// `BINARY --config CONFIG`.
    pub fn direct(binary: &Path) -> Launcher {
        Launcher { program: binary.to_path_buf(), leading_args: Vec::new() }
    }

    /// `ip netns exec NETNS BINARY --config CONFIG`: `ip` enters the namespace and execs the
    /// node without forking, so the pid devnet records and signals is the node's.
    pub fn in_netns(binary: &Path, netns: &str) -> Launcher {
        Launcher {
            program: PathBuf::from("ip"),
            leading_args: vec!["netns".into(), "exec".into(), netns.into(), binary.as_os_str().to_owned()],
        }
    }

    fn describe(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.leading_args.iter().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }
}

/// Starts the node (`LAUNCHER --config CONFIG`) in the config's directory, with stderr
/// appended to `log` and stdout read line by line into `log` by a thread that reports
/// every line and the serving line.
pub fn spawn(launcher: &Launcher, config: &Path, log: &Path) -> Result<Launch> {
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))
    };
    let stderr = open_log()?;
    let mut stdout_log = open_log()?;
    let mut child = Command::new(&launcher.program)
        .args(&launcher.leading_args)
        .arg("--config")
        .arg(config)
        .current_dir(config.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("start {} --config {}", launcher.describe(), config.display()))?;
    let spawned_at = Instant::now();
    let Some(stdout) = child.stdout.take() else {
        // Cannot happen with Stdio::piped(); kill rather than leave an unwatched process.
        let _ = child.kill();
        let _ = child.wait();
        bail!("no stdout pipe for {}", launcher.describe());
    };
    let (tx, rx) = mpsc::sync_channel::<Serving>(1);
    let heard = Arc::new(LastLine { spawned_at, after_spawn_ms: AtomicU64::new(0) });
    let reader_heard = heard.clone();
    let log_name = log.to_path_buf();
    let drain = std::thread::Builder::new()
        .name(format!("devnet-stdout-{}", child.id()))
        .spawn(move || drain_stdout(stdout, &mut stdout_log, &log_name, &reader_heard, tx));
    let drain = match drain {
        Ok(d) => d,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e).context("spawn the stdout reader thread");
        }
    };
    Ok(Launch { process: Some(NodeProcess::Owned { child, drain: Some(drain) }), serving: rx, heard })
}

impl Launch {
    /// Waits for the serving line until the node has printed nothing for `limits.silence`
    /// (each line it prints restarts that clock), or until `limits.ceiling` after its spawn.
    /// A process that does not serve in time is killed and reaped; either way the process
    /// handle is returned.
    pub fn wait(mut self, limits: ServeLimits) -> (NodeProcess, Result<Serving, LaunchError>) {
        let mut process = self.process.take().expect("a launch is waited for once");
        let ceiling_at = self.heard.spawned_at + limits.ceiling;
        let outcome = loop {
            let deadline = (self.heard.at() + limits.silence).min(ceiling_at);
            let given_up = match self.serving.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => break Ok(s),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process is exiting; give it a moment to be reaped.
                    process.wait_exit(REAP_TIMEOUT);
                    break Err(LaunchError::Exited { status: process.exit_status() });
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= ceiling_at => {
                    LaunchError::OverCeiling { ceiling: limits.ceiling }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= self.heard.at() + limits.silence => {
                    LaunchError::Silent { silence: limits.silence }
                }
                // It printed a line meanwhile: its silence starts again from there.
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
            };
            let _ = process.signal(Signal::SIGKILL);
            process.wait_exit(REAP_TIMEOUT);
            break Err(given_up);
        };
        (process, outcome)
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.signal(Signal::SIGKILL);
            p.wait_exit(REAP_TIMEOUT);
        }
    }
}

/// Copies stdout into the log, noting every line in `heard` and reporting the first
/// serving line on `tx`.
fn drain_stdout(
    stdout: std::process::ChildStdout,
    log: &mut std::fs::File,
    log_name: &Path,
    heard: &LastLine,
    tx: mpsc::SyncSender<Serving>,
) {
    let mut reader = BufReader::new(stdout);
    let mut tx = Some(tx);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(STDOUT_LINE_BYTES_MAX as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => heard.heard(),
        }
        if tx.is_some()
            && let Some(s) = parse_serving(&line)
            && let Some(t) = tx.take()
        {
            // The receiver may have given up waiting; the line still goes to the log.
            let _ = t.send(s);
        }
        if log.write_all(&line).is_err() {
            // A full disk must not block the node on a full pipe: keep reading, stop writing.
            eprintln!("veritrace-devnet: cannot write to {}", log_name.display());
        }
    }
}

fn parse_serving(line: &[u8]) -> Option<Serving> {
    let s: ServingLine = serde_json::from_slice(line.trim_ascii()).ok()?;
    (s.event == "serving").then_some(Serving { grpc: s.grpc, http: s.http })
}

/// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22) and its
/// state letter; `None` if there is no such process.
fn proc_stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Start time of `pid`, recorded with it so a recycled pid is recognised.
pub fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(t, _)| t)
}

/// Whether `pid` runs and, when a start time was recorded, is the same process.
fn proc_alive(pid: u32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((t, _)) if start.is_some_and(|s| s != t) => false,
        Some((_, 'Z' | 'X')) => {
            // Exiting. If it is our own child (detached, then adopted again in the same
            // process), reap it, since a zombie still answers kill(pid, 0). While its other
            // threads are still being torn down it cannot be reaped yet: still alive. For
            // anyone else's child this fails with ECHILD, and its parent reaps it.
            matches!(waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive))
        }
        Some(_) => true,
        // No /proc (not Linux): ask the kernel directly.
        None if !Path::new("/proc/self/stat").exists() => kill(Pid::from_raw(pid as i32), None).is_ok(),
        None => false,
    }
}

/// Whether `pid` is stopped (SIGSTOP), as far as `/proc` tells.
pub fn is_stopped(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((_, 'T')))
}

/// An adopted process, if `pid` still runs as the process that was recorded.
pub fn adopt(pid: u32, start_ticks: Option<u64>) -> Option<NodeProcess> {
    proc_alive(pid, start_ticks).then_some(NodeProcess::Adopted { pid, start_ticks })
}

/// Whether a log written since byte `from` shows a failure to bind an address.
pub fn log_shows_bind_failure(log: &Path, from: u64) -> bool {
    let tail = crate::fsutil::log_tail(log, from, usize::MAX);
    tail.contains("Address already in use") || tail.contains("os error 98") || tail.contains("AddrInUse")
}

/// The node binary path, absolute, so it works from the node's directory.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("absolute path of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_LIMITS: ServeLimits = ServeLimits { silence: Duration::from_secs(10), ceiling: Duration::from_secs(60) };

    #[test]
    fn serving_line_is_recognised() {
        let s = parse_serving(br#"{"event":"serving","grpc":"127.0.0.1:1","http":"127.0.0.1:2"}"#).expect("serving");
        assert_eq!(s.grpc.port(), 1);
        assert_eq!(s.http.port(), 2);
        assert!(parse_serving(b"2026-01-01 INFO serving").is_none());
        assert!(parse_serving(br#"{"event":"other","grpc":"127.0.0.1:1","http":"127.0.0.1:2"}"#).is_none());
    }

    #[test]
    fn own_process_is_alive_with_its_start_time_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = start_ticks(me).expect("own start time");
        assert!(proc_alive(me, Some(t)));
        assert!(!proc_alive(me, Some(t + 1)), "a recycled pid must not be taken for the recorded process");
        assert!(!is_stopped(me));
    }

    #[test]
    fn launch_reports_exit_before_serving_and_keeps_output_in_the_log() {
        let dir = crate::testdir::TestDir::new("launch-exit");
        let bin = crate::testdir::fake_node(dir.path(), "echo 'cannot open store' >&2\nexit 3");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").expect("write");
        let log = dir.path().join("node.log");
        let (mut p, outcome) = spawn(&Launcher::direct(&bin), &config, &log).expect("spawn").wait(TEST_LIMITS);
        match outcome {
            Err(LaunchError::Exited { status }) => assert!(status.contains('3'), "{status}"),
            other => panic!("expected an early exit, got {other:?}"),
        }
        assert!(!p.is_alive());
        assert!(std::fs::read_to_string(&log).expect("log").contains("cannot open store"));
    }

    #[test]
    fn launch_reads_the_serving_line_then_signals_work() {
        let dir = crate::testdir::TestDir::new("launch-serve");
        let bin = crate::testdir::fake_node(dir.path(), crate::testdir::FAKE_SERVING_NODE);
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "grpc_listen = \"127.0.0.1:11\"\nhttp_listen = \"127.0.0.1:12\"\n").expect("write");
        let log = dir.path().join("node.log");
        let (mut p, outcome) = spawn(&Launcher::direct(&bin), &config, &log).expect("spawn").wait(TEST_LIMITS);
        let s = outcome.expect("serving");
        assert_eq!((s.grpc.port(), s.http.port()), (11, 12));
        assert!(p.is_alive());
        let pid = p.pid();
        p.signal(Signal::SIGSTOP).expect("stop");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(EXIT_POLL_INTERVAL);
        }
        assert!(is_stopped(pid), "SIGSTOP shows in /proc");
        p.signal(Signal::SIGCONT).expect("cont");
        p.signal(Signal::SIGTERM).expect("term");
        assert!(p.wait_exit(Duration::from_secs(5)), "SIGTERM ends it");
        assert!(kill(Pid::from_raw(pid as i32), None).is_err(), "reaped");
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("\"event\":\"serving\"") && text.contains("fake node starting"), "{text}");
    }
}
