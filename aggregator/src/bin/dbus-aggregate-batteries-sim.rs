//! The simulator's program: `demo` and `simulate` (the daemon's program hands both over to it,
//! with the same command line).

use tracing::Level;

use aggregator::cli::{init_logging, Cli, Command, DAEMON_PROGRAM, SIMULATOR_PROGRAM};

fn main() {
    let cli = Cli::parse_as(SIMULATOR_PROGRAM);
    init_logging(Level::INFO);
    let code = match cli.command.unwrap_or(Command::Run) {
        Command::Demo { duration } => {
            aggregator::sim::demo::demo_command(cli.plugins_dir.as_deref(), duration)
        }
        Command::Simulate { scenario, address } => {
            aggregator::sim::simulate_command(scenario.as_deref(), address.as_deref())
        }
        Command::Run | Command::CheckConfig | Command::Plugins | Command::ImportConfig(_) => {
            eprintln!("error: this program runs `demo` and `simulate` only; the daemon is {DAEMON_PROGRAM}");
            aggregator::cli::EXIT_CONFIG
        }
    };
    std::process::exit(code);
}
