use clap::Parser;

use aggregator::cli::{check_config, list_plugins, Cli, Command};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
    let plugins_dir = cli.plugins_dir.as_deref();
    let mut out = std::io::stdout().lock();
    let code = match cli.command {
        Command::CheckConfig => check_config(&cli.config, plugins_dir, &mut out),
        Command::Plugins => list_plugins(&cli.config, plugins_dir, &mut out),
    };
    std::process::exit(code);
}
