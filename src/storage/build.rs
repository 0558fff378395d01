//! Datastore config -> `BlobStore`s. The only place that picks an
//! `object_store` implementation and applies provider presets.

use std::{path::Path, sync::Arc};

use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, RetryConfig, aws::AmazonS3Builder,
    local::LocalFileSystem,
};

use super::{Backend, BlobStore, Datastores, DirectUploads, Presigner, StorageError, WritePolicy};
use crate::{
    config::{DatastoreConfig, S3DatastoreConfig, Secret, SseConfig},
    ids::DatastoreId,
};

/// Builds every datastore; local directories are created if missing.
pub fn build_datastores(
    configs: &[DatastoreConfig],
    data_dir: &Path,
) -> Result<Datastores, StorageError> {
    let mut stores = Vec::with_capacity(configs.len());
    for config in configs {
        stores.push(match config {
            DatastoreConfig::Local(local) => {
                let dir = local.path.clone().unwrap_or_else(|| data_dir.join("media"));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StorageError::Setup(format!("cannot create {}: {e}", dir.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| StorageError::Setup(format!("{}: {e}", dir.display())))?
                    // Without fsync an acknowledged upload could vanish on power loss.
                    .with_fsync(local.fsync)
                    .with_automatic_cleanup(true);
                let chunk = usize::try_from(local.write_chunk_size.as_u64()).unwrap_or(usize::MAX);
                let policy = WritePolicy {
                    single_put_max: chunk,
                    part_size: chunk,
                    multipart: true,
                };
                BlobStore::new(
                    DatastoreId(local.id.clone()),
                    Arc::new(fs),
                    Backend::Local,
                    policy,
                    local.kinds.clone(),
                )
                .with_local_root(dir)
            }
            DatastoreConfig::S3(s3) => build_s3(s3)?,
        });
    }
    Ok(Datastores::new(stores))
}

fn setup(context: &str) -> impl Fn(&dyn std::fmt::Display) -> StorageError + '_ {
    move |why| StorageError::Setup(format!("{context}: {why}"))
}

/// An S3 datastore with its provider's defaults. No optional checksum
/// headers are sent (B2 and R2 reject them), conditional PUTs are never
/// used (B2 lacks them), and parts are all the same size.
fn build_s3(config: &S3DatastoreConfig) -> Result<BlobStore, StorageError> {
    let id = config.id.as_str();
    let err = setup(id);
    let path_style = config.effective_path_style();
    // `from_env` picks up the standard AWS_* variables; explicit settings win.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_region(config.effective_region())
        .with_virtual_hosted_style_request(!path_style)
        .with_retry(RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.timeout,
            ..RetryConfig::default()
        });
    let mut allow_http = false;
    if let Some(endpoint) = config.client_endpoint().map_err(|e| err(&e))? {
        allow_http = endpoint.scheme() == "http";
        builder = builder.with_endpoint(endpoint.as_str().trim_end_matches('/'));
    }
    let key_id = Secret::resolve(
        config.access_key_id.as_ref(),
        config.access_key_id_file.as_deref(),
    )
    .map_err(|e| err(&e))?;
    let secret = Secret::resolve(
        config.secret_access_key.as_ref(),
        config.secret_access_key_file.as_deref(),
    )
    .map_err(|e| err(&e))?;
    if let Some(key_id) = key_id {
        builder = builder.with_access_key_id(key_id.expose());
    }
    if let Some(secret) = secret {
        builder = builder.with_secret_access_key(secret.expose());
    }
    if let Some(token) = &config.session_token {
        builder = builder.with_token(token.expose());
    }
    match &config.sse {
        None => {}
        Some(SseConfig::Kms { key_id, bucket_key }) => {
            builder = builder
                .with_sse_kms_encryption(key_id)
                .with_bucket_key(*bucket_key);
        }
        Some(SseConfig::Customer { key, key_file }) => {
            let key = Secret::resolve(key.as_ref(), key_file.as_deref())
                .map_err(|e| err(&e))?
                .ok_or_else(|| err(&"sse customer needs key or key_file"))?;
            builder = builder.with_ssec_encryption(key.expose());
        }
    }
    // Requests with a bounded answer get `timeout` from start to end. Reads
    // stream to clients at the client's pace, so a total cap (or reqwest's
    // read timeout, which also counts the time we do not ask for more) would
    // cut a slow reader's body short: they get `timeout` for each wait on
    // the service instead (`BlobStore::open`).
    let s3 = Arc::new(
        builder
            .clone()
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(allow_http)
                    .with_timeout(config.timeout)
                    .with_connect_timeout(config.connect_timeout),
            )
            .build()
            .map_err(|e| err(&e))?,
    );
    let reader = builder
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(allow_http)
                .with_timeout_disabled()
                .with_connect_timeout(config.connect_timeout),
        )
        .build()
        .map_err(|e| err(&e))?;

    let to_usize = |b: bytesize::ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
    let policy = WritePolicy {
        single_put_max: to_usize(config.multipart_threshold),
        part_size: to_usize(config.part_size),
        multipart: config.multipart,
    };
    let inner: Arc<dyn ObjectStore> = s3.clone();
    let mut store = BlobStore::new(
        DatastoreId(config.id.clone()),
        inner,
        Backend::S3,
        policy,
        config.kinds.clone(),
    )
    .with_prefix(&config.prefix)
    .with_reader(Arc::new(reader), config.timeout);
    if let Some(class) = &config.storage_class {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::StorageClass, class.clone().into());
        store = store.with_attributes(attributes);
    }
    Ok(with_signers(store, config, &s3))
}

/// Presigned URLs the store hands out, as configured: downloads'
/// redirects, direct uploads' PUTs.
fn with_signers(
    mut store: BlobStore,
    config: &S3DatastoreConfig,
    s3: &Arc<object_store::aws::AmazonS3>,
) -> BlobStore {
    if config.direct_uploads.enabled {
        store = store.with_direct_uploads(DirectUploads::new(
            s3.clone(),
            config.direct_uploads.url_ttl,
        ));
    }
    if config.redirect.enabled {
        store = store.with_presigner(Presigner::new(
            s3.clone(),
            config.redirect.url_ttl,
            config.redirect.reuse_for,
        ));
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(extra: &str) -> S3DatastoreConfig {
        serde_norway::from_str(&format!(
            "id: s\nbucket: media\nprovider: minio\nendpoint: http://127.0.0.1:9\naccess_key_id: a\nsecret_access_key: b\n{extra}"
        ))
        .unwrap()
    }

    /// SSE-KMS and SSE-C (key from a file) configure the client; a missing
    /// key file is a setup error naming the datastore.
    #[test]
    fn server_side_encryption_is_configured() {
        assert!(
            build_s3(&s3(
                "sse: {type: kms, key_id: arn:aws:kms:eu:1:key/x, bucket_key: true}"
            ))
            .is_ok()
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
        let with_file = format!("sse: {{type: customer, key_file: {}}}", key.display());
        assert!(build_s3(&s3(&with_file)).is_ok());
        let missing = format!(
            "sse: {{type: customer, key_file: {}}}",
            dir.path().join("nope").display()
        );
        let error = build_s3(&s3(&missing)).err().unwrap().to_string();
        assert!(
            error.contains("s:") && error.contains("cannot read"),
            "{error}"
        );
    }

    /// Storage class and prefix reach the store; presigning only when enabled.
    #[test]
    fn options_reach_the_store() {
        let store = build_s3(&s3(
            "prefix: /a/b/\nstorage_class: STANDARD_IA\nredirect: {enabled: true}",
        ))
        .unwrap();
        assert_eq!(store.prefix.as_deref(), Some("a/b"));
        assert!(store.attributes.get(&Attribute::StorageClass).is_some());
        assert!(store.presigner().is_some());
        assert!(build_s3(&s3("")).unwrap().presigner().is_none());
    }
}
