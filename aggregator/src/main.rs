use std::process::ExitCode;

use clap::Parser;
use tracing::Level;

use aggregator::cli::{
    check_config, exit_code, hand_over, ignore_recording_requests, init_daemon_logging,
    init_logging, list_plugins, log_level, print_error, Cli, Command, FLUSH_LIMIT, TO_IMPORTER,
    TO_SIMULATOR,
};

fn main() -> ExitCode {
    ignore_recording_requests();
    let cli = Cli::parse();
    let plugins_dir = cli.plugins_dir.as_deref();
    let command = cli.command.unwrap_or(Command::Run);
    // Where the error goes: the daemon's log, or beside the report the command printed.
    let logged = matches!(command, Command::Run);
    let beside_report = matches!(
        command,
        Command::CheckConfig | Command::Plugins | Command::Record
    );
    let mut log_output = None;
    let result = match command {
        Command::Run => {
            log_output = init_daemon_logging(log_level(&cli.config));
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
        Command::ImportConfig(_) => Err(hand_over(TO_IMPORTER)),
        Command::Demo { .. } | Command::Simulate { .. } | Command::Publish { .. } => {
            Err(hand_over(TO_SIMULATOR))
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if logged {
                tracing::error!("{err}");
            } else if beside_report {
                print_error(&err, &mut std::io::stdout().lock());
            } else {
                print_error(&err, &mut std::io::stderr().lock());
            }
            exit_code(err.exit_code())
        }
    };
    // The daemon's last lines, its error among them: waited for within a bound, as a log
    // that nobody reads must not keep the process from ending.
    if let Some(output) = log_output {
        output.flush(FLUSH_LIMIT);
    }
    code
}
