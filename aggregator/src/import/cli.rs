//! The `import-config` subcommand: its arguments and what it prints.

use std::path::PathBuf;

use super::{import, Request};

/// `import-config --from FILE [--state-from DIR] --out FILE [--force]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The old program's `settings.py` (3.x) or `config.ini` (4.x; its `config.default.ini`
    /// beside it is read first).
    #[arg(long)]
    pub from: PathBuf,
    /// The folder of the old state files (`charge`, `last_balancing`, `storedvalue_*`).
    #[arg(long)]
    pub state_from: Option<PathBuf>,
    /// The `config.yaml` to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing `--out` file (and `state/state.json`).
    #[arg(long)]
    pub force: bool,
    /// The user's own DC-coupled feed-in setting, 0 or 1 (`/Settings/CGwacs/OvervoltageFeedIn`),
    /// when the old program was stopped while it held it at 0: the daemon writes it back once
    /// nothing keeps feed-in off (needs `--state-from`).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1))]
    pub user_feed_in: Option<i64>,
}

/// Runs the import (asking the plugins in `plugins_dir`, see [`super::plugins_folder`]);
/// prints the report, or the error on stderr. Returns the exit code.
pub fn run(args: &Args, plugins_dir: Option<&std::path::Path>) -> i32 {
    let request = Request {
        from: args.from.clone(),
        state_from: args.state_from.clone(),
        out: args.out.clone(),
        force: args.force,
        user_feed_in: args.user_feed_in,
        plugins_dir: plugins_dir.map(std::path::Path::to_path_buf),
    };
    match import(&request, crate::clock::calendar::today()) {
        Ok(report) => {
            print!("{report}");
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            crate::cli::EXIT_CONFIG
        }
    }
}
