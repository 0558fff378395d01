//! The real `mxmedia` binary as a child process, for what only a separate
//! process shows: its memory, its open sockets, `kill -9`.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// A running `mxmedia serve`; killed when dropped.
pub struct RealServer {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub http: reqwest::Client,
}

impl RealServer {
    /// Writes `yaml` (with `listen` added) to `dir/config.yaml` and starts
    /// the server on it; returns once `/healthz` answers.
    pub async fn start(dir: &Path, yaml: &str) -> Self {
        let port = crate::common::free_port();
        let config = dir.join("config.yaml");
        std::fs::write(&config, format!("listen: 127.0.0.1:{port}\n{yaml}")).unwrap();
        Self::start_on(config, port).await
    }

    /// Starts the server again on an existing config file.
    pub async fn start_on(config: PathBuf, port: u16) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let server = Self {
            child,
            addr,
            config,
            http,
        };
        for _ in 0..400 {
            if server.http.get(server.url("/healthz")).send().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("mxmedia did not come up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Uploads `bytes` as the user of `token`, which must succeed: the mxc URI.
    pub async fn upload_as(&self, token: &str, bytes: Vec<u8>) -> String {
        let resp = self
            .http
            .post(self.url("/_matrix/media/v3/upload"))
            .bearer_auth(token)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let json: serde_json::Value = resp.json().await.unwrap();
        json["content_uri"].as_str().unwrap().to_owned()
    }

    /// Downloads `mxc` as the user of `token`: status and bytes.
    pub async fn download_as(&self, token: &str, mxc: &str) -> (u16, Vec<u8>) {
        let (s, id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap();
        let resp = self
            .http
            .get(self.url(&format!("/_matrix/client/v1/media/download/{s}/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Resident memory now and at its peak, in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Open sockets of the process (TCP and Unix).
    pub fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .map(|t| t.to_string_lossy().starts_with("socket:"))
                    .unwrap_or(false)
            })
            .count()
    }

    /// SIGTERM, and waits for the graceful exit.
    pub async fn stop(mut self) {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
