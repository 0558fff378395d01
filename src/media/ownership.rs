//! Datastore ownership: every datastore carries a marker naming the one
//! metadata database that fills it, and this database records its claim.
//! A store owned by another database, or full of objects this database has
//! never heard of, stops start-up, sweeps and repairs: deleting "orphans"
//! there would delete someone's media (a server started from another working
//! directory with a fresh database, two instances on one bucket).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::MediaService;
use crate::{
    ids::{DatastoreId, UnixMillis},
    media::ports::{ClaimRecord, DatabaseIdentity, RepoError},
    storage::{BlobStore, StorageError},
};

/// The marker object's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    /// The owning database's identity.
    database_id: String,
    /// Where that database was, as its server described it.
    database: String,
    server_name: String,
    host: String,
    datastore: String,
    claimed_at: UnixMillis,
}

/// How a datastore came to be ours at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Marked as ours already.
    Owned,
    /// Empty, or filled by this database before markers existed: marked now.
    Claimed,
    /// Unreachable now: served as far as it answers, never swept until a
    /// later check proves it ours.
    Unverified,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "datastore `{datastore}` ({location}) belongs to another metadata database: {owner_id} \
         ({owner_database} of {owner_server} on host {owner_host}, since {since}). This server's \
         database is {ours_id} ({ours_database}). If mxmedia was started from another working \
         directory or with another config, fix the paths; two servers must not share a datastore \
         (give each its own bucket prefix). To hand this datastore to this database on purpose, \
         stop mxmedia and run `mxmedia storage adopt --config FILE --datastore {datastore}`: \
         objects already in it are then never deleted by this database's sweeps."
    )]
    Foreign {
        datastore: DatastoreId,
        location: String,
        owner_id: String,
        owner_database: String,
        owner_server: String,
        owner_host: String,
        since: String,
        ours_id: String,
        ours_database: String,
    },
    #[error(
        "datastore `{datastore}` ({location}) holds objects, has no ownership marker, and this \
         metadata database ({ours_id}, {ours_database}) has no record of anything in it: it is \
         not the database that filled this datastore. Point mxmedia at that database, or, to \
         use this datastore with this database on purpose, stop mxmedia and run \
         `mxmedia storage adopt --config FILE --datastore {datastore}`: objects already in it \
         are then never deleted by this database's sweeps."
    )]
    Unclaimed {
        datastore: DatastoreId,
        location: String,
        ours_id: String,
        ours_database: String,
    },
    #[error("datastore `{datastore}`: the ownership marker is unreadable ({why}); not touching it")]
    BadMarker { datastore: DatastoreId, why: String },
    #[error("datastore `{0}`: this database never claimed it; not sweeping it")]
    NotClaimed(DatastoreId),
    #[error("datastore `{datastore}`: {source}")]
    Storage {
        datastore: DatastoreId,
        #[source]
        source: StorageError,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl MediaService {
    /// Checks, at start-up, that every datastore is this database's, and
    /// claims those that are empty (or that this database filled before
    /// markers existed). `database` describes this database for the marker.
    pub async fn claim_datastores(
        &self,
        database: &str,
    ) -> Result<Vec<(DatastoreId, Claim)>, OwnershipError> {
        let _ = self.inner.database_label.set(database.to_owned());
        let ours = self.identity().await?;
        let mut claims = Vec::new();
        for store in self.inner.stores.iter() {
            let claim = match self.claim_one(store, &ours, database).await {
                Ok(claim) => claim,
                // An outage is not a reason to refuse to serve (the hot
                // cache, other datastores): sweeps check again before
                // deleting anything.
                Err(OwnershipError::Storage { source, .. }) => {
                    tracing::warn!(datastore = %store.id(), error = %source, "datastore ownership not verified: it will not be swept until it is");
                    Claim::Unverified
                }
                Err(other) => return Err(other),
            };
            claims.push((store.id().clone(), claim));
        }
        Ok(claims)
    }

    async fn claim_one(
        &self,
        store: &BlobStore,
        ours: &DatabaseIdentity,
        database: &str,
    ) -> Result<Claim, OwnershipError> {
        let id = store.id().clone();
        let storage = |source| OwnershipError::Storage {
            datastore: id.clone(),
            source,
        };
        let recorded = self.recorded_claim(&id).await?;
        if let Some(marker) = read_marker(store).await? {
            if marker.database_id != ours.id {
                return Err(foreign(store, &marker, ours, database));
            }
            if recorded.is_none() {
                self.put_claim(&id, marker.claimed_at).await?;
            }
            return Ok(Claim::Owned);
        }
        // No marker. Ours if we claimed it before (the marker was lost), if
        // it is empty, or if this database has records of blobs in it (a
        // datastore filled before markers existed).
        let since = if let Some(claim) = recorded {
            claim.since
        } else {
            let known = self.inner.meta.blobs.count_blobs_in(&id).await?;
            if known > 0 {
                UnixMillis(0)
            } else if !store.holds_blobs().await.map_err(storage)? {
                UnixMillis::now()
            } else {
                return Err(OwnershipError::Unclaimed {
                    datastore: id,
                    location: store.location(),
                    ours_id: ours.id.clone(),
                    ours_database: database.to_owned(),
                });
            }
        };
        self.mark(store, ours, database, since).await?;
        Ok(Claim::Claimed)
    }

    /// Takes over `datastore` on the admin's word, whatever its marker says:
    /// objects already in it are never swept by this database.
    pub async fn adopt_datastore(
        &self,
        datastore: &DatastoreId,
        database: &str,
    ) -> Result<(), OwnershipError> {
        let store = self
            .inner
            .stores
            .get(datastore)
            .map_err(|source| OwnershipError::Storage {
                datastore: datastore.clone(),
                source,
            })?;
        let ours = self.identity().await?;
        self.mark(store, &ours, database, UnixMillis::now()).await
    }

    /// The claim that lets a sweep or repair delete from `store`: the marker
    /// must still name this database (another server may have taken the
    /// store since we started).
    pub(super) async fn owned_since(
        &self,
        store: &BlobStore,
    ) -> Result<UnixMillis, OwnershipError> {
        let ours = self.identity().await?;
        let id = store.id().clone();
        let Some(claim) = self.recorded_claim(&id).await? else {
            return Err(OwnershipError::NotClaimed(id));
        };
        match read_marker(store).await? {
            Some(marker) if marker.database_id == ours.id => Ok(claim.since),
            Some(marker) => Err(foreign(store, &marker, &ours, "this server's database")),
            None => Err(OwnershipError::BadMarker {
                datastore: id,
                why: "the marker has disappeared".to_owned(),
            }),
        }
    }

    async fn mark(
        &self,
        store: &BlobStore,
        ours: &DatabaseIdentity,
        database: &str,
        since: UnixMillis,
    ) -> Result<(), OwnershipError> {
        let marker = Marker {
            database_id: ours.id.clone(),
            database: database.to_owned(),
            server_name: self.inner.server_name.to_string(),
            host: host_name(),
            datastore: store.id().to_string(),
            claimed_at: since,
        };
        let bytes = serde_json::to_vec_pretty(&marker).map_err(|e| OwnershipError::BadMarker {
            datastore: store.id().clone(),
            why: e.to_string(),
        })?;
        // The claim first: a crash between the two leaves a claim without a
        // marker, which the next start re-marks.
        self.put_claim(store.id(), since).await?;
        store
            .write_marker(Bytes::from(bytes))
            .await
            .map_err(|source| OwnershipError::Storage {
                datastore: store.id().clone(),
                source,
            })?;
        tracing::info!(datastore = %store.id(), location = store.location(), "datastore claimed by this database");
        Ok(())
    }

    async fn identity(&self) -> Result<DatabaseIdentity, RepoError> {
        self.inner.meta.housekeeping.identity().await
    }

    async fn recorded_claim(&self, id: &DatastoreId) -> Result<Option<ClaimRecord>, RepoError> {
        self.inner.meta.housekeeping.claim(id).await
    }

    async fn put_claim(&self, id: &DatastoreId, since: UnixMillis) -> Result<(), RepoError> {
        self.inner
            .meta
            .housekeeping
            .put_claim(id, &ClaimRecord { since })
            .await
    }
}

async fn read_marker(store: &BlobStore) -> Result<Option<Marker>, OwnershipError> {
    let Some(bytes) = store
        .read_marker()
        .await
        .map_err(|source| OwnershipError::Storage {
            datastore: store.id().clone(),
            source,
        })?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| OwnershipError::BadMarker {
            datastore: store.id().clone(),
            why: e.to_string(),
        })
}

fn foreign(
    store: &BlobStore,
    marker: &Marker,
    ours: &DatabaseIdentity,
    database: &str,
) -> OwnershipError {
    OwnershipError::Foreign {
        datastore: store.id().clone(),
        location: store.location(),
        owner_id: marker.database_id.clone(),
        owner_database: marker.database.clone(),
        owner_server: marker.server_name.clone(),
        owner_host: marker.host.clone(),
        since: rfc3339(marker.claimed_at),
        ours_id: ours.id.clone(),
        ours_database: database.to_owned(),
    }
}

fn rfc3339(at: UnixMillis) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.0);
    humantime_serde::re::humantime::format_rfc3339_seconds(time).to_string()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
