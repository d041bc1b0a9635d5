//! Offline commands: key files, parsing codes, and verifying a trace bundle against the
//! validators of a genesis, trusting no node; reading a genesis and writing files
//! atomically for the other commands. Genesis commands are in [`crate::genesis`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::org::Genesis;

use crate::exit::{Failure, OrExit};
use crate::output::Out;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Generate an ed25519 key into a new file (mode 0600; never overwrites).
    Gen {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Show the public key of a key file.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
pub enum CodeCmd {
    /// Parse a code (canonical form, Digital Link path or URI) and print its canonical form.
    Parse { code: String },
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle (JSON, or the compact binary form).
    bundle: PathBuf,
    /// The genesis whose validator keys are trusted.
    #[arg(long)]
    genesis: PathBuf,
}

pub fn key(cmd: &KeyCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        KeyCmd::Gen { out: path } => {
            let key = veritrace_devnet::keyfile::generate_key().or_bad_input()?;
            veritrace_devnet::keyfile::write_key_file(path, &key).or_bad_input()?;
            let public = hex::encode(key.verifying_key().to_bytes());
            out.emit(serde_json::json!({"ok": true, "file": path, "public_key": public}), || {
                format!("wrote {}\npublic key {public}", path.display())
            });
        }
        KeyCmd::Show { file } => {
            let key = veritrace_devnet::keyfile::read_key_file(file).or_bad_input()?;
            let public = hex::encode(key.verifying_key().to_bytes());
            out.emit(serde_json::json!({"ok": true, "public_key": public}), || public.clone());
        }
    }
    Ok(())
}

pub fn code(cmd: &CodeCmd, out: &Out) -> Result<(), Failure> {
    let CodeCmd::Parse { code } = cmd;
    let id: SubjectId = code.parse().with_context(|| format!("code {code:?}")).or_bad_input()?;
    let kind = serde_json::to_value(id.kind()).unwrap_or_default();
    out.emit(serde_json::json!({"ok": true, "canonical": id.to_string(), "kind": kind}), || id.to_string());
    Ok(())
}

pub fn verify(args: &VerifyArgs, out: &Out) -> Result<(), Failure> {
    let g = read_genesis(&args.genesis).or_bad_input()?;
    let b = read_bundle(&args.bundle).or_bad_input()?;
    if b.checkpoint.header.ledger_id != g.ledger_id {
        return Err(Failure::verify_failed(anyhow::anyhow!(
            "bundle is for ledger {}, the genesis is for {}",
            b.checkpoint.header.ledger_id,
            g.ledger_id
        )));
    }
    let v = verify_bundle(&b, &g.validator_set())
        .map_err(|e| Failure::verify_failed(anyhow::anyhow!("bundle of {} does not verify: {e}", b.code)))?;
    out.emit(serde_json::json!({"ok": true, "code": b.code.to_string(), "verdict": v}), || {
        format!(
            "verified {}: {} records, checkpoint at height {} signed by {} of {} validators ({})",
            b.code,
            v.records,
            v.height,
            v.signers.len(),
            v.validators,
            v.signers.join(", ")
        )
    });
    Ok(())
}

pub fn read_genesis(path: &Path) -> Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read genesis {}", path.display()))?;
    Genesis::from_json(&text).with_context(|| format!("genesis {}", path.display()))
}

/// A bundle in either form: JSON if it starts with `{`, else the compact canonical bytes.
pub fn parse_bundle(bytes: &[u8]) -> Result<TraceBundle> {
    if bytes.first() == Some(&b'{') {
        let text = std::str::from_utf8(bytes).context("bundle is not utf-8 json")?;
        Ok(TraceBundle::from_json(text)?)
    } else {
        Ok(TraceBundle::from_bytes(bytes)?)
    }
}

fn read_bundle(path: &Path) -> Result<TraceBundle> {
    let bytes = std::fs::read(path).with_context(|| format!("read bundle {}", path.display()))?;
    parse_bundle(&bytes).with_context(|| format!("bundle {}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
