//! `mxmedia selfcheck --public-url …`: the deployment seen from outside.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;
use mxmedia::ops::selfcheck::{Outcome, PublicCheck};

use super::output::Output;

#[derive(Args)]
pub struct SelfcheckArgs {
    /// Check through the reverse proxy at this URL (the homeserver's
    /// public client address, e.g. `https://matrix.example.org`) instead of
    /// the datastores.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,
    /// Where other servers reach the homeserver (default: the public
    /// URL's host on port 8448).
    #[arg(long, value_name = "URL", requires = "public_url")]
    pub federation_url: Option<url::Url>,
    /// Any user's access token: enables the checks that upload (a file just
    /// under the limit, deleted again when the token is an admin's; a small
    /// one read back with Range and HEAD).
    #[arg(
        long,
        env = "MXMEDIA_SELFCHECK_TOKEN",
        hide_env_values = true,
        requires = "public_url"
    )]
    pub token: Option<String>,
    /// The upload limit in bytes to test the proxy's body limit with
    /// (default: what the media config says).
    #[arg(long, value_name = "BYTES", requires = "public_url")]
    pub max_upload: Option<u64>,
    /// The proxy's access log: checked for a test token sent in a query
    /// string.
    #[arg(long, value_name = "FILE", requires = "public_url")]
    pub proxy_log: Option<PathBuf>,
    /// A PEM certificate to trust (a private CA or a self-signed proxy).
    #[arg(long, value_name = "FILE", requires = "public_url")]
    pub ca_file: Option<PathBuf>,
}

pub async fn public(args: SelfcheckArgs, out: Output) -> ExitCode {
    let Some(public_url) = args.public_url else {
        return ExitCode::from(2);
    };
    let check = PublicCheck {
        public_url,
        federation_url: args.federation_url,
        token: args.token,
        max_upload: args.max_upload,
        proxy_log: args.proxy_log,
        ca_file: args.ca_file,
    };
    let verdicts = match mxmedia::ops::selfcheck::run(&check).await {
        Ok(verdicts) => verdicts,
        Err(error) => {
            eprintln!("mxmedia selfcheck: {error}");
            return ExitCode::from(2);
        }
    };
    out.result(&verdicts, || {
        let mut lines = Vec::new();
        for v in &verdicts {
            let tag = match v.outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "skip",
            };
            lines.push(format!("{tag:<5} {:<18} {}", v.check, v.detail));
            if let Some(fix) = &v.fix {
                lines.push(format!("{:<24} fix: {fix}", ""));
            }
        }
        lines.join("\n")
    });
    if verdicts.iter().any(|v| v.outcome == Outcome::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
