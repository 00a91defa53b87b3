//! `mixer`: a Mixer-compatible policy and telemetry server, and tools around it.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mixer",
    version,
    about = "A Mixer-compatible policy and telemetry server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with attribute expressions: evaluate one, or run conformance case files.
    #[command(subcommand)]
    Expr(cli::expr::ExprCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Expr(cmd) => cli::expr::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
