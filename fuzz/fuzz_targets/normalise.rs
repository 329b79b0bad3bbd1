//! Arbitrary bytes as 1–3 parts, merged as CSV and as JSON: no panic, and any successful
//! output is well-formed. The harness is shared with the crate's tests.
#![no_main]

#[path = "../../crates/cdr-normalise/tests/normalise/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::exercise(data));
