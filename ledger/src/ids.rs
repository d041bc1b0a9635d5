//! Identifiers of the subjects that ledger events are about.
//!
//! Every traceability event names a *subject*: one serialised item, a lot
//! (batch) of a trade item, a logistic unit such as a pallet, or something
//! identified under a non-GS1 scheme. This module holds the validated
//! identifier types for those subjects, the one canonical string form that a
//! subject is stored, compared and hashed under ([`SubjectId`]), and
//! [`SerialRange`], a constant-size description of many serials so that
//! commissioning a million items does not take a million identifiers.
//!
//! Validation here is syntactic only: check digits, lengths and character
//! sets. Whether an identifier was really allocated to the party that uses it
//! is for the ledger's permission layer to decide.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest `count` a [`SerialRange`] may have.
///
/// A bound keeps a single range from claiming an absurd share of a company's
/// serial space by a typo, and keeps brute-force expansion by callers finite.
pub const SERIAL_RANGE_COUNT_MAX: u64 = 10_000_000;

/// Longest value of GS1 AI 10 (lot) and AI 21 (serial).
const AI_VALUE_MAX_LEN: usize = 20;
/// Longest code of a [`CustomCode`].
const CUSTOM_CODE_MAX_LEN: usize = 64;
/// Longest [`SchemeTag`].
const SCHEME_TAG_MAX_LEN: usize = 32;

/// Why an identifier was rejected; the part is named by the [`IdError`] variant.
///
/// `index` is a 0-based character position in the offending value, except in
/// `BadEscape`, where it is a byte offset into the still-encoded segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("is empty")]
    Empty,
    #[error("length is {found}, expected {expected}")]
    Length { found: u32, expected: &'static str },
    #[error("length is {found}, at most {max} allowed")]
    TooLong { found: u32, max: u32 },
    #[error("character {ch:?} at index {index} is not a decimal digit")]
    NotDigit { ch: char, index: u32 },
    #[error("check digit is {found}, expected {expected}")]
    CheckDigit { found: u8, expected: u8 },
    #[error("character {ch:?} at index {index} is not in the gs1 ai encodable character set 82")]
    NotCset82 { ch: char, index: u32 },
    #[error("year {year} in the first four digits is outside 2001..=2099")]
    Year { year: u32 },
    #[error("character {ch:?} at index {index} is not allowed, a scheme tag must match [a-z][a-z0-9-]{{0,31}}")]
    SchemeTagChar { ch: char, index: u32 },
    #[error("unknown scheme {scheme:?}, expected ecode:, ccc:, custom:, an http(s) uri or a gs1 digital link path")]
    UnknownScheme { scheme: String },
    #[error("missing ':' between the scheme tag and the code")]
    MissingCustomCode,
    #[error("first segment {segment:?} is not a primary key, expected \"01\" (gtin) or \"00\" (sscc)")]
    NotPrimaryKey { segment: String },
    #[error("uri path has no \"01\" (gtin) or \"00\" (sscc) segment")]
    NoPrimaryKeyInUri,
    #[error("unknown application identifier {ai:?}")]
    UnknownAi { ai: String },
    #[error("application identifier {ai:?} has no value segment")]
    MissingValue { ai: String },
    #[error("gtin segment must be followed by a \"21\" serial or a \"10\" lot segment")]
    MissingQualifier,
    #[error("unexpected segment {segment:?} after the identifier")]
    TrailingSegment { segment: String },
    #[error("segment {segment:?} has a bad percent escape at byte {index}")]
    BadEscape { segment: String, index: u32 },
    #[error("segment {segment:?} does not percent-decode to utf-8")]
    NotUtf8 { segment: String },
    #[error("count is 0, expected at least 1")]
    CountZero,
    #[error("count is {count}, at most {max} allowed")]
    CountTooLarge { count: u64, max: u64 },
    #[error("width is {width}, expected 1 to 20 digits")]
    WidthOutOfRange { width: u8 },
    #[error("prefix character {ch:?} at index {index} is not in the gs1 ai encodable character set 82")]
    PrefixChar { ch: char, index: u32 },
    #[error("prefix length {prefix_len} plus width {width} exceeds the 20 characters of a serial")]
    SerialTooLong { prefix_len: u32, width: u8 },
    #[error("last number {start} + {count} - 1 does not fit in u64")]
    LastOverflow { start: u64, count: u64 },
    #[error("last number {last} has more than {width} digits")]
    LastTooWide { last: u64, width: u8 },
}

/// An identifier that failed validation: which part, its value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("gtin {value:?}: {reason}")]
    Gtin { value: String, reason: Reason },
    #[error("sscc {value:?}: {reason}")]
    Sscc { value: String, reason: Reason },
    #[error("lot {value:?}: {reason}")]
    Lot { value: String, reason: Reason },
    #[error("serial {value:?}: {reason}")]
    Serial { value: String, reason: Reason },
    #[error("ecode {value:?}: {reason}")]
    Ecode { value: String, reason: Reason },
    #[error("ccc number {value:?}: {reason}")]
    Ccc { value: String, reason: Reason },
    #[error("scheme tag {value:?}: {reason}")]
    Scheme { value: String, reason: Reason },
    #[error("custom code {value:?}: {reason}")]
    CustomCode { value: String, reason: Reason },
    /// The subject string as a whole (its scheme or digital link segments).
    #[error("subject id {value:?}: {reason}")]
    Path { value: String, reason: Reason },
    /// A decoded identifier that parses but is not written as it prints.
    #[error("{kind} {value:?} is not in canonical form {canonical:?}")]
    NotCanonical { kind: String, value: String, canonical: String },
    /// `range` describes the offending [`SerialRange`] by all its fields.
    #[error("serial range ({range}): {reason}")]
    Range { range: String, reason: Reason },
}

/// Lengths are reported as `u32`; a string longer than that is reported as
/// `u32::MAX`, which is still plainly too long.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn check_digits(value: &str) -> Result<(), Reason> {
    match value.chars().enumerate().find(|&(_, c)| !c.is_ascii_digit()) {
        Some((index, ch)) => Err(Reason::NotDigit { ch, index: len_u32(index) }),
        None => Ok(()),
    }
}

/// The GS1 mod-10 check value of ASCII digits. Weights 3 and 1 alternate from the
/// right so that zero-padding on the left (GTIN-8 to GTIN-14) leaves it unchanged.
fn gs1_check_value(body: &[u8]) -> u8 {
    let sum: u32 =
        body.iter().rev().enumerate().map(|(i, &d)| u32::from(d - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    ((10 - sum % 10) % 10) as u8
}

/// The GS1 check digit that completes `body` (GTIN, SSCC and other GS1 keys without their
/// last digit); `None` if `body` is empty or holds anything but ASCII digits.
pub fn gs1_check_digit(body: &str) -> Option<char> {
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(char::from(b'0' + gs1_check_value(body.as_bytes())))
}

/// GS1 mod-10 check over ASCII digits, the last of which is the check digit.
fn check_gs1_check_digit(digits: &str) -> Result<(), Reason> {
    let Some((&last, body)) = digits.as_bytes().split_last() else {
        return Err(Reason::Empty);
    };
    let expected = gs1_check_value(body);
    let found = last - b'0';
    if found == expected { Ok(()) } else { Err(Reason::CheckDigit { found, expected }) }
}

/// The 82 characters GS1 allows in alphanumeric AI values (GS1 General
/// Specifications, figure 7.11-1).
fn is_cset82(c: char) -> bool {
    matches!(c,
        '!' | '"' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/'
        | '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' | 'A'..='Z' | '_' | 'a'..='z')
}

fn first_non_cset82(value: &str) -> Option<(char, u32)> {
    value.chars().enumerate().find(|&(_, c)| !is_cset82(c)).map(|(index, ch)| (ch, len_u32(index)))
}

/// Characters are checked before length so that, once past, byte length
/// equals character count.
fn check_cset82(value: &str, max_len: usize) -> Result<(), Reason> {
    if let Some((ch, index)) = first_non_cset82(value) {
        return Err(Reason::NotCset82 { ch, index });
    }
    if value.is_empty() {
        return Err(Reason::Empty);
    }
    if value.len() > max_len {
        return Err(Reason::TooLong { found: len_u32(value.len()), max: len_u32(max_len) });
    }
    Ok(())
}

/// Decoded identifiers (serde, so canonical bytes and JSON) must be in the form they print
/// in. Parsing is lenient (GTIN-8/12/13 padded to 14 digits, Digital Link URIs, characters
/// left unescaped in a path segment); decoding is not, so that exactly one byte string
/// decodes to each record, as `codec::decode` promises. Found by the `record_decode` fuzz
/// target: a serial with `)` unescaped decoded to the record whose bytes have `%29`.
fn canonical_only(kind: &str, value: String, canonical: &str) -> Result<(), IdError> {
    if value == canonical {
        return Ok(());
    }
    Err(IdError::NotCanonical { kind: kind.to_ascii_lowercase(), value, canonical: canonical.to_owned() })
}

/// Common trait impls for a validated string identifier with a `parse` fn:
/// text in, text out, and serde as that same text (canonical only) so stored data is
/// re-validated on load.
macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            /// The validated identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        /// What serde decodes: the canonical form only (see `canonical_only`).
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                let id = Self::parse(&s)?;
                canonical_only(stringify!($name), s, id.as_str())?;
                Ok(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A GS1 Global Trade Item Number, held in its 14-digit form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Gtin(String);
string_id!(Gtin);

impl Gtin {
    /// Accepts GTIN-8, GTIN-12, GTIN-13 or GTIN-14 digits with a valid check
    /// digit and left-pads them with zeros to 14 digits, so that the same
    /// trade item always compares equal whichever form was scanned.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::Gtin { value: value.to_owned(), reason };
        check_digits(value).map_err(err)?;
        if !matches!(value.len(), 8 | 12 | 13 | 14) {
            return Err(err(Reason::Length { found: len_u32(value.len()), expected: "8, 12, 13 or 14 digits" }));
        }
        check_gs1_check_digit(value).map_err(err)?;
        Ok(Gtin(format!("{value:0>14}")))
    }

    /// The GTIN-14 of item reference `item_ref` under a GS1 company prefix, indicator 0:
    /// `0`, the prefix, the item reference zero-padded to fill 12 digits, the check digit.
    /// An item reference too wide for the prefix, or a prefix that is not digits, is refused
    /// with the GTIN it would have made.
    pub fn under_company_prefix(company_prefix: &str, item_ref: u32) -> Result<Self, IdError> {
        let width = 12usize.saturating_sub(company_prefix.len());
        let body = format!("0{company_prefix}{item_ref:0width$}");
        match gs1_check_digit(&body) {
            Some(check) => Gtin::parse(&format!("{body}{check}")),
            None => Gtin::parse(&body),
        }
    }

    /// Whether this GTIN starts with the given GS1 company prefix.
    ///
    /// The rule: the GTIN-14 digits after the indicator digit (positions
    /// 1.. of [`Gtin::as_str`]) start with `prefix`. So indicator `0` plus
    /// prefix `6901234` matches `06901234567892`, and so does the same item's
    /// case-level GTIN `16901234567899`. A GTIN-12 (U.P.C.) matches its U.P.C.
    /// company prefix with a leading `0`, as GS1 writes it. A GTIN-8 has no
    /// company prefix; its padded form will not match a real one.
    ///
    /// `prefix` must be 1 to 12 decimal digits (12 = GTIN-14 without
    /// indicator and check digit), otherwise this is `false`. Whether the
    /// prefix length fits the GS1 allocation is not checked.
    pub fn company_prefix_matches(&self, prefix: &str) -> bool {
        (1..=12).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && self.0.get(1..).is_some_and(|rest| rest.starts_with(prefix))
    }
}

/// A GS1 Serial Shipping Container Code: 18 digits with a check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sscc(String);
string_id!(Sscc);

impl Sscc {
    /// Accepts exactly 18 decimal digits with a valid GS1 check digit.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::Sscc { value: value.to_owned(), reason };
        check_digits(value).map_err(err)?;
        if value.len() != 18 {
            return Err(err(Reason::Length { found: len_u32(value.len()), expected: "18 digits" }));
        }
        check_gs1_check_digit(value).map_err(err)?;
        Ok(Sscc(value.to_owned()))
    }
}

/// A batch or lot number (GS1 AI 10): 1 to 20 characters of the AI
/// encodable character set 82.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Lot(String);
string_id!(Lot);

impl Lot {
    /// Accepts 1 to 20 characters from `!"%&'()*+,-./0-9:;<=>?A-Z_a-z`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_cset82(value, AI_VALUE_MAX_LEN).map_err(|reason| IdError::Lot { value: value.to_owned(), reason })?;
        Ok(Lot(value.to_owned()))
    }
}

/// A serial number (GS1 AI 21): 1 to 20 characters of the AI encodable
/// character set 82.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(String);
string_id!(Serial);

impl Serial {
    /// Accepts 1 to 20 characters from `!"%&'()*+,-./0-9:;<=>?A-Z_a-z`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_cset82(value, AI_VALUE_MAX_LEN).map_err(|reason| IdError::Serial { value: value.to_owned(), reason })?;
        Ok(Serial(value.to_owned()))
    }
}

/// An entity code under GB/T 31866 (Ecode).
///
/// The check applied is only what we can state honestly: 16 to 32 decimal
/// digits. The standard's version, registrar and domain structure, and any
/// check character, are not verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ecode(String);
string_id!(Ecode);

impl Ecode {
    /// Accepts 16 to 32 decimal digits.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::Ecode { value: value.to_owned(), reason };
        check_digits(value).map_err(err)?;
        if !(16..=32).contains(&value.len()) {
            return Err(err(Reason::Length { found: len_u32(value.len()), expected: "16 to 32 digits" }));
        }
        Ok(Ecode(value.to_owned()))
    }
}

/// A China Compulsory Certification (CCC) certificate number.
///
/// The format check applied: exactly 16 decimal digits, the first four being
/// the year of issue in 2001..=2099. Whether a certificate with that number
/// was issued, or is still valid, is not something a format check can tell.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CccNumber(String);
string_id!(CccNumber);

impl CccNumber {
    /// Accepts 16 decimal digits starting with a year in 2001..=2099.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::Ccc { value: value.to_owned(), reason };
        check_digits(value).map_err(err)?;
        if value.len() != 16 {
            return Err(err(Reason::Length { found: len_u32(value.len()), expected: "16 digits" }));
        }
        let year = value.bytes().take(4).fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
        if !(2001..=2099).contains(&year) {
            return Err(err(Reason::Year { year }));
        }
        Ok(CccNumber(value.to_owned()))
    }
}

/// The name of a non-GS1 identification scheme: `[a-z][a-z0-9-]{0,31}`.
///
/// Lower case only, so that one scheme cannot appear under two spellings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SchemeTag(String);
string_id!(SchemeTag);

impl SchemeTag {
    /// Accepts a lower-case letter followed by up to 31 of `a-z`, `0-9`, `-`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let err = |reason| IdError::Scheme { value: value.to_owned(), reason };
        let bad = value.chars().enumerate().find(|&(i, c)| {
            let ok =
                if i == 0 { c.is_ascii_lowercase() } else { c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' };
            !ok
        });
        if let Some((index, ch)) = bad {
            return Err(err(Reason::SchemeTagChar { ch, index: len_u32(index) }));
        }
        if value.is_empty() {
            return Err(err(Reason::Empty));
        }
        if value.len() > SCHEME_TAG_MAX_LEN {
            return Err(err(Reason::TooLong { found: len_u32(value.len()), max: len_u32(SCHEME_TAG_MAX_LEN) }));
        }
        Ok(SchemeTag(value.to_owned()))
    }
}

/// The code of a subject under a custom scheme: 1 to 64 characters of the
/// GS1 AI encodable character set 82, so it can also be carried in a barcode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomCode(String);
string_id!(CustomCode);

impl CustomCode {
    /// Accepts 1 to 64 characters from `!"%&'()*+,-./0-9:;<=>?A-Z_a-z`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        check_cset82(value, CUSTOM_CODE_MAX_LEN)
            .map_err(|reason| IdError::CustomCode { value: value.to_owned(), reason })?;
        Ok(CustomCode(value.to_owned()))
    }
}

/// What a ledger event is about.
///
/// Each subject has exactly one canonical string form, produced by
/// `Display`, accepted by `FromStr`, and used by serde:
///
/// | subject | canonical form |
/// | --- | --- |
/// | `Item` | `01/{gtin14}/21/{serial}` |
/// | `Lot` | `01/{gtin14}/10/{lot}` |
/// | `LogisticUnit` | `00/{sscc}` |
/// | `Ecode` | `ecode:{code}` |
/// | `Ccc` | `ccc:{number}` |
/// | `Custom` | `custom:{scheme}:{code}` |
///
/// The GS1 forms are GS1 Digital Link paths without the leading slash; the
/// serial and lot are percent-encoded for every character outside the
/// RFC 3986 unreserved set `A-Za-z0-9-._~`, with upper-case hex.
///
/// Parsing also accepts what scanners and other systems produce; see
/// [`parse_digital_link`] for the GS1 forms. Everything parsed prints back in
/// canonical form.
///
/// The derived `Ord` orders by variant, then fields; it is a stable order for
/// maps, not the order of the canonical strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum SubjectId {
    /// One serialised instance of a trade item (SGTIN).
    Item {
        gtin: Gtin,
        serial: Serial,
    },
    /// A batch of a trade item (LGTIN).
    Lot {
        gtin: Gtin,
        lot: Lot,
    },
    /// A pallet, case or other logistic unit.
    LogisticUnit {
        sscc: Sscc,
    },
    Ecode(Ecode),
    Ccc(CccNumber),
    Custom {
        scheme: SchemeTag,
        code: CustomCode,
    },
}

/// The variant of a [`SubjectId`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Item,
    Lot,
    LogisticUnit,
    Ecode,
    Ccc,
    Custom,
}

impl SubjectId {
    /// A serialised item.
    pub fn item(gtin: Gtin, serial: Serial) -> Self {
        SubjectId::Item { gtin, serial }
    }

    /// A lot of a trade item.
    pub fn lot_of(gtin: Gtin, lot: Lot) -> Self {
        SubjectId::Lot { gtin, lot }
    }

    pub fn kind(&self) -> SubjectKind {
        match self {
            SubjectId::Item { .. } => SubjectKind::Item,
            SubjectId::Lot { .. } => SubjectKind::Lot,
            SubjectId::LogisticUnit { .. } => SubjectKind::LogisticUnit,
            SubjectId::Ecode(_) => SubjectKind::Ecode,
            SubjectId::Ccc(_) => SubjectKind::Ccc,
            SubjectId::Custom { .. } => SubjectKind::Custom,
        }
    }

    /// `s` percent-encoded as it appears in a canonical Digital Link path segment.
    pub fn encode_component(s: &str) -> String {
        PercentEncoded(s).to_string()
    }

    /// The trade item of an `Item` or `Lot`.
    pub fn gtin(&self) -> Option<&Gtin> {
        match self {
            SubjectId::Item { gtin, .. } | SubjectId::Lot { gtin, .. } => Some(gtin),
            _ => None,
        }
    }
}

/// Writes a string percent-encoded outside the RFC 3986 unreserved set, so
/// a serial containing `/`, `%` or `?` stays one path segment.
struct PercentEncoded<'a>(&'a str);

impl fmt::Display for PercentEncoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectId::Item { gtin, serial } => {
                write!(f, "01/{gtin}/21/{}", PercentEncoded(serial.as_str()))
            }
            SubjectId::Lot { gtin, lot } => {
                write!(f, "01/{gtin}/10/{}", PercentEncoded(lot.as_str()))
            }
            SubjectId::LogisticUnit { sscc } => write!(f, "00/{sscc}"),
            SubjectId::Ecode(code) => write!(f, "ecode:{code}"),
            SubjectId::Ccc(number) => write!(f, "ccc:{number}"),
            SubjectId::Custom { scheme, code } => write!(f, "custom:{scheme}:{code}"),
        }
    }
}

impl FromStr for SubjectId {
    type Err = IdError;

    /// Parses the canonical form, and for GS1 subjects everything
    /// [`parse_digital_link`] accepts; a lot given alongside a serial is
    /// dropped because the item alone is the subject.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if let Some(code) = s.strip_prefix("ecode:") {
            return Ecode::parse(code).map(SubjectId::Ecode);
        }
        if let Some(number) = s.strip_prefix("ccc:") {
            return CccNumber::parse(number).map(SubjectId::Ccc);
        }
        if let Some(rest) = s.strip_prefix("custom:") {
            let Some((scheme, code)) = rest.split_once(':') else {
                return Err(IdError::Path { value: s.to_owned(), reason: Reason::MissingCustomCode });
            };
            return Ok(SubjectId::Custom { scheme: SchemeTag::parse(scheme)?, code: CustomCode::parse(code)? });
        }
        // A colon before any slash means the caller meant some scheme; say
        // which one we did not recognise rather than complain about segments.
        if uri_path(s).is_none()
            && let Some((scheme, _)) = s.split_once(':')
            && !scheme.contains('/')
        {
            return Err(IdError::Path {
                value: s.to_owned(),
                reason: Reason::UnknownScheme { scheme: scheme.to_owned() },
            });
        }
        parse_digital_link(s).map(|link| link.subject)
    }
}

/// What serde decodes: the canonical form only (see `canonical_only`).
impl TryFrom<String> for SubjectId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        let id: SubjectId = s.parse()?;
        canonical_only("subject id", s, &id.to_string())?;
        Ok(id)
    }
}

impl From<SubjectId> for String {
    fn from(id: SubjectId) -> String {
        id.to_string()
    }
}

/// Serialised as its canonical string, like `#[serde(into = "String")]` would, but written
/// straight from `Display` without cloning the id first: subject ids are in every state key,
/// most states and most records, so this runs several times per record applied.
impl Serialize for SubjectId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A parsed GS1 Digital Link: the subject, and the lot if the link carried
/// one next to a serial.
///
/// `lot` is `Some` only for `01/{gtin}/10/{lot}/21/{serial}`, where the
/// subject is the item; for `01/{gtin}/10/{lot}` the lot is inside the
/// `SubjectId::Lot` subject and `lot` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitalLink {
    pub subject: SubjectId,
    pub lot: Option<Lot>,
}

/// Parses a GS1 Digital Link, as a path or as a full URI.
///
/// Accepted:
/// - the path forms `01/{gtin}/21/{serial}`, `01/{gtin}/10/{lot}`,
///   `01/{gtin}/10/{lot}/21/{serial}` and `00/{sscc}`, with or without a
///   leading `/`; the GTIN may be GTIN-8/12/13/14 and is normalised to 14
///   digits; lot and serial are percent-decoded;
/// - `http://` or `https://` URIs with any host and any path before the
///   primary key, e.g. `https://id.example.com/p/01/{gtin}/21/{serial}?17=260101#x`.
///   The query and fragment are ignored. Because the path prefix is free,
///   each `01` or `00` segment is tried as the primary key from the left,
///   and the first that parses to the end wins; if none does, the error of
///   the first is returned.
///
/// Other application identifiers (such as `22` or `235`), missing values and
/// segments after the identifier are rejected with an error naming the
/// segment. Non-GS1 subjects (`ecode:` ...) are not digital links; parse
/// those with `SubjectId::from_str`.
pub fn parse_digital_link(input: &str) -> Result<DigitalLink, IdError> {
    if let Some(path) = uri_path(input) {
        let segments: Vec<&str> = path.split('/').collect();
        let mut first_err = None;
        for (i, segment) in segments.iter().enumerate() {
            if matches!(*segment, "01" | "00") {
                match parse_gs1_segments(input, segments.get(i..).unwrap_or_default()) {
                    Ok(link) => return Ok(link),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        return Err(
            first_err.unwrap_or_else(|| IdError::Path { value: input.to_owned(), reason: Reason::NoPrimaryKeyInUri })
        );
    }
    let path = input.strip_prefix('/').unwrap_or(input);
    let segments: Vec<&str> = path.split('/').collect();
    parse_gs1_segments(input, &segments)
}

/// The path of an http(s) URI without its leading slash, query and
/// fragment; `None` if `input` is not such a URI.
fn uri_path(input: &str) -> Option<&str> {
    let rest = strip_prefix_ignore_case(input, "https://").or_else(|| strip_prefix_ignore_case(input, "http://"))?;
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = rest.get(..end).unwrap_or_default();
    Some(rest.find('/').map_or("", |i| rest.get(i + 1..).unwrap_or_default()))
}

fn strip_prefix_ignore_case<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    let head = input.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) { input.get(prefix.len()..) } else { None }
}

fn is_known_ai(segment: &str) -> bool {
    matches!(segment, "00" | "01" | "10" | "21")
}

/// Parses segments that start at the primary key and must end with the
/// identifier. `input` is only for error messages.
fn parse_gs1_segments(input: &str, segments: &[&str]) -> Result<DigitalLink, IdError> {
    let path_err = |reason| IdError::Path { value: input.to_owned(), reason };
    let value_after = |i: usize| {
        let ai = segments.get(i).copied().unwrap_or_default();
        segments.get(i + 1).copied().ok_or_else(|| path_err(Reason::MissingValue { ai: ai.to_owned() }))
    };
    let decoded_after = |i: usize| value_after(i).and_then(|v| percent_decode(input, v));

    let first = segments.first().copied().unwrap_or_default();
    let (link, next) = match first {
        "00" => {
            let sscc = Sscc::parse(value_after(0)?)?;
            let link = DigitalLink { subject: SubjectId::LogisticUnit { sscc }, lot: None };
            (link, 2)
        }
        "01" => {
            let gtin = Gtin::parse(value_after(0)?)?;
            let mut next = 2;
            let mut lot = None;
            if segments.get(next) == Some(&"10") {
                lot = Some(Lot::parse(&decoded_after(next)?)?);
                next += 2;
            }
            if segments.get(next) == Some(&"21") {
                let serial = Serial::parse(&decoded_after(next)?)?;
                next += 2;
                if let Some(extra) = segments.get(next) {
                    return Err(path_err(Reason::TrailingSegment { segment: (*extra).to_owned() }));
                }
                let subject = SubjectId::Item { gtin, serial };
                return Ok(DigitalLink { subject, lot });
            }
            // Here an AI could still have followed, so an unknown one is
            // reported as such rather than as a stray segment.
            match (segments.get(next), lot) {
                (Some(extra), _) => {
                    let reason = if is_known_ai(extra) {
                        Reason::TrailingSegment { segment: (*extra).to_owned() }
                    } else {
                        Reason::UnknownAi { ai: (*extra).to_owned() }
                    };
                    return Err(path_err(reason));
                }
                (None, None) => return Err(path_err(Reason::MissingQualifier)),
                (None, Some(lot)) => {
                    let link = DigitalLink { subject: SubjectId::Lot { gtin, lot }, lot: None };
                    (link, next)
                }
            }
        }
        other => {
            return Err(path_err(Reason::NotPrimaryKey { segment: other.to_owned() }));
        }
    };
    if let Some(extra) = segments.get(next) {
        return Err(path_err(Reason::TrailingSegment { segment: (*extra).to_owned() }));
    }
    Ok(link)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one path segment. Lower-case hex is accepted because
/// URIs from other encoders are equivalent with either case (RFC 3986 2.1).
fn percent_decode(input: &str, segment: &str) -> Result<String, IdError> {
    let path_err = |reason| IdError::Path { value: input.to_owned(), reason };
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(path_err(Reason::BadEscape { segment: segment.to_owned(), index: len_u32(i) }));
            };
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| path_err(Reason::NotUtf8 { segment: segment.to_owned() }))
}

/// Many serials of one pattern, described in constant size.
///
/// Serial number `i` (`0 <= i < count`) is `prefix` followed by `start + i`
/// in decimal, left-padded with zeros to `width` digits. Because the last
/// number must fit in `width` digits, every serial of a valid range has
/// exactly `prefix.len() + width` characters.
///
/// The fields are public and serde does not validate: call
/// [`SerialRange::validate`] after deserialising. The query methods treat an
/// invalid range as empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SerialRange {
    pub prefix: String,
    pub start: u64,
    pub count: u64,
    pub width: u8,
}

impl SerialRange {
    /// Builds a range and validates it.
    pub fn new(prefix: &str, start: u64, count: u64, width: u8) -> Result<Self, IdError> {
        let range = SerialRange { prefix: prefix.to_owned(), start, count, width };
        range.validate()?;
        Ok(range)
    }

    /// Checks that every serial of the range is a valid AI 21 serial and
    /// that the range is not empty or larger than [`SERIAL_RANGE_COUNT_MAX`].
    pub fn validate(&self) -> Result<(), IdError> {
        let err = |reason| IdError::Range {
            range: format!(
                "prefix {:?}, start {}, count {}, width {}",
                self.prefix, self.start, self.count, self.width
            ),
            reason,
        };
        if self.count == 0 {
            return Err(err(Reason::CountZero));
        }
        if self.count > SERIAL_RANGE_COUNT_MAX {
            return Err(err(Reason::CountTooLarge { count: self.count, max: SERIAL_RANGE_COUNT_MAX }));
        }
        if !(1..=20).contains(&self.width) {
            return Err(err(Reason::WidthOutOfRange { width: self.width }));
        }
        if let Some((ch, index)) = first_non_cset82(&self.prefix) {
            return Err(err(Reason::PrefixChar { ch, index }));
        }
        if self.prefix.len() + usize::from(self.width) > AI_VALUE_MAX_LEN {
            return Err(err(Reason::SerialTooLong { prefix_len: len_u32(self.prefix.len()), width: self.width }));
        }
        let Some(last) = self.start.checked_add(self.count - 1) else {
            return Err(err(Reason::LastOverflow { start: self.start, count: self.count }));
        };
        if u128::from(last) >= 10u128.pow(u32::from(self.width)) {
            return Err(err(Reason::LastTooWide { last, width: self.width }));
        }
        Ok(())
    }

    /// The serial at `index`, or `None` past the end or if the range is invalid.
    pub fn serial_at(&self, index: u64) -> Option<Serial> {
        self.validate().ok()?;
        if index >= self.count {
            return None;
        }
        let number = self.start.checked_add(index)?;
        let width = usize::from(self.width);
        Serial::parse(&format!("{}{number:0width$}", self.prefix)).ok()
    }

    /// The last serial of the range.
    pub fn last(&self) -> Option<Serial> {
        self.serial_at(self.count.checked_sub(1)?)
    }

    /// Whether `serial` is one of the range's serials: exactly the prefix,
    /// then exactly `width` digits whose value is in the range. `A07` is not
    /// in a width-3 range even if `A007` is.
    pub fn contains(&self, serial: &Serial) -> bool {
        if self.validate().is_err() {
            return false;
        }
        let Some(digits) = serial.as_str().strip_prefix(self.prefix.as_str()) else {
            return false;
        };
        digits.len() == usize::from(self.width)
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u64>().is_ok_and(|n| n >= self.start && n - self.start < self.count)
    }

    /// Whether some serial string belongs to both ranges.
    ///
    /// Ranges with different prefixes or widths can still share serials:
    /// prefix `A1` width 3 and prefix `A` width 4 both contain `A1000` to
    /// `A1999`. Both ranges must produce strings of one length, the longer
    /// prefix must extend the shorter one with digits only, and those digits
    /// then fix the leading digits of the shorter range's numbers; what is
    /// left is an interval intersection.
    pub fn overlaps(&self, other: &SerialRange) -> bool {
        if self.validate().is_err() || other.validate().is_err() {
            return false;
        }
        let (short, long) = if self.prefix.len() <= other.prefix.len() { (self, other) } else { (other, self) };
        let serial_len = |r: &SerialRange| r.prefix.len() + usize::from(r.width);
        if serial_len(short) != serial_len(long) {
            return false;
        }
        let Some(fixed) = long.prefix.strip_prefix(short.prefix.as_str()) else {
            return false;
        };
        if !fixed.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        // At most 19 fixed digits times 10^width stays below 10^20, so u128
        // holds the shorter range's view of the longer range exactly.
        let high = fixed.bytes().fold(0u128, |acc, b| acc * 10 + u128::from(b - b'0'));
        let offset = high * 10u128.pow(u32::from(long.width));
        let long_lo = offset + u128::from(long.start);
        let long_hi = long_lo + u128::from(long.count - 1);
        let short_lo = u128::from(short.start);
        let short_hi = short_lo + u128::from(short.count - 1);
        long_lo <= short_hi && short_lo <= long_hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn gtin(s: &str) -> Gtin {
        Gtin::parse(s).expect("test gtin is valid")
    }

    fn subject(s: &str) -> SubjectId {
        s.parse().expect("test subject is valid")
    }

    fn with_check_digit(body: &str) -> String {
        format!("{body}{}", gs1_check_digit(body).expect("digits"))
    }

    #[test]
    fn gtin_forms_normalise_to_14_digits() {
        assert_eq!(gtin("06901234567892").as_str(), "06901234567892");
        assert_eq!(gtin("6901234567892").as_str(), "06901234567892");
        assert_eq!(gtin("614141000036").as_str(), "00614141000036");
        assert_eq!(gtin("96385074").as_str(), "00000096385074");
    }

    #[test]
    fn check_digits_and_gtins_under_a_company_prefix() {
        assert_eq!(gs1_check_digit("0931234500001"), Some('2'));
        assert_eq!(gs1_check_digit("0690123400001"), Some('6'));
        assert_eq!(gs1_check_digit("09312x"), None);
        assert_eq!(gs1_check_digit(""), None);
        assert_eq!(Gtin::under_company_prefix("9312345", 1).unwrap().as_str(), "09312345000012");
        let err = Gtin::under_company_prefix("9312345", 1_000_000).unwrap_err().to_string();
        assert!(err.contains("093123451000000"), "{err}");
        assert!(Gtin::under_company_prefix("93x", 1).is_err());
    }

    #[test]
    fn gtin_error_names_value_and_check_digit() {
        let e = Gtin::parse("12345678901234").unwrap_err();
        assert_eq!(e.to_string(), "gtin \"12345678901234\": check digit is 4, expected 1");
    }

    #[test]
    fn gtin_rejects_bad_length_and_characters() {
        assert_eq!(
            Gtin::parse("1234567").unwrap_err().to_string(),
            "gtin \"1234567\": length is 7, expected 8, 12, 13 or 14 digits"
        );
        assert_eq!(
            Gtin::parse("0690123456789X").unwrap_err().to_string(),
            "gtin \"0690123456789X\": character 'X' at index 13 is not a decimal digit"
        );
        assert!(Gtin::parse("").is_err());
        assert!(Gtin::parse("０6901234567892").is_err());
    }

    #[test]
    fn gtin_company_prefix() {
        let g = gtin("06901234567892");
        assert!(g.company_prefix_matches("6901234"));
        assert!(g.company_prefix_matches("690123456789"));
        assert!(!g.company_prefix_matches("0690123"));
        assert!(!g.company_prefix_matches("6901235"));
        assert!(!g.company_prefix_matches(""));
        assert!(!g.company_prefix_matches("69x"));
        assert!(!g.company_prefix_matches("6901234567892"));
        // Case-level GTIN of the same item, indicator 1.
        assert!(gtin("16901234567899").company_prefix_matches("6901234"));
        // U.P.C. company prefix 614141 is GS1 company prefix 0614141.
        assert!(gtin("614141000036").company_prefix_matches("0614141"));
    }

    #[test]
    fn sscc_validation() {
        assert_eq!(Sscc::parse("106141411234567897").map(|s| s.to_string()), Ok("106141411234567897".to_owned()));
        assert_eq!(
            Sscc::parse("106141411234567890").unwrap_err().to_string(),
            "sscc \"106141411234567890\": check digit is 0, expected 7"
        );
        assert_eq!(
            Sscc::parse("06141411234567897").unwrap_err().to_string(),
            "sscc \"06141411234567897\": length is 17, expected 18 digits"
        );
    }

    #[test]
    fn lot_and_serial_character_set() {
        assert!(Lot::parse("ABC-123/x_y").is_ok());
        assert!(Serial::parse("!\"%&'()*+,-./:;<=>?_").is_ok());
        assert_eq!(
            Lot::parse("AB#C").unwrap_err().to_string(),
            "lot \"AB#C\": character '#' at index 2 is not in the gs1 ai encodable character set 82"
        );
        assert_eq!(
            Serial::parse("a b").unwrap_err(),
            IdError::Serial { value: "a b".to_owned(), reason: Reason::NotCset82 { ch: ' ', index: 1 } }
        );
        assert_eq!(Serial::parse("").unwrap_err().to_string(), "serial \"\": is empty");
        assert_eq!(
            Serial::parse("123456789012345678901").unwrap_err().to_string(),
            "serial \"123456789012345678901\": length is 21, at most 20 allowed"
        );
        assert!(Serial::parse("12345678901234567890").is_ok());
        assert!(Serial::parse("é").is_err());
    }

    #[test]
    fn ecode_ccc_and_custom_parts() {
        assert!(Ecode::parse("1000000000000001").is_ok());
        assert!(Ecode::parse("10000000000000000000000000000001").is_ok());
        assert!(Ecode::parse("100000000000001").is_err());
        assert!(Ecode::parse("100000000000000000000000000000011").is_err());
        assert!(CccNumber::parse("2021010101234567").is_ok());
        assert_eq!(
            CccNumber::parse("2000010101234567").unwrap_err().to_string(),
            "ccc number \"2000010101234567\": year 2000 in the first four digits is outside 2001..=2099"
        );
        assert!(CccNumber::parse("21000101012345678").is_err());
        assert!(SchemeTag::parse("acme-sku2").is_ok());
        assert!(SchemeTag::parse(&"a".repeat(32)).is_ok());
        assert!(SchemeTag::parse(&"a".repeat(33)).is_err());
        assert_eq!(
            SchemeTag::parse("1abc").unwrap_err().to_string(),
            "scheme tag \"1abc\": character '1' at index 0 is not allowed, a scheme tag must match [a-z][a-z0-9-]{0,31}"
        );
        assert!(SchemeTag::parse("Acme").is_err());
        assert!(CustomCode::parse(&"x".repeat(64)).is_ok());
        assert!(CustomCode::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn canonical_forms_print_and_parse() {
        let cases = [
            "01/06901234567892/21/ABC123",
            "01/06901234567892/10/LOT-7",
            "00/106141411234567897",
            "ecode:10000000000000000000000001",
            "ccc:2021010101234567",
            "custom:acme:SKU/42:b",
        ];
        for case in cases {
            let id = subject(case);
            assert_eq!(id.to_string(), case);
        }
        assert_eq!(subject(cases[0]).kind(), SubjectKind::Item);
        assert_eq!(subject(cases[1]).kind(), SubjectKind::Lot);
        assert_eq!(subject(cases[2]).kind(), SubjectKind::LogisticUnit);
        assert_eq!(subject(cases[3]).kind(), SubjectKind::Ecode);
        assert_eq!(subject(cases[4]).kind(), SubjectKind::Ccc);
        assert_eq!(subject(cases[5]).kind(), SubjectKind::Custom);
        assert_eq!(subject(cases[1]).gtin(), Some(&gtin("6901234567892")));
        assert_eq!(subject(cases[2]).gtin(), None);
    }

    #[test]
    fn serial_is_percent_encoded_outside_unreserved() {
        let id = SubjectId::item(gtin("6901234567892"), Serial::parse("a/b%c?d+Z.-_").expect("valid serial"));
        assert_eq!(id.to_string(), "01/06901234567892/21/a%2Fb%25c%3Fd%2BZ.-_");
        assert_eq!(subject(&id.to_string()), id);
        // Lower-case hex and unencoded sub-delimiters from other encoders are accepted.
        assert_eq!(subject("01/06901234567892/21/a%2fb%25c%3fd+Z.-_"), id);
    }

    #[test]
    fn accepts_leading_slash_and_short_gtins() {
        let expected = subject("01/06901234567892/21/S1");
        assert_eq!(subject("/01/06901234567892/21/S1"), expected);
        assert_eq!(subject("01/6901234567892/21/S1"), expected);
        assert_eq!(subject("/01/614141000036/10/L1").to_string(), "01/00614141000036/10/L1");
        assert_eq!(subject("01/96385074/21/1").to_string(), "01/00000096385074/21/1");
    }

    #[test]
    fn accepts_full_digital_link_uris() {
        let expected = subject("01/06901234567892/21/S%2F1");
        assert_eq!(subject("https://id.example.com/01/6901234567892/21/S%2f1"), expected);
        assert_eq!(subject("HTTPS://id.example.com/a/b/01/06901234567892/21/S%2F1?17=260101&x=y#frag"), expected);
        assert_eq!(subject("http://example.org/01/06901234567892/21/S%2F1#top"), expected);
        // A path prefix that itself contains "01" does not confuse the search.
        assert_eq!(subject("https://h/01/x/01/06901234567892/21/S%2F1"), expected);
        // A serial of "01" is a value, not a new primary key.
        assert_eq!(subject("https://h/01/06901234567892/21/01").to_string(), "01/06901234567892/21/01");
        assert_eq!(subject("https://h/00/106141411234567897?x").kind(), SubjectKind::LogisticUnit);
    }

    #[test]
    fn lot_before_serial_yields_item_and_keeps_lot() {
        // The lot is still validated even though the subject drops it.
        assert!(matches!(parse_digital_link("https://h/01/06901234567892/10/L%201x/21/S1"), Err(IdError::Lot { .. })));

        let link = parse_digital_link("/01/06901234567892/10/L%2F1/21/S1").expect("valid link");
        assert_eq!(link.subject, subject("01/06901234567892/21/S1"));
        assert_eq!(link.lot, Some(Lot::parse("L/1").expect("valid lot")));
        assert_eq!(subject("01/06901234567892/10/L1/21/S1"), subject("01/06901234567892/21/S1"));

        let lot_only = parse_digital_link("01/06901234567892/10/L1").expect("valid link");
        assert_eq!(lot_only.subject.kind(), SubjectKind::Lot);
        assert_eq!(lot_only.lot, None);
    }

    fn path_reason(input: &str) -> Reason {
        match input.parse::<SubjectId>() {
            Err(IdError::Path { value, reason }) => {
                assert_eq!(value, input);
                reason
            }
            other => panic!("expected a path error for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_paths_naming_the_segment() {
        assert_eq!(path_reason("01/06901234567892/22/x/21/S1"), Reason::UnknownAi { ai: "22".into() });
        assert_eq!(path_reason("01/06901234567892/10/L1/99/x"), Reason::UnknownAi { ai: "99".into() });
        assert_eq!(path_reason("01/06901234567892/21"), Reason::MissingValue { ai: "21".into() });
        assert_eq!(path_reason("01"), Reason::MissingValue { ai: "01".into() });
        assert_eq!(path_reason("01/06901234567892"), Reason::MissingQualifier);
        assert_eq!(path_reason("01/06901234567892/21/S1/extra"), Reason::TrailingSegment { segment: "extra".into() });
        assert_eq!(path_reason("01/06901234567892/21/S1/10/L1"), Reason::TrailingSegment { segment: "10".into() });
        assert_eq!(path_reason("00/106141411234567897/"), Reason::TrailingSegment { segment: "".into() });
        assert_eq!(path_reason("02/06901234567892"), Reason::NotPrimaryKey { segment: "02".into() });
        assert_eq!(path_reason("01/06901234567892/21/S%2"), Reason::BadEscape { segment: "S%2".into(), index: 1 });
        assert_eq!(path_reason("01/06901234567892/21/%+1"), Reason::BadEscape { segment: "%+1".into(), index: 0 });
        assert_eq!(path_reason("01/06901234567892/21/%FF"), Reason::NotUtf8 { segment: "%FF".into() });
        assert_eq!(path_reason("https://h/p/q?01/06901234567892/21/1"), Reason::NoPrimaryKeyInUri);
        assert_eq!(path_reason("urn:epc:id:sgtin:0614141.812345.6789"), Reason::UnknownScheme { scheme: "urn".into() });
        assert_eq!(path_reason("custom:acme"), Reason::MissingCustomCode);
        assert_eq!(
            "01/06901234567892/21/S1/x".parse::<SubjectId>().unwrap_err().to_string(),
            "subject id \"01/06901234567892/21/S1/x\": unexpected segment \"x\" after the identifier"
        );
    }

    #[test]
    fn part_errors_come_through_subject_parsing() {
        assert!(matches!("01/06901234567893/21/S1".parse::<SubjectId>(), Err(IdError::Gtin { .. })));
        assert!(matches!("01/06901234567892/21/a%20b".parse::<SubjectId>(), Err(IdError::Serial { .. })));
        assert!(matches!("ecode:12".parse::<SubjectId>(), Err(IdError::Ecode { .. })));
        assert!(matches!("custom:Acme:x".parse::<SubjectId>(), Err(IdError::Scheme { .. })));
        assert!(matches!("custom:acme:".parse::<SubjectId>(), Err(IdError::CustomCode { .. })));
    }

    #[test]
    fn serde_uses_canonical_strings() {
        let id = subject("/01/6901234567892/21/a%2Fb");
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(json, "\"01/06901234567892/21/a%2Fb\"");
        let back: SubjectId = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SubjectId>("\"01/06901234567893/21/a\"").is_err());
        assert!(serde_json::from_str::<Gtin>("\"12345678901234\"").is_err());
        // Parsing is lenient, decoding canonical only: one encoding per value.
        for (json, canonical) in [
            ("\"/01/06901234567892/21/a%2Fb\"", "01/06901234567892/21/a%2Fb"),
            ("\"01/6901234567892/21/a%2Fb\"", "01/06901234567892/21/a%2Fb"),
            ("\"01/06901234567892/21/L1-00)042\"", "01/06901234567892/21/L1-00%29042"),
            ("\"01/06901234567892/21/%41\"", "01/06901234567892/21/A"),
        ] {
            let e = serde_json::from_str::<SubjectId>(json).unwrap_err().to_string();
            assert!(e.contains(&format!("is not in canonical form \"{canonical}\"")), "{json}: {e}");
        }
        let e = serde_json::from_str::<Gtin>("\"6901234567892\"").unwrap_err().to_string();
        assert!(e.starts_with("gtin \"6901234567892\" is not in canonical form \"06901234567892\""), "{e}");
        assert_eq!(serde_json::to_string(&SubjectKind::LogisticUnit).expect("serialises"), "\"logistic_unit\"");
    }

    fn range(prefix: &str, start: u64, count: u64, width: u8) -> SerialRange {
        SerialRange { prefix: prefix.to_owned(), start, count, width }
    }

    fn serial(s: &str) -> Serial {
        Serial::parse(s).expect("test serial is valid")
    }

    #[test]
    fn serial_range_validation() {
        assert!(range("A", 0, 1000, 3).validate().is_ok());
        assert!(range("", 0, 1, 20).validate().is_ok());
        assert!(range("", u64::MAX, 1, 20).validate().is_ok());
        assert_eq!(
            range("A", 1, 1000, 3).validate().unwrap_err().to_string(),
            "serial range (prefix \"A\", start 1, count 1000, width 3): last number 1000 has more than 3 digits"
        );
        let reason = |r: SerialRange| match r.validate() {
            Err(IdError::Range { reason, .. }) => reason,
            other => panic!("expected a range error, got {other:?}"),
        };
        assert_eq!(reason(range("A", 0, 0, 3)), Reason::CountZero);
        assert_eq!(
            reason(range("", 0, SERIAL_RANGE_COUNT_MAX + 1, 10)),
            Reason::CountTooLarge { count: SERIAL_RANGE_COUNT_MAX + 1, max: SERIAL_RANGE_COUNT_MAX }
        );
        assert!(range("", 0, SERIAL_RANGE_COUNT_MAX, 10).validate().is_ok());
        assert_eq!(reason(range("A", 0, 1, 0)), Reason::WidthOutOfRange { width: 0 });
        assert_eq!(reason(range("A", 0, 1, 21)), Reason::WidthOutOfRange { width: 21 });
        assert_eq!(reason(range("A B", 0, 1, 3)), Reason::PrefixChar { ch: ' ', index: 1 });
        assert_eq!(reason(range("ABCDEFGHIJ", 0, 1, 11)), Reason::SerialTooLong { prefix_len: 10, width: 11 });
        assert_eq!(reason(range("", u64::MAX, 2, 20)), Reason::LastOverflow { start: u64::MAX, count: 2 });
        assert!(SerialRange::new("A", 5, 10, 3).is_ok());
        assert!(SerialRange::new("A", 995, 10, 3).is_err());
    }

    #[test]
    fn serial_range_members() {
        let r = range("A", 5, 10, 3);
        assert_eq!(r.serial_at(0), Some(serial("A005")));
        assert_eq!(r.serial_at(9), Some(serial("A014")));
        assert_eq!(r.serial_at(10), None);
        assert_eq!(r.last(), Some(serial("A014")));
        assert!(r.contains(&serial("A005")));
        assert!(r.contains(&serial("A014")));
        assert!(!r.contains(&serial("A004")));
        assert!(!r.contains(&serial("A015")));
        assert!(!r.contains(&serial("A05")));
        assert!(!r.contains(&serial("A0005")));
        assert!(!r.contains(&serial("B005")));
        assert!(!r.contains(&serial("A+05")));
        let invalid = range("A", 0, 0, 3);
        assert_eq!(invalid.serial_at(0), None);
        assert_eq!(invalid.last(), None);
        assert!(!invalid.contains(&serial("A000")));
        let wide = range("", u64::MAX - 1, 2, 20);
        assert_eq!(wide.last(), Some(serial(&u64::MAX.to_string())));
        assert!(wide.contains(&serial("18446744073709551615")));
        assert!(!wide.contains(&serial("99999999999999999999")));
    }

    #[test]
    fn serial_range_overlaps() {
        // The example from the design: different prefix and width, shared strings.
        assert!(range("A1", 0, 1000, 3).overlaps(&range("A", 0, 10000, 4)));
        assert!(range("A1", 0, 1, 3).overlaps(&range("A", 1000, 1, 4)));
        assert!(!range("A1", 0, 1000, 3).overlaps(&range("A", 0, 1000, 4)));
        assert!(!range("A1", 0, 1000, 3).overlaps(&range("A", 2000, 1000, 4)));
        assert!(!range("A1", 0, 10, 3).overlaps(&range("A", 0, 10, 3)));
        assert!(!range("AB", 0, 10, 3).overlaps(&range("A", 0, 10000, 4)));
        assert!(range("A", 0, 10, 3).overlaps(&range("A", 9, 10, 3)));
        assert!(!range("A", 0, 10, 3).overlaps(&range("A", 10, 10, 3)));
        assert!(!range("A", 0, 10, 3).overlaps(&range("B", 0, 10, 3)));
        assert!(!range("A", 0, 10, 3).overlaps(&range("A", 0, 10, 0)));
        // 19 fixed digits at the widest: still exact.
        let beyond_u64 = range("1999999999999999999", 9, 1, 1);
        assert!(!beyond_u64.overlaps(&range("", u64::MAX - 9, 10, 20)));
        let at_max = range("1844674407370955161", 5, 1, 1);
        assert!(at_max.overlaps(&range("", u64::MAX - 9, 10, 20)));
    }

    fn brute_force(r: &SerialRange) -> HashSet<String> {
        (0..r.count).filter_map(|i| r.serial_at(i)).map(String::from).collect()
    }

    fn gtin_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{7}".prop_map(|b| with_check_digit(&b)),
            "[0-9]{11}".prop_map(|b| with_check_digit(&b)),
            "[0-9]{12}".prop_map(|b| with_check_digit(&b)),
            "[0-9]{13}".prop_map(|b| with_check_digit(&b)),
        ]
    }

    const AI_VALUE_RE: &str = "[!\"%&'()*+,\\-./0-9:;<=>?A-Z_a-z]{1,20}";
    const CUSTOM_CODE_RE: &str = "[!\"%&'()*+,\\-./0-9:;<=>?A-Z_a-z]{1,64}";

    fn subject_strategy() -> impl Strategy<Value = SubjectId> {
        prop_oneof![
            (gtin_strategy(), AI_VALUE_RE).prop_map(|(g, s)| SubjectId::Item {
                gtin: Gtin::parse(&g).expect("generated gtin is valid"),
                serial: Serial::parse(&s).expect("generated serial is valid"),
            }),
            (gtin_strategy(), AI_VALUE_RE).prop_map(|(g, l)| SubjectId::Lot {
                gtin: Gtin::parse(&g).expect("generated gtin is valid"),
                lot: Lot::parse(&l).expect("generated lot is valid"),
            }),
            "[0-9]{17}".prop_map(|b| SubjectId::LogisticUnit {
                sscc: Sscc::parse(&with_check_digit(&b)).expect("generated sscc is valid"),
            }),
            "[0-9]{16,32}".prop_map(|c| SubjectId::Ecode(Ecode::parse(&c).expect("generated ecode is valid"))),
            (2001u32..=2099, "[0-9]{12}").prop_map(|(y, rest)| SubjectId::Ccc(
                CccNumber::parse(&format!("{y}{rest}")).expect("generated ccc is valid")
            )),
            ("[a-z][a-z0-9-]{0,31}", CUSTOM_CODE_RE).prop_map(|(s, c)| SubjectId::Custom {
                scheme: SchemeTag::parse(&s).expect("generated tag is valid"),
                code: CustomCode::parse(&c).expect("generated code is valid"),
            }),
        ]
    }

    /// Prefixes chosen so that one extends another with digits, which is
    /// where ranges of different prefix and width can share serials.
    const PREFIXES: [&str; 10] = ["", "A", "A1", "A12", "A0", "A10", "A2", "1", "12", "B"];

    fn range_from(prefix: &str, width: u8, raw_start: u64, raw_count: u64) -> SerialRange {
        let capacity = 10u64.pow(u32::from(width));
        let start = raw_start % capacity;
        let count = 1 + raw_count % (capacity - start).min(2000);
        range(prefix, start, count, width)
    }

    fn small_range() -> impl Strategy<Value = SerialRange> {
        (prop::sample::select(&PREFIXES[..]), 1u8..=4, any::<u64>(), any::<u64>())
            .prop_map(|(p, width, s, c)| range_from(p, width, s, c))
    }

    /// Small ranges whose serials all have `total` characters.
    fn range_of_len(total: usize) -> impl Strategy<Value = SerialRange> {
        let prefixes: Vec<&'static str> =
            PREFIXES.into_iter().filter(|p| p.len() < total && total - p.len() <= 4).collect();
        (prop::sample::select(prefixes), any::<u64>(), any::<u64>()).prop_map(move |(p, s, c)| {
            let width = u8::try_from(total - p.len()).expect("at most 4");
            range_from(p, width, s, c)
        })
    }

    /// One range whose prefix extends the other's by 0 to 3 digits, so that
    /// their serials have one length and often meet.
    fn extending_pair() -> impl Strategy<Value = (SerialRange, SerialRange)> {
        let bases = prop::sample::select(&["", "A", "B7"][..]);
        (bases, 1u8..=4, "[0-9]{0,3}", any::<[u64; 4]>(), any::<bool>()).prop_map(
            |(base, width, digits, [s1, c1, s2, c2], swap)| {
                let fixed = digits.get(..digits.len().min(usize::from(width - 1)));
                let fixed = fixed.unwrap_or_default();
                let long_width = width - u8::try_from(fixed.len()).expect("at most 3");
                let short = range_from(base, width, s1, c1);
                let long = range_from(&format!("{base}{fixed}"), long_width, s2, c2);
                if swap { (long, short) } else { (short, long) }
            },
        )
    }

    fn range_pair() -> impl Strategy<Value = (SerialRange, SerialRange)> {
        prop_oneof![
            3 => extending_pair(),
            1 => (2usize..=5).prop_flat_map(|total| (range_of_len(total), range_of_len(total))),
            1 => (small_range(), small_range()),
        ]
    }

    proptest! {
        #[test]
        fn prop_subject_round_trips(id in subject_strategy()) {
            let text = id.to_string();
            prop_assert_eq!(text.parse::<SubjectId>(), Ok(id.clone()));
            let json = serde_json::to_string(&id).expect("serialises");
            prop_assert_eq!(serde_json::from_str::<SubjectId>(&json).ok(), Some(id));
        }

        #[test]
        fn prop_uri_with_lot_parses_to_same_item(
            g in gtin_strategy(),
            serial_text in AI_VALUE_RE,
            lot_text in AI_VALUE_RE,
            host in "[a-z]{1,10}\\.[a-z]{2,3}",
            prefix in "(/[a-z0-9]{1,5}){0,3}",
        ) {
            let gtin = Gtin::parse(&g).expect("generated gtin is valid");
            let serial = Serial::parse(&serial_text).expect("generated serial is valid");
            let lot = Lot::parse(&lot_text).expect("generated lot is valid");
            let uri = format!(
                "https://{host}{prefix}/01/{g}/10/{}/21/{}?linkType=all#f",
                PercentEncoded(lot.as_str()),
                PercentEncoded(serial.as_str()),
            );
            let link = parse_digital_link(&uri);
            prop_assert_eq!(
                link,
                Ok(DigitalLink { subject: SubjectId::item(gtin, serial), lot: Some(lot) })
            );
        }

        #[test]
        fn prop_gtin_single_digit_change_is_rejected(
            g in gtin_strategy(),
            pos in any::<prop::sample::Index>(),
            delta in 1u8..=9,
        ) {
            let mut bytes = g.into_bytes();
            let i = pos.index(bytes.len());
            bytes[i] = b'0' + (bytes[i] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).expect("digits are ascii");
            prop_assert!(Gtin::parse(&changed).is_err());
        }

        #[test]
        fn prop_range_members_are_contained(r in small_range(), probe in any::<u64>()) {
            prop_assert!(r.validate().is_ok());
            let members = brute_force(&r);
            prop_assert_eq!(members.len() as u64, r.count);
            for s in &members {
                prop_assert!(r.contains(&serial(s)));
            }
            let width = usize::from(r.width);
            let n = probe % 10u64.pow(u32::from(r.width));
            let candidate = serial(&format!("{}{n:0width$}", r.prefix));
            prop_assert_eq!(r.contains(&candidate), members.contains(candidate.as_str()));
        }
    }

    proptest! {
        // Shared serials between different prefixes are the rare, subtle
        // case; more cases make sure enough of them are drawn.
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn prop_overlaps_matches_brute_force((a, b) in range_pair()) {
            let shared = !brute_force(&a).is_disjoint(&brute_force(&b));
            prop_assert_eq!(a.overlaps(&b), shared);
            prop_assert_eq!(b.overlaps(&a), shared);
        }
    }
}
