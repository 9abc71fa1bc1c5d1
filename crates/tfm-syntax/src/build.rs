//! Turns pest's parse tree into the AST: literals converted, operators ordered by a Pratt parser,
//! doc comments attached, and the checks the grammar cannot express (number ranges, chained
//! comparisons, argument order) reported as diagnostics.

use std::cell::{Cell, RefCell};
use std::sync::LazyLock;

use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use tfm_diag::{Diagnostic, FileId, Span};

use crate::ast::*;
use crate::errors;
use crate::grammar::{Rule, TfmParser};

/// How deeply expressions may nest before the parser gives up on them (keeps recursion bounded).
const MAX_DEPTH: usize = 200;

static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_rem, Assoc::Left)
            | Op::infix(Rule::op_matmul, Assoc::Left))
        .op(Op::prefix(Rule::op_neg) | Op::prefix(Rule::op_not))
        .op(Op::infix(Rule::op_pow, Assoc::Right))
        .op(Op::postfix(Rule::op_transpose))
});

/// Parses `src[start..end]` as a file and builds its AST with spans relative to all of `src`.
/// `Err` is the syntax error when the piece does not match the grammar.
pub(crate) fn parse_piece(
    src: &str,
    start: usize,
    end: usize,
    file: FileId,
) -> Result<(File, Vec<Diagnostic>), Diagnostic> {
    let text = src.get(start..end).unwrap_or("");
    let mut pairs = TfmParser::parse(Rule::file, text)
        .map_err(|e| errors::from_pest(&e, src, start, file))?;
    let builder = Builder { file, base: start, diags: RefCell::new(vec![]), depth: Cell::new(0) };
    let span = Span::new(file, start, end);
    let mut out = File { doc: None, imports: vec![], items: vec![], span };
    if let Some(root) = pairs.next() {
        for p in root.into_inner() {
            match p.as_rule() {
                Rule::file_doc => out.doc = Some(builder.doc_text(p)),
                Rule::import => {
                    if let Some(i) = builder.import(p) {
                        out.imports.push(i)
                    }
                }
                Rule::item => {
                    let sp = builder.span(&p);
                    match builder.item(p) {
                        Some(i) => out.items.push(i),
                        None => builder.internal(sp),
                    }
                }
                _ => {}
            }
        }
    }
    Ok((out, builder.diags.into_inner()))
}

/// Rules that only carry punctuation or line breaks; skipped when walking a rule's children.
fn is_punct(r: Rule) -> bool {
    matches!(
        r,
        Rule::lbrace
            | Rule::rbrace
            | Rule::lparen
            | Rule::rparen
            | Rule::lbracket
            | Rule::rbracket
            | Rule::comma
            | Rule::colon
            | Rule::semi
            | Rule::assign
            | Rule::pipe
            | Rule::quote
            | Rule::nl
            | Rule::EOI
    )
}

fn kids(p: Pair<'_, Rule>) -> Vec<Pair<'_, Rule>> {
    p.into_inner().filter(|c| !is_punct(c.as_rule())).collect()
}

struct Builder {
    file: FileId,
    base: usize,
    diags: RefCell<Vec<Diagnostic>>,
    depth: Cell<usize>,
}

/// The result of building an operand: the expression and whether it is an unparenthesised
/// comparison (for rejecting `a < b < c`).
type Operand = Option<(Expr, bool)>;

impl Builder {
    /// The pair's span, without the spaces or comment pest may leave at its end when the rule
    /// ends with an optional part that was absent.
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        let end = s.start() + trimmed_len(p.as_str());
        Span::new(self.file, self.base + s.start(), self.base + end)
    }

    fn push(&self, d: Diagnostic) {
        self.diags.borrow_mut().push(d);
    }

    /// The parse tree did not have the shape the grammar promises: a bug, reported, not a panic.
    fn internal(&self, span: Span) {
        self.push(
            Diagnostic::error("E0001", "internal error: the parser could not read this item")
                .at(span, "not understood")
                .hint("please report this input as a bug in tfm"),
        );
    }

    fn ident(&self, p: Pair<'_, Rule>) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    fn path(&self, p: Pair<'_, Rule>) -> Path {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::path => Path { segments: p.into_inner().map(|i| self.ident(i)).collect(), span },
            // `int` / `float` used as conversion functions, or a lone identifier.
            _ => Path { segments: vec![Ident { name: p.as_str().to_string(), span }], span },
        }
    }

    fn doc_text(&self, p: Pair<'_, Rule>) -> String {
        let mut lines = Vec::new();
        for line in p.into_inner() {
            if let Some(text) = line.into_inner().next() {
                let t = text.as_str().trim_end_matches('\r');
                lines.push(t.strip_prefix(' ').unwrap_or(t).to_string());
            }
        }
        lines.join("\n")
    }

    fn string(&self, p: Pair<'_, Rule>) -> String {
        let body = p.into_inner().find(|c| c.as_rule() == Rule::string_body);
        let raw = body.map(|b| b.as_str()).unwrap_or("");
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn import(&self, p: Pair<'_, Rule>) -> Option<Import> {
        let span = self.span(&p);
        let mut it = kids(p).into_iter().filter(|c| c.as_rule() != Rule::kw_import && c.as_rule() != Rule::kw_as);
        let target = it.next()?;
        let target = match target.as_rule() {
            Rule::kw_std => ImportTarget::Std,
            _ => ImportTarget::Path(self.string(target)),
        };
        let alias = it.next().map(|a| self.ident(a));
        Some(Import { target, alias, span })
    }

    fn item(&self, p: Pair<'_, Rule>) -> Option<Item> {
        let mut doc = None;
        let mut decl = None;
        for c in kids(p) {
            match c.as_rule() {
                Rule::doc => doc = Some(self.doc_text(c)),
                _ => decl = Some(c),
            }
        }
        let decl = decl?;
        let span = self.span(&decl);
        let rule = decl.as_rule();
        let mut parts = kids(decl).into_iter().filter(|c| !matches!(c.as_rule(), Rule::kw_model | Rule::kw_block));
        let name = self.ident(parts.next()?);
        match rule {
            Rule::variant => {
                let base = self.path(parts.next()?);
                let mut overrides = vec![];
                for o in kids(parts.next()?) {
                    let mut oi = kids(o).into_iter();
                    let n = self.ident(oi.next()?);
                    let v = self.expr(oi.next()?)?;
                    overrides.push((n, v));
                }
                Some(Item::Variant(Variant { doc, name, base, overrides, span }))
            }
            Rule::model | Rule::block => {
                let body = self.body(parts.next()?);
                let d = Decl { doc, name, body, span };
                Some(if rule == Rule::model { Item::Model(d) } else { Item::Block(d) })
            }
            _ => None,
        }
    }

    fn body(&self, p: Pair<'_, Rule>) -> Vec<Stmt> {
        let mut out = vec![];
        for s in kids(p) {
            let sp = self.span(&s);
            match self.stmt(s) {
                Some(st) => out.push(st),
                None => {
                    // A depth or literal problem already has its own diagnostic.
                    if self.diags.borrow().is_empty() {
                        self.internal(sp)
                    }
                }
            }
        }
        out
    }

    fn stmt(&self, p: Pair<'_, Rule>) -> Option<Stmt> {
        let mut doc = None;
        let mut inner = None;
        for c in kids(p) {
            match c.as_rule() {
                Rule::doc => doc = Some(self.doc_text(c)),
                _ => inner = Some(c),
            }
        }
        let s = inner?;
        let span = self.span(&s);
        let rule = s.as_rule();
        let mut k = kids(s).into_iter().peekable();
        match rule {
            Rule::param_stmt => {
                let name = self.ident(k.next()?);
                let ty = self.type_expr(k.next()?)?;
                let mut default = None;
                let mut constraint = None;
                for c in k {
                    match c.as_rule() {
                        Rule::expr => default = Some(self.expr(c)?),
                        Rule::constraint => constraint = Some(self.constraint(c)?),
                        _ => {}
                    }
                }
                Some(Stmt::Param { doc, name, ty, default, constraint, span })
            }
            Rule::input_stmt => {
                k.next()?; // `input`
                let name = self.ident(k.next()?);
                let ty = self.tensor_type(k.next()?)?;
                let constraint = match k.next() {
                    Some(c) => Some(self.constraint(c)?),
                    None => None,
                };
                Some(Stmt::Input { doc, name, ty, constraint, span })
            }
            Rule::layer_stmt => {
                k.next()?; // `layer`
                let name = self.ident(k.next()?);
                let init = k.next()?;
                let init = match init.as_rule() {
                    Rule::repeat => {
                        let rspan = self.span(&init);
                        let mut r = kids(init).into_iter().filter(|c| c.as_rule() != Rule::kw_repeat);
                        let count = self.expr(r.next()?)?;
                        let mut next = r.next()?;
                        let shared = next.as_rule() == Rule::kw_shared;
                        if shared {
                            next = r.next()?;
                        }
                        LayerInit::Repeat { count, shared, body: self.call(next)?, span: rspan }
                    }
                    _ => LayerInit::Call(self.call(init)?),
                };
                Some(Stmt::Layer { doc, name, init, span })
            }
            Rule::let_stmt => {
                let mut names = vec![];
                let mut value = None;
                for c in k {
                    match c.as_rule() {
                        Rule::ident => names.push(self.ident(c)),
                        Rule::expr => value = Some(self.expr(c)?),
                        _ => {}
                    }
                }
                Some(Stmt::Let { names, value: value?, span })
            }
            Rule::output_stmt => {
                k.next()?; // `output`
                let name = self.ident(k.next()?);
                let value = match k.next() {
                    Some(e) => Some(self.expr(e)?),
                    None => None,
                };
                Some(Stmt::Output { doc, name, value, span })
            }
            Rule::require_stmt => {
                k.next()?; // `require`
                let cond = self.expr(k.next()?)?;
                let message = k.next().map(|m| self.string(m));
                Some(Stmt::Require { cond, message, span })
            }
            Rule::expect_stmt => {
                k.next()?; // `expect`
                let e = k.next()?;
                let kind = match e.as_rule() {
                    Rule::expect_params => {
                        let mut ek = kids(e).into_iter().filter(|c| c.as_rule() != Rule::kw_params);
                        let op = binop(ek.next()?.as_rule())?;
                        ExpectKind::Params { op, value: self.expr(ek.next()?)? }
                    }
                    _ => {
                        let mut ek = kids(e).into_iter();
                        let name = self.ident(ek.next()?);
                        let ty = self.tensor_type(ek.next()?)?;
                        let mut given = vec![];
                        if let Some(g) = ek.next() {
                            for gi in kids(g).into_iter().filter(|c| c.as_rule() == Rule::given_item) {
                                let mut gk = kids(gi).into_iter();
                                let n = self.ident(gk.next()?);
                                given.push((n, self.expr(gk.next()?)?));
                            }
                        }
                        ExpectKind::Type { name, ty, given }
                    }
                };
                Some(Stmt::Expect { kind, span })
            }
            Rule::objective_stmt => {
                k.next()?; // `objective`
                let kind = self.ident(k.next()?);
                let args = self.args(k.next()?)?;
                Some(Stmt::Objective { kind, args, span })
            }
            _ => None,
        }
    }

    fn type_expr(&self, p: Pair<'_, Rule>) -> Option<TypeExpr> {
        let c = p.into_inner().next()?;
        let span = self.span(&c);
        Some(match c.as_rule() {
            Rule::kw_int => TypeExpr::Int(span),
            Rule::kw_float => TypeExpr::Float(span),
            Rule::kw_bool => TypeExpr::Bool(span),
            _ => TypeExpr::Choice(kids(c).into_iter().map(|i| self.ident(i)).collect()),
        })
    }

    fn tensor_type(&self, p: Pair<'_, Rule>) -> Option<TensorTypeExpr> {
        let span = self.span(&p);
        let mut k = kids(p).into_iter();
        let dtype = self.ident(k.next()?.into_inner().next()?);
        let mut dims = vec![];
        for d in k {
            dims.push(self.expr(d)?);
        }
        Some(TensorTypeExpr { dtype, dims, span })
    }

    fn constraint(&self, p: Pair<'_, Rule>) -> Option<Constraint> {
        let span = self.span(&p);
        let mut k = kids(p).into_iter().filter(|c| c.as_rule() != Rule::kw_where);
        let cond = self.expr(k.next()?)?;
        let message = k.next().map(|m| self.string(m));
        Some(Constraint { cond, message, span })
    }

    fn call(&self, p: Pair<'_, Rule>) -> Option<Call> {
        let span = self.span(&p);
        let mut k = kids(p).into_iter();
        let callee_pair = k.next()?.into_inner().next()?;
        let callee = self.path(callee_pair);
        let args = self.args(k.next()?)?;
        Some(Call { callee, args, span })
    }

    fn args(&self, p: Pair<'_, Rule>) -> Option<Vec<Arg>> {
        let mut out: Vec<Arg> = vec![];
        let mut first_named: Option<Span> = None;
        for a in kids(p) {
            let span = self.span(&a);
            let mut name = None;
            let mut value = None;
            for c in kids(a) {
                match c.as_rule() {
                    Rule::arg_name => name = kids(c).into_iter().next().map(|i| self.ident(i)),
                    _ => value = Some(self.expr(c)?),
                }
            }
            match (&name, first_named) {
                (Some(_), None) => first_named = Some(span),
                (None, Some(named)) => self.push(
                    Diagnostic::error("E0004", "positional argument after a named argument")
                        .at(span, "positional argument")
                        .with(named, "named arguments start here")
                        .hint("put positional arguments first, or give this one a name (`name: value`)"),
                ),
                _ => {}
            }
            out.push(Arg { name, value: value?, span });
        }
        Some(out)
    }

    /// Builds an `expr` pair.
    fn expr(&self, p: Pair<'_, Rule>) -> Option<Expr> {
        self.operand_expr(p).map(|(e, _)| e)
    }

    fn operand_expr(&self, p: Pair<'_, Rule>) -> Operand {
        let span = self.span(&p);
        let depth = self.depth.get();
        if depth >= MAX_DEPTH || too_many_unary(&p) {
            if depth <= MAX_DEPTH {
                self.push(errors::nesting(span));
                self.depth.set(MAX_DEPTH + 1);
            }
            return None;
        }
        self.depth.set(depth + 1);
        let r = PRATT
            .map_primary(|prim| self.primary(prim))
            .map_prefix(|op, rhs| {
                let (e, _) = rhs?;
                let uop = if op.as_rule() == Rule::op_neg { UnOp::Neg } else { UnOp::Not };
                let span = self.span(&op).to(e.span);
                Some((Expr { kind: ExprKind::Unary { op: uop, expr: Box::new(e) }, span }, false))
            })
            .map_postfix(|lhs, op| {
                let (e, _) = lhs?;
                let span = e.span.to(self.span(&op));
                Some((Expr { kind: ExprKind::Transpose(Box::new(e)), span }, false))
            })
            .map_infix(|lhs, op, rhs| {
                let (l, lcmp) = lhs?;
                let (r, rcmp) = rhs?;
                let bop = binop(op.as_rule())?;
                let cmp = bop.is_comparison();
                if cmp && (lcmp || rcmp) {
                    let inner = if lcmp { l.span } else { r.span };
                    self.push(
                        Diagnostic::error("E0003", "comparison operators cannot be chained")
                            .at(self.span(&op), "second comparison")
                            .with(inner, "this is already a comparison")
                            .hint("write `a < b && b < c`, or add parentheses"),
                    );
                }
                let span = l.span.to(r.span);
                Some((Expr { kind: ExprKind::Binary { op: bop, lhs: Box::new(l), rhs: Box::new(r) }, span }, cmp))
            })
            .parse(p.into_inner());
        self.depth.set(depth);
        r
    }

    fn primary(&self, p: Pair<'_, Rule>) -> Operand {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::int => {
                let digits: String = p.as_str().chars().filter(|c| *c != '_').collect();
                match digits.parse::<i64>() {
                    Ok(v) => ExprKind::Int(v),
                    Err(_) => {
                        self.push(
                            Diagnostic::error("E0002", format!("integer literal `{}` is too large", p.as_str()))
                                .at(span, "does not fit in a 64-bit signed integer")
                                .hint("integers go up to 9_223_372_036_854_775_807; write a float such as `1e20` for larger numbers"),
                        );
                        ExprKind::Int(i64::MAX)
                    }
                }
            }
            Rule::float => {
                let digits: String = p.as_str().chars().filter(|c| *c != '_').collect();
                match digits.parse::<f64>() {
                    Ok(v) if v.is_finite() => ExprKind::Float(v),
                    _ => {
                        self.push(
                            Diagnostic::error("E0002", format!("float literal `{}` is out of range", p.as_str()))
                                .at(span, "too large for a 64-bit float")
                                .hint("floats go up to about 1.8e308"),
                        );
                        ExprKind::Float(f64::MAX)
                    }
                }
            }
            Rule::string => ExprKind::Str(self.string(p)),
            Rule::kw_true => ExprKind::Bool(true),
            Rule::kw_false => ExprKind::Bool(false),
            Rule::path => ExprKind::Name(self.path(p)),
            Rule::call => ExprKind::Call(self.call(p)?),
            Rule::list => {
                let mut items = vec![];
                for e in kids(p) {
                    items.push(self.expr(e)?);
                }
                ExprKind::List(items)
            }
            Rule::paren => {
                let inner = kids(p).into_iter().next()?;
                let (e, _) = self.operand_expr(inner)?;
                // The span covers the parentheses; a parenthesised comparison may be compared.
                return Some((Expr { kind: e.kind, span }, false));
            }
            Rule::if_expr => {
                let mut es = kids(p).into_iter().filter(|c| c.as_rule() == Rule::expr);
                let cond = self.expr(es.next()?)?;
                let then = self.expr(es.next()?)?;
                let otherwise = self.expr(es.next()?)?;
                ExprKind::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) }
            }
            _ => return None,
        };
        Some((Expr { kind, span }, false))
    }
}

/// The length of `text` without trailing spaces and a trailing `// comment` on its last line.
fn trimmed_len(text: &str) -> usize {
    let mut t = text.trim_end_matches([' ', '\t', '\r']);
    let line_start = t.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let bytes = t.as_bytes();
    let mut in_str = false;
    let mut i = line_start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_str = !in_str,
            b'\\' if in_str => i += 1,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => {
                t = t[..i].trim_end_matches([' ', '\t', '\r']);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    t.len()
}

/// True when an `expr` holds so many prefix operators or `**` that the Pratt parser's recursion
/// could get deep.
fn too_many_unary(p: &Pair<'_, Rule>) -> bool {
    let n = p
        .clone()
        .into_inner()
        .filter(|c| matches!(c.as_rule(), Rule::op_neg | Rule::op_not | Rule::op_pow))
        .count();
    n > MAX_DEPTH
}

fn binop(r: Rule) -> Option<BinOp> {
    Some(match r {
        Rule::op_add => BinOp::Add,
        Rule::op_sub => BinOp::Sub,
        Rule::op_mul => BinOp::Mul,
        Rule::op_div => BinOp::Div,
        Rule::op_rem => BinOp::Rem,
        Rule::op_pow => BinOp::Pow,
        Rule::op_matmul => BinOp::MatMul,
        Rule::op_eq => BinOp::Eq,
        Rule::op_ne => BinOp::Ne,
        Rule::op_lt => BinOp::Lt,
        Rule::op_le => BinOp::Le,
        Rule::op_gt => BinOp::Gt,
        Rule::op_ge => BinOp::Ge,
        Rule::op_and => BinOp::And,
        Rule::op_or => BinOp::Or,
        _ => return None,
    })
}
