//! flannel's subnet.env parser on arbitrary text: it never panics, and every subnet it
//! returns has its host bits cleared.
#![no_main]

use kubenat::flannel::subnet_env;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = subnet_env::parse(text) {
        assert!(!env.networks.is_empty(), "a parsed file always names a network");
        for subnet in &env.subnets {
            assert_eq!(*subnet, subnet.trunc(), "host bits left in {subnet}");
        }
    }
});
