//! The semantic diff of two dumps: the input is split at the first NUL into two dumps; when
//! both parse, diffing never panics, a dump never differs from itself, and the report prints.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dump_diff(data));
