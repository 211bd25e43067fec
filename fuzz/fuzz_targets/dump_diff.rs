//! The semantic diff of two dumps: the input is split at the first NUL into two dumps; when
//! both parse, diffing never panics, a dump never differs from itself, and the report prints.
#![no_main]

use kubenat::iptables::diff::{diff, DiffOptions};
use kubenat::iptables::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\0').unwrap_or((text, ""));
    let (Ok(a), Ok(b)) = (parse::parse(a), parse::parse(b)) else {
        return;
    };
    for kube_only in [false, true] {
        let opts = DiffOptions { kube_only };
        assert!(diff(&a, &a, &opts).is_empty(), "a dump differs from itself");
        let _ = diff(&a, &b, &opts).to_string();
    }
});
