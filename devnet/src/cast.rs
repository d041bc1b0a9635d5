//! The cast of a demo network: the organisations of the seeds' traceability chains, each
//! with a fresh random signing key, and who runs which node.
//!
//! The organisation ids and prefixes are those of `veritrace_ledger::testkit`, so a test
//! written against the fixture reads the same against a devnet; the keys differ (random
//! here, fixed seeds there).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use veritrace_ledger::org::{
    CodePrefix, GENESIS_FORMAT, Genesis, GovernanceRules, KeyId, LedgerId, NodeId, OrgId, OrgKey, Organisation,
    PublicKey, RECORD_TIME_WINDOW_MS_DEFAULT, Role, Validator,
};

use crate::keyfile::{generate_key, read_key_file, write_key_file};

/// The market regulator.
pub const SAMR: &str = "samr";
/// The customs and port regulator of the free-trade zone.
pub const CUSTOMS_PINGTAN: &str = "customs-pingtan";
/// The inspection body that audits and inspects infant formula before shipment.
pub const CCIC_AU: &str = "ccic-au";
/// The provincial inspection institute for building boards.
pub const HUNAN_QI: &str = "hunan-qi";
/// The infant-formula producer.
pub const NUTRI: &str = "nutri";
/// The building-board producer.
pub const BOARDS: &str = "boards";
/// The cross-border importer.
pub const IMPORTER: &str = "importer";
/// The carrier.
pub const LOGISTICS: &str = "logistics";
/// The e-commerce platform.
pub const SHOP: &str = "shop";

/// GS1 company prefix of `nutri`.
pub const NUTRI_GS1_PREFIX: &str = "9312345";
/// GS1 company prefix of `boards`.
pub const BOARDS_GS1_PREFIX: &str = "6901234";

/// The key id every cast organisation signs with.
pub const CAST_KEY_ID: &str = "k1";
/// Distinct regulators that must sign a governance record.
pub const GOVERNANCE_QUORUM: u32 = 2;

/// Organisations that run validators, in the order nodes are handed out: the regulators
/// and inspection bodies, as DESIGN.md §1 has them.
pub const VALIDATOR_OPERATORS: [&str; 4] = [SAMR, CUSTOMS_PINGTAN, CCIC_AU, HUNAN_QI];
/// Organisations that run observers (enterprises' replicas), in order.
pub const OBSERVER_OPERATORS: [&str; 3] = [IMPORTER, SHOP, LOGISTICS];

/// `(id, name, roles, GS1 prefixes, inspection scope)` of every cast organisation.
type OrgSpec = (&'static str, &'static str, &'static [Role], &'static [&'static str], &'static [&'static str]);

const ORGS: [OrgSpec; 9] = [
    (SAMR, "State Administration for Market Regulation", &[Role::Regulator], &[], &[]),
    (CUSTOMS_PINGTAN, "Pingtan Customs (CIQ)", &[Role::Regulator], &[], &[]),
    (CCIC_AU, "CCIC Australia", &[Role::InspectionBody], &[], &["GB 10765", "GB 4806"]),
    (HUNAN_QI, "Hunan Institute of Product Quality Inspection", &[Role::InspectionBody], &[], &["GB/T 4897"]),
    (NUTRI, "Southern Cross Nutrition", &[Role::Producer], &[NUTRI_GS1_PREFIX], &[]),
    (BOARDS, "Xiangjiang Board Co.", &[Role::Producer], &[BOARDS_GS1_PREFIX], &[]),
    (IMPORTER, "Pingtan Import Trading", &[Role::Platform], &[], &[]),
    (LOGISTICS, "Strait Logistics", &[Role::Logistics], &[], &[]),
    (SHOP, "Haixia Cross-border Shop", &[Role::Platform], &[], &[]),
];

/// Whether a node votes in Raft and co-signs checkpoints, or only replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Validator,
    Observer,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Validator => "validator",
            NodeRole::Observer => "observer",
        }
    }
}

/// One node of the genesis with its key.
pub struct CastNode {
    pub node_id: NodeId,
    pub role: NodeRole,
    /// The organisation that operates it.
    pub org: OrgId,
    pub key: SigningKey,
}

/// The organisations with their signing keys.
pub struct Cast {
    organisations: Vec<Organisation>,
    keys: BTreeMap<OrgId, SigningKey>,
}

impl Cast {
    /// The nine organisations of the demo, each with a new random key `k1`, valid from
    /// time 0 without expiry.
    pub fn generate() -> Result<Cast> {
        let mut organisations = Vec::with_capacity(ORGS.len());
        let mut keys = BTreeMap::new();
        for (id, name, roles, prefixes, scope) in ORGS {
            let id = OrgId::new(id).with_context(|| format!("cast organisation id {id:?}"))?;
            let key = generate_key()?;
            let public_key =
                PublicKey::from_bytes(key.verifying_key().to_bytes()).with_context(|| format!("public key of {id}"))?;
            organisations.push(Organisation {
                id: id.clone(),
                name: name.to_string(),
                roles: roles.iter().copied().collect::<BTreeSet<_>>(),
                keys: vec![OrgKey {
                    key_id: KeyId::new(CAST_KEY_ID).context("cast key id")?,
                    public_key,
                    valid_from_ms: 0,
                    valid_until_ms: None,
                    revoked_at_ms: None,
                }],
                code_prefixes: prefixes
                    .iter()
                    .map(|p| CodePrefix { scheme: "gs1".to_string(), prefix: p.to_string() })
                    .collect(),
                inspection_scope: scope.iter().map(|s| s.to_string()).collect(),
            });
            keys.insert(id, key);
        }
        Ok(Cast { organisations, keys })
    }

    /// Reads the organisations' keys of an existing network from `keys_dir` and checks each
    /// against the key the genesis registers for it.
    pub fn load(genesis: &Genesis, keys_dir: &Path) -> Result<Cast> {
        let mut keys = BTreeMap::new();
        for org in &genesis.organisations {
            let path = org_key_path(keys_dir, &org.id);
            let key = read_key_file(&path)?;
            let public = key.verifying_key().to_bytes();
            if !org.keys.iter().any(|k| k.public_key.as_bytes() == &public) {
                bail!("key file {} is not a key of organisation {} in the genesis", path.display(), org.id);
            }
            keys.insert(org.id.clone(), key);
        }
        Ok(Cast { organisations: genesis.organisations.clone(), keys })
    }

    pub fn organisations(&self) -> &[Organisation] {
        &self.organisations
    }

    /// The organisation `id`, if it is in the cast.
    pub fn org(&self, id: &str) -> Option<&Organisation> {
        self.organisations.iter().find(|o| o.id.as_str() == id)
    }

    /// The signing key of organisation `id` (key id [`CAST_KEY_ID`]).
    pub fn key(&self, id: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|(k, _)| k.as_str() == id).map(|(_, v)| v)
    }

    /// Writes `DIR/ORG.key` for every organisation (mode 0600, never overwriting).
    pub fn write_keys(&self, keys_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(keys_dir).with_context(|| format!("create {}", keys_dir.display()))?;
        for (id, key) in &self.keys {
            write_key_file(&org_key_path(keys_dir, id), key)?;
        }
        Ok(())
    }

    /// `validators` validator nodes and `observers` observer nodes with new random keys,
    /// named `node-1`, `node-2`, ... (validators first). Operators are handed out round
    /// robin from [`VALIDATOR_OPERATORS`] and [`OBSERVER_OPERATORS`].
    pub fn nodes(validators: u32, observers: u32) -> Result<Vec<CastNode>> {
        let mut out = Vec::with_capacity((validators + observers) as usize);
        for i in 0..validators + observers {
            let (role, org) = if i < validators {
                (NodeRole::Validator, VALIDATOR_OPERATORS[i as usize % VALIDATOR_OPERATORS.len()])
            } else {
                let j = (i - validators) as usize;
                (NodeRole::Observer, OBSERVER_OPERATORS[j % OBSERVER_OPERATORS.len()])
            };
            let name = node_name(i + 1);
            out.push(CastNode {
                node_id: NodeId::new(name.clone()).with_context(|| format!("node id {name:?}"))?,
                role,
                org: OrgId::new(org).with_context(|| format!("organisation id {org:?}"))?,
                key: generate_key()?,
            });
        }
        Ok(out)
    }

    /// The genesis of a network of this cast and `nodes`, timed `genesis_time_ms`, checked
    /// with [`Genesis::validate`]. The first validator founds the Raft cluster.
    pub fn genesis(&self, ledger_id: &LedgerId, genesis_time_ms: u64, nodes: &[CastNode]) -> Result<Genesis> {
        let entry = |n: &CastNode| -> Result<Validator> {
            Ok(Validator {
                node_id: n.node_id.clone(),
                org: n.org.clone(),
                public_key: PublicKey::from_bytes(n.key.verifying_key().to_bytes())
                    .with_context(|| format!("public key of {}", n.node_id))?,
            })
        };
        let validators =
            nodes.iter().filter(|n| n.role == NodeRole::Validator).map(entry).collect::<Result<Vec<_>>>()?;
        let observers = nodes.iter().filter(|n| n.role == NodeRole::Observer).map(entry).collect::<Result<Vec<_>>>()?;
        let genesis = Genesis {
            format: GENESIS_FORMAT,
            ledger_id: ledger_id.clone(),
            genesis_time_ms,
            organisations: self.organisations.clone(),
            validators,
            observers,
            governance: GovernanceRules { quorum: GOVERNANCE_QUORUM },
            record_time_window_ms: RECORD_TIME_WINDOW_MS_DEFAULT,
        };
        genesis.validate().context("generated genesis does not validate")?;
        Ok(genesis)
    }
}

/// `node-K`, the id and directory name of the K-th node (1-based).
pub fn node_name(k: u32) -> String {
    format!("node-{k}")
}

/// Where organisation `id`'s key lives under a network's `keys/` directory.
pub fn org_key_path(keys_dir: &Path, id: &OrgId) -> PathBuf {
    keys_dir.join(format!("{id}.key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_genesis_validates_and_round_trips() {
        let cast = Cast::generate().expect("cast");
        let nodes = Cast::nodes(5, 4).expect("nodes");
        let ledger = LedgerId::new("devnet-test").expect("ledger id");
        let g = cast.genesis(&ledger, 1_767_225_600_000, &nodes).expect("genesis");
        assert_eq!(Genesis::from_json(&g.to_json()).expect("parse back"), g);
        assert_eq!(g.validators.len(), 5);
        assert_eq!(g.observers.len(), 4);
        assert_eq!(g.governance.quorum, GOVERNANCE_QUORUM);
        assert_eq!(g.record_time_window_ms, RECORD_TIME_WINDOW_MS_DEFAULT);
        let ops: Vec<&str> = g.validators.iter().map(|v| v.org.as_str()).collect();
        assert_eq!(ops, [SAMR, CUSTOMS_PINGTAN, CCIC_AU, HUNAN_QI, SAMR]);
        let obs: Vec<&str> = g.observers.iter().map(|v| v.org.as_str()).collect();
        assert_eq!(obs, [IMPORTER, SHOP, LOGISTICS, IMPORTER]);
        let ids: Vec<&str> = g.validators.iter().chain(&g.observers).map(|v| v.node_id.as_str()).collect();
        assert_eq!(ids, ["node-1", "node-2", "node-3", "node-4", "node-5", "node-6", "node-7", "node-8", "node-9"]);
    }

    #[test]
    fn cast_has_the_roles_prefixes_and_scopes_of_the_seeds() {
        let cast = Cast::generate().expect("cast");
        let org = |id| cast.org(id).unwrap_or_else(|| panic!("no {id}"));
        assert!(org(SAMR).has_role(Role::Regulator) && org(CUSTOMS_PINGTAN).has_role(Role::Regulator));
        assert_eq!(org(CCIC_AU).inspection_scope, ["GB 10765", "GB 4806"]);
        assert_eq!(org(HUNAN_QI).inspection_scope, ["GB/T 4897"]);
        assert_eq!(org(NUTRI).code_prefixes, [CodePrefix { scheme: "gs1".into(), prefix: NUTRI_GS1_PREFIX.into() }]);
        assert_eq!(org(BOARDS).code_prefixes, [CodePrefix { scheme: "gs1".into(), prefix: BOARDS_GS1_PREFIX.into() }]);
        assert!(org(IMPORTER).has_role(Role::Platform) && org(SHOP).has_role(Role::Platform));
        assert!(org(LOGISTICS).has_role(Role::Logistics));
        // Keys are random and distinct.
        let mut seen = BTreeSet::new();
        for o in cast.organisations() {
            assert!(seen.insert(o.keys[0].public_key.to_hex()), "repeated key for {}", o.id);
            let key = cast.key(o.id.as_str()).expect("key");
            assert_eq!(key.verifying_key().to_bytes(), *o.keys[0].public_key.as_bytes());
        }
    }

    #[test]
    fn keys_written_then_loaded_match_the_genesis() {
        let dir = crate::testdir::TestDir::new("cast-keys");
        let cast = Cast::generate().expect("cast");
        let nodes = Cast::nodes(1, 0).expect("nodes");
        let g = cast.genesis(&LedgerId::new("l").expect("id"), 1, &nodes).expect("genesis");
        cast.write_keys(dir.path()).expect("write keys");
        let loaded = Cast::load(&g, dir.path()).expect("load");
        for o in cast.organisations() {
            let id = o.id.as_str();
            assert_eq!(loaded.key(id).expect("key").to_bytes(), cast.key(id).expect("key").to_bytes());
        }
        // A key of another network is refused.
        let other = Cast::generate().expect("cast");
        let g2 = other.genesis(&LedgerId::new("l").expect("id"), 1, &nodes).expect("genesis");
        assert!(Cast::load(&g2, dir.path()).is_err());
    }
}
