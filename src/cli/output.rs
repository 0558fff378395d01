//! How a command prints its result: lines for people, or one JSON document
//! for scripts (`--json`). Progress bars go to standard error and only to
//! a terminal, so neither form is mixed with them.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// `value` as JSON with `--json`, otherwise `text`. A closed standard
    /// output (`| head`) is not an error of the command.
    pub fn result<T: Serialize>(self, value: &T, text: impl FnOnce() -> String) {
        let mut out = std::io::stdout().lock();
        let _ = if self.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            )
        } else {
            writeln!(out, "{}", text())
        };
    }

    /// A progress bar drawn with `template`, hidden when `--json` is given
    /// (indicatif hides it by itself when standard error is no terminal).
    pub fn bar(self, template: &str) -> ProgressBar {
        let bar = ProgressBar::new(0);
        if self.json {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }

    pub fn spinner(self) -> ProgressBar {
        let bar = ProgressBar::new_spinner();
        if self.json {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar
    }
}
