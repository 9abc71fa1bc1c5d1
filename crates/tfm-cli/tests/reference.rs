//! The language reference and the reference specs hold: every example fenced as `tfm` in
//! `grammar/README.md` checks without errors, and every spec in `specs/` and `examples/` checks
//! without diagnostics and has the published parameter count.

use std::path::{Path, PathBuf};
use tfm_diag::render::{render, Format};
use tfm_diag::SourceMap;
use tfm_elab::{check_file, check_source, CheckOptions};
use tfm_summary::{summarize, SummaryOptions};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(1-based line of the opening fence, text)` of every fenced block whose info string is `lang`.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    let mut open: Option<(usize, String, bool)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((i + 1, String::new(), info.trim() == lang));
                }
            }
            Some((start, mut text, wanted)) => {
                if trimmed.starts_with("```") {
                    if wanted {
                        out.push((start, text));
                    }
                } else {
                    text.push_str(line);
                    text.push('\n');
                    open = Some((start, text, wanted));
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code fence in the markdown");
    out
}

#[test]
fn fence_extraction() {
    let md = "a\n```tfm\nmodel m {}\n```\n```text\nnot this\n```\n  ```tfm\nx\n  ```\n";
    assert_eq!(fenced_blocks(md, "tfm"), vec![(2, "model m {}\n".to_string()), (8, "x\n".to_string())]);
}

#[test]
fn readme_examples_check() {
    let path = workspace_root().join("grammar/README.md");
    let md = std::fs::read_to_string(&path).expect("grammar/README.md");
    let blocks = fenced_blocks(&md, "tfm");
    // The reference shows the main constructs as complete files; losing them would go unnoticed.
    assert!(blocks.len() >= 6, "expected at least 6 `tfm` examples, found {}", blocks.len());
    let mut failures = String::new();
    let mut models = 0;
    for (line, text) in &blocks {
        let mut sources = SourceMap::new();
        let name = format!("grammar/README.md:{line}");
        let checked = check_source(&name, text, &CheckOptions::default(), &mut sources);
        if checked.diagnostics.iter().any(|d| d.is_error()) {
            failures.push_str(&render(&checked.diagnostics, &sources, Format::Human, false));
        }
        for m in &checked.models {
            for e in &m.expectations {
                assert!(e.passed, "{name}: model `{}`: expectation `{}` failed", m.model.name, e.description);
            }
        }
        models += checked.models.len();
    }
    assert!(failures.is_empty(), "examples in grammar/README.md do not check:\n{failures}");
    assert!(models >= 4, "expected the examples to define at least 4 models, found {models}");
    // The constructs the reference promises to show in checked form.
    let all: String = blocks.iter().map(|(_, t)| t.as_str()).collect();
    for construct in ["block ", "model ", "repeat ", " shared ", "expect params", " given ", " where ", "require ", "^T", "import std", "objective ", " if ", ";"] {
        assert!(all.contains(construct), "no checked example shows `{construct}`");
    }
    let variant = all.lines().any(|l| l.starts_with("model ") && l.contains(" = ") && l.trim_end().ends_with('}'));
    assert!(variant, "no checked example shows a variant (`model b = a {{ x = 1 }}`)");
}

/// The published parameter counts (trainable, as the reference implementation counts them).
const PUBLISHED: &[(&str, &str, u128)] = &[
    ("specs/bert_base.tfm", "bert_base", 109_482_240),
    ("specs/gpt2.tfm", "gpt2", 124_439_808),
    ("specs/t5_small.tfm", "t5_small", 60_506_624),
    ("specs/vit_b16.tfm", "vit_b16", 86_567_656),
    ("specs/clip_vit_b32.tfm", "clip_vit_b32", 151_277_313),
    ("specs/whisper_tiny.tfm", "whisper_tiny", 37_184_640),
    ("specs/llama2_7b.tfm", "llama2_7b", 6_738_415_616),
    ("specs/mistral_7b.tfm", "mistral_7b", 7_241_732_096),
];

fn spec_files() -> Vec<PathBuf> {
    let mut out = vec![];
    for dir in ["specs", "examples"] {
        let entries = std::fs::read_dir(workspace_root().join(dir)).expect("the folder exists");
        for e in entries {
            let p = e.expect("a folder entry").path();
            if p.extension().is_some_and(|x| x == "tfm") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_spec_checks_without_diagnostics() {
    let files = spec_files();
    assert!(files.len() >= 10, "found only {} specs", files.len());
    let mut failures = String::new();
    for f in &files {
        let mut sources = SourceMap::new();
        let checked = check_file(f, &CheckOptions::default(), &mut sources);
        if !checked.diagnostics.is_empty() {
            failures.push_str(&render(&checked.diagnostics, &sources, Format::Human, false));
        }
        if checked.models.is_empty() {
            failures.push_str(&format!("{}: no models\n", f.display()));
        }
        for m in &checked.models {
            for e in m.expectations.iter().filter(|e| !e.passed) {
                failures.push_str(&format!("{}: `{}`: expectation `{}` failed\n", f.display(), m.model.name, e.description));
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn reference_specs_have_the_published_parameter_counts() {
    let mut wrong = vec![];
    for (file, model, expected) in PUBLISHED {
        let mut sources = SourceMap::new();
        let opts = CheckOptions { overrides: vec![], model: Some(model.to_string()) };
        let checked = check_file(&workspace_root().join(file), &opts, &mut sources);
        let errors = render(&checked.diagnostics, &sources, Format::Human, false);
        let m = checked.models.iter().find(|m| m.model.name == *model).unwrap_or_else(|| panic!("{file}: model `{model}` does not check:\n{errors}"));
        let total = summarize(&m.model, &SummaryOptions { batch: 1, seq: 16 }).totals.trainable;
        if total != *expected {
            wrong.push(format!("{model}: expected {expected} trainable parameters, found {total} (off by {})", total as i128 - *expected as i128));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
