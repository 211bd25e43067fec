//! `kubenat diff` as a user runs it: the built binary on fixture dumps, checking exit codes
//! (0 equal, 1 different, 2 error), the report on stdout and the error on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dumps").join(name)
}

fn kubenat_diff(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubenat"))
        .arg("diff")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubenat");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // kubenat may exit before reading (bad arguments): a broken pipe is not the test's concern.
    let _ = pipe.write_all(stdin.unwrap_or_default().as_bytes());
    drop(pipe);
    child.wait_with_output().expect("wait for kubenat")
}

fn run(a: &str, b: &str, extra: &[&str]) -> (i32, String, String) {
    let (a, b) = (fixture(a), fixture(b));
    let mut args = vec![a.to_str().unwrap(), b.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = kubenat_diff(&args, None);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn equal_dumps_exit_0_silently() {
    let cases = [
        ("kube-proxy-v4.restore", "kube-proxy-v4-nft.save"),
        ("kube-proxy-v4.restore", "kube-proxy-v4-legacy.save"),
        ("kube-proxy-v4-counters.save", "kube-proxy-v4.restore"),
        ("reference-2.6.save", "kube-proxy-v4-legacy.save"),
        ("extras-v4.restore", "extras-v4-nft.save"),
        ("kube-proxy-v6.restore", "kube-proxy-v6-legacy.save"),
    ];
    for (a, b) in cases {
        for extra in [&[][..], &["--kube-only"], &["--quiet"]] {
            let (code, stdout, stderr) = run(a, b, extra);
            assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""), "{a} {b} {extra:?}");
        }
    }
}

#[test]
fn different_dumps_exit_1_with_a_report() {
    let (code, stdout, stderr) = run("kube-proxy-v4.restore", "extras-v4-nft.save", &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.starts_with("*mangle\nchain only in A: KUBE-IPTABLES-HINT\n"), "{stdout}");
    assert!(stdout.contains("chain only in A: KUBE-SVC-CDGGSHYLG3RE2FKL\n"), "{stdout}");
    assert!(stdout.contains("chain only in B: KUBE-SVC-7KVJZ3HXMCNQ2LPA\n"), "{stdout}");
    assert!(
        stdout.contains(
            "+ -A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment \"default/api:https cluster IP\""
        ),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains(" rules only in A, "), "{summary}");

    let (code, stdout, _) = run("kube-proxy-v4.restore", "extras-v4-nft.save", &["--quiet"]);
    assert_eq!((code, stdout.as_str()), (1, ""));

    // The counters dump was loaded with a DROP policy on filter FORWARD; the reference
    // dump declares ACCEPT. Built-in policies are not kube-proxy's, so --kube-only ignores it.
    let (a, b) = ("reference-2.6.save", "kube-proxy-v4-counters-legacy.save");
    let (code, stdout, _) = run(a, b, &[]);
    assert_eq!(
        (code, stdout.as_str()),
        (
            1,
            "*filter\nchain FORWARD:\n! policy ACCEPT in A, DROP in B\n\
             0 rules only in A, 0 only in B, 1 other differences\n"
        )
    );
    assert_eq!(run(a, b, &["--kube-only"]).0, 0);
}

#[test]
fn stdin_is_one_of_the_dumps() {
    let text = std::fs::read_to_string(fixture("kube-proxy-v4-nft.save")).unwrap();
    let restore = fixture("kube-proxy-v4.restore");
    let out = kubenat_diff(&[restore.to_str().unwrap(), "-"], Some(&text));
    assert_eq!(out.status.code(), Some(0));
    let changed = text.replace("0.50000000000", "0.25000000000");
    let out = kubenat_diff(&["-", restore.to_str().unwrap()], Some(&changed));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--probability 0.25000000000"));
    let out = kubenat_diff(&["-", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only one of A and B"));
}

#[test]
fn broken_dumps_exit_2_naming_file_and_line() {
    let cases = [
        ("broken-truncated.save", "line 46: table nat has no COMMIT"),
        ("broken-quote.restore", "line 54: unterminated quote: -A KUBE-SERVICES"),
        ("no-such-file.save", "reading "),
    ];
    for (broken, message) in cases {
        for (a, b) in [(broken, "kube-proxy-v4.restore"), ("kube-proxy-v4.restore", broken)] {
            let (code, stdout, stderr) = run(a, b, &[]);
            assert_eq!(code, 2, "{a} {b}: {stderr}");
            assert_eq!(stdout, "");
            assert!(stderr.starts_with("kubenat: error: "), "{stderr}");
            assert!(stderr.contains(broken), "{stderr}");
            assert!(stderr.contains(message), "{stderr}");
        }
    }
}
