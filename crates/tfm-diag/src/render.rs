//! Renders diagnostics for people (codespan-reporting) and for machines (JSON, GitHub annotations).
//!
//! Every renderer returns a `String`; printing it is the caller's business. Spans that do not fit
//! their file (or name a file the map does not hold) are clamped or dropped, never a panic.

use std::ops::Range;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::{Error as FilesError, Files};
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;

use crate::{Diagnostic, Severity, SourceMap, Span};

/// How to render diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Source lines with labels and `= help:` notes, as a compiler shows them.
    Human,
    /// One line each: `file:line:col: error[E0101]: message`.
    Short,
    /// A JSON array of objects (file, line, column, end_line, end_column, severity, code,
    /// message, labels, hints).
    Json,
    /// GitHub Actions workflow commands (`::error file=...,line=...::message`).
    Github,
}

/// Renders `diags` in `format`; `color` adds ANSI colours (human format only).
pub fn render(diags: &[Diagnostic], sources: &SourceMap, format: Format, color: bool) -> String {
    match format {
        Format::Human => human(diags, sources, color),
        Format::Short => diags.iter().map(|d| short_line(d, sources) + "\n").collect(),
        Format::Json => json(diags, sources),
        Format::Github => diags.iter().map(|d| github_line(d, sources) + "\n").collect(),
    }
}

/// Lets codespan-reporting read a [`SourceMap`].
struct MapFiles<'a>(&'a SourceMap);

impl<'a> Files<'a> for MapFiles<'a> {
    type FileId = crate::FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: Self::FileId) -> Result<&'a str, FilesError> {
        self.0.get(id).map(|f| f.name.as_str()).ok_or(FilesError::FileMissing)
    }
    fn source(&'a self, id: Self::FileId) -> Result<&'a str, FilesError> {
        self.0.get(id).map(|f| f.text.as_str()).ok_or(FilesError::FileMissing)
    }
    fn line_index(&'a self, id: Self::FileId, byte_index: usize) -> Result<usize, FilesError> {
        self.0.get(id).map(|f| f.line_index(byte_index)).ok_or(FilesError::FileMissing)
    }
    fn line_range(&'a self, id: Self::FileId, line_index: usize) -> Result<Range<usize>, FilesError> {
        let f = self.0.get(id).ok_or(FilesError::FileMissing)?;
        f.line_range(line_index)
            .ok_or(FilesError::LineTooLarge { given: line_index, max: f.line_count().saturating_sub(1) })
    }
}

/// The span clamped into its file and onto char boundaries; `None` when the file is unknown.
fn clamp(span: Span, sources: &SourceMap) -> Option<Range<usize>> {
    let text = &sources.get(span.file)?.text;
    let fix = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = fix(span.start as usize);
    let end = fix(span.end as usize).max(start);
    Some(start..end)
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn human(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let files = MapFiles(sources);
    let config = term::Config::default();
    let mut buf = if color { termcolor::Buffer::ansi() } else { termcolor::Buffer::no_color() };
    for d in diags {
        let severity = match d.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
            Severity::Note => cs::Severity::Note,
        };
        let mut labels = vec![];
        let mut notes = vec![];
        for l in &d.labels {
            match clamp(l.span, sources) {
                Some(range) => {
                    let label = if l.primary {
                        cs::Label::primary(l.span.file, range)
                    } else {
                        cs::Label::secondary(l.span.file, range)
                    };
                    labels.push(label.with_message(l.message.clone()));
                }
                None if !l.message.is_empty() => notes.push(format!("note: {}", l.message)),
                None => {}
            }
        }
        notes.extend(d.hints.iter().map(|h| format!("help: {h}")));
        let diag = cs::Diagnostic::new(severity)
            .with_code(d.code)
            .with_message(d.message.clone())
            .with_labels(labels)
            .with_notes(notes);
        if term::emit(&mut buf, &config, &files, &diag).is_err() {
            // Unreachable with clamped spans; fall back to the one-line form rather than lose it.
            let line = short_line(d, sources) + "\n";
            return String::from_utf8_lossy(buf.as_slice()).into_owned() + &line;
        }
    }
    String::from_utf8_lossy(buf.as_slice()).into_owned()
}

/// Start and end (1-based line, column) of the primary span, with the file name.
struct Place<'a> {
    file: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

fn place<'a>(span: Span, sources: &'a SourceMap) -> Option<Place<'a>> {
    let f = sources.get(span.file)?;
    let range = clamp(span, sources)?;
    let (line, column) = f.line_col(range.start);
    let (end_line, end_column) = f.line_col(range.end);
    Some(Place { file: f.name.as_str(), line, column, end_line, end_column })
}

fn short_line(d: &Diagnostic, sources: &SourceMap) -> String {
    // One line per diagnostic, whatever the message holds.
    let message = d.message.replace("\r\n", " ").replace('\n', " ");
    let head = format!("{}[{}]: {message}", severity_word(d.severity), d.code);
    match d.primary_span().and_then(|s| place(s, sources)) {
        Some(p) => format!("{}:{}:{}: {head}", p.file, p.line, p.column),
        None => head,
    }
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    file: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    message: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct JsonDiag<'a> {
    file: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
    end_line: Option<usize>,
    end_column: Option<usize>,
    severity: &'static str,
    code: &'a str,
    message: &'a str,
    labels: Vec<JsonLabel<'a>>,
    hints: &'a [String],
}

fn json(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let out: Vec<JsonDiag<'_>> = diags
        .iter()
        .map(|d| {
            let p = d.primary_span().and_then(|s| place(s, sources));
            let labels = d
                .labels
                .iter()
                .filter_map(|l| {
                    let lp = place(l.span, sources)?;
                    Some(JsonLabel {
                        file: lp.file,
                        line: lp.line,
                        column: lp.column,
                        end_line: lp.end_line,
                        end_column: lp.end_column,
                        message: &l.message,
                        primary: l.primary,
                    })
                })
                .collect();
            JsonDiag {
                file: p.as_ref().map(|p| p.file),
                line: p.as_ref().map(|p| p.line),
                column: p.as_ref().map(|p| p.column),
                end_line: p.as_ref().map(|p| p.end_line),
                end_column: p.as_ref().map(|p| p.end_column),
                severity: severity_word(d.severity),
                code: d.code,
                message: &d.message,
                labels,
                hints: &d.hints,
            }
        })
        .collect();
    serde_json::to_string_pretty(&out).unwrap_or_else(|_| "[]".to_string())
}

/// Escapes the message part of a workflow command.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a property value of a workflow command.
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github_line(d: &Diagnostic, sources: &SourceMap) -> String {
    let kind = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "notice",
    };
    let mut props = vec![];
    if let Some(p) = d.primary_span().and_then(|s| place(s, sources)) {
        props.push(format!("file={}", gh_property(p.file)));
        props.push(format!("line={}", p.line));
        props.push(format!("col={}", p.column));
        props.push(format!("endLine={}", p.end_line));
        props.push(format!("endColumn={}", p.end_column));
    }
    props.push(format!("title={}", gh_property(d.code)));
    let mut message = d.message.clone();
    for h in &d.hints {
        message.push_str("\nhelp: ");
        message.push_str(h);
    }
    format!("::{kind} {}::{}", props.join(","), gh_data(&message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Diagnostic, SourceMap, Span};

    /// Two diagnostics over a small file: one with a secondary label and a hint, one warning
    /// whose message needs escaping for GitHub.
    fn sample() -> (Vec<Diagnostic>, SourceMap) {
        let mut sources = SourceMap::new();
        let src = "model m {\n    d_model: int = 768\n    heads: int = 5 where d_model % heads == 0\n}\n";
        let f = sources.add("specs/m.tfm", src);
        let heads = src.find("heads: int").unwrap_or(0);
        let cond = src.find("d_model % heads").unwrap_or(0);
        let d_model = src.find("d_model: int").unwrap_or(0);
        let diags = vec![
            Diagnostic::error("E0101", "constraint violated: d_model % heads == 0")
                .at(Span::new(f, cond, cond + "d_model % heads == 0".len()), "768 % 5 is 3, not 0")
                .with(Span::new(f, d_model, d_model + 7), "`d_model` is 768 here")
                .hint("choose `heads` dividing 768, e.g. 8 or 12"),
            Diagnostic::warning("W0001", "unused parameter `heads`, 100% sure,\nsecond line")
                .at(Span::new(f, heads, heads + 5), "never used"),
        ];
        (diags, sources)
    }

    #[test]
    fn human() {
        let (d, s) = sample();
        insta::assert_snapshot!(render(&d, &s, Format::Human, false));
    }

    #[test]
    fn human_color_has_escapes() {
        let (d, s) = sample();
        assert!(render(&d, &s, Format::Human, true).contains("\u{1b}["));
    }

    #[test]
    fn short() {
        let (d, s) = sample();
        insta::assert_snapshot!(render(&d, &s, Format::Short, false));
    }

    #[test]
    fn json() {
        let (d, s) = sample();
        let out = render(&d, &s, Format::Json, false);
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(parsed[0]["line"], 3);
        assert_eq!(parsed[0]["code"], "E0101");
        insta::assert_snapshot!(out);
    }

    #[test]
    fn github() {
        let (d, s) = sample();
        insta::assert_snapshot!(render(&d, &s, Format::Github, false));
    }

    #[test]
    fn spans_outside_the_file_or_unknown_files_do_not_panic() {
        let mut s = SourceMap::new();
        let f = s.add("a.tfm", "héllo\n");
        let d = vec![
            Diagnostic::error("E0001", "past the end").at(Span::new(f, 3, 999), "here"),
            Diagnostic::error("E0001", "unknown file").at(Span::new(crate::FileId(7), 0, 1), "there"),
            Diagnostic::error("E0001", "no label"),
        ];
        for format in [Format::Human, Format::Short, Format::Json, Format::Github] {
            let out = render(&d, &s, format, false);
            assert!(out.contains("past the end") && out.contains("unknown file") && out.contains("no label"));
        }
        assert_eq!(render(&d, &s, Format::Short, false).lines().next(), Some("a.tfm:1:3: error[E0001]: past the end"));
    }
}
