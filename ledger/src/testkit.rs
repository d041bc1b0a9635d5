//! A deterministic cast of organisations, keys and a genesis for tests, benchmarks and
//! golden vectors. Keys come from fixed seeds: never use them for a real ledger.

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;

use crate::block::{Block, BlockHeader, Checkpoint};
use crate::ids::{Gtin, Lot, SerialRange, SubjectId};
use crate::kv::MemBackend;
use crate::org::{
    CodePrefix, GENESIS_FORMAT, Genesis, GovernanceRules, KeyId, LedgerId, NodeId, OrgId, OrgKey, Organisation,
    PublicKey, Role, Validator,
};
use crate::record::{
    CodeSet, InspectionReport, IssueCodes, Product, Record, RecordBody, SignedRecord, TestItem, Verdict,
};
use crate::store::{OpenOptions, Store};

/// GS1's EPCIS 2.0 schema and example documents: `shared/epcis` beside the clone (never
/// copied into the project). Panics, naming the path, if they are missing.
pub fn shared_epcis_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/epcis");
    assert!(
        dir.join("EPCIS-JSON-Schema.json").is_file(),
        "GS1's EPCIS 2.0 schema and examples are missing: expected {}/EPCIS-JSON-Schema.json and \
         Example_9.6.*.jsonld (the shared/ folder beside the clone)",
        dir.display()
    );
    dir
}

/// A Python with jsonschema: `$VERITRACE_PYTHON`, else `python3`, else `/usr/bin/python3`.
fn python_with_jsonschema() -> String {
    let candidates: Vec<String> = match std::env::var("VERITRACE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for p in &candidates {
        let ok =
            std::process::Command::new(p).args(["-c", "import jsonschema"]).output().is_ok_and(|o| o.status.success());
        if ok {
            return p.clone();
        }
    }
    panic!(
        "no Python with the jsonschema module among {candidates:?}: install the Debian package python3-jsonschema \
         (scripts/setup.sh does), or name a Python in VERITRACE_PYTHON"
    )
}

/// Asserts that the EPCIS document in `path` is valid against GS1's EPCIS 2.0 JSON schema
/// (`scripts/epcis_validate.py`, which also checks the `uri` and `date-time` formats).
pub fn assert_valid_epcis(path: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/epcis_validate.py");
    let out = std::process::Command::new(python_with_jsonschema())
        .arg(&script)
        .arg(shared_epcis_dir().join("EPCIS-JSON-Schema.json"))
        .arg(path)
        .output()
        .expect("run scripts/epcis_validate.py");
    assert!(
        out.status.success(),
        "{} is not valid EPCIS 2.0:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Genesis time of the fixture ledger: 2026-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_767_225_600_000;

/// A key derived from a seed string.
pub fn key(seed: &str) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(seed.as_bytes()).as_bytes())
}

/// A GTIN-14 under `company_prefix` (indicator 0) with the given item reference.
pub fn gtin(company_prefix: &str, item_ref: u32) -> Gtin {
    Gtin::under_company_prefix(company_prefix, item_ref).expect("fixture gtin is valid")
}

/// One organisation of the cast with its signing key.
pub struct Member {
    pub id: OrgId,
    pub key_id: KeyId,
    pub key: SigningKey,
}

/// The cast: two regulators, two inspection bodies, two producers, an importer, a
/// logistics firm and a platform; three validators run by the regulators and one
/// inspection body.
pub struct Fixture {
    pub genesis: Genesis,
    pub members: Vec<Member>,
    pub validator_keys: Vec<(NodeId, SigningKey)>,
}

/// Company prefix of the infant-formula producer (`nutri`).
pub const NUTRI_PREFIX: &str = "9312345";
/// Company prefix of the building-board producer (`boards`).
pub const BOARDS_PREFIX: &str = "6901234";

fn org(id: &str, name: &str, roles: &[Role], prefixes: &[&str], scope: &[&str]) -> Organisation {
    Organisation {
        id: OrgId::new(id).expect("fixture id"),
        name: name.into(),
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        keys: vec![OrgKey {
            key_id: KeyId::new("k1").expect("fixture key id"),
            public_key: PublicKey::from_bytes(key(id).verifying_key().to_bytes()).expect("fixture key"),
            valid_from_ms: 0,
            valid_until_ms: None,
            revoked_at_ms: None,
        }],
        code_prefixes: prefixes.iter().map(|p| CodePrefix { scheme: "gs1".into(), prefix: p.to_string() }).collect(),
        inspection_scope: scope.iter().map(|s| s.to_string()).collect(),
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        use Role::*;
        let orgs = vec![
            org("samr", "State Administration for Market Regulation", &[Regulator], &[], &[]),
            org("customs-pingtan", "Pingtan Customs (CIQ)", &[Regulator], &[], &[]),
            org("ccic-au", "CCIC Australia", &[InspectionBody], &[], &["GB 10765", "GB 4806"]),
            org("hunan-qi", "Hunan Institute of Product Quality Inspection", &[InspectionBody], &[], &["GB/T 4897"]),
            org("nutri", "Southern Cross Nutrition", &[Producer], &[NUTRI_PREFIX], &[]),
            org("boards", "Xiangjiang Board Co.", &[Producer], &[BOARDS_PREFIX], &[]),
            org("importer", "Pingtan Import Trading", &[Platform], &[], &[]),
            org("logistics", "Strait Logistics", &[Logistics], &[], &[]),
            org("shop", "Haixia Cross-border Shop", &[Platform], &[], &[]),
        ];
        let members = orgs
            .iter()
            .map(|o| Member { id: o.id.clone(), key_id: KeyId::new("k1").expect("id"), key: key(o.id.as_str()) })
            .collect();
        let validator_keys: Vec<(NodeId, SigningKey)> = ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| (NodeId::new(*n).expect("node id"), key(&format!("validator/{n}"))))
            .collect();
        let validators = validator_keys
            .iter()
            .zip(["samr", "customs-pingtan", "ccic-au"])
            .map(|((n, k), o)| Validator {
                node_id: n.clone(),
                org: OrgId::new(o).expect("org"),
                public_key: PublicKey::from_bytes(k.verifying_key().to_bytes()).expect("key"),
            })
            .collect();
        let genesis = Genesis {
            format: GENESIS_FORMAT,
            ledger_id: LedgerId::new("veritrace-test").expect("ledger id"),
            genesis_time_ms: T0_MS,
            organisations: orgs,
            validators,
            observers: vec![],
            governance: GovernanceRules { quorum: 2 },
            record_time_window_ms: crate::org::RECORD_TIME_WINDOW_MS_DEFAULT,
        };
        genesis.validate().expect("fixture genesis is valid");
        Fixture { genesis, members, validator_keys }
    }

    pub fn ledger(&self) -> &LedgerId {
        &self.genesis.ledger_id
    }

    pub fn member(&self, id: &str) -> &Member {
        self.members.iter().find(|m| m.id.as_str() == id).unwrap_or_else(|| panic!("no fixture member {id}"))
    }

    pub fn org_id(&self, id: &str) -> OrgId {
        self.member(id).id.clone()
    }

    /// A record by `author` at `time_ms`, signed with its key.
    pub fn sign(&self, author: &str, time_ms: u64, body: RecordBody) -> SignedRecord {
        self.sign_nonce(author, time_ms, 0, body)
    }

    pub fn sign_nonce(&self, author: &str, time_ms: u64, nonce: u64, body: RecordBody) -> SignedRecord {
        let m = self.member(author);
        let record = Record { author: m.id.clone(), key_id: m.key_id.clone(), time_ms, nonce, body };
        SignedRecord::sign(self.ledger(), record, &m.key)
    }

    pub fn block(&self, height: u64, time_ms: u64, records: Vec<SignedRecord>) -> Block {
        Block { height, time_ms, proposer: self.validator_keys[0].0.clone(), records }
    }

    /// A fresh in-memory store at genesis.
    pub fn mem_store(&self) -> Store<MemBackend> {
        Store::create(MemBackend::default(), &self.genesis, OpenOptions::default()).expect("genesis store")
    }

    /// A checkpoint for `header` signed by every validator.
    pub fn checkpoint(&self, header: &BlockHeader) -> Checkpoint {
        let signatures = self.validator_keys.iter().map(|(n, k)| header.sign(n.clone(), k)).collect();
        Checkpoint { header: header.clone(), signatures }
    }

    /// Infant formula product of `nutri`.
    pub fn formula(&self) -> Product {
        Product {
            gtin: gtin(NUTRI_PREFIX, 1),
            name: "Infant formula stage 1, 900 g".into(),
            model: "S1-900".into(),
            spec: "900 g tin".into(),
            standard: "GB 10765-2021".into(),
        }
    }

    /// An issuance of `count` formula tins in lot `lot`, serials `{lot}-000000`...
    pub fn issue_range(&self, lot: &str, count: u64) -> RecordBody {
        RecordBody::IssueCodes(IssueCodes {
            product: self.formula(),
            lot: Lot::parse(lot).expect("fixture lot"),
            production_date: "2026-01-10".into(),
            expiry_date: Some("2028-01-09".into()),
            codes: CodeSet::Range(SerialRange { prefix: format!("{lot}-"), start: 0, count, width: 6 }),
            factory: "Melbourne, VIC".into(),
        })
    }

    /// A passed inspection of `subjects` against the formula's standard by ccic-au's
    /// laboratory, report number `n` (its document digest derived from `n`).
    pub fn passed_inspection(&self, subjects: Vec<SubjectId>, n: u64) -> RecordBody {
        RecordBody::Inspection(InspectionReport {
            subjects,
            report_no: format!("CCIC-AU-2026-{n:08}"),
            standard: "GB 10765-2021".into(),
            result: Verdict::Pass,
            test_items: vec![TestItem {
                name: "protein".into(),
                requirement: "1.8-3.0 g/100 kcal".into(),
                measured: "2.2 g/100 kcal".into(),
                verdict: Verdict::Pass,
            }],
            document_digest: crate::hash::Hash32(*blake3::hash(&n.to_be_bytes()).as_bytes()),
            valid_until_ms: None,
        })
    }

    pub fn lot_id(&self, lot: &str) -> SubjectId {
        SubjectId::lot_of(gtin(NUTRI_PREFIX, 1), Lot::parse(lot).expect("fixture lot"))
    }

    /// Item `i` of a range issued by [`Fixture::issue_range`].
    pub fn item(&self, lot: &str, i: u64) -> SubjectId {
        let serial = format!("{lot}-{i:06}");
        SubjectId::item(gtin(NUTRI_PREFIX, 1), crate::ids::Serial::parse(&serial).expect("fixture serial"))
    }
}
