//! Synapse's admin media API for many media at once, served by mxmedia:
//! quarantine by room (the homeserver says which media), by user and by
//! content (every copy of the bytes, and later uploads of them), the
//! quarantine change log, a user's media listed and deleted a page at a
//! time, deletion by date and size that keeps avatars, and usage per user.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const A: &str = "/_synapse/admin/v1";

async fn call(t: &TestServer, method: Method, path: &str, token: &str) -> reqwest::Response {
    let post = method == Method::POST;
    let mut req = t.http.request(method, t.url(path)).bearer_auth(token);
    if post {
        req = req.json(&json!({}));
    }
    req.send().await.unwrap()
}

/// A call as the admin that must answer 200; its JSON.
async fn ok(t: &TestServer, method: Method, path: &str) -> Value {
    let resp = call(t, method, path, ADMIN).await;
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// The status of a v1 download of `id` as Alice.
async fn served(t: &TestServer, s: &str, id: &str) -> u16 {
    t.get(
        &format!("/_matrix/client/v1/media/download/{s}/{id}"),
        Some(ALICE),
    )
    .await
    .status()
    .as_u16()
}

/// Quarantine by room covers the media the homeserver lists for it and
/// every copy of those bytes, including one uploaded afterwards; by user
/// covers the rest of their uploads except protected media; releasing one
/// copy releases them all. Every change is in the change log, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_by_room_user_and_content() {
    let t = TestServer::start().await;
    let (s, a) = t.upload_ok(ALICE, b"same bytes", None, None).await;
    let (_, b) = t.upload_ok(ALICE, b"alice only", None, None).await;
    let (_, p) = t.upload_ok(ALICE, b"a sticker", None, None).await;
    let (_, c) = t.upload_ok(BOB, b"same bytes", None, None).await;
    ok(&t, Method::POST, &format!("{A}/media/protect/{p}")).await;
    t.hs.set_room_media(
        "!room:test.local",
        &[
            &format!("mxc://{s}/{a}"),
            "mxc://elsewhere.example/notcached",
        ],
    );

    // Non-admins are refused on every bulk path and change nothing.
    for (method, path) in [
        (
            Method::POST,
            format!("{A}/room/!room:test.local/media/quarantine"),
        ),
        (
            Method::POST,
            format!("{A}/quarantine_media/!room:test.local"),
        ),
        (
            Method::POST,
            format!("{A}/user/@alice:test.local/media/quarantine"),
        ),
        (Method::GET, format!("{A}/media/quarantine_changes")),
        (Method::GET, format!("{A}/users/@alice:test.local/media")),
        (Method::DELETE, format!("{A}/users/@alice:test.local/media")),
        (
            Method::POST,
            format!("{A}/media/delete?before_ts={}", now_ms()),
        ),
        (
            Method::POST,
            format!("{A}/media/{s}/delete?before_ts={}", now_ms()),
        ),
        (
            Method::POST,
            format!("{A}/purge_media_cache?before_ts={}", now_ms()),
        ),
        (Method::GET, format!("{A}/statistics/users/media")),
    ] {
        assert_matrix_error(call(&t, method, &path, ALICE).await, 403, "M_FORBIDDEN").await;
    }
    assert_eq!(served(&t, &s, &a).await, 200);

    let body = ok(
        &t,
        Method::POST,
        &format!("{A}/room/!room:test.local/media/quarantine"),
    )
    .await;
    assert_eq!(
        body,
        json!({"num_quarantined": 2}),
        "a, and c with the same bytes"
    );
    assert_eq!(
        (served(&t, &s, &a).await, served(&t, &s, &c).await),
        (404, 404)
    );
    assert_eq!(served(&t, &s, &b).await, 200);
    // The same bytes uploaded again arrive quarantined.
    let (_, d) = t.upload_ok(BOB, b"same bytes", None, None).await;
    assert_eq!(served(&t, &s, &d).await, 404);
    let info = ok(&t, Method::GET, &format!("{A}/media/{s}/{d}")).await;
    assert_eq!(info["media_info"]["quarantined_by"], "@admin:test.local");
    // A room the homeserver does not know: its answer is relayed.
    let unknown = call(
        &t,
        Method::POST,
        &format!("{A}/quarantine_media/!gone:test.local"),
        ADMIN,
    )
    .await;
    assert_matrix_error(unknown, 404, "M_NOT_FOUND").await;

    let body = ok(
        &t,
        Method::POST,
        &format!("{A}/user/@alice:test.local/media/quarantine"),
    )
    .await;
    assert_eq!(
        body,
        json!({"num_quarantined": 1}),
        "b; the sticker is protected"
    );
    assert_eq!(
        (served(&t, &s, &b).await, served(&t, &s, &p).await),
        (404, 200)
    );

    ok(&t, Method::POST, &format!("{A}/media/unquarantine/{s}/{c}")).await;
    for id in [&a, &c, &d] {
        assert_eq!(served(&t, &s, id).await, 200, "every copy is released");
    }
    assert_eq!(served(&t, &s, &b).await, 404);

    let log = ok(&t, Method::GET, &format!("{A}/media/quarantine_changes")).await;
    let changes: Vec<(String, bool)> = log["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["origin"], s.as_str());
            (
                c["media_id"].as_str().unwrap().to_owned(),
                c["quarantined"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 7, "{changes:?}");
    assert_eq!(changes[2], (d.clone(), true));
    assert_eq!(changes[3], (b.clone(), true));
    assert!(changes[4..].iter().all(|(_, q)| !q));
    let next = log["next_batch"].as_u64().unwrap();
    let rest = ok(
        &t,
        Method::GET,
        &format!("{A}/media/quarantine_changes?from={next}"),
    )
    .await;
    assert_eq!(rest, json!({"next_batch": next, "changes": []}));
    let past = call(
        &t,
        Method::GET,
        &format!("{A}/media/quarantine_changes?from={}", next + 1000),
        ADMIN,
    )
    .await;
    assert_matrix_error(past, 400, "M_INVALID_PARAM").await;
}

/// A user's media is listed newest first with Synapse's fields, paged with
/// `next_token`, in any order asked; `DELETE` removes the page it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_media_is_listed_and_deleted_a_page_at_a_time() {
    let t = TestServer::start().await;
    let mut ids = Vec::new();
    for (bytes, name) in [
        (&b"12345"[..], "one.txt"),
        (b"1", "two.txt"),
        (b"123", "three.txt"),
    ] {
        ids.push(
            t.upload_ok(ALICE, bytes, Some("text/plain"), Some(name))
                .await
                .1,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.upload_ok(BOB, b"bob's", None, None).await;
    let list = |query: &'static str| {
        let t = &t;
        async move {
            ok(
                t,
                Method::GET,
                &format!("{A}/users/@alice:test.local/media{query}"),
            )
            .await
        }
    };
    let newest = list("").await;
    assert_eq!(newest["total"], 3);
    assert!(newest.get("next_token").is_none());
    let media = newest["media"].as_array().unwrap();
    let listed: Vec<&str> = media
        .iter()
        .map(|m| m["media_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [&ids[2], &ids[1], &ids[0]]);
    let first = &media[0];
    assert_eq!(first["media_type"], "text/plain");
    assert_eq!(first["media_length"], 3);
    assert_eq!(first["upload_name"], "three.txt");
    assert_eq!(first["quarantined_by"], Value::Null);
    assert_eq!(first["safe_from_quarantine"], false);
    assert!(first["created_ts"].as_u64().unwrap() > 0);

    let page = list("?limit=2").await;
    assert_eq!(
        (page["media"].as_array().unwrap().len(), &page["next_token"]),
        (2, &json!(2))
    );
    let last = list("?limit=2&from=2").await;
    assert_eq!(last["media"][0]["media_id"], ids[0].as_str());
    assert!(last.get("next_token").is_none());
    let by_size = list("?order_by=media_length&dir=f").await;
    let sizes: Vec<u64> = by_size["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["media_length"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 3, 5]);

    let bad = call(
        &t,
        Method::GET,
        &format!("{A}/users/@alice:test.local/media?order_by=colour"),
        ADMIN,
    )
    .await;
    assert_matrix_error(bad, 400, "M_INVALID_PARAM").await;
    let negative = call(
        &t,
        Method::GET,
        &format!("{A}/users/@alice:test.local/media?limit=-1"),
        ADMIN,
    )
    .await;
    assert_matrix_error(negative, 400, "M_INVALID_PARAM").await;
    let remote = call(
        &t,
        Method::GET,
        &format!("{A}/users/@eve:elsewhere.example/media"),
        ADMIN,
    )
    .await;
    let body = assert_matrix_error(remote, 400, "M_UNKNOWN").await;
    assert_eq!(body["error"], "Can only look up local users");

    let files = t.wait_for_blob_files(4, true).await.len();
    let deleted = ok(
        &t,
        Method::DELETE,
        &format!("{A}/users/@alice:test.local/media?limit=1"),
    )
    .await;
    assert_eq!(
        deleted,
        json!({"deleted_media": [ids[2].as_str()], "total": 1})
    );
    assert_eq!(served(&t, SERVER_NAME, &ids[2]).await, 404);
    assert_eq!(
        t.wait_for_blob_files(files - 1, false).await.len(),
        files - 1
    );
    assert_eq!(list("").await["total"], 2);
}

/// Deletion by date and size keeps quarantined and protected media and,
/// unless told otherwise, users' and rooms' avatars as the homeserver
/// lists them; the parameters are checked as Synapse checks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_date_keeps_what_synapse_keeps() {
    let t = TestServer::start().await;
    let (s, avatar) = t.upload_ok(ALICE, b"my face", None, None).await;
    let (_, room_avatar) = t.upload_ok(ALICE, b"room face", None, None).await;
    let (_, protected) = t.upload_ok(ALICE, b"sticker", None, None).await;
    let (_, quarantined) = t.upload_ok(ALICE, b"evidence", None, None).await;
    let (_, tiny) = t.upload_ok(ALICE, b"x", None, None).await;
    let (_, plain) = t.upload_ok(ALICE, b"old news", None, None).await;
    t.hs.set_avatar("@alice:test.local", &format!("mxc://{s}/{avatar}"));
    t.hs.set_avatar("@bob:test.local", "mxc://elsewhere.example/face");
    t.hs.add_room("!quiet:test.local", None);
    t.hs.add_room(
        "!lively:test.local",
        Some(&format!("mxc://{s}/{room_avatar}")),
    );
    ok(&t, Method::POST, &format!("{A}/media/protect/{protected}")).await;
    ok(
        &t,
        Method::POST,
        &format!("{A}/media/quarantine/{s}/{quarantined}"),
    )
    .await;
    let before = now_ms() + 60_000;

    let body = ok(
        &t,
        Method::POST,
        &format!("{A}/media/delete?before_ts={before}&size_gt=1"),
    )
    .await;
    assert_eq!(body, json!({"deleted_media": [plain.as_str()], "total": 1}));
    let body = ok(
        &t,
        Method::POST,
        &format!("{A}/media/delete?before_ts={before}&size_gt=1&keep_profiles=false"),
    )
    .await;
    let mut gone: Vec<&str> = body["deleted_media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    gone.sort();
    let mut avatars = vec![avatar.as_str(), room_avatar.as_str()];
    avatars.sort();
    assert_eq!((gone, &body["total"]), (avatars, &json!(2)));
    // The deprecated path, for this server only.
    let body = ok(
        &t,
        Method::POST,
        &format!("{A}/media/{s}/delete?before_ts={before}"),
    )
    .await;
    assert_eq!(body, json!({"deleted_media": [tiny.as_str()], "total": 1}));
    let elsewhere = call(
        &t,
        Method::POST,
        &format!("{A}/media/elsewhere.example/delete?before_ts={before}"),
        ADMIN,
    )
    .await;
    assert_matrix_error(elsewhere, 400, "M_UNKNOWN").await;
    for id in [&protected, &quarantined] {
        ok(&t, Method::GET, &format!("{A}/media/{s}/{id}")).await;
    }
    // Media created after `before_ts` is kept.
    let nothing = ok(
        &t,
        Method::POST,
        &format!("{A}/media/delete?before_ts=31000000000"),
    )
    .await;
    assert_eq!(nothing["total"], 0);

    let missing = call(&t, Method::POST, &format!("{A}/media/delete"), ADMIN).await;
    assert_matrix_error(missing, 400, "M_MISSING_PARAM").await;
    let seconds = call(
        &t,
        Method::POST,
        &format!("{A}/media/delete?before_ts=1700000000"),
        ADMIN,
    )
    .await;
    assert_matrix_error(seconds, 400, "M_INVALID_PARAM").await;
    let bad = call(
        &t,
        Method::POST,
        &format!("{A}/purge_media_cache?before_ts=abc"),
        ADMIN,
    )
    .await;
    assert_matrix_error(bad, 400, "M_INVALID_PARAM").await;
    let flag = call(
        &t,
        Method::POST,
        &format!("{A}/media/delete?before_ts={before}&keep_profiles=maybe"),
        ADMIN,
    )
    .await;
    assert_matrix_error(flag, 400, "M_INVALID_PARAM").await;
}

/// Usage per user: counts and bytes of local uploads, display names from
/// the homeserver, Synapse's orders, search and paging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_statistics_per_user() {
    let t = TestServer::start().await;
    t.upload_ok(ALICE, b"abc", None, None).await;
    t.upload_ok(ALICE, b"abcde", None, None).await;
    t.upload_ok(BOB, b"0123456789", None, None).await;
    t.hs.set_display_name("@alice:test.local", "Wonderland");
    let stats = |query: &'static str| {
        let t = &t;
        async move {
            ok(
                t,
                Method::GET,
                &format!("{A}/statistics/users/media{query}"),
            )
            .await
        }
    };
    assert_eq!(
        stats("").await,
        json!({"users": [
            {"user_id": "@alice:test.local", "displayname": "Wonderland", "media_count": 2, "media_length": 8},
            {"user_id": "@bob:test.local", "displayname": null, "media_count": 1, "media_length": 10},
        ], "total": 2})
    );
    let by_size = stats("?order_by=media_length&dir=b").await;
    assert_eq!(by_size["users"][0]["user_id"], "@bob:test.local");
    let found = stats("?search_term=Wonder").await;
    assert_eq!(
        (found["total"].clone(), found["users"][0]["user_id"].clone()),
        (json!(1), json!("@alice:test.local"))
    );
    let paged = stats("?limit=1").await;
    assert_eq!(
        (
            paged["users"].as_array().unwrap().len(),
            &paged["next_token"]
        ),
        (1, &json!(1))
    );
    let future = stats("?from_ts=99999999999999").await;
    assert_eq!(future["total"], 0);
    let bad = call(
        &t,
        Method::GET,
        &format!("{A}/statistics/users/media?order_by=colour"),
        ADMIN,
    )
    .await;
    assert_matrix_error(bad, 400, "M_INVALID_PARAM").await;
}
