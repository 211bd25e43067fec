//! The legacy userspace proxy over real sockets on 127.0.0.1: TCP round robin, dial retry past a
//! dead backend, client-IP affinity, no-endpoint close, shutdown, 1,000 concurrent connections;
//! UDP large datagrams, idle session expiry and the session bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubenat::userspace::{serve_tcp, serve_udp, Balancer, Limits, SharedBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A listener on 127.0.0.1 with a backlog deep enough for a burst of 1,000 connects (tokio's
/// default of 1,024 overflows into SYN cookies and resets under such a burst).
async fn listen() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(LOCALHOST, 0)).unwrap();
    socket.listen(4096).unwrap()
}

/// A TCP backend that writes its one-byte tag, then echoes until the client half-closes.
async fn tcp_backend(tag: u8) -> SocketAddr {
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                conn.write_all(&[tag]).await?;
                let (mut r, mut w) = conn.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    addr
}

/// A port with nothing listening on it.
async fn dead_port() -> SocketAddr {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    listener.local_addr().unwrap()
}

fn balancer(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> SharedBalancer {
    let mut b = Balancer::new(affinity);
    b.update(endpoints);
    Arc::new(Mutex::new(b))
}

async fn tcp_proxy(
    balancer: SharedBalancer,
    shutdown: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = listen().await;
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve_tcp(
        listener,
        balancer,
        Limits { max_connections: 2048, ..Limits::default() },
        shutdown.clone(),
    ));
    (addr, task)
}

/// Connects (from `source` when given), sends `payload`, half-closes, and returns the backend tag
/// and the echoed bytes.
async fn exchange(proxy: SocketAddr, source: Option<IpAddr>, payload: &[u8]) -> (u8, Vec<u8>) {
    let mut conn = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(proxy).await.unwrap()
        }
        None => TcpStream::connect(proxy).await.unwrap(),
    };
    conn.write_all(payload).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut reply = Vec::new();
    timeout(WAIT, conn.read_to_end(&mut reply)).await.expect("reply in time").unwrap();
    assert!(!reply.is_empty(), "connection closed without a backend");
    (reply[0], reply[1..].to_vec())
}

#[tokio::test]
async fn tcp_alternates_between_backends_and_echoes_after_half_close() {
    let shutdown = CancellationToken::new();
    let backends = vec![tcp_backend(b'A').await, tcp_backend(b'B').await];
    let (proxy, _) = tcp_proxy(balancer(backends, None), &shutdown).await;
    let mut tags = Vec::new();
    for i in 0..6 {
        let payload = format!("hello {i}");
        let (tag, echoed) = exchange(proxy, None, payload.as_bytes()).await;
        assert_eq!(echoed, payload.as_bytes());
        tags.push(tag);
    }
    assert_eq!(tags, b"ABABAB");
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_retries_past_a_dead_backend() {
    let shutdown = CancellationToken::new();
    let backends = vec![dead_port().await, tcp_backend(b'A').await];
    let (proxy, _) = tcp_proxy(balancer(backends, None), &shutdown).await;
    for _ in 0..10 {
        let (tag, echoed) = timeout(WAIT, exchange(proxy, None, b"ping")).await.unwrap();
        assert_eq!((tag, echoed.as_slice()), (b'A', &b"ping"[..]));
    }
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_affinity_pins_each_client_ip() {
    let shutdown = CancellationToken::new();
    let backends = vec![tcp_backend(b'A').await, tcp_backend(b'B').await];
    let (proxy, _) = tcp_proxy(balancer(backends, Some(Duration::from_secs(60))), &shutdown).await;
    let first = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let second = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (tag_first, _) = exchange(proxy, Some(first), b"x").await;
    let (tag_second, _) = exchange(proxy, Some(second), b"x").await;
    assert_ne!(tag_first, tag_second, "round robin gives the second client the other backend");
    for _ in 0..5 {
        assert_eq!(exchange(proxy, Some(first), b"x").await.0, tag_first);
        assert_eq!(exchange(proxy, Some(second), b"x").await.0, tag_second);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_without_endpoints_closes_the_client() {
    let shutdown = CancellationToken::new();
    let (proxy, _) = tcp_proxy(balancer(vec![], None), &shutdown).await;
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    let mut buf = [0u8; 1];
    let read = timeout(WAIT, conn.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "expected close, got {read:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn tcp_shutdown_stops_accepting_but_keeps_connections() {
    let shutdown = CancellationToken::new();
    let (proxy, task) = tcp_proxy(balancer(vec![tcp_backend(b'A').await], None), &shutdown).await;
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    let mut tag = [0u8; 1];
    timeout(WAIT, conn.read_exact(&mut tag)).await.unwrap().unwrap();
    shutdown.cancel();
    timeout(WAIT, task).await.expect("accept loop stops").unwrap();
    assert!(TcpStream::connect(proxy).await.is_err(), "listener closed");
    conn.write_all(b"still here").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, conn.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_thousand_concurrent_connections_complete() {
    let shutdown = CancellationToken::new();
    let backends = vec![tcp_backend(b'A').await, tcp_backend(b'B').await];
    let (proxy, _) = tcp_proxy(balancer(backends, None), &shutdown).await;
    let clients: Vec<_> = (0..1000u32)
        .map(|i| {
            tokio::spawn(async move {
                let payload = i.to_be_bytes().repeat(64);
                let mut conn = TcpStream::connect(proxy).await.map_err(|e| ("connect", e))?;
                conn.write_all(&payload).await.map_err(|e| ("write", e))?;
                conn.shutdown().await.map_err(|e| ("shutdown", e))?;
                let mut reply = Vec::new();
                conn.read_to_end(&mut reply).await.map_err(|e| ("read", e))?;
                Ok::<_, (&str, std::io::Error)>(reply.get(1..) == Some(payload.as_slice()))
            })
        })
        .collect();
    let results = timeout(Duration::from_secs(60), futures::future::join_all(clients)).await.expect("all done in time");
    let failures: Vec<String> =
        results.iter().filter(|r| !matches!(r, Ok(Ok(true)))).map(|r| format!("{r:?}")).collect();
    assert!(failures.is_empty(), "{} of 1000 failed, e.g. {:?}", failures.len(), failures.first());
    shutdown.cancel();
}

/// A UDP backend that replies with its tag byte followed by the datagram.
async fn udp_backend(tag: u8) -> SocketAddr {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, from)) = socket.recv_from(&mut buf[1..]).await {
            buf[0] = tag;
            let _ = socket.send_to(&buf[..len + 1], from).await;
        }
    });
    addr
}

async fn udp_proxy(
    balancer: SharedBalancer,
    idle: Duration,
    max_sessions: usize,
    shutdown: &CancellationToken,
) -> SocketAddr {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(serve_udp(socket, balancer, idle, max_sessions, shutdown.clone()));
    addr
}

async fn udp_client(proxy: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    socket.connect(proxy).await.unwrap();
    socket
}

async fn udp_ask(client: &UdpSocket, payload: &[u8], wait: Duration) -> Option<Vec<u8>> {
    client.send(payload).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let len = timeout(wait, client.recv(&mut buf)).await.ok()?.ok()?;
    Some(buf[..len].to_vec())
}

#[tokio::test]
async fn udp_large_datagram_round_trips_intact() {
    let shutdown = CancellationToken::new();
    let proxy = udp_proxy(balancer(vec![udp_backend(b'A').await], None), Duration::from_secs(5), 16, &shutdown).await;
    let client = udp_client(proxy).await;
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let reply = udp_ask(&client, &payload, WAIT).await.expect("reply");
    assert_eq!(reply.len(), 60_001);
    assert_eq!(reply[0], b'A');
    assert!(reply[1..] == payload[..]);
    shutdown.cancel();
}

#[tokio::test]
async fn udp_idle_sessions_expire_and_rebalance() {
    let shutdown = CancellationToken::new();
    let backends = vec![udp_backend(b'A').await, udp_backend(b'B').await];
    let idle = Duration::from_millis(200);
    let proxy = udp_proxy(balancer(backends, None), idle, 16, &shutdown).await;
    let client = udp_client(proxy).await;
    let first = udp_ask(&client, b"1", WAIT).await.expect("reply")[0];
    // Within the idle timeout the session (and so the backend) is kept.
    for _ in 0..3 {
        assert_eq!(udp_ask(&client, b"2", WAIT).await.expect("reply")[0], first);
    }
    // After it, the session is gone and the next datagram opens one on the other backend.
    tokio::time::sleep(idle * 3).await;
    let after = udp_ask(&client, b"3", WAIT).await.expect("reply")[0];
    assert_ne!(after, first);
    shutdown.cancel();
}

#[tokio::test]
async fn udp_session_table_is_bounded() {
    let shutdown = CancellationToken::new();
    let proxy = udp_proxy(balancer(vec![udp_backend(b'A').await], None), Duration::from_secs(30), 1, &shutdown).await;
    let (one, two) = (udp_client(proxy).await, udp_client(proxy).await);
    assert!(udp_ask(&one, b"1", WAIT).await.is_some());
    assert!(udp_ask(&two, b"2", Duration::from_millis(300)).await.is_none(), "second client dropped");
    assert!(udp_ask(&one, b"3", WAIT).await.is_some(), "first client still served");
    shutdown.cancel();
}

#[tokio::test]
async fn udp_dead_backend_fails_over_to_the_next() {
    let shutdown = CancellationToken::new();
    // A bound-then-dropped UDP port: sends to it draw ICMP port unreachable.
    let dead = UdpSocket::bind((LOCALHOST, 0)).await.unwrap().local_addr().unwrap();
    let backends = vec![dead, udp_backend(b'A').await];
    let proxy = udp_proxy(balancer(backends, None), Duration::from_secs(5), 16, &shutdown).await;
    let client = udp_client(proxy).await;
    // The first datagram goes to the dead backend and is lost; its session ends on the ICMP error
    // and a later datagram opens a session on the live backend.
    let mut reply = None;
    for _ in 0..20 {
        reply = udp_ask(&client, b"ping", Duration::from_millis(200)).await;
        if reply.is_some() {
            break;
        }
    }
    assert_eq!(reply.as_deref(), Some(&b"Aping"[..]));
    shutdown.cancel();
}

#[tokio::test]
async fn udp_shutdown_stops_relaying() {
    let shutdown = CancellationToken::new();
    let proxy = udp_proxy(balancer(vec![udp_backend(b'A').await], None), Duration::from_secs(30), 16, &shutdown).await;
    let client = udp_client(proxy).await;
    assert!(udp_ask(&client, b"1", WAIT).await.is_some());
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(udp_ask(&client, b"2", Duration::from_millis(300)).await.is_none());
}
