//! `mxmedia media …`: the admin's moderation commands, run by the server
//! behind its control socket or by the CLI itself when no server runs.
//! Both sides call [`execute`], so a command does the same either way.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    auth::Credentials,
    ids::{MediaKey, UnixMillis},
    media::{LocalPurge, MediaError, MediaInfo, MediaService, PurgeReport},
};

/// One moderation command, as the CLI sends it over the control socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MediaCommand {
    Info {
        mxc: String,
    },
    Quarantine {
        mxc: Vec<String>,
    },
    QuarantineUser {
        user: String,
    },
    /// Needs an admin's access token: only the homeserver knows a room's media.
    QuarantineRoom {
        room: String,
        token: String,
    },
    Unquarantine {
        mxc: Vec<String>,
    },
    Protect {
        mxc: Vec<String>,
    },
    Unprotect {
        mxc: Vec<String>,
    },
    Delete {
        mxc: Vec<String>,
        dry_run: bool,
    },
    /// Local media by age and size; avatars are kept when a token lets the
    /// homeserver say which media they are.
    PurgeLocal {
        before: u64,
        size_gt: u64,
        keep_profiles: bool,
        token: Option<String>,
        dry_run: bool,
    },
    PurgeRemote {
        before: u64,
        dry_run: bool,
    },
    /// One retention run with the configured lifetimes.
    Retention {
        dry_run: bool,
    },
    /// Media from Synapse's media store and database.
    ImportSynapse(super::synapse::SynapseImport),
    ExportSynapse(super::synapse::SynapseExport),
    ImportMmr(super::mmr::MmrImport),
}

/// An `mxc://server/id` URI.
fn parse_mxc(uri: &str) -> Result<MediaKey, MediaError> {
    uri.strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(server, id)| MediaKey::parse(server, id).ok())
        .ok_or_else(|| MediaError::Invalid(format!("not an mxc:// URI: {uri}")))
}

fn parse_all(uris: &[String]) -> Result<Vec<MediaKey>, MediaError> {
    uris.iter().map(|u| parse_mxc(u)).collect()
}

fn token(token: &str) -> Credentials {
    Credentials {
        token: token.to_owned(),
        user_id: None,
        device_id: None,
    }
}

fn info_json(info: &MediaInfo) -> Value {
    json!({
        "mxc": info.key.to_string(),
        "origin": format!("{:?}", info.origin).to_lowercase(),
        "uploader": info.uploader,
        "content_type": info.content_type,
        "size": info.size,
        "upload_name": info.upload_name,
        "created_ts": info.created.0,
        "quarantined": info.quarantined,
        "quarantined_by": info.quarantined_by,
        "protected": info.protected,
        "requires_auth": info.requires_auth,
        "sha256": info.sha256.to_hex(),
    })
}

fn purge_json(report: &PurgeReport, dry_run: bool) -> Value {
    json!({
        "dry_run": dry_run,
        "media": report.deleted.len(),
        "bytes": report.bytes,
        "mxc": report.deleted.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Runs `command` as `actor` (the name the audit log and quarantine
/// records carry); bulk deletions report their count after every page.
pub async fn execute(
    media: &MediaService,
    command: &MediaCommand,
    actor: &str,
    mut progress: impl FnMut(Value),
) -> Result<Value, MediaError> {
    let mut per_page = |report: &PurgeReport| {
        progress(json!({"media": report.deleted.len(), "bytes": report.bytes}));
    };
    Ok(match command {
        MediaCommand::Info { mxc } => info_json(&media.media_info(&parse_mxc(mxc)?).await?),
        MediaCommand::Quarantine { mxc } => {
            let mut changed = 0;
            for key in parse_all(mxc)? {
                changed += media.quarantine(&key, actor).await?;
            }
            json!({ "quarantined": changed })
        }
        MediaCommand::QuarantineUser { user } => {
            let user = ruma::UserId::parse(user.as_str())
                .map_err(|e| MediaError::Invalid(format!("user id: {e}")))?;
            json!({ "quarantined": media.quarantine_user(&user, actor).await? })
        }
        MediaCommand::QuarantineRoom { room, token: t } => {
            let room = ruma::RoomId::parse(room.as_str())
                .map_err(|e| MediaError::Invalid(format!("room id: {e}")))?;
            json!({ "quarantined": media.quarantine_room(&room, &token(t), actor).await? })
        }
        MediaCommand::Unquarantine { mxc } => {
            let mut changed = 0;
            for key in parse_all(mxc)? {
                changed += media.unquarantine(&key, actor).await?;
            }
            json!({ "released": changed })
        }
        MediaCommand::Protect { mxc } | MediaCommand::Unprotect { mxc } => {
            let protect = matches!(command, MediaCommand::Protect { .. });
            let mut found = 0;
            for key in parse_all(mxc)? {
                found += u64::from(media.set_protected(&key, protect, actor).await?);
            }
            json!({ "changed": found })
        }
        MediaCommand::Delete { mxc, dry_run } => {
            let mut report = PurgeReport::default();
            for key in parse_all(mxc)? {
                let size = match media.media_info(&key).await {
                    Ok(info) => info.size,
                    Err(MediaError::NotFound) => continue,
                    Err(other) => return Err(other),
                };
                if *dry_run || media.delete_media(&key, actor).await? {
                    report.bytes += size;
                    report.deleted.push(key);
                }
                per_page(&report);
            }
            purge_json(&report, *dry_run)
        }
        MediaCommand::PurgeLocal {
            before,
            size_gt,
            keep_profiles,
            token: t,
            dry_run,
        } => {
            let filter = LocalPurge {
                before: UnixMillis(*before),
                size_gt: *size_gt,
                keep_profiles: *keep_profiles,
                dry_run: *dry_run,
            };
            let acting = t.as_deref().map(token);
            let report = media
                .purge_local(&filter, acting.as_ref(), actor, per_page)
                .await?;
            purge_json(&report, *dry_run)
        }
        MediaCommand::ImportSynapse(import) => import_synapse(media, import, progress).await?,
        MediaCommand::ImportMmr(import) => import_mmr(media, import, progress).await?,
        MediaCommand::ExportSynapse(export) => export_synapse(media, export, progress).await?,
        MediaCommand::Retention { dry_run } => retention(media, *dry_run, progress).await?,
        MediaCommand::PurgeRemote { before, dry_run } => {
            let report = media
                .purge_remote(UnixMillis(*before), *dry_run, actor, per_page)
                .await?;
            purge_json(&report, *dry_run)
        }
    })
}

async fn import_synapse(
    media: &MediaService,
    import: &super::synapse::SynapseImport,
    mut progress: impl FnMut(Value),
) -> Result<Value, MediaError> {
    let report = import
        .run(media, |r| {
            progress(json!({
                "media": r.done(),
                "total": r.total,
                "bytes": r.bytes,
            }));
        })
        .await
        .map_err(|e| match e {
            super::synapse::ImportError::Media(e) => e,
            super::synapse::ImportError::Database(e) => {
                MediaError::Invalid(format!("Synapse's database: {e}"))
            }
        })?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

async fn import_mmr(
    media: &MediaService,
    import: &super::mmr::MmrImport,
    mut progress: impl FnMut(Value),
) -> Result<Value, MediaError> {
    let report = import
        .run(media, |r| {
            progress(json!({
                "media": r.local + r.remote + r.already_here + r.failed.len() as u64,
                "total": r.total,
                "bytes": r.bytes,
            }));
        })
        .await?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

async fn export_synapse(
    media: &MediaService,
    export: &super::synapse::SynapseExport,
    mut progress: impl FnMut(Value),
) -> Result<Value, MediaError> {
    let report = export
        .run(media, |r| {
            progress(json!({
                "media": r.local + r.remote + r.thumbnails,
                "bytes": r.bytes,
            }));
        })
        .await?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

async fn retention(
    media: &MediaService,
    dry_run: bool,
    mut progress: impl FnMut(Value),
) -> Result<Value, MediaError> {
    let report = media
        .retention(dry_run, |r| {
            progress(json!({
                "media": r.local.items + r.remote.items + r.thumbnails.items,
                "bytes": r.local.bytes + r.remote.bytes + r.thumbnails.bytes,
            }));
        })
        .await?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json() {
        let command = MediaCommand::PurgeLocal {
            before: 1,
            size_gt: 2,
            keep_profiles: true,
            token: None,
            dry_run: true,
        };
        let text = serde_json::to_string(&command).unwrap();
        assert!(text.contains("\"op\":\"purge_local\""), "{text}");
        assert!(matches!(
            serde_json::from_str(&text).unwrap(),
            MediaCommand::PurgeLocal { dry_run: true, .. }
        ));
        assert!(parse_mxc("mxc://a.example/xyz").is_ok());
        assert!(parse_mxc("https://a.example/xyz").is_err());
    }
}
