//! The manifest loader from bytes, through conversion and rendering: nothing panics, and
//! whatever the objects hold, the restore text rendered from them parses back to exactly the
//! rules and chains the renderer produced (user data can never add a line or a rule).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::manifests(data));
