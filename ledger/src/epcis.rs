//! EPCIS 2.0 (GS1) JSON-LD: a trace's records as EPCIS events, and EPCIS events as the
//! bodies of records for an organisation to sign (docs/epcis.md).
//!
//! Export ([`export_document`], [`export_event`]) makes one ObjectEvent or AggregationEvent
//! per record. What EPCIS and its Core Business Vocabulary have words for goes in their
//! fields — the business step, the disposition, codes as GS1 Digital Link URIs, lots as
//! quantity classes, the parties of a hand-over, lot master data — and the rest in extension
//! fields of the `veritrace` namespace, which the document's `@context` binds to
//! [`VERITRACE_NS`]; every event carries the id of its record, so nothing of a record is
//! lost. Import ([`import_document`]) reads such events back, and events from other systems
//! whose standard fields carry what a record needs, into a [`RecordBody`] per event, or a
//! [`Rejection`] naming the event's index and the first reason it cannot be a record.
//!
//! Pure functions over record types and `serde_json` values: no IO, no clock (the caller
//! gives the document's creation time), no network. The same record always gives the same
//! event, whichever node or client exports it.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::hash::Hash32;
use crate::ids::{Gtin, Lot, Serial, SerialRange, Sscc, SubjectId, parse_digital_link};
use crate::org::{KeyId, LedgerId, OrgId};
use crate::record::{
    Aggregation, CertifyConformity, CodeSet, InspectionReport, IssueCodes, Product, Receive, Record, RecordBody,
    RecordKind, RegulatoryAction, RegulatoryKind, Sell, Ship, SignedRecord, TestItem, Verdict,
};
use crate::time::{format_time, parse_time};

/// The JSON-LD context of EPCIS 2.0, first in every exported document's `@context`.
pub const EPCIS_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
/// The IRI of veritrace's extension terms (`veritrace:recordId` is `urn:veritrace:epcis:recordId`).
pub const VERITRACE_NS: &str = "urn:veritrace:epcis:";
/// The prefix exported documents bind to [`VERITRACE_NS`].
pub const VERITRACE_PREFIX: &str = "veritrace";
/// An event's `eventID` is this followed by its record id in hex.
pub const EVENT_ID_PREFIX: &str = "urn:veritrace:record:";
/// An organisation in a source or destination list is this followed by its id.
pub const ORG_URN_PREFIX: &str = "urn:veritrace:org:";
/// A code of another scheme than GS1 (Ecode, CCC, custom) is this followed by its canonical
/// form, percent-encoded outside `A-Za-z0-9-._~:`.
pub const SUBJECT_URN_PREFIX: &str = "urn:veritrace:subject:";
/// Where exported GS1 Digital Link URIs point: GS1's resolver.
pub const DIGITAL_LINK_BASE: &str = "https://id.gs1.org";
/// The EPCIS version exported and accepted.
pub const SCHEMA_VERSION: &str = "2.0";
/// Most events one imported document may hold (one record each; a node takes at most
/// 10,000 records per batch and per block).
pub const EVENTS_PER_DOCUMENT_MAX: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Identifiers

/// Percent-encodes every byte outside `A-Za-z0-9-._~:`.
fn urn_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} has a bad percent escape at byte {i}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not percent-decode to utf-8"))
}

/// The URI of a subject in EPCIS: a GS1 Digital Link URI at [`DIGITAL_LINK_BASE`] for an
/// item, a lot or a logistic unit; `urn:veritrace:subject:{canonical form}` for the codes
/// of other schemes, which have no EPC.
pub fn subject_uri(s: &SubjectId) -> String {
    match s {
        SubjectId::Item { .. } | SubjectId::Lot { .. } | SubjectId::LogisticUnit { .. } => {
            format!("{DIGITAL_LINK_BASE}/{s}")
        }
        SubjectId::Ecode(_) | SubjectId::Ccc(_) | SubjectId::Custom { .. } => {
            format!("{SUBJECT_URN_PREFIX}{}", urn_encode(&s.to_string()))
        }
    }
}

/// The GS1 key of an EPC URN's `CompanyPrefix.Reference` pair: the reference's first digit
/// (indicator or extension), the company prefix, the rest of the reference, the check digit.
fn epc_key(uri: &str, prefix: &str, reference: &str, digits: usize) -> Result<String, String> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(prefix) || !all_digits(reference) || !(6..=12).contains(&prefix.len()) {
        return Err(format!("{uri}: company prefix {prefix:?} and reference {reference:?} must be digits"));
    }
    if prefix.len() + reference.len() != digits {
        return Err(format!(
            "{uri}: company prefix and reference have {} digits together, expected {digits}",
            prefix.len() + reference.len()
        ));
    }
    let body = format!("{}{prefix}{}", &reference[..1], &reference[1..]);
    let check = crate::ids::gs1_check_digit(&body).ok_or_else(|| format!("{uri}: {body:?} is not digits"))?;
    Ok(format!("{body}{check}"))
}

/// Parses what an EPCIS document may name a code with: a GS1 Digital Link URI (any host),
/// an EPC URN of an item (`urn:epc:id:sgtin:`), a logistic unit (`urn:epc:id:sscc:`) or a lot
/// class (`urn:epc:class:lgtin:`), or a veritrace subject URN.
pub fn parse_subject_uri(uri: &str) -> Result<SubjectId, String> {
    let lower = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return parse_digital_link(uri).map(|l| l.subject).map_err(|e| e.to_string());
    }
    if let Some(rest) = uri.strip_prefix(SUBJECT_URN_PREFIX) {
        return percent_decode(rest)?.parse::<SubjectId>().map_err(|e| format!("{uri}: {e}"));
    }
    let triple = |rest: &str| -> Result<(String, String), String> {
        let mut parts = rest.splitn(3, '.');
        let (Some(cp), Some(reference), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{uri}: expected CompanyPrefix.Reference.Value"));
        };
        Ok((epc_key(uri, cp, reference, 13)?, percent_decode(value)?))
    };
    let gtin = |key: &str| Gtin::parse(key).map_err(|e| format!("{uri}: {e}"));
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sgtin:") {
        let (key, serial) = triple(rest)?;
        let serial = Serial::parse(&serial).map_err(|e| format!("{uri}: {e}"))?;
        return Ok(SubjectId::item(gtin(&key)?, serial));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:class:lgtin:") {
        let (key, lot) = triple(rest)?;
        let lot = Lot::parse(&lot).map_err(|e| format!("{uri}: {e}"))?;
        return Ok(SubjectId::lot_of(gtin(&key)?, lot));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sscc:") {
        let (cp, reference) =
            rest.split_once('.').ok_or_else(|| format!("{uri}: expected CompanyPrefix.SerialReference"))?;
        let key = epc_key(uri, cp, reference, 17)?;
        return Ok(SubjectId::LogisticUnit { sscc: Sscc::parse(&key).map_err(|e| format!("{uri}: {e}"))? });
    }
    if uri.starts_with("urn:epc:idpat:") {
        return Err(format!("{uri} is an EPC pattern: it names a class of codes, not codes"));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:") {
        let scheme = rest.split(':').take(2).collect::<Vec<_>>().join(":");
        return Err(format!("{uri}: EPC scheme {scheme} is not one the ledger keeps (id:sgtin, id:sscc, class:lgtin)"));
    }
    Err(format!("{uri} is not a GS1 Digital Link URI, an sgtin, sscc or lgtin EPC URN, or a veritrace subject URN"))
}

/// `urn:veritrace:org:{id}`.
pub fn org_uri(org: &OrgId) -> String {
    format!("{ORG_URN_PREFIX}{org}")
}

/// The organisation an `urn:veritrace:org:` URI names; `None` for any other URI.
fn parse_org_uri(uri: &str) -> Option<Result<OrgId, String>> {
    let id = uri.strip_prefix(ORG_URN_PREFIX)?;
    Some(OrgId::new(id).map_err(|e| format!("{uri}: {e}")))
}

/// `urn:veritrace:record:{hex}`.
pub fn event_id(record_id: &Hash32) -> String {
    format!("{EVENT_ID_PREFIX}{record_id}")
}

// ---------------------------------------------------------------------------------------
// Export

/// What an exported document says about itself.
#[derive(Clone, Debug)]
pub struct DocumentInfo<'a> {
    /// The ledger the records are from (`veritrace:ledgerId`).
    pub ledger_id: &'a LedgerId,
    /// The code whose trace this is (`veritrace:code`).
    pub code: &'a SubjectId,
    /// The ledger height the records were read at (`veritrace:height`): the checkpoint's for
    /// a document made from a trace bundle.
    pub height: u64,
    /// `creationDate`, unix ms.
    pub created_ms: u64,
}

fn vt(term: &str) -> String {
    format!("{VERITRACE_PREFIX}:{term}")
}

/// The `@context` of an exported document: EPCIS 2.0's, and the `veritrace` prefix.
pub fn context() -> Value {
    json!([EPCIS_CONTEXT, { VERITRACE_PREFIX: VERITRACE_NS }])
}

/// An EPCIS document of `records` (log index, record), in the order given; governance
/// records, which name no subject and are in no trace, are left out.
pub fn export_document(info: &DocumentInfo<'_>, records: &[(u64, &SignedRecord)]) -> Value {
    let events: Vec<Value> = records.iter().filter_map(|(i, r)| export_event(*i, r)).collect();
    let mut doc = Map::new();
    doc.insert("@context".into(), context());
    doc.insert("type".into(), json!("EPCISDocument"));
    doc.insert("schemaVersion".into(), json!(SCHEMA_VERSION));
    doc.insert("creationDate".into(), json!(format_time(info.created_ms)));
    doc.insert(vt("ledgerId"), json!(info.ledger_id.as_str()));
    doc.insert(vt("code"), json!(info.code.to_string()));
    doc.insert(vt("height"), json!(info.height));
    doc.insert("epcisBody".into(), json!({ "eventList": events }));
    Value::Object(doc)
}

/// Where a record's subjects go: item, unit and other codes as EPCs, lots as quantity
/// classes without a quantity (the whole lot).
fn split_subjects(subjects: &[SubjectId]) -> (Vec<Value>, Vec<Value>) {
    let mut epcs = Vec::new();
    let mut classes = Vec::new();
    for s in subjects {
        match s {
            SubjectId::Lot { .. } => classes.push(json!({ "epcClass": subject_uri(s) })),
            _ => epcs.push(json!(subject_uri(s))),
        }
    }
    (epcs, classes)
}

/// An event being written.
#[derive(Default)]
struct Event(Map<String, Value>);

impl Event {
    fn put(&mut self, field: &str, v: Value) {
        self.0.insert(field.to_string(), v);
    }

    /// A veritrace extension field.
    fn ext(&mut self, term: &str, v: Value) {
        self.0.insert(vt(term), v);
    }

    /// A veritrace text field, left out when empty.
    fn text(&mut self, term: &str, v: &str) {
        if !v.is_empty() {
            self.ext(term, json!(v));
        }
    }

    /// An ObjectEvent's subjects: `epcList` (even empty, unless lots are given) and
    /// `quantityList` (lots, if any).
    fn subjects(&mut self, subjects: &[SubjectId]) {
        let (epcs, classes) = split_subjects(subjects);
        if !epcs.is_empty() || classes.is_empty() {
            self.put("epcList", Value::Array(epcs));
        }
        if !classes.is_empty() {
            self.put("quantityList", Value::Array(classes));
        }
    }
}

/// The event of one record; `None` for governance.
pub fn export_event(log_index: u64, signed: &SignedRecord) -> Option<Value> {
    let rec = &signed.record;
    let id = signed.id();
    let mut e = Event::default();
    let party = |field: &str, org: &OrgId| json!([{ "type": "possessing_party", field: org_uri(org) }]);

    let (event_type, action) = match &rec.body {
        RecordBody::Aggregate(_) => ("AggregationEvent", "ADD"),
        RecordBody::Disaggregate(_) => ("AggregationEvent", "DELETE"),
        RecordBody::IssueCodes(_) => ("ObjectEvent", "ADD"),
        RecordBody::Governance(_) => return None,
        _ => ("ObjectEvent", "OBSERVE"),
    };
    e.put("type", json!(event_type));
    e.put("eventID", json!(event_id(&id)));
    e.put("eventTime", json!(format_time(rec.time_ms)));
    e.put("eventTimeZoneOffset", json!("+00:00"));
    e.put("action", json!(action));
    e.ext("recordId", json!(id.to_hex()));
    e.ext("logIndex", json!(log_index));
    e.ext("kind", json!(rec.body.kind().as_str()));
    e.ext("author", json!(rec.author.as_str()));

    let (biz_step, disposition) = match &rec.body {
        RecordBody::IssueCodes(ic) => {
            match &ic.codes {
                CodeSet::Range(r) => {
                    e.put("epcList", json!([]));
                    let lot = SubjectId::lot_of(ic.product.gtin.clone(), ic.lot.clone());
                    e.put("quantityList", json!([{ "epcClass": subject_uri(&lot), "quantity": r.count }]));
                    e.ext(
                        "serialRange",
                        json!({ vt("prefix"): r.prefix, vt("start"): r.start, vt("count"): r.count, vt("width"): r.width }),
                    );
                }
                CodeSet::Serials(list) => {
                    let items: Vec<Value> = list
                        .iter()
                        .map(|s| json!(subject_uri(&SubjectId::item(ic.product.gtin.clone(), s.clone()))))
                        .collect();
                    e.put("epcList", Value::Array(items));
                }
                CodeSet::Codes(list) => {
                    e.put("epcList", Value::Array(list.iter().map(|c| json!(subject_uri(c))).collect()));
                }
            }
            let mut ilmd = Map::new();
            ilmd.insert("cbvmda:lotNumber".into(), json!(ic.lot.as_str()));
            ilmd.insert("cbvmda:productionDate".into(), json!(ic.production_date));
            if let Some(x) = &ic.expiry_date {
                ilmd.insert("cbvmda:itemExpirationDate".into(), json!(x));
            }
            ilmd.insert(vt("gtin"), json!(ic.product.gtin.as_str()));
            for (term, v) in [
                ("productName", &ic.product.name),
                ("model", &ic.product.model),
                ("spec", &ic.product.spec),
                ("standard", &ic.product.standard),
                ("factory", &ic.factory),
            ] {
                if !v.is_empty() {
                    ilmd.insert(vt(term), json!(v));
                }
            }
            e.put("ilmd", Value::Object(ilmd));
            (Some("commissioning"), Some("active"))
        }
        RecordBody::CertifyConformity(c) => {
            e.subjects(&[SubjectId::lot_of(c.gtin.clone(), c.lot.clone())]);
            e.text("certificateNo", &c.certificate_no);
            e.text("standard", &c.standard);
            e.text("statement", &c.statement);
            (Some("inspecting"), Some("conformant"))
        }
        RecordBody::Inspection(i) => {
            e.subjects(&i.subjects);
            e.text("reportNo", &i.report_no);
            e.text("standard", &i.standard);
            e.ext("result", json!(verdict_str(i.result)));
            if !i.test_items.is_empty() {
                let items: Vec<Value> = i
                    .test_items
                    .iter()
                    .map(|t| {
                        json!({
                            vt("name"): t.name, vt("requirement"): t.requirement,
                            vt("measured"): t.measured, vt("verdict"): verdict_str(t.verdict),
                        })
                    })
                    .collect();
                e.ext("testItems", Value::Array(items));
            }
            e.ext("documentDigest", json!(i.document_digest.to_hex()));
            if let Some(until) = i.valid_until_ms {
                e.ext("validUntil", json!(format_time(until)));
            }
            let disposition = match i.result {
                Verdict::Pass => "conformant",
                Verdict::Fail => "non_conformant",
            };
            (Some("inspecting"), Some(disposition))
        }
        RecordBody::Ship(s) => {
            e.subjects(&s.subjects);
            e.put("sourceList", party("source", &rec.author));
            e.put("destinationList", party("destination", &s.to));
            e.text("location", &s.location);
            (Some("shipping"), Some("in_transit"))
        }
        RecordBody::Receive(r) => {
            e.subjects(&r.subjects);
            e.put("sourceList", party("source", &r.from));
            e.put("destinationList", party("destination", &rec.author));
            e.text("location", &r.location);
            (Some("receiving"), Some("in_progress"))
        }
        RecordBody::Aggregate(a) | RecordBody::Disaggregate(a) => {
            e.put("parentID", json!(subject_uri(&SubjectId::LogisticUnit { sscc: a.parent.clone() })));
            let (epcs, classes) = split_subjects(&a.children);
            if !epcs.is_empty() {
                e.put("childEPCs", Value::Array(epcs));
            }
            if !classes.is_empty() {
                e.put("childQuantityList", Value::Array(classes));
            }
            let step = if matches!(rec.body, RecordBody::Aggregate(_)) { "packing" } else { "unpacking" };
            (Some(step), None)
        }
        RecordBody::Sell(s) => {
            e.subjects(&s.subjects);
            e.text("channel", &s.channel);
            (Some("retail_selling"), Some("retail_sold"))
        }
        RecordBody::Regulatory(r) => {
            e.subjects(&r.subjects);
            e.ext("action", json!(regulatory_str(r.action)));
            e.text("reason", &r.reason);
            e.text("reference", &r.reference);
            match r.action {
                RegulatoryKind::Hold => (Some("holding"), Some("non_sellable_other")),
                RegulatoryKind::Release => (None, Some("sellable_accessible")),
                RegulatoryKind::Recall => (None, Some("recalled")),
                RegulatoryKind::CustomsClearance => (None, None),
            }
        }
        RecordBody::Governance(_) => return None,
    };
    if let Some(step) = biz_step {
        e.put("bizStep", json!(step));
    }
    if let Some(d) = disposition {
        e.put("disposition", json!(d));
    }
    Some(Value::Object(e.0))
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
    }
}

fn regulatory_str(a: RegulatoryKind) -> &'static str {
    match a {
        RegulatoryKind::Hold => "hold",
        RegulatoryKind::Release => "release",
        RegulatoryKind::Recall => "recall",
        RegulatoryKind::CustomsClearance => "customs_clearance",
    }
}

// ---------------------------------------------------------------------------------------
// Import

/// Why a document as a whole cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is not a json object")]
    NotAnObject,
    #[error("type {0:?}: expected EPCISDocument or EPCISQueryDocument")]
    Type(String),
    #[error("schemaVersion {0:?}: expected \"2.0\"")]
    SchemaVersion(String),
    #[error("no event list (epcisBody.eventList, or epcisBody.queryResults.resultsBody.eventList)")]
    NoEventList,
    #[error("{count} events, at most {EVENTS_PER_DOCUMENT_MAX} in one document")]
    TooManyEvents { count: usize },
}

/// An event that maps to a record: the record's body, and what the event says of who made
/// it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedEvent {
    /// The event's position in the document's event list, from 0.
    pub index: u32,
    pub event_id: Option<String>,
    /// `eventTime`, unix ms. The record made from the event is signed at the time of the
    /// import instead: the ledger accepts a record only within its time window of the block
    /// that applies it.
    pub event_time_ms: u64,
    /// Who made the event: `veritrace:author`, or the veritrace organisation that a shipping
    /// event's source list (a receiving event's destination list) names as the party.
    pub author: Option<OrgId>,
    /// The record the event was exported from (`veritrace:recordId`), if it was.
    pub source_record: Option<Hash32>,
    pub body: RecordBody,
    /// Fields of the event that the record has no place for and that were left out
    /// (`readPoint`, `bizTransactionList`, unknown extensions, ...), sorted.
    pub dropped: Vec<String>,
}

/// An event that cannot be a record, and the first reason found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {index}{}: {reason}", event_id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default())]
pub struct Rejection {
    pub index: u32,
    pub event_id: Option<String>,
    pub reason: String,
}

/// Every event of an EPCIS 2.0 document (or query document), each mapped to a record body
/// or rejected. Nothing is partial: the caller decides what to do with a document that has
/// rejections (the CLI submits nothing).
pub fn import_document(doc: &Value) -> Result<Vec<Result<ImportedEvent, Rejection>>, DocumentError> {
    let obj = doc.as_object().ok_or(DocumentError::NotAnObject)?;
    let doc_type = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    let body = obj.get("epcisBody");
    let events = match doc_type {
        "EPCISDocument" => body.and_then(|b| b.get("eventList")),
        "EPCISQueryDocument" => {
            body.and_then(|b| b.get("queryResults")).and_then(|q| q.get("resultsBody")).and_then(|r| r.get("eventList"))
        }
        other => return Err(DocumentError::Type(other.to_string())),
    };
    let version = obj.get("schemaVersion").and_then(Value::as_str).unwrap_or_default();
    if version != SCHEMA_VERSION && !version.starts_with("2.0.") {
        return Err(DocumentError::SchemaVersion(version.to_string()));
    }
    let events = events.and_then(Value::as_array).ok_or(DocumentError::NoEventList)?;
    if events.len() > EVENTS_PER_DOCUMENT_MAX {
        return Err(DocumentError::TooManyEvents { count: events.len() });
    }
    let terms = Terms::of(obj.get("@context"));
    Ok(events.iter().enumerate().map(|(i, e)| import_event(i as u32, e, &terms)).collect())
}

/// One event of a document whose `@context` gave `terms`.
fn import_event(index: u32, event: &Value, doc_terms: &Terms) -> Result<ImportedEvent, Rejection> {
    let event_id = event.get("eventID").and_then(Value::as_str).map(str::to_string);
    let reject = |reason: String| Rejection { index, event_id: event_id.clone(), reason };
    let obj = event.as_object().ok_or_else(|| reject("the event is not a json object".into()))?;
    let mut terms = doc_terms.clone();
    terms.add(obj.get("@context"));
    let mut r = Reader { obj, terms: &terms, used: BTreeSet::new() };
    let mapped = map_event(&mut r).map_err(reject)?;
    Ok(ImportedEvent {
        index,
        event_id: event_id.clone(),
        event_time_ms: mapped.event_time_ms,
        author: mapped.author,
        source_record: mapped.source_record,
        body: mapped.body,
        dropped: r.dropped(),
    })
}

/// The record an imported event becomes when `author` signs it with key `key_id` at
/// `time_ms`, form-checked (sizes, texts, dates, duplicates): a failure is the event's
/// rejection.
pub fn record_of(
    ev: &ImportedEvent,
    author: OrgId,
    key_id: KeyId,
    time_ms: u64,
    nonce: u64,
) -> Result<Record, Rejection> {
    let record = Record { author, key_id, time_ms, nonce, body: ev.body.clone() };
    record.validate_form().map_err(|e| Rejection {
        index: ev.index,
        event_id: ev.event_id.clone(),
        reason: format!("the {} record it maps to is malformed: {e}", ev.body.kind().as_str()),
    })?;
    Ok(record)
}

/// The prefixes a document's `@context` binds to [`VERITRACE_NS`].
#[derive(Clone, Debug, Default)]
struct Terms {
    prefixes: Vec<String>,
}

impl Terms {
    fn of(context: Option<&Value>) -> Terms {
        let mut t = Terms::default();
        t.add(context);
        t
    }

    fn add(&mut self, context: Option<&Value>) {
        let objects: Vec<&Map<String, Value>> = match context {
            Some(Value::Object(o)) => vec![o],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
            _ => vec![],
        };
        for o in objects {
            for (prefix, iri) in o {
                if iri.as_str() == Some(VERITRACE_NS) && !self.prefixes.contains(prefix) {
                    self.prefixes.push(prefix.clone());
                }
            }
        }
    }

    /// Whether `key` names veritrace's `term`: `{prefix}:{term}` or the full IRI.
    fn is(&self, key: &str, term: &str) -> bool {
        key.strip_prefix(VERITRACE_NS) == Some(term)
            || self
                .prefixes
                .iter()
                .any(|p| key.strip_prefix(p.as_str()).and_then(|k| k.strip_prefix(':')) == Some(term))
    }

    /// The value of veritrace's `term` in `obj`, and its key.
    fn get<'a>(&self, obj: &'a Map<String, Value>, term: &str) -> Option<(&'a str, &'a Value)> {
        obj.iter().find(|(k, _)| self.is(k, term)).map(|(k, v)| (k.as_str(), v))
    }
}

/// Whether `key` names the CBV master-data attribute `attr` (`cbvmda:` as the EPCIS context
/// binds it, or the full IRI).
fn is_cbvmda(key: &str, attr: &str) -> bool {
    ["cbvmda:", "urn:epcglobal:cbv:mda#", "urn:epcglobal:cbv:mda:"].iter().any(|p| key.strip_prefix(p) == Some(attr))
}

/// The term of a CBV value in any of its forms: bare (`shipping`), the EPCIS 1.x URN
/// (`urn:epcglobal:cbv:bizstep:shipping`) or the CBV 2.0 web URI
/// (`https://ref.gs1.org/cbv/BizStep-shipping`).
fn cbv_term<'a>(value: &'a str, urn: &str, web: &str) -> &'a str {
    let urn = format!("urn:epcglobal:cbv:{urn}:");
    let webs = [format!("https://ref.gs1.org/cbv/{web}-"), format!("http://ref.gs1.org/cbv/{web}-")];
    value
        .strip_prefix(urn.as_str())
        .or_else(|| webs.iter().find_map(|w| value.strip_prefix(w.as_str())))
        .unwrap_or(value)
}

/// Reads an event's fields and remembers which were used, so the rest can be reported as
/// dropped.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    terms: &'a Terms,
    used: BTreeSet<&'a str>,
}

impl<'a> Reader<'a> {
    /// A standard field.
    fn field(&mut self, name: &str) -> Option<&'a Value> {
        let (k, v) = self.obj.get_key_value(name)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    fn str_field(&mut self, name: &str) -> Result<Option<&'a str>, String> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("{name} is {v}, expected a string")),
        }
    }

    fn array_field(&mut self, name: &str) -> Result<&'a [Value], String> {
        match self.field(name) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(format!("{name} is {v}, expected an array")),
        }
    }

    /// A veritrace extension field.
    fn ext(&mut self, term: &str) -> Option<&'a Value> {
        let (k, v) = self.terms.get(self.obj, term)?;
        self.used.insert(k);
        Some(v)
    }

    fn ext_str(&mut self, term: &str) -> Result<Option<&'a str>, String> {
        match self.ext(term) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("veritrace:{term} is {v}, expected a string")),
        }
    }

    /// A veritrace text field; empty if absent.
    fn ext_text(&mut self, term: &str) -> Result<String, String> {
        Ok(self.ext_str(term)?.unwrap_or_default().to_string())
    }

    /// A veritrace text field that the record needs; `why` says for what.
    fn ext_required(&mut self, term: &str, why: &str) -> Result<String, String> {
        match self.ext_str(term)? {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            _ => Err(format!("veritrace:{term} is missing: {why}")),
        }
    }

    fn dropped(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.obj.keys().filter(|k| !self.used.contains(k.as_str())).map(|k| k.to_string()).collect();
        // The ilmd object is used; its attributes that were not are reported inside it.
        if let (true, Some(Value::Object(ilmd))) = (self.used.contains("ilmd"), self.obj.get("ilmd")) {
            let known = |k: &str| {
                ["lotNumber", "productionDate", "itemExpirationDate"].iter().any(|a| is_cbvmda(k, a))
                    || ["gtin", "productName", "model", "spec", "standard", "factory"]
                        .iter()
                        .any(|t| self.terms.is(k, t))
            };
            out.extend(ilmd.keys().filter(|k| !known(k)).map(|k| format!("ilmd.{k}")));
        }
        out.sort();
        out
    }
}

/// What [`map_event`] finds.
struct Mapped {
    event_time_ms: u64,
    author: Option<OrgId>,
    source_record: Option<Hash32>,
    body: RecordBody,
}

/// The record kind of an event without `veritrace:kind`, from its type, action and business
/// step.
fn infer_kind(event_type: &str, action: &str, biz_step: Option<&str>) -> Result<RecordKind, String> {
    if event_type == "AggregationEvent" {
        return match action {
            "ADD" => Ok(RecordKind::Aggregate),
            "DELETE" => Ok(RecordKind::Disaggregate),
            _ => Err(format!(
                "an AggregationEvent with action {action} observes a packing; only ADD (pack: aggregate) and \
                 DELETE (unpack: disaggregate) are records"
            )),
        };
    }
    match biz_step {
        Some("commissioning") => Ok(RecordKind::IssueCodes),
        Some("inspecting") => Ok(RecordKind::Inspection),
        Some("shipping") => Ok(RecordKind::Ship),
        Some("receiving") => Ok(RecordKind::Receive),
        Some("retail_selling") => Ok(RecordKind::Sell),
        Some(other) => Err(format!(
            "bizStep {other} has no record kind (commissioning, inspecting, shipping, receiving, retail_selling; \
             others need veritrace:kind)"
        )),
        None => Err("no bizStep and no veritrace:kind: nothing says what record it is".into()),
    }
}

fn parse_kind(s: &str) -> Result<RecordKind, String> {
    use RecordKind::*;
    [IssueCodes, CertifyConformity, Inspection, Ship, Receive, Aggregate, Disaggregate, Sell, Regulatory]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("veritrace:kind {s:?} is not a record kind an event can be"))
}

fn map_event(r: &mut Reader<'_>) -> Result<Mapped, String> {
    let event_type = r.str_field("type")?.ok_or("the event has no type")?;
    if !matches!(event_type, "ObjectEvent" | "AggregationEvent") {
        return Err(format!("a {event_type} has no record kind (only ObjectEvent and AggregationEvent map)"));
    }
    if r.field("errorDeclaration").is_some() {
        return Err("it declares an error in an earlier event; the ledger never retracts a record".into());
    }
    let time = r.str_field("eventTime")?.ok_or("the event has no eventTime")?;
    let event_time_ms = parse_time(time).map_err(|e| format!("eventTime {e}"))?;
    r.field("eventTimeZoneOffset");
    r.field("eventID");
    r.field("@context");
    let action = r.str_field("action")?.ok_or("the event has no action")?;
    let biz_step = r.str_field("bizStep")?.map(|s| cbv_term(s, "bizstep", "BizStep"));
    let disposition = r.str_field("disposition")?.map(|s| cbv_term(s, "disp", "Disp"));
    let kind = match r.ext_str("kind")? {
        Some(k) => parse_kind(k)?,
        None => infer_kind(event_type, action, biz_step)?,
    };
    let (want_type, want_action) = match kind {
        RecordKind::Aggregate => ("AggregationEvent", "ADD"),
        RecordKind::Disaggregate => ("AggregationEvent", "DELETE"),
        RecordKind::IssueCodes => ("ObjectEvent", "ADD"),
        _ => ("ObjectEvent", "OBSERVE"),
    };
    if event_type != want_type || action != want_action {
        return Err(format!(
            "a {} record is an {want_type} with action {want_action}, not an {event_type} with action {action}",
            kind.as_str()
        ));
    }
    let source_record = match r.ext_str("recordId")? {
        Some(h) => Some(Hash32::from_hex(h).map_err(|e| format!("veritrace:recordId: {e}"))?),
        None => None,
    };
    r.ext("logIndex");
    let mut author = match r.ext_str("author")? {
        Some(a) => Some(OrgId::new(a).map_err(|e| format!("veritrace:author {a:?}: {e}"))?),
        None => None,
    };
    let mut party_author = |r: &mut Reader<'_>, list: &str, field: &str, role: &str| -> Result<(), String> {
        let Some(p) = party(r, list, field)? else { return Ok(()) };
        match &author {
            Some(a) if *a != p => Err(format!("veritrace:author is {a} but the {list} names {p} as the {role}")),
            _ => {
                author = Some(p);
                Ok(())
            }
        }
    };

    let body = match kind {
        RecordKind::IssueCodes => RecordBody::IssueCodes(issue_codes(r)?),
        RecordKind::CertifyConformity => {
            let subjects = object_subjects(r)?;
            let [SubjectId::Lot { gtin, lot }] = subjects.as_slice() else {
                return Err(format!(
                    "a certificate of conformity is about one lot (a quantityList class), not {}",
                    names(&subjects)
                ));
            };
            RecordBody::CertifyConformity(CertifyConformity {
                gtin: gtin.clone(),
                lot: lot.clone(),
                certificate_no: r.ext_required("certificateNo", "a certificate of conformity needs its number")?,
                standard: r.ext_required("standard", "a certificate of conformity names its standard")?,
                statement: r.ext_text("statement")?,
            })
        }
        RecordKind::Inspection => RecordBody::Inspection(inspection(r, disposition)?),
        RecordKind::Ship => {
            let subjects = object_subjects(r)?;
            let to = party(r, "destinationList", "destination")?.ok_or(
                "shipping needs the organisation it goes to: a destinationList entry of type possessing_party \
                 (or owning_party) naming urn:veritrace:org:ID",
            )?;
            party_author(r, "sourceList", "source", "shipper")?;
            RecordBody::Ship(Ship { to, subjects, location: location(r)? })
        }
        RecordKind::Receive => {
            let subjects = object_subjects(r)?;
            let from = party(r, "sourceList", "source")?.ok_or(
                "receiving needs the organisation it comes from: a sourceList entry of type possessing_party \
                 (or owning_party) naming urn:veritrace:org:ID",
            )?;
            party_author(r, "destinationList", "destination", "receiver")?;
            RecordBody::Receive(Receive { from, subjects, location: location(r)? })
        }
        RecordKind::Aggregate | RecordKind::Disaggregate => {
            let parent = r.str_field("parentID")?.ok_or("a packing or unpacking needs its parentID (an SSCC)")?;
            let parent = match parse_subject_uri(parent).map_err(|e| format!("parentID: {e}"))? {
                SubjectId::LogisticUnit { sscc } => sscc,
                other => return Err(format!("parentID {other} is not a logistic unit (an SSCC)")),
            };
            let mut children = epcs(r, "childEPCs")?;
            children.extend(whole_lots(r, "childQuantityList")?);
            if children.is_empty() {
                return Err("no childEPCs or childQuantityList: the ledger packs and unpacks named children".into());
            }
            let a = Aggregation { parent, children };
            if kind == RecordKind::Aggregate { RecordBody::Aggregate(a) } else { RecordBody::Disaggregate(a) }
        }
        RecordKind::Sell => RecordBody::Sell(Sell { subjects: object_subjects(r)?, channel: r.ext_text("channel")? }),
        RecordKind::Regulatory => {
            let subjects = object_subjects(r)?;
            let action = match r.ext_str("action")? {
                Some("hold") => RegulatoryKind::Hold,
                Some("release") => RegulatoryKind::Release,
                Some("recall") => RegulatoryKind::Recall,
                Some("customs_clearance") => RegulatoryKind::CustomsClearance,
                Some(other) => {
                    return Err(format!(
                        "veritrace:action {other:?} is not hold, release, recall or customs_clearance"
                    ));
                }
                None => return Err("veritrace:action is missing: a regulatory record names its action".into()),
            };
            RecordBody::Regulatory(RegulatoryAction {
                action,
                subjects,
                reason: r.ext_required("reason", "a regulatory action gives its reason")?,
                reference: r.ext_text("reference")?,
            })
        }
        RecordKind::Governance => unreachable!("parse_kind never yields governance"),
    };
    Ok(Mapped { event_time_ms, author, source_record, body })
}

fn names(subjects: &[SubjectId]) -> String {
    if subjects.is_empty() {
        return "nothing".into();
    }
    subjects.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The codes of a list of EPC URIs.
fn epcs(r: &mut Reader<'_>, list: &str) -> Result<Vec<SubjectId>, String> {
    r.array_field(list)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let uri = v.as_str().ok_or_else(|| format!("{list}[{i}] is {v}, expected a uri"))?;
            parse_subject_uri(uri).map_err(|e| format!("{list}[{i}]: {e}"))
        })
        .collect()
}

/// The lots of a quantity list whose entries have no quantity (whole lots).
fn whole_lots(r: &mut Reader<'_>, list: &str) -> Result<Vec<SubjectId>, String> {
    let mut out = Vec::new();
    for (i, q) in r.array_field(list)?.iter().enumerate() {
        let lot = quantity_class(q, list, i)?;
        if let Some(n) = q.get("quantity") {
            let uom = q.get("uom").and_then(Value::as_str).map(|u| format!(" {u}")).unwrap_or_default();
            return Err(format!(
                "{list}[{i}]: quantity {n}{uom} of {lot}: the ledger records whole lots, not quantities"
            ));
        }
        out.push(lot);
    }
    Ok(out)
}

/// The lot a quantity element names.
fn quantity_class(q: &Value, list: &str, i: usize) -> Result<SubjectId, String> {
    let class = q.get("epcClass").and_then(Value::as_str).ok_or_else(|| format!("{list}[{i}] has no epcClass"))?;
    match parse_subject_uri(class).map_err(|e| format!("{list}[{i}]: {e}"))? {
        lot @ SubjectId::Lot { .. } => Ok(lot),
        other => Err(format!("{list}[{i}]: {other} is not a lot (an LGTIN class)")),
    }
}

/// The subjects of an ObjectEvent: its EPCs, then its whole lots.
fn object_subjects(r: &mut Reader<'_>) -> Result<Vec<SubjectId>, String> {
    let mut subjects = epcs(r, "epcList")?;
    subjects.extend(whole_lots(r, "quantityList")?);
    Ok(subjects)
}

/// The veritrace organisation a source or destination list names as the party: the
/// possessing party, or the owning party if none is given. `None` if it names neither.
fn party(r: &mut Reader<'_>, list: &str, field: &str) -> Result<Option<OrgId>, String> {
    let entries = r.array_field(list)?;
    let of_type = |t: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| e.get("type").and_then(Value::as_str).map(|s| cbv_term(s, "sdt", "SDT")) == Some(t))
            .collect()
    };
    let mut chosen = of_type("possessing_party");
    let mut kind = "possessing_party";
    if chosen.is_empty() {
        chosen = of_type("owning_party");
        kind = "owning_party";
    }
    let mut found: Option<OrgId> = None;
    for e in chosen {
        let uri = e.get(field).and_then(Value::as_str).ok_or_else(|| format!("{list}: a {kind} without {field}"))?;
        let org = parse_org_uri(uri)
            .ok_or_else(|| format!("{list}: {kind} {uri} is not a veritrace organisation (urn:veritrace:org:ID)"))??;
        match &found {
            Some(f) if *f != org => return Err(format!("{list} names two {kind}s, {f} and {org}")),
            _ => found = Some(org),
        }
    }
    Ok(found)
}

/// Where a hand-over happened: `veritrace:location`, else the id of the event's
/// `bizLocation`, else of its `readPoint`.
fn location(r: &mut Reader<'_>) -> Result<String, String> {
    if let Some(l) = r.ext_str("location")? {
        return Ok(l.to_string());
    }
    for field in ["bizLocation", "readPoint"] {
        if let Some(id) = r.obj.get(field).and_then(|v| v.get("id")).and_then(Value::as_str) {
            r.field(field);
            return Ok(id.to_string());
        }
    }
    Ok(String::new())
}

/// `YYYY-MM-DD`, or the date part of a date-time.
fn date_of(attr: &str, v: &Value) -> Result<String, String> {
    let s = v.as_str().ok_or_else(|| format!("ilmd {attr} is {v}, expected a date"))?;
    if s.len() > 10 && parse_time(s).is_ok() { Ok(s[..10].to_string()) } else { Ok(s.to_string()) }
}

fn issue_codes(r: &mut Reader<'_>) -> Result<IssueCodes, String> {
    let empty = Map::new();
    let ilmd = match r.field("ilmd") {
        Some(Value::Object(o)) => o,
        Some(v) => return Err(format!("ilmd is {v}, expected an object")),
        None => &empty,
    };
    let cbv = |attr: &str| ilmd.iter().find(|(k, _)| is_cbvmda(k, attr)).map(|(_, v)| v);
    let vt_text = |term: &str| -> Result<String, String> {
        match r.terms.get(ilmd, term) {
            None => Ok(String::new()),
            Some((_, Value::String(s))) => Ok(s.clone()),
            Some((_, v)) => Err(format!("ilmd veritrace:{term} is {v}, expected a string")),
        }
    };
    let lot = match cbv("lotNumber") {
        Some(v) => {
            let s = v.as_str().ok_or_else(|| format!("ilmd cbvmda:lotNumber is {v}, expected a string"))?;
            Lot::parse(s).map_err(|e| format!("ilmd cbvmda:lotNumber: {e}"))?
        }
        None => return Err("commissioning needs the lot: ilmd cbvmda:lotNumber is missing".into()),
    };
    let production_date = match cbv("productionDate") {
        Some(v) => date_of("cbvmda:productionDate", v)?,
        None => return Err("commissioning needs the production date: ilmd cbvmda:productionDate is missing".into()),
    };
    let expiry_date = cbv("itemExpirationDate").map(|v| date_of("cbvmda:itemExpirationDate", v)).transpose()?;
    let name = vt_text("productName")?;
    if name.trim().is_empty() {
        return Err("commissioning needs the product's name: ilmd veritrace:productName is missing".into());
    }
    let stated_gtin = match vt_text("gtin")? {
        g if g.is_empty() => None,
        g => Some(Gtin::parse(&g).map_err(|e| format!("ilmd veritrace:gtin: {e}"))?),
    };
    let (model, spec, standard, factory) =
        (vt_text("model")?, vt_text("spec")?, vt_text("standard")?, vt_text("factory")?);

    let listed = epcs(r, "epcList")?;
    let classes = r.array_field("quantityList")?;
    let mut counted: Option<(SubjectId, u64)> = None;
    for (i, q) in classes.iter().enumerate() {
        let class = quantity_class(q, "quantityList", i)?;
        let n = q.get("quantity").and_then(Value::as_u64);
        if counted.is_some() || n.is_none() {
            return Err("commissioning by quantity takes one quantityList entry: the lot and how many codes".into());
        }
        counted = Some((class, n.unwrap_or_default()));
    }
    let range = match r.ext("serialRange") {
        None => None,
        Some(v) => Some(serial_range(r.terms, v)?),
    };
    let gtin_of = |s: &SubjectId| s.gtin().cloned();
    let (gtin, codes) = match (range, listed.is_empty()) {
        (Some(range), true) => {
            let Some((class, count)) = counted else {
                return Err("veritrace:serialRange without the quantityList entry of its lot".into());
            };
            if count != range.count {
                return Err(format!("quantityList says {count} codes, veritrace:serialRange {}", range.count));
            }
            let gtin = gtin_of(&class).unwrap_or_else(|| unreachable!("a lot has a gtin"));
            if class != SubjectId::lot_of(gtin.clone(), lot.clone()) {
                return Err(format!("quantityList names lot {class}, ilmd cbvmda:lotNumber {lot}"));
            }
            (gtin, CodeSet::Range(range))
        }
        (Some(_), false) => return Err("both an epcList and a veritrace:serialRange: give one".into()),
        (None, true) if counted.is_some() => {
            return Err("commissioning by quantity needs veritrace:serialRange: the ledger issues serialised codes, \
                 not quantities"
                .into());
        }
        (None, true) => return Err("commissioning names no codes: give an epcList".into()),
        (None, false) => {
            if counted.is_some() {
                return Err(
                    "both an epcList and a quantityList: commissioning by quantity needs veritrace:serialRange".into(),
                );
            }
            let mut gtin: Option<Gtin> = stated_gtin.clone();
            let mut serials = Vec::new();
            let mut others = Vec::new();
            for s in listed {
                match s {
                    SubjectId::Item { gtin: g, serial } => {
                        match &gtin {
                            Some(x) if *x != g => {
                                return Err(format!(
                                    "epcList mixes gtins {x} and {g}: one commissioning is one product"
                                ));
                            }
                            _ => gtin = Some(g),
                        }
                        serials.push(serial);
                    }
                    SubjectId::Lot { .. } | SubjectId::LogisticUnit { .. } => {
                        return Err(format!("epcList names {s}: commissioning issues item codes"));
                    }
                    other => others.push(other),
                }
            }
            match (serials.is_empty(), others.is_empty()) {
                (false, true) => (gtin.unwrap_or_else(|| unreachable!("items have a gtin")), CodeSet::Serials(serials)),
                (true, false) => {
                    let gtin = gtin.ok_or("codes of other schemes need the product's GTIN: ilmd veritrace:gtin")?;
                    (gtin, CodeSet::Codes(others))
                }
                _ => return Err("epcList mixes GS1 items and codes of other schemes: issue them apart".into()),
            }
        }
    };
    if let Some(g) = stated_gtin
        && g != gtin
    {
        return Err(format!("ilmd veritrace:gtin is {g} but the codes are of {gtin}"));
    }
    Ok(IssueCodes {
        product: Product { gtin, name, model, spec, standard },
        lot,
        production_date,
        expiry_date,
        codes,
        factory,
    })
}

fn serial_range(terms: &Terms, v: &Value) -> Result<SerialRange, String> {
    let o = v.as_object().ok_or_else(|| format!("veritrace:serialRange is {v}, expected an object"))?;
    let num = |term: &str| -> Result<u64, String> {
        terms
            .get(o, term)
            .and_then(|(_, v)| v.as_u64())
            .ok_or_else(|| format!("veritrace:serialRange has no whole number veritrace:{term}"))
    };
    let prefix = match terms.get(o, "prefix") {
        Some((_, Value::String(p))) => p.clone(),
        None => String::new(),
        Some((_, v)) => return Err(format!("veritrace:serialRange veritrace:prefix is {v}, expected a string")),
    };
    let width = u8::try_from(num("width")?).map_err(|_| "veritrace:serialRange veritrace:width is above 255")?;
    SerialRange::new(&prefix, num("start")?, num("count")?, width).map_err(|e| format!("veritrace:serialRange: {e}"))
}

fn parse_verdict(what: &str, s: &str) -> Result<Verdict, String> {
    match s {
        "pass" => Ok(Verdict::Pass),
        "fail" => Ok(Verdict::Fail),
        other => Err(format!("{what} {other:?} is neither pass nor fail")),
    }
}

fn inspection(r: &mut Reader<'_>, disposition: Option<&str>) -> Result<InspectionReport, String> {
    let subjects = object_subjects(r)?;
    let from_disposition = match disposition {
        Some("conformant") => Some(Verdict::Pass),
        Some("non_conformant") => Some(Verdict::Fail),
        _ => None,
    };
    let stated = r.ext_str("result")?.map(|s| parse_verdict("veritrace:result", s)).transpose()?;
    let result = match (stated, from_disposition) {
        (Some(s), Some(d)) if s != d => {
            return Err(format!(
                "veritrace:result is {} but the disposition is {}",
                verdict_str(s),
                disposition.unwrap_or_default()
            ));
        }
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            return Err(
                "an inspection's result is missing: disposition conformant or non_conformant, or veritrace:result"
                    .into(),
            );
        }
    };
    let digest = r.ext_required("documentDigest", "an inspection report names the blake3 digest of its document")?;
    let document_digest = Hash32::from_hex(&digest).map_err(|e| format!("veritrace:documentDigest: {e}"))?;
    let valid_until_ms = match r.ext_str("validUntil")? {
        Some(t) => Some(parse_time(t).map_err(|e| format!("veritrace:validUntil {e}"))?),
        None => None,
    };
    let mut test_items = Vec::new();
    if let Some(v) = r.ext("testItems") {
        let items = v.as_array().ok_or_else(|| format!("veritrace:testItems is {v}, expected an array"))?;
        for (i, t) in items.iter().enumerate() {
            let o = t.as_object().ok_or_else(|| format!("veritrace:testItems[{i}] is {t}, expected an object"))?;
            let text = |term: &str| -> Result<String, String> {
                match r.terms.get(o, term) {
                    None => Ok(String::new()),
                    Some((_, Value::String(s))) => Ok(s.clone()),
                    Some((_, v)) => Err(format!("veritrace:testItems[{i}] veritrace:{term} is {v}, expected a string")),
                }
            };
            let verdict = parse_verdict(&format!("veritrace:testItems[{i}] veritrace:verdict"), &text("verdict")?)?;
            test_items.push(TestItem {
                name: text("name")?,
                requirement: text("requirement")?,
                measured: text("measured")?,
                verdict,
            });
        }
    }
    Ok(InspectionReport {
        subjects,
        report_no: r.ext_required("reportNo", "an inspection report needs its number")?,
        standard: r.ext_required("standard", "an inspection report names its standard")?,
        result,
        test_items,
        document_digest,
        valid_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Fixture, NUTRI_PREFIX, T0_MS, gtin};

    fn org(id: &str) -> OrgId {
        OrgId::new(id).unwrap()
    }

    fn subject(s: &str) -> SubjectId {
        s.parse().unwrap()
    }

    fn sscc() -> Sscc {
        Sscc::parse("093123450000000012").unwrap()
    }

    /// A document around `events`, with the usual context.
    fn doc(events: Vec<Value>) -> Value {
        json!({
            "@context": context(), "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-01-01T00:00:00.000Z", "epcisBody": {"eventList": events},
        })
    }

    fn import_one(event: Value) -> Result<ImportedEvent, Rejection> {
        import_document(&doc(vec![event])).unwrap().remove(0)
    }

    fn reason(event: Value) -> String {
        import_one(event).unwrap_err().reason
    }

    /// One record of every kind an event can be, by the organisation that may make it.
    fn every_kind(f: &Fixture) -> Vec<SignedRecord> {
        let lot = f.lot_id("L1");
        let item = f.item("L1", 3);
        let digest = Hash32::from(blake3::hash(b"report"));
        let custom: SubjectId = "custom:acme-trace:A%B/1".parse().unwrap();
        let bodies: Vec<(&str, RecordBody)> = vec![
            ("nutri", f.issue_range("L1", 1000)),
            (
                "nutri",
                RecordBody::IssueCodes(IssueCodes {
                    product: Product {
                        gtin: gtin(NUTRI_PREFIX, 2),
                        name: "Tin".into(),
                        model: String::new(),
                        spec: String::new(),
                        standard: String::new(),
                    },
                    lot: Lot::parse("L2").unwrap(),
                    production_date: "2026-01-11".into(),
                    expiry_date: None,
                    codes: CodeSet::Serials(vec![Serial::parse("S/1").unwrap(), Serial::parse("S2").unwrap()]),
                    factory: String::new(),
                }),
            ),
            (
                "nutri",
                RecordBody::IssueCodes(IssueCodes {
                    product: f.formula(),
                    lot: Lot::parse("L3").unwrap(),
                    production_date: "2026-01-12".into(),
                    expiry_date: Some("2027-01-12".into()),
                    codes: CodeSet::Codes(vec![custom.clone(), subject("ecode:1000000000000001")]),
                    factory: "Geelong".into(),
                }),
            ),
            (
                "nutri",
                RecordBody::CertifyConformity(CertifyConformity {
                    gtin: gtin(NUTRI_PREFIX, 1),
                    lot: Lot::parse("L1").unwrap(),
                    certificate_no: "COC-1".into(),
                    standard: "GB 10765-2021".into(),
                    statement: "checked".into(),
                }),
            ),
            (
                "ccic-au",
                RecordBody::Inspection(InspectionReport {
                    subjects: vec![item.clone(), lot.clone()],
                    report_no: "R-1".into(),
                    standard: "GB 10765-2021".into(),
                    result: Verdict::Fail,
                    test_items: vec![
                        TestItem {
                            name: "Protein".into(),
                            requirement: "1.8-3.0".into(),
                            measured: "2.1".into(),
                            verdict: Verdict::Pass,
                        },
                        TestItem {
                            name: "Lead".into(),
                            requirement: String::new(),
                            measured: "0.3".into(),
                            verdict: Verdict::Fail,
                        },
                    ],
                    document_digest: digest,
                    valid_until_ms: Some(T0_MS + 86_400_123),
                }),
            ),
            ("nutri", RecordBody::Aggregate(Aggregation { parent: sscc(), children: vec![item.clone(), lot.clone()] })),
            (
                "nutri",
                RecordBody::Ship(Ship {
                    to: org("importer"),
                    subjects: vec![subject("00/093123450000000012")],
                    location: "Melbourne".into(),
                }),
            ),
            (
                "importer",
                RecordBody::Receive(Receive {
                    from: org("nutri"),
                    subjects: vec![subject("00/093123450000000012")],
                    location: String::new(),
                }),
            ),
            ("importer", RecordBody::Disaggregate(Aggregation { parent: sscc(), children: vec![item.clone()] })),
            ("shop", RecordBody::Sell(Sell { subjects: vec![item.clone(), custom], channel: "shop front".into() })),
            (
                "samr",
                RecordBody::Regulatory(RegulatoryAction {
                    action: RegulatoryKind::Hold,
                    subjects: vec![lot.clone()],
                    reason: "melamine".into(),
                    reference: String::new(),
                }),
            ),
            (
                "samr",
                RecordBody::Regulatory(RegulatoryAction {
                    action: RegulatoryKind::Release,
                    subjects: vec![lot.clone()],
                    reason: "cleared".into(),
                    reference: "C-2".into(),
                }),
            ),
            (
                "samr",
                RecordBody::Regulatory(RegulatoryAction {
                    action: RegulatoryKind::Recall,
                    subjects: vec![lot.clone()],
                    reason: "melamine".into(),
                    reference: "C-3".into(),
                }),
            ),
            (
                "customs-pingtan",
                RecordBody::Regulatory(RegulatoryAction {
                    action: RegulatoryKind::CustomsClearance,
                    subjects: vec![item],
                    reason: "declared".into(),
                    reference: "D-1".into(),
                }),
            ),
        ];
        bodies.into_iter().enumerate().map(|(i, (a, b))| f.sign(a, T0_MS + i as u64 * 1000, b)).collect()
    }

    #[test]
    fn codes_are_digital_link_uris_or_veritrace_urns() {
        let item = subject("01/09312345000012/21/S%2F1");
        assert_eq!(subject_uri(&item), "https://id.gs1.org/01/09312345000012/21/S%2F1");
        let lot = subject("01/09312345000012/10/L1");
        assert_eq!(subject_uri(&lot), "https://id.gs1.org/01/09312345000012/10/L1");
        let unit = SubjectId::LogisticUnit { sscc: sscc() };
        assert_eq!(subject_uri(&unit), "https://id.gs1.org/00/093123450000000012");
        let custom = subject("custom:acme-trace:A%B/1");
        assert_eq!(subject_uri(&custom), "urn:veritrace:subject:custom:acme-trace:A%25B%2F1");
        let ecode = subject("ecode:1000000000000001");
        assert_eq!(subject_uri(&ecode), "urn:veritrace:subject:ecode:1000000000000001");
        for s in [&item, &lot, &unit, &custom, &ecode] {
            assert_eq!(&parse_subject_uri(&subject_uri(s)).unwrap(), s);
        }
        // Other hosts, EPC URNs.
        assert_eq!(parse_subject_uri("http://example.com/x/01/9312345000012/21/S%2F1?17=280101").unwrap(), item);
        assert_eq!(
            parse_subject_uri("urn:epc:id:sgtin:0614141.107346.2017").unwrap(),
            subject("01/10614141073464/21/2017")
        );
        assert_eq!(
            parse_subject_uri("urn:epc:class:lgtin:4012345.012345.998877").unwrap(),
            subject("01/04012345123456/10/998877")
        );
        assert_eq!(parse_subject_uri("urn:epc:id:sscc:0614141.1234567890").unwrap(), subject("00/106141412345678908"));
        assert_eq!(
            parse_subject_uri("urn:epc:id:sgtin:0614141.107346.A%2F1").unwrap(),
            subject("01/10614141073464/21/A%2F1")
        );
        for (bad, why) in [
            ("urn:epc:idpat:sgtin:4012345.098765.*", "pattern"),
            ("urn:epc:id:sgln:0614141.00777.0", "id:sgln"),
            ("urn:epc:id:sgtin:0614141.10734.2017", "expected 13"),
            ("urn:epc:id:sgtin:0614141.107346", "CompanyPrefix.Reference.Value"),
            ("urn:epc:id:sgtin:0614141.107346.bad serial", "serial"),
            ("https://id.gs1.org/01/09312345000013/21/S1", "check digit"),
            ("urn:veritrace:subject:custom:UPPER:x", "scheme"),
            ("ni:///sha-256;abc", "not a GS1 Digital Link"),
        ] {
            let e = parse_subject_uri(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_shipment_becomes_this_object_event() {
        let f = Fixture::new();
        let rec = f.sign(
            "nutri",
            T0_MS + 1234,
            RecordBody::Ship(Ship {
                to: org("importer"),
                subjects: vec![f.item("L1", 1), f.lot_id("L1")],
                location: "Melbourne".into(),
            }),
        );
        let id = rec.id().to_hex();
        assert_eq!(
            export_event(7, &rec).unwrap(),
            json!({
                "type": "ObjectEvent",
                "eventID": format!("urn:veritrace:record:{id}"),
                "eventTime": "2026-01-01T00:00:01.234Z",
                "eventTimeZoneOffset": "+00:00",
                "action": "OBSERVE",
                "bizStep": "shipping",
                "disposition": "in_transit",
                "epcList": ["https://id.gs1.org/01/09312345000012/21/L1-000001"],
                "quantityList": [{"epcClass": "https://id.gs1.org/01/09312345000012/10/L1"}],
                "sourceList": [{"type": "possessing_party", "source": "urn:veritrace:org:nutri"}],
                "destinationList": [{"type": "possessing_party", "destination": "urn:veritrace:org:importer"}],
                "veritrace:recordId": id,
                "veritrace:logIndex": 7,
                "veritrace:kind": "ship",
                "veritrace:author": "nutri",
                "veritrace:location": "Melbourne",
            })
        );
    }

    #[test]
    fn a_range_issuance_is_commissioning_by_quantity_with_its_range() {
        let f = Fixture::new();
        let e = export_event(0, &f.sign("nutri", T0_MS, f.issue_range("L1", 1000))).unwrap();
        assert_eq!(e["action"], "ADD");
        assert_eq!((e["bizStep"].as_str(), e["disposition"].as_str()), (Some("commissioning"), Some("active")));
        assert_eq!(e["epcList"], json!([]));
        assert_eq!(
            e["quantityList"],
            json!([{"epcClass": "https://id.gs1.org/01/09312345000012/10/L1", "quantity": 1000}])
        );
        assert_eq!(
            e["veritrace:serialRange"],
            json!({"veritrace:prefix": "L1-", "veritrace:start": 0, "veritrace:count": 1000, "veritrace:width": 6})
        );
        assert_eq!(
            e["ilmd"],
            json!({
                "cbvmda:lotNumber": "L1", "cbvmda:productionDate": "2026-01-10", "cbvmda:itemExpirationDate": "2028-01-09",
                "veritrace:gtin": "09312345000012", "veritrace:productName": "Infant formula stage 1, 900 g",
                "veritrace:model": "S1-900", "veritrace:spec": "900 g tin", "veritrace:standard": "GB 10765-2021",
                "veritrace:factory": "Melbourne, VIC",
            })
        );
    }

    #[test]
    fn dispositions_say_recalled_and_non_conformant() {
        let f = Fixture::new();
        let events: Vec<Value> =
            every_kind(&f).iter().enumerate().filter_map(|(i, r)| export_event(i as u64, r)).collect();
        let of = |kind: &str, field: &str| -> Vec<Value> {
            events.iter().filter(|e| e["veritrace:kind"] == kind).map(|e| e[field].clone()).collect()
        };
        assert_eq!(of("inspection", "disposition"), [json!("non_conformant")]);
        assert_eq!(of("certify_conformity", "disposition"), [json!("conformant")]);
        assert_eq!(
            of("regulatory", "disposition"),
            [json!("non_sellable_other"), json!("sellable_accessible"), json!("recalled"), Value::Null]
        );
        assert_eq!(of("sell", "disposition"), [json!("retail_sold")]);
        assert_eq!(of("aggregate", "parentID"), [json!("https://id.gs1.org/00/093123450000000012")]);
        assert_eq!(
            of("aggregate", "childQuantityList"),
            [json!([{"epcClass": "https://id.gs1.org/01/09312345000012/10/L1"}])]
        );
        assert_eq!(of("disaggregate", "action"), [json!("DELETE")]);
        // Event ids are the record ids, and the record ids are in the events.
        for (e, r) in events.iter().zip(every_kind(&f)) {
            assert_eq!(e["eventID"], format!("urn:veritrace:record:{}", r.id()));
            assert_eq!(e["veritrace:recordId"], r.id().to_hex());
        }
    }

    #[test]
    fn every_exported_event_imports_as_the_record_it_came_from() {
        let f = Fixture::new();
        let records = every_kind(&f);
        let pairs: Vec<(u64, &SignedRecord)> = records.iter().enumerate().map(|(i, r)| (i as u64 + 10, r)).collect();
        let code = f.item("L1", 3);
        let info = DocumentInfo { ledger_id: f.ledger(), code: &code, height: 9, created_ms: T0_MS };
        let d = export_document(&info, &pairs);
        assert_eq!(d["creationDate"], "2026-01-01T00:00:00.000Z");
        assert_eq!(d["veritrace:code"], code.to_string());
        assert_eq!(d["veritrace:ledgerId"], "veritrace-test");
        let imported = import_document(&d).unwrap();
        assert_eq!(imported.len(), records.len());
        for (i, (got, rec)) in imported.into_iter().zip(&records).enumerate() {
            let got = got.unwrap_or_else(|r| panic!("{r}"));
            assert_eq!(got.index, i as u32);
            assert_eq!(got.body, rec.record.body, "event {i}");
            assert_eq!(got.author.as_ref(), Some(&rec.record.author));
            assert_eq!(got.event_time_ms, rec.record.time_ms);
            assert_eq!(got.source_record, Some(rec.id()));
            assert_eq!(got.event_id, Some(format!("urn:veritrace:record:{}", rec.id())));
            assert!(got.dropped.is_empty(), "event {i} dropped {:?}", got.dropped);
            let again = record_of(&got, rec.record.author.clone(), rec.record.key_id.clone(), 5, 0).unwrap();
            assert_eq!(again.body, rec.record.body);
        }
        // Governance is in no trace: left out.
        let gov = f.sign(
            "samr",
            T0_MS,
            RecordBody::Governance(crate::record::GovernanceAction::RemoveValidator {
                node_id: crate::org::NodeId::new("node-3").unwrap(),
            }),
        );
        assert!(export_event(0, &gov).is_none());
    }

    #[test]
    fn events_of_other_systems_map_from_their_standard_fields() {
        // A shipping event with EPC URNs, a read point and a purchase order, no extensions.
        let got = import_one(json!({
            "type": "ObjectEvent", "action": "OBSERVE", "bizStep": "urn:epcglobal:cbv:bizstep:shipping",
            "eventTime": "2026-01-01T08:00:00.000+08:00", "eventTimeZoneOffset": "+08:00",
            "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
            "readPoint": {"id": "urn:epc:id:sgln:0614141.07346.1234"},
            "sourceList": [{"type": "owning_party", "source": "urn:veritrace:org:nutri"}],
            "destinationList": [
                {"type": "https://ref.gs1.org/cbv/SDT-possessing_party", "destination": "urn:veritrace:org:logistics"},
                {"type": "location", "destination": "urn:epc:id:sgln:0614141.00001.0"}
            ],
            "bizTransactionList": [{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:0614141073467:1"}],
            "example:myField": "x",
        }))
        .unwrap();
        assert_eq!(got.event_time_ms, T0_MS);
        assert_eq!(got.author, Some(org("nutri")));
        assert_eq!(
            got.body,
            RecordBody::Ship(Ship {
                to: org("logistics"),
                subjects: vec![subject("01/10614141073464/21/2017")],
                location: "urn:epc:id:sgln:0614141.07346.1234".into(),
            })
        );
        assert_eq!(got.dropped, ["bizTransactionList", "example:myField"]);

        // Commissioning of listed items, with CBV master data and the product's name.
        let got = import_one(json!({
            "type": "ObjectEvent", "action": "ADD", "bizStep": "https://ref.gs1.org/cbv/BizStep-commissioning",
            "eventTime": "2026-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
            "epcList": ["https://id.gs1.org/01/09312345000012/21/A1", "urn:epc:id:sgtin:9312345.000001.A2"],
            "ilmd": {"cbvmda:lotNumber": "L9", "cbvmda:productionDate": "2026-01-01T06:00:00Z",
                     "cbvmda:bestBeforeDate": "2027-01-01", "veritrace:productName": "Tin"},
        }))
        .unwrap();
        let RecordBody::IssueCodes(ic) = &got.body else { panic!("{:?}", got.body) };
        assert_eq!(ic.codes, CodeSet::Serials(vec![Serial::parse("A1").unwrap(), Serial::parse("A2").unwrap()]));
        assert_eq!(
            (ic.production_date.as_str(), ic.lot.as_str(), ic.product.gtin.as_str()),
            ("2026-01-01", "L9", "09312345000012")
        );
        assert_eq!(got.author, None);
        assert_eq!(got.dropped, ["ilmd.cbvmda:bestBeforeDate"]);

        // Extensions under another prefix bound to the veritrace namespace, or as full IRIs.
        let d = json!({
            "@context": [EPCIS_CONTEXT, {"vt": VERITRACE_NS}], "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-01-01T00:00:00Z",
            "epcisBody": {"eventList": [{
                "type": "ObjectEvent", "action": "OBSERVE", "eventTime": "2026-01-01T00:00:00Z",
                "eventTimeZoneOffset": "+00:00", "epcList": ["https://id.gs1.org/01/09312345000012/21/A1"],
                "vt:kind": "sell", "urn:veritrace:epcis:channel": "market", "veritrace:author": "shop",
            }]},
        });
        let got = import_document(&d).unwrap().remove(0).unwrap();
        assert_eq!(
            got.body,
            RecordBody::Sell(Sell { subjects: vec![subject("01/09312345000012/21/A1")], channel: "market".into() })
        );
        // `veritrace:` is not bound in this document: an unknown extension, dropped.
        assert_eq!((got.author, got.dropped), (None, vec!["veritrace:author".to_string()]));
    }

    #[test]
    fn what_cannot_be_a_record_is_rejected_with_the_reason() {
        let base = json!({
            "type": "ObjectEvent", "action": "OBSERVE", "eventTime": "2026-01-01T00:00:00Z",
            "eventTimeZoneOffset": "+00:00", "epcList": ["https://id.gs1.org/01/09312345000012/21/A1"],
        });
        let with = |extra: Value| {
            let mut e = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    e.as_object_mut().unwrap().remove(k);
                } else {
                    e[k] = v.clone();
                }
            }
            e
        };
        let cases = [
            (json!({"type": "TransformationEvent"}), "TransformationEvent has no record kind"),
            (
                json!({"bizStep": "shipping", "errorDeclaration": {"declarationTime": "2026-01-01T00:00:00Z"}}),
                "never retracts",
            ),
            (json!({"bizStep": "shipping", "eventTime": "yesterday"}), "eventTime \"yesterday\" is not an RFC 3339"),
            (json!({"bizStep": "shipping", "eventTime": null}), "no eventTime"),
            (json!({"bizStep": "stocking"}), "bizStep stocking has no record kind"),
            (json!({}), "no bizStep and no veritrace:kind"),
            (json!({"bizStep": "shipping"}), "shipping needs the organisation it goes to"),
            (
                json!({"bizStep": "shipping", "action": "ADD"}),
                "ship record is an ObjectEvent with action OBSERVE, not an ObjectEvent with action ADD",
            ),
            (
                json!({"bizStep": "shipping", "destinationList": [{"type": "possessing_party", "destination": "urn:epc:id:sgln:0614141.00001.0"}]}),
                "possessing_party urn:epc:id:sgln:0614141.00001.0 is not a veritrace organisation",
            ),
            (
                json!({"bizStep": "shipping", "veritrace:author": "shop",
                       "sourceList": [{"type": "possessing_party", "source": "urn:veritrace:org:nutri"}],
                       "destinationList": [{"type": "possessing_party", "destination": "urn:veritrace:org:importer"}]}),
                "veritrace:author is shop but the sourceList names nutri as the shipper",
            ),
            (
                json!({"bizStep": "shipping", "destinationList": [
                    {"type": "possessing_party", "destination": "urn:veritrace:org:a"},
                    {"type": "possessing_party", "destination": "urn:veritrace:org:b"}]}),
                "names two possessing_partys, a and b",
            ),
            (json!({"bizStep": "receiving"}), "receiving needs the organisation it comes from"),
            (
                json!({"bizStep": "receiving", "epcList": null,
                       "quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.012345.998877", "quantity": 200, "uom": "KGM"}]}),
                "quantityList[0]: quantity 200 KGM of 01/04012345123456/10/998877: the ledger records whole lots",
            ),
            (
                json!({"bizStep": "retail_selling", "epcList": ["urn:epc:id:sgln:0614141.00777.0"]}),
                "epcList[0]: urn:epc:id:sgln",
            ),
            (json!({"bizStep": "inspecting"}), "an inspection's result is missing"),
            (json!({"bizStep": "inspecting", "disposition": "conformant"}), "veritrace:documentDigest is missing"),
            (
                json!({"bizStep": "inspecting", "disposition": "conformant", "veritrace:result": "fail"}),
                "veritrace:result is fail but the disposition is conformant",
            ),
            (json!({"bizStep": "commissioning", "action": "ADD"}), "ilmd cbvmda:lotNumber is missing"),
            (
                json!({"bizStep": "commissioning", "action": "ADD", "ilmd": {"cbvmda:lotNumber": "L1", "cbvmda:productionDate": "2026-01-01"}}),
                "veritrace:productName is missing",
            ),
            (
                json!({"bizStep": "commissioning", "action": "ADD", "epcList": [], "quantityList": [{"epcClass": "urn:epc:class:lgtin:9312345.000001.L1", "quantity": 5}],
                       "ilmd": {"cbvmda:lotNumber": "L1", "cbvmda:productionDate": "2026-01-01", "veritrace:productName": "Tin"}}),
                "commissioning by quantity needs veritrace:serialRange",
            ),
            (json!({"veritrace:kind": "governance"}), "veritrace:kind \"governance\" is not a record kind"),
            (json!({"veritrace:kind": "regulatory"}), "veritrace:action is missing"),
            (json!({"veritrace:kind": "regulatory", "veritrace:action": "recall"}), "veritrace:reason is missing"),
            (json!({"veritrace:kind": "certify_conformity"}), "about one lot"),
            (json!({"veritrace:kind": "sell", "veritrace:recordId": "abc"}), "veritrace:recordId: bad hex digest"),
        ];
        for (extra, want) in cases {
            let got = reason(with(extra.clone()));
            assert!(got.contains(want), "{extra}: {got}");
        }
        let agg = json!({
            "type": "AggregationEvent", "action": "OBSERVE", "eventTime": "2026-01-01T00:00:00Z",
            "eventTimeZoneOffset": "+00:00", "parentID": "urn:epc:id:sscc:0614141.1234567890",
        });
        assert!(reason(agg.clone()).contains("with action OBSERVE observes a packing"));
        let mut add = agg;
        add["action"] = json!("ADD");
        assert!(reason(add.clone()).contains("no childEPCs or childQuantityList"));
        add["parentID"] = json!("https://id.gs1.org/01/09312345000012/21/A1");
        add["childEPCs"] = json!(["https://id.gs1.org/01/09312345000012/21/A2"]);
        assert!(reason(add).contains("parentID 01/09312345000012/21/A1 is not a logistic unit"));
        assert!(reason(json!("an event")).contains("not a json object"));

        // The index and event id are in the rejection.
        let d = doc(vec![
            with(json!({"bizStep": "retail_selling"})),
            with(json!({"eventID": "urn:uuid:1", "bizStep": "x"})),
        ]);
        let out = import_document(&d).unwrap();
        assert!(out[0].is_ok());
        let r = out[1].clone().unwrap_err();
        assert_eq!((r.index, r.event_id.as_deref()), (1, Some("urn:uuid:1")));
        assert!(r.to_string().starts_with("event 1 (urn:uuid:1): bizStep x"), "{r}");

        // The form checks of the record are the event's too.
        let dup = import_one(with(json!({"bizStep": "retail_selling", "epcList": [
            "https://id.gs1.org/01/09312345000012/21/A1", "urn:epc:id:sgtin:9312345.000001.A1"]})))
        .unwrap();
        let e = record_of(&dup, org("shop"), KeyId::new("k1").unwrap(), T0_MS, 0).unwrap_err();
        assert!(
            e.reason.contains(
                "sell record it maps to is malformed: subjects: subject 01/09312345000012/21/A1 appears twice"
            ),
            "{e}"
        );
    }

    #[test]
    fn documents_that_are_not_epcis_2_are_refused_whole() {
        assert_eq!(import_document(&json!([])).unwrap_err(), DocumentError::NotAnObject);
        assert_eq!(
            import_document(&json!({"type": "ObjectEvent"})).unwrap_err(),
            DocumentError::Type("ObjectEvent".into())
        );
        let mut d = doc(vec![]);
        d["schemaVersion"] = json!("1.2");
        assert_eq!(import_document(&d).unwrap_err(), DocumentError::SchemaVersion("1.2".into()));
        let mut d = doc(vec![]);
        d["epcisBody"] = json!({});
        assert_eq!(import_document(&d).unwrap_err(), DocumentError::NoEventList);
        let d = doc(vec![json!({}); EVENTS_PER_DOCUMENT_MAX + 1]);
        assert_eq!(
            import_document(&d).unwrap_err(),
            DocumentError::TooManyEvents { count: EVENTS_PER_DOCUMENT_MAX + 1 }
        );
        let q = json!({"type": "EPCISQueryDocument", "schemaVersion": "2.0", "creationDate": "2026-01-01T00:00:00Z",
                       "epcisBody": {"queryResults": {"resultsBody": {"eventList": []}}}});
        assert_eq!(import_document(&q).unwrap(), vec![]);
    }
}
