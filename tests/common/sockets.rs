//! Raw socket helpers: requests written byte for byte, so no client
//! library normalises them.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

/// Sends `request_head` (request line and headers, without the final blank
/// line) byte for byte over a fresh connection, so no client library
/// normalises the path; returns the status and the whole response text.
pub async fn raw_request(addr: SocketAddr, request_head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{request_head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Sends a chunked request body of `total` bytes over a raw connection
/// while reading the response, the way a client that keeps sending past an
/// early answer would. Returns the response text and how many body bytes
/// were written by the time it arrived.
pub async fn raw_chunked_upload(
    addr: SocketAddr,
    method_and_path: &str,
    token: &str,
    total: u64,
) -> (String, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&written);
    let head = format!(
        "{method_and_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let sender = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let data = vec![1u8; 64 * 1024];
        let frame_head = format!("{:x}\r\n", data.len());
        let mut sent = 0;
        while sent < total {
            writer.write_all(frame_head.as_bytes()).await?;
            writer.write_all(&data).await?;
            writer.write_all(b"\r\n").await?;
            sent += data.len() as u64;
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if text.contains("\r\n\r\n") && text.contains('}') {
            break;
        }
    }
    sender.abort();
    (
        String::from_utf8_lossy(&response).into_owned(),
        written.load(Ordering::Relaxed),
    )
}
