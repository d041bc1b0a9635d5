//! EPCIS 2.0 (docs/epcis.md): `epcis export` writes the trace of a code as an EPCIS 2.0
//! JSON-LD document; `epcis import` turns the events of an EPCIS document into records,
//! signs each with the key of the organisation that made it and submits them in order.
//!
//! The mapping both ways is `veritrace_ledger::epcis`; here are the files, the keys and the
//! node. Import is all or nothing up to the node: every event is mapped and every record
//! form-checked before anything is sent, and a document with one event that cannot be a
//! record is refused whole (exit 2, each such event named with its index and reason).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use veritrace_ledger::epcis::{self, DocumentInfo, ImportedEvent, Rejection};
use veritrace_ledger::ids::SubjectId;
use veritrace_ledger::org::{KeyId, OrgId};
use veritrace_ledger::record::{Record, SignedRecord};
use veritrace_proto::v1 as pb;

use crate::client::{Node, NodeArgs, decode_entry, runtime};
use crate::exit::{EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_VERIFY_FAILED, Failure, OrExit};
use crate::local::write_atomically;
use crate::output::Out;
use crate::query::{PAGE_RECORDS_MAX, fetch_trace};
use crate::records::{commit, now_ms};

/// Largest EPCIS document `import` reads.
pub const EPCIS_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Subcommand)]
pub enum EpcisCmd {
    /// Write the trace of a code (its own, its lot's and its logistic unit's records) as an
    /// EPCIS 2.0 JSON-LD document.
    Export(ExportArgs),
    /// Sign and submit the events of an EPCIS 2.0 document as records, in document order;
    /// nothing is submitted if any event cannot be a record.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Any form of a code: canonical, GS1 Digital Link path or URI, ecode:, ccc:, custom:.
    code: SubjectId,
    /// The file to write (replaced if it exists); standard output if not given.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Records asked for per request (the whole history is always fetched).
    #[arg(long, value_name = "N", default_value_t = PAGE_RECORDS_MAX, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The EPCIS 2.0 JSON-LD document (an EPCISDocument or EPCISQueryDocument).
    file: PathBuf,
    /// A signer's key file (format in docs/cli.md); one per --as, in the same order.
    #[arg(long, value_name = "FILE", required = true)]
    key: Vec<PathBuf>,
    /// An organisation whose events this import signs, with the --key at the same position.
    /// Each event is signed by the organisation that made it (veritrace:author, or the
    /// shipper or receiver it names); an event that names none is signed by the first --as.
    #[arg(long = "as", value_name = "ORG", required = true)]
    author: Vec<OrgId>,
    /// The id of the signers' keys: once for all, or once per --as.
    #[arg(long, value_name = "ID")]
    key_id: Vec<KeyId>,
}

pub fn run(cmd: &EpcisCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        EpcisCmd::Export(a) => export(a, out),
        EpcisCmd::Import(a) => import(a, out),
    }
}

fn export(a: &ExportArgs, out: &Out) -> Result<(), Failure> {
    let code = a.code.to_string();
    let (ledger, trace, records) = runtime()?.block_on(async {
        let node = Node::connect(&a.node).await?;
        let ledger = node.ledger_id().await?;
        let (trace, records) = fetch_trace(&node, &code, a.page_size, out, decode_entry).await?;
        Ok::<_, Failure>((ledger, trace, records))
    })?;
    if trace.code != code {
        return Err(Failure::verify_failed(anyhow!("asked for the trace of {code}, the node sent {}'s", trace.code)));
    }
    let pairs: Vec<(u64, &SignedRecord)> = records.iter().map(|(i, r)| (*i, r)).collect();
    let info = DocumentInfo { ledger_id: &ledger, code: &a.code, height: trace.height, created_ms: now_ms() };
    let doc = epcis::export_document(&info, &pairs);
    let events = doc["epcisBody"]["eventList"].as_array().map_or(0, Vec::len);
    let Some(path) = &a.out else {
        // The document is the output: one line with --json, indented for people.
        let text = pretty(&doc)?;
        out.emit(doc, || text);
        return Ok(());
    };
    let mut bytes = pretty(&doc)?.into_bytes();
    bytes.push(b'\n');
    write_atomically(path, &bytes).or_bad_input()?;
    out.emit(
        json!({
            "ok": true, "file": path, "code": code, "events": events, "ledger_id": ledger.as_str(),
            "height": trace.height, "bytes": bytes.len(),
        }),
        || {
            format!(
                "wrote {}: {events} EPCIS events of {code} (ledger {ledger}, height {})",
                path.display(),
                trace.height
            )
        },
    );
    Ok(())
}

fn pretty(doc: &Value) -> Result<String, Failure> {
    serde_json::to_string_pretty(doc).context("render the document").or_exit(EXIT_VERIFY_FAILED)
}

/// The organisations an import signs for, with their keys.
struct Signers {
    orgs: Vec<OrgId>,
    key_ids: Vec<KeyId>,
}

impl Signers {
    /// `--as` and `--key-id` paired, checked before any file is read.
    fn of(a: &ImportArgs) -> Result<Signers, Failure> {
        let bad = |m: String| Failure::bad_input(anyhow!(m));
        if a.key.len() != a.author.len() {
            return Err(bad(format!("{} --key and {} --as: give one --as per --key", a.key.len(), a.author.len())));
        }
        for (i, o) in a.author.iter().enumerate() {
            if a.author[..i].contains(o) {
                return Err(bad(format!("--as {o} is given twice")));
            }
        }
        let default = KeyId::new("k1").expect("k1 is a key id");
        let key_ids = match a.key_id.len() {
            0 => vec![default; a.author.len()],
            1 => vec![a.key_id[0].clone(); a.author.len()],
            n if n == a.author.len() => a.key_id.clone(),
            n => {
                return Err(bad(format!(
                    "{n} --key-id for {} --as: give one for all, or one per --as",
                    a.author.len()
                )));
            }
        };
        Ok(Signers { orgs: a.author.clone(), key_ids })
    }
}

/// An event ready to sign: who signs it (index into [`Signers`]) and the record.
struct Planned {
    event: ImportedEvent,
    signer: usize,
    record: Record,
}

/// Maps every event and form-checks its record as its author would sign it at `time_ms`
/// (the time is set again when it is signed); the events that cannot be records.
fn plan(
    events: Vec<Result<ImportedEvent, Rejection>>,
    signers: &Signers,
    time_ms: u64,
) -> (Vec<Planned>, Vec<Rejection>) {
    let mut planned = Vec::new();
    let mut rejected = Vec::new();
    for ev in events {
        let ev = match ev {
            Ok(ev) => ev,
            Err(r) => {
                rejected.push(r);
                continue;
            }
        };
        let author = ev.author.clone().unwrap_or_else(|| signers.orgs[0].clone());
        let Some(signer) = signers.orgs.iter().position(|o| *o == author) else {
            rejected.push(Rejection {
                index: ev.index,
                event_id: ev.event_id.clone(),
                reason: format!("{author} made it; give --key FILE --as {author} to sign it"),
            });
            continue;
        };
        // The index as nonce keeps two equal events of one document two records.
        match epcis::record_of(&ev, author, signers.key_ids[signer].clone(), time_ms, u64::from(ev.index)) {
            Ok(record) => planned.push(Planned { event: ev, signer, record }),
            Err(r) => rejected.push(r),
        }
    }
    (planned, rejected)
}

fn rejection_json(r: &Rejection) -> Value {
    json!({"index": r.index, "event_id": r.event_id, "reason": r.reason})
}

fn import(a: &ImportArgs, out: &Out) -> Result<(), Failure> {
    let signers = Signers::of(a)?;
    let file = a.file.display().to_string();
    let size = std::fs::metadata(&a.file).with_context(|| format!("read {file}")).or_bad_input()?.len();
    if size > EPCIS_FILE_BYTES_MAX {
        return Err(Failure::bad_input(anyhow!("{file} is {size} bytes, at most {EPCIS_FILE_BYTES_MAX}")));
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("read {file}")).or_bad_input()?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("{file} is not json")).or_bad_input()?;
    let events = epcis::import_document(&doc).map_err(|e| Failure::bad_input(anyhow!("{file}: {e}")))?;
    let total = events.len();
    let (planned, rejected) = plan(events, &signers, now_ms());
    if !rejected.is_empty() {
        let error = format!("{} of {total} events of {file} cannot be records; nothing was submitted", rejected.len());
        if out.json {
            let list: Vec<Value> = rejected.iter().map(rejection_json).collect();
            out.emit(json!({"ok": false, "exit_code": EXIT_BAD_INPUT, "error": error, "rejected": list}), String::new);
        } else {
            eprintln!("error: {error}:");
            for r in &rejected {
                eprintln!("  {r}");
            }
        }
        return Err(Failure::reported(EXIT_BAD_INPUT));
    }
    let keys: Vec<SigningKey> = a
        .key
        .iter()
        .map(|k| veritrace_devnet::keyfile::read_key_file(k))
        .collect::<anyhow::Result<_>>()
        .or_bad_input()?;

    let mut done: Vec<Value> = Vec::with_capacity(planned.len());
    let outcome = runtime()?.block_on(async {
        let mut node = Node::connect(&a.node).await?;
        let ledger = node.ledger_id().await?;
        let bar = out.bar(planned.len() as u64, format!("importing {file}"));
        for p in &planned {
            // Each record gets its own --timeout, and is signed just before it is sent: the
            // ledger takes a record only within its time window of the applying block.
            node.renew_deadline();
            let record = Record { time_ms: now_ms(), ..p.record.clone() };
            let signed = SignedRecord::sign(&ledger, record, &keys[p.signer]);
            let receipt = commit(&node, &signed).await.map_err(|f| imported_before(f, &p.event, done.len(), total))?;
            if receipt.status != pb::ReceiptStatus::Accepted as i32 {
                return Ok::<_, Failure>((ledger, Some((p, receipt))));
            }
            done.push(json!({
                "index": p.event.index, "event_id": p.event.event_id,
                "event_time": veritrace_ledger::time::format_time(p.event.event_time_ms),
                "source_record": p.event.source_record.map(|h| h.to_hex()),
                "kind": p.record.body.kind().as_str(), "author": p.record.author, "record_id": signed.id().to_hex(),
                "log_index": receipt.log_index, "height": receipt.height, "dropped": p.event.dropped,
            }));
            bar.inc(1);
        }
        Ok((ledger, None))
    })?;
    match outcome {
        (ledger, None) => {
            out.emit(
                json!({"ok": true, "file": file, "ledger_id": ledger.as_str(), "events": total, "records": done}),
                || {
                    let mut s = format!("imported {total} events of {file} as records on ledger {ledger}:");
                    for d in &done {
                        s.push_str(&format!(
                            "\n  event {:<4} {:<18} by {:<16} record {} at log index {}",
                            d["index"].as_u64().unwrap_or_default(),
                            d["kind"].as_str().unwrap_or_default(),
                            d["author"].as_str().unwrap_or_default(),
                            d["record_id"].as_str().unwrap_or_default(),
                            d["log_index"]
                        ));
                        if let Some(dropped) = d["dropped"].as_array().filter(|l| !l.is_empty()) {
                            let names: Vec<&str> = dropped.iter().filter_map(Value::as_str).collect();
                            s.push_str(&format!(" (left out: {})", names.join(", ")));
                        }
                    }
                    s
                },
            );
            Ok(())
        }
        (_, Some((p, r))) => {
            let error = format!(
                "event {} was rejected by the ledger: {} {}: {}; the {} events before it are on the ledger, the {} \
                 from it on were not submitted",
                p.event.index,
                r.reject_code,
                r.reject_reason,
                r.message,
                done.len(),
                total - done.len()
            );
            if out.json {
                out.emit(
                    json!({
                            "ok": false, "exit_code": EXIT_REFUSED, "status": "rejected", "error": error,
                            "index": p.event.index, "event_id": p.event.event_id,
                    "event_time": veritrace_ledger::time::format_time(p.event.event_time_ms), "record_id": hex::encode(&r.record_id),
                            "reject_code": r.reject_code, "reject_reason": r.reject_reason, "message": r.message,
                            "records": done,
                        }),
                    String::new,
                );
            } else {
                eprintln!("error: {error}");
            }
            Err(Failure::reported(EXIT_REFUSED))
        }
    }
}

/// A failure while submitting event `ev`, saying how far the import got.
fn imported_before(f: Failure, ev: &ImportedEvent, done: usize, total: usize) -> Failure {
    let context = format!(
        "importing event {} ({done} of {total} events were imported before it; the rest were not submitted)",
        ev.index
    );
    Failure { code: f.code, err: f.err.map(|e| e.context(context)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veritrace_ledger::record::RecordBody;

    fn event(index: u32, author: Option<&str>) -> ImportedEvent {
        ImportedEvent {
            index,
            event_id: None,
            event_time_ms: 0,
            author: author.map(|a| OrgId::new(a).unwrap()),
            source_record: None,
            body: RecordBody::Sell(veritrace_ledger::record::Sell {
                subjects: vec!["01/09312345000012/21/S1".parse().unwrap()],
                channel: String::new(),
            }),
            dropped: vec![],
        }
    }

    #[test]
    fn events_are_signed_by_their_authors_or_the_first_signer() {
        let signers = Signers {
            orgs: vec![OrgId::new("shop").unwrap(), OrgId::new("importer").unwrap()],
            key_ids: vec![KeyId::new("k1").unwrap(), KeyId::new("k2").unwrap()],
        };
        let events = vec![Ok(event(0, Some("importer"))), Ok(event(1, None)), Ok(event(2, Some("nutri")))];
        let (planned, rejected) = plan(events, &signers, 5);
        let got: Vec<(u32, usize, &str, u64)> =
            planned.iter().map(|p| (p.event.index, p.signer, p.record.key_id.as_str(), p.record.nonce)).collect();
        assert_eq!(got, [(0, 1, "k2", 0), (1, 0, "k1", 1)]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 2);
        assert_eq!(rejected[0].reason, "nutri made it; give --key FILE --as nutri to sign it");
    }
}
