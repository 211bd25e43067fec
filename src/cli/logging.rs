//! Log set-up from kube-proxy's logging settings: klog's verbosity (`-v`, `logging.verbosity`,
//! the highest `--vmodule` level) mapped onto tracing levels, `--logging-format text|json`, and
//! kubenat's `--log` filter, which wins when given.

use kubenat::config::types::Logging;

/// The tracing filter for klog verbosity `v` over a command's default level.
pub fn filter_for(v: u32, default_level: &str) -> String {
    match v {
        0..=1 => default_level.to_string(),
        2..=3 => "info".to_string(),
        4..=5 => "info,kubenat=debug".to_string(),
        _ => "debug,kubenat=trace".to_string(),
    }
}

/// Installs the global subscriber. `filter` (`--log`) wins over `logging`'s verbosity.
pub fn init(filter: Option<&str>, logging: &Logging, default_level: &str) {
    let v = logging.vmodule.iter().map(|item| item.verbosity).fold(logging.verbosity, u32::max);
    let level = filter.map(str::to_string).unwrap_or_else(|| filter_for(v, default_level));
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if logging.format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_levels_map_onto_tracing() {
        assert_eq!(filter_for(0, "info"), "info");
        assert_eq!(filter_for(0, "warn"), "warn");
        assert_eq!(filter_for(2, "warn"), "info");
        assert_eq!(filter_for(4, "info"), "info,kubenat=debug");
        assert_eq!(filter_for(9, "info"), "debug,kubenat=trace");
    }
}
