//! The consumer page: what a shopper sees after scanning a code (docs/consumer.md).
//!
//! Served on the node's HTTP listener at the code's GS1 Digital Link path
//! (`/01/{gtin}/21/{serial}`, also with `/10/{lot}` before the serial, `/01/{gtin}/10/{lot}`
//! and `/00/{sscc}`), whatever the host: the product, producer, lot, certificates of
//! conformity, inspection reports, custody chain and regulatory actions, a banner for a
//! hold, recall or sale, and two verdicts side by side — this node's
//! ([`verify_bundle`] against the genesis validators) and the browser's own (`verify.js`
//! checks the same bundle with vendored blake3 and ed25519, against validator keys the
//! page carries from the genesis file). `Accept: application/json` gets the same view as
//! JSON; `…/bundle` the trace bundle; `…/epcis` (or `Accept: application/ld+json`) the
//! trace as an EPCIS 2.0 document ([`veritrace_ledger::epcis`], docs/epcis.md); `…/qr.png`
//! and `…/qr.svg` the code's QR code.
//!
//! Everything shown comes from the trace bundle at the latest complete checkpoint, so the
//! page says nothing the proofs do not cover. The bundle and the trace come from
//! [`crate::query`]; the store's blocking lock is taken on the blocking pool only.
//!
//! The browser checks that each value the page shows in an element marked `data-vt`
//! equals what the bundle says (`verify.js` has the same rules as `RecordView::facts`
//! and `ConsumerView::page_facts`), so the two must change together.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tonic::{Code, Status};
use veritrace_ledger::bundle::{BundleError, BundleVerdict, TraceBundle, verify_bundle};
use veritrace_ledger::epcis;
use veritrace_ledger::ids::{DigitalLink, SubjectId, parse_digital_link};
use veritrace_ledger::org::{Genesis, OrgId, ValidatorSet};
use veritrace_ledger::record::{CodeSet, IssueCodes, RecordBody, RegulatoryKind, SignedRecord, Verdict};
use veritrace_proto::v1 as pb;

use crate::qr;
use crate::query::{self, LedgerStore};
use crate::service::Services;

/// Path suffix of the trace bundle of a code.
pub const BUNDLE_SUFFIX: &str = "bundle";
/// Path suffix of the trace of a code as an EPCIS 2.0 JSON-LD document.
pub const EPCIS_SUFFIX: &str = "epcis";
/// Media type of an EPCIS 2.0 document in JSON-LD.
pub const EPCIS_MEDIA_TYPE: &str = "application/ld+json";
/// Path suffix of the PNG QR code of a code.
pub const QR_PNG_SUFFIX: &str = "qr.png";
/// Path suffix of the SVG QR code of a code.
pub const QR_SVG_SUFFIX: &str = "qr.svg";
/// Seconds a client should wait before asking again while no checkpoint covers the code.
const RETRY_AFTER_SECS: &str = "2";
/// Page, bundle and QR requests this process works on at once; beyond, a request is
/// answered 503 at once rather than queued behind blocking reads and verifications.
pub const CONSUMER_REQUESTS_MAX: usize = 64;

static IN_FLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONSUMER_REQUESTS_MAX);

/// The browser's verifier and the libraries it imports, built into the binary: the page
/// fetches nothing from anywhere but the node that served it.
const STATIC_FILES: &[(&str, &str)] = &[
    ("verify.js", include_str!("../static/verify.js")),
    ("vendor/noble-hashes/blake3.js", include_str!("../static/vendor/noble-hashes/blake3.js")),
    ("vendor/noble-hashes/blake2.js", include_str!("../static/vendor/noble-hashes/blake2.js")),
    ("vendor/noble-hashes/_blake.js", include_str!("../static/vendor/noble-hashes/_blake.js")),
    ("vendor/noble-hashes/_md.js", include_str!("../static/vendor/noble-hashes/_md.js")),
    ("vendor/noble-hashes/_u64.js", include_str!("../static/vendor/noble-hashes/_u64.js")),
    ("vendor/noble-hashes/utils.js", include_str!("../static/vendor/noble-hashes/utils.js")),
    ("vendor/noble-hashes/sha2.js", include_str!("../static/vendor/noble-hashes/sha2.js")),
    ("vendor/noble-hashes/LICENSE", include_str!("../static/vendor/noble-hashes/LICENSE")),
    ("vendor/noble-ed25519/index.js", include_str!("../static/vendor/noble-ed25519/index.js")),
    ("vendor/noble-ed25519/LICENSE", include_str!("../static/vendor/noble-ed25519/LICENSE")),
    ("vendor/README.md", include_str!("../static/vendor/README.md")),
];

/// The page's styles, inline: one request fewer on a phone.
const CSS: &str = include_str!("../static/page.css");

/// Scripts only from the node, styles inline, requests only back to the node.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of the consumer page, merged into the node's HTTP router.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/01/{*rest}", get(digital_link))
        .route("/00/{*rest}", get(digital_link))
        .route("/static/{*file}", get(static_file))
}

/// Any other path: a 404 page.
pub async fn not_found(headers: HeaderMap, uri: Uri) -> Response {
    Failure {
        status: StatusCode::NOT_FOUND,
        title: "Page not found",
        message: format!("{} is not a page of this node; product pages are at /01/{{gtin}}/21/{{serial}}", uri.path()),
    }
    .respond(wants(&headers) != Wants::Html)
}

// ---------------------------------------------------------------------------------------
// Requests

/// What a Digital Link path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Page,
    Bundle,
    Epcis,
    QrPng,
    QrSvg,
}

/// A parsed request path: the code and what of it.
#[derive(Clone, Debug)]
struct Target {
    link: DigitalLink,
    resource: Resource,
}

impl Target {
    /// The whole path is a Digital Link (the page), or one followed by a known suffix. A
    /// path that is neither gets the Digital Link parser's own words on what is wrong.
    fn parse(path: &str) -> Result<Target, String> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let whole = match parse_digital_link(path) {
            Ok(link) => return Ok(Target { link, resource: Resource::Page }),
            Err(e) => e.to_string(),
        };
        let (base, resource) = match path.rsplit_once('/') {
            Some((base, BUNDLE_SUFFIX)) => (base, Resource::Bundle),
            Some((base, EPCIS_SUFFIX)) => (base, Resource::Epcis),
            Some((base, QR_PNG_SUFFIX)) => (base, Resource::QrPng),
            Some((base, QR_SVG_SUFFIX)) => (base, Resource::QrSvg),
            _ => return Err(whole),
        };
        parse_digital_link(base).map(|link| Target { link, resource }).map_err(|e| e.to_string())
    }

    fn code(&self) -> &SubjectId {
        &self.link.subject
    }

    /// The canonical Digital Link path, with the lot before the serial if the request had
    /// one.
    fn path(&self) -> String {
        qr::digital_link_path(&self.link)
    }

    /// A lot given before the serial must be the item's lot.
    fn check_lot(&self, b: &TraceBundle) -> Result<(), Failure> {
        let (SubjectId::Item { gtin, .. }, Some(lot)) = (&self.link.subject, &self.link.lot) else {
            return Ok(());
        };
        let asked = SubjectId::lot_of(gtin.clone(), lot.clone());
        let actual = b.subjects.iter().skip(1).map(|s| &s.subject).find(|s| matches!(s, SubjectId::Lot { .. }));
        if actual == Some(&asked) {
            return Ok(());
        }
        let its = actual.map(|a| format!("; it belongs to {a}")).unwrap_or_default();
        Err(Failure::not_found(format!("{} is not an item of lot {lot}{its}", self.code())))
    }
}

/// What a client asks a page for (`Accept`, with q-values): HTML, unless it ranks JSON or
/// an EPCIS document (`application/ld+json`) above it. Browsers get HTML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wants {
    Html,
    Json,
    Epcis,
}

fn wants(headers: &HeaderMap) -> Wants {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return Wants::Html };
    let (mut json, mut html, mut ld) = (0u32, 0u32, 0u32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        // q in thousandths, so no floats.
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .map(|q| {
                let (int, frac) = q.split_once('.').unwrap_or((q, ""));
                let frac: String = frac.chars().chain("000".chars()).take(3).collect();
                int.parse::<u32>().unwrap_or(0).min(1) * 1000 + frac.parse::<u32>().unwrap_or(0)
            })
            .next()
            .unwrap_or(1000)
            .min(1000);
        match media.as_str() {
            "application/json" => json = json.max(q),
            "text/html" => html = html.max(q),
            EPCIS_MEDIA_TYPE => ld = ld.max(q),
            _ => {}
        }
    }
    if ld > html && ld > json {
        Wants::Epcis
    } else if json > html {
        Wants::Json
    } else {
        Wants::Html
    }
}

async fn digital_link(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Response {
    let wants = wants(&headers);
    let json = wants != Wants::Html;
    let target = match Target::parse(uri.path()) {
        Ok(t) => t,
        Err(message) => {
            return Failure { status: StatusCode::BAD_REQUEST, title: "This is not a valid product code", message }
                .respond(json);
        }
    };
    let Ok(_permit) = IN_FLIGHT.try_acquire() else {
        return Failure::unavailable("this node is serving too many pages at once; retry shortly").respond(json);
    };
    let result = match (target.resource, wants) {
        // The page's query holds Digital Link attributes (`?17=281120`), not a height.
        (Resource::Page, Wants::Epcis) => epcis_document(&s, &target, None).await,
        (Resource::Page, _) => page(&s, &target, json).await,
        (Resource::Epcis, _) => match bundle_height(uri.query()) {
            Ok(height) => epcis_document(&s, &target, height).await,
            Err(f) => Err(f),
        },
        (Resource::Bundle, _) => bundle(&s, &target, uri.query()).await,
        (Resource::QrPng | Resource::QrSvg, _) => qr_code(&s, &target, &headers).await,
    };
    result.unwrap_or_else(|f| f.respond(json))
}

async fn page(s: &Arc<Services>, target: &Target, json: bool) -> Result<Response, Failure> {
    let bundle = fetch_bundle(s, target, None).await?;
    let (bundle, verdict) = verify(s, bundle).await?;
    let view = ConsumerView::build(&s.genesis, &target.path(), &bundle, &verdict);
    let mut resp = if json {
        let body = serde_json::to_string_pretty(&view).map_err(|e| Failure::internal(e.to_string()))?;
        respond(StatusCode::OK, "application/json", body)
    } else {
        let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", view.html());
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        r
    };
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn bundle(s: &Arc<Services>, target: &Target, query: Option<&str>) -> Result<Response, Failure> {
    let height = bundle_height(query)?;
    let bundle = fetch_bundle(s, target, height).await?;
    let mut resp = respond(StatusCode::OK, "application/json", bundle.to_json());
    // A bundle at a named height never changes; the latest does.
    let cache = if height.is_some() { "public, max-age=31536000, immutable" } else { "no-store" };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(resp)
}

/// The trace as an EPCIS 2.0 document, made from the bundle at the complete checkpoint at
/// `height` (the latest if `None`), so it holds what the page shows: every record of the
/// code, its lot and its logistic unit that the checkpoint covers. Its `creationDate` is
/// the checkpoint's time: every node serves the same bytes for the same checkpoint.
async fn epcis_document(s: &Arc<Services>, target: &Target, height: Option<u64>) -> Result<Response, Failure> {
    let bundle = fetch_bundle(s, target, height).await?;
    let records: Vec<(u64, &SignedRecord)> = bundle.records.iter().map(|r| (r.log_index, &r.record)).collect();
    let h = &bundle.checkpoint.header;
    let info = epcis::DocumentInfo {
        ledger_id: &s.genesis.ledger_id,
        code: &bundle.code,
        height: h.height,
        created_ms: h.time_ms,
    };
    let body = serde_json::to_string_pretty(&epcis::export_document(&info, &records)).map_err(Failure::internal_of)?;
    let mut resp = respond(StatusCode::OK, EPCIS_MEDIA_TYPE, body);
    let cache = if height.is_some() { "public, max-age=31536000, immutable" } else { "no-store" };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
    Ok(resp)
}

/// `height=H` from the query string of a bundle or EPCIS request; nothing else is accepted.
fn bundle_height(query: Option<&str>) -> Result<Option<u64>, Failure> {
    let mut height = None;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("height", h)) => match h.parse::<u64>() {
                Ok(h) if h > 0 => height = Some(h),
                _ => return Err(Failure::bad_request(format!("height {h:?} is not a block height (1, 2, ...)"))),
            },
            _ => return Err(Failure::bad_request(format!("unknown query parameter {pair:?}; only height=H"))),
        }
    }
    Ok(height)
}

async fn qr_code(s: &Arc<Services>, target: &Target, headers: &HeaderMap) -> Result<Response, Failure> {
    let code = target.code().clone();
    read(s, move |st, _| {
        query::trace(st, &pb::TraceRequest { code: code.to_string(), limit: 1, page_token: String::new() })
    })
    .await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)))
        .ok_or_else(|| Failure::bad_request("the request has no usable Host header to put in the code's URI"))?;
    let scheme = match headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) {
        Some("https") => "https",
        _ => "http",
    };
    let uri = qr::digital_link_uri(&format!("{scheme}://{host}"), &target.path());
    let mut resp = match target.resource {
        Resource::QrSvg => respond(StatusCode::OK, "image/svg+xml", qr::svg(&uri).map_err(Failure::internal_of)?),
        _ => respond(StatusCode::OK, "image/png", qr::png(&uri).map_err(Failure::internal_of)?),
    };
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    Ok(resp)
}

/// A file served under `/static/`: its content type and content.
pub fn static_asset(file: &str) -> Option<(&'static str, &'static str)> {
    let (_, body) = STATIC_FILES.iter().find(|(name, _)| *name == file)?;
    let kind = match file.rsplit_once('.').map(|(_, e)| e) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    Some((kind, body))
}

async fn static_file(axum::extract::Path(file): axum::extract::Path<String>, headers: HeaderMap) -> Response {
    let Some((kind, body)) = static_asset(&file) else {
        return not_found(headers, format!("/static/{file}").parse().unwrap_or_default()).await;
    };
    let mut resp = respond(StatusCode::OK, kind, body);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

// ---------------------------------------------------------------------------------------
// Reading the ledger

/// Runs `f` against the store on the blocking pool (the store lock is a blocking lock
/// that apply holds while it writes a block).
async fn read<T: Send + 'static>(
    s: &Arc<Services>,
    f: impl FnOnce(&LedgerStore, &Services) -> Result<T, Status> + Send + 'static,
) -> Result<T, Failure> {
    s.check_serving().map_err(|e| Failure::unavailable(e.to_string()))?;
    let s = s.clone();
    tokio::task::spawn_blocking(move || {
        let store = s.store.read().map_err(|_| Status::internal("store lock poisoned"))?;
        f(&store, &s)
    })
    .await
    .map_err(|e| Failure::internal(e.to_string()))?
    .map_err(Failure::from)
}

/// The code's bundle at the complete checkpoint at `height` (the latest if `None`).
async fn fetch_bundle(s: &Arc<Services>, target: &Target, height: Option<u64>) -> Result<TraceBundle, Failure> {
    let at = match (height, s.complete_height()) {
        (Some(h), _) => h,
        (None, 0) => return Err(Failure::unavailable("this node has no complete checkpoint yet; retry shortly")),
        (None, h) => h,
    };
    let code = target.code().clone();
    let bundle = read(s, move |st, s| {
        let (cp, complete) = query::checkpoint_at(st, &s.genesis.ledger_id, &s.validators_of(st), at)?;
        if !complete {
            return Err(Status::not_found(format!("the checkpoint at height {at} has no validator quorum")));
        }
        match query::bundle(st, &code, cp) {
            Err(e) if e.code() == Code::NotFound => {
                // Unknown to the ledger (404), or issued after the checkpoint.
                query::trace(st, &pb::TraceRequest { code: code.to_string(), limit: 1, page_token: String::new() })?;
                Err(match height {
                    Some(h) => Status::not_found(format!("{code} is not on the ledger at checkpoint height {h}")),
                    None => Status::unavailable(format!(
                        "{code} is on the ledger but no complete checkpoint covers it yet; retry in a moment"
                    )),
                })
            }
            other => other,
        }
    })
    .await?;
    target.check_lot(&bundle)?;
    Ok(bundle)
}

/// The node's verdict on `bundle` against the validators of its genesis file (not of its
/// state: the same trust anchor as the browser's).
async fn verify(
    s: &Arc<Services>,
    bundle: TraceBundle,
) -> Result<(TraceBundle, Result<BundleVerdict, BundleError>), Failure> {
    let trusted = s.genesis.validator_set();
    tokio::task::spawn_blocking(move || {
        let verdict = verify_bundle(&bundle, &trusted);
        (bundle, verdict)
    })
    .await
    .map_err(|e| Failure::internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Failures

/// An error page (or JSON error) with its status.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Failure {
        Failure { status: StatusCode::BAD_REQUEST, title: "This is not a valid request", message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> Failure {
        Failure { status: StatusCode::NOT_FOUND, title: "Unknown code", message: message.into() }
    }
    fn unavailable(message: impl Into<String>) -> Failure {
        Failure { status: StatusCode::SERVICE_UNAVAILABLE, title: "Not available yet", message: message.into() }
    }
    fn internal(message: impl Into<String>) -> Failure {
        Failure { status: StatusCode::INTERNAL_SERVER_ERROR, title: "This node failed", message: message.into() }
    }
    fn internal_of(e: impl std::fmt::Display) -> Failure {
        Failure::internal(e.to_string())
    }

    fn respond(self, json: bool) -> Response {
        let mut resp = if json {
            let body =
                serde_json::json!({"status": self.status.as_u16(), "error": self.title, "message": self.message});
            respond(self.status, "application/json", body.to_string())
        } else {
            let mut r = respond(self.status, "text/html; charset=utf-8", self.html());
            r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            r
        };
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    fn html(&self) -> String {
        let mut h = head(self.title);
        let _ = write!(
            h,
            "<main><header class=\"top\"><span class=\"brand\">veritrace</span></header>\
             <section class=\"card error\"><h1>{}</h1><p class=\"status\">HTTP {}</p><p id=\"vt-error\">{}</p></section>\
             </main></body></html>",
            esc(self.title),
            self.status.as_u16(),
            esc(&self.message)
        );
        h
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Failure {
        let message = s.message().to_string();
        match s.code() {
            Code::NotFound => Failure::not_found(message),
            Code::InvalidArgument => Failure::bad_request(message),
            Code::Unavailable | Code::FailedPrecondition => Failure::unavailable(message),
            _ => Failure::internal(message),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The view: one structure, served as JSON and rendered as HTML

/// An organisation as the page names it: its name from the bundle (proven against the
/// checkpoint's state root) or, for one that authored nothing in the bundle, its id.
#[derive(Clone, Debug, Serialize)]
pub struct OrgRef {
    pub id: String,
    pub name: String,
}

/// Where and when a record sits, and who made it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordRef {
    pub log_index: u64,
    pub time_ms: u64,
    /// `YYYY-MM-DD HH:MM UTC`.
    pub time: String,
    pub by: OrgRef,
    /// Which of the page's subjects have the record in their chain: `item`, `lot`,
    /// `logistic_unit` (or the code's own kind).
    pub concerns: Vec<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProductView {
    pub gtin: String,
    pub name: String,
    pub model: String,
    pub spec: String,
    pub standard: String,
    pub production_date: String,
    pub expiry_date: Option<String>,
    pub lot: String,
    pub factory: String,
    pub producer: OrgRef,
    /// Log index of the issuance the product facts come from.
    pub issued_at: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TestItemView {
    pub name: String,
    pub requirement: String,
    pub measured: String,
    pub verdict: &'static str,
}

/// One record of the chain, by kind.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordView {
    IssueCodes {
        #[serde(flatten)]
        at: RecordRef,
        count: u64,
        factory: String,
    },
    CertifyConformity {
        #[serde(flatten)]
        at: RecordRef,
        certificate_no: String,
        standard: String,
        statement: String,
    },
    Inspection {
        #[serde(flatten)]
        at: RecordRef,
        report_no: String,
        standard: String,
        result: &'static str,
        subjects: Vec<String>,
        test_items: Vec<TestItemView>,
        document_digest: String,
        valid_until_ms: Option<u64>,
    },
    Ship {
        #[serde(flatten)]
        at: RecordRef,
        to: OrgRef,
        location: String,
    },
    Receive {
        #[serde(flatten)]
        at: RecordRef,
        from: OrgRef,
        location: String,
    },
    Aggregate {
        #[serde(flatten)]
        at: RecordRef,
        unit: String,
        count: u64,
    },
    Disaggregate {
        #[serde(flatten)]
        at: RecordRef,
        unit: String,
        count: u64,
    },
    Sell {
        #[serde(flatten)]
        at: RecordRef,
        channel: String,
    },
    Regulatory {
        #[serde(flatten)]
        at: RecordRef,
        action: &'static str,
        reason: String,
        reference: String,
    },
}

/// What the page's verdict says.
#[derive(Clone, Debug, Serialize)]
pub struct VerdictView {
    pub verified: bool,
    /// "verified against checkpoint at height H, signed by K of N validators", or what
    /// failed.
    pub message: String,
    /// Organisations whose validators signed (counted towards the quorum).
    pub signers: Vec<String>,
    pub validators: u32,
    pub quorum: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointView {
    pub height: u64,
    pub time_ms: u64,
    pub time: String,
    pub log_size: u64,
    pub log_root: String,
    pub state_root: String,
}

/// The trust anchor the browser verifies against: the genesis' ledger id and validators.
#[derive(Clone, Debug, Serialize)]
pub struct TrustView {
    pub ledger_id: String,
    pub genesis_hash: String,
    pub validators: Vec<TrustedValidator>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrustedValidator {
    pub node_id: String,
    pub org: String,
    pub public_key: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Links {
    pub page: String,
    pub bundle: String,
    /// The same records as an EPCIS 2.0 document (docs/epcis.md).
    pub epcis: String,
    pub qr_png: String,
    pub qr_svg: String,
}

/// One subject of the page (the code, its lot, its logistic unit) at the checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct SubjectView {
    pub subject: String,
    pub kind: &'static str,
    /// `None` for an item that only moved with its lot.
    pub status: Option<&'static str>,
    pub custodian: Option<OrgRef>,
    pub units: Option<u64>,
    pub records: u64,
}

/// The consumer page's content.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerView {
    pub code: String,
    pub kind: &'static str,
    /// What a consumer should be told: `recalled`, `held`, `sold`, `in_transit`, `active`.
    pub status: String,
    pub product: Option<ProductView>,
    pub subjects: Vec<SubjectView>,
    /// Every record of the bundle, in log order.
    pub records: Vec<RecordView>,
    pub checkpoint: CheckpointView,
    pub verdict: VerdictView,
    pub links: Links,
    pub trust: TrustView,
}

/// `YYYY-MM-DD HH:MM UTC`, to the minute, for people.
fn utc(time_ms: u64) -> String {
    let t = veritrace_ledger::time::format_time(time_ms);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

fn kind_name(s: &SubjectId) -> &'static str {
    match s {
        SubjectId::Item { .. } => "item",
        SubjectId::Lot { .. } => "lot",
        SubjectId::LogisticUnit { .. } => "logistic_unit",
        _ => "code",
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
    }
}

fn action_str(a: RegulatoryKind) -> &'static str {
    match a {
        RegulatoryKind::Hold => "hold",
        RegulatoryKind::Release => "release",
        RegulatoryKind::Recall => "recall",
        RegulatoryKind::CustomsClearance => "customs_clearance",
    }
}

/// Whether issuance `ic` made `code` (an item) or is the issuance of `code` (a lot).
fn issues(ic: &IssueCodes, code: &SubjectId, lot: Option<&SubjectId>) -> bool {
    let own_lot = SubjectId::lot_of(ic.product.gtin.clone(), ic.lot.clone());
    match code {
        SubjectId::Lot { .. } => &own_lot == code,
        SubjectId::Item { gtin, serial } => {
            lot.is_none_or(|l| *l == own_lot)
                && *gtin == ic.product.gtin
                && match &ic.codes {
                    CodeSet::Range(r) => r.contains(serial),
                    CodeSet::Serials(list) => list.contains(serial),
                    CodeSet::Codes(_) => false,
                }
        }
        _ => false,
    }
}

impl ConsumerView {
    /// The view of bundle `b` with the node's `verdict` on it, for the page at `/{path}`
    /// (a Digital Link path) of a ledger started from `genesis`.
    pub fn build(
        genesis: &Genesis,
        path: &str,
        b: &TraceBundle,
        verdict: &Result<BundleVerdict, BundleError>,
    ) -> ConsumerView {
        let names: BTreeMap<&OrgId, &str> = b.orgs.iter().map(|o| (&o.org.id, o.org.name.as_str())).collect();
        let org = |id: &OrgId| OrgRef { id: id.to_string(), name: names.get(id).unwrap_or(&id.as_str()).to_string() };
        let mut concerns: BTreeMap<u64, Vec<&'static str>> = BTreeMap::new();
        for sub in &b.subjects {
            for i in &sub.chain {
                concerns.entry(*i).or_default().push(kind_name(&sub.subject));
            }
        }
        let lot = b.subjects.iter().skip(1).map(|s| &s.subject).find(|s| matches!(s, SubjectId::Lot { .. }));

        let mut product = None;
        let mut records = Vec::new();
        for r in &b.records {
            let rec = &r.record.record;
            let at = RecordRef {
                log_index: r.log_index,
                time_ms: rec.time_ms,
                time: utc(rec.time_ms),
                by: org(&rec.author),
                concerns: concerns.get(&r.log_index).cloned().unwrap_or_default(),
            };
            let view = match &rec.body {
                RecordBody::IssueCodes(ic) => {
                    if product.is_none() && issues(ic, &b.code, lot) {
                        product = Some(ProductView {
                            gtin: ic.product.gtin.to_string(),
                            name: ic.product.name.clone(),
                            model: ic.product.model.clone(),
                            spec: ic.product.spec.clone(),
                            standard: ic.product.standard.clone(),
                            production_date: ic.production_date.clone(),
                            expiry_date: ic.expiry_date.clone(),
                            lot: ic.lot.to_string(),
                            factory: ic.factory.clone(),
                            producer: org(&rec.author),
                            issued_at: r.log_index,
                        });
                    }
                    RecordView::IssueCodes { at, count: ic.codes.count(), factory: ic.factory.clone() }
                }
                RecordBody::CertifyConformity(c) => RecordView::CertifyConformity {
                    at,
                    certificate_no: c.certificate_no.clone(),
                    standard: c.standard.clone(),
                    statement: c.statement.clone(),
                },
                RecordBody::Inspection(i) => RecordView::Inspection {
                    at,
                    report_no: i.report_no.clone(),
                    standard: i.standard.clone(),
                    result: verdict_str(i.result),
                    subjects: i.subjects.iter().map(ToString::to_string).collect(),
                    test_items: i
                        .test_items
                        .iter()
                        .map(|t| TestItemView {
                            name: t.name.clone(),
                            requirement: t.requirement.clone(),
                            measured: t.measured.clone(),
                            verdict: verdict_str(t.verdict),
                        })
                        .collect(),
                    document_digest: i.document_digest.to_hex(),
                    valid_until_ms: i.valid_until_ms,
                },
                RecordBody::Ship(sh) => RecordView::Ship { at, to: org(&sh.to), location: sh.location.clone() },
                RecordBody::Receive(rc) => {
                    RecordView::Receive { at, from: org(&rc.from), location: rc.location.clone() }
                }
                RecordBody::Aggregate(a) => RecordView::Aggregate {
                    at,
                    unit: SubjectId::LogisticUnit { sscc: a.parent.clone() }.to_string(),
                    count: a.children.len() as u64,
                },
                RecordBody::Disaggregate(a) => RecordView::Disaggregate {
                    at,
                    unit: SubjectId::LogisticUnit { sscc: a.parent.clone() }.to_string(),
                    count: a.children.len() as u64,
                },
                RecordBody::Sell(sl) => RecordView::Sell { at, channel: sl.channel.clone() },
                RecordBody::Regulatory(ra) => RecordView::Regulatory {
                    at,
                    action: action_str(ra.action),
                    reason: ra.reason.clone(),
                    reference: ra.reference.clone(),
                },
                // Governance names no subject, so it is in no subject's chain.
                RecordBody::Governance(_) => continue,
            };
            records.push(view);
        }

        let states: Vec<(SubjectId, Option<_>)> =
            b.subjects.iter().map(|s| (s.subject.clone(), s.state.clone())).collect();
        let subjects = b
            .subjects
            .iter()
            .map(|s| SubjectView {
                subject: s.subject.to_string(),
                kind: kind_name(&s.subject),
                status: s.state.as_ref().map(|st| st.status().as_str()),
                custodian: s.state.as_ref().map(|st| org(&st.custodian)),
                units: s.state.as_ref().map(|st| st.units),
                records: s.chain.len() as u64,
            })
            .collect();

        let trusted = genesis.validator_set();
        let h = &b.checkpoint.header;
        ConsumerView {
            code: b.code.to_string(),
            kind: kind_name(&b.code),
            status: query::effective_status(&states),
            product,
            subjects,
            records,
            checkpoint: CheckpointView {
                height: h.height,
                time_ms: h.time_ms,
                time: utc(h.time_ms),
                log_size: h.log_size,
                log_root: h.log_root.to_hex(),
                state_root: h.state_root.to_hex(),
            },
            verdict: verdict_view(verdict, &trusted),
            links: Links {
                page: format!("/{path}"),
                bundle: format!("/{path}/{BUNDLE_SUFFIX}?height={}", h.height),
                epcis: format!("/{path}/{EPCIS_SUFFIX}?height={}", h.height),
                qr_png: format!("/{path}/{QR_PNG_SUFFIX}"),
                qr_svg: format!("/{path}/{QR_SVG_SUFFIX}"),
            },
            trust: TrustView {
                ledger_id: genesis.ledger_id.to_string(),
                genesis_hash: genesis.hash().to_hex(),
                validators: trusted
                    .validators
                    .iter()
                    .map(|v| TrustedValidator {
                        node_id: v.node_id.to_string(),
                        org: v.org.to_string(),
                        public_key: v.public_key.to_hex(),
                    })
                    .collect(),
            },
        }
    }

    /// The values the page shows outside any record, by `data-vt` key (empty ones are not
    /// shown). `verify.js` computes the same from the bundle.
    fn page_facts(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut f = vec![("code", "Code", self.code.clone())];
        if let Some(p) = &self.product {
            f.extend([
                ("product.gtin", "GTIN", p.gtin.clone()),
                ("product.lot", "Lot", p.lot.clone()),
                ("product.model", "Model", p.model.clone()),
                ("product.spec", "Specification", p.spec.clone()),
                ("product.standard", "Standard", p.standard.clone()),
                ("product.production_date", "Produced", p.production_date.clone()),
                ("product.expiry_date", "Expires", p.expiry_date.clone().unwrap_or_default()),
                ("product.producer", "Producer", p.producer.name.clone()),
                ("product.factory", "Factory", p.factory.clone()),
            ]);
        }
        f.retain(|(_, _, v)| !v.is_empty());
        f
    }

    /// The HTML page: server-rendered, no framework, inline CSS, one module script.
    pub fn html(&self) -> String {
        let title = self.product.as_ref().map(|p| p.name.as_str()).unwrap_or(kind_label(self.kind));
        let mut h = head(&format!("{title} · {}", self.code));
        let trust = serde_json::to_string(&self.trust).expect("trust view serialises").replace('<', "\\u003c");
        let _ = write!(
            h,
            "<main id=\"vt\" data-bundle=\"{}\" data-code=\"{}\">\
             <script type=\"application/json\" id=\"vt-trust\">{trust}</script>\
             <header class=\"top\"><span class=\"brand\">veritrace</span> <span class=\"muted\">product traceability</span></header>",
            esc(&self.links.bundle),
            esc(&self.code)
        );
        self.banner(&mut h);

        h.push_str("<section class=\"card product\">");
        let _ = write!(h, "<h1>{}</h1><dl class=\"facts\">", self.product_name_html());
        for (key, label, value) in self.page_facts() {
            fact(&mut h, label, key, &value);
        }
        h.push_str("</dl></section>");

        self.verdicts(&mut h);

        let section = |h: &mut String, id: &str, title: &str, empty: &str, pick: &dyn Fn(&RecordView) -> bool| {
            let _ = write!(h, "<section class=\"card\" id=\"{id}\"><h2>{title}</h2>");
            let chosen: Vec<&RecordView> = self.records.iter().filter(|r| pick(r)).collect();
            if chosen.is_empty() {
                let _ = write!(h, "<p class=\"muted\">{empty}</p>");
            } else {
                h.push_str("<ol class=\"records\">");
                for r in chosen {
                    r.html(h);
                }
                h.push_str("</ol>");
            }
            h.push_str("</section>");
        };
        section(
            &mut h,
            "certificates",
            "Certificate of conformity",
            "No certificate of conformity on the ledger.",
            &|r| matches!(r, RecordView::CertifyConformity { .. }),
        );
        section(&mut h, "inspections", "Inspection reports", "No inspection report on the ledger.", &|r| {
            matches!(r, RecordView::Inspection { .. })
        });
        section(&mut h, "custody", "Custody chain", "No custody record.", &|r| {
            matches!(
                r,
                RecordView::IssueCodes { .. }
                    | RecordView::Ship { .. }
                    | RecordView::Receive { .. }
                    | RecordView::Aggregate { .. }
                    | RecordView::Disaggregate { .. }
                    | RecordView::Sell { .. }
            )
        });
        section(&mut h, "regulatory", "Regulatory actions", "No regulatory action on the ledger.", &|r| {
            matches!(r, RecordView::Regulatory { .. })
        });

        self.footer(&mut h);
        // A module script runs after the document is parsed, wherever it stands.
        h.push_str("</main><script type=\"module\" src=\"/static/verify.js\"></script></body></html>");
        h
    }

    fn product_name_html(&self) -> String {
        match &self.product {
            Some(p) => format!("<span data-vt=\"product.name\">{}</span>", esc(&p.name)),
            None => esc(kind_label(self.kind)),
        }
    }

    fn banner(&self, h: &mut String) {
        let (class, headline, text) = match self.status.as_str() {
            "recalled" => {
                ("alert", "RECALLED", "A regulator has recalled this product. Do not use it; return it to the seller.")
            }
            "held" => ("warn", "ON HOLD", "A regulator has put this product on hold: it may not be sold or moved."),
            "sold" => ("info", "SOLD", "This unit was sold to a consumer and has left the supply chain."),
            "in_transit" => ("info", "IN TRANSIT", "This product is on its way between two companies."),
            _ => ("ok", "ON THE MARKET", "No hold or recall is on the ledger for this product."),
        };
        let _ = write!(
            h,
            "<section class=\"banner {class}\" id=\"vt-banner\"><strong>{headline}</strong> <span>{text}</span> \
             <span class=\"small\">status: <b data-vt=\"status\">{}</b></span></section>",
            esc(&self.status)
        );
    }

    fn verdicts(&self, h: &mut String) {
        let v = &self.verdict;
        let (class, word) = if v.verified { ("ok", "✔") } else { ("fail", "✘") };
        let signers = if v.signers.is_empty() { String::new() } else { format!("signers: {}", v.signers.join(", ")) };
        let _ = write!(
            h,
            "<section class=\"verdicts\">\
             <div class=\"verdict {class}\" id=\"vt-server-verdict\" data-state=\"{class}\"><h2>Checked by this node</h2>\
             <p><span class=\"mark\">{word}</span> <span id=\"vt-server-text\">{}</span></p><p class=\"small\">{}</p></div>\
             <div class=\"verdict pending\" id=\"vt-browser-verdict\" data-state=\"pending\"><h2>Checked in your browser</h2>\
             <p><span class=\"mark\" id=\"vt-browser-mark\">…</span> <span id=\"vt-browser-text\">checking the proofs…</span></p>\
             <p class=\"small\" id=\"vt-browser-detail\">against the validator keys of the ledger's genesis, trusting no server</p>\
             <noscript><p>JavaScript is off: this browser cannot check the proofs itself.</p></noscript></div>\
             </section>",
            esc(&v.message),
            esc(&signers)
        );
    }

    fn footer(&self, h: &mut String) {
        let c = &self.checkpoint;
        let validators: Vec<String> =
            self.trust.validators.iter().map(|v| format!("{} ({})", v.node_id, v.org)).collect();
        let _ = write!(
            h,
            "<footer class=\"card small\"><p>As of checkpoint at height <b data-vt=\"checkpoint.height\">{}</b>, {} \
             ({} records in the ledger's log).</p>\
             <p>Ledger <code>{}</code>, genesis <code title=\"{}\">{}…</code>; validators: {}.</p>\
             <p><a href=\"{}\">trace bundle (JSON)</a> · <a href=\"{}\">EPCIS 2.0 events</a> · \
             <a href=\"{}\">QR code (PNG)</a> · <a href=\"{}\">QR code (SVG)</a> · \
             the same page as JSON with <code>Accept: application/json</code></p></footer>",
            c.height,
            esc(&c.time),
            c.log_size,
            esc(&self.trust.ledger_id),
            esc(&self.trust.genesis_hash),
            esc(&self.trust.genesis_hash[..16]),
            esc(&validators.join(", ")),
            esc(&self.links.bundle),
            esc(&self.links.epcis),
            esc(&self.links.qr_png),
            esc(&self.links.qr_svg),
        );
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "item" => "Item",
        "lot" => "Lot",
        "logistic_unit" => "Logistic unit",
        _ => "Code",
    }
}

fn verdict_view(v: &Result<BundleVerdict, BundleError>, trusted: &ValidatorSet) -> VerdictView {
    let n = trusted.validators.len() as u32;
    match v {
        Ok(v) => VerdictView {
            verified: true,
            message: format!(
                "verified against checkpoint at height {}, signed by {} of {} validators",
                v.height,
                v.signers.len(),
                v.validators
            ),
            signers: v.signers.clone(),
            validators: v.validators,
            quorum: trusted.quorum(),
        },
        Err(e) => VerdictView {
            verified: false,
            message: format!("NOT verified: {e}"),
            signers: vec![],
            validators: n,
            quorum: trusted.quorum(),
        },
    }
}

impl RecordView {
    fn at(&self) -> &RecordRef {
        match self {
            RecordView::IssueCodes { at, .. }
            | RecordView::CertifyConformity { at, .. }
            | RecordView::Inspection { at, .. }
            | RecordView::Ship { at, .. }
            | RecordView::Receive { at, .. }
            | RecordView::Aggregate { at, .. }
            | RecordView::Disaggregate { at, .. }
            | RecordView::Sell { at, .. }
            | RecordView::Regulatory { at, .. } => at,
        }
    }

    /// What the record is, as a heading.
    fn what(&self) -> &'static str {
        match self {
            RecordView::IssueCodes { .. } => "Codes issued",
            RecordView::CertifyConformity { .. } => "Certificate of conformity",
            RecordView::Inspection { .. } => "Inspection report",
            RecordView::Ship { .. } => "Shipped",
            RecordView::Receive { .. } => "Received",
            RecordView::Aggregate { .. } => "Packed",
            RecordView::Disaggregate { .. } => "Unpacked",
            RecordView::Sell { .. } => "Sold",
            RecordView::Regulatory { action, .. } => match *action {
                "hold" => "Held by a regulator",
                "release" => "Released by a regulator",
                "recall" => "Recalled",
                _ => "Customs clearance",
            },
        }
    }

    /// The values shown for the record, by `data-vt` key, with their labels; empty ones
    /// are not shown. `verify.js` (`recordFacts`) computes the same from the bundle.
    fn facts(&self) -> Vec<(String, &'static str, String)> {
        let at = self.at();
        let mut f: Vec<(String, &'static str, String)> = vec![
            ("what".into(), "", self.what().into()),
            ("time".into(), "", at.time.clone()),
            ("by".into(), "By", at.by.name.clone()),
        ];
        let mut add = |key: &str, label: &'static str, value: String| f.push((key.into(), label, value));
        match self {
            RecordView::IssueCodes { count, factory, .. } => {
                add("count", "Codes", count.to_string());
                add("factory", "Factory", factory.clone());
            }
            RecordView::CertifyConformity { certificate_no, standard, statement, .. } => {
                add("certificate_no", "Certificate", certificate_no.clone());
                add("standard", "Standard", standard.clone());
                add("statement", "Statement", statement.clone());
            }
            RecordView::Inspection {
                report_no,
                standard,
                result,
                subjects,
                test_items,
                document_digest,
                valid_until_ms,
                ..
            } => {
                add("result", "Result", result.to_ascii_uppercase());
                add("report_no", "Report", report_no.clone());
                add("standard", "Standard", standard.clone());
                add("subjects", "Covers", subjects.join(", "));
                add("valid_until", "Valid until", valid_until_ms.map(utc).unwrap_or_default());
                add("document", "Report digest", document_digest.clone());
                for (i, t) in test_items.iter().enumerate() {
                    add(&format!("test.{i}.name"), "", t.name.clone());
                    add(&format!("test.{i}.requirement"), "", t.requirement.clone());
                    add(&format!("test.{i}.measured"), "", t.measured.clone());
                    add(&format!("test.{i}.verdict"), "", t.verdict.to_ascii_uppercase());
                }
            }
            RecordView::Ship { to, location, .. } => {
                add("to", "To", to.name.clone());
                add("location", "Where", location.clone());
            }
            RecordView::Receive { from, location, .. } => {
                add("from", "From", from.name.clone());
                add("location", "At", location.clone());
            }
            RecordView::Aggregate { unit, count, .. } | RecordView::Disaggregate { unit, count, .. } => {
                add("unit", "Logistic unit", unit.clone());
                add("count", "Units", count.to_string());
            }
            RecordView::Sell { channel, .. } => add("channel", "Channel", channel.clone()),
            RecordView::Regulatory { reason, reference, .. } => {
                add("reason", "Reason", reason.clone());
                add("reference", "Reference", reference.clone());
            }
        }
        f.retain(|(_, _, v)| !v.is_empty());
        f
    }

    fn html(&self, h: &mut String) {
        let at = self.at();
        let class = match self {
            RecordView::Inspection { result: "fail", .. } | RecordView::Regulatory { action: "recall", .. } => " bad",
            RecordView::Regulatory { action: "hold", .. } => " warn",
            _ => "",
        };
        let facts = self.facts();
        let get = |k: &str| facts.iter().find(|(key, _, _)| key == k).map(|(_, _, v)| v.as_str()).unwrap_or_default();
        let _ = write!(
            h,
            "<li class=\"rec{class}\" data-vt-record=\"{}\"><div class=\"rec-head\"><b data-vt=\"what\">{}</b>\
             <time data-vt=\"time\">{}</time></div><dl class=\"facts\">",
            at.log_index,
            esc(get("what")),
            esc(get("time"))
        );
        for (key, label, value) in
            facts.iter().filter(|(k, _, _)| k != "what" && k != "time" && !k.starts_with("test."))
        {
            fact(h, label, key, value);
        }
        h.push_str("</dl>");
        if let RecordView::Inspection { test_items, .. } = self
            && !test_items.is_empty()
        {
            h.push_str(
                "<table class=\"tests\"><thead><tr><th>Test</th><th>Requirement</th><th>Measured</th><th>Result</th></tr></thead><tbody>",
            );
            for i in 0..test_items.len() {
                h.push_str("<tr>");
                for part in ["name", "requirement", "measured", "verdict"] {
                    let key = format!("test.{i}.{part}");
                    let value = get(&key);
                    if value.is_empty() {
                        h.push_str("<td></td>");
                    } else {
                        let _ = write!(h, "<td data-vt=\"{key}\">{}</td>", esc(value));
                    }
                }
                h.push_str("</tr>");
            }
            h.push_str("</tbody></table>");
        }
        let concerns: Vec<&str> = at
            .concerns
            .iter()
            .map(|c| match *c {
                "item" => "this item",
                "lot" => "the lot",
                "logistic_unit" => "the logistic unit",
                _ => "this code",
            })
            .collect();
        let _ = write!(
            h,
            "<p class=\"small muted\">about {} · log index {}</p></li>",
            esc(&concerns.join(", ")),
            at.log_index
        );
    }
}

/// `<!doctype html>` to the opening `<body>`.
fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · veritrace</title><style>{CSS}</style></head><body>",
        esc(title)
    )
}

fn fact(h: &mut String, label: &str, key: &str, value: &str) {
    let _ = write!(h, "<dt>{}</dt><dd data-vt=\"{}\">{}</dd>", esc(label), esc(key), esc(value));
}

/// Escapes text for HTML element content and double-quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn json_or_epcis_only_when_preferred_to_html() {
        assert_eq!(wants(&accept("application/json")), Wants::Json);
        assert_eq!(wants(&accept("application/json, text/html;q=0.9")), Wants::Json);
        assert_eq!(wants(&accept("text/html;q=0.5, application/json;q=0.8")), Wants::Json);
        assert_eq!(wants(&accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")), Wants::Html);
        assert_eq!(wants(&accept("*/*")), Wants::Html);
        assert_eq!(wants(&accept("text/html, application/json")), Wants::Html);
        assert_eq!(wants(&HeaderMap::new()), Wants::Html);
        assert_eq!(wants(&accept("application/ld+json")), Wants::Epcis);
        assert_eq!(wants(&accept("application/ld+json, application/json;q=0.9")), Wants::Epcis);
        assert_eq!(wants(&accept("application/ld+json, application/json")), Wants::Json);
        assert_eq!(wants(&accept("text/html, application/ld+json;q=0.5")), Wants::Html);
    }

    #[test]
    fn paths_name_a_code_and_a_resource() {
        let t = Target::parse("/01/09312345000012/21/S1").unwrap();
        assert_eq!((t.code().to_string(), t.resource), ("01/09312345000012/21/S1".into(), Resource::Page));
        let t = Target::parse("/01/9312345000012/10/L%2F1/21/S1/qr.png").unwrap();
        assert_eq!(t.resource, Resource::QrPng);
        assert_eq!(t.path(), "01/09312345000012/10/L%2F1/21/S1");
        assert_eq!(Target::parse("/01/09312345000012/21/S1/bundle").unwrap().resource, Resource::Bundle);
        assert_eq!(Target::parse("/01/09312345000012/21/S1/epcis").unwrap().resource, Resource::Epcis);
        assert_eq!(Target::parse("/00/093123450000000012/epcis/").unwrap().resource, Resource::Epcis);
        assert_eq!(Target::parse("/01/09312345000012/21/S1/qr.svg/").unwrap().resource, Resource::QrSvg);
        // A serial may be called "bundle": the whole path wins.
        let t = Target::parse("/01/09312345000012/21/bundle").unwrap();
        assert_eq!((t.code().to_string(), t.resource), ("01/09312345000012/21/bundle".into(), Resource::Page));
        let e = Target::parse("/01/09312345000013/21/S1").unwrap_err();
        assert!(e.contains("check digit"), "{e}");
        let e = Target::parse("/01/09312345000012/21/bad%20serial").unwrap_err();
        assert!(e.contains("serial") && e.contains("' '"), "{e}");
        let e = Target::parse("/01/09312345000012/21/S1/qr.gif").unwrap_err();
        assert!(e.contains("qr.gif"), "{e}");
    }

    #[test]
    fn bundle_height_is_the_only_parameter() {
        assert_eq!(bundle_height(None).unwrap(), None);
        assert_eq!(bundle_height(Some("height=7")).unwrap(), Some(7));
        assert!(bundle_height(Some("height=0")).is_err());
        assert!(bundle_height(Some("height=x")).is_err());
        assert!(bundle_height(Some("page=2")).is_err());
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(utc(1_790_000_000_000), "2026-09-21 14:13 UTC");
    }
}
