//! Federation peers for the federation tests: mxmedia deployments behind
//! TLS fronts, key servers, hostile servers, a DNS server for SRV answers,
//! and the helpers that sign requests and read multipart bodies.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::Ed25519KeyPair,
};
use tokio::net::TcpListener;

use super::{
    common::*,
    tls::{TestCa, TlsFront},
};

/// One deployment: mxmedia named after the address of its TLS front.
pub struct Deployment {
    pub name: String,
    pub front: TlsFront,
    pub t: TestServer,
}

pub fn key_file(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    let seed: [u8; 32] = rand::random();
    let path = dir.join(format!("{version}.key"));
    std::fs::write(
        &path,
        format!(
            "ed25519 {version} {}\n",
            Base64::<ruma::serde::base64::Standard, _>::new(seed.to_vec()).encode()
        ),
    )
    .unwrap();
    path
}

pub async fn deployment(
    ca: &TestCa,
    tweak: impl FnOnce(&mut mxmedia::config::Config),
) -> Deployment {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let keys = tempfile::tempdir().unwrap().keep();
    let ca_path = ca.write(&keys);
    let key = key_file(&keys, "k1");
    let server_name = name.clone();
    let t = TestServer::start_with(move |c| {
        c.server_name = server_name.as_str().try_into().unwrap();
        c.federation.signing_key_path = Some(key);
        c.federation.extra_ca_path = Some(ca_path);
        c.federation.allowed_private_ranges = vec!["127.0.0.0/8".parse().unwrap()];
        tweak(c);
    })
    .await;
    let front = TlsFront::serve(listener, ca, &["127.0.0.1"], t.addr());
    Deployment { name, front, t }
}

impl Deployment {
    pub fn server_name(&self) -> &ServerName {
        <&ServerName>::try_from(self.name.as_str()).unwrap()
    }

    /// A request from this deployment to `to`, signed by it.
    pub async fn signed_get(&self, ca: &TestCa, to: &Deployment, path: &str) -> reqwest::Response {
        let auth = self
            .t
            .server()
            .state()
            .federation
            .sign(to.server_name(), &http::Method::GET, path)
            .unwrap();
        ca.client()
            .get(format!("https://{}{path}", to.front.addr))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
    }
}

/// The two parts of a federation media body.
pub fn split_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let mut rest = body;
    // Skip to the first delimiter.
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delimiter.as_bytes()).unwrap();
    rest = &rest[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").unwrap();
        let end = find(rest, format!("\r\n{delimiter}").as_bytes()).unwrap();
        let part = &rest[..end];
        let split = find(part, b"\r\n\r\n").unwrap();
        let headers = String::from_utf8(part[..split].to_vec()).unwrap();
        out.push((headers, part[split + 4..].to_vec()));
        rest = &rest[end + 2 + delimiter.len()..];
    }
    out
}
/// `GET path` on `to`, signed as `origin` with `pair` (a key server of our
/// own, not a deployment).
pub async fn get_signed_by(
    client: &reqwest::Client,
    pair: &Ed25519KeyPair,
    origin: &str,
    to: &Deployment,
    path: &str,
) -> reqwest::Response {
    let mut request = http::Request::new(Vec::<u8>::new());
    *request.uri_mut() = path.parse().unwrap();
    let x = XMatrix::sign_http_request(
        &request,
        XMatrixSigningInput::new(
            origin.try_into().unwrap(),
            to.server_name().to_owned(),
            pair,
        ),
    )
    .unwrap();
    client
        .get(format!("https://{}{path}", to.front.addr))
        .header("authorization", x.to_string())
        .send()
        .await
        .unwrap()
}

/// A key server behind TLS: `doc` gets its server name and returns the
/// key document it publishes.
pub async fn key_server(
    ca: &TestCa,
    doc: impl FnOnce(&str) -> serde_json::Value,
) -> (
    String,
    TlsFront,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let doc = doc(&name);
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = plain.local_addr().unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/_matrix/key/v2/server",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(plain, app).await.unwrap();
    });
    let front = TlsFront::serve(listener, ca, &["127.0.0.1"], backend);
    (name, front, task, asked)
}

/// A key document for `name` publishing `pair`, valid until `valid_until`.
pub fn key_document(
    name: &str,
    pair: &Ed25519KeyPair,
    valid_until: i64,
    self_signed: bool,
) -> serde_json::Value {
    let mut key = CanonicalJsonObject::new();
    key.insert(
        "key".into(),
        CanonicalJsonValue::String(
            Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode(),
        ),
    );
    let mut doc = CanonicalJsonObject::new();
    doc.insert(
        "server_name".into(),
        CanonicalJsonValue::String(name.to_owned()),
    );
    doc.insert(
        "valid_until_ts".into(),
        CanonicalJsonValue::Integer(valid_until.try_into().unwrap()),
    );
    doc.insert(
        "verify_keys".into(),
        CanonicalJsonValue::Object(BTreeMap::from([(
            format!("ed25519:{}", pair.version()),
            CanonicalJsonValue::Object(key),
        )])),
    );
    doc.insert(
        "old_verify_keys".into(),
        CanonicalJsonValue::Object(BTreeMap::new()),
    );
    if self_signed {
        ruma::signatures::sign_json(name, pair, &mut doc).unwrap();
    }
    serde_json::to_value(&doc).unwrap()
}
/// Samples of one metric from a deployment's metrics listener.
pub async fn metric(d: &Deployment, name: &str, label: &str) -> f64 {
    let addr = d.t.server().metrics_addr().expect("metrics on");
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
/// Chunks the never-ending "slow" media has sent, across hostile servers.
pub static SLOW_CHUNKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A hostile federation peer: answers media requests per media id.
/// `internal` is a URL of a service on a refused address that would answer
/// if the guard let a request through.
pub async fn hostile_server(
    ca: &TestCa,
    internal: &str,
) -> (String, TlsFront, tokio::task::JoinHandle<()>) {
    use axum::{body::Body, extract::Path, response::Response};
    use futures::{StreamExt as _, TryStreamExt as _};
    pub async fn media(Path(id): Path<String>, internal: String) -> Response {
        let multipart = |second: String, body: Body| {
            let head = format!(
                "--B\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--B\r\n{second}\r\n\r\n"
            );
            let stream =
                futures::stream::once(
                    async move { Ok::<_, std::io::Error>(bytes::Bytes::from(head)) },
                )
                .chain(body.into_data_stream().map_err(std::io::Error::other));
            Response::builder()
                .header("content-type", "multipart/mixed; boundary=B")
                .header("set-cookie", "session=stolen")
                .body(Body::from_stream(stream))
                .unwrap()
        };
        match id.as_str() {
            "legacylegacylegacylegacy" => Response::builder()
                .status(404)
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
                ))
                .unwrap(),
            // 1 GB of zeros, generated as it is sent.
            "hugehugehugehugehugehuge" => multipart(
                "Content-Type: application/octet-stream".into(),
                Body::from_stream(futures::stream::iter(
                    (0..16_384).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 65_536]))),
                )),
            ),
            // Never ends, never finishes a chunk; counts what it sent.
            "slowslowslowslowslowslow" => multipart(
                "Content-Type: application/octet-stream".into(),
                Body::from_stream(futures::stream::unfold((), |()| async {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    SLOW_CHUNKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")), ()))
                })),
            ),
            // HTML that wants to run, with extra headers.
            "htmlhtmlhtmlhtmlhtmlhtml" => multipart(
                "Content-Type: text/html\r\nContent-Disposition: inline; filename=\"x.html\"\r\nSet-Cookie: a=b\r\nX-Frame-Options: ALLOW".into(),
                Body::from("<script>alert(1)</script>\r\n--B--\r\n"),
            ),
            // Metadata that never ends.
            "nestednestednestednested" => multipart(
                "Content-Type: application/json".into(),
                Body::from_stream(futures::stream::iter(
                    (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'['; 4096]))),
                )),
            ),
            // "hopsN...": N redirects on this server, then the media.
            hops if hops.starts_with("hops") => {
                let n: u8 = hops[4..5].parse().unwrap();
                if n == 0 {
                    return multipart(
                        "Content-Type: text/plain".into(),
                        Body::from("after the hops\r\n--B--\r\n"),
                    );
                }
                let next = format!("hops{}{}", n - 1, &hops[5..]);
                Response::builder()
                    .status(302)
                    .header("location", format!("/_matrix/federation/v1/media/download/{next}"))
                    .body(Body::empty())
                    .unwrap()
            }
            id => {
                // "loc" + target: a Location part pointing somewhere private.
                let target = match id {
                    "metadatametadatametadata" => "https://169.254.169.254/latest/meta-data",
                    "privateprivateprivatepri" => "https://10.0.0.1/x",
                    "mappedmappedmappedmapped" => "https://[::ffff:10.0.0.1]/x",
                    "loopbackloopbackloopback" => internal.as_str(),
                    _ => {
                        return Response::builder()
                            .status(302)
                            .header("location", "https://169.254.169.254/latest/meta-data")
                            .body(Body::empty())
                            .unwrap();
                    }
                };
                multipart(format!("Location: {target}"), Body::from("\r\n--B--\r\n"))
            }
        }
    }
    // The first part's body ends at the delimiter the head already wrote;
    // bodies above carry their own closing delimiter where they end.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = plain.local_addr().unwrap();
    // An older peer: no federation media endpoint, only the legacy one,
    // which must be asked with allow_remote=false.
    pub async fn legacy(
        Path((_server, id)): Path<(String, String)>,
        axum::extract::RawQuery(query): axum::extract::RawQuery,
    ) -> Response {
        let query = query.unwrap_or_default();
        if id != "legacylegacylegacylegacy" || !query.contains("allow_remote=false") {
            return Response::builder().status(404).body(Body::empty()).unwrap();
        }
        Response::builder()
            .header("content-type", "text/plain")
            .header("content-disposition", "attachment; filename=\"old.txt\"")
            .body(Body::from("from the legacy endpoint"))
            .unwrap()
    }
    let internal = internal.to_owned();
    let app = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(move |id| media(id, internal.clone())),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(legacy),
        );
    let task = tokio::spawn(async move {
        axum::serve(plain, app).await.unwrap();
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    (
        name,
        TlsFront::serve(listener, ca, &["127.0.0.1"], backend),
        task,
    )
}
/// A DNS server on 127.0.0.1 answering one SRV question.
pub async fn srv_dns(
    question: &'static str,
    port: u16,
    target: &'static str,
) -> std::net::SocketAddr {
    use hickory_resolver::proto::{
        op::{Message, OpCode},
        rr::{Name, RData, Record, RecordType, rdata::SRV},
    };
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut answer = Message::response(query.metadata.id, OpCode::Query);
            for q in &query.queries {
                answer.add_query(q.clone());
                if q.query_type() == RecordType::SRV
                    && q.name().to_ascii().eq_ignore_ascii_case(question)
                {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::SRV(SRV::new(10, 5, port, Name::from_ascii(target).unwrap())),
                    ));
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

/// The metric label of the federation download route.
pub const FED_DOWNLOAD: &str = "route=\"/_matrix/federation/v1/media/download/{media_id}\"";
