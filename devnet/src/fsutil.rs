//! Small file helpers: unique temporary directories, atomic writes, the tail of a log.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Attempts at finding an unused temporary directory name before giving up.
const TEMP_DIR_ATTEMPTS_MAX: u32 = 16;
/// Most bytes read from the end of a log to show its last lines.
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// Creates a new, empty directory under the system temp dir named
/// `PREFIX-PID-N-RANDOM`, unique across threads and processes.
pub fn unique_temp_dir(prefix: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..TEMP_DIR_ATTEMPTS_MAX {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let random = getrandom::u32().map_err(|e| anyhow::anyhow!("operating system random generator: {e}"))?;
        let dir = base.join(format!("{prefix}-{}-{n}-{random:08x}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    anyhow::bail!(
        "no unused directory name for {prefix:?} under {} after {TEMP_DIR_ATTEMPTS_MAX} tries",
        base.display()
    )
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (another
/// devnet process) sees either the old or the new content, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// The last `lines` lines of the file at `path` from byte `from` on (at most the last
/// 64 KiB); an empty string if the file cannot be read, since this only decorates errors.
pub fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let start = from.max(len.saturating_sub(LOG_TAIL_BYTES_MAX)).min(len);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = read().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_distinct_and_tail_reads_last_lines() {
        let a = crate::testdir::TestDir::new("fsutil");
        let b = crate::testdir::TestDir::new("fsutil");
        assert_ne!(a.path(), b.path());
        let log = a.path().join("x.log");
        std::fs::write(&log, "one\ntwo\nthree\nfour\n").expect("write");
        assert_eq!(log_tail(&log, 0, 2), "three\nfour");
        assert_eq!(log_tail(&log, 8, 10), "three\nfour");
        assert_eq!(log_tail(&a.path().join("missing"), 0, 3), "");
        write_atomic(&log, b"new").expect("atomic write");
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "new");
    }
}
