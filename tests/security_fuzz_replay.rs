//! Replays the fuzzing corpus without a fuzzer: every committed seed (`fuzz/corpus/<target>/`)
//! and every saved crash input (`fuzz/regressions/<target>/`) goes through the same checks
//! the fuzz targets run (`fuzz/checks.rs`), on every `cargo test`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("iptables_parse", checks::iptables_parse),
    ("manifests", checks::manifests),
    ("subnet_env", checks::subnet_env),
    ("dump_diff", checks::dump_diff),
];

/// Runs every file under `dir/<target>/` through its check; returns how many ran.
fn replay(dir: &str) -> usize {
    let mut ran = 0;
    for (target, check) in TARGETS {
        let path = Path::new(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&path) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} breaks the check", file.display());
            ran += 1;
        }
    }
    ran
}

#[test]
fn committed_seed_corpus_passes_every_check() {
    let ran = replay("fuzz/corpus");
    assert!(ran >= 20, "only {ran} seeds found under fuzz/corpus");
}

#[test]
fn saved_crash_inputs_stay_fixed() {
    replay("fuzz/regressions");
}
