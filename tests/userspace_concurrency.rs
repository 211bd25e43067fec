//! The userspace TCP proxy holds as many concurrent connections as its open-file limit allows
//! (10,000 when the limit is high enough), all open at the same time, each one echoing.
//!
//! Only the proxy (this test process) pays two descriptors per connection: the clients and the
//! echo backend run in separate python processes. The count is computed from the actual hard
//! `RLIMIT_NOFILE` at run time — `(hard - reserve) / 2`, capped at 10,000 — so on a host whose
//! limit cannot hold 10,000 proxied connections the largest count that fits is tested. This is
//! its own test binary so parallel tests are not starved of descriptors. Traffic stays on
//! 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubenat::userspace::{serve_tcp, Balancer, Limits, PipePool, PoolConfig, SharedBalancer};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio_util::sync::CancellationToken;

/// The issue's target.
const TARGET: u64 = 10_000;
/// Pipes in the relay's pool during the test (two descriptors each, counted in the reserve).
const PIPES: usize = 64;
/// Descriptors kept free beyond what the test process already holds and the pipe pool.
const MARGIN: u64 = 256;
/// Bounds on each phase.
const PHASE: Duration = Duration::from_secs(60);

/// argv: (none). Echo server on 127.0.0.1 (port printed first); exits when stdin closes.
const BACKEND_PY: &str = r#"
import asyncio, sys
async def echo(r, w):
    try:
        while True:
            b = await r.read(4096)
            if not b:
                break
            w.write(b)
            await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=16384)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(asyncio.wait_for(main(), 180))
"#;

/// argv: port n. Opens n connections (512 connects in flight), prints `open <ok> <errors>`,
/// waits for a line on stdin, sends each connection a distinct line, prints `echoed <m>` when
/// all answered (or timed out), then closes them all.
const CLIENT_PY: &str = r#"
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def main():
    sem = asyncio.Semaphore(512)
    conns, errors = [], []
    async def one(i):
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 20)
                conns.append((i, r, w))
            except Exception as e:
                errors.append(repr(e))
    await asyncio.gather(*(one(i) for i in range(n)))
    print("open %d %d %s" % (len(conns), len(errors), errors[:1]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async def ping(i, r, w):
        msg = b"%d\n" % i
        w.write(msg)
        await w.drain()
        return await asyncio.wait_for(r.readexactly(len(msg)), 30) == msg
    ok = await asyncio.gather(*(ping(*c) for c in conns), return_exceptions=True)
    print("echoed %d" % sum(1 for x in ok if x is True), flush=True)
    for _, _, w in conns:
        w.close()
asyncio.run(main())
"#;

/// A child process with its stdout lines on a channel; killed and reaped on drop.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Helper {
    fn start(script: &str, args: &[&str]) -> Helper {
        let python = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut child = Command::new(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, stdin, lines }
    }

    fn line(&self, what: &str) -> String {
        self.lines.recv_timeout(PHASE).unwrap_or_else(|e| panic!("{what}: no line within {PHASE:?} ({e})"))
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).and_then(|()| stdin.flush()).expect("write to helper");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0)
}

/// Raises the soft open-file limit to the hard one and returns it.
fn raise_nofile() -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit soft = hard");
    }
    hard
}

#[test]
fn proxy_holds_the_largest_connection_count_the_fd_limit_allows_and_all_echo() {
    let hard = raise_nofile();
    let reserve = open_fds() + 2 * PIPES as u64 + MARGIN;
    let count = (hard.saturating_sub(reserve) / 2).min(TARGET);
    assert!(count >= 1_000, "open-file hard limit {hard} is too low for a meaningful concurrency test");
    eprintln!("open-file hard limit {hard}: testing {count} concurrent proxied connections (target {TARGET})");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let backend = Helper::start(BACKEND_PY, &[]);
    let backend_port: u16 = backend.line("backend port").trim().parse().expect("backend prints its port");
    let backend_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), backend_port);

    let shutdown = CancellationToken::new();
    let pool = Arc::new(PipePool::new(PoolConfig { max_pipes: PIPES, ..PoolConfig::default() }));
    let proxy_addr = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).expect("bind");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let mut balancer = Balancer::new(None);
        balancer.update(vec![backend_addr]);
        let balancer: SharedBalancer = Arc::new(Mutex::new(balancer));
        let limits = Limits { max_connections: count as usize + 64, pipes: Some(pool.clone()) };
        tokio::spawn(serve_tcp(listener, balancer, limits, shutdown.clone()));
        addr
    });
    let before = open_fds();

    let started = Instant::now();
    let (port, n) = (proxy_addr.port().to_string(), count.to_string());
    let mut client = Helper::start(CLIENT_PY, &[&port, &n]);
    let opened = client.line("client connects");
    assert!(opened.starts_with(&format!("open {count} 0")), "client: {opened}");
    let open_time = started.elapsed();

    // Every connection is held at once: the proxy has both sides of each open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = open_fds();
    while held < before + 2 * count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = open_fds();
    }
    assert!(held >= before + 2 * count, "proxy holds {held} descriptors, want ≥ {} + 2 × {count}", before);

    let pinged = Instant::now();
    client.say("go");
    let echoed = client.line("client echoes");
    assert_eq!(echoed, format!("echoed {count}"), "every connection echoes");
    eprintln!(
        "{count} connections open at once in {:.2}s (proxy: {held} descriptors), all echoed in {:.2}s; pipes {:?}",
        open_time.as_secs_f64(),
        pinged.elapsed().as_secs_f64(),
        pool.stats()
    );
    drop(client);
    shutdown.cancel();
    drop(backend);
    runtime.shutdown_timeout(Duration::from_secs(5));
}
