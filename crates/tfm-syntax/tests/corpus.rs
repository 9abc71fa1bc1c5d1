//! Every `.tfm` file the repository ships (specs, examples, the standard library) and every
//! `tfm`-fenced example in the language reference parses without syntax errors.

use std::path::{Path, PathBuf};

use tfm_diag::render::{render, Format};
use tfm_diag::SourceMap;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tfm_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            tfm_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "tfm") {
            out.push(p);
        }
    }
}

fn check(name: String, src: String) -> Option<String> {
    let mut sources = SourceMap::new();
    let id = sources.add(name, src.clone());
    let (_, diags) = tfm_syntax::parse(&src, id);
    (!diags.is_empty()).then(|| render(&diags, &sources, Format::Human, false))
}

#[test]
fn shipped_tfm_files_parse() {
    let root = repo_root();
    let mut files = vec![];
    for dir in ["specs", "examples", "crates/tfm-std/std"] {
        tfm_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 3, "expected the repository's specs and standard library, found {files:?}");
    let mut failures = vec![];
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap_or_default();
        if let Some(err) = check(f.display().to_string(), src) {
            failures.push(err);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reference_examples_parse() {
    let text = std::fs::read_to_string(repo_root().join("grammar/README.md")).unwrap_or_default();
    let mut failures = vec![];
    let mut count = 0;
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```tfm\n") {
        let body = &rest[start + 7..];
        let Some(end) = body.find("```") else { break };
        count += 1;
        if let Some(err) = check(format!("README.md example {count}"), body[..end].to_string()) {
            failures.push(err);
        }
        rest = &body[end + 3..];
    }
    assert!(count > 0, "the reference has no `tfm` examples");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
