//! Watching the `--config` file: kube-proxy exits when its configuration file is written or
//! renamed, so that the kubelet restarts it with the new file (it never reloads in place).
//! kubenat polls the file once a second and compares what a write, a rename or a ConfigMap
//! update (the kubelet swaps the `..data` symlink the file's path goes through) changes: the
//! resolved path, the inode, the modification time, the size and the content. A removed file is
//! not a change (a restart could not read it); a file put back is compared with the original.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// How often the file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    resolved: Option<PathBuf>,
    inode: Option<(u64, u64)>,
    modified: Option<(i64, i64)>,
    size: Option<u64>,
    content: Option<[u8; 32]>,
}

impl Fingerprint {
    fn of(path: &Path) -> Fingerprint {
        let meta = std::fs::metadata(path).ok();
        Fingerprint {
            resolved: std::fs::canonicalize(path).ok(),
            inode: meta.as_ref().map(|m| (m.dev(), m.ino())),
            modified: meta.as_ref().map(|m| (m.mtime(), m.mtime_nsec())),
            size: meta.as_ref().map(MetadataExt::size),
            content: std::fs::read(path).ok().map(|bytes| Sha256::digest(bytes).into()),
        }
    }

    /// What differs from `earlier`, in words (`None`: nothing).
    fn change_since(&self, earlier: &Fingerprint) -> Option<&'static str> {
        if self.resolved.is_none() {
            // kube-proxy ignores a removal too: a restart now could not read the file.
            None
        } else if self.resolved != earlier.resolved {
            Some("replaced (its path now leads to another file)")
        } else if self.inode != earlier.inode {
            Some("replaced by another file (renamed over)")
        } else if self.content != earlier.content || self.size != earlier.size {
            Some("rewritten")
        } else if self.modified != earlier.modified {
            Some("written")
        } else {
            None
        }
    }
}

/// Watches one file from the moment it is created.
#[derive(Debug)]
pub struct ConfigWatch {
    path: PathBuf,
    start: Fingerprint,
}

impl ConfigWatch {
    /// Takes the file's current fingerprint.
    pub fn new(path: PathBuf) -> ConfigWatch {
        let start = Fingerprint::of(&path);
        ConfigWatch { path, start }
    }

    /// Whether the file changed since `new`, and how.
    pub fn check(&self) -> Option<String> {
        let now = Fingerprint::of(&self.path);
        now.change_since(&self.start).map(|how| format!("{} was {how}", self.path.display()))
    }

    /// Resolves with a description once the file changes (checked every `interval`); never
    /// resolves after `shutdown`.
    pub async fn changed(self, interval: Duration, shutdown: CancellationToken) -> String {
        let mut ticker = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => std::future::pending::<()>().await,
            }
            let watch = ConfigWatch { path: self.path.clone(), start: self.start.clone() };
            if let Ok(Some(change)) = tokio::task::spawn_blocking(move || watch.check()).await {
                return change;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_and_renames_but_not_removal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.conf");
        std::fs::write(&file, "a").unwrap();
        let watch = ConfigWatch::new(file.clone());
        assert_eq!(watch.check(), None, "untouched");
        std::fs::write(&file, "b").unwrap();
        assert!(watch.check().unwrap().contains("rewritten"));

        let other = dir.path().join("new.conf");
        std::fs::write(&other, "a").unwrap();
        let watch = ConfigWatch::new(file.clone());
        std::fs::rename(&other, &file).unwrap();
        assert!(watch.check().unwrap().contains("replaced"), "{:?}", watch.check());

        let watch = ConfigWatch::new(file.clone());
        std::fs::remove_file(&file).unwrap();
        assert_eq!(watch.check(), None, "a removed file is not a change");
    }

    #[test]
    fn sees_a_config_map_update() {
        // The kubelet's layout: config.conf -> ..data/config.conf, ..data -> ..2026_v1.
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..2026_v1");
        let v2 = dir.path().join("..2026_v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("config.conf"), "mode: iptables\n").unwrap();
        std::fs::write(v2.join("config.conf"), "mode: iptables\n").unwrap();
        std::os::unix::fs::symlink("..2026_v1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.conf", dir.path().join("config.conf")).unwrap();
        let watch = ConfigWatch::new(dir.path().join("config.conf"));
        assert_eq!(watch.check(), None);
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink("..2026_v2", &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
        assert!(watch.check().unwrap().contains("replaced"), "{:?}", watch.check());
    }

    #[tokio::test]
    async fn changed_resolves_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.conf");
        std::fs::write(&file, "a").unwrap();
        let watch = ConfigWatch::new(file.clone());
        let task = tokio::spawn(watch.changed(Duration::from_millis(20), CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::write(&file, "bb").unwrap();
        let change = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert!(change.contains("config.conf"), "{change}");
    }
}
