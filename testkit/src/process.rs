//! Child processes for tests: bounded one-shot commands and long-running children that are
//! killed (by their own pid) when their guard drops.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Default limit for one-shot commands (`ip`, `iptables-save`, `sysctl` …).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `argv` (no shell) and waits at most `timeout`; panics if it cannot start or hangs.
pub fn run(argv: &[&str], timeout: Duration) -> Output {
    let (program, args) = argv.split_first().expect("empty argv");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_bounded(&mut child, timeout)
        .unwrap_or_else(|| panic!("{argv:?} did not finish within {timeout:?}; killed it"));
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// Runs `argv`, panicking with its stderr unless it succeeds; returns stdout.
pub fn run_ok(argv: &[&str]) -> String {
    let out = run(argv, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "{argv:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` at most `timeout`; kills and reaps it and returns `None` on timeout.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A long-running child (a test server). Dropping it kills and reaps it.
pub struct Spawned {
    child: Child,
    what: String,
    stderr: Arc<Mutex<String>>,
}

impl Spawned {
    /// Starts `argv` and waits at most `timeout` for it to print `ready` on stdout.
    pub fn until_ready(argv: &[&str], timeout: Duration) -> Spawned {
        let (program, args) = argv.split_first().expect("empty argv");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err_pipe).read_to_string(&mut text);
            if let Ok(mut s) = sink.lock() {
                s.push_str(&text);
            }
        });
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut spawned = Spawned { child, what: format!("{argv:?}"), stderr };
        match rx.recv_timeout(timeout) {
            Ok(line) if line.trim() == "ready" => spawned,
            outcome => {
                let _ = spawned.child.kill();
                let _ = spawned.child.wait();
                thread::sleep(Duration::from_millis(50)); // let the stderr reader finish
                panic!(
                    "{} did not print `ready` within {timeout:?} (got {outcome:?}); stderr:\n{}",
                    spawned.what,
                    spawned.stderr()
                );
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
