//! Where node tuning reads and writes: [`ProcSysctls`] (the files under a root, `/` on a node)
//! and [`FakeSysctls`] (in memory, for tests); and the node's CPU count.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Knob;
use crate::startup::gather::{read_local, value_of};
use crate::startup::SysctlValue;

/// Reads and writes the values node tuning sets.
pub trait Sysctls {
    /// The value now; problems become [`SysctlValue::Missing`] / [`SysctlValue::Unreadable`].
    fn read(&self, knob: Knob) -> SysctlValue;
    /// Sets it to `value`.
    fn write(&self, knob: Knob, value: i64) -> io::Result<()>;
}

/// The real files, under `root`: `/proc/sys/…` and `/sys/module/nf_conntrack/…` of the
/// calling process (its network namespace, its mounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSysctls {
    root: PathBuf,
}

impl ProcSysctls {
    /// The files under `root` (a fake tree in tests).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcSysctls { root: root.into() }
    }

    /// This host's (`/`).
    pub fn host() -> Self {
        ProcSysctls::new("/")
    }

    fn file(&self, knob: Knob) -> PathBuf {
        self.root.join(knob.path())
    }
}

impl Sysctls for ProcSysctls {
    fn read(&self, knob: Knob) -> SysctlValue {
        value_of(read_local(&self.file(knob)))
    }

    fn write(&self, knob: Knob, value: i64) -> io::Result<()> {
        // Never create: a missing file (module not loaded) stays an error.
        let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(self.file(knob))?;
        file.write_all(value.to_string().as_bytes())
    }
}

/// An in-memory [`Sysctls`]: values that exist, values that refuse writes (like a read-only
/// `/proc/sys` or `nf_conntrack_max` outside the host's network namespace), and every write.
#[derive(Debug, Default)]
pub struct FakeSysctls {
    values: Mutex<BTreeMap<Knob, i64>>,
    read_only: BTreeSet<Knob>,
    writes: Mutex<Vec<(Knob, i64)>>,
}

impl FakeSysctls {
    /// These values exist; the others are missing.
    pub fn new(values: &[(Knob, i64)]) -> Self {
        FakeSysctls { values: Mutex::new(values.iter().copied().collect()), ..FakeSysctls::default() }
    }

    /// Writes to `knobs` fail with "permission denied".
    pub fn read_only(mut self, knobs: &[Knob]) -> Self {
        self.read_only.extend(knobs.iter().copied());
        self
    }

    /// The value now, `None` when missing.
    pub fn value(&self, knob: Knob) -> Option<i64> {
        self.values.lock().unwrap_or_else(|e| e.into_inner()).get(&knob).copied()
    }

    /// Every successful write, in order.
    pub fn writes(&self) -> Vec<(Knob, i64)> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Sysctls for FakeSysctls {
    fn read(&self, knob: Knob) -> SysctlValue {
        self.value(knob).map_or(SysctlValue::Missing, SysctlValue::Set)
    }

    fn write(&self, knob: Knob, value: i64) -> io::Result<()> {
        if self.read_only.contains(&knob) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = values.get_mut(&knob) else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        *slot = value;
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).push((knob, value));
        Ok(())
    }
}

/// How many CPUs a kernel CPU list names (`0-3,8-11` → 8); `None` when it is not one.
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        count += last.checked_sub(first)? + 1;
    }
    (count > 0).then_some(count)
}

/// The node's online CPUs (`/sys/devices/system/cpu/online`), as kube-proxy counts them for the
/// host-wide conntrack limit — not this process's CPU set; the CPUs this process may use when
/// that file cannot be read.
pub fn online_cpus() -> usize {
    online_cpus_at(Path::new("/sys/devices/system/cpu/online"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn online_cpus_at(path: &Path) -> Option<usize> {
    parse_cpu_list(&std::fs::read_to_string(path).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0,2,4-5"), Some(4));
        assert_eq!(parse_cpu_list("7"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn proc_files_are_read_written_and_never_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sysctls = ProcSysctls::new(dir.path());
        let path = dir.path().join(Knob::TcpTimeoutEstablished.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "432000\n").expect("write");
        assert_eq!(sysctls.read(Knob::TcpTimeoutEstablished), SysctlValue::Set(432_000));
        sysctls.write(Knob::TcpTimeoutEstablished, 86_400).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "86400", "truncated, not overwritten in place");
        assert_eq!(sysctls.read(Knob::UdpTimeout), SysctlValue::Missing);
        let err = sysctls.write(Knob::UdpTimeout, 30).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join(Knob::UdpTimeout.path()).exists());
    }

    #[test]
    fn fake_refuses_read_only_and_missing_values() {
        let fake = FakeSysctls::new(&[(Knob::ConntrackMax, 65_536), (Knob::RouteLocalnet, 0)])
            .read_only(&[Knob::ConntrackMax]);
        assert_eq!(fake.write(Knob::ConntrackMax, 131_072).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(fake.write(Knob::UdpTimeout, 1).unwrap_err().kind(), io::ErrorKind::NotFound);
        fake.write(Knob::RouteLocalnet, 1).expect("writable");
        assert_eq!(fake.read(Knob::RouteLocalnet), SysctlValue::Set(1));
        assert_eq!(fake.read(Knob::ConntrackMax), SysctlValue::Set(65_536));
        assert_eq!(fake.writes(), [(Knob::RouteLocalnet, 1)]);
    }
}
