//! `make plan-check`: lints the tracking plan files on disk (`schemas/tracking-plan/*.json`, or
//! the directory given) with the producer's own checks, so a plan that would stop the producer
//! from starting is refused before it is built in. Prints one line per file; exits 1 on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use producer_api::tracking_plan::{Mode, lint};

#[allow(clippy::print_stdout)] // a command-line report
fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/tracking-plan")), PathBuf::from);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            println!("plan-check: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut failed = 0;
    for path in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Every file in the directory is a plan or a mistake: a stray file is named too.
        let result = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| lint(&name, &text).map_err(|e| e.to_string()));
        match result {
            Ok((event_type, plan)) => {
                let mode = if plan.mode == Mode::Enforce { "enforce" } else { "warn" };
                println!("ok    {name}: {event_type} ({mode})");
            }
            Err(reason) => {
                failed += 1;
                println!("FAIL  {name}: {reason}");
            }
        }
    }
    println!("plan-check: {} plans, {failed} failed", files.len());
    if failed == 0 && !files.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
