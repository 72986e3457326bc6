//! The `import-config` subcommand: what it prints (its arguments are the daemon's command
//! line's, [`ImportArgs`], which hands the command over to this program).

use aggregator::cli::ImportArgs;

use super::{import, ImportError, Request};

/// Runs the import (asking the plugins in `plugins_dir`, see [`super::plugins_folder`]) and
/// prints the report; the error is `main`'s to print.
pub fn run(args: &ImportArgs, plugins_dir: Option<&std::path::Path>) -> Result<(), ImportError> {
    let request = Request {
        from: args.from.clone(),
        state_from: args.state_from.clone(),
        out: args.out.clone(),
        force: args.force,
        user_feed_in: args.user_feed_in,
        given: super::Given {
            cell_voltages: args.cell_voltages,
            max_currents: args.max_currents,
        },
        plugins_dir: plugins_dir.map(std::path::Path::to_path_buf),
    };
    let report = import(&request, aggregator::clock::calendar::today())?;
    print!("{report}");
    Ok(())
}
