//! Fixture tests: every `fixtures/ok/*.tfm` checks cleanly (snapshot: IR dump and expectations);
//! every `fixtures/err/*.tfm` produces errors (snapshot: the rendered diagnostics).

use std::path::Path;
use tfm_diag::render::{render, Format};
use tfm_diag::SourceMap;
use tfm_elab::{check_file, dump_model, CheckOptions};

fn opts_for(path: &Path) -> CheckOptions {
    // A first line `// set: k=v, k=v` passes overrides; `// model: name` selects a model.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut opts = CheckOptions::default();
    for line in text.lines().take_while(|l| l.starts_with("//")) {
        if let Some(rest) = line.strip_prefix("// set:") {
            for kv in rest.split(',') {
                if let Some((k, v)) = kv.trim().split_once('=') {
                    opts.overrides.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        if let Some(rest) = line.strip_prefix("// model:") {
            opts.model = Some(rest.trim().to_string());
        }
    }
    opts
}

#[test]
fn ok_fixtures() {
    insta::glob!("fixtures/ok/*.tfm", |path| {
        let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path);
        let mut sources = SourceMap::new();
        let checked = check_file(rel, &opts_for(path), &mut sources);
        let errors = render(&checked.diagnostics, &sources, Format::Human, false);
        assert!(checked.diagnostics.iter().all(|d| !d.is_error()), "{}:\n{errors}", rel.display());
        assert!(!checked.models.is_empty(), "{}: no models", rel.display());
        let mut out = String::new();
        for m in &checked.models {
            out.push_str(&dump_model(&m.model));
            for e in &m.expectations {
                out.push_str(&format!("  expect {} -> {}\n", e.description, if e.passed { "ok" } else { "FAILED" }));
            }
            out.push('\n');
        }
        out.push_str(&errors);
        insta::assert_snapshot!(out);
    });
}

#[test]
fn err_fixtures() {
    insta::glob!("fixtures/err/*.tfm", |path| {
        let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path);
        let mut sources = SourceMap::new();
        let checked = check_file(rel, &opts_for(path), &mut sources);
        assert!(checked.diagnostics.iter().any(|d| d.is_error()), "{}: expected an error", rel.display());
        let rendered = render(&checked.diagnostics, &sources, Format::Human, false);
        let models: Vec<&str> = checked.models.iter().map(|m| m.model.name.as_str()).collect();
        insta::assert_snapshot!(format!("clean models: {models:?}\n\n{rendered}"));
    });
}
