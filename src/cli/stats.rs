//! `mxmedia stats`: what is stored, by kind and by datastore, and how the
//! hot cache does; the running server's numbers when one runs.

use std::process::ExitCode;

use bytesize::ByteSize;
use mxmedia::{
    config::Config,
    media::{Stats, Tally},
};

use super::output::Output;

pub async fn run(config: &Config, out: Output) -> ExitCode {
    let outcome: Result<Stats, String> = super::ask_or_run(
        config,
        "/control/stats",
        &serde_json::json!({}),
        |_: serde_json::Value| {},
        |state| async move { state.media.stats().await.map_err(|e| e.to_string()) },
    )
    .await;
    match outcome {
        Ok(stats) => {
            out.result(&stats, || text(&stats));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mxmedia stats: {error}");
            ExitCode::FAILURE
        }
    }
}

fn line(name: &str, tally: Tally) -> String {
    format!(
        "{name:<24} {:>10} {:>12}",
        tally.count,
        ByteSize(tally.bytes).to_string()
    )
}

fn text(stats: &Stats) -> String {
    let mut lines = vec![
        format!("{:<24} {:>10} {:>12}", "", "items", "bytes"),
        line("local media", stats.local_media),
        line("remote media (cached)", stats.remote_media),
        line("thumbnails", stats.thumbnails),
        format!(
            "{:<24} {:>10}",
            "async uploads pending", stats.pending_uploads
        ),
        String::new(),
        format!("{:<24} {:>10} {:>12}", "datastore", "objects", "bytes"),
    ];
    for (id, tally) in &stats.datastores {
        lines.push(line(id, *tally));
    }
    if let Some(cache) = &stats.cache {
        lines.push(String::new());
        lines.push(format!(
            "hot cache: {} of {}, {} hits / {} misses{}",
            ByteSize(cache.bytes),
            ByteSize(cache.max_bytes),
            cache.hits,
            cache.misses,
            cache
                .hit_rate
                .map(|r| format!(" ({:.1}% hit rate)", r * 100.0))
                .unwrap_or_default()
        ));
    }
    lines.join("\n")
}
