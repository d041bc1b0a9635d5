//! One command per record kind: build the record from flags, check its form here (so a
//! bad value is named before anything is sent), sign it for the node's ledger with the
//! author's key (and co-signers' for governance), submit it, wait for it to commit, and
//! print the receipt.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::{ArgGroup, Args};
use ed25519_dalek::SigningKey;
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Gtin, Lot, Serial, SerialRange, Sscc, SubjectId};
use veritrace_ledger::org::{KeyId, OrgId};
use veritrace_ledger::record::{
    Aggregation, CertifyConformity, CodeSet, InspectionReport, IssueCodes, Product, Receive, Record, RecordBody,
    RegulatoryAction, RegulatoryKind, Sell, Ship, SignedRecord, TestItem, Verdict,
};
use veritrace_proto::v1 as pb;

use crate::client::{Node, NodeArgs, rpc, runtime, status_failure, try_rpc};
use crate::exit::{EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_VERIFY_FAILED, Failure, OrExit};
use crate::output::Out;

/// How often a pending receipt is asked for again.
const RECEIPT_POLL: Duration = Duration::from_millis(250);

/// Who signs, and where the record goes.
#[derive(Args, Debug)]
pub struct SignArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The author's key file (format in docs/cli.md).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The organisation that makes the record.
    #[arg(long = "as", value_name = "ORG")]
    pub author: OrgId,
    /// The id of the author's key in its organisation's entry.
    #[arg(long, value_name = "ID", default_value = "k1")]
    pub key_id: KeyId,
    /// The record's time in unix ms (default: now). The ledger refuses a time further than
    /// its window (genesis `record_time_window_ms`) from the block's.
    #[arg(long, value_name = "MS")]
    pub time_ms: Option<u64>,
    /// Makes two otherwise identical records distinct (they would share an id).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub nonce: u64,
}

/// A co-signer of a governance record, with its key read from disk.
pub struct Cosigner {
    pub org: OrgId,
    pub key_id: KeyId,
    pub key: SigningKey,
}

#[derive(Args)]
#[command(group(ArgGroup::new("codes").required(true).args(["serials", "serial", "code"])))]
pub struct IssueArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// The product's GTIN (8, 12, 13 or 14 digits with its check digit).
    #[arg(long)]
    gtin: Gtin,
    /// The lot (batch) number.
    #[arg(long)]
    lot: Lot,
    #[arg(long, value_name = "YYYY-MM-DD")]
    production_date: String,
    #[arg(long, value_name = "YYYY-MM-DD")]
    expiry_date: Option<String>,
    /// Product name.
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "")]
    model: String,
    #[arg(long, default_value = "")]
    spec: String,
    /// The executive (product) standard, e.g. "GB 10765-2021".
    #[arg(long, default_value = "")]
    standard: String,
    /// Where the items were made.
    #[arg(long, default_value = "")]
    factory: String,
    /// Issue a serial range: serial i is PREFIX followed by (--from + i) zero-padded to
    /// --width digits, for i < --count. Constant size for up to 10,000,000 codes.
    #[arg(long, value_name = "PREFIX", requires_all = ["width", "count"])]
    serials: Option<String>,
    /// Digits of the range's numbers.
    #[arg(long, value_name = "W", requires = "serials")]
    width: Option<u8>,
    /// First number of the range (default 0).
    #[arg(long = "from", value_name = "N", requires = "serials")]
    start: Option<u64>,
    /// How many serials the range holds.
    #[arg(long, value_name = "C", requires = "serials")]
    count: Option<u64>,
    /// Issue listed serials instead (repeatable).
    #[arg(long = "serial", value_name = "SERIAL")]
    serial: Vec<Serial>,
    /// Issue listed codes of other schemes instead: ecode:, ccc:, custom: (repeatable).
    #[arg(long = "code", value_name = "CODE")]
    code: Vec<SubjectId>,
}

#[derive(Args)]
pub struct CertifyArgs {
    #[command(flatten)]
    sign: SignArgs,
    #[arg(long)]
    gtin: Gtin,
    #[arg(long)]
    lot: Lot,
    #[arg(long, value_name = "NUMBER")]
    certificate_no: String,
    /// The standard the lot conforms to.
    #[arg(long)]
    standard: String,
    /// What was checked at the factory.
    #[arg(long, default_value = "")]
    statement: String,
}

#[derive(Args)]
#[command(group(ArgGroup::new("report_digest").required(true).args(["document", "digest"])))]
pub struct InspectArgs {
    #[command(flatten)]
    sign: SignArgs,
    #[arg(long, value_name = "NUMBER")]
    report_no: String,
    /// The standard tested against; must fall in the inspection body's scope.
    #[arg(long)]
    standard: String,
    /// The report's overall result.
    #[arg(long, value_name = "pass|fail", value_parser = parse_verdict)]
    result: Verdict,
    /// A test item, NAME:REQUIREMENT:MEASURED:pass|fail (repeatable).
    #[arg(long = "item", value_name = "NAME:REQUIREMENT:MEASURED:VERDICT", value_parser = parse_item)]
    items: Vec<TestItem>,
    /// The full report document; its blake3 digest goes on the ledger.
    #[arg(long, value_name = "FILE")]
    document: Option<PathBuf>,
    /// The blake3 digest of the report document, 64 hex digits.
    #[arg(long, value_name = "HEX", value_parser = parse_digest)]
    digest: Option<Hash32>,
    /// The report is valid until this time (unix ms).
    #[arg(long, value_name = "MS")]
    valid_until_ms: Option<u64>,
    /// Lots or codes inspected.
    #[arg(required = true, value_name = "SUBJECT")]
    subjects: Vec<SubjectId>,
}

#[derive(Args)]
pub struct ShipArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// The organisation that is to receive them.
    #[arg(long, value_name = "ORG")]
    to: OrgId,
    #[arg(long, default_value = "")]
    location: String,
    #[arg(required = true, value_name = "SUBJECT")]
    subjects: Vec<SubjectId>,
}

#[derive(Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// The organisation that shipped them.
    #[arg(long, value_name = "ORG")]
    from: OrgId,
    #[arg(long, default_value = "")]
    location: String,
    #[arg(required = true, value_name = "SUBJECT")]
    subjects: Vec<SubjectId>,
}

#[derive(Args)]
pub struct AggregationArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// The logistic unit's SSCC (18 digits, or 00/SSCC).
    #[arg(long, value_name = "SSCC", value_parser = parse_sscc)]
    parent: Sscc,
    /// Items or lots.
    #[arg(required = true, value_name = "CHILD")]
    children: Vec<SubjectId>,
}

#[derive(Args)]
pub struct SellArgs {
    #[command(flatten)]
    sign: SignArgs,
    /// Where it was sold (shop, platform).
    #[arg(long, default_value = "")]
    channel: String,
    #[arg(required = true, value_name = "SUBJECT")]
    subjects: Vec<SubjectId>,
}

#[derive(Args)]
pub struct RegulatoryArgs {
    #[command(flatten)]
    sign: SignArgs,
    #[arg(long)]
    reason: String,
    /// The regulator's case or declaration number.
    #[arg(long, default_value = "")]
    reference: String,
    /// Lots, codes or logistic units.
    #[arg(required = true, value_name = "SUBJECT")]
    subjects: Vec<SubjectId>,
}

fn parse_verdict(s: &str) -> Result<Verdict, String> {
    match s {
        "pass" => Ok(Verdict::Pass),
        "fail" => Ok(Verdict::Fail),
        _ => Err(format!("{s:?} is neither pass nor fail")),
    }
}

/// `NAME:REQUIREMENT:MEASURED:VERDICT`; the requirement may itself hold colons.
fn parse_item(s: &str) -> Result<TestItem, String> {
    let bad = || format!("test item {s:?} must be NAME:REQUIREMENT:MEASURED:pass|fail");
    let (name, rest) = s.split_once(':').ok_or_else(bad)?;
    let (rest, verdict) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (requirement, measured) = rest.rsplit_once(':').ok_or_else(bad)?;
    let verdict = parse_verdict(verdict).map_err(|e| format!("test item {s:?}: {e}"))?;
    Ok(TestItem { name: name.into(), requirement: requirement.into(), measured: measured.into(), verdict })
}

fn parse_digest(s: &str) -> Result<Hash32, String> {
    Hash32::from_hex(s)
}

/// An SSCC as 18 digits or in a Digital Link form (`00/...`).
fn parse_sscc(s: &str) -> Result<Sscc, String> {
    if !s.contains('/') {
        return Sscc::parse(s).map_err(|e| e.to_string());
    }
    match s.parse::<SubjectId>() {
        Ok(SubjectId::LogisticUnit { sscc }) => Ok(sscc),
        Ok(other) => Err(format!("{other} is not a logistic unit (00/SSCC)")),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn issue(a: &IssueArgs, out: &Out) -> Result<(), Failure> {
    let codes = if let Some(prefix) = &a.serials {
        let (width, count) = (a.width.unwrap_or_default(), a.count.unwrap_or_default());
        let range = SerialRange::new(prefix, a.start.unwrap_or(0), count, width).map_err(|e| anyhow!("{e}"));
        CodeSet::Range(range.or_bad_input()?)
    } else if !a.serial.is_empty() {
        CodeSet::Serials(a.serial.clone())
    } else {
        CodeSet::Codes(a.code.clone())
    };
    let body = RecordBody::IssueCodes(IssueCodes {
        product: Product {
            gtin: a.gtin.clone(),
            name: a.name.clone(),
            model: a.model.clone(),
            spec: a.spec.clone(),
            standard: a.standard.clone(),
        },
        lot: a.lot.clone(),
        production_date: a.production_date.clone(),
        expiry_date: a.expiry_date.clone(),
        codes,
        factory: a.factory.clone(),
    });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn certify(a: &CertifyArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::CertifyConformity(CertifyConformity {
        gtin: a.gtin.clone(),
        lot: a.lot.clone(),
        certificate_no: a.certificate_no.clone(),
        standard: a.standard.clone(),
        statement: a.statement.clone(),
    });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn inspect(a: &InspectArgs, out: &Out) -> Result<(), Failure> {
    let document_digest = match (&a.document, a.digest) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("read report document {}", path.display()));
            Hash32::from(blake3::hash(&bytes.or_bad_input()?))
        }
        (None, Some(d)) => d,
        (None, None) => unreachable!("clap requires --document or --digest"),
    };
    let body = RecordBody::Inspection(InspectionReport {
        subjects: a.subjects.clone(),
        report_no: a.report_no.clone(),
        standard: a.standard.clone(),
        result: a.result,
        test_items: a.items.clone(),
        document_digest,
        valid_until_ms: a.valid_until_ms,
    });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn ship(a: &ShipArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Ship(Ship { to: a.to.clone(), subjects: a.subjects.clone(), location: a.location.clone() });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn receive(a: &ReceiveArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Receive(Receive {
        from: a.from.clone(),
        subjects: a.subjects.clone(),
        location: a.location.clone(),
    });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn aggregate(a: &AggregationArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Aggregate(Aggregation { parent: a.parent.clone(), children: a.children.clone() });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn disaggregate(a: &AggregationArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Disaggregate(Aggregation { parent: a.parent.clone(), children: a.children.clone() });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn sell(a: &SellArgs, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Sell(Sell { subjects: a.subjects.clone(), channel: a.channel.clone() });
    submit_record(&a.sign, body, Vec::new(), out)
}

pub fn regulatory(a: &RegulatoryArgs, action: RegulatoryKind, out: &Out) -> Result<(), Failure> {
    let body = RecordBody::Regulatory(RegulatoryAction {
        action,
        subjects: a.subjects.clone(),
        reason: a.reason.clone(),
        reference: a.reference.clone(),
    });
    submit_record(&a.sign, body, Vec::new(), out)
}

/// Validates, signs (with `cosigners`' approvals), submits and reports one record.
pub fn submit_record(sign: &SignArgs, body: RecordBody, cosigners: Vec<Cosigner>, out: &Out) -> Result<(), Failure> {
    let key = veritrace_devnet::keyfile::read_key_file(&sign.key).or_bad_input()?;
    let kind = body.kind();
    let record = Record {
        author: sign.author.clone(),
        key_id: sign.key_id.clone(),
        time_ms: sign.time_ms.unwrap_or_else(now_ms),
        nonce: sign.nonce,
        body,
    };
    record.validate_form().map_err(|e| Failure::bad_input(anyhow!("{} record: {e}", kind.as_str())))?;
    runtime()?.block_on(async {
        let node = Node::connect(&sign.node).await?;
        let ledger = node.ledger_id().await?;
        let mut signed = SignedRecord::sign(&ledger, record, &key);
        for c in cosigners {
            signed.approve(&ledger, c.org, c.key_id, &c.key);
        }
        signed.validate_form().map_err(|e| Failure::bad_input(anyhow!("{} record: {e}", kind.as_str())))?;
        let receipt = submit(&node, &signed, out).await?;
        report_receipt(out, Some(kind.as_str()), &receipt)
    })
}

/// Submits a signed record and waits for its receipt (polling while it is pending), until
/// the command's deadline. Resubmitting the same bytes is safe: a duplicate gets the
/// original receipt, so retries after a lost answer do not make a second record.
pub async fn submit(node: &Node, signed: &SignedRecord, out: &Out) -> Result<pb::Receipt, Failure> {
    let spinner = out.spinner(format!("waiting for record {} to commit", signed.id()));
    let receipt = commit(node, signed).await?;
    spinner.finish_and_clear();
    Ok(receipt)
}

/// [`submit`] without a spinner, for commands that show their own progress.
pub async fn commit(node: &Node, signed: &SignedRecord) -> Result<pb::Receipt, Failure> {
    let bytes = signed.to_bytes();
    let id = signed.id();
    let req = pb::SubmitRequest { signed_record: bytes, wait_for_commit: true };
    let mut receipt = match try_rpc!(node, "submit", submit, req)? {
        Ok(resp) => resp.receipt.ok_or_else(|| {
            Failure::new(EXIT_UNAVAILABLE, anyhow!("node {} answered without a receipt", node.addr()))
        })?,
        // A record the ledger rejected comes back as an error status with the receipt in
        // its details; anything else is the node refusing the request itself.
        Err(s) => match rejected_receipt(&s) {
            Some(r) => r,
            None => return Err(status_failure("submit", node.addr(), &s)),
        },
    };
    while receipt.status == pb::ReceiptStatus::Pending as i32 {
        let what = format!("record {id} is not committed yet; ask later with `veritrace receipt {id}`");
        node.pause_or_give_up(RECEIPT_POLL, &what).await?;
        let req = pb::GetReceiptRequest { record_id: id.as_bytes().to_vec() };
        match rpc!(node, "receipt", get_receipt, req) {
            Ok(r) => receipt = r,
            Err(f) if f.code == EXIT_NOT_FOUND => {}
            Err(f) => return Err(f),
        }
    }
    if receipt.record_id != id.as_bytes() {
        return Err(Failure::verify_failed(anyhow!(
            "node {} sent the receipt of record {} for record {id}",
            node.addr(),
            hex::encode(&receipt.record_id)
        )));
    }
    Ok(receipt)
}

/// The receipt carried in the details of an error status, if it is a rejection.
fn rejected_receipt(s: &tonic::Status) -> Option<pb::Receipt> {
    use prost::Message;
    let r = pb::Receipt::decode(s.details()).ok()?;
    (r.status == pb::ReceiptStatus::Rejected as i32).then_some(r)
}

/// Prints a receipt. Accepted and pending succeed; rejected exits 3 with the reason.
pub fn report_receipt(out: &Out, kind: Option<&str>, r: &pb::Receipt) -> Result<(), Failure> {
    let id = hex::encode(&r.record_id);
    let what = kind.map(|k| format!("{k} record {id}")).unwrap_or_else(|| format!("record {id}"));
    match pb::ReceiptStatus::try_from(r.status) {
        Ok(pb::ReceiptStatus::Accepted) => {
            out.emit(
                serde_json::json!({
                    "ok": true, "status": "accepted", "kind": kind, "record_id": id,
                    "log_index": r.log_index, "height": r.height,
                }),
                || format!("accepted: {what} at log index {}, height {}", r.log_index, r.height),
            );
            Ok(())
        }
        Ok(pb::ReceiptStatus::Rejected) => {
            out.emit(
                serde_json::json!({
                    "ok": false, "status": "rejected", "kind": kind, "record_id": id, "height": r.height,
                    "reject_code": r.reject_code, "reject_reason": r.reject_reason, "message": r.message,
                }),
                || format!("rejected: {what}: {} {}: {}", r.reject_code, r.reject_reason, r.message),
            );
            Err(Failure::reported(EXIT_REFUSED))
        }
        Ok(pb::ReceiptStatus::Pending) => {
            out.emit(serde_json::json!({"ok": true, "status": "pending", "kind": kind, "record_id": id}), || {
                format!("pending: {what} is queued at the leader, not committed yet")
            });
            Ok(())
        }
        Ok(pb::ReceiptStatus::Unspecified) | Err(_) => Err(Failure::new(
            EXIT_VERIFY_FAILED,
            anyhow!("the node sent a receipt with status {} for {what}", r.status),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_items_split_at_the_first_and_last_two_colons() {
        let t = parse_item("Protein:1.8-3.0 g/100 kcal, ratio 1:2:2.1 g/100 kcal:pass").unwrap();
        assert_eq!(t.name, "Protein");
        assert_eq!(t.requirement, "1.8-3.0 g/100 kcal, ratio 1:2");
        assert_eq!(t.measured, "2.1 g/100 kcal");
        assert_eq!(t.verdict, Verdict::Pass);
        for bad in ["Protein", "Protein:x:pass", "Protein:x:y:maybe"] {
            assert!(parse_item(bad).unwrap_err().contains(bad));
        }
    }

    #[test]
    fn sscc_accepts_digits_and_digital_link_forms() {
        let body = "09312345000000001";
        let digits = format!("{body}{}", veritrace_ledger::ids::gs1_check_digit(body).unwrap());
        let want = Sscc::parse(&digits).unwrap();
        assert_eq!(parse_sscc(&digits).unwrap(), want);
        assert_eq!(parse_sscc(&format!("00/{digits}")).unwrap(), want);
        assert!(parse_sscc("01/09312345000012/10/L1").unwrap_err().contains("not a logistic unit"));
        assert!(parse_sscc("123").unwrap_err().contains("123"));
    }
}
