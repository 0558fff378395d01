//! Rule 10 for connections, on the real process: a client that trickles a
//! request head or idles on a keep-alive connection is disconnected, the
//! number of open connections is capped, and an upload has a deadline.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use common::*;
use process::RealServer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn server(dir: &std::path::Path, hs: &FakeHomeserver) -> RealServer {
    RealServer::start(
        dir,
        &format!(
            "server_name: {SERVER_NAME}\ndata_dir: ./data\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\nconnections: {{max: 20, header_timeout: 1s, idle_timeout: 2s}}\nmedia: {{upload_deadline: 2s}}\n",
            hs.url
        ),
    )
    .await
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Slowloris: clients that send a request head a byte at a time are
/// disconnected once `header_timeout` (1 s) has passed since its first
/// byte, however steadily they trickle; the server keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_request_heads_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let s = server(dir.path(), &hs).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
            let start = Instant::now();
            // One header byte every 100 ms, for up to 10 s.
            for _ in 0..100 {
                if stream.write_all(b"X").await.is_err() {
                    return start.elapsed();
                }
                let mut buf = [0u8; 64];
                let read =
                    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    return start.elapsed();
                }
            }
            panic!("a trickling client kept its connection for 10 s");
        }));
    }
    // Others are still served meanwhile.
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for task in tasks {
        let held = task.await.unwrap();
        println!("trickling client held its connection for {held:?}");
        assert!(held < Duration::from_secs(5), "{held:?}");
    }
}

/// A keep-alive connection with no request in progress is closed after
/// `idle_timeout` (2 s); one that sends its next request in time is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let s = server(dir.path(), &hs).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        stream.write_all(request).await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Well inside the idle timeout: the connection stays usable.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let idle = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("an idle connection is closed");
    println!("idle connection closed after a further {idle:?}");
    assert!(idle < Duration::from_secs(5), "{idle:?}");
}

/// At most `connections.max` (20) connections are open at once: 60 clients
/// that connect and send nothing hold 20 of the server's sockets, not 60;
/// a client past the cap is served once others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let s = server(dir.path(), &hs).await;
    let baseline = s.sockets();
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = s.sockets() - baseline;
    println!("60 idle clients hold {held} server sockets (cap 20)");
    assert!(held <= 20, "{held} sockets for 60 idle clients");
    // A client past the cap waits in the backlog and is served when the
    // idle ones are dropped (here: by the idle timeout).
    let started = Instant::now();
    let (status, _) = raw_request(s.addr, "GET /healthz HTTP/1.1").await;
    assert_eq!(status, 200);
    println!(
        "a client past the cap was served after {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// An upload that keeps sending, but for longer than `upload_deadline`
/// (2 s), gets 408 with a Matrix body and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_have_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let hs = FakeHomeserver::start().await;
    let s = server(dir.path(), &hs).await;
    let body = futures::stream::unfold(0u32, |i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (i < 200).then(|| {
            (
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1024])),
                i + 1,
            )
        })
    });
    let started = Instant::now();
    let resp = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    println!("upload cut off after {:?}", started.elapsed());
    assert_matrix_error(resp, 408, "M_UNKNOWN").await;
    assert!(started.elapsed() < Duration::from_secs(15));
}
