//! `veritrace bench`: committed records per second and commit latency of a running network
//! under N concurrent clients, each signing realistic records and waiting for each to
//! commit; and `veritrace bench-etcd`, the same measure of an etcd cluster's puts, so the
//! two can be compared on one machine (scripts/bench-compare.sh, docs/performance.md).
//!
//! The records are those of the seeds' chains, signed with the cast keys of a devnet
//! directory: before the clock starts, `nutri` issues codes for one lot per client (per
//! record of a batch); then every lot goes round inspection (`ccic-au`, a passing report with
//! test items and a document digest), shipment and receipt between the importer and the
//! shop, so every record is accepted by the rules. Each record has its own signature; a
//! client sends one record per request (`--batch K`: K records per `SubmitBatch`) and sends
//! the next once the previous committed. Other workloads measure range issuance (codes/s),
//! trace queries and bundles fetched and verified here. Figures are printed, never judged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ed25519_dalek::SigningKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use veritrace_devnet::Network;
use veritrace_devnet::cast::{CAST_KEY_ID, CCIC_AU, IMPORTER, NUTRI, NUTRI_GS1_PREFIX, SHOP};
use veritrace_devnet::demo::base36;
use veritrace_ledger::bundle::{TraceBundle, verify_bundle};
use veritrace_ledger::hash::Hash32;
use veritrace_ledger::ids::{Gtin, Lot, Serial, SerialRange, SubjectId};
use veritrace_ledger::org::{KeyId, LedgerId, OrgId, ValidatorSet};
use veritrace_ledger::record::{
    CodeSet, InspectionReport, IssueCodes, Product, Receive, Record, RecordBody, Ship, SignedRecord, TestItem, Verdict,
};
use veritrace_proto::v1 as pb;
use veritrace_proto::v1::ledger_client::LedgerClient;

use crate::client::{CONNECT_TIMEOUT, GRPC_MESSAGE_BYTES_MAX, endpoint_uri};
use crate::exit::{EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNAVAILABLE, Failure, OrExit};
use crate::output::Out;
use crate::records::now_ms;

/// Most concurrent clients of one run.
pub const CLIENTS_MAX: u32 = 10_000;
/// Most records per request in `--batch` mode (the node's `SubmitBatch` limit).
pub const BATCH_MAX: u32 = 10_000;
/// Most TCP connections to the nodes; clients share them round robin (HTTP/2 multiplexes).
const CONNECTIONS_MAX: u32 = 64;
/// Records per `SubmitBatch` while issuing the lots before the clock starts.
const SETUP_BATCH_RECORDS: usize = 500;
/// Items issued per lot (one range record, whatever the count).
const LOT_ITEMS: u64 = 240;
/// Latency samples kept per client; beyond it the run still counts, but samples are dropped.
const SAMPLES_PER_CLIENT_MAX: usize = 1_000_000;
/// Bytes of a `bench-etcd` value, by default the size of a record's payload here.
const VALUE_BYTES_DEFAULT: u32 = 256;
/// Default of `--lot-items`: the seeds' 6,000 codes per batch.
const ISSUE_LOT_ITEMS_DEFAULT: u64 = 6_000;
/// Longest wait for a complete checkpoint covering the lots before `--workload bundle`.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest HTTP response `bench-etcd` reads.
const HTTP_RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Shortest `--timeline` slice, seconds.
const TIMELINE_SLICE_MIN_S: f64 = 0.01;
/// Highest `--rate`, records/s.
const RATE_MAX: f64 = 1_000_000.0;

/// Due times of an open-loop run (`--rate`): one request every `interval` from `start`,
/// handed out in order to whichever client asks next.
struct Pace {
    start: Instant,
    interval: Duration,
    next: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn new(start: Instant, records_per_s: f64, batch: u32) -> Pace {
        let interval = Duration::from_secs_f64(f64::from(batch) / records_per_s);
        Pace { start, interval, next: Default::default() }
    }

    /// The next request's due time, waited for; `None` once it is at or past `stop_at`.
    async fn due(&self, stop_at: Instant) -> Option<Instant> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let at = self.start + self.interval.mul_f64(n as f64);
        if at >= stop_at {
            return None;
        }
        tokio::time::sleep_until(at.into()).await;
        Some(at)
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// The devnet directory: its genesis, its organisations' keys and its nodes' addresses.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Send to these nodes (host:port, repeatable) instead of every node of the network.
    #[arg(long = "node", value_name = "ADDR")]
    nodes: Vec<String>,
    /// Concurrent clients, each waiting for one request to commit before sending the next.
    #[arg(long, default_value_t = 16)]
    clients: u32,
    /// Seconds of measurement (after the lots are issued).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    duration: u64,
    /// Records per request (`SubmitBatch`); 1 sends each record alone (`Submit`).
    #[arg(long, value_name = "K", default_value_t = 1)]
    batch: u32,
    /// Longest wait for one request to commit, in seconds; longer counts as an error.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Workload::Records)]
    workload: Workload,
    /// Codes per lot issued by `--workload issue` (one range record per lot).
    #[arg(long, value_name = "N", default_value_t = ISSUE_LOT_ITEMS_DEFAULT)]
    lot_items: u64,
    /// Offer this many records per second in all (`--workload records`), evenly spaced,
    /// instead of each client sending its next request as soon as the last one commits.
    /// Latency is then counted from when a request was due, so a request that waited for
    /// a free client counts its wait too. The clients must be enough to keep the pace.
    #[arg(long, value_name = "RECORDS_PER_S")]
    rate: Option<f64>,
    /// Also report the run in slices of this many seconds (by when each request began, or
    /// was due under `--rate`): requests, p50, p99 and max of each, to see when a tail
    /// happened rather than only how long it was.
    #[arg(long, value_name = "SECS")]
    timeline: Option<f64>,
}

/// What the clients of `veritrace bench` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Inspection reports and ship/receive pairs, waited for until committed.
    Records,
    /// `nutri` issues a new lot per record, its codes as one serial range (codes/s).
    Issue,
    /// `Trace` of an item code (first page) of a lot with a history; the ledger as it is.
    Trace,
    /// `GetBundle` (compact) of an item code, verified here against the genesis validators.
    Bundle,
}

impl Workload {
    fn as_str(self) -> &'static str {
        match self {
            Workload::Records => "records",
            Workload::Issue => "issue",
            Workload::Trace => "trace",
            Workload::Bundle => "bundle",
        }
    }

    /// What one operation is, in the report.
    fn unit(self) -> &'static str {
        match self {
            Workload::Records | Workload::Issue => "records",
            Workload::Trace => "traces",
            Workload::Bundle => "bundles",
        }
    }
}

#[derive(Args)]
pub struct BenchEtcdArgs {
    /// etcd client URLs (http://host:port), comma separated or repeated; clients are spread
    /// over them round robin.
    #[arg(long, value_name = "URL", value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrent clients, each with its own HTTP/1.1 connection, one put at a time.
    #[arg(long, default_value_t = 16)]
    clients: u32,
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    duration: u64,
    /// Bytes of each value.
    #[arg(long, value_name = "BYTES", default_value_t = VALUE_BYTES_DEFAULT)]
    value_bytes: u32,
    /// Longest wait for one put, in seconds; longer counts as an error.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Also report the run in slices of this many seconds, as `veritrace bench --timeline`.
    #[arg(long, value_name = "SECS")]
    timeline: Option<f64>,
}

/// What a run measured.
struct Report {
    system: &'static str,
    /// The pace offered (`--rate`), records/s; `None`: every client as fast as it can.
    offered: Option<f64>,
    workload: Workload,
    /// Codes per issued lot (`--workload issue`), for codes/s.
    lot_items: u64,
    clients: u32,
    batch: u32,
    /// From the first request to the last answer.
    elapsed: Duration,
    /// Records committed (puts done).
    ops: u64,
    requests: u64,
    errors: u64,
    /// The first few errors, for the reader.
    error_samples: Vec<String>,
    /// Per-request latency, microseconds, sorted.
    latencies_us: Vec<u64>,
    /// `--timeline`: the run in slices of equal length, by when each request began.
    timeline: Option<Timeline>,
    /// Mean bytes per signed record (per value for etcd).
    item_bytes: f64,
    targets: Vec<String>,
}

/// Error messages kept for the report.
const ERROR_SAMPLES_MAX: usize = 5;

/// The sample at or above rank `p` (0..=1) of `sorted`, in ms; 0 when there is none.
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// A run cut into slices of equal length by when each request began (or was due, under
/// `--rate`), with what the requests of each slice took.
struct Timeline {
    slice: Duration,
    /// Wall-clock time of the run's start, ms since the Unix epoch: to line the slices up
    /// with the nodes' logs.
    start_unix_ms: u64,
    /// Per slice, in order from the start: its requests' latencies, microseconds, sorted.
    slices: Vec<Vec<u64>>,
}

impl Timeline {
    fn of(slice: Duration, start: Instant, samples: impl Iterator<Item = (Instant, u64)>) -> Timeline {
        let mut slices: Vec<Vec<u64>> = Vec::new();
        for (began, us) in samples {
            let i = (began.saturating_duration_since(start).as_secs_f64() / slice.as_secs_f64()) as usize;
            if slices.len() <= i {
                slices.resize_with(i + 1, Vec::new);
            }
            slices[i].push(us);
        }
        slices.iter_mut().for_each(|s| s.sort_unstable());
        let start_unix_ms = now_ms().saturating_sub(start.elapsed().as_millis() as u64);
        Timeline { slice, start_unix_ms, slices }
    }

    /// Per slice: when it starts (s), requests, p50, p99, max (ms).
    fn rows(&self) -> impl Iterator<Item = (f64, usize, f64, f64, f64)> + '_ {
        self.slices.iter().enumerate().map(|(i, l)| {
            let from = self.slice.as_secs_f64() * i as f64;
            (from, l.len(), percentile_ms(l, 0.50), percentile_ms(l, 0.99), percentile_ms(l, 1.0))
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let slices: Vec<_> = self
            .rows()
            .map(|(from, n, p50, p99, max)| {
                // A slice in which no request began has no latencies: null, not 0.
                let ms = |x: f64| if n == 0 { serde_json::Value::Null } else { json!(round3(x)) };
                json!({"from_s": round3(from), "requests": n, "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)})
            })
            .collect();
        json!({"slice_s": round3(self.slice.as_secs_f64()), "start_unix_ms": self.start_unix_ms, "slices": slices})
    }

    fn to_text(&self) -> String {
        let mut s = format!(
            "\n  timeline, slices of {:.3} s by when each request began, from {} ms after the Unix epoch:",
            self.slice.as_secs_f64(),
            self.start_unix_ms
        );
        for (from, n, p50, p99, max) in self.rows() {
            s.push_str(&format!("\n    {from:8.3} s  {n:7} requests"));
            if n > 0 {
                s.push_str(&format!("  p50 {p50:8.1} ms  p99 {p99:8.1} ms  max {max:8.1} ms"));
            }
        }
        s
    }
}

impl Report {
    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn emit(&self, out: &Out) {
        let unit = if self.system == "etcd" { "puts" } else { self.workload.unit() };
        let (p50, p90, p99) = (self.percentile_ms(0.50), self.percentile_ms(0.90), self.percentile_ms(0.99));
        let max = self.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0;
        let value = json!({
            "ok": self.errors == 0,
            "system": self.system,
            "clients": self.clients,
            "batch": self.batch,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            unit: self.ops,
            "requests": self.requests,
            "errors": self.errors,
            "error_samples": self.error_samples,
            format!("{unit}_per_s"): round3(self.rate()),
            "latency_ms": {"p50": round3(p50), "p90": round3(p90), "p99": round3(p99), "max": round3(max)},
            "item_bytes_avg": round3(self.item_bytes),
            "targets": self.targets,
        });
        let mut value = value;
        if let Some(rate) = self.offered {
            value["offered_per_s"] = json!(round3(rate));
        }
        if self.system != "etcd" {
            value["workload"] = json!(self.workload.as_str());
        }
        if self.workload == Workload::Issue {
            value["codes_per_s"] = json!(round3(self.rate() * self.lot_items as f64));
        }
        if let Some(t) = &self.timeline {
            value["timeline"] = t.to_json();
        }
        let writes = self.system == "etcd" || matches!(self.workload, Workload::Records | Workload::Issue);
        let (done, latency, per) = if writes {
            ("committed", "commit latency", if self.system == "etcd" { "value" } else { "signed record" })
        } else {
            ("answered", "latency", "answer")
        };
        out.emit(value, || {
            let mut s = format!(
                "{}: {} clients, batch {}, {:.1} s: {} {unit} {done} in {} requests\n  {:.1} {unit}/s\n  {latency} \
                 per request: p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms\n  errors: {}\n  mean \
                 {:.0} bytes per {per}",
                self.system,
                self.clients,
                self.batch,
                self.elapsed.as_secs_f64(),
                self.ops,
                self.requests,
                self.rate(),
                self.errors,
                self.item_bytes,
            );
            if let Some(rate) = self.offered {
                s.push_str(&format!(
                    "\n  offered {rate:.1} {unit}/s, evenly spaced; latency counted from when each was due"
                ));
            }
            if self.workload == Workload::Issue {
                s.push_str(&format!(
                    "\n  {:.0} codes/s issued ({} codes per range record)",
                    self.rate() * self.lot_items as f64,
                    self.lot_items
                ));
            }
            for e in &self.error_samples {
                s.push_str(&format!("\n  error: {e}"));
            }
            if let Some(t) = &self.timeline {
                s.push_str(&t.to_text());
            }
            s
        });
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What one client did.
#[derive(Default)]
struct ClientTally {
    ops: u64,
    requests: u64,
    errors: u64,
    error_samples: Vec<String>,
    /// Per request: when it began (or was due), and its latency in microseconds.
    samples: Vec<(Instant, u64)>,
    item_bytes: u64,
    items: u64,
}

impl ClientTally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push(e);
        }
    }

    /// A request that began (or was due) at `began` has just ended.
    fn sample(&mut self, began: Instant) {
        if self.samples.len() < SAMPLES_PER_CLIENT_MAX {
            self.samples.push((began, began.elapsed().as_micros() as u64));
        }
    }
}

/// What was run, before anything is measured.
struct RunSpec {
    system: &'static str,
    offered: Option<f64>,
    workload: Workload,
    lot_items: u64,
    clients: u32,
    batch: u32,
    targets: Vec<String>,
    /// `--timeline`: the length of a slice.
    timeline: Option<Duration>,
}

/// Waits for every client of a run and collects their tallies.
async fn join_clients(tasks: Vec<tokio::task::JoinHandle<ClientTally>>) -> Result<Vec<ClientTally>, Failure> {
    let mut tallies = Vec::with_capacity(tasks.len());
    for t in tasks {
        tallies.push(t.await.context("a benchmark client panicked").or_exit(EXIT_UNAVAILABLE)?);
    }
    Ok(tallies)
}

/// The clients' tallies of a run that began at `start` and took `elapsed`, as one report.
fn merge(spec: RunSpec, start: Instant, elapsed: Duration, tallies: Vec<ClientTally>) -> Report {
    let RunSpec { system, offered, workload, lot_items, clients, batch, targets, timeline } = spec;
    let timeline =
        timeline.map(|slice| Timeline::of(slice, start, tallies.iter().flat_map(|t| t.samples.iter().copied())));
    let mut r = Report {
        system,
        offered,
        workload,
        lot_items,
        clients,
        batch,
        elapsed,
        ops: 0,
        requests: 0,
        errors: 0,
        error_samples: Vec::new(),
        latencies_us: Vec::new(),
        timeline,
        item_bytes: 0.0,
        targets,
    };
    let (mut bytes, mut items) = (0u64, 0u64);
    for t in tallies {
        r.ops += t.ops;
        r.requests += t.requests;
        r.errors += t.errors;
        for e in t.error_samples {
            if r.error_samples.len() < ERROR_SAMPLES_MAX {
                r.error_samples.push(e);
            }
        }
        r.latencies_us.extend(t.samples.iter().map(|&(_, us)| us));
        bytes += t.item_bytes;
        items += t.items;
    }
    r.latencies_us.sort_unstable();
    r.item_bytes = if items == 0 { 0.0 } else { bytes as f64 / items as f64 };
    r
}

/// `--timeline SECS` as a slice length: at least [`TIMELINE_SLICE_MIN_S`] and a number.
fn slice_of(secs: Option<f64>) -> Result<Option<Duration>, Failure> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= TIMELINE_SLICE_MIN_S => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => {
            Err(Failure::bad_input(anyhow!("--timeline {s}: must be a slice of at least {TIMELINE_SLICE_MIN_S} s")))
        }
    }
}

fn check_counts(clients: u32, duration: u64) -> Result<(), Failure> {
    if clients == 0 || clients > CLIENTS_MAX {
        return Err(Failure::bad_input(anyhow!("--clients {clients}: must be 1 to {CLIENTS_MAX}")));
    }
    if duration == 0 {
        return Err(Failure::bad_input(anyhow!("--duration 0: must be at least 1 second")));
    }
    Ok(())
}

fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .or_exit(EXIT_UNAVAILABLE)
}

// ---------------------------------------------------------------------------------------
// veritrace

/// The signing keys and ids the records need.
struct Signers {
    ledger: LedgerId,
    key_id: KeyId,
    nutri: (OrgId, SigningKey),
    ccic: (OrgId, SigningKey),
    importer: (OrgId, SigningKey),
    shop: (OrgId, SigningKey),
    validators: ValidatorSet,
}

impl Signers {
    fn sign(&self, who: &(OrgId, SigningKey), nonce: u64, body: RecordBody) -> SignedRecord {
        let record = Record { author: who.0.clone(), key_id: self.key_id.clone(), time_ms: now_ms(), nonce, body };
        SignedRecord::sign(&self.ledger, record, &who.1)
    }
}

/// Where a lot is in its round: inspected, shipped, received.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Inspect,
    Ship,
    Receive,
}

/// One lot a client moves round and round.
struct LotState {
    lot: Lot,
    subject: SubjectId,
    step: Step,
    /// Holds it now (importer or shop after the first hand-over; nutri before).
    custodian_is_shop: bool,
    at_producer: bool,
    round: u64,
}

impl LotState {
    /// The next record of this lot's round.
    fn next_record(&self, s: &Signers, client: u32, lot_no: u32, nonce: u64) -> Result<SignedRecord> {
        let holder = if self.at_producer {
            &s.nutri
        } else if self.custodian_is_shop {
            &s.shop
        } else {
            &s.importer
        };
        let next = if self.custodian_is_shop { &s.importer } else { &s.shop };
        let next = if self.at_producer { &s.importer } else { next };
        let body = match self.step {
            Step::Inspect => {
                let report_no = format!("CCIC-AU-B{client}-{lot_no}-{}", self.round);
                RecordBody::Inspection(InspectionReport {
                    subjects: vec![self.subject.clone()],
                    report_no: report_no.clone(),
                    standard: "GB 10765-2021".into(),
                    result: Verdict::Pass,
                    test_items: vec![
                        item("Protein", "1.8-3.0 g/100 kcal", "2.1 g/100 kcal"),
                        item("Cronobacter spp.", "n=3, c=0, m=0/100 g", "not detected"),
                        item("Melamine", "<= 1 mg/kg", "< 0.1 mg/kg"),
                    ],
                    document_digest: Hash32::from(blake3::hash(report_no.as_bytes())),
                    valid_until_ms: None,
                })
            }
            Step::Ship => RecordBody::Ship(Ship {
                to: next.0.clone(),
                subjects: vec![self.subject.clone()],
                location: format!(
                    "Pingtan bonded warehouse, bay {}, dock {}, seal PT-{client:05}-{lot_no:04}-{:06}",
                    client % 40,
                    lot_no % 12,
                    self.round
                ),
            }),
            Step::Receive => RecordBody::Receive(Receive {
                from: holder.0.clone(),
                subjects: vec![self.subject.clone()],
                location: format!(
                    "Haixia fulfilment centre, gate {}, checked seal PT-{client:05}-{lot_no:04}-{:06}, temperature \
                     log attached",
                    client % 8,
                    self.round
                ),
            }),
        };
        let author = if self.step == Step::Inspect {
            &s.ccic
        } else if self.step == Step::Ship {
            holder
        } else {
            next
        };
        let signed = s.sign(author, nonce, body);
        signed.validate_form().map_err(|e| anyhow!("bench record: {e}"))?;
        Ok(signed)
    }

    /// The record of the current step committed: on to the next.
    fn advance(&mut self) {
        self.step = match self.step {
            Step::Inspect => Step::Ship,
            Step::Ship => Step::Receive,
            Step::Receive => {
                if self.at_producer {
                    self.at_producer = false;
                    self.custodian_is_shop = false;
                } else {
                    self.custodian_is_shop = !self.custodian_is_shop;
                }
                self.round += 1;
                Step::Inspect
            }
        };
    }
}

fn item(name: &str, requirement: &str, measured: &str) -> TestItem {
    TestItem { name: name.into(), requirement: requirement.into(), measured: measured.into(), verdict: Verdict::Pass }
}

/// A tag unique to this run (base 36 of the time in ms), part of every lot number.
fn run_tag() -> String {
    base36(now_ms())
}

pub fn run(a: &BenchArgs, out: &Out) -> Result<(), Failure> {
    check_counts(a.clients, a.duration)?;
    let timeline = slice_of(a.timeline)?;
    if a.batch == 0 || a.batch > BATCH_MAX {
        return Err(Failure::bad_input(anyhow!("--batch {}: must be 1 to {BATCH_MAX}", a.batch)));
    }
    let net =
        Network::open(&a.dir).with_context(|| format!("open the network in {}", a.dir.display())).or_bad_input()?;
    let key = |id: &str| -> Result<(OrgId, SigningKey), Failure> {
        let k = net.cast().key(id).with_context(|| format!("no key of {id} in {}", a.dir.display())).or_bad_input()?;
        Ok((OrgId::new(id).map_err(|e| anyhow!("{e}")).or_bad_input()?, k.clone()))
    };
    let signers = Arc::new(Signers {
        ledger: net.ledger_id().clone(),
        key_id: KeyId::new(CAST_KEY_ID).map_err(|e| anyhow!("{e}")).or_bad_input()?,
        nutri: key(NUTRI)?,
        ccic: key(CCIC_AU)?,
        importer: key(IMPORTER)?,
        shop: key(SHOP)?,
        validators: net.genesis().validator_set(),
    });
    if a.lot_items == 0 {
        return Err(Failure::bad_input(anyhow!("--lot-items 0: a lot needs at least one code")));
    }
    if let Some(rate) = a.rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= RATE_MAX) {
            return Err(Failure::bad_input(anyhow!("--rate {rate}: must be more than 0 and at most {RATE_MAX}")));
        }
        if a.workload != Workload::Records {
            return Err(Failure::bad_input(anyhow!(
                "--rate applies to --workload records, not --workload {}",
                a.workload.as_str()
            )));
        }
    }
    let targets: Vec<String> = if a.nodes.is_empty() {
        let addrs: Result<Vec<SocketAddr>> = net.node_ids().iter().map(|n| net.grpc_addr(n)).collect();
        addrs.or_bad_input()?.iter().map(|s| s.to_string()).collect()
    } else {
        a.nodes.clone()
    };
    drop(net);
    let rt = multi_thread_runtime()?;
    let report = rt.block_on(bench_veritrace(a, timeline, signers, targets, out))?;
    report.emit(out);
    if report.errors > 0 {
        return Err(Failure::reported(EXIT_REFUSED));
    }
    Ok(())
}

async fn connect(addr: &str) -> Result<LedgerClient<Channel>, Failure> {
    let uri = endpoint_uri(addr).or_bad_input()?;
    let channel = Endpoint::from_shared(uri)
        .with_context(|| format!("node address {addr:?}"))
        .or_bad_input()?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connect to node {addr}"))
        .or_exit(EXIT_UNAVAILABLE)?;
    Ok(LedgerClient::new(channel)
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
}

/// `timeline` is `a.timeline` checked ([`slice_of`]).
async fn bench_veritrace(
    a: &BenchArgs,
    timeline: Option<Duration>,
    signers: Arc<Signers>,
    targets: Vec<String>,
    out: &Out,
) -> Result<Report, Failure> {
    let connections = a.clients.min(CONNECTIONS_MAX).max(targets.len() as u32);
    let mut conns = Vec::with_capacity(connections as usize);
    for i in 0..connections as usize {
        conns.push(connect(&targets[i % targets.len()]).await?);
    }
    let timeout = Duration::from_secs(a.timeout);
    let bar = out.spinner("waiting until every node knows the leader");
    let known = wait_for_leader_everywhere(&conns[..targets.len()], &targets, timeout).await;
    bar.finish_and_clear();
    known.or_exit(EXIT_UNAVAILABLE)?;

    // Before the clock: one lot per record of a request, per client, issued by nutri.
    let tag = run_tag();
    let gtin = Gtin::under_company_prefix(NUTRI_GS1_PREFIX, 7)
        .map_err(|e| anyhow!("benchmark product GTIN: {e}"))
        .or_bad_input()?;
    let setup = Setup { signers: signers.clone(), product: product(&gtin), tag: tag.clone() };
    let mut lots: Vec<Vec<LotState>> = Vec::with_capacity(a.clients as usize);
    let mut issues = Vec::new();
    if a.workload != Workload::Issue {
        for c in 0..a.clients {
            let mut mine = Vec::with_capacity(a.batch as usize);
            for k in 0..a.batch {
                let (record, lot) = setup.issue('Q', u64::from(c) * u64::from(a.batch) + u64::from(k), LOT_ITEMS)?;
                issues.push(record);
                mine.push(LotState {
                    subject: SubjectId::lot_of(gtin.clone(), lot.clone()),
                    lot,
                    step: Step::Inspect,
                    custodian_is_shop: false,
                    at_producer: true,
                    round: 0,
                });
            }
            lots.push(mine);
        }
        submit_setup(&conns[0], &issues, timeout, "issue the benchmark's lots", out).await?;
    } else {
        lots.resize_with(a.clients as usize, Vec::new);
    }
    if matches!(a.workload, Workload::Trace | Workload::Bundle) {
        // A history for every lot: inspected, shipped to the importer, received.
        let mut height = 0;
        for _ in 0..3 {
            let mut round = Vec::new();
            for (c, mine) in lots.iter().enumerate() {
                for (k, lot) in mine.iter().enumerate() {
                    round.push(lot.next_record(&signers, c as u32, k as u32, 1).or_bad_input()?);
                }
            }
            height = submit_setup(&conns[0], &round, timeout, "give the benchmark's lots a history", out).await?;
            lots.iter_mut().flatten().for_each(LotState::advance);
        }
        if a.workload == Workload::Bundle {
            let bar = out.spinner(format!("waiting for a complete checkpoint at height {height} on every node"));
            let done = wait_for_checkpoint(&conns[..targets.len()], height).await;
            bar.finish_and_clear();
            done.or_exit(EXIT_UNAVAILABLE)?;
        }
    }

    let bar = out.spinner(format!("{} clients for {} s", a.clients, a.duration));
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(a.duration);
    let pace = a.rate.map(|rate| Arc::new(Pace::new(start, rate, a.batch)));
    let mut tasks = Vec::with_capacity(a.clients as usize);
    for (c, mine) in lots.into_iter().enumerate() {
        let conn = conns[c % conns.len()].clone();
        let signers = signers.clone();
        let c = c as u32;
        let batch = a.batch;
        let task = match a.workload {
            Workload::Records => {
                let pace = pace.clone();
                tokio::spawn(veritrace_client(c, batch, mine, conn, signers, pace, stop_at, timeout))
            }
            Workload::Issue => {
                let setup = Setup { signers, product: setup.product.clone(), tag: tag.clone() };
                let (clients, items) = (a.clients, a.lot_items);
                tokio::spawn(issue_client(c, clients, batch, items, setup, conn, stop_at, timeout))
            }
            Workload::Trace | Workload::Bundle => {
                let codes = mine.iter().map(|l| l.lot.clone()).collect();
                let q = Query { workload: a.workload, gtin: gtin.clone(), lots: codes, signers };
                tokio::spawn(query_client(c, q, conn, stop_at, timeout))
            }
        };
        tasks.push(task);
    }
    let tallies = join_clients(tasks).await?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let spec = RunSpec {
        system: "veritrace",
        offered: a.rate,
        workload: a.workload,
        lot_items: a.lot_items,
        clients: a.clients,
        batch: a.batch,
        targets,
        timeline,
    };
    Ok(merge(spec, start, elapsed, tallies))
}

fn product(gtin: &Gtin) -> Product {
    Product {
        gtin: gtin.clone(),
        name: "Southern Cross infant formula, stage 2 (6-12 months), 800 g".into(),
        model: "SC-S2-800".into(),
        spec: "800 g tin".into(),
        standard: "GB 10766-2021".into(),
    }
}

/// Makes the issuance records of a run.
struct Setup {
    signers: Arc<Signers>,
    product: Product,
    tag: String,
}

impl Setup {
    /// Lot `{letter}{tag}{n in base 36}`, its `items` codes a serial range under the lot's
    /// name, issued by nutri.
    fn issue(&self, letter: char, n: u64, items: u64) -> Result<(SignedRecord, Lot), Failure> {
        let lot_s = format!("{letter}{}{}", self.tag, base36(n));
        let lot = Lot::parse(&lot_s).map_err(|e| anyhow!("lot {lot_s:?}: {e}")).or_bad_input()?;
        let width = items.saturating_sub(1).to_string().len().max(SERIAL_WIDTH_MIN) as u8;
        let record = self.signers.sign(
            &self.signers.nutri,
            0,
            RecordBody::IssueCodes(IssueCodes {
                product: self.product.clone(),
                lot: lot.clone(),
                production_date: "2026-11-01".into(),
                expiry_date: Some("2028-10-31".into()),
                codes: CodeSet::Range(SerialRange { prefix: format!("{lot_s}-"), start: 0, count: items, width }),
                factory: "Southern Cross Nutrition, Dandenong VIC, Australia".into(),
            }),
        );
        record.validate_form().map_err(|e| anyhow!("issue record of lot {lot_s}: {e}")).or_bad_input()?;
        Ok((record, lot))
    }
}

/// Digits of a serial's counter, at least.
const SERIAL_WIDTH_MIN: usize = 4;

/// Submits records before the clock starts, in batches, each accepted; returns the height
/// of the last block.
async fn submit_setup(
    conn: &LedgerClient<Channel>,
    records: &[SignedRecord],
    timeout: Duration,
    what: &str,
    out: &Out,
) -> Result<u64, Failure> {
    let bar = out.spinner(format!("{what}: {} records, before the clock starts", records.len()));
    let mut height = 0;
    for chunk in records.chunks(SETUP_BATCH_RECORDS) {
        let req = pb::SubmitBatchRequest {
            signed_records: chunk.iter().map(SignedRecord::to_bytes).collect(),
            wait_for_commit: true,
        };
        let resp =
            submit_batch_retrying(conn, req, timeout).await.context(what.to_string()).or_exit(EXIT_UNAVAILABLE)?;
        if let Some(r) = resp.receipts.iter().find(|r| r.status != pb::ReceiptStatus::Accepted as i32) {
            bar.finish_and_clear();
            return Err(Failure::new(EXIT_REFUSED, anyhow!("{what}: {} {}", r.reject_reason, r.message)));
        }
        height = resp.receipts.iter().map(|r| r.height).max().unwrap_or(height).max(height);
    }
    bar.finish_and_clear();
    Ok(height)
}

/// Waits until every node's latest complete checkpoint is at `height` or above.
async fn wait_for_checkpoint(conns: &[LedgerClient<Channel>], height: u64) -> Result<()> {
    let deadline = Instant::now() + CHECKPOINT_TIMEOUT;
    loop {
        let mut lowest = u64::MAX;
        for c in conns {
            let h = match tokio::time::timeout(Duration::from_secs(5), c.clone().status(pb::StatusRequest {})).await {
                Ok(Ok(r)) => r.into_inner().complete_checkpoint_height,
                _ => 0,
            };
            lowest = lowest.min(h);
        }
        if lowest >= height {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no complete checkpoint at height {height} on every node within {CHECKPOINT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issues new lots, `batch` per request, until the clock runs out.
#[allow(clippy::too_many_arguments)]
async fn issue_client(
    client: u32,
    clients: u32,
    batch: u32,
    items: u64,
    setup: Setup,
    conn: LedgerClient<Channel>,
    stop_at: Instant,
    timeout: Duration,
) -> ClientTally {
    let mut t = ClientTally::default();
    let mut seq = 0u64;
    while Instant::now() < stop_at {
        let mut records = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            match setup.issue('I', seq * u64::from(clients) + u64::from(client), items) {
                Ok((r, _)) => records.push(r.to_bytes()),
                Err(f) => {
                    t.error(f.err.map(|e| format!("{e:#}")).unwrap_or_default());
                    return t;
                }
            }
            seq += 1;
        }
        t.item_bytes += records.iter().map(|r| r.len() as u64).sum::<u64>();
        t.items += records.len() as u64;
        let began = Instant::now();
        t.requests += 1;
        let req = pb::SubmitBatchRequest { signed_records: records, wait_for_commit: true };
        match tokio::time::timeout(timeout, conn.clone().submit_batch(req)).await {
            Ok(Ok(r)) => {
                for r in r.into_inner().receipts {
                    if r.status == pb::ReceiptStatus::Accepted as i32 {
                        t.ops += 1;
                    } else {
                        t.error(format!("SubmitBatch: status {} {} {}", r.status, r.reject_reason, r.message));
                    }
                }
            }
            Ok(Err(s)) => t.error(format!("SubmitBatch: {:?}: {}", s.code(), s.message())),
            Err(_) => t.error(format!("SubmitBatch: no answer within {timeout:?}")),
        }
        t.sample(began);
    }
    t
}

/// What a reading client asks for.
struct Query {
    workload: Workload,
    gtin: Gtin,
    lots: Vec<Lot>,
    /// For the genesis validators the bundles are verified against.
    signers: Arc<Signers>,
}

/// Traces or bundles of item codes of the client's lots, one at a time.
async fn query_client(
    client: u32,
    q: Query,
    conn: LedgerClient<Channel>,
    stop_at: Instant,
    timeout: Duration,
) -> ClientTally {
    let mut t = ClientTally::default();
    let mut seq = u64::from(client);
    while Instant::now() < stop_at {
        seq += 1;
        let lot = &q.lots[(seq % q.lots.len() as u64) as usize];
        let serial_s = format!("{lot}-{:0w$}", (seq * 7919) % LOT_ITEMS, w = SERIAL_WIDTH_MIN);
        let code = match Serial::parse(&serial_s) {
            Ok(serial) => SubjectId::item(q.gtin.clone(), serial),
            Err(e) => {
                t.error(format!("serial {serial_s:?}: {e}"));
                return t;
            }
        };
        t.requests += 1;
        let began = Instant::now();
        let done = tokio::time::timeout(timeout, query_once(&q, &conn, &code)).await;
        match done {
            Ok(Ok(bytes)) => {
                t.ops += 1;
                t.items += 1;
                t.item_bytes += bytes;
            }
            Ok(Err(e)) => t.error(format!("{} of {code}: {e:#}", q.workload.as_str())),
            Err(_) => t.error(format!("{} of {code}: no answer within {timeout:?}", q.workload.as_str())),
        }
        t.sample(began);
    }
    t
}

/// One trace (first page) or one bundle fetched and verified; the bytes received.
async fn query_once(q: &Query, conn: &LedgerClient<Channel>, code: &SubjectId) -> Result<u64> {
    match q.workload {
        Workload::Trace => {
            let req = pb::TraceRequest { code: code.to_string(), page_token: String::new(), limit: 0 };
            let page = conn.clone().trace(req).await.map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))?;
            let page = page.into_inner();
            if page.records.is_empty() {
                bail!("empty trace");
            }
            Ok(page.records.iter().map(|r| r.signed_record.len() as u64).sum())
        }
        _ => {
            let req =
                pb::GetBundleRequest { code: code.to_string(), format: pb::BundleFormat::Compact as i32, height: 0 };
            let resp = conn.clone().get_bundle(req).await.map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))?;
            let bytes = resp.into_inner().bundle;
            let bundle = TraceBundle::from_bytes(&bytes).map_err(|e| anyhow!("bundle does not parse: {e}"))?;
            if &bundle.code != code {
                bail!("asked for the bundle of {code}, got one of {}", bundle.code);
            }
            verify_bundle(&bundle, &q.signers.validators).map_err(|e| anyhow!("bundle does not verify: {e}"))?;
            Ok(bytes.len() as u64)
        }
    }
}

/// Waits until every node names the same leader (an observer learns it only once the
/// leader has added it as a learner), so the clock does not run while requests cannot be
/// forwarded.
async fn wait_for_leader_everywhere(
    conns: &[LedgerClient<Channel>],
    targets: &[String],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut leaders = Vec::with_capacity(conns.len());
        for c in conns {
            let leader =
                match tokio::time::timeout(Duration::from_secs(5), c.clone().status(pb::StatusRequest {})).await {
                    Ok(Ok(r)) => r.into_inner().leader,
                    _ => String::new(),
                };
            leaders.push(leader);
        }
        if leaders.iter().all(|l| !l.is_empty() && *l == leaders[0]) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("after {timeout:?} the nodes {targets:?} still name leaders {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries while the network has no leader (UNAVAILABLE), until `timeout`.
async fn submit_batch_retrying(
    conn: &LedgerClient<Channel>,
    req: pb::SubmitBatchRequest,
    timeout: Duration,
) -> Result<pb::SubmitBatchResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.clone().submit_batch(req.clone())).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(s)) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(s)) => bail!("SubmitBatch: {:?}: {}", s.code(), s.message()),
            Err(_) => bail!("SubmitBatch: no answer within {timeout:?}"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn veritrace_client(
    client: u32,
    batch: u32,
    mut lots: Vec<LotState>,
    conn: LedgerClient<Channel>,
    signers: Arc<Signers>,
    pace: Option<Arc<Pace>>,
    stop_at: Instant,
    timeout: Duration,
) -> ClientTally {
    let mut t = ClientTally::default();
    let mut nonce = 1u64;
    while Instant::now() < stop_at {
        let mut records = Vec::with_capacity(lots.len());
        for (k, lot) in lots.iter().enumerate() {
            nonce += 1;
            match lot.next_record(&signers, client, k as u32, nonce) {
                Ok(r) => records.push(r.to_bytes()),
                Err(e) => {
                    t.error(format!("{e:#}"));
                    return t;
                }
            }
        }
        let began = match &pace {
            None => Instant::now(),
            Some(p) => match p.due(stop_at).await {
                Some(due) => due,
                None => break,
            },
        };
        t.item_bytes += records.iter().map(|r| r.len() as u64).sum::<u64>();
        t.items += records.len() as u64;
        t.requests += 1;
        let accepted: Vec<bool> = if batch == 1 {
            let req = pb::SubmitRequest { signed_record: records.swap_remove(0), wait_for_commit: true };
            match tokio::time::timeout(timeout, conn.clone().submit(req)).await {
                Ok(Ok(r)) => {
                    let ok = r.into_inner().receipt.is_some_and(|r| r.status == pb::ReceiptStatus::Accepted as i32);
                    if !ok {
                        t.error("Submit: the receipt is not accepted".into());
                    }
                    vec![ok]
                }
                Ok(Err(s)) => {
                    t.error(format!("Submit: {:?}: {}", s.code(), s.message()));
                    vec![false]
                }
                Err(_) => {
                    t.error(format!("Submit: no answer within {timeout:?}"));
                    vec![false]
                }
            }
        } else {
            let req = pb::SubmitBatchRequest { signed_records: records, wait_for_commit: true };
            match tokio::time::timeout(timeout, conn.clone().submit_batch(req)).await {
                Ok(Ok(r)) => {
                    let receipts = r.into_inner().receipts;
                    let oks: Vec<bool> =
                        receipts.iter().map(|r| r.status == pb::ReceiptStatus::Accepted as i32).collect();
                    for r in receipts.iter().filter(|r| r.status != pb::ReceiptStatus::Accepted as i32) {
                        t.error(format!("SubmitBatch: status {} {} {}", r.status, r.reject_reason, r.message));
                    }
                    if oks.len() != lots.len() {
                        t.error(format!("SubmitBatch: {} receipts for {} records", oks.len(), lots.len()));
                        vec![false; lots.len()]
                    } else {
                        oks
                    }
                }
                Ok(Err(s)) => {
                    t.error(format!("SubmitBatch: {:?}: {}", s.code(), s.message()));
                    vec![false; lots.len()]
                }
                Err(_) => {
                    t.error(format!("SubmitBatch: no answer within {timeout:?}"));
                    vec![false; lots.len()]
                }
            }
        };
        t.sample(began);
        for (lot, ok) in lots.iter_mut().zip(accepted) {
            if ok {
                t.ops += 1;
                lot.advance();
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------
// etcd

pub fn run_etcd(a: &BenchEtcdArgs, out: &Out) -> Result<(), Failure> {
    check_counts(a.clients, a.duration)?;
    let timeline = slice_of(a.timeline)?;
    let mut targets = Vec::with_capacity(a.endpoints.len());
    for e in &a.endpoints {
        let hostport = e.strip_prefix("http://").unwrap_or(e).trim_end_matches('/');
        if hostport.contains("://") || !hostport.contains(':') {
            return Err(Failure::new(EXIT_BAD_INPUT, anyhow!("etcd endpoint {e:?} must be http://host:port")));
        }
        targets.push(hostport.to_string());
    }
    let rt = multi_thread_runtime()?;
    let report = rt.block_on(async {
        let bar = out.spinner(format!("{} etcd clients for {} s", a.clients, a.duration));
        let mut conns = Vec::with_capacity(a.clients as usize);
        for c in 0..a.clients as usize {
            let target = &targets[c % targets.len()];
            let s = TcpStream::connect(target)
                .await
                .with_context(|| format!("connect to etcd at {target}"))
                .or_exit(EXIT_UNAVAILABLE)?;
            s.set_nodelay(true).context("TCP_NODELAY").or_exit(EXIT_UNAVAILABLE)?;
            conns.push((s, target.clone()));
        }
        let start = Instant::now();
        let stop_at = start + Duration::from_secs(a.duration);
        let timeout = Duration::from_secs(a.timeout);
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, (s, host))| tokio::spawn(etcd_client(c as u32, s, host, a.value_bytes, stop_at, timeout)))
            .collect();
        let tallies = join_clients(tasks).await?;
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        let spec = RunSpec {
            system: "etcd",
            offered: None,
            workload: Workload::Records,
            lot_items: 0,
            clients: a.clients,
            batch: 1,
            targets: a.endpoints.clone(),
            timeline,
        };
        Ok::<_, Failure>(merge(spec, start, elapsed, tallies))
    })?;
    report.emit(out);
    if report.errors > 0 {
        return Err(Failure::reported(EXIT_UNAVAILABLE));
    }
    Ok(())
}

/// Puts `bench/C/N` = `value_bytes` bytes through etcd's JSON gateway (`POST /v3/kv/put`),
/// one at a time on one kept-alive HTTP/1.1 connection. A put answers once committed.
async fn etcd_client(
    client: u32,
    mut stream: TcpStream,
    host: String,
    value_bytes: u32,
    stop_at: Instant,
    timeout: Duration,
) -> ClientTally {
    let mut t = ClientTally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut seq = 0u64;
    while Instant::now() < stop_at {
        seq += 1;
        let key = format!("bench/{client}/{seq}");
        let mut value = format!("client {client} put {seq} ").into_bytes();
        value.resize(value_bytes as usize, b'x');
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key.as_bytes()), base64(&value));
        let req = format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        t.item_bytes += value.len() as u64;
        t.items += 1;
        t.requests += 1;
        let began = Instant::now();
        match tokio::time::timeout(timeout, http_round_trip(&mut stream, req.as_bytes(), &mut buf)).await {
            Ok(Ok(200)) => {
                t.ops += 1;
                t.sample(began);
            }
            Ok(Ok(code)) => {
                t.error(format!("etcd {host} answered HTTP {code}: {}", String::from_utf8_lossy(&buf)));
                t.sample(began);
            }
            Ok(Err(e)) => {
                t.error(format!("etcd {host}: {e:#}"));
                return t;
            }
            Err(_) => {
                t.error(format!("etcd {host}: no answer within {timeout:?}"));
                return t;
            }
        }
    }
    t
}

/// Sends one request and reads one response (Content-Length or chunked); returns the status
/// code, with the body left in `buf`.
async fn http_round_trip(stream: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> Result<u16> {
    stream.write_all(req).await.context("send")?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf, &mut chunk).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not utf-8")?.to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_ascii_lowercase())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().with_context(|| format!("content-length {len:?}"))?;
        while buf.len() < head_end + len {
            read_more(stream, buf, &mut chunk).await?;
        }
        buf.drain(..head_end);
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            read_more(stream, buf, &mut chunk).await?;
        }
        buf.drain(..head_end);
    } else {
        bail!("response without a length: {head:?}");
    }
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Result<()> {
    let n = stream.read(chunk).await.context("read")?;
    if n == 0 {
        bail!("connection closed by etcd");
    }
    if buf.len() + n > HTTP_RESPONSE_BYTES_MAX {
        bail!("response longer than {HTTP_RESPONSE_BYTES_MAX} bytes");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (RFC 4648 §4), as etcd's gateway wants bytes fields.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, coded) in cases {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
    }

    #[tokio::test]
    async fn a_pace_hands_out_evenly_spaced_due_times_until_the_stop() {
        // 100 records/s in requests of 2: one request every 20 ms. Started in the past,
        // so the due times are not waited for.
        let start = Instant::now() - Duration::from_secs(1);
        let pace = Pace::new(start, 100.0, 2);
        let stop_at = start + Duration::from_millis(50);
        let mut due = Vec::new();
        while let Some(at) = pace.due(stop_at).await {
            due.push(at.duration_since(start).as_millis());
        }
        assert_eq!(due, [0, 20, 40]);
        assert!(pace.due(stop_at).await.is_none());
    }

    #[test]
    fn a_timeline_puts_each_request_in_the_slice_it_began_in() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Slice 0: 10, 20, 30 ms; slice 1: nothing; slice 2: 250 ms (began at 210 ms).
        let samples = [(at(0), 10_000), (at(90), 30_000), (at(40), 20_000), (at(210), 250_000)];
        let t = Timeline::of(Duration::from_millis(100), start, samples.into_iter());
        let rows: Vec<_> = t.rows().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], (0.0, 3, 20.0, 30.0, 30.0));
        assert_eq!(rows[1], (0.1, 0, 0.0, 0.0, 0.0));
        assert_eq!(rows[2], (0.2, 1, 250.0, 250.0, 250.0));
        let j = t.to_json();
        assert_eq!(j["slice_s"], 0.1);
        assert_eq!(j["slices"][2]["requests"], 1);
        assert_eq!(j["slices"][2]["p99_ms"], 250.0);
        assert!(j["slices"][1]["p99_ms"].is_null(), "an empty slice has no latency: {j}");
        let text = t.to_text();
        let lines: Vec<&str> = text.trim_start().lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[2].ends_with("0 requests"), "{text}");
        assert!(lines[3].contains("p99    250.0 ms"), "{text}");
    }

    #[test]
    fn percentiles_take_the_sample_at_or_above_the_rank() {
        let spec = RunSpec {
            system: "x",
            offered: None,
            workload: Workload::Records,
            lot_items: 0,
            clients: 1,
            batch: 1,
            targets: Vec::new(),
            timeline: None,
        };
        let mut r = merge(spec, Instant::now(), Duration::from_secs(1), Vec::new());
        r.latencies_us = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(r.percentile_ms(0.50), 50.0);
        assert_eq!(r.percentile_ms(0.99), 99.0);
        assert_eq!(r.percentile_ms(1.0), 100.0);
    }
}
