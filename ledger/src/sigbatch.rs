//! Batch verification of ed25519 signatures that pays once per distinct key.
//!
//! The check is the one `ed25519_dalek::verify_batch` makes: with `h_i = SHA-512(R_i ‖
//! A_i ‖ M_i)` and 128-bit coefficients `z_i` drawn from a hash of every input, a batch
//! is accepted when
//!
//! ```text
//! (−Σ z_i·s_i)·B + Σ z_i·R_i + Σ (z_i·h_i)·A_i = 0
//! ```
//!
//! A forged signature makes the sum non-zero except with probability 2⁻¹²⁸, and because
//! the coefficients hash every input, no one can choose inputs that cancel.
//!
//! Two things differ from the library's version:
//! - the key terms are grouped: `Σ_i (z_i·h_i)·A_i = Σ_A (Σ_{i: A_i = A} z_i·h_i)·A`. A
//!   block carries thousands of records from a handful of organisation keys, so the
//!   multi-scalar multiplication — most of the cost — has about half as many points
//!   (one per signature and one per key, instead of two per signature);
//! - the coefficients come from BLAKE3 in derive-key mode over every `h_i` and `s_i`
//!   (which bind every `R`, `A`, `M` and `s`), where the library runs a Merlin (Keccak)
//!   transcript; both are deterministic, both bind all inputs.
//!
//! Like the library's, the equation is cofactorless, and a batch that fails says only
//! that *some* signature is bad: callers then check one at a time with `verify_strict`.
//! Keys are checked for weakness when they are registered ([`crate::org`]), not here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{LazyLock, Mutex};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

/// BLAKE3 derive-key context of the coefficient stream; changing it changes nothing a
/// verifier agrees on (any unpredictable coefficients do), so it is not a format.
const COEFFICIENTS_CONTEXT: &str = "veritrace 2026-11 ed25519 batch verification coefficients";

/// Whether every `signatures[i]` is a valid signature of `messages[i]` under `keys[i]`.
/// Slices of different lengths are a `false`; an empty batch is a `true`.
pub fn verify_batch(messages: &[&[u8]], signatures: &[Signature], keys: &[VerifyingKey]) -> bool {
    let n = signatures.len();
    if messages.len() != n || keys.len() != n {
        return false;
    }
    if n == 0 {
        return true;
    }
    let mut transcript = blake3::Hasher::new_derive_key(COEFFICIENTS_CONTEXT);
    transcript.update(&(n as u64).to_le_bytes());
    let mut hrams = Vec::with_capacity(n);
    let mut ss = Vec::with_capacity(n);
    let mut rs = Vec::with_capacity(n);
    for ((sig, key), msg) in signatures.iter().zip(keys).zip(messages) {
        // s must be reduced (as in RFC 8032 and the library); R must be a curve point.
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let mut h = Sha512::new();
        h.update(sig.r_bytes());
        h.update(key.as_bytes());
        h.update(msg);
        let hram: [u8; 64] = h.finalize().into();
        transcript.update(&hram);
        transcript.update(sig.s_bytes());
        hrams.push(Scalar::from_bytes_mod_order_wide(&hram));
        ss.push(s);
        rs.push(r);
    }
    let mut coefficients = transcript.finalize_xof();

    let mut scalars: Vec<Scalar> = Vec::with_capacity(n + 2);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(n + 2);
    let mut base = Scalar::ZERO;
    // Each distinct key's combined coefficient, in first-seen order.
    let mut key_slot: HashMap<&[u8; 32], usize> = HashMap::new();
    let mut key_terms: Vec<(Scalar, EdwardsPoint)> = Vec::new();
    for i in 0..n {
        let mut z = [0u8; 16];
        coefficients.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        base += z * ss[i];
        scalars.push(z);
        points.push(rs[i]);
        let slot = *key_slot.entry(keys[i].as_bytes()).or_insert_with(|| {
            key_terms.push((Scalar::ZERO, keys[i].to_edwards()));
            key_terms.len() - 1
        });
        key_terms[slot].0 += z * hrams[i];
    }
    scalars.push(-base);
    points.push(ED25519_BASEPOINT_POINT);
    for (scalar, point) in key_terms {
        scalars.push(scalar);
        points.push(point);
    }
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// Each signature's verdict: all `true` when the batch verifies, else each checked alone
/// with `verify_strict` (the batch says only that *some* signature is bad). Slices of
/// different lengths give every signature `false`.
pub fn verify_each(messages: &[&[u8]], signatures: &[Signature], keys: &[VerifyingKey]) -> Vec<bool> {
    let n = signatures.len();
    if messages.len() != n || keys.len() != n {
        return vec![false; n];
    }
    if verify_batch(messages, signatures, keys) {
        return vec![true; n];
    }
    (0..n).map(|i| keys[i].verify_strict(messages[i], &signatures[i]).is_ok()).collect()
}

/// Most signatures [`VERIFIED`] remembers: more than the records a node holds between
/// checking a submission and applying its block (the leader queues at most 20,000).
pub const VERIFIED_MEMO_MAX: usize = 1 << 16;

/// Good signatures this process has verified, shared by the submission check and apply.
pub static VERIFIED: LazyLock<VerifiedMemo> = LazyLock::new(|| VerifiedMemo::new(VERIFIED_MEMO_MAX));

/// Signatures found good by `verify_strict`, remembered so that a record the node checked
/// when it was submitted (or forwarded to the leader) is not checked again when its block
/// is applied: each node then verifies each record once, where the node that received it
/// and the leader used to verify it twice.
///
/// It memoises a pure function. Only a good verdict is kept, as a BLAKE3 fingerprint of
/// key, signature and message, so a remembered verdict is the one verification gives (apply
/// reaches the same verdict whether or not the memo knows the signature: a batch accepts
/// what `verify_strict` accepts, and falls back to it). The memo is bounded; the oldest
/// fingerprints go first, and a forgotten signature is simply verified again.
pub struct VerifiedMemo {
    capacity: usize,
    inner: Mutex<Remembered>,
}

/// The fingerprints remembered, as a set and in the order they came.
#[derive(Default)]
struct Remembered {
    known: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedMemo {
    pub fn new(capacity: usize) -> VerifiedMemo {
        VerifiedMemo { capacity: capacity.max(1), inner: Mutex::default() }
    }

    fn fingerprint(key: &VerifyingKey, message: &[u8], signature: &Signature) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("veritrace 2026-11 verified ed25519 signature");
        h.update(key.as_bytes());
        h.update(&signature.to_bytes());
        h.update(message);
        *h.finalize().as_bytes()
    }

    /// Whether `signature` over `message` under `key` was verified good here and is still
    /// remembered.
    pub fn knows(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        let f = Self::fingerprint(key, message, signature);
        self.inner.lock().expect("verified memo lock").known.contains(&f)
    }

    /// `key.verify_strict(message, signature).is_ok()`, from memory when it is known good.
    pub fn verify_strict(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        let f = Self::fingerprint(key, message, signature);
        if self.inner.lock().expect("verified memo lock").known.contains(&f) {
            return true;
        }
        if key.verify_strict(message, signature).is_err() {
            return false;
        }
        let mut r = self.inner.lock().expect("verified memo lock");
        if r.known.insert(f) {
            r.order.push_back(f);
            while r.order.len() > self.capacity {
                if let Some(old) = r.order.pop_front() {
                    r.known.remove(&old);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_memo_remembers_good_signatures_only_and_forgets_the_oldest_first() {
        let memo = VerifiedMemo::new(2);
        let (msgs, sigs, keys) = batch(3, &[1, 2]);
        let mut forged = sigs[0].to_bytes();
        forged[0] ^= 1;
        let forged = Signature::from_bytes(&forged);
        assert!(!memo.verify_strict(&keys[0], &msgs[0], &forged));
        assert!(!memo.knows(&keys[0], &msgs[0], &forged), "a bad verdict is never remembered");
        // Another message, key or signature is another fingerprint.
        assert!(memo.verify_strict(&keys[0], &msgs[0], &sigs[0]));
        assert!(memo.knows(&keys[0], &msgs[0], &sigs[0]));
        assert!(!memo.knows(&keys[0], &msgs[1], &sigs[0]));
        assert!(!memo.knows(&keys[1], &msgs[0], &sigs[0]));
        assert!(!memo.verify_strict(&keys[1], &msgs[0], &sigs[0]), "not known good under another key");
        assert!(memo.verify_strict(&keys[1], &msgs[1], &sigs[1]));
        assert!(memo.verify_strict(&keys[2], &msgs[2], &sigs[2]));
        assert!(!memo.knows(&keys[0], &msgs[0], &sigs[0]), "the oldest went first");
        assert!(memo.knows(&keys[1], &msgs[1], &sigs[1]) && memo.knows(&keys[2], &msgs[2], &sigs[2]));
        // Forgotten is verified again, and remembered again.
        assert!(memo.verify_strict(&keys[0], &msgs[0], &sigs[0]));
        assert!(memo.knows(&keys[0], &msgs[0], &sigs[0]));
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// `count` signatures by keys `seeds[i % seeds.len()]` over distinct messages.
    fn batch(count: usize, seeds: &[u8]) -> (Vec<Vec<u8>>, Vec<Signature>, Vec<VerifyingKey>) {
        let mut msgs = Vec::new();
        let mut sigs = Vec::new();
        let mut keys = Vec::new();
        for i in 0..count {
            let k = key(seeds[i % seeds.len()]);
            let msg = format!("record {i}").into_bytes();
            sigs.push(k.sign(&msg));
            keys.push(k.verifying_key());
            msgs.push(msg);
        }
        (msgs, sigs, keys)
    }

    fn check(msgs: &[Vec<u8>], sigs: &[Signature], keys: &[VerifyingKey]) -> bool {
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        verify_batch(&refs, sigs, keys)
    }

    fn library(msgs: &[Vec<u8>], sigs: &[Signature], keys: &[VerifyingKey]) -> bool {
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        ed25519_dalek::verify_batch(&refs, sigs, keys).is_ok()
    }

    #[test]
    fn accepts_good_batches_of_one_few_and_many_keys() {
        for seeds in [&[1u8][..], &[1, 2, 3], &(0..64).collect::<Vec<u8>>()] {
            let (msgs, sigs, keys) = batch(64, seeds);
            assert!(check(&msgs, &sigs, &keys), "{} keys", seeds.len());
        }
        assert!(check(&[], &[], &[]), "an empty batch");
    }

    #[test]
    fn verify_each_names_the_bad_ones() {
        let (mut msgs, sigs, keys) = batch(20, &[1, 2]);
        let good: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(verify_each(&good, &sigs, &keys), vec![true; 20]);
        msgs[4].push(0);
        msgs[11].push(0);
        let bad: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let verdicts = verify_each(&bad, &sigs, &keys);
        let failing: Vec<usize> = (0..20).filter(|&i| !verdicts[i]).collect();
        assert_eq!(failing, vec![4, 11]);
        assert_eq!(verify_each(&bad[..3], &sigs, &keys), vec![false; 20], "ragged slices");
    }

    #[test]
    fn refuses_one_bad_signature_among_many() {
        let (mut msgs, sigs, keys) = batch(50, &[1, 2]);
        msgs[17].push(b'!');
        assert!(!check(&msgs, &sigs, &keys), "altered message");

        let (msgs, mut sigs, keys) = batch(50, &[1, 2]);
        sigs.swap(3, 4);
        assert!(!check(&msgs, &sigs, &keys), "signatures swapped between records");

        let (msgs, sigs, mut keys) = batch(50, &[1, 2]);
        keys[9] = key(7).verifying_key();
        assert!(!check(&msgs, &sigs, &keys), "signed by another key");
    }

    #[test]
    fn refuses_unreduced_s_malformed_r_and_ragged_slices() {
        let (msgs, sigs, keys) = batch(4, &[1]);
        // s + l: the same point equation, but not a canonical encoding.
        let mut bytes = sigs[2].to_bytes();
        // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l: [u8; 32] = hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(bytes[32 + i]) + u16::from(l[i]) + carry;
            bytes[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        let mut unreduced = sigs.clone();
        unreduced[2] = Signature::from_bytes(&bytes);
        assert!(!check(&msgs, &unreduced, &keys), "unreduced s");

        // An R whose y has no x on the curve.
        let mut off_curve = sigs.clone();
        let bad_r = (0u8..=255)
            .map(|b| {
                let mut r = [b; 32];
                r[31] &= 0x7f;
                r
            })
            .find(|r| CompressedEdwardsY(*r).decompress().is_none())
            .expect("some y is off the curve");
        let mut bytes = sigs[1].to_bytes();
        bytes[..32].copy_from_slice(&bad_r);
        off_curve[1] = Signature::from_bytes(&bytes);
        assert!(!check(&msgs, &off_curve, &keys), "R off the curve");

        assert!(!check(&msgs[..3], &sigs, &keys), "fewer messages than signatures");
        assert!(!check(&msgs, &sigs, &keys[..3]), "fewer keys than signatures");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Same verdict as the library's batch check on batches with at most one fault.
        #[test]
        fn agrees_with_the_library(count in 1usize..24, keys_n in 1u8..5, fault in proptest::option::of((0usize..24, 0u8..3))) {
            let seeds: Vec<u8> = (1..=keys_n).collect();
            let (mut msgs, mut sigs, mut keys) = batch(count, &seeds);
            if let Some((at, how)) = fault {
                let at = at % count;
                match how {
                    0 => msgs[at].push(0),
                    1 => keys[at] = key(200).verifying_key(),
                    _ => sigs[at] = key(seeds[0]).sign(b"another message"),
                }
            }
            prop_assert_eq!(check(&msgs, &sigs, &keys), library(&msgs, &sigs, &keys));
            prop_assert_eq!(check(&msgs, &sigs, &keys), fault.is_none());
        }
    }
}
