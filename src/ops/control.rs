//! Client of the control socket, for the CLI: one request, and the JSON
//! lines of its answer as they arrive.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Why the running server could not be asked, or what it answered instead.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no server is listening on {0}")]
    NotRunning(String),
    #[error("control request failed: {0}")]
    Request(String),
    #[error("{0}")]
    Refused(String),
}

/// One control call: `{"progress": …}` lines go to `on_progress`, and the
/// `{"done": …}` line is the result (`{"error": …}` is `Refused`).
pub async fn call<T: serde::de::DeserializeOwned>(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
    mut on_progress: impl FnMut(serde_json::Value),
) -> Result<T, ControlError> {
    let mut outcome = None;
    request(socket, path, body, |mut line| {
        if let Some(progress) = line.get_mut("progress") {
            on_progress(progress.take());
        } else if let Some(done) = line.get_mut("done") {
            outcome = Some(
                serde_json::from_value(done.take())
                    .map_err(|e| ControlError::Request(e.to_string())),
            );
        } else if let Some(error) = line.get("error").and_then(serde_json::Value::as_str) {
            outcome = Some(Err(ControlError::Refused(error.to_owned())));
        }
    })
    .await?;
    outcome.unwrap_or_else(|| {
        Err(ControlError::Request(
            "the server sent no result".to_owned(),
        ))
    })
}

/// POSTs `body` to `path` on the control socket and calls `on_line` with
/// every JSON line of the answer.
pub async fn request(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
    mut on_line: impl FnMut(serde_json::Value),
) -> Result<(), ControlError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|_| ControlError::NotRunning(socket.display().to_string()))?;
    let fail = |e: &dyn std::fmt::Display| ControlError::Request(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, "mxmedia")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| fail(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
    if !response.status().is_success() {
        return Err(ControlError::Request(format!("HTTP {}", response.status())));
    }
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&line) {
                on_line(value);
            }
        }
    }
    Ok(())
}
