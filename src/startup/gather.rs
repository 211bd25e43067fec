//! The I/O half of the startup checks: reads the sysctls (from a `/proc` tree, or inside a
//! network namespace) and counts flannel's chains in both iptables backends. Judging is `evaluate`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tracing::debug;

use super::{Facts, FlannelRules, Sysctl, SysctlValue};
use crate::apply::exec::{Backend, ExecIptables, Iptables};
use crate::model::IpFamily;

/// How long one save tool may run while gathering.
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a sysctl could not be read (gathering records it as [`SysctlValue::Unreadable`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but reading it failed. Not retryable.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `ip netns exec` could not be started. Not retryable.
    #[error("running ip netns exec {netns}: {source}")]
    Spawn {
        /// The namespace.
        netns: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `ip netns exec NS cat FILE` failed other than with a missing file (e.g. no such
    /// namespace). Not retryable.
    #[error("ip netns exec {netns} cat {path} failed: {stderr}")]
    Netns {
        /// The namespace.
        netns: String,
        /// The file.
        path: String,
        /// What it printed.
        stderr: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where sysctls are read from. `/proc/sys/net` belongs to the reader's network namespace, so
/// a namespace other than our own is read by a process started inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlReader {
    /// Files under this root: `/` on a node, a fake tree in tests.
    Local(PathBuf),
    /// `ip netns exec NAME cat /proc/sys/…`: the sysctls of network namespace `NAME`.
    Netns(String),
}

impl SysctlReader {
    /// Reads `sysctl`; problems become [`SysctlValue::Unreadable`].
    pub fn read(&self, sysctl: Sysctl) -> SysctlValue {
        value_of(self.read_text(sysctl))
    }

    /// The file's text, `None` when it does not exist.
    pub fn read_text(&self, sysctl: Sysctl) -> Result<Option<String>> {
        match self {
            SysctlReader::Local(root) => read_local(&root.join(sysctl.path())),
            SysctlReader::Netns(name) => read_in_netns(name, &format!("/{}", sysctl.path())),
        }
    }
}

/// A file's text as a [`SysctlValue`]: a number, missing, or why not.
pub(super) fn value_of(text: Result<Option<String>>) -> SysctlValue {
    match text {
        Ok(None) => SysctlValue::Missing,
        Ok(Some(text)) => match text.trim().parse() {
            Ok(n) => SysctlValue::Set(n),
            Err(_) => SysctlValue::Unreadable(format!("it holds {:?}, not a number", text.trim())),
        },
        Err(err) => SysctlValue::Unreadable(err.to_string()),
    }
}

/// The text of the file at `path`, `None` when it does not exist.
pub(super) fn read_local(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path: path.to_path_buf(), source }),
    }
}

fn read_in_netns(netns: &str, path: &str) -> Result<Option<String>> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "cat", path])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { netns: netns.to_string(), source })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    // `cat` exits 1 naming the file; `ip netns exec` itself fails with 255.
    if out.status.code() == Some(1) && stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(Error::Netns { netns: netns.to_string(), path: path.to_string(), stderr: stderr.trim().to_string() })
}

/// Counts the lines of save output that belong to flannel's `FLANNEL-*` chains: declarations,
/// their rules, and jumps to them.
pub fn count_flannel_lines(save_text: &str) -> usize {
    save_text
        .lines()
        .filter(|l| l.starts_with(":FLANNEL-") || l.starts_with("-A FLANNEL-") || l.contains(" -j FLANNEL-"))
        .count()
}

/// flannel's lines in every loaded table of both families, or `None` when `ipt` could read
/// neither family (save tool missing or failing).
pub fn flannel_lines(ipt: &dyn Iptables) -> Option<usize> {
    let mut total = None;
    for family in [IpFamily::V4, IpFamily::V6] {
        // No table name: naming one would make the legacy kernel module create it.
        match ipt.save(family, None) {
            Ok(text) => *total.get_or_insert(0) += count_flannel_lines(&text),
            Err(err) => debug!(%family, error = %err, "save failed while looking for flannel's rules"),
        }
    }
    total
}

/// Reads every fact: the sysctls through `sysctls`, flannel's rules through the two backends.
/// Blocking.
pub fn gather(sysctls: &SysctlReader, legacy: &dyn Iptables, nft: &dyn Iptables) -> Facts {
    let facts = Facts {
        bridge_nf_call_iptables: sysctls.read(Sysctl::BridgeNfCallIptables),
        bridge_nf_call_ip6tables: sysctls.read(Sysctl::BridgeNfCallIp6tables),
        ip_forward: sysctls.read(Sysctl::IpForward),
        ipv6_forwarding: sysctls.read(Sysctl::Ipv6Forwarding),
        route_localnet: sysctls.read(Sysctl::RouteLocalnet),
        nf_conntrack_tcp_be_liberal: sysctls.read(Sysctl::NfConntrackTcpBeLiberal),
        flannel_rules: FlannelRules { legacy: flannel_lines(legacy), nft: flannel_lines(nft) },
    };
    debug!(?facts, "startup facts gathered");
    facts
}

/// [`gather`] on this host: `/proc` of our own namespace, the real legacy and nft save tools.
pub fn gather_host() -> Facts {
    let probe = |backend| ExecIptables { backend, netns: None, timeout: SAVE_TIMEOUT };
    gather(&SysctlReader::Local(PathBuf::from("/")), &probe(Backend::Legacy), &probe(Backend::Nft))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::exec::RestoreOptions;
    use crate::apply::fake::FakeIptables;

    /// A fake root with the given sysctl files.
    fn fake_proc(files: &[(Sysctl, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (sysctl, value) in files {
            let path = dir.path().join(sysctl.path());
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, value).expect("write");
        }
        dir
    }

    #[test]
    fn paths_follow_the_dotted_keys() {
        assert_eq!(Sysctl::IpForward.path(), "proc/sys/net/ipv4/ip_forward");
        assert_eq!(Sysctl::BridgeNfCallIptables.path(), "proc/sys/net/bridge/bridge-nf-call-iptables");
        assert_eq!(Sysctl::RouteLocalnet.path(), "proc/sys/net/ipv4/conf/all/route_localnet");
        assert_eq!(Sysctl::Ipv6Forwarding.path(), "proc/sys/net/ipv6/conf/all/forwarding");
    }

    #[test]
    fn reads_values_missing_files_and_garbage() {
        let dir =
            fake_proc(&[(Sysctl::IpForward, "1\n"), (Sysctl::RouteLocalnet, "0\n"), (Sysctl::Ipv6Forwarding, "yes")]);
        let reader = SysctlReader::Local(dir.path().to_path_buf());
        assert_eq!(reader.read(Sysctl::IpForward), SysctlValue::Set(1));
        assert_eq!(reader.read(Sysctl::RouteLocalnet), SysctlValue::Set(0));
        assert_eq!(reader.read(Sysctl::BridgeNfCallIptables), SysctlValue::Missing);
        assert_eq!(
            reader.read(Sysctl::Ipv6Forwarding),
            SysctlValue::Unreadable("it holds \"yes\", not a number".into())
        );
    }

    #[test]
    fn a_directory_where_a_file_should_be_is_unreadable() {
        let dir = fake_proc(&[]);
        std::fs::create_dir_all(dir.path().join(Sysctl::IpForward.path())).expect("mkdir");
        let value = SysctlReader::Local(dir.path().to_path_buf()).read(Sysctl::IpForward);
        assert!(matches!(&value, SysctlValue::Unreadable(why) if why.contains("ip_forward")), "{value:?}");
    }

    #[test]
    fn counts_flannel_declarations_rules_and_jumps_only() {
        let text = "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
                    -A POSTROUTING -j KUBE-POSTROUTING\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
                    -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j RETURN\nCOMMIT\n";
        assert_eq!(count_flannel_lines(text), 3);
        assert_eq!(count_flannel_lines(""), 0);
    }

    #[test]
    fn gathers_from_a_fake_tree_and_fake_backends() {
        let dir =
            fake_proc(&[(Sysctl::BridgeNfCallIptables, "1"), (Sysctl::IpForward, "0"), (Sysctl::RouteLocalnet, "1")]);
        let (legacy, nft) = (FakeIptables::new(), FakeIptables::new());
        let flannel = "*nat\n:FLANNEL-POSTRTG - [0:0]\n-A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n";
        legacy.restore(IpFamily::V4, flannel, RestoreOptions { noflush: true, counters: false }).expect("restore");
        let facts = gather(&SysctlReader::Local(dir.path().to_path_buf()), &legacy, &nft);
        assert_eq!(facts.bridge_nf_call_iptables, SysctlValue::Set(1));
        assert_eq!(facts.bridge_nf_call_ip6tables, SysctlValue::Missing);
        assert_eq!(facts.ip_forward, SysctlValue::Set(0));
        assert_eq!(facts.route_localnet, SysctlValue::Set(1));
        assert_eq!(facts.flannel_rules, FlannelRules { legacy: Some(2), nft: Some(0) });
    }

    #[test]
    fn a_missing_save_tool_is_none() {
        let ipt =
            ExecIptables { backend: Backend::Nft, netns: Some("knt-no-such-netns-x".into()), timeout: SAVE_TIMEOUT };
        // Either `ip` is missing or the namespace is: both families fail.
        assert_eq!(flannel_lines(&ipt), None);
    }
}
