//! The importer's program: `import-config` (the daemon's program hands it over to it, with the
//! same command line). The reading of the Python program's files lives here only.

use std::process::ExitCode;

use aggregator::cli::{exit_code, Cli, Command, DAEMON_PROGRAM, EXIT_CONFIG, IMPORTER_PROGRAM};

fn main() -> ExitCode {
    let cli = Cli::parse_as(IMPORTER_PROGRAM);
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::ImportConfig(args) => {
            aggregator_import::cli::run(&args, cli.plugins_dir.as_deref())
        }
        _ => {
            eprintln!(
                "error: this program runs `import-config` only; the daemon is {DAEMON_PROGRAM}"
            );
            EXIT_CONFIG
        }
    };
    exit_code(code)
}
