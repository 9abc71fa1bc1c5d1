//! Resolves names, loads imports and the standard library, applies overrides, and elaborates
//! `.tfm` models into validated IR.

use tfm_diag::{Diagnostic, FileId, SourceMap, Span};

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// `--set k=v`, raw strings.
    pub overrides: Vec<(String, String)>,
    /// `--model NAME`.
    pub model: Option<String>,
}

/// The result of one `expect` statement.
#[derive(Clone, Debug)]
pub struct ExpectOutcome {
    pub span: Span,
    pub description: String,
    pub passed: bool,
}

/// A model that elaborated without error.
#[derive(Clone, Debug)]
pub struct CheckedModel {
    pub model: tfm_ir::Model,
    pub file: FileId,
    pub expectations: Vec<ExpectOutcome>,
}

/// Everything a check produced.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub models: Vec<CheckedModel>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks the file at `path`; imports are relative to its folder.
pub fn check_file(path: &std::path::Path, opts: &CheckOptions, sources: &mut SourceMap) -> Checked {
    let _ = (path, opts, sources);
    Checked::default()
}

/// Checks source text; imports are relative to the current directory.
pub fn check_source(name: &str, text: &str, opts: &CheckOptions, sources: &mut SourceMap) -> Checked {
    let _ = (name, text, opts, sources);
    Checked::default()
}
