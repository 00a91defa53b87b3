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
    /// Run the server: the istio.mixer.v1.Mixer gRPC API and the monitoring endpoints.
    Server(Box<cli::server::ServerArgs>),
    /// Check configuration directories and report every problem (exit 1 if any error).
    Validate(cli::validate::ValidateArgs),
    /// Send a Check call, as Envoy would, and print the decoded answer.
    Check(cli::client::CheckArgs),
    /// Send a Report call, as Envoy would.
    Report(cli::client::ReportArgs),
    /// Work with attribute expressions: evaluate one, or run conformance case files.
    #[command(subcommand)]
    Expr(cli::expr::ExprCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => cli::server::run(*args),
        Command::Validate(args) => cli::validate::run(args),
        Command::Check(args) => cli::client::check(args),
        Command::Report(args) => cli::client::report(args),
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
