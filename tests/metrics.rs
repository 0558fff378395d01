//! Prometheus metrics: served on their own listener, scraped after real
//! traffic, with label values from bounded sets only.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, io::Cursor};

use common::*;

/// Samples of the text exposition: `name{labels}` -> value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with(&format!("{name}{{")) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| *v)
        .sum()
}

async fn scrape(t: &TestServer) -> (String, HashMap<String, f64>) {
    let addr = t.server().metrics_addr().expect("metrics are on");
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    let samples = parse(&text);
    (text, samples)
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn traffic_shows_up_under_route_templates() {
    let t = TestServer::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let body = vec![42u8; 5000];
    let (s, id) = t.upload_ok(ALICE, &body, Some("text/plain"), None).await;
    for _ in 0..3 {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{s}/{id}"),
                Some(ALICE),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().len(), 5000);
    }
    // A thumbnail made, one refused (not an image), one unknown route.
    let (s2, photo) = t
        .upload_ok(ALICE, &jpeg(640, 480), Some("image/jpeg"), None)
        .await;
    let thumb =
        format!("/_matrix/client/v1/media/thumbnail/{s2}/{photo}?width=96&height=96&method=crop");
    assert_eq!(t.get(&thumb, Some(ALICE)).await.status(), 200);
    let refused =
        format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width=96&height=96&method=crop");
    assert_eq!(t.get(&refused, Some(ALICE)).await.status(), 400);
    assert_eq!(t.get("/nope/secret-path", None).await.status(), 404);
    // Two pending async uploads.
    for _ in 0..2 {
        let resp = reqwest::Client::new()
            .post(t.url("/_matrix/media/v1/create"))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    let (text, m) = scrape(&t).await;
    let download = "route=\"/_matrix/client/v1/media/download/{server_name}/{media_id}\"";
    assert_eq!(
        sample(
            &m,
            "mxmedia_http_requests_total",
            &[download, "method=\"GET\"", "status=\"200\""]
        ),
        3.0
    );
    assert_eq!(
        sample(&m, "mxmedia_http_response_body_bytes_total", &[download]),
        15000.0
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_http_request_body_bytes_total",
            &["route=\"/_matrix/media/v3/upload\""]
        ),
        5000.0 + jpeg(640, 480).len() as f64
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_http_request_duration_seconds_count",
            &[download]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_http_requests_total",
            &["route=\"unmatched\"", "status=\"404\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_thumbnails_generated_total",
            &["kind=\"still\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_thumbnails_refused_total",
            &["reason=\"unsupported\""]
        ),
        1.0
    );
    assert_eq!(m["mxmedia_uploads_pending"], 2.0);
    // Uploads wrote through the datastore; downloads read from it (on S3
    // the hot cache serves the later ones).
    assert!(sample(&m, "mxmedia_datastore_calls_total", &["operation=\"put\""]) >= 3.0);
    assert!(sample(&m, "mxmedia_datastore_calls_total", &["operation=\"get\""]) >= 1.0);
    assert_eq!(
        sample(&m, "mxmedia_datastore_errors_total", &[]),
        0.0,
        "{text}"
    );
    // Bounded labels: no media id, raw path or requested size anywhere.
    for leaked in [id.as_str(), photo.as_str(), "secret-path", "width"] {
        assert!(!text.contains(leaked), "{leaked} leaked into labels");
    }
    // Every metric the Grafana dashboard and the alert rules query exists.
    for (file, at_least) in [
        ("/docs/grafana-dashboard.json", 20),
        ("/deploy/prometheus-alerts.yml", 10),
    ] {
        let queries =
            std::fs::read_to_string(format!("{}{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut queried = 0;
        for word in queries.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("mxmedia_") || word == "mxmedia_" {
                continue;
            }
            let base = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{file} queries {word}, which is not exported"
            );
            queried += 1;
        }
        assert!(queried >= at_least, "{file}: {queried}");
    }
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    // And nothing of it on the public listener.
    assert_eq!(t.get("/metrics", None).await.status(), 404);
    t.stop().await;
}

/// What an operator alerts on: token checks with the homeserver (cache
/// hits and misses, outcomes, latency), fetches of other servers' media by
/// outcome, background job runs, and what each datastore holds, sampled.
#[tokio::test]
async fn operations_are_counted() {
    let t = TestServer::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.media.sweep_interval = std::time::Duration::from_millis(200);
    })
    .await;
    for bytes in [&b"one"[..], b"two", b"two"] {
        t.upload_ok(ALICE, bytes, None, None).await;
    }
    let resp = t
        .get("/_matrix/client/v1/media/config", Some("nobody-knows-this"))
        .await;
    assert_eq!(resp.status(), 401);
    let resp = t
        .get(
            "/_matrix/client/v1/media/download/elsewhere.invalid/abcdef",
            Some(ALICE),
        )
        .await;
    assert!(resp.status().is_client_error() || resp.status().is_server_error());
    // The sample runs with every sweep: wait for one after the uploads,
    // and for that sweep's run to be counted (after the sample is taken).
    let mut m = HashMap::new();
    for _ in 0..100 {
        m = scrape(&t).await.1;
        let sweeps = sample(
            &m,
            "mxmedia_background_jobs_total",
            &["task=\"sweep\"", "outcome=\"ok\""],
        );
        if sample(&m, "mxmedia_datastore_objects", &[]) == 2.0 && sweeps >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&m, "mxmedia_datastore_objects", &[]), 2.0, "{m:?}");
    assert_eq!(sample(&m, "mxmedia_datastore_bytes", &[]), 6.0, "{m:?}");
    assert_eq!(
        sample(
            &m,
            "mxmedia_homeserver_token_checks_total",
            &["outcome=\"valid\""]
        ),
        1.0,
        "one check for ALICE, then the cache"
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_homeserver_token_checks_total",
            &["outcome=\"unknown_token\""]
        ),
        1.0
    );
    assert_eq!(
        m["mxmedia_homeserver_token_check_duration_seconds_count"],
        2.0
    );
    assert!(
        sample(
            &m,
            "mxmedia_homeserver_token_cache_total",
            &["outcome=\"hit\""]
        ) >= 3.0
    );
    assert_eq!(
        sample(
            &m,
            "mxmedia_homeserver_token_cache_total",
            &["outcome=\"miss\""]
        ),
        2.0
    );
    assert_eq!(
        sample(&m, "mxmedia_federation_fetches_total", &[]),
        1.0,
        "{m:?}"
    );
    assert!(
        sample(
            &m,
            "mxmedia_background_jobs_total",
            &["task=\"sweep\"", "outcome=\"ok\""]
        ) >= 1.0
    );
    assert_eq!(
        sample(&m, "mxmedia_background_jobs_total", &["outcome=\"failed\""]),
        0.0
    );
    t.stop().await;
}

/// Object-store reads count cache hits, misses and the bytes served from
/// the disk cache; small blobs after their first read come from memory.
#[tokio::test]
async fn s3_reads_count_cache_hits_and_misses() {
    if !matches!(backend(), TestBackend::S3) {
        return;
    }
    let t = TestServer::start_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // Larger than the memory tier takes: every read is the disk cache's.
    let large = vec![9u8; 300_000];
    let (s, id) = t.upload_ok(ALICE, &large, None, None).await;
    let path = format!("/_matrix/client/v1/media/download/{s}/{id}");
    for _ in 0..3 {
        let resp = t.get(&path, Some(ALICE)).await;
        assert_eq!(resp.bytes().await.unwrap().len(), 300_000);
    }
    let (_, m) = scrape(&t).await;
    let misses = m["mxmedia_cache_misses_total"];
    let hits = m["mxmedia_cache_hits_total"];
    assert_eq!(hits + misses, 3.0);
    assert!(hits >= 1.0, "later reads come from the cache");
    assert_eq!(m["mxmedia_cache_hit_bytes_total"], hits * 300_000.0);
    assert_eq!(m["mxmedia_memory_cache_hits_total"], 0.0);
    assert!(m["mxmedia_cache_size_bytes"] >= 300_000.0, "{m:?}");
    assert_eq!(m["mxmedia_cache_max_size_bytes"], (1u64 << 30) as f64);

    // A small one: read once from the store (or disk cache), then from memory.
    let (s, id) = t.upload_ok(ALICE, &[7u8; 3000], None, None).await;
    let path = format!("/_matrix/client/v1/media/download/{s}/{id}");
    for _ in 0..3 {
        let resp = t.get(&path, Some(ALICE)).await;
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &[7u8; 3000][..]);
    }
    let (_, m) = scrape(&t).await;
    assert_eq!(m["mxmedia_memory_cache_hits_total"], 2.0);
    assert_eq!(
        m["mxmedia_cache_hits_total"] + m["mxmedia_cache_misses_total"],
        4.0
    );
    t.stop().await;
}

/// The alert rules load in Prometheus and their unit tests pass (each
/// alert fires on the series it is meant for), when promtool is installed
/// (`.ci/run` installs it).
#[test]
fn alert_rules_check_out() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    for args in [
        ["check", "rules", "prometheus-alerts.yml"],
        ["test", "rules", "prometheus-alerts.test.yml"],
    ] {
        let Ok(out) = std::process::Command::new("promtool")
            .args(args)
            .current_dir(deploy)
            .output()
        else {
            println!("promtool is not installed: the alert rules are not checked");
            return;
        };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
