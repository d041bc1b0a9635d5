//! Organisations, their roles and keys, validators, and the genesis file.
//!
//! Every record is signed by an organisation's key. What an organisation may do is
//! decided by its roles, its code prefixes (producers) and its inspection scope
//! (inspection bodies). The genesis file fixes the first set of organisations, the
//! validators that co-sign checkpoints, and the governance quorum; governance records
//! change them later. See docs/ledger.md for the file format.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::hash::Hash32;

/// Longest organisation id, key id or node id, in bytes.
pub const NAME_ID_BYTES_MAX: usize = 64;
/// Most keys an organisation may hold at once (valid or revoked).
pub const ORG_KEYS_MAX: usize = 32;
/// Most code prefixes or scope entries an organisation may hold.
pub const ORG_LIST_MAX: usize = 256;

/// Errors in organisation, key and genesis data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    #[error("{what} {value:?}: {reason}")]
    BadId { what: &'static str, value: String, reason: &'static str },
    #[error("public key {key_hex}: {reason}")]
    BadKey { key_hex: String, reason: String },
    #[error("organisation {org:?}: {reason}")]
    BadOrg { org: String, reason: String },
    #[error("genesis: {0}")]
    Genesis(String),
}

/// An identifier of the shape shared by organisations, keys, nodes and ledgers:
/// 1..=64 bytes of `[a-z0-9._-]`, starting with a letter or digit.
fn check_name_id(what: &'static str, s: &str) -> Result<(), OrgError> {
    let bad = |reason| OrgError::BadId { what, value: s.to_string(), reason };
    if s.is_empty() {
        return Err(bad("must not be empty"));
    }
    if s.len() > NAME_ID_BYTES_MAX {
        return Err(bad("longer than 64 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
        return Err(bad("only a-z, 0-9, '.', '_' and '-' are allowed"));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, OrgError> {
                let s = s.into();
                check_name_id($what, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = OrgError;
            fn from_str(s: &str) -> Result<Self, OrgError> {
                Self::new(s)
            }
        }
    };
}

name_id!(
    /// The id of an organisation, e.g. `samr-guangdong`.
    OrgId,
    "organisation id"
);
name_id!(
    /// The id of one of an organisation's signing keys, e.g. `k1`.
    KeyId,
    "key id"
);
name_id!(
    /// The id of a validator or observer node, e.g. `node-1`.
    NodeId,
    "node id"
);
name_id!(
    /// The id of a ledger; it is in every signed message and every storage key, so one
    /// process can hold several ledgers (DESIGN.md §9).
    LedgerId,
    "ledger id"
);

/// What an organisation may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Market or customs regulator: regulatory actions, governance approvals.
    Regulator,
    /// Accredited inspection or testing body: inspection reports within its scope.
    InspectionBody,
    /// Maker or brand owner: issues codes under its prefixes, certifies its lots.
    Producer,
    /// E-commerce platform or seller.
    Platform,
    /// Carrier or warehouse.
    Logistics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Regulator => "regulator",
            Role::InspectionBody => "inspection_body",
            Role::Producer => "producer",
            Role::Platform => "platform",
            Role::Logistics => "logistics",
        }
    }
}

/// An ed25519 public key, checked when it is registered: not a weak (small-order) point,
/// because batch verification skips that check (DEVELOPERS.md, "Traps").
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, OrgError> {
        let bad = |reason: &str| OrgError::BadKey { key_hex: hex::encode(bytes), reason: reason.to_string() };
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid ed25519 point"))?;
        if vk.is_weak() {
            return Err(bad("weak key (small-order point) refused"));
        }
        Ok(PublicKey(bytes))
    }

    pub fn from_hex(s: &str) -> Result<Self, OrgError> {
        let v =
            hex::decode(s).map_err(|e| OrgError::BadKey { key_hex: s.to_string(), reason: format!("not hex: {e}") })?;
        let a: [u8; 32] = v.try_into().map_err(|v: Vec<u8>| OrgError::BadKey {
            key_hex: s.to_string(),
            reason: format!("must be 32 bytes, got {}", v.len()),
        })?;
        Self::from_bytes(a)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The dalek key. Cannot fail: the bytes were checked on construction.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_bytes(&self.0).expect("public key bytes were validated on construction")
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hash32(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let h = Hash32::deserialize(d)?;
        PublicKey::from_bytes(h.0).map_err(serde::de::Error::custom)
    }
}

/// One signing key of an organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgKey {
    pub key_id: KeyId,
    pub public_key: PublicKey,
    /// First record time (unix ms) the key may sign.
    pub valid_from_ms: u64,
    /// Record times at or after this are refused; `None` = no expiry.
    pub valid_until_ms: Option<u64>,
    /// Set by a revoke governance record to the block time it was applied at: records
    /// applied later are refused, and an auditor accepts only records timed before it.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

impl OrgKey {
    /// Whether this key may sign a record timed `time_ms`.
    pub fn valid_at(&self, time_ms: u64) -> bool {
        time_ms >= self.valid_from_ms
            && self.valid_until_ms.is_none_or(|u| time_ms < u)
            && self.revoked_at_ms.is_none_or(|r| time_ms < r)
    }

    /// Why this key of `author` may not sign a record timed `time_ms` now, if it may not:
    /// it is revoked (for any record applied from now on), or the time is outside its
    /// validity. The one wording of the rule, for apply and the submit precheck alike.
    pub fn refusal(&self, author: &OrgId, time_ms: u64) -> Option<String> {
        if self.revoked_at_ms.is_some() {
            Some(format!("key {} of {author} is revoked", self.key_id))
        } else if !self.valid_at(time_ms) {
            Some(format!("key {} of {author} is not valid at record time {time_ms} ms", self.key_id))
        } else {
            None
        }
    }
}

/// A prefix under which a producer may issue codes, e.g. scheme `gs1` prefix `9312345`
/// (a GS1 company prefix), or scheme `ecode` prefix `10012`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CodePrefix {
    pub scheme: String,
    pub prefix: String,
}

/// An organisation as the ledger knows it: from genesis, then governance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: OrgId,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub keys: Vec<OrgKey>,
    /// Producers: the prefixes they may issue codes under.
    #[serde(default)]
    pub code_prefixes: Vec<CodePrefix>,
    /// Inspection bodies: the standards they are accredited to test against. A report's
    /// standard must start with one of these (so `GB 10765` covers `GB 10765-2021`).
    #[serde(default)]
    pub inspection_scope: Vec<String>,
}

impl Organisation {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn key(&self, key_id: &KeyId) -> Option<&OrgKey> {
        self.keys.iter().find(|k| &k.key_id == key_id)
    }

    /// Checks the organisation's own shape: a name, at least one role, unique key ids,
    /// bounded lists, prefixes only for producers and scope only for inspection bodies.
    pub fn validate(&self) -> Result<(), OrgError> {
        let bad = |reason: String| OrgError::BadOrg { org: self.id.to_string(), reason };
        if self.name.trim().is_empty() || self.name.len() > 256 {
            return Err(bad(format!("name {:?} must be 1..=256 bytes", self.name)));
        }
        if self.roles.is_empty() {
            return Err(bad("has no role".into()));
        }
        if self.keys.len() > ORG_KEYS_MAX {
            return Err(bad(format!("has {} keys, at most {ORG_KEYS_MAX} allowed", self.keys.len())));
        }
        let mut ids = BTreeSet::new();
        for k in &self.keys {
            if !ids.insert(&k.key_id) {
                return Err(bad(format!("key id {:?} appears twice", k.key_id.as_str())));
            }
        }
        if self.code_prefixes.len() > ORG_LIST_MAX || self.inspection_scope.len() > ORG_LIST_MAX {
            return Err(bad(format!("more than {ORG_LIST_MAX} code prefixes or scope entries")));
        }
        if !self.code_prefixes.is_empty() && !self.has_role(Role::Producer) {
            return Err(bad("code prefixes are only for producers".into()));
        }
        for p in &self.code_prefixes {
            if p.prefix.is_empty() || p.prefix.len() > 32 || !p.prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad(format!("code prefix {:?} must be 1..=32 letters or digits", p.prefix)));
            }
            if p.scheme.is_empty()
                || p.scheme.len() > 32
                || !p.scheme.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad(format!("code scheme {:?} must be 1..=32 of a-z, 0-9, '-'", p.scheme)));
            }
        }
        if !self.inspection_scope.is_empty() && !self.has_role(Role::InspectionBody) {
            return Err(bad("an inspection scope is only for inspection bodies".into()));
        }
        if self.inspection_scope.iter().any(|s| s.trim().is_empty() || s.len() > 128) {
            return Err(bad("inspection scope entries must be 1..=128 bytes".into()));
        }
        Ok(())
    }
}

/// A Raft voter that co-signs checkpoints. Its public key is also its libp2p identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub node_id: NodeId,
    pub org: OrgId,
    pub public_key: PublicKey,
}

/// The validators whose signatures make a checkpoint trustworthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ValidatorSet {
    pub validators: Vec<Validator>,
}

impl ValidatorSet {
    /// Signatures needed for a complete checkpoint: a strict majority of the validators,
    /// each counted signature from a different organisation, so neither a lying leader
    /// nor one organisation running several nodes can make one alone.
    pub fn quorum(&self) -> u32 {
        (self.validators.len() as u32) / 2 + 1
    }

    pub fn get(&self, node_id: &NodeId) -> Option<&Validator> {
        self.validators.iter().find(|v| &v.node_id == node_id)
    }
}

/// Governance settings: how many distinct regulators must sign a governance record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceRules {
    pub quorum: u32,
}

/// Current format version of the genesis file.
pub const GENESIS_FORMAT: u32 = 1;
/// Default window between a record's own time and the time of the block that applies it.
pub const RECORD_TIME_WINDOW_MS_DEFAULT: u64 = 10 * 60 * 1000;

fn default_window() -> u64 {
    RECORD_TIME_WINDOW_MS_DEFAULT
}

/// The genesis file (JSON; format in docs/ledger.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub format: u32,
    pub ledger_id: LedgerId,
    /// Time of the genesis (unix ms); block times start after it.
    pub genesis_time_ms: u64,
    pub organisations: Vec<Organisation>,
    pub validators: Vec<Validator>,
    /// Nodes that replicate the ledger and serve reads but do not vote (enterprises'
    /// replicas); same shape as validators. Their keys are admitted as network peers.
    #[serde(default)]
    pub observers: Vec<Validator>,
    pub governance: GovernanceRules,
    /// A record's time may differ from its block's time by at most this much.
    #[serde(default = "default_window")]
    pub record_time_window_ms: u64,
}

impl Genesis {
    pub fn from_json(s: &str) -> Result<Genesis, OrgError> {
        let g: Genesis = serde_json::from_str(s).map_err(|e| OrgError::Genesis(format!("bad json: {e}")))?;
        g.validate()?;
        Ok(g)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serialises to json")
    }

    /// blake3 of the genesis' canonical bytes: the `prev_hash` of block 1, so two ledgers
    /// with the same id but different genesis never share a chain.
    pub fn hash(&self) -> Hash32 {
        crate::codec::domain_hash(crate::codec::Domain::Genesis, &crate::codec::encode(self))
    }

    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet { validators: self.validators.clone() }
    }

    pub fn org(&self, id: &OrgId) -> Option<&Organisation> {
        self.organisations.iter().find(|o| &o.id == id)
    }

    pub fn validate(&self) -> Result<(), OrgError> {
        let bad = |m: String| Err(OrgError::Genesis(m));
        if self.format != GENESIS_FORMAT {
            return bad(format!("format {} is not supported (expected {GENESIS_FORMAT})", self.format));
        }
        let mut ids = BTreeSet::new();
        for o in &self.organisations {
            o.validate()?;
            if !ids.insert(&o.id) {
                return bad(format!("organisation {:?} appears twice", o.id.as_str()));
            }
        }
        if self.validators.is_empty() {
            return bad("no validators".into());
        }
        let mut nodes = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for v in &self.validators {
            if !ids.contains(&v.org) {
                return bad(format!(
                    "validator {:?} names unknown organisation {:?}",
                    v.node_id.as_str(),
                    v.org.as_str()
                ));
            }
            if !nodes.insert(&v.node_id) || !keys.insert(v.public_key.0) {
                return bad(format!("validator {:?} repeats a node id or key", v.node_id.as_str()));
            }
        }
        let regulators = self.organisations.iter().filter(|o| o.has_role(Role::Regulator)).count() as u32;
        if self.governance.quorum == 0 || self.governance.quorum > regulators {
            return bad(format!(
                "governance quorum {} must be between 1 and the number of regulators ({regulators})",
                self.governance.quorum
            ));
        }
        if self.record_time_window_ms == 0 {
            return bad("record_time_window_ms must be positive".into());
        }
        Ok(())
    }
}
