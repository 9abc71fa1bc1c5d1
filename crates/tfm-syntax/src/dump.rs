//! A compact, readable dump of an AST: one line per declaration or statement, expressions as
//! S-expressions (so precedence is explicit), spans as `@start..end`. Used by the parser's
//! snapshot tests and handy when debugging a spec.

use std::fmt::Write;

use crate::ast::*;

/// Dumps a whole file.
pub fn dump(file: &File) -> String {
    let mut out = String::new();
    if let Some(doc) = &file.doc {
        let _ = writeln!(out, "file doc {doc:?}");
    }
    for i in &file.imports {
        let target = match &i.target {
            ImportTarget::Std => "std".to_string(),
            ImportTarget::Path(p) => format!("{p:?}"),
        };
        let alias = i.alias.as_ref().map(|a| format!(" as {}", a.name)).unwrap_or_default();
        let _ = writeln!(out, "import {target}{alias} @{}..{}", i.span.start, i.span.end);
    }
    for item in &file.items {
        match item {
            Item::Model(d) | Item::Block(d) => {
                let kw = if matches!(item, Item::Model(_)) { "model" } else { "block" };
                doc_line(&mut out, "", &d.doc);
                let _ = writeln!(out, "{kw} {} @{}..{}", d.name.name, d.span.start, d.span.end);
                for s in &d.body {
                    stmt(&mut out, s);
                }
            }
            Item::Variant(v) => {
                doc_line(&mut out, "", &v.doc);
                let _ = writeln!(out, "variant {} = {} @{}..{}", v.name.name, v.base.dotted(), v.span.start, v.span.end);
                for (n, e) in &v.overrides {
                    let _ = writeln!(out, "  override {} = {}", n.name, expr(e));
                }
            }
        }
    }
    out
}

fn doc_line(out: &mut String, indent: &str, doc: &Option<String>) {
    if let Some(d) = doc {
        let _ = writeln!(out, "{indent}doc {d:?}");
    }
}

fn constraint(c: &Option<Constraint>) -> String {
    match c {
        None => String::new(),
        Some(c) => match &c.message {
            Some(m) => format!(" where {} {m:?}", expr(&c.cond)),
            None => format!(" where {}", expr(&c.cond)),
        },
    }
}

fn tensor_type(t: &TensorTypeExpr) -> String {
    let dims: Vec<String> = t.dims.iter().map(expr).collect();
    format!("{}[{}]", t.dtype.name, dims.join(", "))
}

fn stmt(out: &mut String, s: &Stmt) {
    let sp = s.span();
    let at = format!(" @{}..{}", sp.start, sp.end);
    let line = match s {
        Stmt::Param { doc, name, ty, default, constraint: c, .. } => {
            doc_line(out, "  ", doc);
            let ty = match ty {
                TypeExpr::Int(_) => "int".to_string(),
                TypeExpr::Float(_) => "float".to_string(),
                TypeExpr::Bool(_) => "bool".to_string(),
                TypeExpr::Choice(v) => v.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(" | "),
            };
            let def = default.as_ref().map(|e| format!(" = {}", expr(e))).unwrap_or_default();
            format!("param {}: {ty}{def}{}", name.name, constraint(c))
        }
        Stmt::Input { doc, name, ty, constraint: c, .. } => {
            doc_line(out, "  ", doc);
            format!("input {}: {}{}", name.name, tensor_type(ty), constraint(c))
        }
        Stmt::Layer { doc, name, init, .. } => {
            doc_line(out, "  ", doc);
            let init = match init {
                LayerInit::Call(c) => call(c),
                LayerInit::Repeat { count, shared, body, .. } => {
                    format!("repeat {}{} {{ {} }}", expr(count), if *shared { " shared" } else { "" }, call(body))
                }
            };
            format!("layer {} = {init}", name.name)
        }
        Stmt::Let { names, value, .. } => {
            let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
            format!("let {} = {}", names.join(", "), expr(value))
        }
        Stmt::Output { doc, name, value, .. } => {
            doc_line(out, "  ", doc);
            match value {
                Some(v) => format!("output {} = {}", name.name, expr(v)),
                None => format!("output {}", name.name),
            }
        }
        Stmt::Require { cond, message, .. } => match message {
            Some(m) => format!("require {} {m:?}", expr(cond)),
            None => format!("require {}", expr(cond)),
        },
        Stmt::Expect { kind, .. } => match kind {
            ExpectKind::Params { op, value } => format!("expect params {} {}", op.symbol(), expr(value)),
            ExpectKind::Type { name, ty, given } => {
                let g: Vec<String> = given.iter().map(|(n, e)| format!("{} = {}", n.name, expr(e))).collect();
                let g = if g.is_empty() { String::new() } else { format!(" given {}", g.join(", ")) };
                format!("expect {}: {}{g}", name.name, tensor_type(ty))
            }
        },
        Stmt::Objective { kind, args: a, .. } => format!("objective {}({})", kind.name, args(a)),
    };
    let _ = writeln!(out, "  {line}{at}");
}

fn args(a: &[Arg]) -> String {
    a.iter()
        .map(|a| match &a.name {
            Some(n) => format!("{}: {}", n.name, expr(&a.value)),
            None => expr(&a.value),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn call(c: &Call) -> String {
    format!("{}({})", c.callee.dotted(), args(&c.args))
}

/// An expression as an S-expression: `(+ a (* b c))`.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Name(p) => p.dotted(),
        ExprKind::List(items) => format!("[{}]", items.iter().map(expr).collect::<Vec<_>>().join(", ")),
        ExprKind::Call(c) => call(c),
        ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", op.symbol(), expr(lhs), expr(rhs)),
        ExprKind::Unary { op, expr: x } => format!("({} {})", op.symbol(), expr(x)),
        ExprKind::Transpose(x) => format!("(^T {})", expr(x)),
        ExprKind::If { cond, then, otherwise } => format!("(if {} {} {})", expr(cond), expr(then), expr(otherwise)),
    }
}
