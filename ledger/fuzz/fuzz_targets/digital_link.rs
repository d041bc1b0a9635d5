//! Fuzz target `digital_link`: the body is `veritrace_ledger::fuzzing::digital_link`, shared with
//! `ledger/tests/fuzz_regressions.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veritrace_ledger::fuzzing::digital_link(data));
