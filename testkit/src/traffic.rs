//! Real bytes between namespaces: an identity server (TCP or UDP) that answers every request
//! with its own name and the client address it saw, and a client that reports what happened
//! (answer, refused, unreachable, timeout). Both are `python3` children run under
//! `ip netns exec`, so no test thread ever changes namespace.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::netns::NetNs;
use super::process::{self, Spawned};

/// How long a server may take to start listening.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server lives without traffic before it exits by itself (the guard kills it sooner).
const SERVER_IDLE_SECONDS: &str = "120";

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP: connect, read the answer until EOF.
    Tcp,
    /// UDP: send one datagram, read one back.
    Udp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The python interpreter: the system one when present (fast, no shims), else `python3`.
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// argv: proto name port idle_seconds. Dual-stack when IPv6 is available.
const SERVER_PY: &str = r#"
import socket, sys
proto, name, port, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
try:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
except OSError:
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(128)
s.settimeout(idle)
def answer(addr):
    host = addr[0][7:] if addr[0].startswith("::ffff:") else addr[0]
    return ("%s %s\n" % (name, host)).encode()
print("ready", flush=True)
try:
    while True:
        if proto == "tcp":
            c, addr = s.accept()
            try:
                c.settimeout(2)
                c.sendall(answer(addr))
            except OSError:
                pass
            finally:
                c.close()
        else:
            data, addr = s.recvfrom(2048)
            s.sendto(answer(addr), addr)
except (TimeoutError, KeyboardInterrupt):
    pass
"#;

/// argv: proto host port timeout_seconds count. One result line per attempt.
const CLIENT_PY: &str = r#"
import errno, socket, sys
proto, host, port, timeout, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
def attempt():
    if proto == "tcp":
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((host, port))
        data = b""
        while len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(b"hello\n")
        data = s.recv(4096)
    s.close()
    return "ok " + data.decode(errors="replace").strip()
for _ in range(count):
    try:
        print(attempt())
    except TimeoutError:
        print("timeout")
    except ConnectionRefusedError:
        print("refused")
    except OSError as e:
        if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            print("unreachable")
        else:
            print("error " + str(e).replace("\n", " "))
    sys.stdout.flush()
"#;

/// An identity server running inside a namespace; killed when dropped.
pub struct Server {
    /// The name it answers with.
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// The port it listens on (all addresses).
    pub port: u16,
    _child: Spawned,
}

impl Server {
    /// Starts a server in `ns` on `port` that answers `"<name> <client ip>"`; waits until it listens.
    pub fn start(ns: &NetNs, proto: Proto, port: u16, name: &str) -> Server {
        let port_text = port.to_string();
        let argv = ns.argv(&[python(), "-c", SERVER_PY, proto.as_str(), name, &port_text, SERVER_IDLE_SECONDS]);
        let child = Spawned::until_ready(&argv, SERVER_READY_TIMEOUT);
        Server { name: name.to_string(), proto, port, _child: child }
    }
}

/// What one request ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A server answered: its name and the client address it saw (masqueraded or not).
    Answer {
        /// The server's name.
        server: String,
        /// The source address the server saw.
        client: IpAddr,
    },
    /// Connection refused: TCP RST or ICMP port unreachable (what `-j REJECT` sends).
    Refused,
    /// ICMP host/network unreachable.
    Unreachable,
    /// No answer within the timeout (dropped, or DNAT reply not un-NATed).
    Timeout,
    /// Anything else, with the client's message.
    Other(String),
}

impl Reply {
    /// The answering server's name, if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            Reply::Answer { server, .. } => Some(server),
            _ => None,
        }
    }

    fn parse(line: &str) -> Reply {
        let line = line.trim();
        match line {
            "timeout" => return Reply::Timeout,
            "refused" => return Reply::Refused,
            "unreachable" => return Reply::Unreachable,
            _ => {}
        }
        let answer = line.strip_prefix("ok ").and_then(|rest| {
            let (server, client) = rest.split_once(' ')?;
            Some(Reply::Answer { server: server.to_string(), client: client.parse().ok()? })
        });
        answer.unwrap_or_else(|| Reply::Other(line.to_string()))
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Answer { server, client } => {
                write!(f, "answer from {server} (saw client {client})")
            }
            Reply::Refused => f.write_str("refused"),
            Reply::Unreachable => f.write_str("unreachable"),
            Reply::Timeout => f.write_str("timeout"),
            Reply::Other(msg) => write!(f, "error: {msg}"),
        }
    }
}

/// Makes `count` requests (each a new connection / socket, so each is a new conntrack flow)
/// from inside `ns` to `to`, each bounded by `timeout` (at most 5 s).
pub fn requests(ns: &NetNs, proto: Proto, to: SocketAddr, timeout: Duration, count: usize) -> Vec<Reply> {
    assert!(timeout <= Duration::from_secs(5), "keep waits short");
    let (host, port) = (to.ip().to_string(), to.port().to_string());
    let (secs, n) = (format!("{:.3}", timeout.as_secs_f64()), count.to_string());
    let argv = ns.argv(&[python(), "-c", CLIENT_PY, proto.as_str(), &host, &port, &secs, &n]);
    // Python start-up plus `count` bounded attempts, with slack.
    let limit = Duration::from_secs(3) + timeout * 2 * u32::try_from(count).unwrap_or(u32::MAX);
    let out = process::run(&argv, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<Reply> = stdout.lines().map(Reply::parse).collect();
    assert_eq!(
        replies.len(),
        count,
        "client printed {} results for {count} attempts; stderr:\n{}",
        replies.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    replies
}

/// One request; see [`requests`].
pub fn request(ns: &NetNs, proto: Proto, to: SocketAddr, timeout: Duration) -> Reply {
    requests(ns, proto, to, timeout, 1).remove(0)
}

/// How many of `replies` each server answered (`"refused"`, `"timeout"` … counted by kind).
pub fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        let key = match r {
            Reply::Answer { server, .. } => server.clone(),
            other => other.to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
