//! Parser fixtures: every `fixtures/ok/*.tfm` parses without diagnostics and its AST dump is
//! snapshotted; every `fixtures/err/*.tfm` yields diagnostics, snapshotted as rendered for people
//! together with the AST of what still parsed.

use tfm_diag::render::{render, Format};
use tfm_diag::SourceMap;

fn load(path: &std::path::Path) -> (String, String) {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let name = format!("fixtures/{}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    (name, src)
}

#[test]
fn ok_fixtures() {
    insta::glob!("fixtures/ok/*.tfm", |path| {
        let (name, src) = load(path);
        let mut sources = SourceMap::new();
        let id = sources.add(name, src.clone());
        let (file, diags) = tfm_syntax::parse(&src, id);
        assert!(diags.is_empty(), "{}", render(&diags, &sources, Format::Human, false));
        insta::assert_snapshot!(tfm_syntax::dump::dump(&file));
    });
}

#[test]
fn err_fixtures() {
    insta::glob!("fixtures/err/*.tfm", |path| {
        let (name, src) = load(path);
        let mut sources = SourceMap::new();
        let id = sources.add(name, src.clone());
        let (file, diags) = tfm_syntax::parse(&src, id);
        assert!(!diags.is_empty(), "expected syntax errors in {}", path.display());
        let shown = render(&diags, &sources, Format::Human, false);
        insta::assert_snapshot!(format!("{shown}\n--- still parsed ---\n{}", tfm_syntax::dump::dump(&file)));
    });
}
