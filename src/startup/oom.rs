//! The process's OOM score (`oomScoreAdj`, −999 by default), as kube-proxy sets its own at
//! start so the kernel kills it last.

use std::path::Path;

/// Writes `value` to `/proc/self/oom_score_adj` (or `path`, for tests) and reads it back.
pub fn set_oom_score_adj_at(path: &Path, value: i32) -> std::io::Result<i32> {
    std::fs::write(path, value.to_string())?;
    let read = std::fs::read_to_string(path)?;
    read.trim().parse().map_err(|_| std::io::Error::other(format!("{} reads {read:?}", path.display())))
}

/// Sets this process's OOM score adjustment; lowering it needs CAP_SYS_RESOURCE.
pub fn set_oom_score_adj(value: i32) -> std::io::Result<i32> {
    set_oom_score_adj_at(Path::new("/proc/self/oom_score_adj"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oom_score_adj");
        assert_eq!(set_oom_score_adj_at(&path, -999).unwrap(), -999);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "-999");
        assert!(set_oom_score_adj_at(&dir.path().join("missing/x"), 1).is_err());
    }

    #[test]
    fn raising_our_own_score_works_without_privileges() {
        // Raising is always allowed; the kernel reads back what was written.
        let current: i32 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
        let higher = (current + 1).min(1000);
        assert_eq!(set_oom_score_adj(higher).unwrap(), higher);
    }
}
