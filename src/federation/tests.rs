use std::collections::BTreeMap;

use http::Method;
use ruma::{
    CanonicalJsonObject, api::federation::authentication::XMatrix, serde::Base64,
    signatures::PublicKeyMap,
};

use super::*;

/// A key in Synapse's file format (seed of 32 bytes 0x01..0x20).
const KEY_FILE: &str = "ed25519 a_test AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA\n";

fn federation(key: bool) -> Federation {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    std::fs::write(&path, KEY_FILE).unwrap();
    let config = FederationConfig {
        signing_key_path: key.then_some(path),
        ..FederationConfig::default()
    };
    Federation::new("origin.test".try_into().unwrap(), &config).unwrap()
}

#[test]
fn synapse_key_files_are_read() {
    let pair = parse_signing_key(KEY_FILE).unwrap();
    assert_eq!(pair.version(), "a_test");
    // Padded base64 and comments are fine too.
    let padded = "# ours\ned25519 a_test AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n";
    assert_eq!(
        parse_signing_key(padded).unwrap().public_key(),
        pair.public_key()
    );
    for bad in [
        "",
        "ed25519 a_test",
        "rsa a_test AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
        "ed25519 a_test AQID",
        "ed25519 bad/version AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
        "ed25519 a_test not*base64",
    ] {
        assert!(parse_signing_key(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn our_key_document_is_self_signed() {
    let fed = federation(true);
    let doc = fed.own_keys().unwrap();
    assert_eq!(doc["server_name"], "origin.test");
    let key = doc["verify_keys"]["ed25519:a_test"]["key"]
        .as_str()
        .unwrap();
    let object: CanonicalJsonObject = serde_json::from_value(doc.clone()).unwrap();
    let map: PublicKeyMap = BTreeMap::from([(
        "origin.test".to_owned(),
        BTreeMap::from([("ed25519:a_test".to_owned(), Base64::parse(key).unwrap())]),
    )]);
    ruma::signatures::verify_json(&map, &object).unwrap();
    assert!(federation(false).own_keys().is_none());
}

#[test]
fn signed_requests_verify_with_the_published_key() {
    let fed = federation(true);
    let auth = fed
        .sign(
            &ServerName::parse("dest.test").unwrap(),
            &Method::GET,
            "/_matrix/federation/v1/media/download/abc?timeout_ms=5",
        )
        .unwrap();
    let x = XMatrix::parse(&auth).unwrap();
    assert_eq!(x.origin, "origin.test");
    let doc = fed.own_keys().unwrap();
    let key = Base64::parse(
        doc["verify_keys"]["ed25519:a_test"]["key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let map: PublicKeyMap = BTreeMap::from([(
        "origin.test".to_owned(),
        BTreeMap::from([("ed25519:a_test".to_owned(), key)]),
    )]);
    let mut request = http::Request::new(Vec::<u8>::new());
    *request.uri_mut() = "/_matrix/federation/v1/media/download/abc?timeout_ms=5"
        .parse()
        .unwrap();
    x.verify_http_request(&request, &ServerName::parse("dest.test").unwrap(), &map)
        .unwrap();
    // Another path, or another destination, does not verify.
    *request.uri_mut() = "/_matrix/federation/v1/media/download/abd?timeout_ms=5"
        .parse()
        .unwrap();
    assert!(
        x.verify_http_request(&request, &ServerName::parse("dest.test").unwrap(), &map)
            .is_err()
    );
    assert!(fed.can_sign() && !federation(false).can_sign());
}

#[test]
fn block_rules_match_names_and_subdomains() {
    let config = FederationConfig {
        blocked_servers: vec!["evil.test".to_owned(), "*.bad.test".to_owned()],
        ..FederationConfig::default()
    };
    let fed = Federation::new("us.test".try_into().unwrap(), &config).unwrap();
    let blocked = |s: &str| fed.is_blocked(&ServerName::parse(s).unwrap());
    assert!(blocked("evil.test"));
    assert!(blocked("EVIL.test"));
    assert!(blocked("evil.test:8448"));
    assert!(blocked("bad.test"));
    assert!(blocked("a.b.bad.test"));
    assert!(!blocked("notevil.test"));
    assert!(!blocked("good.test"));
}

/// A request URI without a path (the authority form, `host:port`) is
/// refused, not verified: ruma panics building the signed JSON of one
/// (found by the `x_matrix` fuzz target).
#[test]
fn a_uri_without_a_path_is_refused_not_a_panic() {
    let fed = federation(true);
    let auth = fed
        .sign(&ServerName::parse("dest.test").unwrap(), &Method::GET, "/x")
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
    let dest = ServerName::parse("dest.test").unwrap();
    let claimed = claim(&headers, &dest).unwrap();
    let key = Base64::parse(
        fed.own_keys().unwrap()["verify_keys"]["ed25519:a_test"]["key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let authority: http::Uri = "dest.test:8448".parse().unwrap();
    assert!(authority.path_and_query().is_none());
    assert!(matches!(
        verify_claim(&claimed, &Method::GET, &authority, &dest, key.clone()),
        Err(AuthFailure::BadSignature)
    ));
    let path: http::Uri = "/x".parse().unwrap();
    verify_claim(&claimed, &Method::GET, &path, &dest, key).unwrap();
    // Addressed to another server: refused before any key is asked for.
    let other = ServerName::parse("other.test").unwrap();
    assert!(matches!(
        claim(&headers, &other),
        Err(AuthFailure::WrongDestination)
    ));
}

/// A key document must carry the origin's own signature: ruma's check
/// passes a document without any (`"signatures": {}`), which would let an
/// unsigned document publish any key (found by the `key_document` fuzz
/// target).
#[test]
fn key_documents_need_the_origins_own_signature() {
    let fed = federation(true);
    let origin = ServerName::parse("origin.test").unwrap();
    let signed = serde_json::to_vec(&fed.own_keys().unwrap()).unwrap();
    let keys = read_key_document(&origin, &signed).unwrap();
    assert!(keys.keys.contains_key("ed25519:a_test"));
    let mut doc = fed.own_keys().unwrap();
    doc["signatures"] = serde_json::json!({});
    let unsigned = serde_json::to_vec(&doc).unwrap();
    assert!(read_key_document(&origin, &unsigned).is_err());
    doc.as_object_mut().unwrap().remove("signatures");
    assert!(read_key_document(&origin, &serde_json::to_vec(&doc).unwrap()).is_err());
    // Signed only by another server.
    let mut other = fed.own_keys().unwrap();
    let theirs = other["signatures"]["origin.test"].clone();
    other["signatures"] = serde_json::json!({ "other.test": theirs });
    assert!(read_key_document(&origin, &serde_json::to_vec(&other).unwrap()).is_err());
    // Another origin's document.
    let elsewhere = ServerName::parse("elsewhere.test").unwrap();
    assert!(read_key_document(&elsewhere, &signed).is_err());
}
