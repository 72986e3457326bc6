use std::process::ExitCode;

use clap::Parser;
use tracing::Level;

use aggregator::cli::{
    check_config, exit_code, hand_over, init_logging, list_plugins, log_level, Cli, Command,
    TO_IMPORTER, TO_SIMULATOR,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plugins_dir = cli.plugins_dir.as_deref();
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            init_logging(log_level(&cli.config));
            aggregator::daemon::run_command(&cli.config, plugins_dir)
        }
        Command::CheckConfig => {
            init_logging(Level::INFO);
            check_config(&cli.config, plugins_dir, &mut std::io::stdout().lock())
        }
        Command::Plugins => {
            init_logging(Level::INFO);
            list_plugins(&cli.config, plugins_dir, &mut std::io::stdout().lock())
        }
        Command::Record => {
            aggregator::cli::ask_recording(&cli.config, &mut std::io::stdout().lock())
        }
        Command::ImportConfig(_) => hand_over(TO_IMPORTER),
        Command::Demo { .. } | Command::Simulate { .. } | Command::Publish { .. } => {
            hand_over(TO_SIMULATOR)
        }
    };
    exit_code(code)
}
