use clap::Parser;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use aggregator::cli::{check_config, list_plugins, log_level, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    let level = match command {
        Command::Run => log_level(&cli.config),
        _ => tracing::Level::INFO,
    };
    // Plain lines without colours or time stamps: multilog stamps them on Venus OS. The bus
    // library's own chatter only from warnings up.
    let filter = Targets::new()
        .with_default(LevelFilter::from_level(level))
        .with_target(
            "zbus",
            LevelFilter::WARN.min(LevelFilter::from_level(level)),
        );
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_target(false),
        )
        .with(filter)
        .init();
    let plugins_dir = cli.plugins_dir.as_deref();
    let mut out = std::io::stdout().lock();
    let code = match command {
        Command::Run => {
            drop(out);
            aggregator::daemon::run_command(&cli.config, plugins_dir)
        }
        Command::CheckConfig => check_config(&cli.config, plugins_dir, &mut out),
        Command::Plugins => list_plugins(&cli.config, plugins_dir, &mut out),
        Command::Demo { duration } => {
            drop(out);
            aggregator::demo::demo_command(plugins_dir, duration)
        }
        Command::Simulate { scenario, address } => {
            drop(out);
            match scenario {
                Some(file) => aggregator::sim::simulate_command(&file, address.as_deref()),
                None => match aggregator::sim::Scenario::parse(
                    aggregator::sim::DEMO_SCENARIO,
                    "demo scenario",
                ) {
                    Ok(s) => aggregator::sim::simulate(s, address.as_deref()),
                    Err(err) => {
                        eprintln!("error: {err}");
                        1
                    }
                },
            }
        }
    };
    std::process::exit(code);
}
