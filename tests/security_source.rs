//! No shell is ever invoked: every process kubenat starts gets its arguments as argv. A scan
//! of `src/` fails on anything that would start a shell or hand it a command string.

use std::path::{Path, PathBuf};

/// Programs that interpret a command string.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ash", "busybox", "/bin/sh", "/bin/bash", "/usr/bin/env"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether a line of code starts a shell or hands a program a `-c` command string.
fn starts_a_shell(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or_default();
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    SHELLS.iter().any(|sh| compact.contains(&format!("Command::new(\"{sh}\")")))
        || compact.contains("\"-c\"")
        || code.contains("sh -c")
        || code.contains("bash -c")
        || compact.contains("\"/bin/sh\"")
        || compact.contains("\"/bin/bash\"")
}

/// Every `(file, line, text)` in `src/` that starts a shell or passes `-c` to a program.
fn shell_uses() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    assert!(files.len() > 50, "src/ not found from {:?}", std::env::current_dir());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if starts_a_shell(line) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_shell_is_started_from_src() {
    let found = shell_uses();
    assert!(found.is_empty(), "a shell or `-c` command string in src/ (pass argv instead):\n{}", found.join("\n"));
}

#[test]
fn every_process_kubenat_starts_is_spawned_with_argv() {
    // The audited call sites: each builds `Command::new(program).args(list)`.
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut sites = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.contains("Command::new(") && !line.trim_start().starts_with("//") {
                sites.push(format!("{}:{}", file.display(), n + 1));
                let next = text.lines().skip(n).take(3).collect::<String>();
                assert!(
                    next.contains(".args(") || next.contains(".arg("),
                    "{}:{}: a command without an argv list",
                    file.display(),
                    n + 1
                );
            }
        }
    }
    assert!(!sites.is_empty(), "no process call sites found");
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    // A scan that cannot fail is worse than none: check it against lines it must catch.
    for bad in [
        r#"Command::new("sh").args(["-c", cmd])"#,
        r#"let out = Command::new( "bash" ).arg("-c").arg(script);"#,
        r#"run(&["/bin/sh", "-c", &line])"#,
        r#"format!("sh -c '{cmd}'")"#,
    ] {
        assert!(starts_a_shell(bad), "{bad}");
    }
    for fine in [r#"Command::new("ip").args(["netns", "exec", ns])"#, r#"// never `sh -c`"#, r#"Command::new(program)"#]
    {
        assert!(!starts_a_shell(fine), "{fine}");
    }
}
