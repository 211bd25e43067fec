//! Golden files: compare rendered text with a checked-in expectation, or write it when
//! `KUBENAT_BLESS=1` is set (a deliberate, reviewed regeneration).

use std::path::Path;

/// Asserts `actual` equals the file at `path` (or writes it under `KUBENAT_BLESS=1`), showing
/// the first differing lines on failure.
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("KUBENAT_BLESS").is_some() {
        std::fs::write(path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with KUBENAT_BLESS=1 to create it)", path.display()));
    if actual == expected {
        return;
    }
    let diff: Vec<String> = expected
        .lines()
        .zip(actual.lines())
        .enumerate()
        .filter(|(_, (e, a))| e != a)
        .take(5)
        .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
        .collect();
    panic!(
        "{} differs from the rendered rules ({} vs {} lines):\n{}\n--- actual ---\n{actual}",
        path.display(),
        expected.lines().count(),
        actual.lines().count(),
        diff.join("\n")
    );
}
