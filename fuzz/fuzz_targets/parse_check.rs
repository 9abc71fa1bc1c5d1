//! Fuzz target: the parser and the checker never panic, and every reported span lies in its file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfm_diag::render::{render, Format};
use tfm_diag::{FileId, SourceMap};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };

    let (_file, diags) = tfm_syntax::parse(src, FileId(0));
    for d in &diags {
        for l in &d.labels {
            assert!(l.span.start <= l.span.end && l.span.end as usize <= src.len(), "span outside the input: {l:?}");
        }
    }

    let mut sources = SourceMap::new();
    let checked = tfm_elab::check_source("fuzz.tfm", src, &tfm_elab::CheckOptions::default(), &mut sources);
    // Rendering must cope with whatever spans the checker produced.
    for format in [Format::Human, Format::Short, Format::Json, Format::Github] {
        let _ = render(&checked.diagnostics, &sources, format, false);
    }
});
