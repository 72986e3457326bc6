//! The `import-config` subcommand: what it prints (its arguments are the daemon's command
//! line's, [`ImportArgs`], which hands the command over to this program).

use aggregator::cli::ImportArgs;

use super::{import, Request};

/// Runs the import (asking the plugins in `plugins_dir`, see [`super::plugins_folder`]);
/// prints the report, or the error on stderr. Returns the exit code.
pub fn run(args: &ImportArgs, plugins_dir: Option<&std::path::Path>) -> i32 {
    let request = Request {
        from: args.from.clone(),
        state_from: args.state_from.clone(),
        out: args.out.clone(),
        force: args.force,
        user_feed_in: args.user_feed_in,
        plugins_dir: plugins_dir.map(std::path::Path::to_path_buf),
    };
    match import(&request, aggregator::clock::calendar::today()) {
        Ok(report) => {
            print!("{report}");
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            aggregator::cli::EXIT_CONFIG
        }
    }
}
