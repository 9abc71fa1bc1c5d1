//! The `tfm` command line: parses arguments, dispatches to a subcommand, maps outcomes to exit codes.

mod check;
mod common;
mod summary;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Typed transformer specs: check them, summarise them, train, evaluate and generate.
#[derive(Parser)]
#[command(name = "tfm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check specs (files or folders): syntax, names, shapes, constraints, expectations, snapshots.
    Check(check::CheckArgs),
    /// Parameters, FLOPs and memory of one model, per block and in total.
    Summary(summary::SummaryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Summary(args) => summary::run(args),
    };
    ExitCode::from(outcome.code())
}
