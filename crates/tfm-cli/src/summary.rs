//! `tfm summary`: parameters, FLOPs and memory of one model, as a table, JSON or YAML.

use crate::common::{parse_overrides, report, usage_error, Outcome};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use tfm_diag::SourceMap;
use tfm_elab::{check_file, CheckOptions};
use tfm_summary::{render_table, summarize, SummaryOptions};

#[derive(Args)]
pub struct SummaryArgs {
    /// The spec file.
    spec: PathBuf,
    /// The model to summarise (default: the first one in the file).
    #[arg(long)]
    model: Option<String>,
    /// Override a model parameter (`--set layers=4`).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Batch size for activation memory.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Sequence length for activation memory and FLOPs (default: the model's `context` if it has one, else 128).
    #[arg(long)]
    seq: Option<u64>,
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    format: SummaryFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum SummaryFormat {
    Table,
    Json,
    Yaml,
}

pub fn run(args: SummaryArgs) -> Outcome {
    let overrides = match parse_overrides(&args.set) {
        Ok(o) => o,
        Err(e) => return usage_error(&e, Some("write `--set layers=4`")),
    };
    if !args.spec.is_file() {
        return usage_error(&format!("`{}` is not a spec file", args.spec.display()), Some("pass the path of a `.tfm` file"));
    }
    let mut sources = SourceMap::new();
    let checked = check_file(&args.spec, &CheckOptions { overrides, model: args.model.clone() }, &mut sources);
    if report(&checked.diagnostics, &sources) {
        return Outcome::Failed;
    }
    let Some(first) = checked.models.first() else {
        return usage_error(&format!("`{}` defines no model", args.spec.display()), Some("a spec needs a `model name { ... }`"));
    };
    let model = &first.model;
    let seq = args.seq.unwrap_or_else(|| {
        model
            .params
            .iter()
            .find(|(n, _)| n == "context")
            .and_then(|(_, v)| match v {
                tfm_ir::ConstValue::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            })
            .unwrap_or(128)
    });
    let summary = summarize(model, &SummaryOptions { batch: args.batch, seq });
    let text = match args.format {
        SummaryFormat::Table => render_table(&summary),
        SummaryFormat::Json => match serde_json::to_string_pretty(&summary) {
            Ok(s) => s + "\n",
            Err(e) => return usage_error(&format!("cannot write JSON: {e}"), None),
        },
        SummaryFormat::Yaml => match serde_yaml::to_string(&summary) {
            Ok(s) => s,
            Err(e) => return usage_error(&format!("cannot write YAML: {e}"), None),
        },
    };
    print!("{text}");
    Outcome::Ok
}
