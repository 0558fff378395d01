//! Rule 2: memory does not grow with file size. Its own test binary, so the
//! process's peak RSS belongs to this test alone.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;

const MIB: u64 = 1024 * 1024;

/// Peak resident set size of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A 256 MiB upload and download, then a 512 MiB over-limit upload: peak RSS
/// grows by far less than the file sizes, and the over-limit body is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_with_flat_memory() {
    let t =
        TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::mib(300)).await;
    t.upload_ok(ALICE, b"warm-up", None, None).await;
    let baseline = peak_rss();

    // 256 MiB in: one shared 256 KiB chunk, so the client allocates nothing per chunk.
    let chunk = Bytes::from(vec![0x5Au8; 256 * 1024]);
    let total = 256 * MIB;
    let chunks = total / chunk.len() as u64;
    let body =
        futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = t
        .upload(
            ALICE,
            reqwest::Body::wrap_stream(body),
            Some("video/mp4"),
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let (s, id) = split_mxc(
        resp.json::<serde_json::Value>().await.unwrap()["content_uri"]
            .as_str()
            .unwrap(),
    );

    // 256 MiB out, counted without keeping it.
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{s}/{id}"),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.headers()["content-length"], total.to_string().as_str());
    let mut received = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        let part = part.unwrap();
        assert!(part.iter().all(|&b| b == 0x5A));
        received += part.len() as u64;
    }
    assert_eq!(received, total);
    let grown = peak_rss().saturating_sub(baseline);
    println!(
        "peak RSS growth for 256 MiB up and down: {} MiB",
        grown / MIB
    );
    assert!(grown < 64 * MIB, "peak RSS grew by {} MiB", grown / MIB);

    // Over the limit without a Content-Length: cut off while it arrives.
    let t = TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::mib(16)).await;
    let (text, sent) =
        raw_chunked_upload(t.addr(), "POST /_matrix/media/v3/upload", ALICE, 512 * MIB).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("M_TOO_LARGE"), "{text}");
    println!("client got 413 after sending {} MiB of 512", sent / MIB);
    assert!(
        sent < 128 * MIB,
        "the server kept reading: {} MiB",
        sent / MIB
    );
    assert_eq!(t.counts().await.media, 0);
    let grown = peak_rss().saturating_sub(baseline);
    assert!(grown < 96 * MIB, "peak RSS grew by {} MiB", grown / MIB);
}
