//! The bodies of the fuzz targets (`ledger/fuzz/`, docs/faults.md "Fuzzing"), here so the
//! targets and the regression test (`ledger/tests/fuzz_regressions.rs`) run the same code.
//!
//! Each function takes arbitrary bytes and must not panic on any of them. Where the bytes
//! decode, it asserts what the format promises: canonical bytes re-encode to exactly the
//! input (one byte string per value), and JSON and text forms decode again to the same
//! value. A failed assertion is a panic, which libFuzzer reports as a crash.
//!
//! Not part of the ledger's API: hidden from the docs, and subject to change with the
//! targets.

use std::str::FromStr;
use std::sync::OnceLock;

use crate::bundle::{TraceBundle, verify_bundle};
use crate::codec;
use crate::hash::Hash32;
use crate::ids::{CccNumber, CustomCode, Ecode, Gtin, Lot, SchemeTag, Serial, Sscc, SubjectId, parse_digital_link};
use crate::merkle::{ConsistencyProof, InclusionProof, verify_consistency, verify_inclusion};
use crate::org::{Genesis, ValidatorSet};
use crate::record::{RecordBody, Sell, SignedRecord, signing_message};
use crate::smt::{self, SmtNode, SmtProof};
use crate::testkit::{Fixture, T0_MS};

/// A target's body: arbitrary bytes in, a panic if and only if something is wrong.
pub type Body = fn(&[u8]);

/// The targets, by the name of their directory under `ledger/fuzz/corpus/` and
/// `ledger/fuzz/regressions/`, with their bodies.
pub const TARGETS: [(&str, Body); 5] = [
    ("record_decode", record_decode),
    ("proof_decode", proof_decode),
    ("bundle_decode", bundle_decode),
    ("digital_link", digital_link),
    ("genesis", genesis),
];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

fn validators() -> &'static ValidatorSet {
    static SET: OnceLock<ValidatorSet> = OnceLock::new();
    SET.get_or_init(|| fixture().genesis.validator_set())
}

/// Canonical bytes of a decoded value must be the input itself.
fn assert_canonical(what: &str, input: &[u8], reencoded: &[u8]) {
    assert!(
        reencoded == input,
        "{what}: decoded value re-encodes to other bytes ({} vs {} bytes)",
        reencoded.len(),
        input.len()
    );
}

/// `SignedRecord::from_bytes`; on success: canonical round trip, the form check, the id,
/// the signature check against the author's fixture key, and the signing message taken
/// from the signed bytes (what apply uses) equal to the one built from the record.
pub fn record_decode(data: &[u8]) {
    let Ok(r) = SignedRecord::from_bytes(data) else { return };
    assert_canonical("signed record", data, &r.to_bytes());
    let _ = r.validate_form();
    let _ = r.id();
    let fx = fixture();
    let ledger = fx.ledger();
    assert_eq!(r.signing_message_from(ledger, data), signing_message(ledger, &r.record), "signing message");
    if let Some(key) = fx.genesis.org(&r.record.author).and_then(|o| o.keys.first()) {
        let _ = r.verify_author(ledger, &key.public_key);
    }
}

/// The first byte picks the proof type, the rest is its canonical bytes: 0 an inclusion
/// proof, 1 a consistency proof, 2 a state-map proof, 3 a state-map node. On success:
/// canonical round trip, and the verifier run against roots and a leaf taken from the
/// input (it must answer, not panic).
pub fn proof_decode(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let h = Hash32(*blake3::hash(data).as_bytes());
    match selector % 4 {
        0 => {
            let Ok(p) = codec::decode::<InclusionProof>("inclusion proof", bytes) else { return };
            assert_canonical("inclusion proof", bytes, &codec::encode(&p));
            let root = p.path.first().copied().unwrap_or(h);
            let _ = p.verify(&h, &root);
            let _ = verify_inclusion(&root, p.index, p.size, &p.path, &h);
        }
        1 => {
            let Ok(p) = codec::decode::<ConsistencyProof>("consistency proof", bytes) else { return };
            assert_canonical("consistency proof", bytes, &codec::encode(&p));
            let root = p.path.last().copied().unwrap_or(h);
            let _ = p.verify(&h, &root);
            let _ = verify_consistency(p.old_size, p.new_size, &root, &root, &p.path);
        }
        2 => {
            let Ok(p) = codec::decode::<SmtProof>("state-map proof", bytes) else { return };
            assert_canonical("state-map proof", bytes, &codec::encode(&p));
            let (key, value) = p.leaf.unwrap_or((h, h));
            let root = p.siblings.first().copied().unwrap_or(h);
            let _ = smt::verify(&root, &key, Some(&value), &p);
            let _ = smt::verify(&root, &key, None, &p);
            let _ = smt::verify(&h, &h, None, &p);
        }
        _ => {
            let Ok(n) = SmtNode::decode(bytes) else { return };
            assert_canonical("state-map node", bytes, &n.encode());
            let _ = n.hash();
        }
    }
}

/// `TraceBundle::from_bytes` and, when the input is UTF-8, `TraceBundle::from_json`; each
/// bundle that decodes is verified against the fixture's validators (any answer but a
/// panic). Bytes round-trip canonically, JSON to the same bundle.
pub fn bundle_decode(data: &[u8]) {
    if let Ok(b) = TraceBundle::from_bytes(data) {
        assert_canonical("trace bundle", data, &b.to_bytes());
        let _ = verify_bundle(&b, validators());
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(b) = TraceBundle::from_json(s)
    {
        let again = TraceBundle::from_json(&b.to_json()).expect("a bundle's own json decodes");
        assert_eq!(again, b, "bundle json round trip");
        let _ = verify_bundle(&b, validators());
    }
}

/// The input as text through `parse_digital_link`, `SubjectId::from_str` and each
/// identifier's parser. A parsed subject's canonical form parses back to it; a parsed
/// identifier parses back from its own string.
pub fn digital_link(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(link) = parse_digital_link(s) {
        let canonical = link.subject.to_string();
        let again = parse_digital_link(&canonical).expect("a subject's canonical form is a digital link");
        assert_eq!(again.subject, link.subject, "digital link round trip of {s:?}");
        let with_slash = parse_digital_link(&format!("/{canonical}")).expect("leading slash");
        assert_eq!(with_slash.subject, link.subject);
        let uri = parse_digital_link(&format!("https://id.example.com/{canonical}")).expect("as a uri");
        assert_eq!(uri.subject, link.subject);
    }
    if let Ok(id) = SubjectId::from_str(s) {
        let again = SubjectId::from_str(&id.to_string()).expect("a subject's canonical form parses");
        assert_eq!(again, id, "subject round trip of {s:?}");
    }
    macro_rules! round_trip {
        ($($t:ty),*) => {$(
            if let Ok(v) = <$t>::parse(s) {
                assert_eq!(<$t>::parse(v.as_str()).as_ref(), Ok(&v), "{} round trip of {s:?}", stringify!($t));
            }
        )*};
    }
    round_trip!(Gtin, Sscc, Lot, Serial, Ecode, CccNumber, SchemeTag, CustomCode);
}

/// `Genesis::from_json`; an accepted genesis decodes again from its own JSON to the same
/// value, its canonical bytes round-trip, and its hash and validator set can be taken.
pub fn genesis(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(g) = Genesis::from_json(s) else { return };
    let again = Genesis::from_json(&g.to_json()).expect("a genesis' own json is accepted");
    assert_eq!(again, g, "genesis json round trip");
    let bytes = codec::encode(&g);
    let decoded: Genesis = codec::decode("genesis", &bytes).expect("a genesis' own bytes decode");
    assert_eq!(decoded, g, "genesis bytes round trip");
    let _ = g.hash();
    let _ = g.validator_set();
}

/// Small valid inputs for each target, made from the test fixture: the seed corpora under
/// `ledger/fuzz/corpus/` (written by `ledger/tests/fuzz_regressions.rs` when
/// `VERITRACE_WRITE_FUZZ_CORPUS=1`).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let fx = fixture();
    let item = fx.item("L1", 42);
    let mut store = fx.mem_store();
    let issue = fx.sign("nutri", T0_MS + 10_000, fx.issue_range("L1", 100));
    let sell = fx.sign(
        "nutri",
        T0_MS + 11_000,
        RecordBody::Sell(Sell { subjects: vec![item.clone()], channel: "shop".into() }),
    );
    store.apply_block(&fx.block(1, T0_MS + 10_000, vec![issue.clone()])).expect("block 1");
    let (header, _) = store.apply_block(&fx.block(2, T0_MS + 11_000, vec![sell.clone()])).expect("block 2");
    let bundle = store.bundle(&item, fx.checkpoint(&header)).expect("bundle");
    let tagged = |tag: u8, bytes: Vec<u8>| [vec![tag], bytes].concat();
    match target {
        "record_decode" => vec![issue.to_bytes(), sell.to_bytes()],
        "proof_decode" => {
            let r = &bundle.records[0];
            let s = &bundle.subjects[0];
            vec![
                tagged(
                    0,
                    codec::encode(&InclusionProof {
                        index: r.log_index,
                        size: header.log_size,
                        path: r.inclusion.clone(),
                    }),
                ),
                tagged(
                    1,
                    codec::encode(&ConsistencyProof {
                        old_size: 1,
                        new_size: 2,
                        path: vec![s.proof.siblings.first().copied().unwrap_or(Hash32::ZERO)],
                    }),
                ),
                tagged(2, codec::encode(&s.proof)),
                tagged(3, SmtNode::Internal { left: Hash32::ZERO, right: header.state_root }.encode()),
            ]
        }
        "bundle_decode" => vec![bundle.to_bytes(), bundle.to_json().into_bytes()],
        "digital_link" => vec![
            item.to_string().into_bytes(),
            format!("https://id.example.com/p/01/{}/10/L1/21/L1-000042?17=260101#x", item.gtin().expect("gtin"))
                .into_bytes(),
            b"00/106141411234567893".to_vec(),
            b"custom:acme:X-1".to_vec(),
        ],
        "genesis" => vec![fx.genesis.to_json().into_bytes()],
        other => panic!("no fuzz target {other}"),
    }
}
