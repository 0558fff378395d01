//! Hostile pages: nothing a previewed page does reaches a private address,
//! runs past its byte or time budget, or puts an image we could not safely
//! thumbnail into a preview.

use std::{sync::atomic::Ordering, time::Duration};

use mxmedia::config::Rate;

use super::{common::*, preview, preview_ok, previews_on, process::RealServer, site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_links_into_private_addresses_are_refused() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    for page in [
        "/to-metadata",
        "/to-private",
        "/to-mapped",
        "/to-ipv6-loopback",
        "/to-unspecified",
        "/chain-to-metadata",
        "/loop",
    ] {
        let resp = preview(&t, &site.url(page)).await;
        assert_matrix_error(resp, 502, "M_UNKNOWN").await;
    }
    // Asked directly, an address outside the allowed ranges is forbidden.
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        format!("http://[::1]:{}/article", site.addr.port()),
        "http://[::ffff:169.254.169.254]/".to_owned(),
        "http://0.0.0.0/".to_owned(),
    ] {
        assert_matrix_error(preview(&t, &url).await, 403, "M_FORBIDDEN").await;
    }
    // An og:image or an oEmbed link pointing inside: the page previews,
    // the link is not followed.
    let og = preview_ok(&t, &site.url("/metadata-image-page")).await;
    assert_eq!(og["og:title"], "Sneaky");
    assert!(og.get("og:image").is_none(), "{og}");
    let og = preview_ok(&t, &site.url("/metadata-oembed-page")).await;
    assert_eq!(og["og:title"], "Sneaky oEmbed");
}

/// A host name is checked on the address it resolves to, when the
/// connection is made: `localhost` is refused where loopback is not
/// allowed, and the site never sees a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_private_addresses_are_refused_at_connect_time() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| {
        previews_on(c, &site);
        c.url_previews.allowed_private_ranges.clear();
    })
    .await;
    let url = format!("http://localhost:{}/article", site.addr.port());
    assert_matrix_error(preview(&t, &url).await, 502, "M_UNKNOWN").await;
    assert_eq!(site.seen.hits("/article"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_urls_are_never_fetched() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    assert_matrix_error(preview(&t, &site.url("/denied")).await, 403, "M_FORBIDDEN").await;
    let og = preview_ok(&t, &site.url("/denied-image-page")).await;
    assert_eq!(og["og:title"], "Denied image");
    assert!(og.get("og:image").is_none());
    assert_eq!(site.seen.hits("/denied"), 0);
    assert_eq!(site.seen.hits("/denied/photo.png"), 0);
}

/// Waits until the site's streamed byte count stands still: the preview
/// dropped the connection. Returns the bytes sent.
async fn streaming_stops(site: &site::Site) -> u64 {
    let mut last = site.seen.streamed.load(Ordering::Relaxed);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = site.seen.streamed.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the site is still streaming: the preview never let go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_compressed_bodies_stop_at_the_budget() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let og = preview_ok(&t, &site.url("/endless-html")).await;
    assert!(og.get("og:title").is_none());
    let sent = streaming_stops(&site).await;
    println!("endless HTML: {sent} bytes left the site before the preview let go");

    // A body type that is never previewed is never read.
    let before = site.seen.streamed.load(Ordering::Relaxed);
    let og = preview_ok(&t, &site.url("/endless-audio")).await;
    assert_eq!(og, serde_json::json!({}));
    let after = streaming_stops(&site).await;
    println!("endless audio: {} bytes left the site", after - before);

    // Gzip of 64 MiB of zeros claiming to be HTML: read as it came, capped.
    let og = preview_ok(&t, &site.url("/zip-bomb")).await;
    assert!(og.get("og:title").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_cannot_be_shown_safely_are_left_out() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    for (page, title) in [
        ("/bomb-page", "Bomb"),
        ("/huge-image-page", "Huge"),
        ("/fake-image-page", "Fake"),
    ] {
        let og = preview_ok(&t, &site.url(page)).await;
        assert_eq!(og["og:title"], title);
        assert!(og.get("og:image").is_none(), "{page}: {og}");
    }
    // oEmbed answering garbage: the page's own title stands.
    let og = preview_ok(&t, &site.url("/oembed-garbage-page")).await;
    assert_eq!(og["og:title"], "Kept title");

    // Bytes quarantined here are not shown in a preview either.
    let png = picture(300, 200, 3, image::ImageFormat::Png);
    let (_, id) = t.upload_ok(BOB, &png, Some("image/png"), None).await;
    let media = &t.server().state().media;
    let key = mxmedia::ids::MediaKey::parse(SERVER_NAME, &id).unwrap();
    media.quarantine(&key, "@admin:test.local").await.unwrap();
    let og = preview_ok(&t, &site.url("/photo.png")).await;
    assert!(og.get("og:image").is_none(), "{og}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_are_rate_limited_per_user() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| {
        previews_on(c, &site);
        c.rate_limits.previews = Some(Rate {
            per_second: 0.001,
            burst: 3,
        });
    })
    .await;
    for _ in 0..3 {
        preview_ok(&t, &site.url("/title-only")).await;
    }
    let resp = preview(&t, &site.url("/title-only")).await;
    assert_matrix_error(resp, 429, "M_LIMIT_EXCEEDED").await;
}

/// A 64 MiB page on the real process: the preview reads up to its cap
/// (256 KiB here), answers, and the process's memory does not follow the
/// page's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_page_costs_neither_memory_nor_time() {
    let site = site::start().await;
    let hs = FakeHomeserver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = RealServer::start(
        dir.path(),
        &format!(
            "server_name: {SERVER_NAME}\ndata_dir: {}\nhomeserver: {{url: '{}'}}\nselfcheck_on_start: false\nurl_previews: {{enabled: true, allowed_private_ranges: ['127.0.0.0/8'], max_page_size: 1MiB, timeout: 20s}}\nrate_limits: {{previews: null}}\n",
            dir.path().display(),
            hs.url
        ),
    )
    .await;
    let ask = |url: String| {
        server
            .http
            .get(server.url("/_matrix/client/v1/media/preview_url"))
            .query(&[("url", url)])
            .bearer_auth(ALICE)
            .send()
    };
    // Warm up (allocator arenas, TLS of the client, caches).
    assert_eq!(ask(site.url("/title-only")).await.unwrap().status(), 200);
    let (before, _) = server.rss();
    let started = std::time::Instant::now();
    let resp = ask(site.url("/large")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    let og: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(og["og:title"], "A very large page");
    let sent = streaming_stops(&site).await;
    let (after, peak) = server.rss();
    println!(
        "64 MiB page: previewed in {elapsed:?}, {sent} bytes left the site, RSS {} -> {} KiB (peak {} KiB)",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    assert!(sent < 32 * 1024 * 1024, "{sent} bytes were read");
    assert!(
        after.saturating_sub(before) < 24 * 1024 * 1024,
        "RSS grew from {before} to {after}"
    );
    server.stop().await;
}
