//! Properties of what other servers send: `X-Matrix` authorization headers
//! and the key documents behind them, signing key files, `.well-known`
//! delegation and SRV answers, and multipart federation media bodies.

use std::{collections::BTreeMap, str::FromStr as _};

use bytes::Bytes;
use futures::{StreamExt as _, executor::block_on, stream};
use hickory_resolver::proto::{
    op::{Message, MessageType, OpCode},
    rr::{Name, RData, Record, rdata::SRV},
};
use http::{HeaderMap, HeaderValue, Method, Uri};
use ruma::{
    ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap},
};

use super::{Fields, join};
use crate::{
    federation::{
        SrvChoice, base_url, best_srv, claim, delegated_server, parse_signing_key,
        read_key_document, verify_claim,
    },
    multipart::{PartReader, with_bytes},
};

/// The server the fuzzed requests are addressed to.
const US: &str = "media.test";
/// The one origin whose key the target knows, and the request it signed.
const ORIGIN: &str = "origin.test";
const SIGNED_PATH: &str = "/_matrix/federation/v1/media/download/abcdefghij";
/// A fixed Ed25519 seed, so the signed seeds are the same every run.
const SEED: [u8; 32] = [7; 32];

fn origin_key() -> Ed25519KeyPair {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&SEED);
    Ed25519KeyPair::from_der(&der, "fuzz".to_owned()).expect("fixed key")
}

fn public(pair: &Ed25519KeyPair) -> Base64 {
    Base64::new(pair.public_key().to_vec())
}

fn signed_header(destination: &str) -> String {
    let pair = origin_key();
    let mut request = http::Request::new(Vec::<u8>::new());
    *request.uri_mut() = Uri::from_static(SIGNED_PATH);
    let input = XMatrixSigningInput::new(
        ServerName::parse(ORIGIN).expect("origin"),
        ServerName::parse(destination).expect("destination"),
        &pair,
    );
    XMatrix::sign_http_request(&request, input)
        .expect("sign")
        .to_string()
}

/// `Authorization value \0 request path`: a claim is accepted only when
/// addressed to us (or to nobody), prints and parses back as itself, and a
/// signature verifies only for the request the origin really signed.
pub fn x_matrix(data: &[u8]) {
    let mut fields = Fields::new(data);
    let value = fields.next_bytes().unwrap_or_default();
    let path = fields.next_text();
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value);
    let us = ServerName::parse(US).expect("us");
    let Ok(claimed) = claim(&headers, &us) else {
        return;
    };
    assert!(claimed.destination.as_deref().is_none_or(|d| d == us));
    let printed = claimed.to_string();
    let again = XMatrix::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(
        (
            &again.origin,
            &again.destination,
            &again.key,
            again.sig.as_bytes()
        ),
        (
            &claimed.origin,
            &claimed.destination,
            &claimed.key,
            claimed.sig.as_bytes()
        )
    );
    let _ = HeaderValue::from(&claimed);
    let uri = Uri::from_str(&path).unwrap_or(Uri::from_static(SIGNED_PATH));
    // The origin publishes one key, `ed25519:fuzz`: a claim naming any
    // other finds no key (the key id selects the key; it is not signed).
    if claimed.key.as_str() != "ed25519:fuzz" {
        return;
    }
    if verify_claim(&claimed, &Method::GET, &uri, &us, public(&origin_key())).is_ok() {
        assert_eq!(
            claimed.origin.as_str(),
            ORIGIN,
            "verified for another origin"
        );
        assert_eq!(
            uri.path_and_query().map(http::uri::PathAndQuery::as_str),
            Some(SIGNED_PATH)
        );
    }
}

/// A key document as another server signs it.
fn key_document_json(server: &str, pair: &Ed25519KeyPair) -> Vec<u8> {
    let key_id = format!("ed25519:{}", pair.version());
    let mut doc: ruma::CanonicalJsonObject = serde_json::from_value(serde_json::json!({
        "server_name": server,
        "valid_until_ts": 4_102_444_800_000_u64,
        "verify_keys": { key_id: { "key": public(pair).encode() } },
        "old_verify_keys": {},
    }))
    .expect("document");
    ruma::signatures::sign_json(server, pair, &mut doc).expect("sign");
    serde_json::to_vec(&doc).expect("json")
}

/// `origin \0 document`: a document is taken only when it names the origin
/// and a key it publishes has signed it; only published keys come out.
pub fn key_document(data: &[u8]) {
    let mut fields = Fields::new(data);
    let origin = fields.next_text();
    let body = fields.rest();
    let Ok(origin) = ServerName::parse(&origin) else {
        return;
    };
    let Ok(keys) = read_key_document(&origin, body) else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(body).expect("accepted, so JSON");
    assert_eq!(doc["server_name"].as_str(), Some(origin.as_str()));
    assert!(!keys.keys.is_empty(), "a document without keys accepted");
    let canonical: ruma::CanonicalJsonObject = serde_json::from_slice(body).expect("canonical");
    let signed_by_one = keys.keys.iter().any(|(id, (key, _))| {
        assert!(
            doc["verify_keys"][id]["key"].is_string(),
            "{id} is not published"
        );
        let one: PublicKeyMap = BTreeMap::from([(
            origin.to_string(),
            BTreeMap::from([(id.clone(), key.clone())]),
        )]);
        doc["signatures"][origin.as_str()][id].is_string()
            && ruma::signatures::verify_json(&one, &canonical).is_ok()
    });
    assert!(signed_by_one, "accepted without a verifying signature");
}

/// A signing key file: an accepted key signs, and its signature verifies.
pub fn signing_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pair) = parse_signing_key(text) else {
        return;
    };
    assert!(
        pair.version()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    );
    let signed = key_document_json("keys.test", &pair);
    assert!(read_key_document(&ServerName::parse("keys.test").expect("name"), &signed).is_ok());
}

/// `server name \0 .well-known body`: a valid server name, or the one a
/// document delegates to, always gives a federation URL whose host is that
/// name's host, with nothing after it.
pub fn well_known(data: &[u8]) {
    let mut fields = Fields::new(data);
    let name = fields.next_text();
    let body = fields.rest();
    let delegated = delegated_server(body);
    for server in ServerName::parse(&name).ok().into_iter().chain(delegated) {
        let Ok(url) = base_url(server.host(), server.port().unwrap_or(8448)) else {
            // Refused only for names no URL can hold (an invalid IDNA
            // label such as "xn--"), or that a URL would read as an IPv4
            // address (WHATWG: the last label is a number), e.g. "1.2.3".
            let last = server.host().trim_end_matches('.').rsplit('.').next();
            assert!(
                url::Url::parse(&format!("https://{}/", server.host())).is_err()
                    || last.is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())
                        || l.to_ascii_lowercase().starts_with("0x")),
                "{server} refused"
            );
            continue;
        };
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.path(), "/");
        assert!(url.username().is_empty() && url.password().is_none());
        assert!(url.query().is_none() && url.fragment().is_none());
        assert_eq!(
            url.port_or_known_default(),
            Some(server.port().unwrap_or(8448))
        );
    }
}

/// A DNS answer: the SRV record chosen has the lowest priority (then the
/// highest weight), and its target is a name, not empty, not the root.
pub fn srv(data: &[u8]) {
    let Ok(message) = Message::from_vec(data) else {
        return;
    };
    let records: Vec<&SRV> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    match best_srv(&message.answers) {
        None => assert!(records.is_empty()),
        Some(choice) => {
            let best = records
                .iter()
                .map(|s| (s.priority, std::cmp::Reverse(s.weight)))
                .min()
                .expect("a choice from no records");
            let matching = records
                .iter()
                .filter(|s| (s.priority, std::cmp::Reverse(s.weight)) == best);
            match choice {
                SrvChoice::NotOffered => {
                    assert!(matching.into_iter().any(|s| s.target.is_root()
                        || s.target.to_ascii().trim_end_matches('.').is_empty()));
                }
                SrvChoice::Target { target, port } => {
                    assert!(!target.is_empty() && !target.ends_with('.'));
                    assert!(matching.into_iter().any(|s| s.port == port));
                    assert!(base_url("example.org", port).is_ok());
                }
            }
        }
    }
}

/// A DNS answer with SRV records, as a seed.
fn srv_answer(records: &[(u16, u16, u16, &str)]) -> Vec<u8> {
    let mut message = Message::new(1, MessageType::Response, OpCode::Query);
    for &(priority, weight, port, target) in records {
        let name = Name::from_ascii("_matrix-fed._tcp.example.org.").expect("name");
        let target = Name::from_ascii(target).expect("target");
        message.add_answer(Record::from_rdata(
            name,
            300,
            RData::SRV(SRV::new(priority, weight, port, target)),
        ));
    }
    message.to_vec().expect("encode")
}

/// `boundary \0 chunk size \0 cap \0 body`: the reader never yields a part
/// over its cap or more bytes than arrived, and ends (with an error or
/// the body) on every input. A body written by mxmedia's own writer reads
/// back exactly.
pub fn multipart(data: &[u8]) {
    let mut fields = Fields::new(data);
    let boundary = fields.next_text();
    let chunk = usize::try_from(fields.next_number(7) % 300 + 1).unwrap_or(7);
    let cap = usize::try_from(fields.next_number(64) % 4096).unwrap_or(64);
    let body = fields.rest().to_vec();
    if boundary.is_empty() || boundary.len() > 70 {
        return;
    }
    let arrived = body.len();
    let chunks: Vec<std::io::Result<Bytes>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut reader = PartReader::new(stream::iter(chunks).boxed(), &boundary);
    block_on(async {
        if reader.skip_preamble().await.is_err() || reader.headers().await.is_err() {
            return;
        }
        let Ok(first) = reader.read_part(cap).await else {
            return;
        };
        assert!(
            first.len() <= cap,
            "{} bytes over a cap of {cap}",
            first.len()
        );
        if reader.headers().await.is_err() {
            return;
        }
        let mut rest = reader.into_body();
        let mut total = first.len();
        while let Some(Ok(piece)) = rest.next().await {
            total += piece.len();
            assert!(total <= arrived, "{total} bytes out of {arrived}");
        }
    });
    // The writer's own output, with the fuzzed bytes as the media.
    let media = fields_media(data);
    let written = block_on(async {
        let parts = with_bytes(
            "b0undary",
            "image/png",
            "inline",
            stream::once(async move { Ok(Bytes::from(media)) }).boxed(),
        );
        parts
            .map(|c| c.expect("written"))
            .collect::<Vec<_>>()
            .await
            .concat()
    });
    let chunks: Vec<std::io::Result<Bytes>> = written
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut reader = PartReader::new(stream::iter(chunks).boxed(), "b0undary");
    block_on(async {
        reader.skip_preamble().await.expect("preamble");
        reader.headers().await.expect("metadata headers");
        assert_eq!(&reader.read_part(4096).await.expect("metadata")[..], b"{}");
        let headers = reader.headers().await.expect("media headers");
        assert_eq!(headers["content-type"], "image/png");
        let mut body = reader.into_body();
        let mut read = Vec::new();
        while let Some(piece) = body.next().await {
            read.extend_from_slice(&piece.expect("media"));
        }
        assert_eq!(read, fields_media(data));
    });
}

fn fields_media(data: &[u8]) -> Vec<u8> {
    data.iter().rev().take(512).copied().collect()
}

pub(super) fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let pair = origin_key();
    let media =
        |boundary: &str, body: &str| join(&[boundary.as_bytes(), b"5", b"100", body.as_bytes()]);
    let body = "--b1\r\nContent-Type: application/json\r\n\r\n{}\r\n--b1\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=\"a.png\"\r\n\r\nPNGDATA\r\n--b1--\r\n";
    let location = "--b1\r\nContent-Type: application/json\r\n\r\n{}\r\n--b1\r\nLocation: https://cdn.example.org/a\r\n\r\n\r\n--b1--\r\n";
    vec![
        (
            "x_matrix",
            "signed",
            join(&[signed_header(US).as_bytes(), SIGNED_PATH.as_bytes()]),
        ),
        (
            "x_matrix",
            "signed-other-path",
            join(&[
                signed_header(US).as_bytes(),
                b"/_matrix/federation/v1/media/download/other",
            ]),
        ),
        (
            "x_matrix",
            "to-another-server",
            join(&[
                signed_header("other.test").as_bytes(),
                SIGNED_PATH.as_bytes(),
            ]),
        ),
        (
            "key_document",
            "signed",
            [ORIGIN.as_bytes(), b"\0", &key_document_json(ORIGIN, &pair)].concat(),
        ),
        (
            "key_document",
            "for-another-server",
            [
                b"evil.test".as_slice(),
                b"\0",
                &key_document_json(ORIGIN, &pair),
            ]
            .concat(),
        ),
        (
            "srv",
            "one",
            srv_answer(&[(10, 5, 8448, "matrix.example.org.")]),
        ),
        (
            "srv",
            "two-priorities",
            srv_answer(&[
                (20, 0, 443, "b.example.org."),
                (10, 60, 8448, "a.example.org."),
                (10, 5, 8449, "c.example.org."),
            ]),
        ),
        ("srv", "not-offered", srv_answer(&[(0, 0, 0, ".")])),
        ("multipart", "bytes", media("b1", body)),
        ("multipart", "location", media("b1", location)),
    ]
}
