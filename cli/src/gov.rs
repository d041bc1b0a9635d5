//! `veritrace gov ...`: governance records. The author must be a regulator; the ledger
//! counts the author and every `--approve` co-signer (distinct regulators, each with a
//! valid key) against the genesis governance quorum.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use veritrace_ledger::org::{CodePrefix, KeyId, NodeId, OrgId, OrgKey, Organisation, PublicKey, Role, Validator};
use veritrace_ledger::record::{GovernanceAction, RecordBody};

use crate::exit::{Failure, OrExit};
use crate::output::Out;

/// Digits of a GS1 company prefix.
const GS1_COMPANY_PREFIX_DIGITS: std::ops::RangeInclusive<usize> = 4..=12;
use crate::records::{Cosigner, SignArgs, submit_record};

/// What every governance command takes: the author and the co-signers.
#[derive(Args)]
pub struct GovCommon {
    #[command(flatten)]
    sign: SignArgs,
    /// A co-signing regulator's key file and organisation, KEYFILE:ORG or KEYFILE:ORG:KEYID
    /// (key id default k1). Repeat until the governance quorum is met.
    #[arg(long = "approve", value_name = "KEYFILE:ORG[:KEYID]", value_parser = parse_approver)]
    approve: Vec<Approver>,
}

/// A co-signer as given on the command line; its key is read after parsing.
#[derive(Clone, Debug)]
pub struct Approver {
    file: PathBuf,
    org: OrgId,
    key_id: KeyId,
}

fn parse_approver(s: &str) -> Result<Approver, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (file, org, key_id) = match parts.as_slice() {
        [file, org] => (*file, *org, "k1"),
        [file, org, key_id] => (*file, *org, *key_id),
        _ => return Err(format!("approval {s:?} must be KEYFILE:ORG or KEYFILE:ORG:KEYID")),
    };
    if file.is_empty() {
        return Err(format!("approval {s:?} names no key file"));
    }
    let org = OrgId::new(org).map_err(|e| format!("approval {s:?}: {e}"))?;
    let key_id = KeyId::new(key_id).map_err(|e| format!("approval {s:?}: {e}"))?;
    Ok(Approver { file: file.into(), org, key_id })
}

/// An organisation's name, roles, code prefixes and scope.
#[derive(Args)]
pub struct OrgFields {
    /// The organisation's id ([a-z0-9._-], 1-64 bytes).
    id: OrgId,
    #[arg(long)]
    name: String,
    /// regulator, inspection_body, producer, platform or logistics (repeatable).
    #[arg(long = "role", value_name = "ROLE", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
    /// A code prefix the producer may issue under, `[SCHEME:]PREFIX`; the scheme defaults to
    /// gs1 (a GS1 company prefix). Repeatable.
    #[arg(long = "prefix", value_name = "[SCHEME:]PREFIX", value_parser = parse_prefix)]
    prefixes: Vec<CodePrefix>,
    /// A standard (prefix) the inspection body is accredited for (repeatable).
    #[arg(long = "scope", value_name = "STANDARD")]
    scope: Vec<String>,
}

/// A key to register.
#[derive(Args)]
pub struct NewKey {
    /// The public key, 64 hex digits (`veritrace key show FILE`).
    #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
    public_key: PublicKey,
    /// The key's id within the organisation.
    #[arg(long, value_name = "ID", default_value = "k1")]
    new_key_id: KeyId,
    /// First record time (unix ms) the key may sign.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    valid_from_ms: u64,
    /// Records timed at or after this (unix ms) are refused.
    #[arg(long, value_name = "MS")]
    valid_until_ms: Option<u64>,
}

impl NewKey {
    fn org_key(&self) -> OrgKey {
        OrgKey {
            key_id: self.new_key_id.clone(),
            public_key: self.public_key,
            valid_from_ms: self.valid_from_ms,
            valid_until_ms: self.valid_until_ms,
            revoked_at_ms: None,
        }
    }
}

#[derive(Subcommand)]
pub enum GovCmd {
    /// Add an organisation with its first key.
    AddOrg {
        #[command(flatten)]
        common: GovCommon,
        #[command(flatten)]
        org: OrgFields,
        #[command(flatten)]
        key: NewKey,
    },
    /// Replace an organisation's name, roles, prefixes and scope (keys stay as they are).
    UpdateOrg {
        #[command(flatten)]
        common: GovCommon,
        #[command(flatten)]
        org: OrgFields,
    },
    /// Register another key of an organisation (rotation: add the new, then revoke the old).
    AddKey {
        #[command(flatten)]
        common: GovCommon,
        /// The organisation.
        org: OrgId,
        #[command(flatten)]
        key: NewKey,
    },
    /// Revoke a key: records applied after this are refused.
    RevokeKey {
        #[command(flatten)]
        common: GovCommon,
        /// The organisation.
        org: OrgId,
        /// The key id to revoke.
        revoked_key_id: KeyId,
    },
    /// Add a validator node (it votes in Raft and co-signs checkpoints).
    AddValidator {
        #[command(flatten)]
        common: GovCommon,
        node_id: NodeId,
        /// The organisation that runs it.
        #[arg(long, value_name = "ORG")]
        org: OrgId,
        /// The node's public key, 64 hex digits (`veritrace key show NODE_KEY_FILE`).
        #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
        public_key: PublicKey,
    },
    /// Remove a validator node.
    RemoveValidator {
        #[command(flatten)]
        common: GovCommon,
        node_id: NodeId,
    },
}

pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    const ROLES: [Role; 5] = [Role::Regulator, Role::InspectionBody, Role::Producer, Role::Platform, Role::Logistics];
    ROLES.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = ROLES.iter().map(|r| r.as_str()).collect();
        format!("role {s:?} is not one of {}", names.join(", "))
    })
}

/// `[SCHEME:]PREFIX`, GS1 when no scheme is named; a GS1 company prefix is 4 to 12 digits.
pub(crate) fn parse_prefix(s: &str) -> Result<CodePrefix, String> {
    let (scheme, prefix) = s.split_once(':').unwrap_or(("gs1", s));
    let digits = GS1_COMPANY_PREFIX_DIGITS;
    if scheme == "gs1" && !(prefix.bytes().all(|b| b.is_ascii_digit()) && digits.contains(&prefix.len())) {
        return Err(format!("gs1 company prefix {prefix:?} must be {} to {} digits", digits.start(), digits.end()));
    }
    Ok(CodePrefix { scheme: scheme.to_string(), prefix: prefix.to_string() })
}

pub(crate) fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s).map_err(|e| e.to_string())
}

impl OrgFields {
    fn organisation(&self, keys: Vec<OrgKey>) -> Organisation {
        Organisation {
            id: self.id.clone(),
            name: self.name.clone(),
            roles: self.roles.iter().copied().collect::<BTreeSet<_>>(),
            keys,
            code_prefixes: self.prefixes.clone(),
            inspection_scope: self.scope.clone(),
        }
    }
}

pub fn run(cmd: &GovCmd, out: &Out) -> Result<(), Failure> {
    let (common, action) = match cmd {
        GovCmd::AddOrg { common, org, key } => {
            (common, GovernanceAction::AddOrganisation(org.organisation(vec![key.org_key()])))
        }
        GovCmd::UpdateOrg { common, org } => (common, GovernanceAction::UpdateOrganisation(org.organisation(vec![]))),
        GovCmd::AddKey { common, org, key } => {
            (common, GovernanceAction::AddKey { org: org.clone(), key: key.org_key() })
        }
        GovCmd::RevokeKey { common, org, revoked_key_id } => {
            (common, GovernanceAction::RevokeKey { org: org.clone(), key_id: revoked_key_id.clone() })
        }
        GovCmd::AddValidator { common, node_id, org, public_key } => (
            common,
            GovernanceAction::AddValidator(Validator {
                node_id: node_id.clone(),
                org: org.clone(),
                public_key: *public_key,
            }),
        ),
        GovCmd::RemoveValidator { common, node_id } => {
            (common, GovernanceAction::RemoveValidator { node_id: node_id.clone() })
        }
    };
    let cosigners = common
        .approve
        .iter()
        .map(|a| {
            let key = veritrace_devnet::keyfile::read_key_file(&a.file)
                .with_context(|| format!("approval of {}", a.org))
                .or_bad_input()?;
            Ok(Cosigner { org: a.org.clone(), key_id: a.key_id.clone(), key })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    submit_record(&common.sign, RecordBody::Governance(action), cosigners, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_name_a_file_an_org_and_optionally_a_key_id() {
        let a = parse_approver("keys/customs.key:customs-pingtan").unwrap();
        assert_eq!(
            (a.file.to_str().unwrap(), a.org.as_str(), a.key_id.as_str()),
            ("keys/customs.key", "customs-pingtan", "k1")
        );
        let a = parse_approver("c.key:samr:k2").unwrap();
        assert_eq!(a.key_id.as_str(), "k2");
        for bad in ["c.key", ":samr", "c.key:Bad Org", "a:b:c:d"] {
            assert!(parse_approver(bad).unwrap_err().contains(bad), "{bad}");
        }
    }

    #[test]
    fn roles_and_prefixes_parse_with_the_ledger_spelling_and_are_named_when_wrong() {
        assert_eq!(parse_role("inspection_body").unwrap(), Role::InspectionBody);
        assert!(parse_role("auditor").unwrap_err().contains("\"auditor\""));
        assert_eq!(parse_prefix("9312345").unwrap(), CodePrefix { scheme: "gs1".into(), prefix: "9312345".into() });
        assert_eq!(parse_prefix("ecode:10012").unwrap(), CodePrefix { scheme: "ecode".into(), prefix: "10012".into() });
        for bad in ["93x1234", "123", "gs1:1234567890123"] {
            assert!(parse_prefix(bad).unwrap_err().contains(bad.trim_start_matches("gs1:")), "{bad}");
        }
    }
}
