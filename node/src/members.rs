//! Who belongs to the network, and how to reach them.
//!
//! The genesis names the first members: its validators and observers, with addresses from
//! the node's `[[peers]]` config. Governance admits more: every validator of the ledger's
//! current validator set is a member, whether or not the genesis names it. Raft's own
//! membership keeps a node a member while Raft still counts on it (a removed validator
//! stays until the leader has taken it out of Raft, so that change can commit).
//!
//! [`Members::update`] recomputes the table from those sources; the node calls it on a
//! timer and hands the result to the network layer's allow list. A member's address comes,
//! in order, from the config, from Raft's membership (the leader wrote it there when it
//! added the node), or from what the node announced over identify.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use anyhow::{Context, Result};
use libp2p::{Multiaddr, PeerId};
use veritrace_consensus::{NodeId as RaftId, PeerInfo};
use veritrace_ledger::org::{Genesis, NodeId, PublicKey, Validator, ValidatorSet};

use crate::p2p::peer_id_of;

/// Identity of a network member as the node needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node_id: NodeId,
    pub raft_id: RaftId,
    pub peer: PeerInfo,
    pub public_key: PublicKey,
}

impl Member {
    fn of(v: &Validator, addr: String) -> Result<Member> {
        let peer_id = peer_id_of(v.public_key.as_bytes()).with_context(|| format!("node key of {}", v.node_id))?;
        Ok(Member {
            node_id: v.node_id.clone(),
            raft_id: raft_id_of(&v.public_key),
            peer: PeerInfo { peer_id: peer_id.to_string(), addr },
            public_key: v.public_key,
        })
    }

    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer.peer_id.parse().ok()
    }

    pub fn addr(&self) -> Option<Multiaddr> {
        self.peer.addr.parse().ok()
    }
}

/// The Raft id of a node: the first 8 bytes of blake3 of its public key, so every node
/// derives the same id from the genesis or a governance record without coordination.
pub fn raft_id_of(key: &PublicKey) -> RaftId {
    let h = blake3::hash(key.as_bytes());
    u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The member table: fixed genesis members, and the current table built on them.
pub struct Members {
    genesis: BTreeMap<RaftId, Member>,
    /// Addresses from the node's config, by node id.
    configured: BTreeMap<String, String>,
    current: RwLock<Table>,
}

/// The current members, and their Raft ids by libp2p identity (every Raft message is
/// checked against its sender's: [`Members::by_peer`]).
#[derive(Default)]
struct Table {
    members: BTreeMap<RaftId, Member>,
    by_peer: HashMap<PeerId, RaftId>,
}

impl Table {
    fn of(members: BTreeMap<RaftId, Member>) -> Table {
        let by_peer = members.values().filter_map(|m| Some((m.peer_id()?, m.raft_id))).collect();
        Table { members, by_peer }
    }
}

impl Members {
    /// The genesis' validators and observers, reached at the `configured` addresses (node
    /// id → multiaddr); this node (`own`) at `own_addr`.
    pub fn from_genesis(
        genesis: &Genesis,
        configured: BTreeMap<String, String>,
        own: &NodeId,
        own_addr: &str,
    ) -> Result<Members> {
        Members::new(genesis.validators.iter().chain(&genesis.observers), configured, own, own_addr)
    }

    fn new<'a>(
        founders: impl Iterator<Item = &'a Validator>,
        configured: BTreeMap<String, String>,
        own: &NodeId,
        own_addr: &str,
    ) -> Result<Members> {
        let mut table = BTreeMap::new();
        for v in founders {
            let addr = if &v.node_id == own {
                own_addr.to_string()
            } else {
                configured.get(v.node_id.as_str()).cloned().unwrap_or_default()
            };
            let m = Member::of(v, addr)?;
            table.insert(m.raft_id, m);
        }
        Ok(Members { genesis: table.clone(), configured, current: RwLock::new(Table::of(table)) })
    }

    pub fn get(&self, id: &RaftId) -> Option<Member> {
        self.current.read().expect("members lock").members.get(id).cloned()
    }

    pub fn contains(&self, id: &RaftId) -> bool {
        self.current.read().expect("members lock").members.contains_key(id)
    }

    pub fn all(&self) -> Vec<Member> {
        self.current.read().expect("members lock").members.values().cloned().collect()
    }

    /// The member a libp2p identity belongs to.
    pub fn by_peer(&self, peer: &PeerId) -> Option<Member> {
        let table = self.current.read().expect("members lock");
        table.by_peer.get(peer).and_then(|id| table.members.get(id)).cloned()
    }

    /// Whether the genesis names this node as a validator or observer.
    pub fn in_genesis(&self, id: &RaftId) -> bool {
        self.genesis.contains_key(id)
    }

    /// Rebuilds the table: the genesis members, every validator of `validators`, and every
    /// node of Raft's membership (`raft`, with the address the leader recorded). A member
    /// without an address takes the one it announced (`identified`). Returns whether the
    /// table changed.
    pub fn update(
        &self,
        validators: &ValidatorSet,
        raft: &BTreeMap<RaftId, PeerInfo>,
        identified: &HashMap<PeerId, Multiaddr>,
    ) -> bool {
        let mut next = self.genesis.clone();
        let mut table = self.current.write().expect("members lock");
        let current = &table.members;
        for v in &validators.validators {
            let id = raft_id_of(&v.public_key);
            if next.contains_key(&id) {
                continue;
            }
            match Member::of(v, self.configured.get(v.node_id.as_str()).cloned().unwrap_or_default()) {
                Ok(m) => {
                    next.insert(id, m);
                }
                Err(e) => tracing::warn!(node = %v.node_id, error = %e, "validator key is not a network identity"),
            }
        }
        // Nodes Raft still counts on stay, under the name the table last knew them by.
        for (id, info) in raft {
            if !next.contains_key(id)
                && let Some(old) = current.get(id)
            {
                next.insert(*id, Member { peer: info.clone(), ..old.clone() });
            }
        }
        for m in next.values_mut() {
            if m.peer.addr.is_empty() {
                let recorded = raft.get(&m.raft_id).map(|p| p.addr.clone()).filter(|a| !a.is_empty());
                let announced = || m.peer_id().and_then(|p| identified.get(&p)).map(|a| a.to_string());
                m.peer.addr = recorded.or_else(announced).unwrap_or_default();
            }
        }
        let changed = *current != next;
        if changed {
            let added: Vec<String> =
                next.values().filter(|m| !current.contains_key(&m.raft_id)).map(|m| m.node_id.to_string()).collect();
            let gone: Vec<String> =
                current.values().filter(|m| !next.contains_key(&m.raft_id)).map(|m| m.node_id.to_string()).collect();
            if !added.is_empty() || !gone.is_empty() {
                tracing::info!(?added, ?gone, "network members changed");
            }
            *table = Table::of(next);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veritrace_ledger::org::OrgId;

    fn node(name: &str, seed: u8) -> Validator {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        Validator {
            node_id: NodeId::new(name.to_string()).unwrap(),
            org: OrgId::new("org".to_string()).unwrap(),
            public_key: PublicKey::from_bytes(key.verifying_key().to_bytes()).unwrap(),
        }
    }

    /// Member names, sorted.
    fn ids(m: &Members) -> Vec<String> {
        let mut names: Vec<String> = m.all().iter().map(|m| m.node_id.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn governance_admits_validators_and_raft_keeps_them_until_it_lets_go() {
        let (a, b, obs, new) = (node("a", 1), node("b", 2), node("obs", 3), node("new", 4));
        let configured = BTreeMap::from([("b".to_string(), "/ip4/127.0.0.1/tcp/2".to_string())]);
        let m = Members::new([&a, &b, &obs].into_iter(), configured, &a.node_id, "/ip4/127.0.0.1/tcp/1").unwrap();
        assert_eq!(ids(&m), ["a", "b", "obs"]);
        assert_eq!(m.get(&raft_id_of(&b.public_key)).unwrap().peer.addr, "/ip4/127.0.0.1/tcp/2");

        // Governance adds `new`; its address is what it announced over identify.
        let set = ValidatorSet { validators: vec![a.clone(), b.clone(), new.clone()] };
        let new_member = Member::of(&new, String::new()).unwrap();
        let announced: Multiaddr = "/ip4/127.0.0.1/tcp/4".parse().unwrap();
        let identified = HashMap::from([(new_member.peer_id().unwrap(), announced.clone())]);
        assert!(m.update(&set, &BTreeMap::new(), &identified));
        assert_eq!(ids(&m), ["a", "b", "new", "obs"]);
        assert_eq!(m.get(&new_member.raft_id).unwrap().addr(), Some(announced));
        assert!(!m.update(&set, &BTreeMap::new(), &identified), "the same sources change nothing");

        // The leader recorded another address in Raft: that one wins over identify.
        let recorded = PeerInfo { peer_id: new_member.peer.peer_id.clone(), addr: "/ip4/10.0.0.4/tcp/4".into() };
        let raft = BTreeMap::from([(new_member.raft_id, recorded.clone())]);
        assert!(m.update(&set, &raft, &identified));
        assert_eq!(m.get(&new_member.raft_id).unwrap().peer, recorded);

        // Removed by governance but still in Raft: kept; out of Raft too: gone.
        let without = ValidatorSet { validators: vec![a.clone(), b.clone()] };
        assert!(!m.update(&without, &raft, &identified));
        assert!(m.contains(&new_member.raft_id));
        assert!(m.update(&without, &BTreeMap::new(), &identified));
        assert!(!m.contains(&new_member.raft_id));
        assert!(m.by_peer(&new_member.peer_id().unwrap()).is_none());

        // Genesis members stay whatever the validator set says.
        let empty = ValidatorSet::default();
        m.update(&empty, &BTreeMap::new(), &HashMap::new());
        assert_eq!(ids(&m), ["a", "b", "obs"]);
        assert!(m.in_genesis(&raft_id_of(&obs.public_key)));
    }
}
