//! Pieces shared by the subcommands: outcomes and exit codes, `--set` parsing, diagnostic output.

use std::io::IsTerminal;
use tfm_diag::render::{render, Format};
use tfm_diag::{Diagnostic, SourceMap};

/// How a command ended; the exit code is part of the interface (0 clean, 1 errors, 2 usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Usage,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Usage => 2,
        }
    }
}

/// A usage problem: printed to stderr, exit code 2.
pub fn usage_error(message: &str, hint: Option<&str>) -> Outcome {
    eprintln!("error: {message}");
    if let Some(h) = hint {
        eprintln!("  = help: {h}");
    }
    Outcome::Usage
}

/// Parses `--set name=value` arguments.
pub fn parse_overrides(sets: &[String]) -> Result<Vec<(String, String)>, String> {
    sets.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("`--set {s}` is not of the form name=value")),
        })
        .collect()
}

/// Whether to colour human output on stderr.
pub fn stderr_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Renders diagnostics for a person to stderr; returns whether any was an error.
pub fn report(diags: &[Diagnostic], sources: &SourceMap) -> bool {
    if !diags.is_empty() {
        eprint!("{}", render(diags, sources, Format::Human, stderr_color()));
    }
    diags.iter().any(|d| d.is_error())
}
