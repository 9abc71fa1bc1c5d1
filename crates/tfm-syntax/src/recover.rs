//! Error recovery: cuts a file into top-level pieces so each can be parsed on its own.
//!
//! A piece starts at a line whose first word is `model`, `block` or `import`, either outside
//! every brace or at column 0 (a missing `}` above must not swallow the next item), together
//! with the `///` doc comment lines right above it.

use tfm_diag::{Diagnostic, FileId};

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

/// The most syntax errors reported for one piece.
const MAX_ERRORS_PER_PIECE: usize = 10;

/// Starting from the first syntax error of `src[start..end]`, finds further ones: the error's
/// line (with the doc comment above it) is blanked out and the piece parsed again, as long as
/// that line is a statement of its own (brackets balanced, not a continuation of the line above)
/// and each new error lies on a later line. Returns all errors found, `first` included.
pub(crate) fn more_errors(src: &str, start: usize, end: usize, file: FileId, first: Diagnostic) -> Vec<Diagnostic> {
    let mut out = vec![];
    let mut buf = src.to_string();
    let mut next_err = Some(first);
    while let Some(err) = next_err.take() {
        let pos = err.primary_span().map(|s| s.start as usize);
        out.push(err);
        let Some(pos) = pos else { break };
        if out.len() >= MAX_ERRORS_PER_PIECE {
            break;
        }
        let Some((line_start, line_end)) = own_line(&buf, start, pos) else { break };
        let blank_from = doc_lines_above(&buf, start, line_start);
        blank(&mut buf, blank_from, line_end);
        match crate::build::parse_piece(&buf, start, end, file) {
            Ok((_, diags)) => {
                out.extend(diags);
                break;
            }
            Err(next) => match next.primary_span() {
                Some(s) if s.start as usize > line_end => next_err = Some(next),
                _ => break,
            },
        }
    }
    out
}

/// The line holding `pos` as `(start, end)` (end at its line break), when it stands alone as a
/// statement: its brackets balance and the line before it is not unfinished.
fn own_line(buf: &str, piece_start: usize, pos: usize) -> Option<(usize, usize)> {
    let pos = pos.min(buf.len());
    let line_start = buf.get(..pos)?.rfind('\n').map(|i| i + 1).unwrap_or(0).max(piece_start);
    let line_end = buf.get(pos..)?.find('\n').map(|i| pos + i).unwrap_or(buf.len());
    // An error at the first token of a line belongs to something unfinished above it: blank
    // the line above when it opened a `(` or `[` it never closed (`input x: f32[B, d`).
    if buf.get(line_start..pos)?.trim().is_empty() {
        let above = buf.get(piece_start..line_start)?.trim_end();
        let prev_start = above.rfind('\n').map(|i| i + 1).unwrap_or(0).max(piece_start);
        let prev = strip_comment(buf.get(prev_start..above.len())?);
        let count = |c: char| prev.chars().filter(|x| *x == c).count() as i64;
        let open = count('(') + count('[') - count(')') - count(']');
        if open > 0 && count('{') == 0 && count('}') == 0 && !unfinished_before(buf, piece_start, prev_start) {
            return Some((prev_start, above.len()));
        }
        return None;
    }
    let line = buf.get(line_start..line_end)?;
    let code = strip_comment(line);
    let mut depth = 0i64;
    for c in code.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    if depth != 0 || code.trim().is_empty() {
        return None;
    }
    if unfinished_before(buf, piece_start, line_start) {
        return None;
    }
    Some((line_start, line_end))
}

/// Whether the line before `line_start` ends unfinished (an open bracket, a comma, an operator),
/// so that the line at `line_start` continues it.
fn unfinished_before(buf: &str, piece_start: usize, line_start: usize) -> bool {
    let before = buf.get(piece_start..line_start).unwrap_or("");
    let prev = before.trim_end().rsplit('\n').next().map(strip_comment).unwrap_or("");
    let prev = prev.trim_end();
    let unfinished = ["(", "[", ",", "+", "-", "*", "/", "%", "@", "=", "&&", "||", "<", ">", "then", "else"];
    unfinished.iter().any(|u| prev.ends_with(u))
}

/// A line without its `//` comment (strings respected).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_str = !in_str,
            b'\\' if in_str => i += 1,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The start of the run of `///` lines directly above `line_start` (or `line_start` itself).
fn doc_lines_above(buf: &str, piece_start: usize, line_start: usize) -> usize {
    let mut start = line_start;
    while start > piece_start {
        let prev_start = buf[..start - 1].rfind('\n').map(|i| i + 1).unwrap_or(0).max(piece_start);
        if buf[prev_start..start].trim_start().starts_with("///") {
            start = prev_start;
        } else {
            break;
        }
    }
    start
}

/// Replaces `buf[from..to]` by spaces of the same byte length (line breaks kept).
fn blank(buf: &mut String, from: usize, to: usize) {
    let (Some(head), Some(mid), Some(tail)) = (buf.get(..from), buf.get(from..to), buf.get(to..)) else { return };
    let mid: String = mid.chars().map(|c| if c == '\n' { "\n".to_string() } else { " ".repeat(c.len_utf8()) }).collect();
    *buf = format!("{head}{mid}{tail}");
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
