//! Where results go: text for people, one JSON object per line with `--json`, progress
//! on stderr only when it is a terminal and JSON was not asked for.

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use serde_json::Value;

use crate::exit::{EXIT_BAD_INPUT, Failure};

/// How often a spinner redraws.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// The output mode of this run.
pub struct Out {
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Out {
        Out { json }
    }

    /// Prints a result: `value` (which should carry `"ok"`) with `--json`, else `text`.
    pub fn emit(&self, value: Value, text: impl FnOnce() -> String) {
        use std::io::Write;
        let line = if self.json { value.to_string() } else { text() };
        // A closed stdout (`veritrace ... | head`) is the reader's choice, not an error.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    /// A note for people (stderr); nothing with `--json`.
    pub fn note(&self, text: impl std::fmt::Display) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    /// Prints a failure (unless the command reported it) and gives its exit code.
    pub fn failure(&self, f: Failure) -> ExitCode {
        if let Some(err) = f.err {
            if self.json {
                println!("{}", serde_json::json!({"ok": false, "exit_code": f.code, "error": format!("{err:#}")}));
            } else {
                eprintln!("error: {err:#}");
            }
        }
        ExitCode::from(f.code)
    }

    /// A spinner on stderr for work that may take more than a second; hidden with `--json`
    /// or when stderr is not a terminal.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        // Cleared when dropped, so an error that ends the work early is not printed under a
        // spinner frozen mid-turn.
        let bar = ProgressBar::new_spinner().with_finish(ProgressFinish::AndClear);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(SPINNER_TICK);
        bar
    }

    /// A progress bar on stderr for `len` steps of work; hidden like [`Out::spinner`].
    pub fn bar(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_finish(ProgressFinish::AndClear);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(SPINNER_TICK);
        bar
    }
}

/// A command line clap could not parse: clap's own message (it names the offending value),
/// as JSON if `--json` is on the line; exit code 2. Help and version print normally.
pub fn usage_error(e: clap::Error) -> ExitCode {
    let wants_json = std::env::args().skip(1).any(|a| a == "--json");
    if !e.use_stderr() || !wants_json {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
    }
    let message = e.render().to_string();
    let first = message.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
    println!("{}", serde_json::json!({"ok": false, "exit_code": EXIT_BAD_INPUT, "error": first}));
    ExitCode::from(EXIT_BAD_INPUT)
}
