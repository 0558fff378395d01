//! HTTP contract of upload and download: every rule of the spec's content
//! repository for these endpoints, against the real server.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

fn authed(server: &str, id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{server}/{id}")
}

fn legacy(server: &str, id: &str) -> String {
    format!("/_matrix/media/v3/download/{server}/{id}")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

/// Spec 4.1 #1-2: content_uri is mxc://<our server>/<id>, id in [A-Za-z0-9_-], 24+ chars; bytes round-trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_returns_mxc_and_download_returns_the_bytes() {
    let t = TestServer::start().await;
    let resp = t
        .upload(
            ALICE,
            b"hello png".to_vec(),
            Some("image/png"),
            Some("cat.png"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    let (server, id) = split_mxc(body["content_uri"].as_str().unwrap());
    assert_eq!(server, SERVER_NAME);
    assert!(
        id.len() >= 24
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );

    let resp = t.get(&authed(&server, &id), Some(BOB)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"cat.png\""
    );
    assert_eq!(header(&resp, "content-length"), "9");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello png");
}

/// Spec 4.2 #6: no Content-Type on upload -> application/octet-stream on download, as attachment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_without_content_type_downloads_as_octet_stream() {
    let t = TestServer::start().await;
    let resp = t
        .http
        .post(t.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body("raw")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let (s, id) = split_mxc(body["content_uri"].as_str().unwrap());
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "content-disposition"), "attachment");
}

/// Spec 4.2 #7 and 4.4 #33: the upload filename appears in Content-Disposition; without one, none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_filename_is_kept_and_absent_name_gives_none() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(
            ALICE,
            b"%PDF",
            Some("application/pdf"),
            Some("War and Peace.pdf"),
        )
        .await;
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "attachment; filename=\"War and Peace.pdf\""
    );
    let (s, id) = t.upload_ok(ALICE, b"x", Some("image/png"), None).await;
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(header(&resp, "content-disposition"), "inline");
}

/// Spec 4.4 #35: a path {fileName} overrides the upload name; an empty one (trailing slash) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_file_name_overrides_the_upload_name() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"x", Some("text/plain"), Some("orig.txt"))
        .await;
    let resp = t
        .get(
            &format!("{}/other%20name.txt", authed(&s, &id)),
            Some(ALICE),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"other name.txt\""
    );
    let resp = t.get(&format!("{}/", authed(&s, &id)), Some(ALICE)).await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"orig.txt\""
    );
    let (s2, id2) = t.upload_ok(ALICE, b"y", Some("text/plain"), None).await;
    let resp = t
        .get(&format!("{}/given.txt", authed(&s2, &id2)), Some(ALICE))
        .await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"given.txt\""
    );
    // A path with more segments is not a download route.
    let resp = t
        .get(&format!("{}/a/b", authed(&s, &id)), Some(ALICE))
        .await;
    assert_matrix_error(resp, 404, "M_UNRECOGNIZED").await;
}

/// Hostile upload names (quotes, CR/LF, `;`, paths, non-ASCII, 10 KB) stay one well-formed header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filenames_stay_one_well_formed_header() {
    let t = TestServer::start().await;
    let long = "n".repeat(10_000);
    let cases: Vec<(&str, &str)> = vec![
        ("a\"b.png", "inline; filename=\"a\\\"b.png\""),
        (
            "x\r\nSet-Cookie: y=1",
            "inline; filename=\"xSet-Cookie: y=1\"",
        ),
        ("semi;colon.png", "inline; filename=\"semi;colon.png\""),
        ("../../etc/passwd", "inline; filename=\"passwd\""),
        ("back\\slash\\name.png", "inline; filename=\"name.png\""),
        (
            "café ☕.png",
            "inline; filename=\"caf_ _.png\"; filename*=UTF-8''caf%C3%A9%20%E2%98%95.png",
        ),
        ("rtl\u{202E}gnp.exe", "inline; filename=\"rtlgnp.exe\""),
        (&long, ""),
    ];
    for (name, expected) in cases {
        let (s, id) = t
            .upload_ok(ALICE, b"x", Some("image/png"), Some(name))
            .await;
        let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("set-cookie").is_none());
        let values: Vec<_> = resp
            .headers()
            .get_all("content-disposition")
            .iter()
            .collect();
        assert_eq!(values.len(), 1);
        let value = values[0].to_str().unwrap();
        assert!(!value.contains(['\r', '\n']));
        if expected.is_empty() {
            assert!(
                value.starts_with("inline; filename=\"nnn") && value.len() < 300,
                "{value}"
            );
        } else {
            assert_eq!(value, expected);
        }
    }
}

/// Spec 4.4 #29-31: Content-Type is returned as uploaded; inline only for the safe list, decided by type alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_only_for_the_spec_allowlist() {
    let t = TestServer::start().await;
    let cases = [
        ("text/html", "attachment"),
        ("image/svg+xml", "attachment"),
        ("application/pdf", "attachment"),
        ("application/javascript", "attachment"),
        ("image/png", "inline"),
        ("video/mp4", "inline"),
        ("text/plain; charset=utf-8", "inline"),
    ];
    for (ct, disposition) in cases {
        // HTML bytes declared as the type: only the declared type counts.
        let (s, id) = t
            .upload_ok(ALICE, b"<html><script>alert(1)</script>", Some(ct), None)
            .await;
        let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
        assert_eq!(header(&resp, "content-type"), ct);
        assert_eq!(header(&resp, "content-disposition"), disposition, "{ct}");
    }
}

/// Spec 4.4 #36-37 and 4.8 #51: CSP, CORP, nosniff, cache and CORS headers on served media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_carry_security_and_cache_headers() {
    let t = TestServer::start().await;
    let (s, id) = t.upload_ok(ALICE, b"abc", Some("image/png"), None).await;
    let resp = t.get(&authed(&s, &id), Some(ALICE)).await;
    assert_eq!(header(&resp, "content-security-policy"), CSP);
    assert_eq!(
        header(&resp, "cross-origin-resource-policy"),
        "cross-origin"
    );
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&resp, "cache-control"),
        "public, max-age=86400, s-maxage=0, proxy-revalidate"
    );
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    assert!(header(&resp, "etag").starts_with('"'));
    assert!(!header(&resp, "x-request-id").is_empty());
}

/// RFC 9110 §14: single range -> 206 with Content-Range; suffix; past-the-end clamps; invalid -> 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_return_partial_content() {
    let t = TestServer::start().await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let (s, id) = t.upload_ok(ALICE, &data, Some("video/mp4"), None).await;
    let path = authed(&s, &id);
    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=9990-", 9990, 10_000),
        ("bytes=-10", 9990, 10_000),
        ("bytes=5000-999999", 5000, 10_000),
    ] {
        let resp = t
            .http
            .get(t.url(&path))
            .bearer_auth(ALICE)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{}/10000", end - 1)
        );
        assert_eq!(header(&resp, "content-length"), (end - start).to_string());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[start..end]);
    }
    // Unparseable ranges are ignored: the whole file.
    let resp = t
        .http
        .get(t.url(&path))
        .bearer_auth(ALICE)
        .header("range", "bytes=oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 10_000);
    // If-Range with another validator means "send it all".
    let resp = t
        .http
        .get(t.url(&path))
        .bearer_auth(ALICE)
        .header("range", "bytes=0-1")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// RFC 9110 §14.6: several ranges -> multipart/byteranges whose parts carry exactly those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ranges_return_multipart_byteranges() {
    let t = TestServer::start().await;
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    let (s, id) = t.upload_ok(ALICE, &data, Some("audio/ogg"), None).await;
    let resp = t
        .http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .header("range", "bytes=0-9, 100-199, -5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let ct = header(&resp, "content-type").to_owned();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(&ct)
        .to_owned();
    let declared: usize = header(&resp, "content-length").parse().unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), declared);
    let mut parts = Vec::new();
    let text = body.as_ref();
    let delim = format!("--{boundary}");
    let mut rest = text;
    while let Some(pos) = find(rest, delim.as_bytes()) {
        rest = &rest[pos + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let header_end = find(rest, b"\r\n\r\n").unwrap();
        let headers = std::str::from_utf8(&rest[..header_end]).unwrap().to_owned();
        let after = &rest[header_end + 4..];
        let next = find(after, format!("\r\n{delim}").as_bytes()).unwrap();
        parts.push((headers, after[..next].to_vec()));
        rest = &after[next..];
    }
    assert_eq!(parts.len(), 3);
    let expect = [(0usize, 10usize), (100, 200), (4995, 5000)];
    for ((headers, bytes), (a, b)) in parts.iter().zip(expect) {
        assert!(headers.contains("Content-Type: audio/ogg"), "{headers}");
        assert!(
            headers.contains(&format!("Content-Range: bytes {a}-{}/5000", b - 1)),
            "{headers}"
        );
        assert_eq!(bytes.as_slice(), &data[a..b]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 9110 §15.5.17: no satisfiable range -> 416 with `Content-Range: bytes */len`, Matrix body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_range_is_416() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"0123456789", Some("text/plain"), None)
        .await;
    let resp = t
        .http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .header("range", "bytes=50-60")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-range"), "bytes */10");
    assert_matrix_error(resp, 416, "M_INVALID_PARAM").await;
}

/// HEAD answers the headers of GET (length included) with no body, ranges too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_returns_headers_without_body() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, &[7u8; 1234], Some("image/webp"), Some("w.webp"))
        .await;
    let resp = t
        .http
        .head(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "1234");
    assert_eq!(header(&resp, "content-type"), "image/webp");
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"w.webp\""
    );
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = t
        .http
        .head(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(header(&resp, "content-length"), "10");
    assert_eq!(header(&resp, "content-range"), "bytes 10-19/1234");
    // HEAD still needs auth on the authenticated endpoint.
    let resp = t.http.head(t.url(&authed(&s, &id))).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

/// A matching If-None-Match gets 304 (after auth), so caches can revalidate cheaply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_etag_gets_not_modified() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"etag me", Some("text/plain"), None)
        .await;
    let first = t.get(&authed(&s, &id), Some(ALICE)).await;
    let etag = header(&first, "etag").to_owned();
    let resp = t
        .http
        .get(t.url(&authed(&s, &id)))
        .bearer_auth(ALICE)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = t
        .http
        .get(t.url(&authed(&s, &id)))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// Spec 4.6 #41: media created during the freeze is 404 on every legacy alias, 200 when authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_media_is_not_found_on_legacy_endpoints() {
    let t = TestServer::start().await;
    let (s, id) = t
        .upload_ok(ALICE, b"new", Some("image/png"), Some("n.png"))
        .await;
    for version in ["r0", "v1", "v3"] {
        for suffix in ["", "/n.png"] {
            let resp = t
                .get(
                    &format!("/_matrix/media/{version}/download/{s}/{id}{suffix}"),
                    None,
                )
                .await;
            assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
        }
    }
    assert_eq!(t.get(&authed(&s, &id), Some(ALICE)).await.status(), 200);
}

/// Spec 4.6 #42: media created before the freeze stays on the legacy endpoints, without auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_from_before_the_freeze_stays_on_legacy_endpoints() {
    let mut t = TestServer::start_with(|c| c.media.freeze_unauthenticated = false).await;
    let (s, old) = t
        .upload_ok(ALICE, b"old", Some("image/png"), Some("o.png"))
        .await;
    t.config.media.freeze_unauthenticated = true;
    t.restart().await;
    let (_, new) = t.upload_ok(ALICE, b"new", Some("image/png"), None).await;
    for version in ["r0", "v1", "v3"] {
        let resp = t
            .get(
                &format!("/_matrix/media/{version}/download/{s}/{old}"),
                None,
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=\"o.png\""
        );
        assert_eq!(header(&resp, "content-security-policy"), CSP);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"old");
    }
    let resp = t.get(&legacy(&s, &new), None).await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
}

/// Upload aliases r0/v1/v3 all store media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_path_aliases_work() {
    let t = TestServer::start().await;
    for version in ["r0", "v1", "v3"] {
        let resp = t
            .http
            .post(t.url(&format!("/_matrix/media/{version}/upload")))
            .bearer_auth(ALICE)
            .body("a")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{version}");
    }
    assert_eq!(t.counts().await.media, 3);
}

/// Unknown media is 404 M_NOT_FOUND; other servers' media too (no federation fetch yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_media_is_not_found() {
    let t = TestServer::start().await;
    let resp = t
        .get(&authed(SERVER_NAME, "doesnotexist"), Some(ALICE))
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    let resp = t.get(&authed("other.example", "abc"), Some(ALICE)).await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
    let resp = t
        .get(
            &format!("{}?allow_remote=false", legacy("other.example", "abc")),
            None,
        )
        .await;
    assert_matrix_error(resp, 404, "M_NOT_FOUND").await;
}

/// Spec 4.1 #3-4: malformed media ids and server names are refused before any storage access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_are_refused_and_never_reach_files() {
    let t = TestServer::start().await;
    t.upload_ok(ALICE, b"secret", Some("text/plain"), None)
        .await;
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "a.b",
        "%2E%2E",
        "abc%00",
        "%C3%A9",
        "..%5C..%5Cwin.ini",
    ] {
        for path in [authed(SERVER_NAME, bad), legacy(SERVER_NAME, bad)] {
            // Raw bytes on the wire: no client-side path normalisation.
            let (status, text) = raw_request(
                t.addr(),
                &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {ALICE}"),
            )
            .await;
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.contains("\"errcode\":\"M_INVALID_PARAM\""), "{text}");
            assert!(
                !text.contains("secret") && !text.contains("root:"),
                "{text}"
            );
        }
    }
    for bad in ["bad%20server", "a@b", "x:99999999"] {
        let resp = t.get(&authed(bad, "abc"), Some(ALICE)).await;
        assert_matrix_error(resp, 400, "M_INVALID_PARAM").await;
    }
    let resp = t
        .http
        .put(t.url("/_matrix/media/v3/upload/test.local/..%2Fx"))
        .bearer_auth(ALICE)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_matrix_error(resp, 400, "M_INVALID_PARAM").await;
}

/// Spec 4.5 #40: config answers m.upload.size on both paths and requires auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_config_advertises_the_upload_limit() {
    let t = TestServer::start_with(|c| c.media.max_upload_size = bytesize::ByteSize::mib(7)).await;
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
        "/_matrix/media/r0/config",
    ] {
        let resp = t.get(path, Some(ALICE)).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["m.upload.size"], 7 * 1024 * 1024);
        assert_matrix_error(t.get(path, None).await, 401, "M_MISSING_TOKEN").await;
    }
}

/// Small blobs are served from memory after their first read, and memory
/// never gets around auth, quarantine or deletion: every read passes the
/// same checks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_never_bypasses_the_checks() {
    let t = TestServer::start().await;
    let (s, id) = t.upload_ok(ALICE, b"small and hot", None, None).await;
    let path = format!("/_matrix/client/v1/media/download/{s}/{id}");
    for _ in 0..3 {
        let resp = t.get(&path, Some(BOB)).await;
        assert_eq!(resp.bytes().await.unwrap().as_ref(), b"small and hot");
    }
    assert!(t.metric("mxmedia_memory_cache_hits_total", "") >= 2.0);
    // Ranges are slices of the same bytes.
    let resp = t
        .http
        .get(t.url(&path))
        .bearer_auth(BOB)
        .header("range", "bytes=6-8")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"and");

    assert_matrix_error(t.get(&path, None).await, 401, "M_MISSING_TOKEN").await;
    let quarantine = t
        .http
        .post(t.url(&format!("/_synapse/admin/v1/media/quarantine/{s}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(quarantine.status(), 200);
    assert_matrix_error(t.get(&path, Some(BOB)).await, 404, "M_NOT_FOUND").await;
    let delete = t
        .http
        .delete(t.url(&format!("/_synapse/admin/v1/media/{s}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    assert_matrix_error(t.get(&path, Some(BOB)).await, 404, "M_NOT_FOUND").await;
}
