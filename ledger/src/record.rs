//! Records: what organisations sign and submit, one kind per business event.
//!
//! A [`Record`] is the unsigned body; a [`SignedRecord`] adds the author's signature
//! (and, for governance, the co-signatures of other regulators). The signed message is
//! domain-separated and names the ledger and the record kind, so a signature cannot be
//! replayed on another ledger or as another kind. A record's id is the hash of its
//! signed bytes: submitting the same signed record twice is a duplicate.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, Domain};
use crate::hash::Hash32;
use crate::ids::{Gtin, Lot, Serial, SerialRange, Sscc, SubjectId};
use crate::org::{KeyId, LedgerId, NodeId, OrgId, OrgKey, Organisation, PublicKey, Validator};

/// Largest signed record, in canonical bytes.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// Most subjects one record may name (a list issuance, a shipment, an aggregation).
pub const SUBJECTS_PER_RECORD_MAX: usize = 10_000;
/// Longest free-text field (names, descriptions, locations).
pub const TEXT_BYTES_MAX: usize = 1024;
/// Most test items in one inspection report.
pub const TEST_ITEMS_MAX: usize = 256;

/// The id of a record: domain-separated blake3 of its signed canonical bytes.
pub type RecordId = Hash32;

/// A 64-byte ed25519 signature, serialised as hex in JSON and raw in canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl Sig {
    pub fn to_dalek(&self) -> Signature {
        Signature::from_bytes(&self.0)
    }
}

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({})", hex::encode(self.0))
    }
}

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            crate::hash::fixed_bytes::serialize(&self.0, s)
        }
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if !d.is_human_readable() {
            return crate::hash::fixed_bytes::deserialize::<D, 64>(d).map(Sig);
        }
        let bytes = hex::decode(String::deserialize(d)?).map_err(D::Error::custom)?;
        let a: [u8; 64] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| D::Error::custom(format!("signature must be 64 bytes, got {}", v.len())))?;
        Ok(Sig(a))
    }
}

/// Product facts carried by an issuance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub gtin: Gtin,
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub spec: String,
    /// The executive (product) standard, e.g. `GB 10765-2021`.
    #[serde(default)]
    pub standard: String,
}

/// The codes one issuance creates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeSet {
    /// GS1 items `01/{product gtin}/21/{serial}` for every serial of the range: constant
    /// size whatever the count.
    Range(SerialRange),
    /// GS1 items `01/{product gtin}/21/{serial}` for the listed serials.
    Serials(Vec<Serial>),
    /// Codes of other schemes (Ecode, CCC, custom), listed.
    Codes(Vec<SubjectId>),
}

impl CodeSet {
    pub fn count(&self) -> u64 {
        match self {
            CodeSet::Range(r) => r.count,
            CodeSet::Serials(s) => s.len() as u64,
            CodeSet::Codes(c) => c.len() as u64,
        }
    }
}

/// Source coding: a producer assigns codes to the items of a lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCodes {
    pub product: Product,
    pub lot: Lot,
    /// `YYYY-MM-DD`.
    pub production_date: String,
    /// `YYYY-MM-DD`, if the product expires.
    #[serde(default)]
    pub expiry_date: Option<String>,
    pub codes: CodeSet,
    /// Where the items were made.
    #[serde(default)]
    pub factory: String,
}

/// A producer's certificate of conformity for one of its lots (factory inspection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyConformity {
    pub gtin: Gtin,
    pub lot: Lot,
    pub certificate_no: String,
    pub standard: String,
    /// Free text: what was checked at the factory.
    #[serde(default)]
    pub statement: String,
}

/// Outcome of an inspection or a test item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
}

/// One tested property of an inspection report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestItem {
    pub name: String,
    pub requirement: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// An inspection body's report on lots or codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectionReport {
    pub subjects: Vec<SubjectId>,
    pub report_no: String,
    pub standard: String,
    pub result: Verdict,
    #[serde(default)]
    pub test_items: Vec<TestItem>,
    /// blake3 of the full report document (PDF), which lives off the ledger.
    pub document_digest: Hash32,
    /// The report is valid until this time (unix ms), if it expires.
    #[serde(default)]
    pub valid_until_ms: Option<u64>,
}

/// Custody transfer out: the current custodian hands subjects to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ship {
    pub to: OrgId,
    pub subjects: Vec<SubjectId>,
    #[serde(default)]
    pub location: String,
}

/// Custody transfer in: the recipient named by a shipment takes the subjects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receive {
    pub from: OrgId,
    pub subjects: Vec<SubjectId>,
    #[serde(default)]
    pub location: String,
}

/// Packing items or lots into a logistic unit (pallet, container), or unpacking them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    pub parent: Sscc,
    pub children: Vec<SubjectId>,
}

/// Units leave the chain to consumers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sell {
    pub subjects: Vec<SubjectId>,
    #[serde(default)]
    pub channel: String,
}

/// What a regulator does to lots or codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegulatoryKind {
    Hold,
    Release,
    Recall,
    CustomsClearance,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegulatoryAction {
    pub action: RegulatoryKind,
    pub subjects: Vec<SubjectId>,
    pub reason: String,
    /// The regulator's case or declaration number.
    #[serde(default)]
    pub reference: String,
}

/// A change to who may do what; needs the quorum of regulators set in genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GovernanceAction {
    AddOrganisation(Organisation),
    /// Replace name, roles, prefixes and scope; keys are changed only by the key actions.
    UpdateOrganisation(Organisation),
    AddKey {
        org: OrgId,
        key: OrgKey,
    },
    RevokeKey {
        org: OrgId,
        key_id: KeyId,
    },
    AddValidator(Validator),
    RemoveValidator {
        node_id: NodeId,
    },
}

/// The body of a record, one variant per kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordBody {
    IssueCodes(IssueCodes),
    CertifyConformity(CertifyConformity),
    Inspection(InspectionReport),
    Ship(Ship),
    Receive(Receive),
    Aggregate(Aggregation),
    Disaggregate(Aggregation),
    Sell(Sell),
    Regulatory(RegulatoryAction),
    Governance(GovernanceAction),
}

/// The kind of a record: a stable byte in every signed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RecordKind {
    IssueCodes = 1,
    CertifyConformity = 2,
    Inspection = 3,
    Ship = 4,
    Receive = 5,
    Aggregate = 6,
    Disaggregate = 7,
    Sell = 8,
    Regulatory = 9,
    Governance = 10,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::IssueCodes => "issue_codes",
            RecordKind::CertifyConformity => "certify_conformity",
            RecordKind::Inspection => "inspection",
            RecordKind::Ship => "ship",
            RecordKind::Receive => "receive",
            RecordKind::Aggregate => "aggregate",
            RecordKind::Disaggregate => "disaggregate",
            RecordKind::Sell => "sell",
            RecordKind::Regulatory => "regulatory",
            RecordKind::Governance => "governance",
        }
    }
}

impl RecordBody {
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordBody::IssueCodes(_) => RecordKind::IssueCodes,
            RecordBody::CertifyConformity(_) => RecordKind::CertifyConformity,
            RecordBody::Inspection(_) => RecordKind::Inspection,
            RecordBody::Ship(_) => RecordKind::Ship,
            RecordBody::Receive(_) => RecordKind::Receive,
            RecordBody::Aggregate(_) => RecordKind::Aggregate,
            RecordBody::Disaggregate(_) => RecordKind::Disaggregate,
            RecordBody::Sell(_) => RecordKind::Sell,
            RecordBody::Regulatory(_) => RecordKind::Regulatory,
            RecordBody::Governance(_) => RecordKind::Governance,
        }
    }
}

/// The unsigned record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub author: OrgId,
    pub key_id: KeyId,
    /// When the author made the record (unix ms); must be within the ledger's window of
    /// the applying block's time.
    pub time_ms: u64,
    /// Lets an author make two otherwise identical records (they would share an id).
    #[serde(default)]
    pub nonce: u64,
    pub body: RecordBody,
}

/// A co-signature of another regulator on a governance record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub org: OrgId,
    pub key_id: KeyId,
    pub signature: Sig,
}

/// A record with its author's signature and, for governance, approvals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub record: Record,
    pub signature: Sig,
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

/// Form errors: what is wrong with a record regardless of ledger state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("record is {got} bytes, at most {RECORD_BYTES_MAX} allowed")]
    TooLarge { got: usize },
}

fn field(field: &'static str, reason: impl Into<String>) -> FormError {
    FormError::Field { field, reason: reason.into() }
}

fn check_text(name: &'static str, s: &str, required: bool) -> Result<(), FormError> {
    if required && s.trim().is_empty() {
        return Err(field(name, "must not be empty"));
    }
    if s.len() > TEXT_BYTES_MAX {
        return Err(field(name, format!("{} bytes, at most {TEXT_BYTES_MAX} allowed", s.len())));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(field(name, format!("{s:?} contains a control character")));
    }
    Ok(())
}

/// `YYYY-MM-DD` with a real calendar date.
fn check_date(name: &'static str, s: &str) -> Result<(), FormError> {
    let bad = || field(name, format!("{s:?} is not a date of the form YYYY-MM-DD"));
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<u32>().ok()).ok_or_else(bad);
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=days).contains(&d) || !(1900..=2999).contains(&y) {
        return Err(bad());
    }
    Ok(())
}

fn check_subjects(name: &'static str, subjects: &[SubjectId]) -> Result<(), FormError> {
    if subjects.is_empty() {
        return Err(field(name, "names no subject"));
    }
    if subjects.len() > SUBJECTS_PER_RECORD_MAX {
        return Err(field(name, format!("{} subjects, at most {SUBJECTS_PER_RECORD_MAX} allowed", subjects.len())));
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in subjects {
        if !seen.insert(s) {
            return Err(field(name, format!("subject {s} appears twice")));
        }
    }
    Ok(())
}

impl Record {
    /// Checks the record's form: sizes, texts, dates, lists. State rules come on apply.
    pub fn validate_form(&self) -> Result<(), FormError> {
        match &self.body {
            RecordBody::IssueCodes(r) => {
                check_text("product.name", &r.product.name, true)?;
                check_text("product.model", &r.product.model, false)?;
                check_text("product.spec", &r.product.spec, false)?;
                check_text("product.standard", &r.product.standard, false)?;
                check_text("factory", &r.factory, false)?;
                check_date("production_date", &r.production_date)?;
                if let Some(e) = &r.expiry_date {
                    check_date("expiry_date", e)?;
                    if e.as_str() < r.production_date.as_str() {
                        return Err(field(
                            "expiry_date",
                            format!("{e} is before production date {}", r.production_date),
                        ));
                    }
                }
                match &r.codes {
                    CodeSet::Range(range) => range.validate().map_err(|e| field("codes.range", e.to_string()))?,
                    CodeSet::Serials(s) => {
                        let subjects: Vec<SubjectId> =
                            s.iter().map(|s| SubjectId::item(r.product.gtin.clone(), s.clone())).collect();
                        check_subjects("codes.serials", &subjects)?;
                    }
                    CodeSet::Codes(c) => {
                        check_subjects("codes.codes", c)?;
                        if let Some(bad) =
                            c.iter().find(|c| c.gtin().is_some() || matches!(c, SubjectId::LogisticUnit { .. }))
                        {
                            return Err(field(
                                "codes.codes",
                                format!("{bad} is a GS1 id; list GS1 serials under codes.serials"),
                            ));
                        }
                    }
                }
            }
            RecordBody::CertifyConformity(r) => {
                check_text("certificate_no", &r.certificate_no, true)?;
                check_text("standard", &r.standard, true)?;
                check_text("statement", &r.statement, false)?;
            }
            RecordBody::Inspection(r) => {
                check_subjects("subjects", &r.subjects)?;
                check_text("report_no", &r.report_no, true)?;
                check_text("standard", &r.standard, true)?;
                if r.test_items.len() > TEST_ITEMS_MAX {
                    return Err(field("test_items", format!("{} items, at most {TEST_ITEMS_MAX}", r.test_items.len())));
                }
                for t in &r.test_items {
                    check_text("test_items.name", &t.name, true)?;
                    check_text("test_items.requirement", &t.requirement, false)?;
                    check_text("test_items.measured", &t.measured, false)?;
                }
                if r.result == Verdict::Pass && r.test_items.iter().any(|t| t.verdict == Verdict::Fail) {
                    return Err(field("result", "pass, but a test item failed"));
                }
            }
            RecordBody::Ship(r) => {
                check_subjects("subjects", &r.subjects)?;
                check_text("location", &r.location, false)?;
                if r.to == self.author {
                    return Err(field("to", format!("{} ships to itself", r.to)));
                }
            }
            RecordBody::Receive(r) => {
                check_subjects("subjects", &r.subjects)?;
                check_text("location", &r.location, false)?;
            }
            RecordBody::Aggregate(r) | RecordBody::Disaggregate(r) => {
                check_subjects("children", &r.children)?;
                if let Some(bad) = r.children.iter().find(|c| matches!(c, SubjectId::LogisticUnit { .. })) {
                    return Err(field("children", format!("{bad}: logistic units do not nest")));
                }
            }
            RecordBody::Sell(r) => {
                check_subjects("subjects", &r.subjects)?;
                check_text("channel", &r.channel, false)?;
            }
            RecordBody::Regulatory(r) => {
                check_subjects("subjects", &r.subjects)?;
                check_text("reason", &r.reason, true)?;
                check_text("reference", &r.reference, false)?;
            }
            RecordBody::Governance(g) => match g {
                GovernanceAction::AddOrganisation(o) | GovernanceAction::UpdateOrganisation(o) => {
                    o.validate().map_err(|e| field("organisation", e.to_string()))?
                }
                GovernanceAction::AddKey { .. }
                | GovernanceAction::RevokeKey { .. }
                | GovernanceAction::AddValidator(_)
                | GovernanceAction::RemoveValidator { .. } => {}
            },
        }
        Ok(())
    }

    /// The subjects a record names explicitly (before apply adds the ones it implies,
    /// such as the items of a shipped logistic unit).
    pub fn named_subjects(&self) -> Vec<SubjectId> {
        match &self.body {
            RecordBody::IssueCodes(r) => vec![SubjectId::lot_of(r.product.gtin.clone(), r.lot.clone())],
            RecordBody::CertifyConformity(r) => vec![SubjectId::lot_of(r.gtin.clone(), r.lot.clone())],
            RecordBody::Inspection(r) => r.subjects.clone(),
            RecordBody::Ship(r) => r.subjects.clone(),
            RecordBody::Receive(r) => r.subjects.clone(),
            RecordBody::Aggregate(r) | RecordBody::Disaggregate(r) => {
                let mut v = vec![SubjectId::LogisticUnit { sscc: r.parent.clone() }];
                v.extend(r.children.iter().cloned());
                v
            }
            RecordBody::Sell(r) => r.subjects.clone(),
            RecordBody::Regulatory(r) => r.subjects.clone(),
            RecordBody::Governance(_) => vec![],
        }
    }
}

/// The message the author (and each approver) signs: context, ledger id, kind, then the
/// record's canonical bytes.
pub fn signing_message(ledger: &LedgerId, record: &Record) -> Vec<u8> {
    signing_message_with(ledger, record, &codec::encode(record))
}

/// [`signing_message`] with the record's canonical bytes given.
fn signing_message_with(ledger: &LedgerId, record: &Record, body: &[u8]) -> Vec<u8> {
    let ctx = Domain::RecordSignature.context().as_bytes();
    let mut m = Vec::with_capacity(ctx.len() + 2 + ledger.as_str().len() + 1 + body.len() + 8);
    m.extend_from_slice(ctx);
    m.push(0);
    m.push(ledger.as_str().len() as u8);
    m.extend_from_slice(ledger.as_str().as_bytes());
    m.push(record.body.kind() as u8);
    m.extend_from_slice(body);
    m
}

impl SignedRecord {
    /// Signs `record` for `ledger` with the author's key.
    pub fn sign(ledger: &LedgerId, record: Record, key: &SigningKey) -> SignedRecord {
        let sig = key.sign(&signing_message(ledger, &record));
        SignedRecord { record, signature: Sig(sig.to_bytes()), approvals: vec![] }
    }

    /// Adds another regulator's approval (governance records).
    pub fn approve(&mut self, ledger: &LedgerId, org: OrgId, key_id: KeyId, key: &SigningKey) {
        let sig = key.sign(&signing_message(ledger, &self.record));
        self.approvals.push(Approval { org, key_id, signature: Sig(sig.to_bytes()) });
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a signed record, refusing oversized input before decoding it.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRecord, FormError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(FormError::TooLarge { got: bytes.len() });
        }
        codec::decode("signed record", bytes).map_err(|e| field("bytes", e.to_string()))
    }

    /// The record id: hash of the signed canonical bytes.
    pub fn id(&self) -> RecordId {
        Self::id_of_bytes(&self.to_bytes())
    }

    /// [`signing_message`] of this record, whose canonical bytes as a signed record are
    /// `signed_bytes`. bincode writes a struct's fields in order, so the record's own
    /// canonical bytes are those minus the signature and approvals at the end: apply, which
    /// encoded every record once already, takes them from there instead of encoding again.
    pub(crate) fn signing_message_from(&self, ledger: &LedgerId, signed_bytes: &[u8]) -> Vec<u8> {
        let approvals = if self.approvals.is_empty() { 8 } else { codec::encode(&self.approvals).len() - 1 };
        let end = signed_bytes.len() - self.signature.0.len() - approvals;
        signing_message_with(ledger, &self.record, &signed_bytes[..end])
    }

    /// The id of the signed record whose canonical bytes are `bytes`.
    pub(crate) fn id_of_bytes(bytes: &[u8]) -> RecordId {
        codec::domain_hash(Domain::RecordId, bytes)
    }

    /// Form checks plus the size bound; what a node checks before accepting a submission.
    pub fn validate_form(&self) -> Result<(), FormError> {
        self.validate_form_sized(self.to_bytes().len())
    }

    /// [`SignedRecord::validate_form`] for a record whose canonical bytes are known to be
    /// `len` long (apply encodes each record once, for its id, and passes the length on).
    pub(crate) fn validate_form_sized(&self, len: usize) -> Result<(), FormError> {
        if len > RECORD_BYTES_MAX {
            return Err(FormError::TooLarge { got: len });
        }
        if !self.approvals.is_empty() && self.record.body.kind() != RecordKind::Governance {
            return Err(field("approvals", "only governance records carry approvals"));
        }
        self.record.validate_form()
    }

    /// Verifies the author's signature against `key` alone (no state rules).
    pub fn verify_author(&self, ledger: &LedgerId, key: &PublicKey) -> bool {
        key.verifying_key().verify_strict(&signing_message(ledger, &self.record), &self.signature.to_dalek()).is_ok()
    }

    /// [`SignedRecord::verify_author`], remembered when good ([`crate::sigbatch::VERIFIED`]),
    /// so that applying the record's block on this node does not verify it again.
    pub fn verify_author_remembered(&self, ledger: &LedgerId, key: &PublicKey) -> bool {
        let message = signing_message(ledger, &self.record);
        crate::sigbatch::VERIFIED.verify_strict(&key.verifying_key(), &message, &self.signature.to_dalek())
    }
}
