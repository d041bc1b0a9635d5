//! Fuzz target `bundle_decode`: the body is `veritrace_ledger::fuzzing::bundle_decode`, shared with
//! `ledger/tests/fuzz_regressions.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veritrace_ledger::fuzzing::bundle_decode(data));
