//! `mxmedia media …`: moderation from the shell. Asks the running server
//! through its control socket, or opens the stores itself when none runs
//! (the embedded database admits one process at a time).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use super::output::Output;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mxmedia::{
    config::Config,
    ops::{
        media::{MediaCommand, execute},
        mmr::MmrImport,
        synapse::{SynapseExport, SynapseImport},
    },
};
use serde_json::{Value, json};

#[derive(Args)]
pub struct Common {
    /// Who is acting, as the audit log and quarantine records name them
    /// (default `@mxmedia:<server_name>`).
    #[arg(long = "as", value_name = "USER_ID")]
    actor: Option<String>,
}

/// When bulk deletions start: `--older-than 90d` or `--before-ts MS`.
#[derive(Args)]
#[group(required = false, multiple = false)]
pub struct Age {
    /// Media created longer ago than this (e.g. `90d`, `12h`).
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Media created before this Unix time in milliseconds.
    #[arg(long)]
    before_ts: Option<u64>,
}

impl Age {
    fn before(&self) -> Option<u64> {
        self.before_ts.or_else(|| {
            let age = self.older_than?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            u64::try_from(now.saturating_sub(age).as_millis()).ok()
        })
    }
}

#[derive(Subcommand)]
pub enum MediaCli {
    /// Show what is stored about one media item.
    Info {
        #[command(flatten)]
        common: Common,
        mxc: String,
    },
    /// Quarantine media (every copy of its bytes, and later uploads of
    /// them): by mxc URI, all of a user's uploads, or a room's media.
    Quarantine {
        #[command(flatten)]
        common: Common,
        mxc: Vec<String>,
        /// Everything this user uploaded (protected media excepted).
        #[arg(long, conflicts_with = "room")]
        user: Option<String>,
        /// The media this room's events reference (asks the homeserver).
        #[arg(long, requires = "token")]
        room: Option<String>,
        /// A homeserver admin's access token, to ask the homeserver.
        #[arg(long, env = "MXMEDIA_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Release media (and every copy of its bytes) from quarantine.
    Unquarantine {
        #[command(flatten)]
        common: Common,
        #[arg(required = true)]
        mxc: Vec<String>,
    },
    /// Exempt local media from quarantine by user or room, and from purges.
    Protect {
        #[command(flatten)]
        common: Common,
        #[arg(required = true)]
        mxc: Vec<String>,
    },
    /// Lift the protection.
    Unprotect {
        #[command(flatten)]
        common: Common,
        #[arg(required = true)]
        mxc: Vec<String>,
    },
    /// Delete local media by mxc URI, or all of it older than an age (and
    /// larger than `--size-gt`), keeping quarantined and protected media and
    /// avatars. Frees the datastore.
    Delete {
        #[command(flatten)]
        common: Common,
        mxc: Vec<String>,
        #[command(flatten)]
        age: Age,
        /// Only media larger than this many bytes.
        #[arg(long, default_value_t = 0)]
        size_gt: u64,
        /// Keep users' and rooms' avatars (needs `--token` to ask the homeserver).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        keep_profiles: bool,
        /// A homeserver admin's access token, to ask which media are avatars.
        #[arg(long, env = "MXMEDIA_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Report what would be deleted (count and bytes); delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import media from Synapse: its media store and its database (a
    /// SQLite file or a postgres:// URL, read only). Resumable: run it again
    /// after an interruption, or after Synapse received more uploads.
    ImportSynapse(ImportSynapseArgs),
    /// Import media from matrix-media-repo's export: every part of one
    /// export (the gzipped tar files; one of them holds `manifest.json`).
    /// Resumable.
    ImportMmr(ImportMmrArgs),
    /// Export media for Synapse: every media item and thumbnail written in
    /// Synapse's file layout under `--media-store`, and the rows of its media
    /// tables as SQL (load it into Synapse's database while Synapse is
    /// stopped).
    ExportSynapse(ExportSynapseArgs),
    /// Run retention once with the configured lifetimes (`retention:`):
    /// `--dry-run` reports what it would delete, `--run` deletes.
    Retention {
        #[command(flatten)]
        common: Common,
        #[arg(long, conflicts_with = "run", required_unless_present = "run")]
        dry_run: bool,
        #[arg(long)]
        run: bool,
    },
    /// Delete cached copies of other servers' media older than an age
    /// (quarantined copies are kept); they are fetched again when asked for.
    PurgeRemote {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        age: Age,
        #[arg(long)]
        dry_run: bool,
    },
}

/// `import synapse`, here and as `mxmedia import synapse`.
#[derive(Args)]
pub struct ImportSynapseArgs {
    #[command(flatten)]
    common: Common,
    /// Synapse's `media_store_path`.
    #[arg(long)]
    media_store: PathBuf,
    /// Synapse's database: a SQLite file or a postgres:// URL.
    #[arg(long)]
    database: String,
    /// Read every item back from its datastore and check its digest.
    #[arg(long)]
    verify: bool,
    /// Do not make thumbnails of imported images now (they are made on
    /// request instead).
    #[arg(long)]
    no_thumbnails: bool,
}

/// `import mmr`, here and as `mxmedia import mmr`.
#[derive(Args)]
pub struct ImportMmrArgs {
    #[command(flatten)]
    common: Common,
    /// The export's parts.
    #[arg(required = true)]
    archives: Vec<PathBuf>,
}

/// `export synapse`, here and as `mxmedia export synapse`.
#[derive(Args)]
pub struct ExportSynapseArgs {
    #[command(flatten)]
    common: Common,
    /// The media store directory to fill (Synapse's `media_store_path`).
    #[arg(long)]
    media_store: PathBuf,
    /// The SQL file to write.
    #[arg(long)]
    sql: PathBuf,
}

fn command_of(cli: MediaCli) -> Result<(Common, MediaCommand), String> {
    Ok(match cli {
        MediaCli::Info { common, mxc } => (common, MediaCommand::Info { mxc }),
        MediaCli::Quarantine {
            common,
            mxc,
            user,
            room,
            token,
        } => match (user, room, token) {
            (Some(user), None, _) if mxc.is_empty() => {
                (common, MediaCommand::QuarantineUser { user })
            }
            (None, Some(room), Some(token)) if mxc.is_empty() => {
                (common, MediaCommand::QuarantineRoom { room, token })
            }
            (None, None, _) if !mxc.is_empty() => (common, MediaCommand::Quarantine { mxc }),
            _ => return Err("name media by mxc URI, or one --user, or one --room".to_owned()),
        },
        MediaCli::Unquarantine { common, mxc } => (common, MediaCommand::Unquarantine { mxc }),
        MediaCli::Protect { common, mxc } => (common, MediaCommand::Protect { mxc }),
        MediaCli::Unprotect { common, mxc } => (common, MediaCommand::Unprotect { mxc }),
        MediaCli::Delete {
            common,
            mxc,
            age,
            size_gt,
            keep_profiles,
            token,
            dry_run,
        } => match (mxc.is_empty(), age.before()) {
            (false, None) => (common, MediaCommand::Delete { mxc, dry_run }),
            (true, Some(before)) => (
                common,
                MediaCommand::PurgeLocal {
                    before,
                    size_gt,
                    keep_profiles,
                    token,
                    dry_run,
                },
            ),
            _ => {
                return Err("name media by mxc URI, or give --older-than or --before-ts".to_owned());
            }
        },
        MediaCli::Retention {
            common, dry_run, ..
        } => (common, MediaCommand::Retention { dry_run }),
        MediaCli::ImportSynapse(args) => (
            args.common,
            MediaCommand::ImportSynapse(SynapseImport {
                media_store: absolute(&args.media_store)?,
                database: args.database,
                verify: args.verify,
                skip_thumbnails: args.no_thumbnails,
            }),
        ),
        MediaCli::ImportMmr(args) => (
            args.common,
            MediaCommand::ImportMmr(MmrImport {
                archives: args
                    .archives
                    .iter()
                    .map(|a| absolute(a))
                    .collect::<Result<_, _>>()?,
            }),
        ),
        MediaCli::ExportSynapse(args) => (
            args.common,
            MediaCommand::ExportSynapse(SynapseExport {
                media_store: absolute(&args.media_store)?,
                sql: absolute(&args.sql)?,
            }),
        ),
        MediaCli::PurgeRemote {
            common,
            age,
            dry_run,
        } => {
            let before = age.before().ok_or("give --older-than or --before-ts")?;
            (common, MediaCommand::PurgeRemote { before, dry_run })
        }
    })
}

/// Paths the server may use: the running server has its own working
/// directory.
fn absolute(path: &std::path::Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn spinner(out: Output) -> ProgressBar {
    let bar = out.spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
        bar.set_style(style);
    }
    bar
}

/// A spinner with counts, or a bar with rate and ETA once the work says
/// how much there is.
fn show_progress(bar: &ProgressBar, progress: &Value) {
    let bytes = progress["bytes"].as_u64().unwrap_or(0);
    bar.set_message(format!(
        "{} media, {}",
        progress["media"],
        bytesize::ByteSize(bytes)
    ));
    if let (Some(total), Some(done)) = (progress["total"].as_u64(), progress["media"].as_u64()) {
        if bar.length().is_none()
            && let Ok(style) = ProgressStyle::with_template(
                "{wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg} [{elapsed_precise}]",
            )
        {
            bar.set_style(style);
        }
        bar.set_length(total);
        bar.set_position(done);
    }
}

pub async fn run(cli: MediaCli, config: Result<Config, ExitCode>, out: Output) -> ExitCode {
    let (common, command) = match command_of(cli) {
        Ok(parts) => parts,
        Err(error) => {
            eprintln!("mxmedia media: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(code) => return code,
    };
    let actor = common
        .actor
        .unwrap_or_else(|| format!("@mxmedia:{}", config.server_name));
    let bar = spinner(out);
    let outcome = ask_or_run(&config, &command, &actor, &bar).await;
    bar.finish_and_clear();
    match outcome {
        Ok(result) => {
            out.result(&result, || summary(&result));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mxmedia media: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The counts of a deletion or retention run, then the whole result.
fn summary(result: &Value) -> String {
    let verb = if result["dry_run"] == true {
        "would delete"
    } else {
        "deleted"
    };
    let mut lines = Vec::new();
    if let Some(media) = result.get("media") {
        lines.push(format!("{verb} {media} media, {} bytes", result["bytes"]));
    }
    let retention = result.get("thumbnails").is_some();
    for kind in ["local", "remote", "thumbnails"] {
        if let Some(freed) = result.get(kind).filter(|_| retention) {
            lines.push(format!(
                "retention {verb} {} {kind}, {} bytes",
                freed["items"], freed["bytes"]
            ));
        }
    }
    lines.push(serde_json::to_string_pretty(result).unwrap_or_default());
    lines.join("\n")
}

/// Through the running server's control socket, or here when none runs.
async fn ask_or_run(
    config: &Config,
    command: &MediaCommand,
    actor: &str,
    bar: &ProgressBar,
) -> Result<Value, String> {
    let body = json!({ "command": command, "actor": actor });
    super::ask_or_run(
        config,
        "/control/media",
        &body,
        |p: Value| show_progress(bar, &p),
        |state| async move {
            execute(&state.media, command, actor, |p| show_progress(bar, &p))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}
