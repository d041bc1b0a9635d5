//! `veritrace genesis ...`: checking a genesis file, and writing one step by step.
//!
//! There is one genesis format, the ledger's [`Genesis`] (docs/ledger.md); these commands
//! only read it, change it and write it back with its own serde. `init` starts a file that
//! is not a usable genesis yet (no organisations, no validators); each `add-*` command
//! reads the file, adds one entry, checks what can be checked of an unfinished genesis
//! (the entry's own shape, unique ids and keys, known organisations) and replaces the file
//! atomically, so a refused edit leaves it as it was. `check` applies the ledger's full
//! [`Genesis::validate`], which a node applies when it starts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};
use veritrace_ledger::org::{
    CodePrefix, GENESIS_FORMAT, Genesis, GovernanceRules, KeyId, LedgerId, NodeId, OrgId, OrgKey, Organisation,
    PublicKey, RECORD_TIME_WINDOW_MS_DEFAULT, Role, Validator,
};

use crate::exit::{Failure, OrExit};
use crate::gov::{parse_prefix, parse_public_key, parse_role};
use crate::local::{read_genesis, write_atomically};
use crate::output::Out;
use crate::records::now_ms;

/// Largest genesis file the editing commands read.
pub const GENESIS_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Subcommand)]
pub enum GenesisCmd {
    /// Check a genesis file and print its summary and hash.
    Check { file: PathBuf },
    /// Start a new genesis file: ledger id, time and governance quorum, no entries yet.
    Init(InitArgs),
    /// Add an organisation with its first key to a genesis file.
    AddOrg(AddOrgArgs),
    /// Add a validator node (a Raft voter that co-signs checkpoints) to a genesis file.
    AddValidator(AddNodeArgs),
    /// Add an observer node (replicates and serves reads, does not vote) to a genesis file.
    AddObserver(AddNodeArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// The ledger's id ([a-z0-9._-], 1-64 bytes); it is in every signed message.
    #[arg(long, value_name = "ID")]
    ledger_id: LedgerId,
    /// The file to create; an existing file is never overwritten.
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// Time of the genesis (unix ms; default now): block times start after it.
    #[arg(long, value_name = "MS")]
    genesis_time_ms: Option<u64>,
    /// Distinct regulators that must sign a governance record (at most the number of
    /// regulators, which `genesis check` enforces once they are added).
    #[arg(long, value_name = "N", default_value_t = 1)]
    quorum: u32,
    /// How far a record's own time may be from its block's.
    #[arg(long, value_name = "MS", default_value_t = RECORD_TIME_WINDOW_MS_DEFAULT)]
    record_time_window_ms: u64,
}

/// A public key given as a key file (only its public half is read) or as hex.
#[derive(Args)]
#[command(group(ArgGroup::new("public").required(true).args(["key", "public_key"])))]
pub struct KeySource {
    /// A key file (`veritrace key gen`); only its public key goes into the genesis.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The public key, 64 hex digits (`veritrace key show FILE`).
    #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
    public_key: Option<PublicKey>,
}

#[derive(Args)]
pub struct AddOrgArgs {
    /// The genesis file, edited in place.
    file: PathBuf,
    /// The organisation's id ([a-z0-9._-], 1-64 bytes).
    id: OrgId,
    #[arg(long)]
    name: String,
    /// regulator, inspection_body, producer, platform or logistics (repeatable).
    #[arg(long = "role", value_name = "ROLE", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
    #[command(flatten)]
    public: KeySource,
    /// The key's id within the organisation.
    #[arg(long, value_name = "ID", default_value = "k1")]
    key_id: KeyId,
    /// First record time (unix ms) the key may sign.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    valid_from_ms: u64,
    /// Records timed at or after this (unix ms) are refused.
    #[arg(long, value_name = "MS")]
    valid_until_ms: Option<u64>,
    /// A code prefix the producer may issue under, `[SCHEME:]PREFIX`; the scheme defaults to
    /// gs1 (a GS1 company prefix, 4 to 12 digits). Repeatable.
    #[arg(long = "prefix", value_name = "[SCHEME:]PREFIX", value_parser = parse_prefix)]
    prefixes: Vec<CodePrefix>,
    /// A standard (prefix) the inspection body is accredited for (repeatable).
    #[arg(long = "scope", value_name = "STANDARD")]
    scope: Vec<String>,
}

#[derive(Args)]
pub struct AddNodeArgs {
    /// The genesis file, edited in place.
    file: PathBuf,
    /// The node's id ([a-z0-9._-], 1-64 bytes), as in its config's `node_id`.
    node_id: NodeId,
    /// The organisation that runs it; it must be in the genesis already.
    #[arg(long, value_name = "ORG")]
    org: OrgId,
    /// The node's key: its `node_key` file, or the public key in hex.
    #[command(flatten)]
    public: KeySource,
}

impl KeySource {
    fn public_key(&self) -> Result<PublicKey> {
        if let Some(k) = self.public_key {
            return Ok(k);
        }
        let path = self.key.as_ref().expect("clap requires --key or --public-key");
        let key = veritrace_devnet::keyfile::read_key_file(path)?;
        PublicKey::from_bytes(key.verifying_key().to_bytes()).with_context(|| format!("key file {}", path.display()))
    }
}

pub fn run(cmd: &GenesisCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        GenesisCmd::Check { file } => check(file, out),
        GenesisCmd::Init(a) => init(a, out),
        GenesisCmd::AddOrg(a) => edit(&a.file, out, |g| add_org(g, a)),
        GenesisCmd::AddValidator(a) => edit(&a.file, out, |g| add_node(g, a, NodeKind::Validator)),
        GenesisCmd::AddObserver(a) => edit(&a.file, out, |g| add_node(g, a, NodeKind::Observer)),
    }
}

fn check(file: &Path, out: &Out) -> Result<(), Failure> {
    let g = read_genesis(file).or_bad_input()?;
    let hash = g.hash().to_hex();
    out.emit(
        json!({
            "ok": true, "ledger_id": g.ledger_id, "hash": hash,
            "organisations": g.organisations.len(), "validators": g.validators.len(),
            "observers": g.observers.len(), "governance_quorum": g.governance.quorum,
        }),
        || {
            format!(
                "genesis ok: ledger {}, {} organisations, {} validators, {} observers, governance quorum {}\nhash \
                 {hash}",
                g.ledger_id,
                g.organisations.len(),
                g.validators.len(),
                g.observers.len(),
                g.governance.quorum
            )
        },
    );
    Ok(())
}

fn init(a: &InitArgs, out: &Out) -> Result<(), Failure> {
    let g = Genesis {
        format: GENESIS_FORMAT,
        ledger_id: a.ledger_id.clone(),
        genesis_time_ms: a.genesis_time_ms.unwrap_or_else(now_ms),
        organisations: vec![],
        validators: vec![],
        observers: vec![],
        governance: GovernanceRules { quorum: a.quorum },
        record_time_window_ms: a.record_time_window_ms,
    };
    check_draft(&g).or_bad_input()?;
    let path = &a.out;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("create genesis {} (init never overwrites a file)", path.display()))
        .or_bad_input()?;
    f.write_all(render(&g).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write genesis {}", path.display()))
        .or_bad_input()?;
    report(out, path, &g, json!({"init": {"ledger_id": g.ledger_id}}), format!("created {}", path.display()));
    Ok(())
}

/// What an edit added, for the report: its JSON and its words.
struct Added {
    json: Value,
    text: String,
}

/// Reads the genesis at `path`, applies `change`, checks the result and writes it back;
/// on any refusal the file is left as it was.
fn edit(path: &Path, out: &Out, change: impl FnOnce(&mut Genesis) -> Result<Added>) -> Result<(), Failure> {
    let mut g = read_draft(path).or_bad_input()?;
    let added = change(&mut g).with_context(|| format!("genesis {} is unchanged", path.display())).or_bad_input()?;
    check_draft(&g).with_context(|| format!("genesis {} is unchanged", path.display())).or_bad_input()?;
    write_atomically(path, render(&g).as_bytes()).or_bad_input()?;
    report(out, path, &g, added.json, format!("{} to {}", added.text, path.display()));
    Ok(())
}

fn add_org(g: &mut Genesis, a: &AddOrgArgs) -> Result<Added> {
    if g.org(&a.id).is_some() {
        bail!("organisation {:?} is already in the genesis", a.id.as_str());
    }
    let public_key = a.public.public_key()?;
    let org = Organisation {
        id: a.id.clone(),
        name: a.name.clone(),
        roles: a.roles.iter().copied().collect::<BTreeSet<_>>(),
        keys: vec![OrgKey {
            key_id: a.key_id.clone(),
            public_key,
            valid_from_ms: a.valid_from_ms,
            valid_until_ms: a.valid_until_ms,
            revoked_at_ms: None,
        }],
        code_prefixes: a.prefixes.clone(),
        inspection_scope: a.scope.clone(),
    };
    if let Some(until) = a.valid_until_ms.filter(|u| *u <= a.valid_from_ms) {
        bail!("key {}: --valid-until-ms {until} is not after --valid-from-ms {}", a.key_id, a.valid_from_ms);
    }
    org.validate()?;
    let json = json!({"organisation": org.id, "public_key": public_key.to_hex()});
    let roles: Vec<&str> = a.roles.iter().map(|r| r.as_str()).collect();
    let text =
        format!("added organisation {} ({}) with key {} {}", org.id, roles.join(", "), a.key_id, public_key.to_hex());
    g.organisations.push(org);
    Ok(Added { json, text })
}

#[derive(Clone, Copy)]
enum NodeKind {
    Validator,
    Observer,
}

impl NodeKind {
    fn as_str(self) -> &'static str {
        match self {
            NodeKind::Validator => "validator",
            NodeKind::Observer => "observer",
        }
    }
}

fn add_node(g: &mut Genesis, a: &AddNodeArgs, kind: NodeKind) -> Result<Added> {
    if let Some((other, _)) = nodes(g).find(|(_, n)| n.node_id == a.node_id) {
        bail!("node {:?} is already in the genesis as {}", a.node_id.as_str(), other.as_str());
    }
    if g.org(&a.org).is_none() {
        bail!("organisation {:?} is not in the genesis; add it first with `genesis add-org`", a.org.as_str());
    }
    let public_key = a.public.public_key()?;
    if let Some((other, n)) = nodes(g).find(|(_, n)| n.public_key == public_key) {
        bail!("public key {} is already the key of {} {:?}", public_key.to_hex(), other.as_str(), n.node_id.as_str());
    }
    let node = Validator { node_id: a.node_id.clone(), org: a.org.clone(), public_key };
    let json = json!({kind.as_str(): node.node_id, "org": node.org, "public_key": public_key.to_hex()});
    let text = format!("added {} {} run by {} with key {}", kind.as_str(), node.node_id, node.org, public_key.to_hex());
    match kind {
        NodeKind::Validator => g.validators.push(node),
        NodeKind::Observer => g.observers.push(node),
    }
    Ok(Added { json, text })
}

/// Every node of the genesis with its kind.
fn nodes(g: &Genesis) -> impl Iterator<Item = (NodeKind, &Validator)> {
    let validators = g.validators.iter().map(|v| (NodeKind::Validator, v));
    validators.chain(g.observers.iter().map(|v| (NodeKind::Observer, v)))
}

/// A genesis file as the ledger's serde reads it (ids, keys and field names checked),
/// without requiring it to be complete.
fn read_draft(path: &Path) -> Result<Genesis> {
    let what = || format!("genesis {}", path.display());
    let size = std::fs::metadata(path).with_context(|| format!("read {}", what()))?.len();
    if size > GENESIS_FILE_BYTES_MAX {
        bail!("{} is {size} bytes, at most {GENESIS_FILE_BYTES_MAX}", what());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", what()))?;
    let g: Genesis = serde_json::from_str(&text).with_context(what)?;
    check_draft(&g).with_context(what)?;
    Ok(g)
}

/// The rules of [`Genesis::validate`] that hold for a genesis still being written: all
/// of them but "has validators" and "quorum at most the number of regulators". Also that
/// node ids and keys are unique across validators and observers (docs/ledger.md).
fn check_draft(g: &Genesis) -> Result<()> {
    if g.format != GENESIS_FORMAT {
        bail!("format {} is not supported (expected {GENESIS_FORMAT})", g.format);
    }
    if g.governance.quorum == 0 {
        bail!("governance quorum 0: at least 1 regulator must sign a governance record");
    }
    if g.record_time_window_ms == 0 {
        bail!("record_time_window_ms must be positive");
    }
    let mut orgs = BTreeSet::new();
    for o in &g.organisations {
        o.validate()?;
        if !orgs.insert(&o.id) {
            bail!("organisation {:?} appears twice", o.id.as_str());
        }
    }
    let mut ids = BTreeSet::new();
    let mut keys = BTreeMap::new();
    for (kind, n) in nodes(g) {
        if !orgs.contains(&n.org) {
            bail!("{} {:?} names unknown organisation {:?}", kind.as_str(), n.node_id.as_str(), n.org.as_str());
        }
        if !ids.insert(&n.node_id) {
            bail!("node {:?} appears twice", n.node_id.as_str());
        }
        if let Some(first) = keys.insert(*n.public_key.as_bytes(), &n.node_id) {
            bail!("nodes {:?} and {:?} have the same key", first.as_str(), n.node_id.as_str());
        }
    }
    Ok(())
}

/// The file's text: the ledger's JSON of the genesis, newline-terminated.
fn render(g: &Genesis) -> String {
    g.to_json() + "\n"
}

/// Prints what was done and, while the genesis is not yet one a node would start from,
/// why (what `genesis check` would say).
fn report(out: &Out, path: &Path, g: &Genesis, done: Value, text: String) {
    let incomplete = g.validate().err().map(|e| e.to_string());
    let mut v = json!({
        "ok": true, "file": path, "ledger_id": g.ledger_id,
        "organisations": g.organisations.len(), "validators": g.validators.len(), "observers": g.observers.len(),
        "complete": incomplete.is_none(), "incomplete": incomplete,
    });
    if let (Some(v), Value::Object(done)) = (v.as_object_mut(), done) {
        v.extend(done);
    }
    out.emit(v, || {
        let mut s = format!(
            "{text} ({} organisations, {} validators, {} observers)",
            g.organisations.len(),
            g.validators.len(),
            g.observers.len()
        );
        match &incomplete {
            None => s.push_str(&format!("\ncomplete: genesis hash {}", g.hash().to_hex())),
            Some(why) => s.push_str(&format!("\nnot complete yet: {why}")),
        }
        s
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_may_lack_validators_and_regulators_but_not_be_inconsistent() {
        let fx = veritrace_ledger::testkit::Fixture::new();
        let mut g = fx.genesis.clone();
        g.validators.clear();
        g.governance.quorum = 99;
        check_draft(&g).unwrap();
        assert!(g.validate().is_err());
        let mut dup = fx.genesis.clone();
        let mut twin = dup.validators[0].clone();
        twin.node_id = NodeId::new("twin").unwrap();
        dup.observers.push(twin);
        assert!(check_draft(&dup).unwrap_err().to_string().contains("\"twin\""));
        let mut orphan = fx.genesis.clone();
        orphan.validators[0].org = OrgId::new("nobody").unwrap();
        assert!(check_draft(&orphan).unwrap_err().to_string().contains("\"nobody\""));
    }
}
