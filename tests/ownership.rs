//! Rule 9: nothing deletes what it did not prove unreferenced. A datastore is
//! tied to one metadata database by its ownership marker; a fresh or foreign
//! database refuses to start on it, never sweeps it, and an adopted store's
//! existing objects are never swept.
// Tests use clippy's default lints; the pedantic set and the unwrap ban are for shipped code.
#![allow(clippy::pedantic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use common::*;
use mxmedia::{app::Server, config::Config, media::MediaError};
use tokio::net::TcpListener;

/// A config whose metadata lives under `data` and whose one local datastore
/// is `media`, sweeping anything older than a second.
fn config(data: &Path, media: &Path, hs: &str) -> Config {
    let yaml = format!(
        "server_name: {SERVER_NAME}\nlisten: 127.0.0.1:0\ndata_dir: {}\nselfcheck_on_start: false\nhomeserver: {{url: '{hs}'}}\nmedia: {{orphan_grace: 1s}}\ndatastores:\n  - {{type: local, id: local, path: {}}}\n",
        data.display(),
        media.display()
    );
    Config::from_yaml(&yaml, Vec::new()).unwrap()
}

async fn start(config: &Config) -> Result<Server, mxmedia::app::AppError> {
    Server::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await
}

async fn upload(server: &Server, body: &[u8]) -> String {
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/_matrix/media/v3/upload",
            server.local_addr()
        ))
        .bearer_auth(ALICE)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<serde_json::Value>().await.unwrap()["content_uri"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A datastore filled by a first server (database under `root/one`), which
/// has stopped: the homeserver, the root, and the datastore's directory.
async fn filled_store() -> (FakeHomeserver, tempfile::TempDir, std::path::PathBuf) {
    let hs = FakeHomeserver::start().await;
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    let server = start(&config(&root.path().join("one"), &media, &hs.url))
        .await
        .unwrap();
    upload(&server, b"precious").await;
    server.stop().await;
    (hs, root, media)
}

/// Hands the datastore `local` to the database of `config` on purpose, as
/// `mxmedia storage adopt` does; the returned state holds that database open.
async fn adopt(config: &Config) -> mxmedia::http::AppState {
    let state = mxmedia::app::build_state(config).await.unwrap();
    state
        .media
        .adopt_datastore(
            &mxmedia::ids::DatastoreId("local".into()),
            &mxmedia::app::database_label(config),
        )
        .await
        .unwrap();
    state
}

/// Writes a file at `name` in the datastore that no record points at.
fn stray(media: &Path, name: &str) -> std::path::PathBuf {
    let path = media.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"stray").unwrap();
    path
}

fn blobs(media: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    walk(media, &mut out);
    out
}

/// The reported case: the same datastore opened with a fresh database (a
/// service started from another working directory) refuses to start, names
/// both databases, and the stored object is still there long after the
/// orphan grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_refuses_a_datastore_it_did_not_fill() {
    let (hs, root, media) = filled_store().await;
    let first = config(&root.path().join("one"), &media, &hs.url);
    assert_eq!(blobs(&media).len(), 1);

    let second = config(&root.path().join("two"), &media, &hs.url);
    let Err(error) = start(&second).await else {
        panic!("a fresh database started on a filled datastore");
    };
    let text = error.to_string();
    println!("{text}");
    assert!(
        text.contains("belongs to another metadata database"),
        "{text}"
    );
    assert!(
        text.contains(&root.path().join("one").join("db").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&root.path().join("two").join("db").display().to_string()),
        "{text}"
    );
    assert!(text.contains("mxmedia storage adopt"), "{text}");

    // Nothing swept it meanwhile, and the rightful database still serves it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(blobs(&media).len(), 1);
    let server = start(&first).await.unwrap();
    let report = server.state().media.sweep().await.unwrap();
    assert_eq!(report.orphan_blobs, 0);
    assert_eq!(blobs(&media).len(), 1);
    server.stop().await;
}

/// A datastore that holds objects but no marker (filled by a database
/// elsewhere) is refused by a database with no record of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmarked_filled_datastore_is_refused_by_a_stranger() {
    let (hs, root, media) = filled_store().await;
    std::fs::remove_file(media.join(OWNER_MARKER)).unwrap();

    let Err(error) = start(&config(&root.path().join("two"), &media, &hs.url)).await else {
        panic!("a stranger started on a filled, unmarked datastore");
    };
    assert!(
        error
            .to_string()
            .contains("has no record of anything in it"),
        "{error}"
    );
    assert_eq!(blobs(&media).len(), 1);
}

/// Adopting on purpose lets the new database start, but what was there
/// before is never swept as an orphan; an orphan written after the claim is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_datastores_keep_what_they_held() {
    let (hs, root, media) = filled_store().await;
    let before = blobs(&media);

    let second = config(&root.path().join("two"), &media, &hs.url);
    drop(adopt(&second).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let server = start(&second).await.unwrap();
    // An orphan made after the adoption, old enough for the grace period.
    let late = stray(&media, "ab/cd/abcd0000000000000000000000000000");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = server.state().media.sweep().await.unwrap();
    assert_eq!(report.orphan_blobs, 1, "{report:?}");
    assert!(!late.exists());
    assert_eq!(blobs(&media), before, "the adopted object is kept");
    server.stop().await;
}

/// Two servers on one datastore: once another database takes the store
/// over, the first one's sweeps stop deleting there (and fsck --repair
/// refuses), even while it keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_taken_over_while_running_is_not_swept() {
    let hs = FakeHomeserver::start().await;
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    let first = start(&config(&root.path().join("one"), &media, &hs.url))
        .await
        .unwrap();
    upload(&first, b"mine").await;

    let second = config(&root.path().join("two"), &media, &hs.url);
    let state = adopt(&second).await;
    // The second server writes an object the first has no record of.
    let theirs = stray(&media, "12/34/12340000000000000000000000000000");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = first.state().media.sweep().await.unwrap();
    assert_eq!(report.orphan_blobs, 0);
    assert_eq!(report.stores_skipped, 1);
    assert!(theirs.exists());
    let repair = first
        .state()
        .media
        .fsck(&mxmedia::media::FsckRequest { repair: true })
        .await;
    match repair {
        Err(MediaError::Ownership(e)) => {
            assert!(e.to_string().contains("another metadata database"), "{e}")
        }
        other => panic!("fsck --repair went ahead: {other:?}"),
    }
    assert!(theirs.exists());
    drop(state);
    first.stop().await;
}

/// Staging files of writes a crash interrupted (`<key>#<n>`) are swept
/// once older than the grace period, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_writes_leave_no_staging_files() {
    let hs = FakeHomeserver::start().await;
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    let server = start(&config(&root.path().join("one"), &media, &hs.url))
        .await
        .unwrap();
    let staging = stray(&media, "aa/bb/aabb0000000000000000000000000000#1");
    // File times come from the kernel's coarse clock, which can lag the
    // claim's timestamp by a few milliseconds: date the file precisely.
    std::fs::File::options()
        .write(true)
        .open(&staging)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let report = server.state().media.sweep().await.unwrap();
    assert_eq!(report.staging_files, 0, "too young to be swept");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = server.state().media.sweep().await.unwrap();
    assert_eq!(report.staging_files, 1);
    assert!(!staging.exists());
    server.stop().await;
}
