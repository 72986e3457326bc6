//! The simulator's program: `demo`, `simulate` and `publish` (the daemon's program hands them
//! over to it, with the same command line). The chart drawing of `simulate` lives here only.

use std::process::ExitCode;

use tracing::Level;

use aggregator::cli::{exit_code, init_logging, Cli, Command, DAEMON_PROGRAM, SIMULATOR_PROGRAM};
use aggregator_sim::Error;

fn main() -> ExitCode {
    let cli = Cli::parse_as(SIMULATOR_PROGRAM);
    // `demo` and a replay run their own configuration unless one is named.
    let config_given = std::env::args()
        .skip(1)
        .any(|a| a == "-c" || a == "--config" || a.starts_with("--config="));
    init_logging(Level::INFO);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Demo { duration } => aggregator_sim::demo::demo_command(
            config_given.then_some(cli.config.as_path()),
            cli.plugins_dir.as_deref(),
            duration,
        ),
        Command::Publish { scenario, address } => {
            aggregator_sim::publish_command(scenario.as_deref(), address.as_deref())
        }
        Command::Simulate {
            replay: Some(recording),
            out,
            ..
        } => aggregator_sim::replay::replay_command(
            &recording,
            config_given.then_some(cli.config.as_path()),
            cli.plugins_dir.as_deref(),
            &out,
        ),
        Command::Simulate {
            scenario: Some(scenario),
            out,
            tick,
            every,
            length,
            ..
        } => aggregator_sim::offline::simulate_command(
            &cli.config,
            cli.plugins_dir.as_deref(),
            &scenario,
            &out,
            aggregator_sim::offline::Options {
                tick,
                every,
                length,
            },
        ),
        // Clap requires one of the two; a program built otherwise says so.
        Command::Simulate { .. } => Err(Error::Usage(
            "simulate needs --scenario FILE or --replay FILE".into(),
        )),
        Command::Run
        | Command::CheckConfig
        | Command::Plugins
        | Command::ImportConfig(_)
        | Command::Record => Err(Error::Usage(format!(
            "this program runs `demo`, `simulate` and `publish` only; the daemon is {DAEMON_PROGRAM}"
        ))),
    };
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    for line in err.lines() {
        eprintln!("error: {line}");
    }
    exit_code(err.exit_code())
}
