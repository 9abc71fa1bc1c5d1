//! `tfm check`: checks specs and compares each model with the snapshot stored beside its spec.

use crate::common::{parse_overrides, usage_error, Outcome};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tfm_diag::render::{render, Format};
use tfm_diag::{Diagnostic, SourceMap};
use tfm_elab::{check_file, CheckOptions};

#[derive(Args)]
pub struct CheckArgs {
    /// Spec files or folders (searched recursively for `.tfm` files).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Output format of the diagnostics.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    format: OutputFormat,
    /// Override a model parameter (`--set layers=4`); skips the snapshot comparison.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Check only this model.
    #[arg(long)]
    model: Option<String>,
    /// Rewrite the snapshots beside the specs instead of comparing with them.
    #[arg(long)]
    update: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Human,
    Short,
    Json,
    Github,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Human => Format::Human,
            OutputFormat::Short => Format::Short,
            OutputFormat::Json => Format::Json,
            OutputFormat::Github => Format::Github,
        }
    }
}

/// The snapshot file of a spec: `gpt2.tfm` -> `gpt2.snap` in the same folder.
pub fn snapshot_path(spec: &Path) -> PathBuf {
    spec.with_extension("snap")
}

const SNAP_HEADER: &str = "# tfm model snapshot: the elaborated models of the spec beside this file.\n# Regenerate with `tfm check --update <spec>` after an intended change.\n";

fn section_header(model: &str) -> String {
    format!("== model {model} ==\n")
}

/// Splits a snapshot file into `model name -> text`.
fn parse_snapshot(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("== model ").and_then(|l| l.trim_end().strip_suffix(" ==")) {
            if let Some((n, t)) = current.take() {
                out.insert(n, t);
            }
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, t)) = current.as_mut() {
            t.push_str(line);
        }
    }
    if let Some((n, t)) = current {
        out.insert(n, t);
    }
    out
}

fn unified_diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header("snapshot", "spec now")
        .to_string()
}

/// Collects the `.tfm` files under the given paths, sorted, each once.
fn collect_specs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n == "target");
                if !hidden {
                    walk(&p, out)?;
                }
            } else if p.extension().is_some_and(|x| x == "tfm") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("cannot read folder `{}`: {e}", p.display()))?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("`{}` does not exist", p.display()));
        }
    }
    out.dedup();
    Ok(out)
}

pub fn run(args: CheckArgs) -> Outcome {
    let overrides = match parse_overrides(&args.set) {
        Ok(o) => o,
        Err(e) => return usage_error(&e, Some("write `--set layers=4`")),
    };
    let files = match collect_specs(&args.paths) {
        Ok(f) => f,
        Err(e) => return usage_error(&e, Some("pass spec files or folders that hold `.tfm` files")),
    };
    if files.is_empty() {
        return usage_error("no `.tfm` files found", Some("pass a spec file or a folder that holds specs"));
    }
    let compare_snapshots = overrides.is_empty();
    let opts = CheckOptions { overrides, model: args.model.clone() };
    let mut sources = SourceMap::new();
    let mut diags: Vec<Diagnostic> = vec![];
    let mut n_models = 0;
    let mut notes: Vec<String> = vec![];
    for file in &files {
        let checked = check_file(file, &opts, &mut sources);
        let file_ok = !checked.diagnostics.iter().any(|d| d.is_error());
        diags.extend(checked.diagnostics);
        n_models += checked.models.len();
        if !compare_snapshots || checked.models.is_empty() {
            continue;
        }
        let snap_path = snapshot_path(file);
        let current: Vec<(String, String, tfm_diag::Span)> = checked
            .models
            .iter()
            .map(|m| (m.model.name.clone(), tfm_summary::snapshot(&m.model), first_line(m.model.span, &sources)))
            .collect();
        if args.update {
            let mut text = SNAP_HEADER.to_string();
            // Keep sections of models not checked this time (`--model`), so updating one keeps the rest.
            let mut sections = std::fs::read_to_string(&snap_path).map(|t| parse_snapshot(&t)).unwrap_or_default();
            if args.model.is_none() || !file_ok {
                sections.retain(|k, _| current.iter().any(|(n, _, _)| n == k) || !file_ok);
            }
            for (name, snap, _) in &current {
                sections.insert(name.clone(), snap.clone());
            }
            for (name, snap) in &sections {
                text.push_str(&section_header(name));
                text.push_str(snap);
            }
            if let Err(e) = write_atomic(&snap_path, &text) {
                diags.push(Diagnostic::error("E0502", format!("cannot write snapshot `{}`: {e}", snap_path.display())));
            } else {
                notes.push(format!("updated {}", snap_path.display()));
            }
            continue;
        }
        let stored = match std::fs::read_to_string(&snap_path) {
            Ok(t) => parse_snapshot(&t),
            Err(_) => {
                if !file_ok {
                    // Fix the errors first; recording a snapshot of a broken spec helps no one.
                    continue;
                }
                notes.push(format!(
                    "no snapshot for {} yet: run `tfm check --update {}` to record one",
                    file.display(),
                    file.display()
                ));
                continue;
            }
        };
        for (name, snap, span) in &current {
            match stored.get(name) {
                Some(old) if old == snap => {}
                Some(old) => diags.push(
                    Diagnostic::error("E0501", format!("model `{name}` differs from its snapshot `{}`", snap_path.display()))
                        .at(*span, "this model changed")
                        .hint(unified_diff(old, snap))
                        .hint(format!("if the change is intended, run `tfm check --update {}`", file.display())),
                ),
                None => diags.push(
                    Diagnostic::error("E0501", format!("model `{name}` has no section in `{}`", snap_path.display()))
                        .at(*span, "new model")
                        .hint(format!("run `tfm check --update {}` to record it", file.display())),
                ),
            }
        }
        if file_ok && args.model.is_none() {
            for name in stored.keys().filter(|k| !current.iter().any(|(n, _, _)| n == *k)) {
                diags.push(
                    Diagnostic::error("E0501", format!("snapshot `{}` records model `{name}`, which the spec no longer defines", snap_path.display()))
                        .hint(format!("run `tfm check --update {}` to drop it", file.display())),
                );
            }
        }
    }
    let format: Format = args.format.into();
    let color = matches!(format, Format::Human) && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let text = render(&diags, &sources, format, color);
    print!("{text}");
    if matches!(format, Format::Json) && diags.is_empty() {
        // Always emit a JSON document.
        if text.trim().is_empty() {
            println!("[]");
        }
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if matches!(format, Format::Human | Format::Short) {
        for n in &notes {
            eprintln!("note: {n}");
        }
        eprintln!(
            "checked {} file{}, {} model{}: {} error{}, {} warning{}",
            files.len(),
            plural(files.len()),
            n_models,
            plural(n_models),
            errors,
            plural(errors),
            warnings,
            plural(warnings)
        );
    }
    if errors > 0 { Outcome::Failed } else { Outcome::Ok }
}

/// The part of `span` on its first line (`model gpt2 {`), so a label does not quote a whole model.
fn first_line(span: tfm_diag::Span, sources: &SourceMap) -> tfm_diag::Span {
    let text = sources.get(span.file).and_then(|f| f.text.get(span.start as usize..span.end as usize));
    match text.and_then(|t| t.find('\n')) {
        Some(i) => tfm_diag::Span { end: span.start + i as u32, ..span },
        None => span,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Writes through a temporary file in the same folder and renames it over the target.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("snap.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
