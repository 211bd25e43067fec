//! flannel's subnet.env parser on arbitrary text: it never panics, and every subnet it
//! returns has its host bits cleared.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::subnet_env(data));
