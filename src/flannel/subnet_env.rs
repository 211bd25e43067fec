//! Parses flannel's `subnet.env` (cluster networks, this node's pod subnet, MTU, ip-masq); it
//! does not watch the file or cross-check it against the Node.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use tracing::debug;

/// Where flanneld writes the file by default (`--subnet-file`).
pub const DEFAULT_PATH: &str = "/run/flannel/subnet.env";

/// What went wrong reading `subnet.env`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read. Retryable: flannel writes it only once it is ready.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A network or subnet value is not a CIDR. Not retryable until flannel rewrites the file.
    #[error("{key}: invalid CIDR {value:?}")]
    InvalidCidr {
        /// The key, e.g. `FLANNEL_SUBNET`.
        key: String,
        /// The value as written.
        value: String,
    },
    /// `FLANNEL_MTU` or `FLANNEL_IPMASQ` has a value of the wrong type. Not retryable.
    #[error("{key}: invalid value {value:?} (expected {expected})")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What the value should be.
        expected: &'static str,
    },
    /// Neither `FLANNEL_NETWORK` nor `FLANNEL_IPV6_NETWORK` is set: not a flannel subnet file.
    #[error("neither FLANNEL_NETWORK nor FLANNEL_IPV6_NETWORK is set")]
    NoNetwork,
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The contents of `subnet.env`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK` then `FLANNEL_IPV6_NETWORK` (each may be a comma-separated list).
    pub networks: Vec<IpNet>,
    /// `FLANNEL_SUBNET` then `FLANNEL_IPV6_SUBNET`, host bits cleared (10.244.1.1/24 →
    /// 10.244.1.0/24).
    pub subnets: Vec<IpNet>,
    /// `FLANNEL_MTU`.
    pub mtu: Option<u32>,
    /// `FLANNEL_IPMASQ`.
    pub ipmasq: Option<bool>,
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<SubnetEnv> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    parse(&text)
}

/// Parses `KEY=VALUE` lines, tolerating `export `, quotes, spaces around `=`, comments and
/// unknown keys; a later line overrides an earlier one, empty values count as unset.
pub fn parse(text: &str) -> Result<SubnetEnv> {
    let mut keys = Keys::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            debug!(line, "subnet.env line is not KEY=VALUE, ignored");
            continue;
        };
        let value = unquote(value.trim());
        let slot = match key.trim() {
            "FLANNEL_NETWORK" => &mut keys.network,
            "FLANNEL_IPV6_NETWORK" => &mut keys.ipv6_network,
            "FLANNEL_SUBNET" => &mut keys.subnet,
            "FLANNEL_IPV6_SUBNET" => &mut keys.ipv6_subnet,
            "FLANNEL_MTU" => &mut keys.mtu,
            "FLANNEL_IPMASQ" => &mut keys.ipmasq,
            other => {
                debug!(key = other, "unknown subnet.env key, ignored");
                continue;
            }
        };
        *slot = Some(value).filter(|v| !v.is_empty());
    }
    keys.into_env()
}

/// Raw values of the keys we use.
#[derive(Default)]
struct Keys {
    network: Option<String>,
    ipv6_network: Option<String>,
    subnet: Option<String>,
    ipv6_subnet: Option<String>,
    mtu: Option<String>,
    ipmasq: Option<String>,
}

impl Keys {
    fn into_env(self) -> Result<SubnetEnv> {
        if self.network.is_none() && self.ipv6_network.is_none() {
            return Err(Error::NoNetwork);
        }
        let mut env = SubnetEnv::default();
        cidrs("FLANNEL_NETWORK", self.network, &mut env.networks)?;
        cidrs("FLANNEL_IPV6_NETWORK", self.ipv6_network, &mut env.networks)?;
        if env.networks.is_empty() {
            // Set, but to separators only (`FLANNEL_NETWORK=,`): no network either.
            return Err(Error::NoNetwork);
        }
        cidrs("FLANNEL_SUBNET", self.subnet, &mut env.subnets)?;
        cidrs("FLANNEL_IPV6_SUBNET", self.ipv6_subnet, &mut env.subnets)?;
        for net in &mut env.subnets {
            *net = net.trunc();
        }
        env.mtu = self.mtu.map(|v| v.parse().map_err(|_| invalid("FLANNEL_MTU", &v, "a whole number"))).transpose()?;
        env.ipmasq = self.ipmasq.map(|v| parse_bool(&v)).transpose()?;
        Ok(env)
    }
}

/// Appends the comma-separated CIDRs of `value` to `out`.
fn cidrs(key: &str, value: Option<String>, out: &mut Vec<IpNet>) -> Result<()> {
    for part in value.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
        let net =
            part.parse::<IpNet>().map_err(|_| Error::InvalidCidr { key: key.to_string(), value: part.to_string() })?;
        out.push(net);
    }
    Ok(())
}

fn parse_bool(value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid("FLANNEL_IPMASQ", value, "true or false")),
    }
}

fn invalid(key: &str, value: &str, expected: &'static str) -> Error {
    Error::InvalidValue { key: key.to_string(), value: value.to_string(), expected }
}

/// Strips one pair of matching quotes; an unquoted value loses a trailing ` # comment`.
fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote) {
            if let Some(end) = inner.find(quote) {
                return inner[..end].to_string();
            }
        }
    }
    let value = value.split_once(" #").map_or(value, |(v, _)| v);
    value.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("test CIDR")).collect()
    }

    #[test]
    fn parses_what_flanneld_writes() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\
                    FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";
        let env = parse(text).expect("valid file");
        assert_eq!(env.networks, nets(&["10.244.0.0/16"]));
        assert_eq!(env.subnets, nets(&["10.244.1.0/24"]));
        assert_eq!(env.mtu, Some(1450));
        assert_eq!(env.ipmasq, Some(true));
    }

    #[test]
    fn dual_stack_and_comma_lists() {
        let text = "FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n\
                    FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\n";
        let env = parse(text).expect("valid file");
        assert_eq!(env.networks, nets(&["10.244.0.0/16", "10.245.0.0/16", "fd00:10:244::/56"]));
        assert_eq!(env.subnets, nets(&["10.244.3.0/24", "fd00:10:244:3::/64"]));
        assert_eq!((env.mtu, env.ipmasq), (None, None));
    }

    #[test]
    fn ipv6_only_is_fine() {
        let env = parse("FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:5::1/64\n").expect("ok");
        assert_eq!(env.networks, nets(&["fd00::/48"]));
        assert_eq!(env.subnets, nets(&["fd00:0:0:5::/64"]));
    }

    #[test]
    fn tolerates_quotes_export_spaces_comments_and_unknown_keys() {
        let text = "# written by flanneld\n\
                    export FLANNEL_NETWORK = \"10.244.0.0/16\"\n\
                    FLANNEL_SUBNET='10.244.7.1/24'\n\
                    FLANNEL_MTU=1450 # vxlan\n\
                    FLANNEL_IPMASQ=False\n\
                    FLANNEL_SOMETHING_NEW=whatever\n\
                    garbage line\n";
        let env = parse(text).expect("valid file");
        assert_eq!(env.networks, nets(&["10.244.0.0/16"]));
        assert_eq!(env.subnets, nets(&["10.244.7.0/24"]));
        assert_eq!(env.mtu, Some(1450));
        assert_eq!(env.ipmasq, Some(false));
    }

    #[test]
    fn invalid_cidr_names_key_and_value() {
        let err = parse("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.300/24\n").unwrap_err();
        assert_eq!(err.to_string(), "FLANNEL_SUBNET: invalid CIDR \"10.244.1.300/24\"");
        let err = parse("FLANNEL_NETWORK=10.244.0.0/16,nonsense\n").unwrap_err();
        assert_eq!(err.to_string(), "FLANNEL_NETWORK: invalid CIDR \"nonsense\"");
    }

    #[test]
    fn invalid_mtu_and_ipmasq() {
        let err = parse("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_MTU=big\n").unwrap_err();
        assert_eq!(err.to_string(), "FLANNEL_MTU: invalid value \"big\" (expected a whole number)");
        let err = parse("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_IPMASQ=maybe\n").unwrap_err();
        assert_eq!(err.to_string(), "FLANNEL_IPMASQ: invalid value \"maybe\" (expected true or false)");
    }

    #[test]
    fn no_network_is_an_error() {
        assert!(matches!(parse(""), Err(Error::NoNetwork)));
        assert!(matches!(parse("FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_NETWORK=\n"), Err(Error::NoNetwork)));
        // Found by fuzzing: a network key holding only separators names no network.
        assert!(matches!(parse("export FLANNEL_NETWORK=,"), Err(Error::NoNetwork)));
        assert!(matches!(parse("FLANNEL_NETWORK= , ,\nFLANNEL_IPV6_NETWORK=,"), Err(Error::NoNetwork)));
    }

    #[test]
    fn read_reports_the_path() {
        let err = read(Path::new("/nonexistent/kubenat/subnet.env")).unwrap_err();
        assert!(err.to_string().starts_with("reading /nonexistent/kubenat/subnet.env: "), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("subnet.env");
        fs::write(&path, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\n").expect("write");
        assert_eq!(read(&path).expect("read").subnets, nets(&["10.244.2.0/24"]));
    }
}
