//! Syntax errors in user terms: pest's expected-rule sets become "expected `}` or a statement,
//! found `foo`", with special messages for unterminated strings, keywords used as names and
//! unclosed braces.

use pest::error::{Error, ErrorVariant, InputLocation};
use tfm_diag::{Diagnostic, FileId, Span};

use crate::grammar::Rule;

const KEYWORDS: &[&str] = &[
    "import", "as", "model", "block", "input", "output", "layer", "repeat", "shared", "objective", "expect",
    "require", "where", "true", "false", "int", "float", "bool", "if", "then", "else",
];

/// Deepest bracket nesting accepted before parsing (keeps every recursion bounded).
const MAX_NESTING: usize = 128;

/// What an expected rule is called in a message, or `None` for rules that only continue
/// something already complete (operators, call arguments) and are left out when something
/// else is expected.
fn describe(r: Rule) -> (&'static str, bool) {
    // (name, is_continuation)
    match r {
        Rule::lbrace => ("`{`", false),
        Rule::rbrace => ("`}`", false),
        Rule::lparen => ("`(`", true),
        Rule::rparen => ("`)`", false),
        Rule::lbracket => ("`[`", false),
        Rule::rbracket => ("`]`", false),
        Rule::comma => ("`,`", false),
        Rule::colon => ("`:`", false),
        Rule::semi => ("`;`", true),
        Rule::assign => ("`=`", false),
        Rule::pipe => ("`|`", true),
        Rule::quote => ("a string", false),
        Rule::nl => ("end of line", false),
        Rule::ident | Rule::path | Rule::callee | Rule::choice => ("a name", false),
        Rule::kw_import => ("`import`", false),
        Rule::kw_as => ("`as`", true),
        Rule::kw_model => ("`model`", false),
        Rule::kw_block => ("`block`", false),
        Rule::kw_input => ("`input`", false),
        Rule::kw_output => ("`output`", false),
        Rule::kw_layer => ("`layer`", false),
        Rule::kw_repeat => ("`repeat`", false),
        Rule::kw_shared => ("`shared`", true),
        Rule::kw_objective => ("`objective`", false),
        Rule::kw_expect => ("`expect`", false),
        Rule::kw_require => ("`require`", false),
        Rule::kw_where => ("`where`", true),
        Rule::kw_int | Rule::kw_float | Rule::kw_bool | Rule::type_expr => ("a type (`int`, `float`, `bool` or `a | b`)", false),
        Rule::kw_if => ("`if`", false),
        Rule::kw_then => ("`then`", false),
        Rule::kw_else => ("`else`", false),
        Rule::kw_std => ("`std`", false),
        Rule::kw_params => ("`params`", false),
        Rule::kw_given => ("`given`", true),
        Rule::doc | Rule::doc_line => ("a doc comment", true),
        Rule::file_doc | Rule::inner_doc_line => ("a file doc comment", true),
        Rule::string | Rule::string_body => ("a string", false),
        Rule::int | Rule::float => ("a number", false),
        Rule::expr
        | Rule::paren
        | Rule::list
        | Rule::if_expr
        | Rule::call
        | Rule::kw_true
        | Rule::kw_false
        | Rule::op_neg
        | Rule::op_not => ("an expression", false),
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_pow
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_rem
        | Rule::op_matmul => ("an operator", true),
        Rule::op_transpose => ("`^T`", true),
        Rule::args => ("`(`", true),
        Rule::arg | Rule::arg_name => ("an argument", false),
        Rule::tensor_type | Rule::dtype => ("a tensor type such as `f32[B, T]`", false),
        Rule::constraint => ("`where`", true),
        Rule::stmt
        | Rule::param_stmt
        | Rule::input_stmt
        | Rule::layer_stmt
        | Rule::let_stmt
        | Rule::output_stmt
        | Rule::require_stmt
        | Rule::expect_stmt
        | Rule::objective_stmt => ("a statement", false),
        Rule::repeat => ("`repeat`", false),
        Rule::given | Rule::given_item => ("`given`", true),
        Rule::expect_type | Rule::expect_params => ("`params` or `name: type`", false),
        Rule::override_item | Rule::overrides => ("an override `name = value`", false),
        Rule::body => ("`{`", false),
        Rule::item | Rule::model | Rule::block | Rule::variant => ("`model` or `block`", false),
        Rule::import => ("`import`", false),
        Rule::EOI => ("end of file", false),
        _ => ("something else", false),
    }
}

/// "a, b or c"
fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// The token at `pos` as shown to users, and its byte length.
fn found(src: &str, pos: usize) -> (String, usize) {
    let rest = src.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else { return ("end of file".into(), 0) };
    if c == '\n' || rest.starts_with("\r\n") {
        return ("end of line".into(), 0);
    }
    if c.is_ascii_alphabetic() || c == '_' {
        let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let len = word.len();
        if KEYWORDS.contains(&word.as_str()) {
            return (format!("keyword `{word}`"), len);
        }
        return (format!("`{word}`"), len);
    }
    if c.is_ascii_digit() {
        let num: String =
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
        let len = num.len();
        return (format!("`{num}`"), len);
    }
    if c == '"' {
        let len = rest[1..].find(['"', '\n']).map(|i| i + 2).unwrap_or(1);
        return ("a string".into(), len.min(rest.len()));
    }
    if rest.starts_with("///") {
        return ("a doc comment".into(), 3);
    }
    if rest.starts_with("//!") {
        return ("a file doc comment".into(), 3);
    }
    for op in ["==", "!=", "<=", ">=", "&&", "||", "**", "^T"] {
        if rest.starts_with(op) {
            return (format!("`{op}`"), 2);
        }
    }
    (format!("`{c}`"), c.len_utf8())
}

/// If `pos` is inside a string that opened earlier on the same line, where it opened.
fn open_string_start(src: &str, pos: usize) -> Option<usize> {
    let line_start = src.get(..pos)?.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let bytes = src.as_bytes();
    let mut i = line_start;
    let mut open = None;
    while i < pos {
        match (bytes[i], open) {
            (b'"', None) => open = Some(i),
            (b'"', Some(_)) => open = None,
            (b'\\', Some(_)) => i += 1,
            (b'/', None) if bytes.get(i + 1) == Some(&b'/') => return None,
            _ => {}
        }
        i += 1;
    }
    open
}

/// The last `open` bracket in `src[from..pos]` not closed before `pos` (strings and comments
/// skipped).
fn unclosed(src: &str, from: usize, pos: usize, open: u8, close: u8) -> Option<usize> {
    let mut stack = vec![];
    for (i, c) in code_bytes(src.as_bytes(), from).take_while(|&(i, _)| i < pos) {
        if c == open {
            stack.push(i);
        } else if c == close {
            stack.pop();
        }
    }
    stack.pop()
}

/// The bytes of `bytes[from..]` that are code, with their offsets: string literals (to their
/// closing quote or the end of the line) and `//` comments are skipped.
fn code_bytes(bytes: &[u8], from: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut i = from;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let at = i;
            i += 1;
            match bytes[at] {
                b'"' => {
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'/' if bytes.get(at + 1) == Some(&b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                c => return Some((at, c)),
            }
        }
        None
    })
}

/// Converts a pest error on the piece `src[base..]` into a diagnostic with spans in `src`.
pub(crate) fn from_pest(err: &Error<Rule>, src: &str, base: usize, file: FileId) -> Diagnostic {
    let rel = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let pos = (base + rel).min(src.len());
    let (found_text, found_len) = found(src, pos);
    let at = Span::new(file, pos, pos + found_len);

    if let Some(open) = open_string_start(src, pos) {
        let rest = src.get(pos..).unwrap_or("");
        if rest.starts_with('\\') {
            let esc: String = rest.chars().take(2).collect();
            return Diagnostic::error("E0001", format!("unknown escape `{esc}` in string"))
                .at(Span::new(file, pos, pos + esc.len()), "unknown escape")
                .hint("the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`");
        }
        if rest.is_empty() || rest.starts_with('\n') || rest.starts_with("\r\n") {
            return Diagnostic::error("E0001", "unterminated string")
                .at(Span::new(file, open, pos), "this string is never closed")
                .hint("close the string with `\"` before the end of the line");
        }
    }

    let positives: Vec<Rule> = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            return Diagnostic::error("E0001", format!("syntax error: {message}")).at(at, "here");
        }
    };

    if let Some(d) = dangling_doc(src, pos, file) {
        return d;
    }
    let names_expected =
        positives.iter().any(|r| matches!(r, Rule::ident | Rule::path | Rule::choice | Rule::callee));
    if names_expected && (found_text == "`:`" || found_text == "`=`") {
        if let Some((word, start)) = word_before(src, pos) {
            if KEYWORDS.contains(&word) {
                return Diagnostic::error("E0001", format!("expected a name, found keyword `{word}`"))
                    .at(Span::new(file, start, start + word.len()), "a keyword cannot be used as a name")
                    .hint(format!("`{word}` is a keyword: choose another name, for example `{word}_`"));
            }
        }
    }

    let keyword_found = found_text.starts_with("keyword");
    if keyword_found && positives.iter().any(|r| matches!(r, Rule::ident | Rule::path | Rule::choice | Rule::callee)) {
        let word = found_text.trim_start_matches("keyword ").to_string();
        let bare = word.trim_matches('`').to_string();
        return Diagnostic::error("E0001", format!("expected a name, found keyword {word}"))
            .at(at, "a keyword cannot be used as a name")
            .hint(format!("choose another name, for example `{bare}_`"));
    }

    let mut main: Vec<&str> = vec![];
    let mut cont: Vec<&str> = vec![];
    for r in &positives {
        let (name, is_cont) = describe(*r);
        let list = if is_cont { &mut cont } else { &mut main };
        if !list.contains(&name) {
            list.push(name);
        }
    }
    let mut expected = if main.is_empty() { cont } else { main };
    // A statement can always end at `;` too; naming both is noise.
    if expected.contains(&"end of line") {
        expected.retain(|e| *e != "`;`");
    }
    // "`}` or a statement" reads better than the reverse.
    expected.sort_by_key(|e| match *e {
        "`}`" | "`)`" | "`]`" => 0,
        "end of line" => 1,
        _ => 2,
    });
    let expected_text = if expected.is_empty() { "something else".to_string() } else { join_or(&expected) };
    let mut d = Diagnostic::error("E0001", format!("expected {expected_text}, found {found_text}"))
        .at(at, format!("expected {expected_text}"));

    for (open, close) in [(b'{', b'}'), (b'[', b']'), (b'(', b')')] {
        let closer = format!("`{}`", close as char);
        if expected.contains(&closer.as_str()) && (found_len == 0 || keyword_found) {
            if let Some(at) = unclosed(src, base, pos, open, close) {
                d = d
                    .with(Span::new(file, at, at + 1), format!("this `{}` is not closed", open as char))
                    .hint(format!("add the missing {closer}"));
                break;
            }
        }
    }
    if let Some(kw) = misspelt_keyword(src, pos) {
        d = d.hint(format!("did you mean `{kw}`?"));
    }
    if found_text == "a file doc comment" {
        d = d.hint("`//!` documents the whole file and belongs at its top; use `///` before a declaration");
    }
    if found_text == "a doc comment" {
        d = d.hint("a `///` doc comment must stand on its own line(s) right before what it documents");
    }
    d
}

/// The identifier that ends right before `pos` (spaces and tabs skipped), with its start.
fn word_before(src: &str, pos: usize) -> Option<(&str, usize)> {
    let before = src.get(..pos)?.trim_end_matches([' ', '\t']);
    let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(|i| i + 1).unwrap_or(0);
    let word = &before[start..];
    (!word.is_empty()).then_some((word, start))
}

/// When the first word of the line holding `pos` (and before it) looks like a misspelt statement
/// or item keyword, that keyword.
fn misspelt_keyword(src: &str, pos: usize) -> Option<&'static str> {
    let line_start = src.get(..pos)?.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = src.get(line_start..pos)?.trim_start();
    let word_len = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(line.len());
    if word_len == 0 || word_len == line.len() {
        return None;
    }
    let word = &line[..word_len];
    if KEYWORDS.contains(&word) {
        return None;
    }
    const STARTERS: &[&str] =
        &["input", "output", "layer", "objective", "expect", "require", "model", "block", "import", "repeat"];
    tfm_diag::did_you_mean(word, STARTERS.iter().copied())
}

/// A `///` comment with nothing after it to document (only `}` or the end of the file follows).
fn dangling_doc(src: &str, pos: usize, file: FileId) -> Option<Diagnostic> {
    let rest = src.get(pos..)?;
    if !(rest.is_empty() || rest.starts_with('}')) {
        return None;
    }
    let before = src.get(..pos)?.trim_end();
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = &before[line_start..];
    let indent = line.len() - line.trim_start().len();
    if !line.trim_start().starts_with("///") {
        return None;
    }
    let start = line_start + indent;
    Some(
        Diagnostic::error("E0001", "doc comment documents nothing")
            .at(Span::new(file, start, before.len()), "nothing follows this doc comment")
            .hint("put it right before a declaration or statement, or make it a plain `//` comment"),
    )
}

/// A diagnostic when brackets nest deeper than the parser accepts, checked before parsing.
pub(crate) fn too_deep(src: &str, file: FileId) -> Option<Diagnostic> {
    let mut depth = 0usize;
    for (i, c) in code_bytes(src.as_bytes(), 0) {
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::error("E0005", "brackets nest too deeply")
                            .at(Span::new(file, i, i + 1), format!("more than {MAX_NESTING} levels deep here"))
                            .hint("split the expression into named steps"),
                    );
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A diagnostic for an expression with too many nested operators.
pub(crate) fn nesting(span: Span) -> Diagnostic {
    Diagnostic::error("E0005", "expression nests too deeply")
        .at(span, "too many nested operators or conditionals")
        .hint("split the expression into named steps")
}
