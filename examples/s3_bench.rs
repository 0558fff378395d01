//! Throughput and peak memory of 100 MiB through the S3 datastore and the
//! hot cache, against a real S3 server (s3s-fs) in the same process:
//! `cargo run --release --example s3_bench`. Prints one line per phase; the
//! peak-RSS growth covers both servers, so it is an upper bound for mxmedia.
// A measurement tool: it panics on any failure, like the tests.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};

const MIB: u64 = 1024 * 1024;

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

async fn whoami() -> String {
    let router = axum::Router::new().route(
        "/_matrix/client/v3/account/whoami",
        axum::routing::get(|| async {
            axum::Json(serde_json::json!({"user_id": "@bench:bench.local"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn s3(root: &std::path::Path) -> String {
    std::fs::create_dir_all(root.join("media")).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
    builder.set_auth(s3s::auth::SimpleAuth::from_single("bench", "bench-secret"));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    url
}

async fn download(http: &reqwest::Client, url: &str) -> u64 {
    let resp = http.get(url).bearer_auth("bench").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut n = 0;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

fn report(phase: &str, bytes: u64, start: Instant, rss_before: u64) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{phase:<34} {:>7.3} s {:>8.1} MB/s   peak RSS +{:>3} MiB (total {} MiB)",
        secs,
        bytes as f64 / secs / 1e6,
        peak_rss().saturating_sub(rss_before) / MIB,
        peak_rss() / MIB
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let s3_url = s3(&dir.path().join("s3")).await;
    let hs = whoami().await;
    let yaml = format!(
        "server_name: bench.local\nlisten: 127.0.0.1:0\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver: {{url: '{hs}'}}\nlog: {{level: warn}}\nmedia: {{max_upload_size: 200MiB}}\ncache: {{max_size: 1GiB, max_file_size: 128MiB}}\ndatastores:\n  - {{type: s3, id: s3, provider: minio, endpoint: '{s3_url}', bucket: media, access_key_id: bench, secret_access_key: bench-secret}}\n",
        dir.path().join("data").display()
    );
    let config = mxmedia::config::Config::from_yaml(&yaml, Vec::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = mxmedia::app::Server::start_on(listener, &config)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let chunk = Bytes::from(vec![0x42u8; 256 * 1024]);
    let total = 100 * MIB;
    println!(
        "100 MiB through the S3 datastore (s3s-fs on 127.0.0.1, 8 MiB parts) and the hot cache"
    );
    println!("idle peak RSS before: {} MiB", peak_rss() / MIB);

    let rss = peak_rss();
    let start = Instant::now();
    let body = futures::stream::iter(
        (0..total / chunk.len() as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = http
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth("bench")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = resp.json().await.unwrap();
    let mxc = json["content_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mxc://")
        .to_owned();
    report("upload (S3 multipart + cache fill)", total, start, rss);
    let url = format!("{base}/_matrix/client/v1/media/download/{mxc}");

    // Let the cache fill settle, then measure hits.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for run in 1..=3 {
        let rss = peak_rss();
        let start = Instant::now();
        assert_eq!(download(&http, &url).await, total);
        report(&format!("download, cache hit #{run}"), total, start, rss);
    }
    for run in 1..=3 {
        std::fs::remove_dir_all(dir.path().join("data/cache")).unwrap();
        let rss = peak_rss();
        let start = Instant::now();
        assert_eq!(download(&http, &url).await, total);
        report(
            &format!("download from S3 (cache miss) #{run}"),
            total,
            start,
            rss,
        );
    }
    server.stop().await;
}
