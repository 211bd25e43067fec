//! The iptables-save / restore parser on arbitrary text: it never panics, and whatever it
//! accepts writes back as text that parses to the same ruleset.
#![no_main]

use kubenat::iptables::{check, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ruleset) = parse::parse(text) else {
        return;
    };
    let _ = check::check(&ruleset);
    let written = ruleset.to_string();
    let again = parse::parse(&written).unwrap_or_else(|e| panic!("written ruleset does not parse: {e}\n{written}"));
    assert_eq!(again.to_string(), written, "write/parse is not stable");
});
