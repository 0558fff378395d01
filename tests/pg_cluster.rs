//! Three real `mxmedia` processes on one PostgreSQL database and one
//! datastore, behind nginx as one upstream group. One instance is killed
//! with `kill -9` in the middle of uploads and downloads: no acknowledged
//! upload is lost, clients see at most the requests the killed instance
//! had in flight fail, and the other two serve everything.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/process.rs"]
mod process;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use common::*;
use process::RealServer;

fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is needed: apt-get install nginx-light (.ci/run does)")
}

/// nginx on `port` in front of `upstreams`, as docs/scale-out.md shows.
fn start_nginx(dir: &Path, port: u16, upstreams: &[u16]) -> Child {
    let d = dir.display();
    for sub in [
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let servers: String = upstreams
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;\n"))
        .collect();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 512; }}\nhttp {{\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  access_log off;\n  upstream mxmedia {{\n{servers}    keepalive 16;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 100m;\n    location / {{\n      proxy_pass http://mxmedia;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_request_buffering off;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    Command::new(nginx())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_under_load_loses_nothing_acknowledged() {
    let url = Postgres::get().database("cluster").await;
    let hs = FakeHomeserver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let mut instances = Vec::new();
    for i in 0..3 {
        let own = dir.path().join(format!("instance{i}"));
        std::fs::create_dir_all(&own).unwrap();
        let yaml = format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver: {{url: '{}'}}\ndatabase: {{type: postgres, url: '{url}'}}\ndatastores:\n  - {{type: local, id: shared, path: {}}}\n",
            own.display(),
            hs.url,
            media.display()
        );
        instances.push(RealServer::start(&own, &yaml).await);
    }
    let proxy_dir = dir.path().join("nginx");
    let port = free_port();
    let ports: Vec<u16> = instances.iter().map(|s| s.addr.port()).collect();
    let mut proxy = start_nginx(&proxy_dir, port, &ports);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..400 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    const WORKERS: u64 = 8;
    const PER_WORKER: u64 = 60;
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (http, base) = (http.clone(), base.clone());
            let (sent, failed, acknowledged) = (sent.clone(), failed.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0..PER_WORKER {
                    let body = format!("worker {w} upload {i} ").repeat(200).into_bytes();
                    sent.fetch_add(1, Ordering::Relaxed);
                    let resp = http
                        .post(format!("{base}/_matrix/media/v3/upload"))
                        .bearer_auth(ALICE)
                        .header("content-type", "text/plain")
                        .body(body.clone())
                        .send()
                        .await;
                    let Ok(resp) = resp.map_err(|_| ()) else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if resp.status() != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let json: serde_json::Value = resp.json().await.unwrap();
                    let (_, id) = split_mxc(json["content_uri"].as_str().unwrap());
                    // Read it back at once, through whichever instance.
                    sent.fetch_add(1, Ordering::Relaxed);
                    let got = http
                        .get(format!(
                            "{base}/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"
                        ))
                        .bearer_auth(BOB)
                        .send()
                        .await;
                    match got {
                        Ok(r) if r.status() == 200 => {}
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    acknowledged.lock().unwrap().push((id, body));
                }
            })
        })
        .collect();
    // A third of the way in, instance 1 dies without warning.
    while sent.load(Ordering::Relaxed) < WORKERS * PER_WORKER * 2 / 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let killed = instances.remove(1);
    killed.kill9().await;
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "requests sent {sent}, failed {failed}, uploads acknowledged {}",
        acknowledged.len()
    );
    // At most what the killed instance had in flight: one request per worker.
    assert!(failed <= WORKERS, "{failed} requests failed");

    // Every acknowledged upload is there, byte-identical, from the survivors.
    let mut found = 0;
    for (id, body) in &acknowledged {
        let resp = http
            .get(format!(
                "{base}/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"
            ))
            .bearer_auth(BOB)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{id}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
        found += 1;
    }
    println!("uploads found afterwards {found} of {}", acknowledged.len());
    let _ = proxy.kill();
    let _ = proxy.wait();
    for instance in instances {
        instance.stop().await;
    }
}
