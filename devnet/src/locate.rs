//! Finding (and if need be building) the `veritrace-node` executable for tests.
//!
//! Cargo gives `CARGO_BIN_EXE_*` only to tests of the package that owns the binary, and
//! devnet must not depend on the node crate, so tests here and in `tests/` find it
//! themselves:
//!
//! 1. `VERITRACE_NODE_BIN`, if set, is used as is (no build).
//! 2. Otherwise the binary is looked for in the target directory the test itself runs from
//!    (the test executable is `TARGET/PROFILE/deps/NAME-HASH`), then in
//!    `$CARGO_TARGET_DIR/debug`, then in `WORKSPACE/target/debug`.
//! 3. If it is missing or older than any source it is built from, the test runs
//!    `cargo build --workspace --bins` from the workspace root with that same
//!    `CARGO_TARGET_DIR` (and profile). `--workspace` matters: a `-p` selection unifies
//!    features differently and rebuilds RocksDB's C++ from scratch.
//!
//! The result is computed once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The node executable's file name.
pub const NODE_BINARY_NAME: &str = "veritrace-node";
/// Environment variable that names a node binary to use instead of finding one.
pub const NODE_BINARY_ENV: &str = "VERITRACE_NODE_BIN";
/// Crates whose sources the node binary is built from, relative to the workspace root.
const NODE_SOURCE_DIRS: [&str; 4] = ["node", "consensus", "proto", "ledger"];
/// Deepest directory level searched for sources newer than the binary.
const SOURCE_SCAN_DEPTH_MAX: u32 = 8;
/// Lines of cargo's output kept in a build error.
const BUILD_OUTPUT_LINES: usize = 40;

/// The workspace root this crate was compiled in.
pub fn workspace_root() -> PathBuf {
    let devnet = Path::new(env!("CARGO_MANIFEST_DIR"));
    devnet.parent().unwrap_or(devnet).to_path_buf()
}

/// The node binary for tests: found, built if missing or stale (see the module doc).
pub fn node_binary_for_tests() -> Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(|| find_or_build().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow::anyhow!(e))
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(NODE_BINARY_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{NODE_BINARY_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let root = workspace_root();
    let (target_dir, profile) =
        target_of_current_exe().unwrap_or_else(|| (configured_target_dir(&root), "debug".into()));
    let bin = target_dir.join(&profile).join(NODE_BINARY_NAME);
    if is_fresh(&bin, &root) {
        return Ok(bin);
    }
    build(&root, &target_dir, &profile)?;
    if !bin.is_file() {
        bail!("cargo build finished but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// `(TARGET, PROFILE)` from a test executable at `TARGET/PROFILE/deps/NAME`.
fn target_of_current_exe() -> Option<(PathBuf, String)> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let profile_dir = deps.parent()?;
    let profile = profile_dir.file_name()?.to_str()?.to_string();
    Some((profile_dir.parent()?.to_path_buf(), profile))
}

fn configured_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// Whether `bin` exists and no source of the crates it is built from is newer.
fn is_fresh(bin: &Path, root: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return false };
    let mut newest = modified(&root.join("Cargo.lock")).unwrap_or(SystemTime::UNIX_EPOCH);
    for d in NODE_SOURCE_DIRS {
        newest = newest.max(newest_source(&root.join(d), 0));
    }
    newest <= built
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of `.rs`, `.proto` and `Cargo.toml` files under `dir`.
fn newest_source(dir: &Path, depth: u32) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else { return newest };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            // Tests and benches are not part of the binary.
            let skip = matches!(e.file_name().to_str(), Some("target" | "tests" | "benches" | ".git"));
            if !skip && depth < SOURCE_SCAN_DEPTH_MAX {
                newest = newest.max(newest_source(&p, depth + 1));
            }
        } else if p.extension().is_some_and(|x| x == "rs" || x == "proto") || e.file_name() == "Cargo.toml" {
            newest = newest.max(modified(&p).unwrap_or(SystemTime::UNIX_EPOCH));
        }
    }
    newest
}

fn build(root: &Path, target_dir: &Path, profile: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).env("CARGO_TARGET_DIR", target_dir).args(["build", "--workspace", "--bins"]);
    // The dev profile builds into `debug/`; any other profile into a directory of its name.
    if profile != "debug" {
        cmd.args(["--profile", profile]);
    }
    eprintln!(
        "veritrace-devnet: building {NODE_BINARY_NAME} (cargo build --workspace --bins, CARGO_TARGET_DIR={})",
        target_dir.display()
    );
    let out =
        cmd.output().with_context(|| format!("run {} build in {}", Path::new(&cargo).display(), root.display()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "cargo build --workspace --bins failed ({}):\n{}",
            out.status,
            lines[lines.len().saturating_sub(BUILD_OUTPUT_LINES)..].join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_executable_sits_in_a_profile_directory() {
        let (target, profile) = target_of_current_exe().expect("unit tests run from TARGET/PROFILE/deps");
        assert!(target.join(&profile).join("deps").is_dir());
        assert!(workspace_root().join("devnet").join("Cargo.toml").is_file());
    }

    #[test]
    fn a_binary_older_than_the_sources_is_stale() {
        let dir = crate::testdir::TestDir::new("locate");
        let bin = dir.path().join(NODE_BINARY_NAME);
        assert!(!is_fresh(&bin, &workspace_root()), "a missing binary is not fresh");
        std::fs::write(&bin, "").expect("write");
        let f = std::fs::File::options().write(true).open(&bin).expect("open");
        f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1)).expect("set mtime");
        assert!(!is_fresh(&bin, &workspace_root()), "a binary from 1970 is stale");
    }
}
