//! The importer's program: `import-config` (the daemon's program hands it over to it, with the
//! same command line). The reading of the Python program's files lives here only.

use std::process::ExitCode;

use aggregator::cli::{exit_code, Cli, Command, DAEMON_PROGRAM, EXIT_CONFIG, IMPORTER_PROGRAM};

fn main() -> ExitCode {
    let cli = Cli::parse_as(IMPORTER_PROGRAM);
    let Command::ImportConfig(args) = cli.command.unwrap_or(Command::Run) else {
        eprintln!("error: this program runs `import-config` only; the daemon is {DAEMON_PROGRAM}");
        return exit_code(EXIT_CONFIG);
    };
    match aggregator_import::cli::run(&args, cli.plugins_dir.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            exit_code(err.exit_code())
        }
    }
}
