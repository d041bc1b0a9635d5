//! The demo: the traceability chains of the seeds (/work/shared/seeds, DESIGN.md §1)
//! played end to end through the gRPC API of a running network, each record signed by the
//! organisation that makes it with its cast key.
//!
//! 1. Australian infant formula to the Pingtan free-trade-zone port: the producer issues
//!    6,000 item codes for a lot in one range record; CCIC Australia records a passing
//!    pre-shipment inspection with the digest of its report; the producer ships the lot to
//!    the importer, who receives it at the port; Pingtan customs records the clearance;
//!    the importer hands the lot to the cross-border shop, which sells a few tins.
//! 2. Building boards with digital certificates of conformity (Hunan): the producer issues
//!    one code per sheet of a 6,000-sheet batch, certifies the batch, and the provincial
//!    inspection institute reports on it.
//! 3. A failed inspection of another formula lot, the regulator's recall, and an attempt
//!    to ship a tin of the recalled lot, which the ledger refuses with its reason.
//!
//! Then, for a few codes: the trace (`Trace` RPC), the consumer page address, and the
//! trace bundle (`GetBundle` RPC) verified offline with
//! [`veritrace_ledger::bundle::verify_bundle`] against the genesis validators. An RPC the
//! node does not serve yet (`Unimplemented`) is reported as such, not as a failure.
//!
//! Every run uses new lot numbers and serials (a code can be issued once, ever), so the
//! demo can be played again on the same network.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tonic::Code;
use tonic::transport::Channel;
use veritrace_ledger::bundle::{BundleVerdict, TraceBundle, verify_bundle};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Gtin, Lot, Serial, SerialRange, SubjectId};
use veritrace_ledger::org::{Genesis, KeyId, OrgId};
use veritrace_ledger::record::{
    CertifyConformity, CodeSet, InspectionReport, IssueCodes, Product, Receive, Record, RecordBody, RegulatoryAction,
    RegulatoryKind, Sell, Ship, SignedRecord, TestItem, Verdict,
};
use veritrace_ledger::time::{DAY_MS, format_date};
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

use crate::cast::{
    BOARDS, BOARDS_GS1_PREFIX, CAST_KEY_ID, CCIC_AU, CUSTOMS_PINGTAN, Cast, HUNAN_QI, IMPORTER, NUTRI,
    NUTRI_GS1_PREFIX, SAMR, SHOP,
};
use crate::client::{GRPC_COMMIT_TIMEOUT, GRPC_QUERY_TIMEOUT, connect, submit_until_decided};
use crate::network::{Network, now_ms};

/// Records the demo submits (its steps).
pub const STEP_COUNT: u64 = 15;
/// Items of the formula lot and of the board batch (the seeds: 6,000 codes per batch).
pub const LOT_ITEMS: u64 = 6_000;
/// Items of the formula lot that fails its inspection.
pub const RECALLED_LOT_ITEMS: u64 = 1_200;
/// Tins the shop sells.
pub const SOLD_ITEMS: u64 = 3;
/// Longest wait for one record to be decided, across leader changes.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for a complete checkpoint covering the demo's last record.
pub const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most pages of a trace read.
const TRACE_PAGES_MAX: u32 = 20;
/// Digits of a serial's counter.
const SERIAL_WIDTH: u8 = 4;

/// What a step should end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Accept,
    /// Refused with this reject reason (`RejectCode` name, docs/ledger.md).
    Reject(&'static str),
}

/// One record of the demo and how the ledger decided it.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Which chain (1 formula, 2 boards, 3 recall).
    pub chain: u32,
    pub what: String,
    pub author: String,
    pub kind: String,
    pub subjects: Vec<String>,
    pub expect: Expect,
    pub record_id: String,
    pub accepted: bool,
    pub height: u64,
    pub log_index: Option<u64>,
    pub reject_reason: Option<String>,
    pub message: String,
}

/// What an RPC the demo relies on gave.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Served<T> {
    Ok(T),
    /// The node does not serve this RPC yet (`Unimplemented`).
    NotServed {
        reason: String,
    },
    Failed {
        error: String,
    },
}

/// A code's trace as the node tells it.
#[derive(Clone, Debug, Serialize)]
pub struct TraceView {
    pub effective_status: String,
    pub subjects: Vec<TraceSubject>,
    pub records: Vec<TraceEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceSubject {
    pub subject: String,
    pub status: String,
    pub custodian: String,
    pub customs_cleared: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceEntry {
    pub log_index: u64,
    pub height: u64,
    pub kind: String,
    pub author: String,
}

/// A bundle fetched and verified offline.
#[derive(Clone, Debug, Serialize)]
pub struct BundleCheck {
    pub bytes: u64,
    pub verdict: BundleVerdict,
}

/// One code the demo shows at the end.
#[derive(Clone, Debug, Serialize)]
pub struct CodeReport {
    pub label: String,
    /// Canonical form: also its GS1 Digital Link path.
    pub code: String,
    /// The node's HTTP address and the code's Digital Link path: its consumer page.
    pub page_url: String,
    /// The HTTP status a GET of `page_url` answered with (200 when the page is served);
    /// `None` if the node did not answer.
    pub page_status: Option<u16>,
    pub trace: Served<TraceView>,
    pub bundle: Served<BundleCheck>,
}

/// Everything the demo did and saw.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Tag of this run, part of its lot numbers.
    pub run: String,
    /// The node every request went to.
    pub via: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub steps: Vec<Step>,
    /// Latest complete checkpoint when the bundles were fetched.
    pub checkpoint_height: u64,
    pub codes: Vec<CodeReport>,
}

impl DemoReport {
    /// Every trace or bundle that failed (as opposed to not being served yet).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.codes {
            if let Served::Failed { error } = &c.trace {
                out.push(format!("trace of {}: {error}", c.code));
            }
            if let Served::Failed { error } = &c.bundle {
                out.push(format!("bundle of {}: {error}", c.code));
            }
        }
        out
    }
}

/// A line naming chain `chain` of the demo.
pub fn chain_title(chain: u32) -> &'static str {
    match chain {
        1 => "Australian infant formula to the Pingtan free-trade-zone port",
        2 => "building boards with a digital certificate of conformity (Hunan)",
        3 => "a failed inspection, a recall, and a shipment refused",
        _ => "",
    }
}

/// Where the demo plays and with whose keys.
pub struct DemoTarget<'a> {
    pub genesis: &'a Genesis,
    pub cast: &'a Cast,
    pub via: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl<'a> DemoTarget<'a> {
    /// Through `via`, or else through the current leader (waiting up to `leader_timeout`
    /// for one). While a partition is in force, the leader taken is one that reaches a
    /// majority of the validators: a leader cut off from them may still call itself
    /// leader, but commits nothing.
    pub fn of(net: &'a Network, via: Option<&str>, leader_timeout: Duration) -> Result<DemoTarget<'a>> {
        let via = match via {
            Some(v) => v.to_string(),
            None => {
                let validators = net.validators();
                let mut found = None;
                net.wait_until(leader_timeout, "a leader that reaches a majority of the validators", |n| {
                    found = n
                        .statuses()
                        .into_iter()
                        .filter(|s| s.up && s.is_leader)
                        .filter(|s| {
                            let reached =
                                validators.iter().filter(|v| **v == s.node_id || !s.cut_off_from.contains(v)).count();
                            2 * reached > validators.len()
                        })
                        .max_by_key(|s| s.term)
                        .map(|s| s.node_id);
                    Ok(found.is_some())
                })?;
                found.context("leader vanished")?
            }
        };
        Ok(DemoTarget {
            genesis: net.genesis(),
            cast: net.cast(),
            grpc: net.grpc_addr(&via)?,
            http: net.http_addr(&via)?,
            via,
        })
    }
}

/// Plays the demo from synchronous code (the CLI), on a runtime of its own.
pub fn run(target: &DemoTarget<'_>, on_step: &mut (dyn FnMut(&Step) + Send)) -> Result<DemoReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build a tokio runtime for the demo")?;
    rt.block_on(play(target, on_step))
}

/// A tag unique to this run: the time in seconds, base 36.
fn run_tag(now_ms: u64) -> String {
    base36(now_ms / 1000)
}

/// `n` in base 36 (digits and capitals), as GS1 lot numbers take it: short tags that make
/// lot numbers unique to a run.
pub fn base36(mut n: u64) -> String {
    let mut out = Vec::new();
    while n > 0 || out.is_empty() {
        out.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The GTIN-14 of item reference `item_ref` under a GS1 company prefix (indicator 0).
fn gtin(company_prefix: &str, item_ref: u32) -> Result<Gtin> {
    Gtin::under_company_prefix(company_prefix, item_ref).with_context(|| format!("GTIN of prefix {company_prefix}"))
}

/// The lots and products of one run.
struct Plan {
    tag: String,
    formula: Product,
    boards: Product,
    formula_lot: Lot,
    recalled_lot: Lot,
    board_lot: Lot,
}

impl Plan {
    fn new(tag: &str) -> Result<Plan> {
        let lot = |s: String| Lot::parse(&s).with_context(|| format!("lot {s:?}"));
        Ok(Plan {
            tag: tag.to_string(),
            formula: Product {
                gtin: gtin(NUTRI_GS1_PREFIX, 1)?,
                name: "Southern Cross infant formula, stage 1 (0-6 months), 900 g".into(),
                model: "SC-S1-900".into(),
                spec: "900 g tin".into(),
                standard: "GB 10765-2021".into(),
            },
            boards: Product {
                gtin: gtin(BOARDS_GS1_PREFIX, 1)?,
                name: "Particleboard P2, E1 formaldehyde class".into(),
                model: "P2-18".into(),
                spec: "2440 x 1220 x 18 mm sheet".into(),
                standard: "GB/T 4897-2015".into(),
            },
            formula_lot: lot(format!("F{tag}"))?,
            recalled_lot: lot(format!("F{tag}R"))?,
            board_lot: lot(format!("B{tag}"))?,
        })
    }

    fn lot_id(product: &Product, lot: &Lot) -> SubjectId {
        SubjectId::lot_of(product.gtin.clone(), lot.clone())
    }

    fn range(lot: &Lot, count: u64) -> SerialRange {
        SerialRange { prefix: format!("{lot}-"), start: 0, count, width: SERIAL_WIDTH }
    }

    fn item(product: &Product, lot: &Lot, i: u64) -> Result<SubjectId> {
        let s = format!("{lot}-{i:0w$}", w = SERIAL_WIDTH as usize);
        Ok(SubjectId::item(product.gtin.clone(), Serial::parse(&s).with_context(|| format!("serial {s:?}"))?))
    }
}

/// The gRPC client and what signing needs.
struct Player<'a, 'f> {
    target: &'a DemoTarget<'a>,
    client: LedgerClient<Channel>,
    steps: Vec<Step>,
    on_step: &'f mut (dyn FnMut(&Step) + Send),
}

impl Player<'_, '_> {
    fn sign(&self, author: &str, body: RecordBody) -> Result<SignedRecord> {
        let key = self.target.cast.key(author).with_context(|| format!("no key for {author} in the cast"))?;
        let record = Record {
            author: OrgId::new(author).with_context(|| format!("organisation id {author:?}"))?,
            key_id: KeyId::new(CAST_KEY_ID).context("cast key id")?,
            time_ms: now_ms(),
            nonce: 0,
            body,
        };
        Ok(SignedRecord::sign(&self.target.genesis.ledger_id, record, key))
    }

    /// Signs, submits and waits for the decision; fails if it is not the one expected.
    async fn step(&mut self, chain: u32, what: &str, author: &str, body: RecordBody, expect: Expect) -> Result<()> {
        let kind = body.kind().as_str().to_string();
        let signed = self.sign(author, body)?;
        let subjects = signed.record.named_subjects().iter().map(|s| s.to_string()).collect();
        let receipt = self.submit(&signed).await.with_context(|| format!("step {what:?}"))?;
        let accepted = receipt.status == pb::ReceiptStatus::Accepted as i32;
        let step = Step {
            chain,
            what: what.to_string(),
            author: author.to_string(),
            kind,
            subjects,
            expect,
            record_id: hex::encode(&receipt.record_id),
            accepted,
            height: receipt.height,
            log_index: accepted.then_some(receipt.log_index),
            reject_reason: (!accepted).then(|| receipt.reject_reason.clone()),
            message: receipt.message.clone(),
        };
        (self.on_step)(&step);
        let as_expected = match expect {
            Expect::Accept => accepted,
            Expect::Reject(reason) => !accepted && receipt.reject_reason == reason,
        };
        self.steps.push(step);
        if !as_expected {
            bail!(
                "step {what:?} by {author}: expected {expect:?}, the ledger said {} {} ({})",
                if accepted { "accepted" } else { "rejected" },
                receipt.reject_reason,
                receipt.message
            );
        }
        Ok(())
    }

    async fn submit(&mut self, signed: &SignedRecord) -> Result<pb::Receipt> {
        submit_until_decided(&mut self.client, signed, SUBMIT_TIMEOUT, &self.target.via).await
    }
}

/// Plays the three chains, then shows a few codes; see the module doc.
pub async fn play(target: &DemoTarget<'_>, on_step: &mut (dyn FnMut(&Step) + Send)) -> Result<DemoReport> {
    let client = connect(target.grpc, GRPC_COMMIT_TIMEOUT).await?;
    let mut p = Player { target, client, steps: Vec::new(), on_step };
    let now = now_ms();
    let plan = Plan::new(&run_tag(now))?;
    let produced = format_date(now.saturating_sub(20 * DAY_MS));
    let tag = &plan.tag;

    // 1. Infant formula, Melbourne to Pingtan.
    let f = &plan.formula;
    let f_lot = Plan::lot_id(f, &plan.formula_lot);
    p.step(
        1,
        "issue 6,000 tin codes for a formula lot (one range record)",
        NUTRI,
        RecordBody::IssueCodes(IssueCodes {
            product: f.clone(),
            lot: plan.formula_lot.clone(),
            production_date: produced.clone(),
            expiry_date: Some(format_date(now + 730 * DAY_MS)),
            codes: CodeSet::Range(Plan::range(&plan.formula_lot, LOT_ITEMS)),
            factory: "Southern Cross Nutrition, Dandenong VIC, Australia".into(),
        }),
        Expect::Accept,
    )
    .await?;
    let report_no = format!("CCIC-AU-{tag}-PSI");
    let document = format!(
        "CCIC Australia Pty Ltd - pre-shipment inspection report {report_no}\nproduct: {} ({})\nlot: {}\n\
         factory audit, label approval, loading supervision and laboratory tests to GB 10765-2021: pass\n",
        f.name, f.gtin, plan.formula_lot
    );
    p.step(
        1,
        "pre-shipment inspection passes (digest of the full report)",
        CCIC_AU,
        RecordBody::Inspection(InspectionReport {
            subjects: vec![f_lot.clone()],
            report_no: report_no.clone(),
            standard: "GB 10765-2021".into(),
            result: Verdict::Pass,
            test_items: vec![
                test_item("Protein", "1.8-3.0 g/100 kcal", "2.1 g/100 kcal", Verdict::Pass),
                test_item("Cronobacter spp.", "n=3, c=0, m=0/100 g", "not detected", Verdict::Pass),
                test_item("Melamine", "<= 1 mg/kg", "< 0.1 mg/kg", Verdict::Pass),
                test_item("Label", "GB 13432-2013", "conforms", Verdict::Pass),
            ],
            document_digest: Hash32::from(blake3::hash(document.as_bytes())),
            valid_until_ms: Some(now + 180 * DAY_MS),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        1,
        "ship the lot to the importer",
        NUTRI,
        RecordBody::Ship(Ship {
            to: org(IMPORTER)?,
            subjects: vec![f_lot.clone()],
            location: "Port of Melbourne".into(),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        1,
        "the importer receives the lot at Pingtan port",
        IMPORTER,
        RecordBody::Receive(Receive {
            from: org(NUTRI)?,
            subjects: vec![f_lot.clone()],
            location: "Pingtan port, Fujian".into(),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        1,
        "customs clears the lot against the pre-shipment inspection",
        CUSTOMS_PINGTAN,
        RecordBody::Regulatory(RegulatoryAction {
            action: RegulatoryKind::CustomsClearance,
            subjects: vec![f_lot.clone()],
            reason: format!("pre-shipment inspection {report_no} checked against the consignment"),
            reference: format!("PT-CBEC-{tag}"),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        1,
        "the importer hands the lot to the cross-border shop",
        IMPORTER,
        RecordBody::Ship(Ship {
            to: org(SHOP)?,
            subjects: vec![f_lot.clone()],
            location: "Pingtan bonded warehouse".into(),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        1,
        "the shop receives the lot",
        SHOP,
        RecordBody::Receive(Receive {
            from: org(IMPORTER)?,
            subjects: vec![f_lot.clone()],
            location: "Haixia shop fulfilment centre".into(),
        }),
        Expect::Accept,
    )
    .await?;
    let sold: Vec<SubjectId> = (0..SOLD_ITEMS).map(|i| Plan::item(f, &plan.formula_lot, i)).collect::<Result<_>>()?;
    p.step(
        1,
        "the shop sells three tins to consumers",
        SHOP,
        RecordBody::Sell(Sell { subjects: sold.clone(), channel: "Haixia Cross-border Shop, online".into() }),
        Expect::Accept,
    )
    .await?;

    // 2. Building boards with a digital certificate of conformity.
    let b = &plan.boards;
    let b_lot = Plan::lot_id(b, &plan.board_lot);
    p.step(
        2,
        "issue one code per sheet of a 6,000-sheet batch",
        BOARDS,
        RecordBody::IssueCodes(IssueCodes {
            product: b.clone(),
            lot: plan.board_lot.clone(),
            production_date: produced.clone(),
            expiry_date: None,
            codes: CodeSet::Range(Plan::range(&plan.board_lot, LOT_ITEMS)),
            factory: "Xiangjiang Board Co., Changsha, Hunan".into(),
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        2,
        "the producer certifies the batch (digital certificate of conformity)",
        BOARDS,
        RecordBody::CertifyConformity(CertifyConformity {
            gtin: b.gtin.clone(),
            lot: plan.board_lot.clone(),
            certificate_no: format!("HN-COC-{tag}"),
            standard: "GB/T 4897-2015".into(),
            statement: "factory inspection: dimensions, density, bending strength, formaldehyde emission (E1): \
                        conforming"
                .into(),
        }),
        Expect::Accept,
    )
    .await?;
    let board_report = format!("HNQI-{tag}-0917");
    p.step(
        2,
        "the provincial inspection institute reports on the batch",
        HUNAN_QI,
        RecordBody::Inspection(InspectionReport {
            subjects: vec![b_lot.clone()],
            report_no: board_report.clone(),
            standard: "GB/T 4897-2015".into(),
            result: Verdict::Pass,
            test_items: vec![
                test_item("Formaldehyde emission", "<= 0.124 mg/m3", "0.046 mg/m3", Verdict::Pass),
                test_item("Modulus of rupture", ">= 13 MPa", "15.2 MPa", Verdict::Pass),
                test_item("Internal bond", ">= 0.35 MPa", "0.48 MPa", Verdict::Pass),
            ],
            document_digest: Hash32::from(blake3::hash(format!("Hunan QI report {board_report}").as_bytes())),
            valid_until_ms: Some(now + 365 * DAY_MS),
        }),
        Expect::Accept,
    )
    .await?;

    // 3. A failed inspection, a recall, and a shipment refused.
    let r_lot = Plan::lot_id(f, &plan.recalled_lot);
    p.step(
        3,
        "issue codes for another formula lot",
        NUTRI,
        RecordBody::IssueCodes(IssueCodes {
            product: f.clone(),
            lot: plan.recalled_lot.clone(),
            production_date: produced.clone(),
            expiry_date: Some(format_date(now + 730 * DAY_MS)),
            codes: CodeSet::Range(Plan::range(&plan.recalled_lot, RECALLED_LOT_ITEMS)),
            factory: "Southern Cross Nutrition, Dandenong VIC, Australia".into(),
        }),
        Expect::Accept,
    )
    .await?;
    let failed_report = format!("CCIC-AU-{tag}-PSI-2");
    p.step(
        3,
        "its pre-shipment inspection fails",
        CCIC_AU,
        RecordBody::Inspection(InspectionReport {
            subjects: vec![r_lot.clone()],
            report_no: failed_report.clone(),
            standard: "GB 10765-2021".into(),
            result: Verdict::Fail,
            test_items: vec![
                test_item("Protein", "1.8-3.0 g/100 kcal", "2.0 g/100 kcal", Verdict::Pass),
                test_item("Cronobacter spp.", "n=3, c=0, m=0/100 g", "detected in 1 of 3 samples", Verdict::Fail),
            ],
            document_digest: Hash32::from(blake3::hash(format!("CCIC report {failed_report}").as_bytes())),
            valid_until_ms: None,
        }),
        Expect::Accept,
    )
    .await?;
    p.step(
        3,
        "the market regulator recalls the lot",
        SAMR,
        RecordBody::Regulatory(RegulatoryAction {
            action: RegulatoryKind::Recall,
            subjects: vec![r_lot.clone()],
            reason: format!("Cronobacter spp. detected (inspection report {failed_report})"),
            reference: format!("SAMR-RECALL-{tag}"),
        }),
        Expect::Accept,
    )
    .await?;
    let refused = Plan::item(f, &plan.recalled_lot, 0)?;
    p.step(
        3,
        "an attempt to ship a tin of the recalled lot is refused",
        NUTRI,
        RecordBody::Ship(Ship {
            to: org(IMPORTER)?,
            subjects: vec![refused.clone()],
            location: "Port of Melbourne".into(),
        }),
        Expect::Reject("subject_recalled"),
    )
    .await?;

    // Bundles are cut at the latest complete checkpoint: wait for one with every record.
    let last_height = p.steps.iter().map(|s| s.height).max().unwrap_or(0);
    let checkpoint_height = wait_for_checkpoint(&mut p.client, last_height).await;

    let shown = [
        ("a tin sold to a consumer (chain 1)", sold[0].clone()),
        ("a tin on the shop's shelf, customs cleared (chain 1)", Plan::item(f, &plan.formula_lot, 4_321)?),
        ("a sheet of board with its certificate (chain 2)", Plan::item(b, &plan.board_lot, 17)?),
        ("a tin of the recalled lot (chain 3)", refused),
    ];
    let validators = target.genesis.validator_set();
    let mut codes = Vec::new();
    for (label, code) in shown {
        let trace = trace(&mut p.client, &code).await;
        let bundle = bundle(&mut p.client, &code, target.genesis, &validators).await;
        let (http, path) = (target.http, format!("/{code}"));
        let page_status = tokio::task::spawn_blocking(move || crate::http::get(http, &path))
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|r| r.status);
        codes.push(CodeReport {
            label: label.to_string(),
            page_url: format!("http://{}/{code}", target.http),
            page_status,
            code: code.to_string(),
            trace,
            bundle,
        });
    }
    Ok(DemoReport {
        run: plan.tag.clone(),
        via: target.via.clone(),
        grpc: target.grpc,
        http: target.http,
        steps: p.steps,
        checkpoint_height,
        codes,
    })
}

fn org(id: &str) -> Result<OrgId> {
    OrgId::new(id).with_context(|| format!("organisation id {id:?}"))
}

fn test_item(name: &str, requirement: &str, measured: &str, verdict: Verdict) -> TestItem {
    TestItem { name: name.into(), requirement: requirement.into(), measured: measured.into(), verdict }
}

/// Waits until the node's latest complete checkpoint is at `height` or above; returns the
/// latest it saw.
async fn wait_for_checkpoint(client: &mut LedgerClient<Channel>, height: u64) -> u64 {
    let deadline = Instant::now() + CHECKPOINT_TIMEOUT;
    let mut seen = 0;
    loop {
        if let Ok(s) = client.status(pb::StatusRequest {}).await {
            seen = s.into_inner().complete_checkpoint_height;
        }
        if seen >= height || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn not_served<T>(s: &tonic::Status) -> Option<Served<T>> {
    (s.code() == Code::Unimplemented)
        .then(|| Served::NotServed { reason: format!("the node answers: {}", s.message()) })
}

async fn trace(client: &mut LedgerClient<Channel>, code: &SubjectId) -> Served<TraceView> {
    let mut view: Option<TraceView> = None;
    let mut token = String::new();
    for _ in 0..TRACE_PAGES_MAX {
        let req = pb::TraceRequest { code: code.to_string(), page_token: token.clone(), limit: 0 };
        let page = match tokio::time::timeout(GRPC_QUERY_TIMEOUT, client.trace(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return not_served(&s).unwrap_or_else(|| Served::Failed { error: s.to_string() }),
            Err(_) => return Served::Failed { error: format!("no answer within {GRPC_QUERY_TIMEOUT:?}") },
        };
        let v = view.get_or_insert_with(|| TraceView {
            effective_status: page.effective_status.clone(),
            subjects: page
                .subjects
                .iter()
                .map(|s| TraceSubject {
                    subject: s.subject.clone(),
                    status: s.status.clone(),
                    custodian: s.custodian.clone(),
                    customs_cleared: s.customs_cleared,
                })
                .collect(),
            records: Vec::new(),
        });
        v.records.extend(page.records.iter().map(|r| TraceEntry {
            log_index: r.log_index,
            height: r.height,
            kind: r.kind.clone(),
            author: r.author.clone(),
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    match view {
        Some(v) => Served::Ok(v),
        None => Served::Failed { error: "no trace page".into() },
    }
}

async fn bundle(
    client: &mut LedgerClient<Channel>,
    code: &SubjectId,
    genesis: &Genesis,
    validators: &veritrace_ledger::org::ValidatorSet,
) -> Served<BundleCheck> {
    let req = pb::GetBundleRequest { code: code.to_string(), format: pb::BundleFormat::Json as i32, height: 0 };
    let resp = match tokio::time::timeout(GRPC_QUERY_TIMEOUT, client.get_bundle(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return not_served(&s).unwrap_or_else(|| Served::Failed { error: s.to_string() }),
        Err(_) => return Served::Failed { error: format!("no answer within {GRPC_QUERY_TIMEOUT:?}") },
    };
    let checked = (|| -> Result<BundleCheck> {
        let parsed = if resp.bundle.first() == Some(&b'{') {
            let text = std::str::from_utf8(&resp.bundle).context("bundle is not utf-8 json")?;
            TraceBundle::from_json(text)
        } else {
            TraceBundle::from_bytes(&resp.bundle)
        };
        let b = parsed.map_err(|e| anyhow!("bundle does not parse: {e}"))?;
        if b.checkpoint.header.ledger_id != genesis.ledger_id {
            bail!("bundle is for ledger {}, not {}", b.checkpoint.header.ledger_id, genesis.ledger_id);
        }
        if &b.code != code {
            bail!("asked for the bundle of {code}, got one of {}", b.code);
        }
        let verdict = verify_bundle(&b, validators).map_err(|e| anyhow!("does not verify: {e}"))?;
        Ok(BundleCheck { bytes: resp.bundle.len() as u64, verdict })
    })();
    match checked {
        Ok(c) => Served::Ok(c),
        Err(e) => Served::Failed { error: format!("{e:#}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_tags_and_gtins() {
        assert_eq!(run_tag(0), "0");
        assert_eq!(run_tag(36_999), "10");
        assert_eq!(run_tag(46_655_000), "ZZZ");
        // The fixture's formula GTIN under nutri's prefix.
        assert_eq!(gtin(NUTRI_GS1_PREFIX, 1).expect("gtin").to_string(), "09312345000012");
        assert_eq!(gtin(BOARDS_GS1_PREFIX, 1).expect("gtin").to_string(), "06901234000016");
    }

    #[test]
    fn every_record_of_a_run_is_well_formed() {
        let plan = Plan::new(&run_tag(now_ms())).expect("plan");
        let range = Plan::range(&plan.formula_lot, LOT_ITEMS);
        range.validate().expect("range");
        assert_eq!(range.last().expect("last").as_str(), format!("{}-5999", plan.formula_lot));
        let item = Plan::item(&plan.formula, &plan.formula_lot, 4_321).expect("item");
        assert!(item.to_string().starts_with("01/09312345000012/21/F"), "{item}");
    }
}
