//! The iptables-save / restore parser on arbitrary text: it never panics, and whatever it
//! accepts writes back as text that parses to the same ruleset.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::iptables_parse(data));
