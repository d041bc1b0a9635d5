//! `veritrace import FILE`: records from a JSON-lines file, signed by one author and
//! submitted in batches (`SubmitBatch`).
//!
//! Each line is a record body in the ledger's own JSON ([`RecordBody`], the `body` that
//! `trace --json` prints), so there is no second schema. The import is all or nothing up
//! to the node: every line is parsed and form-checked before anything is sent, and a file
//! with one bad line is refused whole (exit 2, each bad line named). The ledger then
//! decides each record on its own; the summary names every rejected line with its reason.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use veritrace_ledger::org::LedgerId;
use veritrace_ledger::record::{Record, RecordBody, RecordKind, Sig, SignedRecord};
use veritrace_proto::v1 as pb;

use crate::client::{GRPC_MESSAGE_BYTES_MAX, Node, rpc, runtime};
use crate::exit::{EXIT_BAD_INPUT, EXIT_REFUSED, Failure, OrExit};
use crate::output::Out;
use crate::records::{SignArgs, commit, now_ms};

/// Largest file `import` reads.
pub const IMPORT_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most records (non-blank lines) in one file.
pub const IMPORT_RECORDS_MAX: usize = 1_000_000;
/// Most records per `SubmitBatch` (the node's limit).
pub const BATCH_RECORDS_MAX: u32 = 10_000;
/// Default of `--batch`.
const BATCH_RECORDS_DEFAULT: u32 = 500;
/// Most canonical bytes of the records of one `SubmitBatch`: half the gRPC message
/// limit, leaving room for the framing of each record.
const BATCH_BYTES_MAX: usize = GRPC_MESSAGE_BYTES_MAX / 2;
/// Bad lines printed when a file is refused; the rest are counted.
const BAD_LINES_SHOWN_MAX: usize = 100;
/// Characters of a line quoted when it is not JSON.
const LINE_QUOTE_CHARS_MAX: usize = 80;

#[derive(Args)]
pub struct ImportArgs {
    /// The JSON-lines file: one record body a line, e.g. {"ship": {"to": "logistics",
    /// "subjects": ["01/09312345000012/21/S1"]}}; blank lines are skipped.
    file: PathBuf,
    #[command(flatten)]
    sign: SignArgs,
    /// Records per SubmitBatch request.
    #[arg(long, value_name = "N", default_value_t = BATCH_RECORDS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(BATCH_RECORDS_MAX)))]
    batch: u32,
}

/// A line that is a record, ready to sign.
struct Line {
    /// 1-based line number in the file.
    number: u64,
    record: Record,
    /// Canonical bytes of the signed record (the signature has a fixed size).
    bytes: usize,
}

/// A line that is not a record.
struct BadLine {
    number: u64,
    error: String,
}

/// A record the ledger rejected.
struct Rejected {
    line: u64,
    kind: RecordKind,
    receipt: pb::Receipt,
}

/// How far the submission got.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: Vec<Rejected>,
    first_log_index: Option<u64>,
    last_log_index: Option<u64>,
    height: u64,
}

pub fn run(a: &ImportArgs, out: &Out) -> Result<(), Failure> {
    let key = veritrace_devnet::keyfile::read_key_file(&a.sign.key).or_bad_input()?;
    let file = a.file.display().to_string();
    let size = std::fs::metadata(&a.file).with_context(|| format!("read {file}")).or_bad_input()?.len();
    if size > IMPORT_FILE_BYTES_MAX {
        return Err(Failure::bad_input(anyhow!("{file} is {size} bytes, at most {IMPORT_FILE_BYTES_MAX}")));
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("read {file}")).or_bad_input()?;
    let (lines, bad) = parse(&text, &a.sign)?;
    if !bad.is_empty() {
        return Err(refuse(out, &file, lines.len() + bad.len(), &bad));
    }
    if lines.is_empty() {
        return Err(Failure::bad_input(anyhow!("{file} holds no record")));
    }
    let batches = batches(&lines, a.batch as usize);
    let total = lines.len();
    let mut tally = Tally::default();
    let ledger = runtime()?.block_on(async {
        let mut node = Node::connect(&a.sign.node).await?;
        let ledger = node.ledger_id().await?;
        let bar = out.bar(total as u64, format!("importing {file}"));
        let mut sent = 0;
        for batch in &batches {
            // Each batch gets its own --timeout, and is signed just before it is sent: the
            // ledger takes a record only within its time window of the applying block.
            node.renew_deadline();
            let before = (tally.accepted, tally.rejected.len());
            submit_batch(&node, &ledger, batch, &a.sign, &key, &mut tally)
                .await
                .map_err(|f| stopped_at(f, batch, before, total - sent - batch.len()))?;
            sent += batch.len();
            bar.inc(batch.len() as u64);
        }
        Ok::<_, Failure>(ledger)
    })?;
    summary(out, &file, &ledger, total, batches.len(), &tally)
}

/// Every non-blank line as a record of `sign`'s author, form-checked, or why it is not one.
fn parse(text: &str, sign: &SignArgs) -> Result<(Vec<Line>, Vec<BadLine>), Failure> {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = i as u64 + 1;
        if lines.len() + bad.len() == IMPORT_RECORDS_MAX {
            return Err(Failure::bad_input(anyhow!(
                "line {number}: more than {IMPORT_RECORDS_MAX} records in one file; split it"
            )));
        }
        match parse_line(line, number, sign) {
            Ok(l) => lines.push(l),
            Err(error) => bad.push(BadLine { number, error }),
        }
    }
    Ok((lines, bad))
}

/// One line: a record body in the ledger's JSON, made a record of `sign`'s author with the
/// line number added to `--nonce` (two equal lines are two records) and form-checked.
fn parse_line(line: &str, number: u64, sign: &SignArgs) -> Result<Line, String> {
    let body: RecordBody = serde_json::from_str(line).map_err(|e| json_error(&e, line))?;
    // The ledger's types ignore fields they do not know; a misspelt optional field would
    // silently go missing from the record, so any field the body does not hold is refused.
    let given: Value = serde_json::from_str(line).map_err(|e| json_error(&e, line))?;
    let held = serde_json::to_value(&body).map_err(|e| format!("cannot render the record: {e}"))?;
    if let Some(path) = unknown_field(&given, &held, String::new()) {
        return Err(format!("unknown field `{path}`"));
    }
    if body.kind() == RecordKind::Governance {
        return Err("governance records need co-signers: use `veritrace gov`".into());
    }
    let kind = body.kind();
    let record = Record {
        author: sign.author.clone(),
        key_id: sign.key_id.clone(),
        time_ms: sign.time_ms.unwrap_or_else(now_ms),
        nonce: sign
            .nonce
            .checked_add(number)
            .ok_or_else(|| format!("--nonce {} + line number overflows", sign.nonce))?,
        body,
    };
    // The size bound counts the signature, whose length is fixed: check it unsigned.
    let unsigned = SignedRecord { record, signature: Sig([0; 64]), approvals: vec![] };
    unsigned.validate_form().map_err(|e| format!("{} record: {e}", kind.as_str()))?;
    let bytes = unsigned.to_bytes().len();
    Ok(Line { number, record: unsigned.record, bytes })
}

/// The first field (as a dotted path) of `given` that `held`, the parsed value written back,
/// does not have.
fn unknown_field(given: &Value, held: &Value, path: String) -> Option<String> {
    match (given, held) {
        (Value::Object(g), Value::Object(h)) => g.iter().find_map(|(k, gv)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match h.get(k) {
                Some(hv) => unknown_field(gv, hv, p),
                None => Some(p),
            }
        }),
        (Value::Array(g), Value::Array(h)) => {
            g.iter().zip(h).enumerate().find_map(|(i, (gv, hv))| unknown_field(gv, hv, format!("{path}[{i}]")))
        }
        _ => None,
    }
}

/// serde's message without its position (always line 1 of the one line parsed); text
/// that is not JSON at all is quoted, since the message cannot name it.
fn json_error(e: &serde_json::Error, line: &str) -> String {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let mut quote: String = line.chars().take(LINE_QUOTE_CHARS_MAX).collect();
            if quote.len() < line.len() {
                quote.push('…');
            }
            format!("not json ({msg} at column {}): {quote:?}", e.column())
        }
        _ => format!("{msg} (column {})", e.column()),
    }
}

/// The lines cut into batches of at most `records` records and [`BATCH_BYTES_MAX`] bytes.
fn batches(lines: &[Line], records: usize) -> Vec<&[Line]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, l) in lines.iter().enumerate() {
        if i > start && (i - start == records || bytes + l.bytes > BATCH_BYTES_MAX) {
            out.push(&lines[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += l.bytes;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

/// Signs and submits one batch, waits for every record's receipt, and counts them.
async fn submit_batch(
    node: &Node,
    ledger: &LedgerId,
    batch: &[Line],
    sign: &SignArgs,
    key: &SigningKey,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let time_ms = sign.time_ms.unwrap_or_else(now_ms);
    let signed: Vec<SignedRecord> =
        batch.iter().map(|l| SignedRecord::sign(ledger, Record { time_ms, ..l.record.clone() }, key)).collect();
    let req = pb::SubmitBatchRequest {
        signed_records: signed.iter().map(SignedRecord::to_bytes).collect(),
        wait_for_commit: true,
    };
    let resp = rpc!(node, "submit batch", submit_batch, req)?;
    if resp.receipts.len() != signed.len() {
        return Err(Failure::verify_failed(anyhow!(
            "node {} sent {} receipts for {} records",
            node.addr(),
            resp.receipts.len(),
            signed.len()
        )));
    }
    for ((line, s), mut receipt) in batch.iter().zip(&signed).zip(resp.receipts) {
        let id = s.id();
        if receipt.record_id != id.as_bytes() {
            return Err(Failure::verify_failed(anyhow!(
                "node {} sent the receipt of record {} for record {id} (line {})",
                node.addr(),
                hex::encode(&receipt.record_id),
                line.number
            )));
        }
        if receipt.status == pb::ReceiptStatus::Pending as i32 {
            // Queued at the leader, not yet decided: the same bytes again get its receipt
            // once it is (a duplicate is never a second record).
            receipt = commit(node, s).await?;
        }
        match pb::ReceiptStatus::try_from(receipt.status) {
            Ok(pb::ReceiptStatus::Accepted) => {
                tally.accepted += 1;
                tally.first_log_index.get_or_insert(receipt.log_index);
                tally.last_log_index = Some(receipt.log_index);
            }
            Ok(pb::ReceiptStatus::Rejected) => tally.rejected.push(Rejected {
                line: line.number,
                kind: line.record.body.kind(),
                receipt: receipt.clone(),
            }),
            _ => {
                return Err(Failure::verify_failed(anyhow!(
                    "the node sent a receipt with status {} for record {id} (line {})",
                    receipt.status,
                    line.number
                )));
            }
        }
        tally.height = tally.height.max(receipt.height);
    }
    Ok(())
}

/// A failure while submitting `batch`, saying how far the import got: `before` records
/// were accepted and rejected before it, and `after` lines come after it.
fn stopped_at(f: Failure, batch: &[Line], before: (u64, usize), after: usize) -> Failure {
    let (first, last) = (batch[0].number, batch[batch.len() - 1].number);
    let context = format!(
        "importing lines {first} to {last}: before them {} records were accepted and {} rejected; the outcome of \
         these {} and the {after} after them is not known",
        before.0,
        before.1,
        batch.len(),
    );
    Failure { code: f.code, err: f.err.map(|e| e.context(context)) }
}

/// Reports the lines that are not records; nothing was submitted (exit 2).
fn refuse(out: &Out, file: &str, records: usize, bad: &[BadLine]) -> Failure {
    let error = format!("{} of {records} lines of {file} are not records; nothing was submitted", bad.len());
    let shown = &bad[..bad.len().min(BAD_LINES_SHOWN_MAX)];
    if out.json {
        let list: Vec<Value> = shown.iter().map(|b| json!({"line": b.number, "error": b.error})).collect();
        out.emit(
            json!({"ok": false, "exit_code": EXIT_BAD_INPUT, "error": error, "bad_lines": list, "bad_line_count": bad.len()}),
            String::new,
        );
    } else {
        eprintln!("error: {error}:");
        for b in shown {
            eprintln!("  line {}: {}", b.number, b.error);
        }
        if bad.len() > shown.len() {
            eprintln!("  ... and {} more", bad.len() - shown.len());
        }
    }
    Failure::reported(EXIT_BAD_INPUT)
}

/// Prints the summary; exit 3 if the ledger rejected any record.
fn summary(out: &Out, file: &str, ledger: &LedgerId, total: usize, batches: usize, t: &Tally) -> Result<(), Failure> {
    let rejected: Vec<Value> = t
        .rejected
        .iter()
        .map(|r| {
            json!({
                "line": r.line, "kind": r.kind.as_str(), "record_id": hex::encode(&r.receipt.record_id),
                "height": r.receipt.height, "reject_code": r.receipt.reject_code,
                "reject_reason": r.receipt.reject_reason, "message": r.receipt.message,
            })
        })
        .collect();
    let ok = t.rejected.is_empty();
    let mut v = json!({
        "ok": ok, "file": file, "ledger_id": ledger.as_str(), "records": total, "batches": batches,
        "accepted": t.accepted, "rejected": rejected, "first_log_index": t.first_log_index,
        "last_log_index": t.last_log_index, "height": t.height,
    });
    if !ok {
        v["exit_code"] = json!(EXIT_REFUSED);
    }
    out.emit(v, || {
        let mut s = format!("imported {file} on ledger {ledger}: {} of {total} records accepted", t.accepted);
        if let (Some(first), Some(last)) = (t.first_log_index, t.last_log_index) {
            s.push_str(&format!(" (log index {first} to {last}, height {})", t.height));
        }
        if !ok {
            s.push_str(&format!(", {} rejected:", t.rejected.len()));
            for r in &t.rejected {
                s.push_str(&format!(
                    "\n  line {}: {} record {}: {} {}: {}",
                    r.line,
                    r.kind.as_str(),
                    hex::encode(&r.receipt.record_id),
                    r.receipt.reject_code,
                    r.receipt.reject_reason,
                    r.receipt.message
                ));
            }
        }
        s
    });
    if ok { Ok(()) } else { Err(Failure::reported(EXIT_REFUSED)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeArgs;
    use veritrace_ledger::org::{KeyId, OrgId};

    fn sign() -> SignArgs {
        SignArgs {
            node: NodeArgs { node: "127.0.0.1:1".into(), timeout: 1 },
            key: PathBuf::from("k.key"),
            author: OrgId::new("nutri").unwrap(),
            key_id: KeyId::new("k1").unwrap(),
            time_ms: Some(5),
            nonce: 10,
        }
    }

    const RANGE: &str = r#"{"issue_codes": {"product": {"gtin": "09312345000012", "name": "Formula"}, "lot": "M1",
        "production_date": "2026-01-10", "codes": {"range": {"prefix": "M1-", "start": 0, "count": 1000000, "width": 7}}}}"#;

    #[test]
    fn lines_become_records_or_are_named_with_their_fault() {
        let range = RANGE.replace('\n', " ");
        let text = format!(
            "{range}\n\n{{\"sell\": {{\"subjects\": [\"01/09312345000013/21/S1\"]}}}}\nnot json at all\n\
             {{\"shipp\": {{}}}}\n{}\n{{\"sell\": {{\"subjects\": [\"01/09312345000012/21/S1\"]}}}}\n\
             {{\"sell\": {{\"subjects\": [\"01/09312345000012/21/S2\"], \"chanel\": \"x\"}}}}\n",
            range.replace("1000000", "0")
        );
        let (lines, bad) = parse(&text, &sign()).unwrap_or_else(|_| panic!("parse"));
        let good: Vec<(u64, u64)> = lines.iter().map(|l| (l.number, l.record.nonce)).collect();
        assert_eq!(good, [(1, 11), (7, 17)]);
        assert!(matches!(&lines[0].record.body, RecordBody::IssueCodes(i) if i.codes.count() == 1_000_000));
        let errors: Vec<(u64, &str)> = bad.iter().map(|b| (b.number, b.error.as_str())).collect();
        assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [3, 4, 5, 6, 8]);
        assert!(errors[0].1.contains("\"09312345000013\"") && errors[0].1.contains("check digit"), "{errors:?}");
        assert!(errors[1].1.starts_with("not json") && errors[1].1.contains("\"not json at all\""), "{errors:?}");
        assert!(errors[2].1.contains("unknown variant `shipp`"), "{errors:?}");
        assert!(errors[3].1.contains("count is 0"), "{errors:?}");
        assert_eq!(errors[4].1, "unknown field `sell.chanel`");
    }

    #[test]
    fn batches_are_bounded_by_records_and_bytes() {
        let text =
            (0..7).map(|_| r#"{"sell": {"subjects": ["01/09312345000012/21/S1"]}}"#).collect::<Vec<_>>().join("\n");
        let (lines, _) = parse(&text, &sign()).unwrap_or_else(|_| panic!("parse"));
        let sizes: Vec<usize> = batches(&lines, 3).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        let mut big = lines;
        for l in &mut big {
            l.bytes = BATCH_BYTES_MAX / 2;
        }
        let sizes: Vec<usize> = batches(&big, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
    }
}
