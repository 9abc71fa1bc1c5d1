//! The parser never panics, whatever the input, and every span it reports lies inside the input.

use proptest::prelude::*;
use tfm_diag::FileId;
use tfm_syntax::ast::*;
use tfm_syntax::parse;

fn check_span(s: tfm_diag::Span, len: usize) {
    assert!(s.start <= s.end && (s.end as usize) <= len, "span {s:?} outside input of {len} bytes");
}

fn walk_expr(e: &Expr, len: usize) {
    check_span(e.span, len);
    match &e.kind {
        ExprKind::Binary { lhs, rhs, .. } => {
            walk_expr(lhs, len);
            walk_expr(rhs, len);
        }
        ExprKind::Unary { expr, .. } | ExprKind::Transpose(expr) => walk_expr(expr, len),
        ExprKind::List(v) => v.iter().for_each(|x| walk_expr(x, len)),
        ExprKind::Call(c) => c.args.iter().for_each(|a| walk_expr(&a.value, len)),
        ExprKind::If { cond, then, otherwise } => {
            walk_expr(cond, len);
            walk_expr(then, len);
            walk_expr(otherwise, len);
        }
        _ => {}
    }
}

fn check_all(src: &str) {
    let (file, diags) = parse(src, FileId(0));
    for d in &diags {
        for l in &d.labels {
            check_span(l.span, src.len());
        }
    }
    for item in &file.items {
        check_span(item.span(), src.len());
        if let Item::Model(d) | Item::Block(d) = item {
            for s in &d.body {
                check_span(s.span(), src.len());
                if let Stmt::Let { value, .. } = s {
                    walk_expr(value, src.len());
                }
            }
        }
    }
}

/// Fragments of the language, so random inputs get deep into the grammar.
const PIECES: &[&str] = &[
    "model ", "block ", "import ", "std", "\"a.tfm\"", " as ", "m", "x", "{", "}", "(", ")", "[", "]", "\n", ";",
    ",", ":", "=", "==", "<", "+", "-", "*", "**", "/", "%", "@", "^T", "!", "&&", "||", "if ", " then ", " else ",
    "int", "float", "bool", "f32", "input ", "output ", "layer ", "repeat ", " shared ", "require ", "expect ",
    "params", " given ", "objective ", " where ", "1", "2.5", "1e-5", "99999999999999999999", "\"msg\"", "\"open",
    "/// doc\n", "//! file\n", "// c\n", " ", "\t", "\r\n", "é", "\\", ".", "_",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_soup_never_panics(idx in proptest::collection::vec(0..PIECES.len(), 0..60)) {
        let src: String = idx.iter().map(|i| PIECES[*i]).collect();
        check_all(&src);
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        check_all(&src);
    }

    /// Cutting a valid file anywhere gives diagnostics, not a panic.
    #[test]
    fn truncated_valid_files_never_panic(cut in 0usize..400) {
        let src = "model m {\n  d: int = 4 where d > 0 \"pos\"\n  input x: f32[B, d]\n  layer l = repeat 2 shared { f(d, a: [1, 2]) }\n  a, b = split(l(x)^T @ x, 2)\n  output y = if d > 1 then a else -b ** 2\n  expect y: f32[B, d] given B = 2\n}\nmodel v = m { d = 8 }\n";
        let cut = cut.min(src.len());
        check_all(&src[..cut]);
    }
}

#[test]
fn crlf_line_endings_parse_like_lf() {
    let lf = "/// doc\nmodel m {\n    d: int = 4\n    output y = d\n}\n";
    let crlf = lf.replace('\n', "\r\n");
    let (a, da) = parse(lf, FileId(0));
    let (b, db) = parse(&crlf, FileId(0));
    assert!(da.is_empty() && db.is_empty(), "{da:?} {db:?}");
    assert_eq!(tfm_syntax::dump::dump(&a).lines().count(), tfm_syntax::dump::dump(&b).lines().count());
    match &b.items[0] {
        Item::Model(d) => assert_eq!(d.doc.as_deref(), Some("doc")),
        other => panic!("expected a model, got {other:?}"),
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let src = format!("model m {{\n  x = {}1{}\n}}\n", "(".repeat(100_000), ")".repeat(100_000));
    let (_, diags) = parse(&src, FileId(0));
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, "E0005");
    let src = format!("model m {{\n  x = {}1\n}}\n", "if a then ".repeat(5_000));
    let (_, diags) = parse(&src, FileId(0));
    assert!(!diags.is_empty());
    let src = format!("model m {{\n  x = 1{}\n}}\n", " ** 2".repeat(5_000));
    let (_, diags) = parse(&src, FileId(0));
    assert!(diags.iter().any(|d| d.code == "E0005"));
}

#[test]
fn spans_and_file_ids_point_into_the_source() {
    let src = "model m {\n    heads: int = 12\n}\n";
    let (file, diags) = parse(src, FileId(3));
    assert!(diags.is_empty());
    let Item::Model(d) = &file.items[0] else { panic!("expected a model") };
    assert_eq!(d.name.span.file, FileId(3));
    assert_eq!(&src[d.name.span.range()], "m");
    let Stmt::Param { name, default: Some(def), .. } = &d.body[0] else { panic!("expected a parameter") };
    assert_eq!(&src[name.span.range()], "heads");
    assert_eq!(&src[def.span.range()], "12");
    assert_eq!(&src[d.body[0].span().range()], "heads: int = 12");
}
