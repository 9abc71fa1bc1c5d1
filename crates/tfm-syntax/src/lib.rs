//! The first phase of the front end: `.tfm` source text to an [`ast::File`] with spans, plus syntax diagnostics.
//!
//! Architecture invariant: parsing never fails and never panics. [`parse`] returns the AST of
//! everything it could read together with the diagnostics for what it could not. When the file
//! as a whole does not parse, it is cut at the lines that start a top-level `model`, `block` or
//! `import`, and each piece is parsed alone, so an error in one item does not hide the others.
//! Within a broken piece, the line holding the error is blanked out and the piece parsed again
//! to find further errors (a piece with errors contributes no item to the AST).
//!
//! Diagnostic codes of this phase:
//! - `E0001` syntax error ("expected `}` or a statement, found `foo`");
//! - `E0002` a number literal out of range;
//! - `E0003` chained comparison (`a < b < c`);
//! - `E0004` positional argument after a named one;
//! - `E0005` nesting too deep to analyse.

#![forbid(unsafe_code)]

pub mod ast;
mod build;
pub mod dump;
mod errors;
mod grammar;
mod recover;

use tfm_diag::{Diagnostic, FileId, Span};

/// Parses one file. Never panics: returns whatever could be parsed plus the syntax errors found,
/// in source order.
pub fn parse(src: &str, file: FileId) -> (ast::File, Vec<Diagnostic>) {
    let span = Span::new(file, 0, src.len());
    let mut out = ast::File { doc: None, imports: vec![], items: vec![], span };
    let mut diags = Vec::new();
    if let Some(d) = errors::too_deep(src, file) {
        diags.push(d);
        return (out, diags);
    }
    match build::parse_piece(src, 0, src.len(), file) {
        Ok((piece, mut d)) => {
            merge(&mut out, piece);
            diags.append(&mut d);
        }
        Err(first) => {
            let pieces = recover::split_items(src);
            if pieces.len() <= 1 {
                diags.extend(recover::more_errors(src, 0, src.len(), file, first));
            } else {
                for (start, end) in pieces {
                    match build::parse_piece(src, start, end, file) {
                        Ok((piece, mut d)) => {
                            merge(&mut out, piece);
                            diags.append(&mut d);
                        }
                        Err(e) => diags.extend(recover::more_errors(src, start, end, file, e)),
                    }
                }
            }
        }
    }
    diags.sort_by_key(|d| d.primary_span().map(|s| (s.start, s.end)));
    (out, diags)
}

fn merge(out: &mut ast::File, piece: ast::File) {
    if out.doc.is_none() {
        out.doc = piece.doc;
    }
    out.imports.extend(piece.imports);
    out.items.extend(piece.items);
}

