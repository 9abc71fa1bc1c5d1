//! Error recovery: cuts a file into top-level pieces so each can be parsed on its own.
//!
//! A piece starts at a line whose first word is `model`, `block` or `import`, either outside
//! every brace or at column 0 (a missing `}` above must not swallow the next item), together
//! with the `///` doc comment lines right above it.

const STARTERS: &[&str] = &["model", "block", "import"];

/// Byte ranges `[start, end)` covering all of `src`, in order.
pub(crate) fn split_items(src: &str) -> Vec<(usize, usize)> {
    let bytes = src.as_bytes();
    let mut starts = vec![0usize];
    let mut depth = 0usize;
    let mut i = 0;
    let mut line_start = true;
    // Start of the run of `///` lines directly above the current line, if any.
    let mut doc_run: Option<usize> = None;
    while i < bytes.len() {
        if line_start {
            line_start = false;
            let line_begin = i;
            let mut j = i;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            let rest = &src[j..];
            if rest.starts_with("///") && !rest.starts_with("////") {
                doc_run.get_or_insert(line_begin);
            } else {
                let word_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let word = &rest[..word_len];
                if STARTERS.contains(&word) && (depth == 0 || j == line_begin) {
                    let start = doc_run.unwrap_or(line_begin);
                    if start > 0 {
                        starts.push(start);
                    }
                    depth = 0;
                }
                let blank = rest.starts_with('\n') || rest.starts_with("\r\n") || rest.is_empty();
                if !blank {
                    doc_run = None;
                }
            }
            i = j;
            continue;
        }
        match bytes[i] {
            b'\n' => line_start = true,
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'\n' {
                    line_start = true;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                if i < bytes.len() {
                    line_start = true;
                }
            }
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    starts.dedup();
    let mut out = vec![];
    for (k, s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(src.len());
        out.push((*s, e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_items;

    #[test]
    fn cuts_at_top_level_keywords_with_their_docs() {
        let src = "import std\n/// doc\nmodel a {\n  x: int\n}\nblock b {\n}\n";
        let pieces = split_items(src);
        let texts: Vec<&str> = pieces.iter().map(|(s, e)| &src[*s..*e]).collect();
        assert_eq!(texts, vec!["import std\n", "/// doc\nmodel a {\n  x: int\n}\n", "block b {\n}\n"]);
    }

    #[test]
    fn a_missing_brace_does_not_swallow_the_next_item() {
        let src = "model a {\n  x: int\nmodel b {\n}\n";
        let pieces = split_items(src);
        assert_eq!(pieces, vec![(0, 19), (19, src.len())]);
    }

    #[test]
    fn indented_keywords_inside_braces_and_words_in_strings_do_not_cut() {
        let src = "model a {\n  model\n  require x, \"a { b\"\n  // {\n}\n";
        assert_eq!(split_items(src).len(), 1);
    }
}
