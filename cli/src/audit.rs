//! `veritrace audit`: a monitor that trusts only the genesis validators and its own memory.
//!
//! It remembers (in a JSON state file) the last checkpoint it verified. Each run fetches the
//! node's newest complete checkpoint, checks its signatures against the genesis validator
//! set, and checks that it extends the remembered one: a consistency proof from the
//! remembered log size to the new one (RFC 9162), the header chain when the heights are
//! adjacent, and the node's own header at the remembered height. Two checkpoints that are
//! each signed by a quorum but cannot both be true are a fork: both are printed and written
//! next to the state file as evidence, and the state is left as it was. `--follow` then
//! checks each checkpoint the node streams.
//!
//! Limitation: signatures are checked against the genesis validators; validators added by
//! governance later are not counted (their signatures are ignored, not refused).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::merkle::{self, ConsistencyProof};
use veritrace_ledger::org::{Genesis, LedgerId};
use veritrace_proto::v1 as pb;

use crate::client::{Node, NodeArgs, decode_checkpoint, node_hash, rpc, runtime, status_failure};
use crate::exit::{EXIT_NOT_FOUND, EXIT_VERIFY_FAILED, Failure, OrExit};
use crate::local::{read_genesis, write_atomically};
use crate::output::Out;
use crate::query::checkpoint_json;

/// Format of the state and evidence files.
const AUDIT_FILE_FORMAT: u32 = 1;
/// First pause before reconnecting a broken checkpoint stream; doubles up to the maximum.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(200);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Where the last verified checkpoint is remembered (JSON; created on the first run).
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// The genesis whose validators are trusted.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// Keep watching: check every new checkpoint as it forms, until stopped or a check fails.
    #[arg(long)]
    follow: bool,
}

/// The state file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditState {
    format: u32,
    ledger_id: LedgerId,
    /// The last checkpoint verified: signed by a quorum of the genesis validators.
    checkpoint: Checkpoint,
}

/// What a failed check leaves behind for a third party to re-check.
#[derive(Serialize)]
struct Evidence<'a> {
    format: u32,
    ledger_id: &'a LedgerId,
    reason: &'a str,
    node: &'a str,
    detected_at_ms: u64,
    /// The checkpoint remembered from before.
    remembered: &'a Checkpoint,
    /// The checkpoint that contradicts it.
    received: &'a Checkpoint,
    /// The consistency proof the node gave, when one was checked.
    consistency_proof: Option<&'a ConsistencyProof>,
}

/// Why a new checkpoint cannot be accepted after the remembered one.
struct Conflict {
    reason: String,
    received: Checkpoint,
    proof: Option<ConsistencyProof>,
}

fn conflict(reason: String, received: &Checkpoint, proof: Option<ConsistencyProof>) -> Conflict {
    Conflict { reason, received: received.clone(), proof }
}

/// How a check ended, when it did not find a conflict.
#[derive(Clone, Copy)]
enum Verdict {
    /// Nothing remembered yet: the checkpoint is trusted on its signatures alone.
    First,
    /// The node's newest checkpoint is the remembered one.
    Unchanged,
    /// The node is behind the remembered checkpoint; nothing to compare.
    Behind,
    /// A newer checkpoint, consistent with the remembered one.
    Consistent,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::First => "first",
            Verdict::Unchanged => "unchanged",
            Verdict::Behind => "behind",
            Verdict::Consistent => "consistent",
        }
    }
}

struct Auditor<'a> {
    genesis: Genesis,
    state: &'a Path,
    out: &'a Out,
}

pub fn run(a: &AuditArgs, out: &Out) -> Result<(), Failure> {
    let genesis = read_genesis(&a.genesis).or_bad_input()?;
    let auditor = Auditor { genesis, state: &a.state, out };
    let remembered = auditor.load()?;
    runtime()?.block_on(async {
        let mut node = Node::connect(&a.node).await?;
        let latest = node.checkpoint(0).await?;
        let current = auditor.check(&node, remembered, latest).await?;
        if a.follow { auditor.follow(&mut node, current).await } else { Ok(()) }
    })
}

impl Auditor<'_> {
    /// Checks each checkpoint the node streams after `current`, reconnecting when the
    /// stream ends or breaks; returns only on a failed check.
    async fn follow(&self, node: &mut Node, mut current: Checkpoint) -> Result<(), Failure> {
        let mut delay = RECONNECT_DELAY_MIN;
        loop {
            let req = pb::WatchCheckpointsRequest { after_height: current.header.height };
            let mut stream = match node.client().watch_checkpoints(req).await {
                Ok(resp) => resp.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
                    self.out.note(format!("cannot watch checkpoints at {} ({}); retrying", node.addr(), s.message()));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                    continue;
                }
                Err(s) => return Err(status_failure("watch checkpoints", node.addr(), &s)),
            };
            loop {
                match stream.message().await {
                    Ok(Some(cp)) => {
                        delay = RECONNECT_DELAY_MIN;
                        let cp = decode_checkpoint(&cp)?;
                        if cp.header.height > current.header.height {
                            node.renew_deadline();
                            current = self.check(node, Some(current), cp).await?;
                        }
                    }
                    Ok(None) => {
                        self.out.note(format!("checkpoint stream from {} ended; reconnecting", node.addr()));
                        break;
                    }
                    Err(s) => {
                        self.out.note(format!("checkpoint stream from {} broke ({s}); reconnecting", node.addr()));
                        break;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
        }
    }

    /// The remembered checkpoint, if the state file exists. It must be for the genesis'
    /// ledger and still verify against its validators: an edited state file is refused.
    fn load(&self) -> Result<Option<Checkpoint>, Failure> {
        let path = self.state;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Failure::bad_input(anyhow!("read audit state {}: {e}", path.display()))),
        };
        let st: AuditState =
            serde_json::from_str(&text).with_context(|| format!("audit state {}", path.display())).or_bad_input()?;
        let bad = |why: String| Failure::bad_input(anyhow!("audit state {}: {why}", path.display()));
        if st.format != AUDIT_FILE_FORMAT {
            return Err(bad(format!("format {} is not supported (expected {AUDIT_FILE_FORMAT})", st.format)));
        }
        if st.ledger_id != self.genesis.ledger_id {
            return Err(bad(format!("is for ledger {}, the genesis for {}", st.ledger_id, self.genesis.ledger_id)));
        }
        self.verify(&st.checkpoint).map_err(|e| bad(format!("its checkpoint does not verify: {e}")))?;
        Ok(Some(st.checkpoint))
    }

    fn save(&self, cp: &Checkpoint) -> Result<(), Failure> {
        let st =
            AuditState { format: AUDIT_FILE_FORMAT, ledger_id: self.genesis.ledger_id.clone(), checkpoint: cp.clone() };
        let text = serde_json::to_string_pretty(&st).context("render audit state").or_bad_input()?;
        write_atomically(self.state, format!("{text}\n").as_bytes()).or_bad_input()
    }

    fn verify(&self, cp: &Checkpoint) -> Result<Vec<String>, veritrace_ledger::block::CheckpointError> {
        cp.verify(&self.genesis.ledger_id, &self.genesis.validator_set())
    }

    /// Checks `next` (and, if there is one, that it extends `prev`), remembers it and
    /// reports; returns the checkpoint now remembered. A conflict is reported with its
    /// evidence and fails with exit code 1.
    async fn check(&self, node: &Node, prev: Option<Checkpoint>, next: Checkpoint) -> Result<Checkpoint, Failure> {
        let h = next.header.height;
        let signers = self.verify(&next).map_err(|e| {
            Failure::verify_failed(anyhow!(
                "checkpoint at height {h} from node {} does not verify against the genesis validators: {e}",
                node.addr()
            ))
        })?;
        let Some(prev) = prev else {
            self.save(&next)?;
            self.report(&next, &signers, None, Verdict::First);
            return Ok(next);
        };
        let (p, n) = (&prev.header, &next.header);
        if n.height < p.height {
            self.out.note(format!(
                "node {} is at height {}, behind the remembered height {}: nothing new to check",
                node.addr(),
                n.height,
                p.height
            ));
            self.report(&prev, &[], Some(&prev), Verdict::Behind);
            return Ok(prev);
        }
        if n.height == p.height {
            if n.hash() == p.hash() {
                self.report(&next, &signers, Some(&prev), Verdict::Unchanged);
                return Ok(next);
            }
            let c =
                conflict(format!("two different headers at height {}, each signed by a quorum", n.height), &next, None);
            return Err(self.evidence(node, &prev, c));
        }
        match self.extends(node, &prev, &next).await? {
            Ok(()) => {}
            Err(c) => return Err(self.evidence(node, &prev, c)),
        }
        self.save(&next)?;
        self.report(&next, &signers, Some(&prev), Verdict::Consistent);
        Ok(next)
    }

    /// Whether `next` (higher) extends `prev`: the outer error is a failure to ask, the inner
    /// one a conflict.
    async fn extends(
        &self,
        node: &Node,
        prev: &Checkpoint,
        next: &Checkpoint,
    ) -> Result<Result<(), Conflict>, Failure> {
        let (p, n) = (&prev.header, &next.header);
        if n.log_size < p.log_size {
            return Ok(Err(conflict(
                format!(
                    "the log shrank from {} entries at height {} to {} at height {}",
                    p.log_size, p.height, n.log_size, n.height
                ),
                next,
                None,
            )));
        }
        let req = pb::ConsistencyProofRequest { old_size: p.log_size, new_size: n.log_size };
        let what = format!("consistency proof from log size {} to {}", p.log_size, n.log_size);
        let resp = rpc!(node, &what, consistency_proof, req)?;
        let path = resp.path.iter().map(|h| node_hash("consistency proof step", h)).collect::<Result<Vec<_>, _>>()?;
        let proof = ConsistencyProof { old_size: resp.old_size, new_size: resp.new_size, path };
        if proof.old_size != p.log_size || proof.new_size != n.log_size {
            return Ok(Err(conflict(
                format!(
                    "asked for a consistency proof from log size {} to {}, the node answered for {} to {}",
                    p.log_size, n.log_size, proof.old_size, proof.new_size
                ),
                next,
                Some(proof),
            )));
        }
        if let Err(e) = merkle::verify_consistency(p.log_size, n.log_size, &p.log_root, &n.log_root, &proof.path) {
            return Ok(Err(conflict(
                format!(
                    "the log at height {} (size {}) is not an extension of the log at height {} (size {}): consistency proof: {e}",
                    n.height, n.log_size, p.height, p.log_size
                ),
                next,
                Some(proof),
            )));
        }
        if n.height == p.height + 1 && n.prev_hash != p.hash() {
            return Ok(Err(conflict(
                format!(
                    "header {} does not follow header {}: its prev_hash is {}, not {}",
                    n.height,
                    p.height,
                    n.prev_hash,
                    p.hash()
                ),
                next,
                None,
            )));
        }
        // The same log can sit under different state roots: the node's header at the
        // remembered height must be the remembered header.
        match node.checkpoint(p.height).await {
            Ok(theirs) if theirs.header.hash() != p.hash() => {
                let signed = if self.verify(&theirs).is_ok() { "signed by a quorum" } else { "not signed by a quorum" };
                Ok(Err(conflict(
                    format!(
                        "the node's header at the remembered height {} differs from the remembered one ({signed})",
                        p.height
                    ),
                    &theirs,
                    None,
                )))
            }
            Ok(_) => Ok(Ok(())),
            Err(f) if f.code == EXIT_NOT_FOUND => Ok(Ok(())),
            Err(f) => Err(f),
        }
    }

    fn report(&self, cp: &Checkpoint, signers: &[String], prev: Option<&Checkpoint>, verdict: Verdict) {
        let h = &cp.header;
        let previous = prev.map(|p| json!({"height": p.header.height, "log_size": p.header.log_size}));
        self.out.emit(
            json!({
                "ok": true, "status": verdict.as_str(), "height": h.height, "log_size": h.log_size,
                "log_root": h.log_root.to_hex(), "header_hash": h.hash().to_hex(), "signers": signers,
                "previous": previous, "state": self.state,
            }),
            || match (verdict, prev) {
                (Verdict::Unchanged, _) => format!("no new checkpoint: still height {} (log size {})", h.height, h.log_size),
                (Verdict::Behind, _) => format!("remembered checkpoint at height {} kept", h.height),
                (Verdict::Consistent, Some(p)) => format!(
                    "checkpoint at height {} (log size {}) verified, signed by {}; consistent with height {} (log size {})",
                    h.height,
                    h.log_size,
                    signers.join(", "),
                    p.header.height,
                    p.header.log_size
                ),
                (Verdict::First | Verdict::Consistent, _) => format!(
                    "checkpoint at height {} (log size {}) verified, signed by {}; remembered in {} (nothing to compare with yet)",
                    h.height,
                    h.log_size,
                    signers.join(", "),
                    self.state.display()
                ),
            },
        );
    }

    /// Prints both checkpoints and writes them next to the state file; exit code 1.
    fn evidence(&self, node: &Node, remembered: &Checkpoint, c: Conflict) -> Failure {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let ev = Evidence {
            format: AUDIT_FILE_FORMAT,
            ledger_id: &self.genesis.ledger_id,
            reason: &c.reason,
            node: node.addr(),
            detected_at_ms: now,
            remembered,
            received: &c.received,
            consistency_proof: c.proof.as_ref(),
        };
        let name = self.state.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "audit".into());
        let file = self.state.with_file_name(format!(
            "{name}.evidence-{}-{}-{now}.json",
            remembered.header.height, c.received.header.height
        ));
        let value = serde_json::to_value(&ev).unwrap_or(Value::Null);
        let written = serde_json::to_string_pretty(&value)
            .context("render evidence")
            .and_then(|t| write_atomically(&file, format!("{t}\n").as_bytes()));
        let file_note = match &written {
            Ok(()) => json!(file),
            Err(e) => json!(format!("not written: {e:#}")),
        };
        self.out.emit(
            json!({"ok": false, "exit_code": EXIT_VERIFY_FAILED, "error": c.reason, "evidence_file": file_note, "evidence": value}),
            || {
                let pretty = |cp: &Checkpoint| serde_json::to_string_pretty(&checkpoint_json(cp)).unwrap_or_default();
                let where_ = match &written {
                    Ok(()) => format!("evidence written to {}", file.display()),
                    Err(e) => format!("evidence could not be written: {e:#}"),
                };
                format!(
                    "AUDIT FAILED: {}\nremembered checkpoint (height {}):\n{}\nreceived checkpoint (height {}):\n{}\n{where_}",
                    c.reason,
                    remembered.header.height,
                    pretty(remembered),
                    c.received.header.height,
                    pretty(&c.received)
                )
            },
        );
        Failure::reported(EXIT_VERIFY_FAILED)
    }
}
