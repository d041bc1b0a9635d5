//! Reading the ledger through a node: status, receipts, traces, recall impact, an
//! organisation's records, checkpoints, inclusion proofs and trace bundles.
//!
//! Nothing a node sends is shown as fact before it is checked as far as it can be here:
//! records must hash to their ids, checkpoints must decode and agree with their fields,
//! proofs are verified locally against a checkpoint (whose signatures are checked against a
//! genesis when `--genesis` is given), bundles are decoded (and verified with `--genesis`)
//! before they are written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use serde_json::{Value, json};
use veritrace_ledger::block::Checkpoint;
use veritrace_ledger::bundle::verify_bundle;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::merkle;
use veritrace_ledger::org::{Genesis, OrgId};
use veritrace_ledger::time::format_time;
use veritrace_proto::v1 as pb;

use crate::client::{Node, NodeArgs, decode_entry, node_hash, parse_record_id, rpc, runtime};
use crate::exit::{EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_VERIFY_FAILED, Failure, OrExit};
use crate::local::{parse_bundle, read_genesis, write_atomically};
use crate::output::Out;
use crate::records::report_receipt;
use crate::render::summary;

/// Records asked for per page (the API's maximum).
pub const PAGE_RECORDS_MAX: u32 = 1000;
/// Most records one trace holds in memory; a longer history is refused rather than paged
/// forever (or a node that keeps handing out tokens followed until memory runs out).
const TRACE_RECORDS_MAX: usize = 1_000_000;
/// How often `proof` asks whether a checkpoint covers the record yet.
const CHECKPOINT_POLL: Duration = Duration::from_millis(300);

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args)]
pub struct ReceiptArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The record id, 64 hex digits.
    #[arg(value_parser = parse_record_id)]
    record_id: Hash32,
}

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Any form of a code: canonical, GS1 Digital Link path or URI, ecode:, ccc:, custom:.
    code: SubjectId,
    /// Records asked for per request (the whole history is always fetched).
    #[arg(long, value_name = "N", default_value_t = PAGE_RECORDS_MAX, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

#[derive(Args)]
pub struct RecallImpactArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The lot, 01/GTIN/10/LOT (or its Digital Link URI).
    #[arg(value_parser = parse_lot)]
    lot: SubjectId,
}

#[derive(Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The organisation whose records to list.
    #[arg(long, value_name = "ORG")]
    org: OrgId,
    /// First log index to list.
    #[arg(long, value_name = "INDEX", default_value_t = 0)]
    from: u64,
    /// Most records to list; where to continue is printed when there are more.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: u64,
    /// Records asked for per request.
    #[arg(long, value_name = "N", default_value_t = PAGE_RECORDS_MAX, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

#[derive(Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The block height (default: the latest complete checkpoint).
    #[arg(long, value_name = "H", default_value_t = 0)]
    height: u64,
    /// Verify the signatures against this genesis' validators (exit 1 if they fall short).
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProofArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The record id, 64 hex digits.
    #[arg(value_parser = parse_record_id)]
    record_id: Hash32,
    /// Also verify the checkpoint's signatures against this genesis' validators.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

#[derive(Args)]
pub struct BundleArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The code: any form `code parse` accepts.
    code: SubjectId,
    /// The file to write (replaced if it exists).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// The compact binary form instead of JSON.
    #[arg(long)]
    compact: bool,
    /// The checkpoint height to build it at (default: the latest complete checkpoint).
    #[arg(long, value_name = "H", default_value_t = 0)]
    height: u64,
    /// Verify the bundle against this genesis before writing it (exit 1 if it fails).
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
}

fn parse_lot(s: &str) -> Result<SubjectId, String> {
    match s.parse::<SubjectId>() {
        Ok(lot @ SubjectId::Lot { .. }) => Ok(lot),
        Ok(other) => Err(format!("{other} is not a lot (01/GTIN/10/LOT)")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn status(a: &StatusArgs, out: &Out) -> Result<(), Failure> {
    let s = runtime()?.block_on(async { Node::connect(&a.node).await?.status().await })?;
    out.emit(
        json!({
            "ok": true, "ledger_id": s.ledger_id, "node_id": s.node_id, "role": s.role, "leader": s.leader,
            "height": s.height, "log_size": s.log_size, "log_root": hex::encode(&s.log_root),
            "state_root": hex::encode(&s.state_root),
            "complete_checkpoint_height": s.complete_checkpoint_height,
            "peers": s.peers, "voters": s.voters, "learners": s.learners,
            "raft_last_log_index": s.raft_last_log_index, "raft_applied_index": s.raft_applied_index,
            "raft_snapshot_index": s.raft_snapshot_index, "raft_purged_index": s.raft_purged_index,
        }),
        || {
            let leader = if s.leader.is_empty() { "none".to_string() } else { s.leader.clone() };
            format!(
                "node {} ({}) of ledger {}, leader {leader}\n\
                 height {}, log size {}, complete checkpoint at height {}\n\
                 log root   {}\nstate root {}\n\
                 raft log to index {}, applied {}, snapshot at {}, purged to {}\n\
                 voters {}\nlearners {}\nconnected peers {}",
                s.node_id,
                s.role,
                s.ledger_id,
                s.height,
                s.log_size,
                s.complete_checkpoint_height,
                hex::encode(&s.log_root),
                hex::encode(&s.state_root),
                s.raft_last_log_index,
                s.raft_applied_index,
                s.raft_snapshot_index,
                s.raft_purged_index,
                s.voters.join(", "),
                if s.learners.is_empty() { "none".into() } else { s.learners.join(", ") },
                s.peers.len()
            )
        },
    );
    Ok(())
}

pub fn receipt(a: &ReceiptArgs, out: &Out) -> Result<(), Failure> {
    let req = pb::GetReceiptRequest { record_id: a.record_id.as_bytes().to_vec() };
    let r = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        rpc!(node, &format!("receipt of record {}", a.record_id), get_receipt, req)
    })?;
    report_receipt(out, None, &r)
}

/// A record a node returned, checked (its bytes hash to its id), as JSON and as a line.
struct Entry {
    json: Value,
    line: String,
}

fn entry(e: &pb::RecordEntry) -> Result<Entry, Failure> {
    let record = decode_entry(e)?;
    let r = &record.record;
    let json = json!({
        "log_index": e.log_index, "height": e.height, "record_id": hex::encode(&e.record_id),
        "kind": r.body.kind().as_str(), "author": r.author, "time_ms": r.time_ms, "record": record,
    });
    let line = format!(
        "{:>8}  {}  {:<18} {:<16} {}",
        e.log_index,
        format_time(r.time_ms),
        r.body.kind().as_str(),
        r.author.as_str(),
        summary(&record)
    );
    Ok(Entry { json, line })
}

fn subject_json(s: &pb::SubjectView) -> Value {
    json!({
        "subject": s.subject, "has_state": s.has_state, "status": s.status, "custodian": s.custodian,
        "in_transit_to": s.in_transit_to, "lot": s.lot, "parent": s.parent, "origin": s.origin,
        "units": s.units, "record_count": s.record_count, "chain": hex::encode(&s.chain),
        "customs_cleared": s.customs_cleared,
    })
}

fn subject_line(s: &pb::SubjectView) -> String {
    if !s.has_state {
        return format!("  {:<44} no entry of its own: moves with its lot", s.subject);
    }
    let mut line = format!(
        "  {:<44} {:<10} custodian {:<16} units {:<8} records {}",
        s.subject, s.status, s.custodian, s.units, s.record_count
    );
    if !s.in_transit_to.is_empty() {
        line.push_str(&format!(", in transit to {}", s.in_transit_to));
    }
    if !s.parent.is_empty() {
        line.push_str(&format!(", packed in {}", s.parent));
    }
    if s.customs_cleared {
        line.push_str(", customs cleared");
    }
    line
}

/// The whole history of `code`, page by page (`page_size` records each), every record
/// checked against its id and kept as `keep` makes it: the first page's answer (code,
/// subjects, status, height) and the records in log order. A node that sends records out
/// of order, repeats a page token or pages past [`TRACE_RECORDS_MAX`] is refused.
pub async fn fetch_trace<T>(
    node: &Node,
    code: &str,
    page_size: u32,
    out: &Out,
    mut keep: impl FnMut(&pb::RecordEntry) -> Result<T, Failure>,
) -> Result<(pb::TraceResponse, Vec<(u64, T)>), Failure> {
    let spinner = out.spinner(format!("tracing {code}"));
    let mut first: Option<pb::TraceResponse> = None;
    let mut records: Vec<(u64, T)> = Vec::new();
    let mut token = String::new();
    let mut page = 0u64;
    loop {
        page += 1;
        let req = pb::TraceRequest { code: code.to_string(), page_token: token.clone(), limit: page_size };
        let mut resp = rpc!(node, &format!("trace {code}"), trace, req)?;
        for e in &resp.records {
            if records.last().is_some_and(|(i, _)| *i >= e.log_index) {
                return Err(Failure::verify_failed(anyhow!(
                    "trace of {code}: the node sent log index {} out of order",
                    e.log_index
                )));
            }
            records.push((e.log_index, keep(e)?));
        }
        if records.len() > TRACE_RECORDS_MAX {
            return Err(Failure::new(
                EXIT_UNAVAILABLE,
                anyhow!("trace of {code}: more than {TRACE_RECORDS_MAX} records; export a bundle or page the API"),
            ));
        }
        spinner.set_message(format!("tracing {code}: {} records, page {page}", records.len()));
        let next = std::mem::take(&mut resp.next_page_token);
        resp.records.clear();
        first.get_or_insert(resp);
        if next.is_empty() {
            spinner.finish_and_clear();
            let first = first.ok_or_else(|| Failure::new(EXIT_UNAVAILABLE, anyhow!("trace of {code}: no answer")))?;
            return Ok((first, records));
        }
        if next == token {
            return Err(Failure::new(
                EXIT_UNAVAILABLE,
                anyhow!("trace of {code}: the node repeated page token {next:?}"),
            ));
        }
        token = next;
    }
}

pub fn trace(a: &TraceArgs, out: &Out) -> Result<(), Failure> {
    let code = a.code.to_string();
    let (t, records) = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        fetch_trace(&node, &code, a.page_size, out, entry).await
    })?;
    out.emit(
        json!({
            "ok": true, "code": t.code, "effective_status": t.effective_status, "height": t.height,
            "subjects": t.subjects.iter().map(subject_json).collect::<Vec<_>>(),
            "records": records.iter().map(|(_, e)| e.json.clone()).collect::<Vec<_>>(),
        }),
        || {
            let mut s = format!("{}: {} (ledger height {})\n", t.code, t.effective_status, t.height);
            for v in &t.subjects {
                s.push_str(&subject_line(v));
                s.push('\n');
            }
            s.push_str(&format!("history, {} records:\n", records.len()));
            s.push_str(&format!("{:>8}  {:<24}  {:<18} {:<16} {}\n", "log", "time (UTC)", "kind", "author", "what"));
            for (_, e) in &records {
                s.push_str(&e.line);
                s.push('\n');
            }
            s.trim_end().to_string()
        },
    );
    Ok(())
}

pub fn recall_impact(a: &RecallImpactArgs, out: &Out) -> Result<(), Failure> {
    let lot = a.lot.to_string();
    let req = pb::RecallImpactRequest { lot: lot.clone() };
    let r = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        rpc!(node, &format!("recall impact of {lot}"), recall_impact, req)
    })?;
    let holdings: Vec<Value> =
        r.holdings.iter().map(|h| json!({"custodian": h.custodian, "units": h.units, "status": h.status})).collect();
    out.emit(
        json!({"ok": true, "lot": r.lot, "total_units": r.total_units, "height": r.height, "holdings": holdings}),
        || {
            let mut s = format!("{}: {} units (ledger height {})\n", r.lot, r.total_units, r.height);
            for h in &r.holdings {
                s.push_str(&format!("  {:<18} {:>10} units  {}\n", h.custodian, h.units, h.status));
            }
            s.trim_end().to_string()
        },
    );
    Ok(())
}

pub fn records(a: &RecordsArgs, out: &Out) -> Result<(), Failure> {
    let org = a.org.to_string();
    let (list, next) = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        let spinner = out.spinner(format!("records of {org}"));
        let mut list = Vec::new();
        let mut from = a.from;
        loop {
            let left = a.limit - list.len() as u64;
            if left == 0 {
                break;
            }
            let limit = left.min(u64::from(a.page_size)) as u32;
            let req = pb::RecordsByOrgRequest { org: org.clone(), from, limit };
            let page = rpc!(node, &format!("records of {org}"), records_by_org, req)?;
            for e in &page.records {
                if e.log_index < from {
                    return Err(Failure::verify_failed(anyhow!(
                        "records of {org}: the node sent log index {} before {from}",
                        e.log_index
                    )));
                }
                list.push(entry(e)?);
            }
            spinner.set_message(format!("records of {org}: {}", list.len()));
            if page.next_from == 0 || page.records.is_empty() {
                from = 0;
                break;
            }
            if page.next_from <= from {
                return Err(Failure::new(
                    EXIT_UNAVAILABLE,
                    anyhow!("records of {org}: the node's next page starts at {}, not after {from}", page.next_from),
                ));
            }
            from = page.next_from;
        }
        spinner.finish_and_clear();
        Ok::<_, Failure>((list, from))
    })?;
    out.emit(
        json!({
            "ok": true, "org": org, "records": list.iter().map(|e| e.json.clone()).collect::<Vec<_>>(),
            "next_from": if next == 0 { Value::Null } else { json!(next) },
        }),
        || {
            let mut s = format!("{} records by {org}\n", list.len());
            for e in &list {
                s.push_str(&e.line);
                s.push('\n');
            }
            if next != 0 {
                s.push_str(&format!("more: --from {next}\n"));
            }
            s.trim_end().to_string()
        },
    );
    Ok(())
}

/// A checkpoint as JSON for output (header fields, signatures, hash).
pub fn checkpoint_json(cp: &Checkpoint) -> Value {
    json!({
        "height": cp.header.height, "header_hash": cp.header.hash().to_hex(),
        "log_size": cp.header.log_size, "log_root": cp.header.log_root.to_hex(),
        "state_root": cp.header.state_root.to_hex(), "time_ms": cp.header.time_ms,
        "checkpoint": cp,
    })
}

/// Verifies `cp` against the genesis validators; returns the organisations counted.
fn verify_with_genesis(cp: &Checkpoint, genesis: &Genesis) -> Result<Vec<String>, Failure> {
    cp.verify(&genesis.ledger_id, &genesis.validator_set())
        .map_err(|e| Failure::verify_failed(anyhow!("checkpoint at height {} does not verify: {e}", cp.header.height)))
}

fn load_genesis(path: Option<&Path>) -> Result<Option<Genesis>, Failure> {
    path.map(|p| read_genesis(p).or_bad_input()).transpose()
}

pub fn checkpoint(a: &CheckpointArgs, out: &Out) -> Result<(), Failure> {
    let genesis = load_genesis(a.genesis.as_deref())?;
    let cp = runtime()?.block_on(async { Node::connect(&a.node).await?.checkpoint(a.height).await })?;
    let signers = genesis.as_ref().map(|g| verify_with_genesis(&cp, g)).transpose()?;
    let mut v = checkpoint_json(&cp);
    v["ok"] = json!(true);
    v["verified_signers"] = json!(signers);
    let h = &cp.header;
    out.emit(v, || {
        let nodes: Vec<&str> = cp.signatures.iter().map(|s| s.node_id.as_str()).collect();
        let verdict = match &signers {
            Some(orgs) => format!("verified: signed by a quorum of the genesis validators ({})", orgs.join(", ")),
            None => "signatures not checked (give --genesis to check them)".to_string(),
        };
        format!(
            "checkpoint at height {} of ledger {}, {}\nheader hash {}\nlog size {}, log root {}\nstate root {}\n\
             proposer {}, signatures from {}\n{verdict}",
            h.height,
            h.ledger_id,
            format_time(h.time_ms),
            h.hash(),
            h.log_size,
            h.log_root,
            h.state_root,
            h.proposer,
            nodes.join(", ")
        )
    });
    Ok(())
}

pub fn proof(a: &ProofArgs, out: &Out) -> Result<(), Failure> {
    let genesis = load_genesis(a.genesis.as_deref())?;
    let id = a.record_id;
    let (entry, cp, resp) = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        let req = pb::GetRecordRequest { which: Some(pb::get_record_request::Which::RecordId(id.as_bytes().to_vec())) };
        let entry = rpc!(node, &format!("record {id}"), get_record, req)?;
        // The proof is asked at the size of a complete checkpoint, so the root it leads to is
        // one the validators signed; wait for one that covers the record.
        let spinner = out.spinner(format!("waiting for a checkpoint that covers log index {}", entry.log_index));
        let cp = loop {
            match node.checkpoint(0).await {
                Ok(cp) if cp.header.log_size > entry.log_index => break cp,
                Ok(_) => {}
                Err(f) if f.code == EXIT_NOT_FOUND => {} // none complete yet
                Err(f) => return Err(f),
            }
            let what = format!("no complete checkpoint covers log index {} yet", entry.log_index);
            node.pause_or_give_up(CHECKPOINT_POLL, &what).await?;
        };
        spinner.finish_and_clear();
        let req = pb::InclusionProofRequest {
            which: Some(pb::inclusion_proof_request::Which::RecordId(id.as_bytes().to_vec())),
            log_size: cp.header.log_size,
        };
        let resp = rpc!(node, &format!("inclusion proof of {id}"), inclusion_proof, req)?;
        Ok::<_, Failure>((entry, cp, resp))
    })?;
    let record = decode_entry(&entry)?;
    if record.id() != id {
        return Err(Failure::verify_failed(anyhow!("the node sent record {} for {id}", record.id())));
    }
    let signers = genesis.as_ref().map(|g| verify_with_genesis(&cp, g)).transpose()?;
    let leaf = merkle::leaf_hash(id.as_bytes());
    let path = resp.path.iter().map(|p| node_hash("proof step", p)).collect::<Result<Vec<_>, _>>()?;
    let h = &cp.header;
    let fail = |why: String| Failure::verify_failed(anyhow!("inclusion proof of record {id}: {why}"));
    if resp.log_index != entry.log_index || resp.log_size != h.log_size {
        return Err(fail(format!(
            "asked for leaf {} in a log of size {}, got leaf {} of size {}",
            entry.log_index, h.log_size, resp.log_index, resp.log_size
        )));
    }
    if !resp.leaf_hash.is_empty() && resp.leaf_hash != leaf.as_bytes() {
        return Err(fail(format!("the node's leaf hash {} is not {leaf}", hex::encode(&resp.leaf_hash))));
    }
    if !resp.root.is_empty() && resp.root != h.log_root.as_bytes() {
        return Err(fail(format!(
            "the node's root {} is not the checkpoint's {}",
            hex::encode(&resp.root),
            h.log_root
        )));
    }
    merkle::verify_inclusion(&leaf, resp.log_index, h.log_size, &path, &h.log_root).map_err(|e| fail(e.to_string()))?;
    out.emit(
        json!({
            "ok": true, "record_id": id.to_hex(), "kind": record.record.body.kind().as_str(),
            "author": record.record.author, "log_index": resp.log_index, "log_size": h.log_size,
            "leaf_hash": leaf.to_hex(), "path": path, "root": h.log_root.to_hex(),
            "checkpoint_height": h.height, "verified_signers": signers,
        }),
        || {
            let trust = match &signers {
                Some(orgs) => format!("signed by a quorum of the genesis validators ({})", orgs.join(", ")),
                None => "its signatures not checked (give --genesis to check them)".into(),
            };
            format!(
                "record {id} ({} by {}) is leaf {} of the log of size {}: proof of {} hashes verified\n\
                 root {} of the checkpoint at height {}, {trust}",
                record.record.body.kind().as_str(),
                record.record.author,
                resp.log_index,
                h.log_size,
                path.len(),
                h.log_root,
                h.height
            )
        },
    );
    Ok(())
}

pub fn bundle(a: &BundleArgs, out: &Out) -> Result<(), Failure> {
    let genesis = load_genesis(a.genesis.as_deref())?;
    let code = a.code.to_string();
    let format = if a.compact { pb::BundleFormat::Compact } else { pb::BundleFormat::Json };
    let req = pb::GetBundleRequest { code: code.clone(), format: format as i32, height: a.height };
    let resp = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        let spinner = out.spinner(format!("fetching the bundle of {code}"));
        let r = rpc!(node, &format!("bundle of {code}"), get_bundle, req);
        spinner.finish_and_clear();
        r
    })?;
    let b = parse_bundle(&resp.bundle)
        .with_context(|| format!("the node's bundle of {code}"))
        .or_exit(EXIT_VERIFY_FAILED)?;
    if b.code != a.code {
        return Err(Failure::verify_failed(anyhow!("asked for the bundle of {code}, the node sent {}'s", b.code)));
    }
    let verdict = match &genesis {
        Some(g) => Some(
            verify_bundle(&b, &g.validator_set())
                .map_err(|e| Failure::verify_failed(anyhow!("the node's bundle of {code} does not verify: {e}")))?,
        ),
        None => None,
    };
    write_atomically(&a.out, &resp.bundle).or_bad_input()?;
    let height = b.checkpoint.header.height;
    out.emit(
        json!({
            "ok": true, "file": a.out, "code": code, "format": if a.compact { "compact" } else { "json" },
            "bytes": resp.bundle.len(), "records": b.records.len(), "height": height, "verdict": verdict,
        }),
        || {
            let check = match &verdict {
                Some(v) => format!("verified against the genesis: signed by {}", v.signers.join(", ")),
                None => format!("check it with `veritrace verify {} --genesis GENESIS`", a.out.display()),
            };
            format!(
                "wrote {} ({} bytes): bundle of {code}, {} records, checkpoint at height {height}\n{check}",
                a.out.display(),
                resp.bundle.len(),
                b.records.len()
            )
        },
    );
    Ok(())
}
