//! A web site on loopback with ordinary and hostile pages, counting what it
//! was asked and what it managed to send.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;

use super::common::picture;

/// What the site saw.
#[derive(Default)]
pub struct Seen {
    hits: Mutex<HashMap<String, u64>>,
    /// Bytes of streamed bodies that left the site.
    pub streamed: AtomicU64,
    /// `User-Agent` and `Accept-Language` of the last request.
    pub agent: Mutex<(String, String)>,
}

impl Seen {
    pub fn hits(&self, path: &str) -> u64 {
        *self.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
}

pub struct Site {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Site {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
}

pub const ARTICLE: &str = include_str!("fixtures/article.html");
pub const VIDEO: &str = include_str!("fixtures/video.html");
pub const TITLE_ONLY: &str =
    "<!doctype html><html><head><title>Only a title here</title></head><body></body></html>";

fn html(body: impl Into<Body>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn typed(kind: &'static str, body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, kind)], body.into()).into_response()
}

/// A body that never ends (1 KiB every millisecond), counting what leaves.
fn endless(seen: Arc<Seen>, kind: &'static str) -> Response {
    let chunk = Bytes::from(vec![b'a'; 1024]);
    let stream = futures::stream::unfold((seen, chunk), |(seen, chunk)| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        seen.streamed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Some((Ok::<_, std::io::Error>(chunk.clone()), (seen, chunk)))
    });
    typed(kind, Body::from_stream(stream))
}

/// `size` bytes of page (a head with a title, then paragraphs), streamed
/// and counted.
fn large(seen: Arc<Seen>, size: u64) -> Response {
    let head = Bytes::from_static(b"<!doctype html><html><head><title>A very large page</title><meta property=\"og:description\" content=\"Large\"></head><body>");
    let para = Bytes::from(format!("<p>{}</p>\n", "words and more words ".repeat(50)));
    let stream = futures::stream::unfold((seen, 0u64, true), move |(seen, sent, first)| {
        let (head, para) = (head.clone(), para.clone());
        async move {
            if sent >= size {
                return None;
            }
            let chunk = if first { head } else { para };
            seen.streamed
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((
                Ok::<_, std::io::Error>(chunk.clone()),
                (seen, sent + chunk.len() as u64, false),
            ))
        }
    });
    html(Body::from_stream(stream))
}

/// A PNG claiming 30000 x 30000 pixels: a few hundred bytes that would
/// decode to gigabytes.
pub fn bomb_png() -> Vec<u8> {
    let mut png = picture(8, 8, 1, image::ImageFormat::Png);
    // IHDR starts at 16: width and height, then the chunk's CRC.
    png[16..20].copy_from_slice(&30000u32.to_be_bytes());
    png[20..24].copy_from_slice(&30000u32.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

async fn page(
    State((seen, base)): State<(Arc<Seen>, String)>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    {
        let mut hits = seen.hits.lock().unwrap();
        *hits.entry(format!("/{name}")).or_default() += 1;
    }
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    *seen.agent.lock().unwrap() = (header(header::USER_AGENT), header(header::ACCEPT_LANGUAGE));
    match name.as_str() {
        "article" => html(ARTICLE.replace("{base}", &base)),
        "video" => html(VIDEO.replace("{base}", &base)),
        "title-only" => html(TITLE_ONLY),
        "photo.png" => typed("image/png", picture(300, 200, 3, image::ImageFormat::Png)),
        "lead.jpg" => typed("image/jpeg", picture(640, 360, 5, image::ImageFormat::Jpeg)),
        "bomb.png" => typed("image/png", bomb_png()),
        "bomb-page" => html(format!(
            "<meta property='og:title' content='Bomb'><meta property='og:image' content='{base}/bomb.png'>"
        )),
        "huge.png" => typed("image/png", vec![0x89; 3 * 1024 * 1024]),
        "huge-image-page" => html(format!(
            "<meta property='og:title' content='Huge'><meta property='og:image' content='{base}/huge.png'>"
        )),
        "not-an-image" => typed("image/png", b"<html>this is no png</html>".to_vec()),
        "fake-image-page" => html(format!(
            "<meta property='og:title' content='Fake'><meta property='og:image' content='{base}/not-an-image'>"
        )),
        "endless-html" => endless(seen.clone(), "text/html"),
        "endless-audio" => endless(seen.clone(), "audio/mpeg"),
        "large" => large(seen.clone(), 64 * 1024 * 1024),
        "zip-bomb" => {
            // A gzip stream of 64 MiB of zeros, sent as if it were HTML.
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            for _ in 0..64 {
                gz.write_all(&vec![0u8; 1024 * 1024]).unwrap();
            }
            let body = gz.finish().unwrap();
            (
                [
                    (header::CONTENT_TYPE, "text/html"),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                body,
            )
                .into_response()
        }
        "latin1" => (
            [(header::CONTENT_TYPE, "text/html; charset=iso-8859-1")],
            b"<title>Caf\xE9 cr\xE8me</title>".to_vec(),
        )
            .into_response(),
        "koi8" => typed(
            "text/html",
            b"<meta charset=\"koi8-r\"><title>\xF0\xD2\xC9\xD7\xC5\xD4</title>".to_vec(),
        ),
        "no-charset" => typed("text/html", b"<title>na\xEFve</title>".to_vec()),
        "bogus-charset" => (
            [(header::CONTENT_TYPE, "text/html; charset=x-no-such-thing")],
            b"<title>r\xE9sum\xE9</title>".to_vec(),
        )
            .into_response(),
        "utf16" => {
            let mut body = vec![0xFF, 0xFE];
            for unit in "<title>Sixteen \u{263A}</title>".encode_utf16() {
                body.extend_from_slice(&unit.to_le_bytes());
            }
            typed("text/html", body)
        }
        "oembed-garbage-page" => html(format!(
            "<title>Kept title</title><link rel='alternate' type='application/json+oembed' href='{base}/garbage.json'>"
        )),
        "garbage.json" => typed("application/json", "{\"type\": [1,2,3], \"title\": {\"a\": 1}".to_owned()),
        "video.json" => typed(
            "application/json",
            format!(
                "{{\"type\":\"video\",\"version\":\"1.0\",\"title\":\"A video from oEmbed\",\"provider_name\":\"LoopTube\",\"thumbnail_url\":\"{base}/lead.jpg\",\"html\":\"<iframe src='x'></iframe>\"}}"
            ),
        ),
        "provider-oembed" => typed(
            "application/json",
            "{\"type\":\"rich\",\"version\":\"1.0\",\"title\":\"From the provider\",\"html\":\"<blockquote><p>Said through oEmbed</p></blockquote>\"}".to_owned(),
        ),
        "watch" => html("<title>Scraped instead</title>"),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            html("<title>Slow but single</title>")
        }
        "to-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        "to-private" => redirect("http://10.0.0.1/"),
        "to-mapped" => redirect("http://[::ffff:10.1.2.3]/"),
        "to-ipv6-loopback" => redirect("http://[::1]/"),
        "to-unspecified" => redirect("http://0.0.0.0/"),
        "chain-to-metadata" => redirect(&format!("{base}/to-metadata")),
        "loop" => redirect(&format!("{base}/loop")),
        "metadata-image-page" => html(
            "<meta property='og:title' content='Sneaky'><meta property='og:image' content='http://169.254.169.254/latest/meta-data/iam'>",
        ),
        "metadata-oembed-page" => html(
            "<title>Sneaky oEmbed</title><link rel='alternate' type='application/json+oembed' href='http://10.0.0.1/oembed'>",
        ),
        "denied-image-page" => html(format!(
            "<meta property='og:title' content='Denied image'><meta property='og:image' content='{base}/denied/photo.png'>"
        )),
        "denied" => html("<title>never</title>"),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn denied(State((seen, _)): State<(Arc<Seen>, String)>) -> Response {
    let mut hits = seen.hits.lock().unwrap();
    *hits.entry("/denied/photo.png".to_owned()).or_default() += 1;
    typed("image/png", picture(300, 200, 3, image::ImageFormat::Png))
}

/// Starts the site on 127.0.0.1.
pub async fn start() -> Site {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let base = format!("http://127.0.0.1:{}", addr.port());
    let app = Router::new()
        .route("/denied/photo.png", get(denied))
        .route("/{name}", get(page))
        .with_state((seen.clone(), base));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Site { addr, seen }
}
