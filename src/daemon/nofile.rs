//! The userspace proxy holds two descriptors per proxied connection: raise RLIMIT_NOFILE to
//! 64000 like kube-proxy did (or at least the soft limit to the hard one), via `prlimit`,
//! without unsafe code.

/// The current (soft, hard) open-file limits, from `/proc/self/limits`.
fn nofile_limits() -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

/// Raises this process's open-file limit; logs the outcome.
pub fn raise_nofile_limit() {
    let pid = std::process::id().to_string();
    let set = |value: &str| {
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={value}:{value}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let hard = nofile_limits().map(|(_, hard)| hard).unwrap_or_default();
    let enough = hard == "unlimited" || hard.parse::<u64>().is_ok_and(|h| h >= 64_000);
    if (enough && set("64000")) || (!enough && (set("64000") || set(&hard))) {
        let (soft, hard) = nofile_limits().unwrap_or_default();
        tracing::info!(soft, hard, "open-file limit for the userspace proxy");
    } else {
        tracing::warn!(
            "could not raise the open-file limit (prlimit); the userspace proxy may run out of descriptors under load"
        );
    }
}
