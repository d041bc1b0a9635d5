//! Fuzz target `genesis`: the body is `veritrace_ledger::fuzzing::genesis`, shared with
//! `ledger/tests/fuzz_regressions.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veritrace_ledger::fuzzing::genesis(data));
