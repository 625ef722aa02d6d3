//! Any bytes as a request body: see `src/checks.rs` for what must hold.

#![no_main]

#[path = "../src/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let _ = checks::request(body);
});
