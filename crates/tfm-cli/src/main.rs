//! The `tfm` command line: parses arguments, dispatches to a subcommand, maps outcomes to exit codes.

mod check;
mod common;
mod device;
mod eval;
mod generate;
mod predict;
mod summary;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Typed transformer specs: check them, summarise them, train, evaluate and generate.
#[derive(Parser)]
#[command(name = "tfm", version, about = "Typed transformer specs: check them, summarise them, train, evaluate and generate.", long_about = None)]
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
    /// Train a model: progress, TensorBoard logs, periodic evaluation, checkpoints, Ctrl-C to stop.
    Train(train::TrainArgs),
    /// Validation loss and perplexity of a checkpoint, and its task's metrics (accuracy, BLEU,
    /// zero-shot accuracy, exact match).
    Eval(eval::EvalArgs),
    /// Continue a prompt with a checkpoint (sampling with temperature and top-k), or translate
    /// it with an encoder-decoder checkpoint (beam search).
    Generate(generate::GenerateArgs),
    /// Classify a text with a classifier checkpoint: prints the class, probabilities on stderr.
    Predict(predict::PredictArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => check::run(args).code(),
        Command::Summary(args) => summary::run(args).code(),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Predict(args) => predict::run(args),
    };
    ExitCode::from(code)
}
