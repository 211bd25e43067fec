//! Runs one child process with optional stdin, collecting its output, bounded by a deadline.
//! Knows nothing about iptables; `exec` turns its outcomes into iptables errors.

use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a finished process left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr, lossily decoded.
    pub stderr: String,
}

/// Why a process did not finish.
#[derive(Debug)]
pub(crate) enum RunError {
    /// `spawn` failed (`NotFound` when the program does not exist).
    Spawn(io::Error),
    /// Waiting for the process failed.
    Wait(io::Error),
    /// The deadline passed; the process was killed.
    Timeout,
}

/// Runs `argv` (program first, no shell), feeding `stdin` and waiting at most `timeout`.
pub(crate) fn run(argv: &[String], stdin: Option<&[u8]>, timeout: Duration) -> Result<Finished, RunError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(RunError::Spawn(io::Error::new(io::ErrorKind::InvalidInput, "empty command")));
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;

    // Write and read on threads so a large input cannot deadlock against a full output pipe.
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => {
            let bytes = bytes.to_vec();
            // A process that fails early closes its stdin: the exit status tells the story.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);

    let status = wait_until(&mut child, Instant::now() + timeout);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.map(collect).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.map(collect).unwrap_or_default()).into_owned();
    Ok(Finished { status: status?, stdout, stderr })
}

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn collect(handle: JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// Polls the child until it exits or `deadline` passes (then kills and reaps it).
fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus, RunError> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(RunError::Wait)? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn feeds_stdin_and_collects_output() {
        let input = "line\n".repeat(100_000);
        let done = run(&argv(&["cat"]), Some(input.as_bytes()), Duration::from_secs(10)).unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout.len(), input.len());
    }

    #[test]
    fn missing_program_is_not_found() {
        match run(&argv(&["kubenat-no-such-binary"]), None, Duration::from_secs(1)) {
            Err(RunError::Spawn(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn kills_on_timeout() {
        let start = Instant::now();
        let outcome = run(&argv(&["sleep", "5"]), None, Duration::from_millis(100));
        assert!(matches!(outcome, Err(RunError::Timeout)), "{outcome:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
