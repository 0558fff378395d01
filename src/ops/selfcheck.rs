//! `mxmedia selfcheck --public-url`: checks a deployment from outside,
//! through the reverse proxy, the way clients and other servers reach it.
//! Every answer mxmedia gives carries `X-Served-By: mxmedia`, so each check
//! knows for certain which service the proxy sent a route to. One line per
//! check, with the fix for each failure.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use url::Url;

// The error with its causes: reqwest's top line alone says little.
use crate::net::error_chain as describe;

/// Where to look from, and what the admin gave us to look with.
#[derive(Debug, Clone)]
pub struct PublicCheck {
    /// The homeserver's public client URL (`https://matrix.example.org`).
    pub public_url: Url,
    /// Where other servers reach it; default: the same host on port 8448.
    pub federation_url: Option<Url>,
    /// Any user's access token: enables the checks that need a stored file.
    pub token: Option<String>,
    /// The upload limit to test the proxy's body limit against; default:
    /// what the media config endpoint says.
    pub max_upload: Option<u64>,
    /// The proxy's access log, searched for a test token afterwards.
    pub proxy_log: Option<PathBuf>,
    /// A PEM certificate to trust besides the system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Skipped,
}

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What to change, for a failure.
    pub fix: Option<String>,
}

impl Verdict {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skipped(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Skipped,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// What came back: status, whether mxmedia answered, the headers and body.
struct Answer {
    status: StatusCode,
    ours: bool,
    headers: header::HeaderMap,
    body: Bytes,
}

const MARKER: &str = "x-served-by";
/// A token no homeserver issued, easy to find in a log.
const CANARY: &str = "mxmedia-selfcheck-canary-token";
const ROUTES_FIX: &str = "send it to mxmedia (docs/reverse-proxy.md, step 1)";

/// Runs every check; never fails as a whole (each verdict says what went wrong).
pub async fn run(check: &PublicCheck) -> Result<Vec<Verdict>, String> {
    let client = client(check)?;
    let base = check.public_url.as_str().trim_end_matches('/').to_owned();
    let federation = if let Some(url) = &check.federation_url {
        url.as_str().trim_end_matches('/').to_owned()
    } else {
        let mut url = check.public_url.clone();
        url.set_port(Some(8448))
            .map_err(|()| "the public URL has no host".to_owned())?;
        url.as_str().trim_end_matches('/').to_owned()
    };
    let ask = |method: Method, url: String| {
        let client = client.clone();
        async move { fetch(&client, method, &url, None, &[]).await }
    };
    let mut out = Vec::new();
    for (name, path) in [
        ("client_media", "/_matrix/client/v1/media/config"),
        ("legacy_media_v3", "/_matrix/media/v3/config"),
        ("legacy_media_r0", "/_matrix/media/r0/config"),
        (
            "preview_url",
            "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org%2F",
        ),
    ] {
        out.push(reaches_us(
            name,
            path,
            ask(Method::GET, format!("{base}{path}")).await,
        ));
    }
    let path = "/_matrix/federation/v1/media/download/mxmedia-selfcheck";
    out.push(reaches_us(
        "federation_media",
        &format!("{federation}{path}"),
        ask(Method::GET, format!("{federation}{path}")).await,
    ));
    out.push(homeserver_keeps(
        ask(Method::GET, format!("{base}/_matrix/client/versions")).await,
    ));
    out.push(admin_media(
        ask(
            Method::GET,
            format!("{base}/_synapse/admin/v1/media/selfcheck.invalid/selfcheck"),
        )
        .await,
    ));
    out.push(match &check.token {
        Some(token) => match check.max_upload {
            Some(limit) => body_limit(&client, &base, token, limit).await,
            None => match upload_limit(&client, &base, token).await {
                Some(limit) => body_limit(&client, &base, token, limit).await,
                None => Verdict::fail(
                    "upload_near_limit",
                    "the media config did not say the upload limit",
                    "check the token, and that /_matrix/client/v1/media/ reaches mxmedia (docs/reverse-proxy.md, step 1)",
                ),
            },
        },
        None => Verdict::skipped(
            "upload_near_limit",
            "give --token (any user's) to upload a file just under the limit through the proxy",
        ),
    });
    match &check.token {
        Some(token) => out.extend(ranges(&client, &base, token).await),
        None => out.push(Verdict::skipped(
            "range_and_head",
            "give --token (any user's) to upload a small file and read it back",
        )),
    }
    out.push(tokens_in_logs(&client, &base, check.proxy_log.as_deref()).await);
    Ok(out)
}

fn client(check: &PublicCheck) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mxmedia-selfcheck/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &check.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| e.to_string())
}

async fn fetch(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(header::HeaderName, &str)],
) -> Result<Answer, String> {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = request.send().await.map_err(|e| describe(&e))?;
    answer(response).await
}

async fn answer(response: reqwest::Response) -> Result<Answer, String> {
    let status = response.status();
    let headers = response.headers().clone();
    let ours = headers
        .get(MARKER)
        .is_some_and(|v| v.as_bytes() == b"mxmedia");
    let body = response.bytes().await.map_err(|e| describe(&e))?;
    Ok(Answer {
        status,
        ours,
        headers,
        body,
    })
}

fn reaches_us(name: &'static str, path: &str, answer: Result<Answer, String>) -> Verdict {
    match answer {
        Ok(a) if a.ours => Verdict::ok(name, format!("{path} reaches mxmedia ({})", a.status)),
        Ok(a) => Verdict::fail(
            name,
            format!(
                "{path} is answered by something else ({}, no {MARKER}: mxmedia header)",
                a.status
            ),
            format!("the proxy sends this route elsewhere: {ROUTES_FIX}"),
        ),
        Err(e) => Verdict::fail(
            name,
            format!("{path}: {e}"),
            "the proxy is not reachable at this address (DNS, port, TLS certificate?)",
        ),
    }
}

fn homeserver_keeps(answer: Result<Answer, String>) -> Verdict {
    const NAME: &str = "homeserver_routes";
    match answer {
        Ok(a) if !a.ours && a.status.is_success() => Verdict::ok(
            NAME,
            "/_matrix/client/versions reaches the homeserver, not mxmedia",
        ),
        Ok(a) if a.ours => Verdict::fail(
            NAME,
            "/_matrix/client/versions is answered by mxmedia",
            "only the media prefixes go to mxmedia; everything else under /_matrix goes to the homeserver (docs/reverse-proxy.md, step 1)",
        ),
        Ok(a) => Verdict::fail(
            NAME,
            format!("/_matrix/client/versions answered {}", a.status),
            "the homeserver is not reachable through the proxy",
        ),
        Err(e) => Verdict::fail(NAME, e, "the proxy is not reachable at this address"),
    }
}

fn admin_media(answer: Result<Answer, String>) -> Verdict {
    const NAME: &str = "admin_media";
    match answer {
        Ok(a) if a.ours => Verdict::ok(NAME, "Synapse's admin media API reaches mxmedia"),
        Ok(a) if a.status == StatusCode::FORBIDDEN => Verdict::skipped(
            NAME,
            "the proxy refuses admin paths from here (as it should outside the admins' network); run the check from there to test the route",
        ),
        Ok(a) => Verdict::fail(
            NAME,
            format!(
                "/_synapse/admin/v1/media/… is answered by something else ({})",
                a.status
            ),
            "route the admin media paths to mxmedia (docs/reverse-proxy.md, admin media routes)",
        ),
        Err(e) => Verdict::fail(NAME, e, "the proxy is not reachable at this address"),
    }
}

/// `m.upload.size` from the media config, asked with `token`.
async fn upload_limit(client: &reqwest::Client, base: &str, token: &str) -> Option<u64> {
    let url = format!("{base}/_matrix/client/v1/media/config");
    let answer = fetch(client, Method::GET, &url, Some(token), &[])
        .await
        .ok()?;
    let config: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    config["m.upload.size"].as_u64()
}

/// An upload a little under the limit: the proxy must let it through to
/// mxmedia. Its bytes are the same every run (zeros), so repeated checks
/// share one stored object; with an admin's token it is deleted again.
async fn body_limit(client: &reqwest::Client, base: &str, token: &str, limit: u64) -> Verdict {
    const NAME: &str = "upload_near_limit";
    let size = limit.saturating_sub(4096);
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let chunks = size.div_ceil(chunk.len() as u64);
    let last = size - (chunks.saturating_sub(1)) * chunk.len() as u64;
    let body = futures::stream::iter((0..chunks).map(move |i| {
        let piece = if i + 1 == chunks {
            chunk.slice(..usize::try_from(last).unwrap_or(0))
        } else {
            chunk.clone()
        };
        Ok::<_, std::io::Error>(piece)
    }));
    let sent = client
        .post(format!(
            "{base}/_matrix/media/v3/upload?filename=mxmedia-selfcheck.bin"
        ))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let answer = match sent {
        Ok(response) => answer(response).await,
        Err(e) => Err(describe(&e)),
    };
    match answer {
        Ok(a) if a.ours && a.status.is_success() => {
            let mxc = serde_json::from_slice::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["content_uri"].as_str().map(ToOwned::to_owned))
                .unwrap_or_default();
            let path = mxc.strip_prefix("mxc://").unwrap_or_default();
            let deleted = fetch(
                client,
                Method::DELETE,
                &format!("{base}/_synapse/admin/v1/media/{path}"),
                Some(token),
                &[],
            )
            .await
            .is_ok_and(|a| a.ours && a.status.is_success());
            let left = if deleted {
                "deleted again".to_owned()
            } else {
                format!("stored as {mxc}: remove it with `mxmedia media delete {mxc}`")
            };
            Verdict::ok(
                NAME,
                format!("a {size}-byte upload passes the proxy ({left})"),
            )
        }
        Ok(a) if a.status == StatusCode::PAYLOAD_TOO_LARGE && !a.ours => Verdict::fail(
            NAME,
            format!(
                "the proxy refuses a {size}-byte upload itself (413), under mxmedia's limit of {limit}"
            ),
            "raise the proxy's body limit a little above media.max_upload_size (nginx: client_max_body_size; docs/reverse-proxy.md, step 2)",
        ),
        Ok(a) if a.ours => Verdict::fail(
            NAME,
            format!(
                "mxmedia refused a {size}-byte upload: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
            "check the token, and the user's quota (docs/retention.md)",
        ),
        Ok(a) => Verdict::fail(
            NAME,
            format!("a {size}-byte upload got {} from something else", a.status),
            "the proxy cut the upload off: check its body limit and upload timeouts (docs/reverse-proxy.md, steps 2 and 3)",
        ),
        Err(e) => Verdict::fail(
            NAME,
            format!("a {size}-byte upload failed: {e}"),
            "check the proxy's body limit and timeouts for uploads (docs/reverse-proxy.md, steps 2 and 3)",
        ),
    }
}

/// Uploads a small file with `token`, then reads part of it with `Range`
/// and its size with `HEAD`: both must survive the proxy.
async fn ranges(client: &reqwest::Client, base: &str, token: &str) -> Vec<Verdict> {
    const BYTES: &[u8] = b"mxmedia selfcheck: this file tests Range and HEAD through the proxy\n";
    let stored = client
        .post(format!(
            "{base}/_matrix/media/v3/upload?filename=selfcheck.txt"
        ))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(BYTES)
        .send()
        .await;
    let mxc = match stored {
        Ok(response) => match answer(response).await {
            Ok(a) if a.ours && a.status.is_success() => {
                serde_json::from_slice::<serde_json::Value>(&a.body)
                    .ok()
                    .and_then(|v| v["content_uri"].as_str().map(ToOwned::to_owned))
            }
            Ok(a) => {
                return vec![Verdict::fail(
                    "range_and_head",
                    format!(
                        "the test upload got {} ({})",
                        a.status,
                        String::from_utf8_lossy(&a.body)
                    ),
                    "check the token, and that /_matrix/media/ reaches mxmedia (docs/reverse-proxy.md, step 1)",
                )];
            }
            Err(e) => return vec![Verdict::fail("range_and_head", e, ROUTES_FIX)],
        },
        Err(e) => {
            return vec![Verdict::fail("range_and_head", describe(&e), ROUTES_FIX)];
        }
    };
    let Some(path) = mxc.as_deref().and_then(|m| m.strip_prefix("mxc://")) else {
        return vec![Verdict::fail(
            "range_and_head",
            "the test upload's answer has no content_uri",
            ROUTES_FIX,
        )];
    };
    let url = format!("{base}/_matrix/client/v1/media/download/{path}");
    let range = fetch(
        client,
        Method::GET,
        &url,
        Some(token),
        &[(header::RANGE, "bytes=8-16")],
    )
    .await;
    let expected_range = format!("bytes 8-16/{}", BYTES.len());
    let range = match range {
        Ok(a)
            if a.ours
                && a.status == StatusCode::PARTIAL_CONTENT
                && a.body[..] == BYTES[8..=16]
                && a.headers
                    .get(header::CONTENT_RANGE)
                    .is_some_and(|v| v.as_bytes() == expected_range.as_bytes()) =>
        {
            Verdict::ok(
                "range",
                "a Range request gets its 206 and the bytes asked for",
            )
        }
        Ok(a) => Verdict::fail(
            "range",
            format!(
                "a Range request got {} with {} bytes",
                a.status,
                a.body.len()
            ),
            "let Range headers and 206 answers through (no caching or buffering module rewriting them)",
        ),
        Err(e) => Verdict::fail("range", e, ROUTES_FIX),
    };
    let head = match fetch(client, Method::HEAD, &url, Some(token), &[]).await {
        Ok(a)
            if a.ours
                && a.status == StatusCode::OK
                && a.body.is_empty()
                && a.headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() == BYTES.len().to_string().as_bytes()) =>
        {
            Verdict::ok("head", "HEAD gets the length and no body")
        }
        Ok(a) => Verdict::fail(
            "head",
            format!("HEAD got {} ({} body bytes)", a.status, a.body.len()),
            "pass HEAD requests on to mxmedia as they are",
        ),
        Err(e) => Verdict::fail("head", e, ROUTES_FIX),
    };
    vec![range, head]
}

/// A request with a token in its query string; then the proxy's log must
/// not hold it.
async fn tokens_in_logs(
    client: &reqwest::Client,
    base: &str,
    log: Option<&std::path::Path>,
) -> Verdict {
    const NAME: &str = "tokens_in_logs";
    let url = format!("{base}/_matrix/client/v1/media/config?access_token={CANARY}");
    if let Err(e) = fetch(client, Method::GET, &url, None, &[]).await {
        return Verdict::fail(NAME, e, ROUTES_FIX);
    }
    let Some(log) = log else {
        return Verdict::skipped(
            NAME,
            "give --proxy-log (the proxy's access log) to check that query strings with tokens are not logged; mxmedia never logs them",
        );
    };
    // Proxies write their access log when the request ends; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    match std::fs::read(log) {
        Ok(text) if memchr::memmem::find(&text, CANARY.as_bytes()).is_some() => Verdict::fail(
            NAME,
            format!("{} holds the access token of a test request", log.display()),
            "log paths without query strings (docs/reverse-proxy.md, step 5: nginx's log_format with $uri, Caddy's query filter)",
        ),
        Ok(_) => Verdict::ok(
            NAME,
            format!("{} does not hold tokens from query strings", log.display()),
        ),
        Err(e) => Verdict::fail(
            NAME,
            format!("{}: {e}", log.display()),
            "give a log file this user can read",
        ),
    }
}
