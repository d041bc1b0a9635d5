//! `veritrace`: the command-line client. A thin layer over the library crates: parse,
//! validate, act. Human output by default, `--json` for scripts.
//!
//! Exit codes: 0 success; 1 a verification failed (the bundle is not trustworthy);
//! 2 bad input (usage, unreadable or malformed files, invalid values).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::org::Genesis;

/// Exit code for a verification that failed.
const EXIT_VERIFY_FAILED: u8 = 1;
/// Exit code for bad input.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(name = "veritrace", version, about = "veritrace traceability ledger client")]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Genesis files.
    #[command(subcommand)]
    Genesis(GenesisCmd),
    /// Trace codes.
    #[command(subcommand)]
    Code(CodeCmd),
    /// Verify a trace bundle offline against the validators of a genesis file.
    Verify {
        /// The bundle (JSON, or the compact binary form).
        bundle: PathBuf,
        /// The genesis whose validator keys are trusted.
        #[arg(long)]
        genesis: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Generate an ed25519 key into a new file (mode 0600; never overwrites).
    Gen {
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Show the public key of a key file.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
enum GenesisCmd {
    /// Check a genesis file and print its summary and hash.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum CodeCmd {
    /// Parse a code (canonical form, Digital Link path or URI) and print its canonical form.
    Parse { code: String },
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    err: anyhow::Error,
}

fn bad_input(err: anyhow::Error) -> Failure {
    Failure { code: EXIT_BAD_INPUT, err }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if cli.json {
                println!("{}", serde_json::json!({"ok": false, "error": format!("{:#}", f.err)}));
            } else {
                eprintln!("error: {:#}", f.err);
            }
            ExitCode::from(f.code)
        }
    }
}

fn print(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Key(KeyCmd::Gen { out }) => {
            let public = key_gen(out).map_err(bad_input)?;
            print(
                cli.json,
                serde_json::json!({"ok": true, "file": out, "public_key": public}),
                format!("wrote {}\npublic key {public}", out.display()),
            );
        }
        Cmd::Key(KeyCmd::Show { file }) => {
            let key = veritrace_devnet::keyfile::read_key_file(file).map_err(bad_input)?;
            let public = hex::encode(key.verifying_key().to_bytes());
            print(cli.json, serde_json::json!({"ok": true, "public_key": public}), public);
        }
        Cmd::Genesis(GenesisCmd::Check { file }) => {
            let g = read_genesis(file).map_err(bad_input)?;
            let hash = g.hash().to_hex();
            print(
                cli.json,
                serde_json::json!({
                    "ok": true, "ledger_id": g.ledger_id, "hash": hash,
                    "organisations": g.organisations.len(), "validators": g.validators.len(),
                    "governance_quorum": g.governance.quorum,
                }),
                format!(
                    "genesis ok: ledger {}, {} organisations, {} validators, governance quorum {}\nhash {hash}",
                    g.ledger_id,
                    g.organisations.len(),
                    g.validators.len(),
                    g.governance.quorum
                ),
            );
        }
        Cmd::Code(CodeCmd::Parse { code }) => {
            let id: SubjectId = code.parse().with_context(|| format!("code {code:?}")).map_err(bad_input)?;
            let kind = serde_json::to_value(id.kind()).unwrap_or_default();
            print(cli.json, serde_json::json!({"ok": true, "canonical": id.to_string(), "kind": kind}), id.to_string());
        }
        Cmd::Verify { bundle, genesis } => {
            let g = read_genesis(genesis).map_err(bad_input)?;
            let b = read_bundle(bundle).map_err(bad_input)?;
            if b.checkpoint.header.ledger_id != g.ledger_id {
                return Err(Failure {
                    code: EXIT_VERIFY_FAILED,
                    err: anyhow::anyhow!(
                        "bundle is for ledger {}, the genesis is for {}",
                        b.checkpoint.header.ledger_id,
                        g.ledger_id
                    ),
                });
            }
            let v = verify_bundle(&b, &g.validator_set()).map_err(|e| Failure {
                code: EXIT_VERIFY_FAILED,
                err: anyhow::anyhow!("bundle of {} does not verify: {e}", b.code),
            })?;
            print(
                cli.json,
                serde_json::json!({"ok": true, "code": b.code.to_string(), "verdict": v}),
                format!(
                    "verified {}: {} records, checkpoint at height {} signed by {} of {} validators ({})",
                    b.code,
                    v.records,
                    v.height,
                    v.signers.len(),
                    v.validators,
                    v.signers.join(", ")
                ),
            );
        }
    }
    Ok(())
}

fn key_gen(out: &Path) -> Result<String> {
    let key = veritrace_devnet::keyfile::generate_key()?;
    veritrace_devnet::keyfile::write_key_file(out, &key)?;
    Ok(hex::encode(key.verifying_key().to_bytes()))
}

fn read_genesis(path: &Path) -> Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read genesis {}", path.display()))?;
    Genesis::from_json(&text).with_context(|| format!("genesis {}", path.display()))
}

fn read_bundle(path: &Path) -> Result<TraceBundle> {
    let bytes = std::fs::read(path).with_context(|| format!("read bundle {}", path.display()))?;
    let parsed = if bytes.first() == Some(&b'{') {
        let text = std::str::from_utf8(&bytes).context("bundle is not utf-8 json")?;
        TraceBundle::from_json(text)
    } else {
        TraceBundle::from_bytes(&bytes)
    };
    parsed.with_context(|| format!("bundle {}", path.display()))
}
