//! Checkpoint quorum: distinct organisations, known validators, good signatures.

use veritrace_ledger::block::{Checkpoint, CheckpointError};
use veritrace_ledger::org::{NodeId, OrgId, PublicKey, Validator, ValidatorSet};
use veritrace_ledger::testkit::{self, Fixture, T0_MS};

fn validator(node: &str, org: &str) -> Validator {
    Validator {
        node_id: NodeId::new(node).unwrap(),
        org: OrgId::new(org).unwrap(),
        public_key: PublicKey::from_bytes(testkit::key(node).verifying_key().to_bytes()).unwrap(),
    }
}

fn signed(set: &ValidatorSet, fx: &Fixture, signers: &[&str]) -> Checkpoint {
    let mut store = fx.mem_store();
    let t = T0_MS + 1_000;
    let (header, _) = store.apply_block(&fx.block(1, t, vec![])).unwrap();
    let signatures = signers
        .iter()
        .map(|n| {
            assert!(set.get(&NodeId::new(*n).unwrap()).is_some() || n.starts_with("stranger"));
            header.sign(NodeId::new(*n).unwrap(), &testkit::key(n))
        })
        .collect();
    Checkpoint { header, signatures }
}

#[test]
fn two_nodes_of_one_organisation_count_once() {
    let fx = Fixture::new();
    let set = ValidatorSet {
        validators: vec![validator("a1", "samr"), validator("a2", "samr"), validator("b1", "customs-pingtan")],
    };
    assert_eq!(set.quorum(), 2);
    let cp = signed(&set, &fx, &["a1", "a2"]);
    assert!(!cp.names_a_quorum(&set));
    assert!(matches!(cp.verify(fx.ledger(), &set), Err(CheckpointError::NoQuorum { got: 1, quorum: 2 })));
    let cp = signed(&set, &fx, &["a1", "b1"]);
    assert!(cp.names_a_quorum(&set));
    assert_eq!(cp.verify(fx.ledger(), &set).unwrap(), vec!["customs-pingtan", "samr"]);
}

#[test]
fn strangers_do_not_count_and_forgeries_fail() {
    let fx = Fixture::new();
    let set = ValidatorSet {
        validators: vec![validator("a1", "samr"), validator("b1", "customs-pingtan"), validator("c1", "ccic-au")],
    };
    let cp = signed(&set, &fx, &["a1", "stranger-1", "stranger-2"]);
    assert!(!cp.names_a_quorum(&set), "strangers name no organisation");
    assert!(matches!(cp.verify(fx.ledger(), &set), Err(CheckpointError::NoQuorum { got: 1, .. })));
    assert!(matches!(cp.verify_strict_signers(fx.ledger(), &set), Err(CheckpointError::UnknownValidator { .. })));
    let mut cp = signed(&set, &fx, &["a1", "b1"]);
    cp.signatures[1].signature.0[5] ^= 1;
    assert!(cp.names_a_quorum(&set), "the names are checked, not the signatures");
    match cp.verify(fx.ledger(), &set) {
        Err(CheckpointError::BadSignature { node }) => assert_eq!(node, "b1", "the forger is named"),
        other => panic!("a forged signature verified: {other:?}"),
    }
    let cp = signed(&set, &fx, &["a1", "b1"]);
    let other = veritrace_ledger::org::LedgerId::new("another").unwrap();
    assert!(matches!(cp.verify(&other, &set), Err(CheckpointError::WrongLedger { .. })));
}
