//! Moving the metadata from sled to PostgreSQL and back with `mxmedia db
//! copy` (the real binary, the server stopped): media, thumbnails, a
//! reservation, a retired id, quarantined content and the datastore's
//! claim arrive; the server starts on the copy (the datastore's ownership
//! marker still names the database) and serves every item byte-identical;
//! a second run copies nothing again; a database of another deployment is
//! refused.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

fn copy(from: &str, to: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxmedia"))
        .args(["db", "copy", "--from", from, "--to", to])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn report(text: &str) -> Value {
    serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
}

async fn served_all(t: &TestServer, items: &[(String, Vec<u8>)]) {
    for (id, bytes) in items {
        let resp = t
            .get(
                &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}"),
                Some(BOB),
            )
            .await;
        assert_eq!(resp.status(), 200, "{id}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_moves_to_postgres_and_back() {
    let mut t = TestServer::start().await;
    let media = t.server().state().media.clone();
    let mut items = Vec::new();
    for i in 0..12u8 {
        let (bytes, kind) = if i % 3 == 0 {
            (
                picture(200 + u32::from(i), 150, i, image::ImageFormat::Png),
                "image/png",
            )
        } else {
            (format!("file {i} ").repeat(50).into_bytes(), "text/plain")
        };
        let (_, id) = t.upload_ok(ALICE, &bytes, Some(kind), None).await;
        let key = mxmedia::ids::MediaKey::parse(SERVER_NAME, &id).unwrap();
        media.pregenerate_now(&key).await;
        items.push((id, bytes));
    }
    let retired = items.pop().unwrap();
    let key = |id: &str| mxmedia::ids::MediaKey::parse(SERVER_NAME, id).unwrap();
    assert!(
        media
            .delete_media(&key(&retired.0), "@admin:test.local")
            .await
            .unwrap()
    );
    let quarantined = items.remove(1);
    media
        .quarantine(&key(&quarantined.0), "@admin:test.local")
        .await
        .unwrap();
    let (_, pending) = t.create_ok(ALICE).await;
    let before = t.counts().await;
    drop(media);

    // sled -> PostgreSQL.
    t.server_stop().await;
    let sled_dir = t.config.sled_path().display().to_string();
    let url = Postgres::get().database("copied").await;
    let (ok, text) = copy(&sled_dir, &url);
    assert!(ok, "{text}");
    let copied = report(&text);
    println!("{copied}");
    // Eleven: the deleted one retired, the quarantined one still there.
    assert_eq!(copied["media"], 11);
    assert_eq!(copied["verified"], 11);
    assert!(copied["thumbnails"].as_u64().unwrap() >= 4 * 5);
    assert_eq!(copied["reserved"], 2, "the reservation and the retired id");
    assert_eq!(copied["quarantined_content"], 1);
    assert_eq!(copied["claims"], 1);
    let (ok, again) = copy(&sled_dir, &url);
    assert!(ok, "{again}");
    let again = report(&again);
    assert_eq!(
        (again["media"].as_u64(), again["reserved"].as_u64()),
        (Some(0), Some(0))
    );

    t.config.database =
        serde_norway::from_str(&format!("{{type: postgres, url: '{url}'}}")).unwrap();
    t.server_start().await;
    assert_eq!(t.counts().await, before);
    served_all(&t, &items).await;
    let quarantined_resp = t
        .get(
            &format!(
                "/_matrix/client/v1/media/download/{SERVER_NAME}/{}",
                quarantined.0
            ),
            Some(BOB),
        )
        .await;
    assert_matrix_error(quarantined_resp, 404, "M_NOT_FOUND").await;
    // The same bytes uploaded again arrive quarantined.
    let (_, again_id) = t.upload_ok(BOB, &quarantined.1, None, None).await;
    let info = t
        .server()
        .state()
        .media
        .media_info(&key(&again_id))
        .await
        .unwrap();
    assert!(info.quarantined_by.is_some());
    // The reservation still takes its upload.
    let put = t
        .http
        .put(t.url(&format!("/_matrix/media/v3/upload/{SERVER_NAME}/{pending}")))
        .bearer_auth(ALICE)
        .body("late bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let after_pg = t.counts().await;

    // PostgreSQL -> a new sled directory.
    t.server_stop().await;
    let back = t.dir.path().join("db-again").display().to_string();
    let (ok, text) = copy(&url, &back);
    assert!(ok, "{text}");
    assert_eq!(report(&text)["media"], after_pg.media);
    t.config.database = serde_norway::from_str(&format!("{{type: sled, path: '{back}'}}")).unwrap();
    t.server_start().await;
    assert_eq!(t.counts().await, after_pg);
    served_all(&t, &items).await;

    // Another deployment's database is not a copy target.
    t.server_stop().await;
    let foreign = Postgres::get().database("foreign").await;
    let other = mxmedia::repo::postgres::PgRepo::open(&foreign, 2)
        .await
        .unwrap();
    mxmedia::media::ports::Housekeeping::identity(&other)
        .await
        .unwrap();
    let (ok, text) = copy(&back, &foreign);
    assert!(!ok);
    assert!(text.contains("another deployment"), "{text}");
}
