//! Ordinary previews: what clients show under a link.

use serde_json::json;

use super::{common::*, preview, preview_ok, previews_on, site};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_article_previews_with_its_image_stored_as_our_media() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let og = preview_ok(&t, &site.url("/article")).await;
    assert_eq!(
        og["og:title"],
        "Harbour town votes to restore its old lighthouse"
    );
    assert_eq!(
        og["og:description"],
        "After a two-year campaign, the council approved funds to restore the 1874 lighthouse & its keeper's cottage."
    );
    assert_eq!(og["og:site_name"], "The Coastal Herald");
    assert_eq!(og["og:type"], "article");
    assert_eq!(og["og:image:type"], "image/jpeg");
    assert_eq!(
        (og["og:image:width"].clone(), og["og:image:height"].clone()),
        (json!(640), json!(360))
    );
    let mxc = og["og:image"].as_str().unwrap();
    let (server, id) = split_mxc(mxc);
    assert_eq!(server, SERVER_NAME);
    let resp = t
        .get(
            &format!("/_matrix/client/v1/media/download/{server}/{id}"),
            Some(BOB),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(og["matrix:image:size"], bytes.len());
    assert_eq!(
        bytes.as_ref(),
        picture(640, 360, 5, image::ImageFormat::Jpeg)
    );
    // The same answer on the legacy routes.
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        let resp = t
            .http
            .get(t.url(&format!("{prefix}/preview_url")))
            .query(&[("url", site.url("/article"))])
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{prefix}");
        assert_eq!(
            resp.json::<serde_json::Value>().await.unwrap()["og:image"],
            mxc
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_page_uses_its_oembed_and_a_bare_title_page_its_title() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let og = preview_ok(&t, &site.url("/video")).await;
    assert_eq!(og["og:title"], "A video from oEmbed", "{og}");
    assert_eq!(og["og:site_name"], "LoopTube");
    assert_eq!(og["og:video:url"], site.url("/embed/waves"));
    assert_eq!(
        og["og:description"],
        "Eight minutes of waves, filmed at night."
    );
    assert!(og["og:image"].as_str().unwrap().starts_with("mxc://"));
    assert_eq!(site.seen.hits("/video.json"), 1);

    let og = preview_ok(&t, &site.url("/title-only")).await;
    assert_eq!(og, json!({"og:title": "Only a title here"}));
    let (agent, language) = site.seen.agent.lock().unwrap().clone();
    assert!(
        agent.starts_with("mxmedia/") && agent.contains("URL previews"),
        "{agent}"
    );
    assert_eq!(language, "en");

    // A failure is remembered for a while: asked again, the site is not.
    for _ in 0..2 {
        assert_matrix_error(
            preview(&t, &site.url("/no-such-page")).await,
            502,
            "M_UNKNOWN",
        )
        .await;
    }
    assert_eq!(site.seen.hits("/no-such-page"), 1);

    // A configured provider is asked instead of the page.
    let og = preview_ok(&t, &site.url("/watch?v=1")).await;
    assert_eq!(og["og:title"], "From the provider");
    assert_eq!(og["og:description"], "Said through oEmbed");
    assert_eq!(site.seen.hits("/watch"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_url_previews_as_the_image() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let og = preview_ok(&t, &site.url("/photo.png")).await;
    assert_eq!(og["og:image:type"], "image/png");
    assert_eq!(
        (og["og:image:width"].clone(), og["og:image:height"].clone()),
        (json!(300), json!(200))
    );
    let png = picture(300, 200, 3, image::ImageFormat::Png);
    assert_eq!(og["matrix:image:size"], png.len());
    assert!(og.get("og:title").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_decode_in_their_own_charset() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    for (page, title) in [
        ("/latin1", "Café crème"),
        ("/koi8", "Привет"),
        ("/no-charset", "naïve"),
        ("/bogus-charset", "résumé"),
        ("/utf16", "Sixteen \u{263A}"),
    ] {
        let og = preview_ok(&t, &site.url(page)).await;
        assert_eq!(og["og:title"], title, "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch_and_answers_are_cached() {
    let site = site::start().await;
    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let url = site.url("/slow");
    let answers = futures::future::join_all((0..20).map(|_| preview_ok(&t, &url))).await;
    assert!(answers.iter().all(|og| og["og:title"] == "Slow but single"));
    assert_eq!(site.seen.hits("/slow"), 1);
    preview_ok(&t, &url).await;
    assert_eq!(site.seen.hits("/slow"), 1, "served from the cache");
    preview_ok(&t, &format!("{url}#another-fragment")).await;
    assert_eq!(site.seen.hits("/slow"), 1, "a fragment is the same page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_authenticated_and_checked() {
    let site = site::start().await;
    let off = TestServer::start().await;
    assert_matrix_error(
        preview(&off, &site.url("/article")).await,
        404,
        "M_UNRECOGNIZED",
    )
    .await;
    assert_eq!(site.seen.hits("/article"), 0);

    let t = TestServer::start_with(|c| previews_on(c, &site)).await;
    let anonymous = t
        .http
        .get(t.url("/_matrix/client/v1/media/preview_url"))
        .query(&[("url", site.url("/article"))])
        .send()
        .await
        .unwrap();
    assert_matrix_error(anonymous, 401, "M_MISSING_TOKEN").await;
    let no_url = t
        .http
        .get(t.url("/_matrix/client/v1/media/preview_url"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_matrix_error(no_url, 400, "M_MISSING_PARAM").await;
    assert_matrix_error(preview(&t, "not a url").await, 400, "M_INVALID_PARAM").await;
    for refused in [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1/",
    ] {
        assert_matrix_error(preview(&t, refused).await, 403, "M_FORBIDDEN").await;
    }
}
