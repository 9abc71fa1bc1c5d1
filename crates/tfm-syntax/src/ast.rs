//! The abstract syntax tree of a `.tfm` file: names are unresolved, every node carries its span.

use serde::Serialize;
use tfm_diag::Span;

/// An identifier as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A dotted name: `std.embedding`, `tok.weight`, `ln_1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Path {
    pub segments: Vec<Ident>,
    pub span: Span,
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct File {
    /// The `//!` file documentation, lines joined by `\n` without the `//!` marker.
    pub doc: Option<String>,
    pub imports: Vec<Import>,
    pub items: Vec<Item>,
    pub span: Span,
}

/// What an `import` names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ImportTarget {
    /// `import std`.
    Std,
    /// `import "path/to/file.tfm"`, the unescaped string.
    Path(String),
}

/// `import std` or `import "file.tfm" [as name]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Import {
    pub target: ImportTarget,
    pub alias: Option<Ident>,
    pub span: Span,
}

/// A top-level declaration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Item {
    Model(Decl),
    Block(Decl),
    Variant(Variant),
}

/// `model name { ... }` or `block name { ... }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decl {
    pub doc: Option<String>,
    pub name: Ident,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `model a = b { x = 1, y = 2 }`: a model made from another by overriding parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variant {
    pub doc: Option<String>,
    pub name: Ident,
    pub base: Path,
    pub overrides: Vec<(Ident, Expr)>,
    pub span: Span,
}

/// One statement in a model or block body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Stmt {
    /// `name: type [= default] [where cond ["msg"]]`.
    Param {
        doc: Option<String>,
        name: Ident,
        ty: TypeExpr,
        default: Option<Expr>,
        constraint: Option<Constraint>,
        span: Span,
    },
    /// `input name: dtype[dims] [where cond ["msg"]]`.
    Input {
        doc: Option<String>,
        name: Ident,
        ty: TensorTypeExpr,
        constraint: Option<Constraint>,
        span: Span,
    },
    /// `layer name = callee(args)` or `layer name = repeat n [shared] { callee(args) }`.
    Layer {
        doc: Option<String>,
        name: Ident,
        init: LayerInit,
        span: Span,
    },
    /// `name = expr` or `a, b = expr`.
    Let {
        names: Vec<Ident>,
        value: Expr,
        span: Span,
    },
    /// `output name = expr` or `output name`.
    Output {
        doc: Option<String>,
        name: Ident,
        value: Option<Expr>,
        span: Span,
    },
    /// `require cond[, "msg"]`.
    Require {
        cond: Expr,
        message: Option<String>,
        span: Span,
    },
    /// `expect ...`.
    Expect {
        kind: ExpectKind,
        span: Span,
    },
    /// `objective kind(args)`.
    Objective {
        kind: Ident,
        args: Vec<Arg>,
        span: Span,
    },
}

/// The right-hand side of `layer name = ...`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum LayerInit {
    Call(Call),
    Repeat {
        count: Expr,
        shared: bool,
        body: Call,
        span: Span,
    },
}

/// What an `expect` statement checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ExpectKind {
    /// `expect params == N` (any comparison operator).
    Params { op: BinOp, value: Expr },
    /// `expect name: f32[..] [given B = 2, T = 16]`.
    Type {
        name: Ident,
        ty: TensorTypeExpr,
        given: Vec<(Ident, Expr)>,
    },
}

/// `where cond ["message"]` after a parameter or input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constraint {
    pub cond: Expr,
    pub message: Option<String>,
    pub span: Span,
}

/// The type of a parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TypeExpr {
    Int(Span),
    Float(Span),
    Bool(Span),
    /// `gelu | relu | silu`.
    Choice(Vec<Ident>),
}

/// `dtype[dims]`, e.g. `f32[B, T, d_model]`. The dtype is kept as written and checked later.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorTypeExpr {
    pub dtype: Ident,
    pub dims: Vec<Expr>,
    pub span: Span,
}

/// `path(args)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub callee: Path,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`x`) or named (`causal: true`) argument.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// An expression with its span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(Path),
    List(Vec<Expr>),
    Call(Call),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Unary {
        op: UnOp,
        expr: Box<Expr>,
    },
    /// `x^T`.
    Transpose(Box<Expr>),
    /// `if cond then a else b`.
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    MatMul,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    /// The operator as written in source.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Pow => "**",
            BinOp::MatMul => "@",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
    /// True for `== != < <= > >=`.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum UnOp {
    Neg,
    Not,
}

impl UnOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Not => "!",
        }
    }
}

impl Ident {
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Path {
    /// The path as written, segments joined by `.`.
    pub fn dotted(&self) -> String {
        self.segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(".")
    }
    /// The single segment when the path is a plain name.
    pub fn as_single(&self) -> Option<&Ident> {
        match self.segments.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Param { span, .. }
            | Stmt::Input { span, .. }
            | Stmt::Layer { span, .. }
            | Stmt::Let { span, .. }
            | Stmt::Output { span, .. }
            | Stmt::Require { span, .. }
            | Stmt::Expect { span, .. }
            | Stmt::Objective { span, .. } => *span,
        }
    }
}

impl Item {
    pub fn name(&self) -> &Ident {
        match self {
            Item::Model(d) | Item::Block(d) => &d.name,
            Item::Variant(v) => &v.name,
        }
    }
    pub fn span(&self) -> Span {
        match self {
            Item::Model(d) | Item::Block(d) => d.span,
            Item::Variant(v) => v.span,
        }
    }
}
