use clap::Parser;
use tracing::Level;

use aggregator::cli::{
    check_config, hand_to_simulator, init_logging, list_plugins, log_level, Cli, Command,
};

fn main() {
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
        Command::ImportConfig(args) => aggregator::import::cli::run(&args, plugins_dir),
        Command::Record => {
            aggregator::cli::ask_recording(&cli.config, &mut std::io::stdout().lock())
        }
        Command::Demo { .. } | Command::Simulate { .. } | Command::Publish { .. } => {
            hand_to_simulator()
        }
    };
    std::process::exit(code);
}
