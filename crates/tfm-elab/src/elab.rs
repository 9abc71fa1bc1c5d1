//! Elaborates one model or block body into a graph: parameters, inputs, instances, bindings,
//! outputs, constraints, objectives and expectations.

use crate::codes;
use crate::load::{ItemRef, ModId, World};
use crate::prims;
use crate::value::{self, Val};
use crate::ExpectOutcome;
use std::collections::{HashMap, HashSet};
use tfm_diag::{did_you_mean, Diagnostic, Span};
use tfm_ir::{Child, ChildId, ChildKind, ConstValue, DType, Dim, Graph, Node, Objective, Op, ParamId, ParamKind, Port, Prim, TensorType, Value, ValueId};
use tfm_shape::LayerSpec;
use tfm_syntax::ast::{self, BinOp, Expr, ExprKind, Stmt, TypeExpr, UnOp};

/// Deepest nesting of block instances before we call it runaway recursion.
const MAX_DEPTH: usize = 64;
/// Most block bodies elaborated in one check (guards against exponential nesting).
const MAX_BODIES: usize = 10_000;

/// State shared by every body elaborated during one check.
pub(crate) struct Ctx<'w> {
    pub world: &'w World,
    pub diags: Vec<Diagnostic>,
    stack: Vec<ItemRef>,
    /// Blocks instantiated at least once.
    pub used: HashSet<ItemRef>,
    bodies: usize,
}

/// A value given to a parameter from outside the body: call argument, variant or `--set`.
#[derive(Clone, Debug)]
pub(crate) struct Given {
    pub val: Val,
    pub span: Option<Span>,
    /// `--set name=value` as typed, for messages.
    pub raw: Option<String>,
}

/// The result of elaborating one body.
pub(crate) struct Elaborated {
    pub graph: Graph,
    pub params: Vec<(String, ConstValue)>,
    pub shape_vars: Vec<String>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub objective: Option<Objective>,
    pub expectations: Vec<ExpectOutcome>,
}

impl<'w> Ctx<'w> {
    pub fn new(world: &'w World) -> Self {
        Ctx { world, diags: vec![], stack: vec![], used: HashSet::new(), bodies: 0 }
    }

    /// Evaluates a constant expression (variant overrides) in an empty scope of `module`.
    pub fn const_expr(&mut self, module: ModId, e: &'w Expr) -> Option<Val> {
        let mut body = Body::new(self, module, false, String::new());
        match body.eval(e)? {
            Ev::Sym(s) => Some(Val::Choice(s)),
            ev => body.need_val(ev, e.span),
        }
    }

    /// Checks a block that no model instantiates: defaults, constraints and statements as far
    /// as they do not depend on parameters without defaults, and every name it uses.
    pub fn check_unused_block(&mut self, r: ItemRef, decl: &'w ast::Decl) {
        self.stack.push(r);
        let mut body = Body::new(self, r.module, false, decl.name.name.clone());
        body.run(decl, &HashMap::new());
        body.resolve_walk(decl);
        self.stack.pop();
    }

    pub fn errors(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// Elaborates the model or block `r` with `given` parameter values. `None` if it had errors.
    pub fn elab_decl(&mut self, r: ItemRef, given: &HashMap<String, Given>, as_model: bool) -> Option<Elaborated> {
        let world = self.world;
        let decl = match world.item(r) {
            ast::Item::Model(d) | ast::Item::Block(d) => d,
            ast::Item::Variant(_) => return None,
        };
        let before = self.errors();
        self.stack.push(r);
        let mut body = Body::new(self, r.module, as_model, decl.name.name.clone());
        body.run(decl, given);
        let out = body.finish();
        self.stack.pop();
        if self.errors() > before {
            None
        } else {
            Some(out)
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Ev {
    Val(Val),
    Dim(Dim),
    Tensor(ValueId),
    Tuple(Vec<ValueId>),
    /// A name that resolves to nothing: a choice option, or an error where one is not expected.
    Sym(String),
    List(Vec<(Ev, Span)>),
    Str(String),
}

#[derive(Clone, Debug)]
struct PortSig {
    name: String,
    ty: TensorType,
    span: Span,
}

enum Inst {
    Prim { spec: LayerSpec, params: Vec<ParamId> },
    Child { child: ChildId, block: String, ports: Vec<PortSig>, outs: Vec<TensorType>, repeat: bool, shared: bool },
    /// Its declaration failed; uses stay silent.
    Poisoned,
}

pub(crate) struct Body<'c, 'w> {
    pub cx: &'c mut Ctx<'w>,
    world: &'w World,
    module: ModId,
    is_model: bool,
    name: String,
    g: Graph,
    params: HashMap<String, Option<Val>>,
    param_order: Vec<(String, Val)>,
    /// Declarations (params, inputs, layers) by name, for duplicates.
    decls: HashMap<String, Span>,
    tensors: HashMap<String, Option<ValueId>>,
    insts: HashMap<String, Inst>,
    shape_vars: Vec<String>,
    /// Evaluating a declared type: unknown names become shape variables.
    new_vars: bool,
    /// `given B = 2, T = 16` while checking an expectation.
    given: Option<HashMap<String, i64>>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    output_spans: HashMap<String, Span>,
    input_constraints: Vec<(&'w Expr, Option<String>)>,
    objective: Option<Objective>,
    expectations: Vec<ExpectOutcome>,
    /// An override (variant or `--set`) changed a parameter from its default: expectations,
    /// which describe the model as declared, are skipped.
    overridden: bool,
    objective_span: Option<Span>,
}

type O<T> = Option<T>;

fn err(code: &'static str, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(code, msg)
}

pub(crate) fn fmt_num(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

impl<'c, 'w> Body<'c, 'w> {
    pub fn new(cx: &'c mut Ctx<'w>, module: ModId, is_model: bool, name: String) -> Self {
        let world = cx.world;
        Body {
            cx,
            world,
            module,
            is_model,
            name,
            g: Graph::default(),
            params: HashMap::new(),
            param_order: vec![],
            decls: HashMap::new(),
            tensors: HashMap::new(),
            insts: HashMap::new(),
            shape_vars: vec![],
            new_vars: false,
            given: None,
            inputs: vec![],
            outputs: vec![],
            output_spans: HashMap::new(),
            input_constraints: vec![],
            objective: None,
            expectations: vec![],
            overridden: false,
            objective_span: None,
        }
    }

    fn emit(&mut self, d: Diagnostic) {
        self.cx.diags.push(d);
    }

    fn finish(self) -> Elaborated {
        Elaborated {
            graph: self.g,
            params: self.param_order.iter().map(|(n, v)| (n.clone(), v.to_const())).collect(),
            shape_vars: self.shape_vars,
            inputs: self.inputs,
            outputs: self.outputs,
            objective: self.objective,
            expectations: self.expectations,
        }
    }

    fn declare(&mut self, name: &ast::Ident, what: &str) -> bool {
        if let Some(prev) = self.decls.get(&name.name) {
            let prev = *prev;
            self.emit(
                err(codes::DUPLICATE, format!("`{}` is defined twice in `{}`", name.name, self.name))
                    .at(name.span, format!("{what} `{}` defined again here", name.name))
                    .with(prev, "first defined here")
                    .hint("rename one of them"),
            );
            return false;
        }
        self.decls.insert(name.name.clone(), name.span);
        true
    }

    fn run(&mut self, decl: &'w ast::Decl, given: &HashMap<String, Given>) {
        // 1. parameters, in order.
        for s in &decl.body {
            if let Stmt::Param { name, ty, default, constraint, .. } = s {
                self.param(name, ty, default.as_ref(), constraint.as_ref(), given.get(&name.name));
            }
        }
        // 2. inputs: their types introduce the shape variables.
        for s in &decl.body {
            if let Stmt::Input { doc, name, ty, constraint, span } = s {
                self.input(doc, name, ty, constraint.as_ref(), *span);
            }
        }
        // 3. requirements on parameters.
        for s in &decl.body {
            if let Stmt::Require { cond, message, span } = s {
                self.constraint(cond, message.as_deref(), *span);
            }
        }
        // 4. layer instances.
        for s in &decl.body {
            if let Stmt::Layer { doc, name, init, span } = s {
                self.layer(doc, name, init, *span);
            }
        }
        // 5. dataflow, outputs and the objective, in source order.
        for s in &decl.body {
            match s {
                Stmt::Let { names, value, span } => self.bind(names, value, *span),
                Stmt::Output { doc, name, value, span } => self.output(doc, name, value.as_ref(), *span),
                Stmt::Objective { kind, args, span } => {
                    if self.is_model {
                        self.objective(kind, args, *span)
                    } else if !self.is_model_decl() {
                        self.emit(err(codes::STRUCTURE, "an objective is only allowed in a model").at(*span, "inside block").hint("move the objective into the model that uses this block"));
                    }
                }
                _ => {}
            }
        }
        // 6. expectations.
        for s in &decl.body {
            if let Stmt::Expect { kind, span } = s {
                if self.is_model && self.overridden {
                    continue;
                }
                if self.is_model {
                    self.expect(kind, *span);
                } else if !self.is_model_decl() {
                    self.emit(err(codes::STRUCTURE, "`expect` is only allowed in a model").at(*span, "inside block").hint("move the expectation into a model"));
                }
            }
        }
        // Given values that name no parameter (variant overrides and --set are checked earlier;
        // block arguments are checked at the call).
        let _ = given;
    }

    fn is_model_decl(&self) -> bool {
        self.cx.stack.last().is_some_and(|r| matches!(self.world.item(*r), ast::Item::Model(_)))
    }

    // ----- parameters -----

    fn param(&mut self, name: &'w ast::Ident, ty: &'w TypeExpr, default: Option<&'w Expr>, constraint: Option<&'w ast::Constraint>, given: Option<&Given>) {
        if !self.declare(name, "parameter") {
            return;
        }
        let val = if let Some(g) = given {
            if self.is_model {
                // Compare with the default, quietly: only a changed value counts as an override.
                let before = self.cx.diags.len();
                let default = default.and_then(|d| match self.eval(d) {
                    Some(Ev::Sym(s)) => Some(Val::Choice(s)),
                    Some(Ev::Val(v)) => Some(v),
                    _ => None,
                });
                self.cx.diags.truncate(before);
                let same = match (default.as_ref().map(|d| coerce(d, ty)), coerce(&g.val, ty)) {
                    (Some(Ok(a)), Ok(b)) => a == b,
                    (None, _) => true,
                    _ => false,
                };
                self.overridden |= !same;
            }
            coerce(&g.val, ty).map_err(|e| (e, g.span, g.raw.clone()))
        } else if let Some(d) = default {
            match self.eval(d) {
                Some(Ev::Sym(s)) if matches!(ty, TypeExpr::Choice(_)) => coerce(&Val::Choice(s), ty).map_err(|e| (e, Some(d.span), None)),
                Some(ev) => match self.need_val(ev, d.span) {
                    Some(v) => coerce(&v, ty).map_err(|e| (e, Some(d.span), None)),
                    None => {
                        self.params.insert(name.name.clone(), None);
                        return;
                    }
                },
                None => {
                    self.params.insert(name.name.clone(), None);
                    return;
                }
            }
        } else {
            if self.is_model {
                self.emit(
                    err(codes::NO_VALUE, format!("parameter `{}` of model `{}` has no value", name.name, self.name))
                        .at(name.span, "declared without a default")
                        .hint(format!("give it a default (`{}: {} = ...`) or set it with `--set {}=...`", name.name, type_name(ty), name.name)),
                );
            }
            self.params.insert(name.name.clone(), None);
            return;
        };
        let val = match val {
            Ok(v) => v,
            Err((msg, span, raw)) => {
                let mut d = err(codes::TYPE, format!("parameter `{}`: {msg}", name.name));
                match (span, raw) {
                    (Some(s), _) => d = d.at(s, msg.clone()).with(name.span, format!("`{}` declared as {} here", name.name, type_name(ty))),
                    (None, Some(raw)) => d = d.at(name.span, format!("declared as {} here", type_name(ty))).hint(format!("fix the override `--set {raw}`")),
                    (None, None) => d = d.at(name.span, "declared here"),
                }
                self.emit(d);
                self.params.insert(name.name.clone(), None);
                return;
            }
        };
        self.params.insert(name.name.clone(), Some(val.clone()));
        self.param_order.push((name.name.clone(), val));
        if let Some(c) = constraint {
            self.constraint(&c.cond, c.message.as_deref(), c.span);
        }
    }

    /// Checks `cond` (a `where` or `require`), reporting the author's message and the values involved.
    fn constraint(&mut self, cond: &'w Expr, message: Option<&str>, span: Span) {
        let Some(ev) = self.eval(cond) else { return };
        let Some(b) = self.need_bool(ev, cond.span) else { return };
        if !b {
            let vals = self.values_in(cond);
            let msg = match message {
                Some(m) => format!("constraint violated: {m}"),
                None => "constraint violated".to_string(),
            };
            let mut d = err(codes::CONSTRAINT, msg).at(cond.span, "this is false");
            if !vals.is_empty() {
                d = d.hint(format!("with {}", vals.join(", ")));
            }
            let _ = span;
            self.emit(d);
        }
    }

    /// `name = value` for each parameter (and given shape variable) mentioned in `e`.
    fn values_in(&self, e: &Expr) -> Vec<String> {
        let mut names = vec![];
        collect_names(e, &mut names);
        let mut out = vec![];
        for n in names {
            let s = if let Some(Some(v)) = self.params.get(&n) {
                format!("`{n}` = {v}")
            } else if let Some(v) = self.given.as_ref().and_then(|g| g.get(&n)) {
                format!("`{n}` = {v}")
            } else {
                continue;
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    // ----- inputs and types -----

    fn input(&mut self, doc: &Option<String>, name: &'w ast::Ident, ty: &'w ast::TensorTypeExpr, constraint: Option<&'w ast::Constraint>, span: Span) {
        if !self.declare(name, "input") {
            return;
        }
        let Some(t) = self.tensor_type(ty, true) else {
            self.tensors.insert(name.name.clone(), None);
            return;
        };
        let v = self.g.values.len();
        self.g.values.push(Value { ty: t, name: Some(name.name.clone()), span });
        self.g.inputs.push(v);
        self.tensors.insert(name.name.clone(), Some(v));
        self.inputs.push(Port { name: name.name.clone(), value: v, doc: doc.clone() });
        if let Some(c) = constraint {
            let mut names = vec![];
            collect_names(&c.cond, &mut names);
            if names.iter().any(|n| self.shape_vars.contains(n) && !self.params.contains_key(n)) {
                self.input_constraints.push((&c.cond, c.message.clone()));
            } else {
                self.constraint(&c.cond, c.message.as_deref(), c.span);
            }
        }
    }

    /// Evaluates `dtype[dims]`. With `declare`, unknown names become shape variables.
    fn tensor_type(&mut self, ty: &'w ast::TensorTypeExpr, declare: bool) -> O<TensorType> {
        let dtype = match ty.dtype.name.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::Bf16,
            "i64" => DType::I64,
            "bool" => DType::Bool,
            other => {
                let mut d = err(codes::DTYPE, format!("unknown dtype `{other}`")).at(ty.dtype.span, "expected `f32`, `f16`, `bf16`, `i64` or `bool`");
                if let Some(s) = did_you_mean(other, ["f32", "f16", "bf16", "i64", "bool"]) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                self.emit(d);
                return None;
            }
        };
        let saved = self.new_vars;
        self.new_vars = declare;
        let mut shape = vec![];
        let mut ok = true;
        for e in &ty.dims {
            match self.eval(e).and_then(|ev| self.need_dim(ev, e.span)) {
                Some(d) => {
                    if d.as_const().is_some_and(|c| c < 0) {
                        self.emit(err(codes::BAD_DIM, format!("expected a dimension of at least 0, found {d}")).at(e.span, "negative dimension"));
                        ok = false;
                    }
                    shape.push(d)
                }
                None => ok = false,
            }
        }
        self.new_vars = saved;
        ok.then_some(TensorType { dtype, shape })
    }

    // ----- layers -----

    fn layer(&mut self, doc: &Option<String>, name: &'w ast::Ident, init: &'w ast::LayerInit, span: Span) {
        if !self.declare(name, "layer") {
            return;
        }
        let inst = match init {
            ast::LayerInit::Call(call) => self.instance(name, doc, call, None, span),
            ast::LayerInit::Repeat { count, shared, body, span: rspan } => {
                let n = self.eval(count).and_then(|ev| self.need_int(ev, count.span));
                match n {
                    Some(n) if n >= 1 => self.instance(name, doc, body, Some((n as u64, *shared, *rspan)), span),
                    Some(n) => {
                        self.emit(err(codes::BAD_DIM, format!("expected a repeat count of at least 1, found {n}")).at(count.span, "repeat count"));
                        None
                    }
                    None => None,
                }
            }
        };
        self.insts.insert(name.name.clone(), inst.unwrap_or(Inst::Poisoned));
    }

    fn instance(&mut self, name: &'w ast::Ident, doc: &Option<String>, call: &'w ast::Call, repeat: Option<(u64, bool, Span)>, span: Span) -> O<Inst> {
        match self.resolve_callee(&call.callee, true) {
            Callee::Item(r) => self.block_instance(name, doc, r, call, repeat, span),
            Callee::LayerPrim(p) => {
                if repeat.is_some() {
                    self.emit(
                        err(codes::STRUCTURE, format!("`repeat` needs a block, found the primitive layer `{p}`"))
                            .at(call.callee.span, "a primitive layer")
                            .hint("wrap the layer in a block with an input and an output, and repeat that block"),
                    );
                    return None;
                }
                let spec = prims::layer_spec(self, p, call)?;
                let defs = spec.params(&name.name, span);
                let mut ids = vec![];
                for d in defs {
                    if d.shape.iter().any(|&n| n > i64::MAX as u64) || d.shape.iter().try_fold(1u64, |a, &b| a.checked_mul(b)).is_none() {
                        self.emit(err(codes::OVERFLOW, format!("the weight `{}` has more than 2^64 elements", d.name)).at(span, "too large"));
                        return None;
                    }
                    ids.push(self.g.params.len());
                    self.g.params.push(d);
                }
                Some(Inst::Prim { spec, params: ids })
            }
            Callee::Func(f) | Callee::Builtin(f) => {
                self.emit(
                    err(codes::KIND, format!("`{f}` is a function without weights, not a layer"))
                        .at(call.callee.span, "not a layer")
                        .hint(format!("call it in an expression instead: `y = {f}(x, ...)`")),
                );
                None
            }
            Callee::Inst(i) => {
                self.emit(err(codes::KIND, format!("`{i}` is a layer instance, not a layer constructor")).at(call.callee.span, "an instance").hint(format!("apply it in an expression: `y = {i}(x)`")));
                None
            }
            Callee::Unknown => {
                self.unknown_callee(&call.callee, true);
                None
            }
        }
    }

    fn block_instance(&mut self, name: &'w ast::Ident, doc: &Option<String>, r: ItemRef, call: &'w ast::Call, repeat: Option<(u64, bool, Span)>, span: Span) -> O<Inst> {
        let world = self.world;
        let decl = match world.item(r) {
            ast::Item::Model(d) | ast::Item::Block(d) => d,
            ast::Item::Variant(v) => {
                self.emit(err(codes::KIND, format!("`{}` is a model variant, not a block", v.name.name)).at(call.callee.span, "not a block").hint("instantiate its base model, passing the parameters"));
                return None;
            }
        };
        // Bind arguments to the block's parameters.
        let pstmts: Vec<(&ast::Ident, &TypeExpr, bool)> = decl
            .body
            .iter()
            .filter_map(|s| match s {
                Stmt::Param { name, ty, default, .. } => Some((name, ty, default.is_some())),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = pstmts.iter().map(|p| p.0.name.as_str()).collect();
        let what = format!("block `{}`", decl.name.name);
        let slots = self.bind_args(&what, &names, &call.args, call.span)?;
        let mut given = HashMap::new();
        let mut ok = true;
        for (i, slot) in slots.iter().enumerate() {
            let (pname, pty, has_default) = pstmts[i];
            match slot {
                Some(arg) => {
                    let v = match self.eval(&arg.value) {
                        Some(Ev::Sym(s)) if matches!(pty, TypeExpr::Choice(_)) => Some(Val::Choice(s)),
                        Some(ev) => self.need_val(ev, arg.value.span),
                        None => None,
                    };
                    match v {
                        Some(v) => {
                            given.insert(pname.name.clone(), Given { val: v, span: Some(arg.value.span), raw: None });
                        }
                        None => ok = false,
                    }
                }
                None if !has_default => {
                    self.emit(
                        err(codes::MISSING_ARG, format!("missing argument `{}` for {what}", pname.name))
                            .at(call.span, format!("`{}` is not given", pname.name))
                            .with(pname.span, "declared without a default here")
                            .hint(format!("pass it: `{}: ...`", pname.name)),
                    );
                    ok = false;
                }
                None => {}
            }
        }
        if !ok {
            return None;
        }
        // Recursion guard.
        if self.cx.stack.contains(&r) || self.cx.stack.len() >= MAX_DEPTH {
            let from = self.cx.stack.iter().position(|x| *x == r).unwrap_or(0);
            let mut chain: Vec<String> = self.cx.stack[from..].iter().map(|x| format!("`{}`", world.item(*x).name().name)).collect();
            chain.push(format!("`{}`", decl.name.name));
            self.emit(
                err(codes::RECURSION, format!("recursive block: {}", chain.join(" -> ")))
                    .at(call.callee.span, "instantiated inside itself")
                    .hint("a block cannot contain an instance of itself; use `repeat` to stack copies"),
            );
            return None;
        }
        self.cx.used.insert(r);
        self.cx.bodies += 1;
        if self.cx.bodies > MAX_BODIES {
            if self.cx.bodies == MAX_BODIES + 1 {
                self.emit(
                    err(codes::RECURSION, format!("more than {MAX_BODIES} block instances to check"))
                        .at(call.span, "instances nest too widely")
                        .hint("use `repeat` to stack copies: its body is checked once"),
                );
            }
            return None;
        }
        let before = self.cx.diags.len();
        let out = self.cx.elab_decl(r, &given, false);
        let ctx_label = format!("in this instance of `{}`", decl.name.name);
        for d in &mut self.cx.diags[before..] {
            if !d.labels.iter().any(|l| l.span == call.span) && d.primary_span().is_some_and(|s| s.file != call.span.file || !(s.start >= call.span.start && s.end <= call.span.end)) {
                d.labels.push(tfm_diag::Label { span: call.span, message: ctx_label.clone(), primary: false });
            }
        }
        let el = out?;
        let ports: Vec<PortSig> = el
            .inputs
            .iter()
            .map(|p| PortSig { name: p.name.clone(), ty: el.graph.values[p.value].ty.clone(), span: el.graph.values[p.value].span })
            .collect();
        let outs: Vec<TensorType> = el.outputs.iter().map(|p| el.graph.values[p.value].ty.clone()).collect();
        let kind = match repeat {
            None => ChildKind::Block,
            Some((count, shared, rspan)) => {
                let ok = !ports.is_empty() && outs.len() == 1 && ports[0].ty == outs[0];
                if !ok {
                    let found = match (ports.first(), outs.as_slice()) {
                        (Some(p), [o]) => format!("input `{}: {}` and output `{o}`", p.name, p.ty),
                        (_, o) => format!("{} input(s) and {} output(s)", ports.len(), o.len()),
                    };
                    self.emit(
                        err(codes::REPEAT, format!("`repeat` needs a block whose first input and single output have the same type; `{}` has {found}", decl.name.name))
                            .at(rspan, "repeated here")
                            .with(decl.name.span, "block declared here")
                            .hint("each copy feeds the next, so the output must fit the first input"),
                    );
                    return None;
                }
                ChildKind::Repeat { count, shared }
            }
        };
        let child = self.g.children.len();
        self.g.children.push(Child { name: name.name.clone(), kind, block: decl.name.name.clone(), doc: doc.clone().or_else(|| decl.doc.clone()), graph: el.graph, span });
        Some(Inst::Child {
            child,
            block: decl.name.name.clone(),
            ports,
            outs,
            repeat: repeat.is_some(),
            shared: repeat.is_some_and(|r| r.1),
        })
    }

    // ----- bindings and outputs -----

    fn bind(&mut self, names: &'w [ast::Ident], value: &'w Expr, span: Span) {
        for n in names {
            if self.params.contains_key(&n.name) || self.insts.contains_key(&n.name) {
                let prev = self.decls.get(&n.name).copied();
                let mut d = err(codes::DUPLICATE, format!("`{}` is already a parameter or layer and cannot be rebound", n.name)).at(n.span, "bound here");
                if let Some(p) = prev {
                    d = d.with(p, "declared here");
                }
                self.emit(d.hint("pick another name for the tensor"));
                return;
            }
        }
        let ev = self.eval(value);
        let _ = span;
        let vals: Vec<Option<ValueId>> = match ev {
            None => vec![None; names.len()],
            Some(Ev::Tensor(v)) if names.len() == 1 => vec![Some(v)],
            Some(Ev::Tuple(vs)) if vs.len() == names.len() => vs.into_iter().map(Some).collect(),
            Some(Ev::Tuple(vs)) => {
                self.emit(err(codes::ARITY, format!("expected {} value(s) to bind, found {}", names.len(), vs.len())).at(value.span, format!("this yields {} tensors", vs.len())));
                vec![None; names.len()]
            }
            Some(Ev::Tensor(_)) => {
                self.emit(err(codes::ARITY, format!("expected {} values to bind, found 1 tensor", names.len())).at(value.span, "this yields one tensor"));
                vec![None; names.len()]
            }
            Some(Ev::Sym(s)) => {
                self.unknown(&s, value.span);
                vec![None; names.len()]
            }
            Some(other) => {
                self.emit(
                    err(codes::TYPE, format!("expected a tensor, found {}", describe(&other)))
                        .at(value.span, "not a tensor")
                        .hint("bindings hold tensors; declare compile-time values as parameters (`name: int = ...`)"),
                );
                vec![None; names.len()]
            }
        };
        for (n, v) in names.iter().zip(vals) {
            if let Some(v) = v {
                if self.g.values[v].name.is_none() {
                    self.g.values[v].name = Some(n.name.clone());
                }
            }
            self.tensors.insert(n.name.clone(), v);
        }
    }

    fn output(&mut self, doc: &Option<String>, name: &'w ast::Ident, value: Option<&'w Expr>, span: Span) {
        if let Some(prev) = self.output_spans.get(&name.name) {
            let prev = *prev;
            self.emit(err(codes::DUPLICATE, format!("output `{}` is defined twice", name.name)).at(name.span, "defined again here").with(prev, "first defined here").hint("rename one of them"));
            return;
        }
        self.output_spans.insert(name.name.clone(), name.span);
        let v = match value {
            Some(e) => {
                self.bind(std::slice::from_ref(name), e, span);
                self.tensors.get(&name.name).copied().flatten()
            }
            None => match self.tensors.get(&name.name) {
                Some(v) => *v,
                None => {
                    self.unknown(&name.name, name.span);
                    None
                }
            },
        };
        if let Some(v) = v {
            self.g.outputs.push(v);
            self.outputs.push(Port { name: name.name.clone(), value: v, doc: doc.clone() });
        }
    }

    // ----- objectives and expectations -----

    fn objective(&mut self, kind: &'w ast::Ident, args: &'w [ast::Arg], span: Span) {
        if let Some(prev) = self.objective_span {
            self.emit(err(codes::DUPLICATE, "a model has one objective; found a second").at(span, "second objective").with(prev, "first objective").hint("remove one of them"));
            return;
        }
        self.objective_span = Some(span);
        let Some((k, pattern)) = prims::objective(&kind.name) else {
            let mut d = err(codes::UNKNOWN, format!("unknown objective `{}`", kind.name)).at(kind.span, "not an objective");
            if let Some(s) = did_you_mean(&kind.name, prims::OBJECTIVES.iter().copied()) {
                d = d.hint(format!("did you mean `{s}`?"));
            } else {
                d = d.hint(format!("objectives: {}", prims::OBJECTIVES.join(", ")));
            }
            self.emit(d);
            return;
        };
        let names: Vec<&str> = pattern.iter().map(|p| p.0).collect();
        let what = format!("objective `{}`", kind.name);
        let Some(slots) = self.bind_args(&what, &names, args, span) else { return };
        let mut vars: HashMap<&str, Dim> = HashMap::new();
        let mut ids = vec![];
        for (i, slot) in slots.iter().enumerate() {
            let (aname, float, dims) = pattern[i];
            let Some(arg) = slot else {
                self.emit(err(codes::MISSING_ARG, format!("missing argument `{aname}` for {what}")).at(span, format!("`{aname}` is not given")));
                return;
            };
            let Some(v) = self.eval(&arg.value).and_then(|ev| self.need_tensor(ev, arg.value.span)) else { return };
            let t = self.g.values[v].ty.clone();
            let shown: Vec<String> = dims.iter().map(|v| vars.get(v).map(|d| d.to_string()).unwrap_or_else(|| v.to_string())).collect();
            let want = format!("{}[{}]", if float { "f32" } else { "i64" }, shown.join(", "));
            let dtype_ok = if float { matches!(t.dtype, DType::F32 | DType::F16 | DType::Bf16) } else { t.dtype == DType::I64 };
            let rank_ok = t.shape.len() == dims.len() || (dims.is_empty() && t.shape == [Dim::known(1)]);
            let mut ok = dtype_ok && rank_ok;
            if ok && !dims.is_empty() {
                for (d, var) in t.shape.iter().zip(dims.iter()) {
                    match vars.get(var) {
                        Some(prev) if prev != d => ok = false,
                        Some(_) => {}
                        None => {
                            vars.insert(var, d.clone());
                        }
                    }
                }
            }
            if !ok {
                let mut d = err(codes::OBJECTIVE, format!("{what}: argument `{aname}` expected `{want}`, found `{t}`")).at(arg.value.span, format!("this is `{t}`"));
                if self.g.values[v].span != arg.value.span {
                    d = d.with(self.g.values[v].span, "produced here");
                }
                d = d.hint(format!("{what} takes {}", pattern.iter().map(|(n, f, ds)| format!("`{n}: {}[{}]`", if *f { "f32" } else { "i64" }, ds.join(", "))).collect::<Vec<_>>().join(", ")));
                self.emit(d);
                return;
            }
            ids.push(v);
        }
        self.objective = Some(Objective { kind: k, args: ids, span });
    }

    fn expect(&mut self, kind: &'w ast::ExpectKind, span: Span) {
        match kind {
            ast::ExpectKind::Params { op, value } => {
                let Some(n) = self.eval(value).and_then(|ev| self.need_int(ev, value.span)) else { return };
                let Some(actual) = count_params(&self.g) else {
                    self.emit(err(codes::OVERFLOW, "the parameter count overflows 128 bits").at(span, "cannot count"));
                    return;
                };
                let want = n as i128;
                let a = actual as i128;
                let pass = match op {
                    BinOp::Eq => a == want,
                    BinOp::Ne => a != want,
                    BinOp::Lt => a < want,
                    BinOp::Le => a <= want,
                    BinOp::Gt => a > want,
                    BinOp::Ge => a >= want,
                    _ => {
                        self.emit(err(codes::TYPE, format!("expected a comparison in `expect params`, found `{}`", op.symbol())).at(span, "not a comparison"));
                        return;
                    }
                };
                let description = format!("params {} {} (found {})", op.symbol(), fmt_num(n.max(0) as u128), fmt_num(actual));
                if !pass {
                    let diff = a - want;
                    let mut d = err(codes::EXPECT, format!("expectation failed: expected params {} {}, found {}", op.symbol(), fmt_num(n.max(0) as u128), fmt_num(actual)))
                        .at(span, format!("the model has {} trainable parameters", fmt_num(actual)));
                    if *op == BinOp::Eq {
                        d = d.hint(format!("the difference is {}{}; tied weights count once, fixed tables not at all", if diff > 0 { "+" } else { "-" }, fmt_num(diff.unsigned_abs())));
                    }
                    self.emit(d);
                }
                self.expectations.push(ExpectOutcome { span, description, passed: pass });
            }
            ast::ExpectKind::Type { name, ty, given } => {
                let mut env: HashMap<String, i64> = HashMap::new();
                for (var, e) in given {
                    let Some(n) = self.eval(e).and_then(|ev| self.need_int(ev, e.span)) else { return };
                    if n < 0 {
                        self.emit(err(codes::BAD_DIM, format!("expected a size of at least 0 for `{}`, found {n}", var.name)).at(e.span, "negative"));
                        return;
                    }
                    env.insert(var.name.clone(), n);
                }
                let value = self.outputs.iter().find(|p| p.name == name.name).map(|p| p.value).or_else(|| self.tensors.get(&name.name).copied().flatten());
                let Some(v) = value else {
                    if !self.tensors.contains_key(&name.name) {
                        self.unknown(&name.name, name.span);
                    }
                    return;
                };
                self.given = Some(env.clone());
                let want = self.tensor_type(ty, true);
                // Input constraints on shape variables, decided with the given sizes.
                let mut violated = None;
                if !env.is_empty() {
                    for (c, msg) in self.input_constraints.clone() {
                        let mut names = vec![];
                        collect_names(c, &mut names);
                        if names.iter().any(|n| self.shape_vars.contains(n) && !env.contains_key(n) && !self.params.contains_key(n)) {
                            continue;
                        }
                        if let Some(false) = self.eval(c).and_then(|ev| self.need_bool(ev, c.span)) {
                            violated = Some((c.span, msg, self.values_in(c)));
                            break;
                        }
                    }
                }
                self.given = None;
                let Some(want) = want else { return };
                let sub: HashMap<String, Dim> = env.iter().map(|(k, v)| (k.clone(), Dim::constant(*v))).collect();
                let subst = |t: &TensorType| TensorType { dtype: t.dtype, shape: t.shape.iter().map(|d| d.subst(&sub)).collect() };
                let actual = subst(&self.g.values[v].ty);
                let want = subst(&want);
                let given_txt = if given.is_empty() {
                    String::new()
                } else {
                    let mut g: Vec<String> = given.iter().map(|(n, _)| format!("{} = {}", n.name, env.get(&n.name).copied().unwrap_or(0))).collect();
                    g.dedup();
                    format!(" given {}", g.join(", "))
                };
                let description = format!("{}: {want}{given_txt} (found {actual})", name.name);
                let mut pass = actual == want;
                if !pass {
                    let d = err(codes::EXPECT, format!("expectation failed: `{}` expected `{want}`, found `{actual}`", name.name))
                        .at(span, format!("`{}` is `{actual}`{given_txt}", name.name))
                        .with(self.g.values[v].span, "produced here");
                    self.emit(d);
                }
                if let Some((cspan, msg, vals)) = violated {
                    pass = false;
                    let mut d = err(codes::EXPECT, format!("expectation failed: the input constraint does not hold{given_txt}{}", msg.map(|m| format!(": {m}")).unwrap_or_default()))
                        .at(span, "with these sizes")
                        .with(cspan, "this is false");
                    if !vals.is_empty() {
                        d = d.hint(format!("with {}", vals.join(", ")));
                    }
                    self.emit(d);
                }
                self.expectations.push(ExpectOutcome { span, description, passed: pass });
            }
        }
    }

    // ----- expressions -----

    pub fn eval(&mut self, e: &'w Expr) -> O<Ev> {
        match &e.kind {
            ExprKind::Int(i) => Some(Ev::Val(Val::Int(*i))),
            ExprKind::Float(f) => Some(Ev::Val(Val::Float(*f))),
            ExprKind::Bool(b) => Some(Ev::Val(Val::Bool(*b))),
            ExprKind::Str(s) => Some(Ev::Str(s.clone())),
            ExprKind::Name(p) => self.name(p),
            ExprKind::List(items) => {
                let mut out = vec![];
                for it in items {
                    out.push((self.eval(it)?, it.span));
                }
                Some(Ev::List(out))
            }
            ExprKind::Call(c) => self.call(c),
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(lhs)?;
                let b = self.eval(rhs)?;
                self.binary(*op, a, lhs, b, rhs, e.span)
            }
            ExprKind::Unary { op, expr } => {
                let a = self.eval(expr)?;
                match (op, a) {
                    (UnOp::Neg, Ev::Val(v)) => match v {
                        Val::Int(i) => match i.checked_neg() {
                            Some(n) => Some(Ev::Val(Val::Int(n))),
                            None => {
                                self.emit(err(codes::OVERFLOW, "integer overflow in negation").at(e.span, "overflows"));
                                None
                            }
                        },
                        Val::Float(f) => Some(Ev::Val(Val::Float(-f))),
                        other => self.bad_operand(&format!("cannot negate {} `{other}`", other.type_name()), expr.span),
                    },
                    (UnOp::Neg, Ev::Dim(d)) => Some(Ev::Dim(d.neg())),
                    (UnOp::Neg, Ev::Tensor(v)) => self.prim_node(Prim::Neg, vec![(v, expr.span)], e.span, "-"),
                    (UnOp::Not, Ev::Val(Val::Bool(b))) => Some(Ev::Val(Val::Bool(!b))),
                    (_, Ev::Sym(s)) => {
                        self.unknown(&s, expr.span);
                        None
                    }
                    (op, other) => self.bad_operand(&format!("cannot apply `{}` to {}", op.symbol(), describe(&other)), expr.span),
                }
            }
            ExprKind::Transpose(inner) => {
                let a = self.eval(inner)?;
                let v = self.need_tensor(a, inner.span)?;
                let rank = self.g.values[v].ty.shape.len();
                if rank < 2 {
                    let t = self.g.values[v].ty.clone();
                    self.emit(err(codes::SHAPE, format!("`^T` swaps the last two dims: expected a tensor with at least 2 dims, found `{t}`")).at(inner.span, format!("this is `{t}`")));
                    return None;
                }
                let mut axes: Vec<usize> = (0..rank).collect();
                axes.swap(rank - 1, rank - 2);
                self.prim_node(Prim::Permute { axes }, vec![(v, inner.span)], e.span, "^T")
            }
            ExprKind::If { cond, then, otherwise } => {
                let c = self.eval(cond)?;
                let b = self.need_bool(c, cond.span)?;
                if b {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
        }
    }

    fn bad_operand(&mut self, msg: &str, span: Span) -> O<Ev> {
        self.emit(err(codes::TYPE, msg.to_string()).at(span, "here"));
        None
    }

    fn name(&mut self, p: &'w ast::Path) -> O<Ev> {
        let first = p.segments.first()?;
        if p.segments.len() == 1 {
            let n = first.name.as_str();
            if let Some(t) = self.tensors.get(n) {
                return t.map(Ev::Tensor);
            }
            if let Some(v) = self.params.get(n) {
                return v.clone().map(Ev::Val);
            }
            if let Some(v) = self.given.as_ref().and_then(|g| g.get(n)) {
                return Some(Ev::Val(Val::Int(*v)));
            }
            if self.shape_vars.iter().any(|s| s == n) {
                return Some(Ev::Dim(Dim::var(n)));
            }
            if let Some(inst) = self.insts.get(n) {
                if matches!(inst, Inst::Poisoned) {
                    return None;
                }
                self.emit(
                    err(codes::KIND, format!("`{n}` is a layer, not a tensor"))
                        .at(first.span, "a layer instance")
                        .hint(format!("apply it (`{n}(x)`) or read one of its weights (`{n}.weight`)")),
                );
                return None;
            }
            if self.new_vars {
                self.shape_vars.push(n.to_string());
                return Some(Ev::Dim(Dim::var(n)));
            }
            return Some(Ev::Sym(n.to_string()));
        }
        if self.insts.contains_key(&first.name) {
            return self.weight_ref(p);
        }
        if self.world.modules[self.module].namespaces.contains_key(&first.name) {
            self.emit(
                err(codes::KIND, format!("`{}` is not a value", p.dotted()))
                    .at(p.span, "not a value")
                    .hint("names in a namespace are blocks and primitives: call them, or declare an instance with `layer`"),
            );
            return None;
        }
        self.unknown(&first.name, first.span);
        None
    }

    fn weight_ref(&mut self, p: &'w ast::Path) -> O<Ev> {
        let inst_name = &p.segments[0].name;
        let inner = p.segments[1..].iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(".");
        let rest_span = p.segments[1].span.to(p.span);
        let (path, param) = match self.insts.get(inst_name)? {
            Inst::Poisoned => return None,
            Inst::Prim { params, .. } => {
                let full = format!("{inst_name}.{inner}");
                match params.iter().find(|id| self.g.params[**id].name == full) {
                    Some(id) => (vec![], *id),
                    None => {
                        let names: Vec<String> = params.iter().map(|id| self.g.params[*id].name[inst_name.len() + 1..].to_string()).collect();
                        self.no_weight(inst_name, &inner, &names, rest_span);
                        return None;
                    }
                }
            }
            Inst::Child { child, repeat, shared, .. } => {
                if *repeat && !*shared {
                    self.emit(
                        err(codes::KIND, format!("cannot read `{}`: each copy of the repeat `{inst_name}` has its own weights", p.dotted()))
                            .at(p.span, "one weight per copy")
                            .hint("use `repeat n shared { ... }` to share one set of weights"),
                    );
                    return None;
                }
                let child = *child;
                match find_param(&self.g.children[child].graph, &inner) {
                    Some((mut path, id)) => {
                        path.insert(0, child);
                        (path, id)
                    }
                    None => {
                        let mut names = vec![];
                        self.g.children[child].graph.for_each_param("", &mut |n, _| {
                            if names.len() < 4096 {
                                names.push(n.to_string())
                            }
                        });
                        self.no_weight(inst_name, &inner, &names, rest_span);
                        return None;
                    }
                }
            }
        };
        let mut g = &self.g;
        for c in &path {
            g = &g.children[*c].graph;
        }
        let shape = g.params[param].shape.iter().map(|d| Dim::known(*d)).collect();
        let ty = TensorType { dtype: DType::F32, shape };
        let v = self.new_value(ty, p.span);
        self.g.nodes.push(Node { op: Op::Weight { path, param }, inputs: vec![], outputs: vec![v], span: p.span });
        Some(Ev::Tensor(v))
    }

    fn no_weight(&mut self, inst: &str, inner: &str, names: &[String], span: Span) {
        let mut d = err(codes::UNKNOWN, format!("`{inst}` has no weight `{inner}`")).at(span, "no such weight");
        if let Some(s) = did_you_mean(inner, names.iter().map(|s| s.as_str())) {
            d = d.hint(format!("did you mean `{inst}.{s}`?"));
        } else if !names.is_empty() {
            let shown: Vec<&str> = names.iter().take(8).map(|s| s.as_str()).collect();
            d = d.hint(format!("its weights: {}", shown.join(", ")));
        }
        self.emit(d);
    }

    fn new_value(&mut self, ty: TensorType, span: Span) -> ValueId {
        self.g.values.push(Value { ty, name: None, span });
        self.g.values.len() - 1
    }

    fn binary(&mut self, op: BinOp, a: Ev, ae: &'w Expr, b: Ev, be: &'w Expr, span: Span) -> O<Ev> {
        use Ev::*;
        match (a, b) {
            (Sym(s), Val(crate::value::Val::Choice(c))) | (Val(crate::value::Val::Choice(c)), Sym(s)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                Some(Ev::Val(crate::value::Val::Bool((s == c) == (op == BinOp::Eq))))
            }
            (Sym(s), _) => {
                self.unknown(&s, ae.span);
                None
            }
            (_, Sym(s)) => {
                self.unknown(&s, be.span);
                None
            }
            (Val(x), Val(y)) => match value::binop(op, &x, &y) {
                Ok(v) => Some(Ev::Val(v)),
                Err((code, msg, hint)) => {
                    let mut d = err(code, msg).at(span, "here");
                    if let Some(h) = hint {
                        d = d.hint(h);
                    }
                    self.emit(d);
                    None
                }
            },
            (Dim(x), Dim(y)) => self.dim_binop(op, x, y, span, be.span),
            (Dim(x), Val(crate::value::Val::Int(y))) => self.dim_binop(op, x, tfm_ir::Dim::constant(y), span, be.span),
            (Val(crate::value::Val::Int(x)), Dim(y)) => self.dim_binop(op, tfm_ir::Dim::constant(x), y, span, be.span),
            (Tensor(x), Tensor(y)) => {
                let prim = match op {
                    BinOp::Add => Prim::Add,
                    BinOp::Sub => Prim::Sub,
                    BinOp::Mul => Prim::Mul,
                    BinOp::Div => Prim::Div,
                    BinOp::MatMul => Prim::MatMul,
                    _ => return self.bad_operand(&format!("cannot apply `{}` to two tensors", op.symbol()), span),
                };
                self.prim_node(prim, vec![(x, ae.span), (y, be.span)], span, op.symbol())
            }
            (Tensor(x), Val(v)) if matches!(op, BinOp::Mul | BinOp::Div) && v.as_f64().is_some() => {
                let c = v.as_f64().unwrap_or(1.0);
                if op == BinOp::Div && c == 0.0 {
                    self.emit(err(codes::DIV_ZERO, "division of a tensor by zero").at(be.span, "zero"));
                    return None;
                }
                let c = if op == BinOp::Div { 1.0 / c } else { c };
                self.prim_node(Prim::Scale(c), vec![(x, ae.span)], span, op.symbol())
            }
            (Val(v), Tensor(x)) if op == BinOp::Mul && v.as_f64().is_some() => {
                let c = v.as_f64().unwrap_or(1.0);
                self.prim_node(Prim::Scale(c), vec![(x, be.span)], span, op.symbol())
            }
            (a, b) => {
                let hint = if matches!(a, Tensor(_)) || matches!(b, Tensor(_)) {
                    "tensors combine with tensors (`+ - * / @`) and are scaled by numbers with `*` or `/`"
                } else {
                    "both sides must be numbers, booleans or dims"
                };
                self.emit(err(codes::TYPE, format!("cannot apply `{}` to {} and {}", op.symbol(), describe(&a), describe(&b))).at(span, "here").hint(hint));
                None
            }
        }
    }

    fn dim_binop(&mut self, op: BinOp, x: Dim, y: Dim, span: Span, rhs_span: Span) -> O<Ev> {
        if let (Some(a), Some(b)) = (x.as_const(), y.as_const()) {
            return match value::binop(op, &Val::Int(a), &Val::Int(b)) {
                Ok(Val::Int(i)) => Some(Ev::Dim(Dim::constant(i))),
                Ok(v) => Some(Ev::Val(v)),
                Err((code, msg, hint)) => {
                    let mut d = err(code, msg).at(span, "here");
                    if let Some(h) = hint {
                        d = d.hint(h);
                    }
                    self.emit(d);
                    None
                }
            };
        }
        match op {
            BinOp::Add => Some(Ev::Dim(x.add(&y))),
            BinOp::Sub => Some(Ev::Dim(x.sub(&y))),
            BinOp::Mul => Some(Ev::Dim(x.mul(&y))),
            BinOp::Div => match y.as_const() {
                Some(c) if c > 0 => Some(Ev::Dim(x.div_exact(c as u64).unwrap_or_else(|| x.floor_div(c as u64)))),
                _ => {
                    self.emit(err(codes::TYPE, format!("a dimension can only be divided by a positive constant, found `{y}`")).at(rhs_span, "not a positive constant"));
                    None
                }
            },
            op if op.is_comparison() => {
                self.emit(
                    err(codes::SYMBOLIC, format!("cannot decide `{x} {} {y}` before the shapes are known", op.symbol()))
                        .at(span, "depends on a shape variable")
                        .hint("conditions on shape variables belong in `input x: ... where ...`, checked by `expect ... given`"),
                );
                None
            }
            _ => {
                self.emit(err(codes::TYPE, format!("cannot apply `{}` to the dimensions `{x}` and `{y}`", op.symbol())).at(span, "here"));
                None
            }
        }
    }

    /// Adds a primitive node after checking its shape rule; reports a mismatch at the argument.
    pub(crate) fn prim_node(&mut self, prim: Prim, args: Vec<(ValueId, Span)>, span: Span, what: &str) -> O<Ev> {
        self.prim_node_w(prim, args, vec![], span, what)
    }

    pub(crate) fn prim_node_w(&mut self, prim: Prim, args: Vec<(ValueId, Span)>, params: Vec<ParamId>, span: Span, what: &str) -> O<Ev> {
        let tys: Vec<TensorType> = args.iter().map(|(v, _)| self.g.values[*v].ty.clone()).collect();
        let shapes: Vec<&[u64]> = params.iter().map(|p| self.g.params[*p].shape.as_slice()).collect();
        match tfm_shape::infer(&prim, &tys, &shapes) {
            Ok(outs) => {
                let outputs: Vec<ValueId> = outs.into_iter().map(|t| self.new_value(t, span)).collect();
                self.g.nodes.push(Node { op: Op::Prim { prim, params }, inputs: args.iter().map(|a| a.0).collect(), outputs: outputs.clone(), span });
                if outputs.len() == 1 {
                    Some(Ev::Tensor(outputs[0]))
                } else {
                    Some(Ev::Tuple(outputs))
                }
            }
            Err(e) => {
                let mut d = err(codes::SHAPE, format!("shape mismatch in `{what}`: {e}"));
                match e.arg.and_then(|i| args.get(i)) {
                    Some((v, s)) => {
                        d = d.at(*s, format!("this is `{}`", self.g.values[*v].ty));
                        let vs = self.g.values[*v].span;
                        if vs != *s {
                            let label = match &self.g.values[*v].name {
                                Some(n) => format!("`{n}` was produced here"),
                                None => "produced here".to_string(),
                            };
                            d = d.with(vs, label);
                        }
                    }
                    None => d = d.at(span, "here"),
                }
                // Where the expected type comes from: the layer's declaration (its sizes).
                if let Some(ps) = params.first().map(|p| self.g.params[*p].span) {
                    if d.labels.iter().all(|l| l.span != ps) {
                        d = d.with(ps, format!("`{what}` is declared here"));
                    }
                }
                if let Some(h) = e.hint {
                    d = d.hint(h);
                }
                self.emit(d);
                None
            }
        }
    }

    // ----- calls -----

    fn resolve_callee(&self, p: &ast::Path, for_layer: bool) -> Callee {
        let m = &self.world.modules[self.module];
        match p.segments.as_slice() {
            [one] => {
                let n = one.name.as_str();
                if !for_layer && self.insts.contains_key(n) {
                    return Callee::Inst(n.to_string());
                }
                if let Some(r) = m.items.get(n) {
                    return Callee::Item(*r);
                }
                prim_callee(n)
            }
            [ns, name] => match m.namespaces.get(&ns.name) {
                Some(mid) => {
                    let target = &self.world.modules[*mid];
                    if let Some(r) = target.items.get(&name.name) {
                        return Callee::Item(*r);
                    }
                    if target.is_std {
                        return prim_callee(&name.name);
                    }
                    Callee::Unknown
                }
                None => Callee::Unknown,
            },
            _ => Callee::Unknown,
        }
    }

    fn unknown_callee(&mut self, p: &'w ast::Path, for_layer: bool) {
        let m = &self.world.modules[self.module];
        if let [ns, name] = p.segments.as_slice() {
            if let Some(mid) = m.namespaces.get(&ns.name) {
                let target = &self.world.modules[*mid];
                let mut cands: Vec<&str> = target.items.keys().map(|s| s.as_str()).collect();
                if target.is_std {
                    cands.extend(prims::LAYERS.iter().chain(prims::FUNCTIONS).chain(prims::BUILTINS).copied());
                }
                let mut d = err(codes::UNKNOWN, format!("`{}` has no `{}`", ns.name, name.name)).at(name.span, "not found in this namespace");
                if let Some(s) = did_you_mean(&name.name, cands) {
                    d = d.hint(format!("did you mean `{}.{s}`?", ns.name));
                }
                self.emit(d);
                return;
            }
            if !self.insts.contains_key(&ns.name) {
                self.unknown(&ns.name, ns.span);
                return;
            }
        }
        if p.segments.len() == 1 {
            self.unknown(&p.segments[0].name, p.span);
            return;
        }
        let what = if for_layer { "a layer" } else { "a function" };
        self.emit(err(codes::UNKNOWN, format!("`{}` is not {what}", p.dotted())).at(p.span, "cannot be called"));
    }

    /// Reports an unknown name with a did-you-mean over everything in scope.
    pub(crate) fn unknown(&mut self, n: &str, span: Span) {
        let m = &self.world.modules[self.module];
        let mut cands: Vec<&str> = vec![];
        cands.extend(self.params.keys().map(|s| s.as_str()));
        cands.extend(self.tensors.keys().map(|s| s.as_str()));
        cands.extend(self.insts.keys().map(|s| s.as_str()));
        cands.extend(self.shape_vars.iter().map(|s| s.as_str()));
        cands.extend(m.items.keys().map(|s| s.as_str()));
        cands.extend(m.namespaces.keys().map(|s| s.as_str()));
        cands.extend(prims::LAYERS.iter().chain(prims::FUNCTIONS).chain(prims::BUILTINS).copied());
        let mut d = err(codes::UNKNOWN, format!("unknown name `{n}`")).at(span, "not found in this scope");
        if n == "std" {
            d = d.hint("add `import std` at the top of the file");
        } else if let Some(s) = did_you_mean(n, cands) {
            d = d.hint(format!("did you mean `{s}`?"));
        }
        self.emit(d);
    }

    fn call(&mut self, c: &'w ast::Call) -> O<Ev> {
        match self.resolve_callee(&c.callee, false) {
            Callee::Inst(n) => self.apply(&n, c),
            Callee::Func(f) => prims::function(self, f, c),
            Callee::Builtin(f) => prims::builtin(self, f, c),
            Callee::Item(r) => {
                let kind = if matches!(self.world.item(r), ast::Item::Block(_)) { "block" } else { "model" };
                let n = c.callee.dotted();
                self.emit(
                    err(codes::KIND, format!("`{n}` is a {kind}: declare an instance before applying it"))
                        .at(c.callee.span, "needs an instance")
                        .hint(format!("`layer name = {n}(...)`, then `name(x)`")),
                );
                None
            }
            Callee::LayerPrim(p) => {
                self.emit(
                    err(codes::KIND, format!("`{p}` is a layer with weights: declare an instance before applying it"))
                        .at(c.callee.span, "needs an instance")
                        .hint(format!("`layer name = {p}(...)`, then `name(x)`")),
                );
                None
            }
            Callee::Unknown => {
                self.unknown_callee(&c.callee, false);
                None
            }
        }
    }

    /// Applies a layer instance to arguments.
    fn apply(&mut self, n: &str, c: &'w ast::Call) -> O<Ev> {
        match self.insts.get(n)? {
            Inst::Poisoned => None,
            Inst::Prim { spec, params } => {
                let (spec, params) = (spec.clone(), params.clone());
                prims::apply_layer(self, n, &spec, params, c)
            }
            Inst::Child { child, block, ports, outs, repeat, .. } => {
                let (child, block, ports, outs, repeat) = (*child, block.clone(), ports.clone(), outs.clone(), *repeat);
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                let what = format!("`{n}` (an instance of `{block}`)");
                let slots = self.bind_args(&what, &names, &c.args, c.span)?;
                let mut args = vec![];
                for (i, s) in slots.iter().enumerate() {
                    match s {
                        Some(a) => {
                            let v = self.eval(&a.value).and_then(|ev| self.need_tensor(ev, a.value.span))?;
                            args.push((v, a.value.span));
                        }
                        None => {
                            self.emit(
                                err(codes::MISSING_ARG, format!("missing input `{}` for {what}", ports[i].name))
                                    .at(c.span, format!("`{}` is not given", ports[i].name))
                                    .with(ports[i].span, "input declared here")
                                    .hint(format!("pass {} tensor(s): {}", ports.len(), names.join(", "))),
                            );
                            return None;
                        }
                    }
                }
                let env = self.unify(&ports, &args, &block)?;
                let out_tys: Vec<TensorType> = if repeat {
                    vec![self.g.values[args[0].0].ty.clone()]
                } else {
                    outs.iter().map(|t| TensorType { dtype: t.dtype, shape: t.shape.iter().map(|d| d.subst(&env)).collect() }).collect()
                };
                let outputs: Vec<ValueId> = out_tys.into_iter().map(|t| self.new_value(t, c.span)).collect();
                self.g.nodes.push(Node { op: Op::Apply { child }, inputs: args.iter().map(|a| a.0).collect(), outputs: outputs.clone(), span: c.span });
                if outputs.len() == 1 {
                    Some(Ev::Tensor(outputs[0]))
                } else {
                    Some(Ev::Tuple(outputs))
                }
            }
        }
    }

    /// Binds the block's shape variables to the argument dims and checks every port.
    fn unify(&mut self, ports: &[PortSig], args: &[(ValueId, Span)], block: &str) -> O<HashMap<String, Dim>> {
        let mut env: HashMap<String, Dim> = HashMap::new();
        for (p, (v, _)) in ports.iter().zip(args) {
            let at = &self.g.values[*v].ty;
            if at.shape.len() != p.ty.shape.len() {
                continue;
            }
            for (pd, ad) in p.ty.shape.iter().zip(&at.shape) {
                if let Some(var) = pd.as_var() {
                    env.entry(var.to_string()).or_insert_with(|| ad.clone());
                }
            }
        }
        for (p, (v, s)) in ports.iter().zip(args) {
            let at = self.g.values[*v].ty.clone();
            let want = TensorType { dtype: p.ty.dtype, shape: p.ty.shape.iter().map(|d| d.subst(&env)).collect() };
            if want != at {
                let mut d = err(codes::PORT, format!("shape mismatch: input `{}` of `{block}` expected `{want}`, found `{at}`", p.name)).at(*s, format!("this is `{at}`"));
                let vs = self.g.values[*v].span;
                if vs != *s {
                    let label = match &self.g.values[*v].name {
                        Some(n) => format!("`{n}` was produced here"),
                        None => "produced here".to_string(),
                    };
                    d = d.with(vs, label);
                }
                d = d.with(p.span, format!("`{}` declared as `{}` here", p.name, p.ty));
                self.emit(d);
                return None;
            }
        }
        Some(env)
    }

    /// Matches positional then named arguments to `names`. Reports unknown, duplicated and
    /// surplus arguments; missing ones are left `None` for the caller to judge.
    pub(crate) fn bind_args(&mut self, what: &str, names: &[&str], args: &'w [ast::Arg], call_span: Span) -> O<Vec<Option<&'w ast::Arg>>> {
        let mut slots: Vec<Option<&ast::Arg>> = vec![None; names.len()];
        let mut ok = true;
        let mut pos = 0;
        for a in args {
            match &a.name {
                None => {
                    if pos >= names.len() {
                        self.emit(
                            err(codes::BAD_ARG, format!("too many arguments for {what}: expected at most {}, found {}", names.len(), args.iter().filter(|a| a.name.is_none()).count()))
                                .at(a.span, "extra argument")
                                .hint(if names.is_empty() { "it takes no arguments".to_string() } else { format!("it takes: {}", names.join(", ")) }),
                        );
                        ok = false;
                        break;
                    }
                    slots[pos] = Some(a);
                    pos += 1;
                }
                Some(n) => match names.iter().position(|x| *x == n.name) {
                    Some(i) => {
                        if let Some(prev) = slots[i] {
                            self.emit(err(codes::BAD_ARG, format!("argument `{}` is given twice", n.name)).at(a.span, "given again here").with(prev.span, "first given here"));
                            ok = false;
                        } else {
                            slots[i] = Some(a);
                        }
                    }
                    None => {
                        let mut d = err(codes::UNKNOWN_ARG, format!("unknown argument `{}` for {what}", n.name)).at(n.span, "no such argument");
                        d = match did_you_mean(&n.name, names.iter().copied()) {
                            Some(s) => d.hint(format!("did you mean `{s}`?")),
                            None if names.is_empty() => d.hint("it takes no arguments"),
                            None => d.hint(format!("it takes: {}", names.join(", "))),
                        };
                        self.emit(d);
                        ok = false;
                    }
                },
            }
        }
        let _ = call_span;
        ok.then_some(slots)
    }

    // ----- conversions -----

    pub(crate) fn need_val(&mut self, ev: Ev, span: Span) -> O<Val> {
        match ev {
            Ev::Val(v) => Some(v),
            Ev::Dim(d) => match d.as_const() {
                Some(c) => Some(Val::Int(c)),
                None => {
                    self.emit(err(codes::SYMBOLIC, format!("expected a compile-time value, found the shape-dependent `{d}`")).at(span, "depends on a shape variable"));
                    None
                }
            },
            Ev::Sym(s) => {
                self.unknown(&s, span);
                None
            }
            other => {
                self.emit(err(codes::TYPE, format!("expected a compile-time value, found {}", describe(&other))).at(span, "not a compile-time value"));
                None
            }
        }
    }

    pub(crate) fn need_int(&mut self, ev: Ev, span: Span) -> O<i64> {
        match self.need_val(ev, span)? {
            Val::Int(i) => Some(i),
            other => {
                self.emit(err(codes::TYPE, format!("expected an int, found {} `{other}`", other.type_name())).at(span, "not an int"));
                None
            }
        }
    }

    pub(crate) fn need_size(&mut self, ev: Ev, span: Span, what: &str) -> O<u64> {
        let i = self.need_int(ev, span)?;
        if i <= 0 {
            self.emit(err(codes::BAD_DIM, format!("expected a positive size for `{what}`, found {i}")).at(span, "must be at least 1"));
            return None;
        }
        Some(i as u64)
    }

    pub(crate) fn need_float(&mut self, ev: Ev, span: Span) -> O<f64> {
        match self.need_val(ev, span)? {
            v @ (Val::Int(_) | Val::Float(_)) => v.as_f64(),
            other => {
                self.emit(err(codes::TYPE, format!("expected a float, found {} `{other}`", other.type_name())).at(span, "not a number"));
                None
            }
        }
    }

    pub(crate) fn need_bool(&mut self, ev: Ev, span: Span) -> O<bool> {
        match self.need_val(ev, span)? {
            Val::Bool(b) => Some(b),
            other => {
                self.emit(err(codes::TYPE, format!("expected a bool, found {} `{other}`", other.type_name())).at(span, "not a bool"));
                None
            }
        }
    }

    pub(crate) fn need_choice(&mut self, ev: Ev, span: Span, options: &[&str]) -> O<String> {
        let s = match ev {
            Ev::Sym(s) | Ev::Val(Val::Choice(s)) => s,
            other => {
                self.emit(err(codes::TYPE, format!("expected one of {}, found {}", options.join(" | "), describe(&other))).at(span, "not a choice"));
                return None;
            }
        };
        if options.contains(&s.as_str()) {
            return Some(s);
        }
        let mut d = err(codes::TYPE, format!("expected one of {}, found `{s}`", options.join(" | "))).at(span, "not an option");
        if let Some(x) = did_you_mean(&s, options.iter().copied()) {
            d = d.hint(format!("did you mean `{x}`?"));
        }
        self.emit(d);
        None
    }

    pub(crate) fn need_dim(&mut self, ev: Ev, span: Span) -> O<Dim> {
        match ev {
            Ev::Dim(d) => Some(d),
            Ev::Val(Val::Int(i)) => Some(Dim::constant(i)),
            Ev::Sym(s) => {
                self.unknown(&s, span);
                None
            }
            other => {
                self.emit(err(codes::TYPE, format!("expected a dimension (an int or a shape variable), found {}", describe(&other))).at(span, "not a dimension"));
                None
            }
        }
    }

    pub(crate) fn need_tensor(&mut self, ev: Ev, span: Span) -> O<ValueId> {
        match ev {
            Ev::Tensor(v) => Some(v),
            Ev::Tuple(vs) if vs.len() == 1 => Some(vs[0]),
            Ev::Sym(s) => {
                self.unknown(&s, span);
                None
            }
            other => {
                self.emit(err(codes::TYPE, format!("expected a tensor, found {}", describe(&other))).at(span, "not a tensor"));
                None
            }
        }
    }

    pub(crate) fn need_list(&mut self, ev: Ev, span: Span) -> O<Vec<(Ev, Span)>> {
        match ev {
            Ev::List(l) => Some(l),
            other => {
                self.emit(err(codes::TYPE, format!("expected a list `[...]`, found {}", describe(&other))).at(span, "not a list"));
                None
            }
        }
    }

    /// Reports names that resolve to nothing anywhere in the body (used for unchecked blocks,
    /// where missing parameter values silence the ordinary checks).
    fn resolve_walk(&mut self, decl: &'w ast::Decl) {
        let mut options: HashSet<String> = prims::ACT_NAMES.iter().chain(["normal", "zeros", "ones", "constant"].iter()).map(|s| s.to_string()).collect();
        for s in &decl.body {
            if let Stmt::Param { ty: TypeExpr::Choice(opts), .. } = s {
                options.extend(opts.iter().map(|o| o.name.clone()));
            }
        }
        let mut exprs: Vec<&'w Expr> = vec![];
        let mut calls: Vec<&'w ast::Call> = vec![];
        for s in &decl.body {
            match s {
                Stmt::Param { default, constraint, .. } => {
                    exprs.extend(default.iter());
                    exprs.extend(constraint.iter().map(|c| &c.cond));
                }
                Stmt::Input { constraint, .. } => exprs.extend(constraint.iter().map(|c| &c.cond)),
                Stmt::Layer { init, .. } => match init {
                    ast::LayerInit::Call(c) => calls.push(c),
                    ast::LayerInit::Repeat { count, body, .. } => {
                        exprs.push(count);
                        calls.push(body);
                    }
                },
                Stmt::Let { value, .. } => exprs.push(value),
                Stmt::Output { value, .. } => exprs.extend(value.iter()),
                Stmt::Require { cond, .. } => exprs.push(cond),
                Stmt::Objective { args, .. } => exprs.extend(args.iter().map(|a| &a.value)),
                Stmt::Expect { .. } => {}
            }
        }
        for c in calls {
            if matches!(self.resolve_callee(&c.callee, true), Callee::Unknown) {
                self.unknown_callee(&c.callee, true);
            }
            for a in &c.args {
                self.walk_expr(&a.value, &options);
            }
        }
        for e in exprs {
            self.walk_expr(e, &options);
        }
    }

    fn walk_expr(&mut self, e: &'w Expr, options: &HashSet<String>) {
        match &e.kind {
            ExprKind::Name(p) => {
                let Some(first) = p.segments.first() else { return };
                let known = self.params.contains_key(&first.name)
                    || self.tensors.contains_key(&first.name)
                    || self.insts.contains_key(&first.name)
                    || self.shape_vars.contains(&first.name)
                    || self.output_spans.contains_key(&first.name)
                    || (p.segments.len() == 1 && options.contains(&first.name));
                if !known && p.segments.len() == 1 {
                    self.unknown(&first.name, e.span);
                } else if !known {
                    self.unknown(&first.name, first.span);
                }
            }
            ExprKind::List(items) => items.iter().for_each(|i| self.walk_expr(i, options)),
            ExprKind::Call(c) => {
                if matches!(self.resolve_callee(&c.callee, false), Callee::Unknown) {
                    self.unknown_callee(&c.callee, false);
                }
                c.args.iter().for_each(|a| self.walk_expr(&a.value, options));
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                self.walk_expr(lhs, options);
                self.walk_expr(rhs, options);
            }
            ExprKind::Unary { expr, .. } | ExprKind::Transpose(expr) => self.walk_expr(expr, options),
            ExprKind::If { cond, then, otherwise } => {
                self.walk_expr(cond, options);
                self.walk_expr(then, options);
                self.walk_expr(otherwise, options);
            }
            _ => {}
        }
    }

    pub(crate) fn value_type(&self, v: ValueId) -> &TensorType {
        &self.g.values[v].ty
    }


    pub(crate) fn emit_pub(&mut self, d: Diagnostic) {
        self.emit(d)
    }
}

pub(crate) enum Callee {
    Inst(String),
    Item(ItemRef),
    Func(&'static str),
    Builtin(&'static str),
    LayerPrim(&'static str),
    Unknown,
}

fn prim_callee(n: &str) -> Callee {
    if let Some(p) = prims::LAYERS.iter().find(|p| **p == n) {
        return Callee::LayerPrim(p);
    }
    if let Some(p) = prims::FUNCTIONS.iter().find(|p| **p == n) {
        return Callee::Func(p);
    }
    if let Some(p) = prims::BUILTINS.iter().find(|p| **p == n) {
        return Callee::Builtin(p);
    }
    Callee::Unknown
}

pub(crate) fn describe(ev: &Ev) -> String {
    match ev {
        Ev::Val(v) => format!("{} `{v}`", v.type_name()),
        Ev::Dim(d) => format!("the dimension `{d}`"),
        Ev::Tensor(_) => "a tensor".into(),
        Ev::Tuple(v) => format!("{} tensors", v.len()),
        Ev::Sym(s) => format!("the name `{s}`"),
        Ev::List(_) => "a list".into(),
        Ev::Str(s) => format!("the string \"{s}\""),
    }
}

fn type_name(t: &TypeExpr) -> String {
    match t {
        TypeExpr::Int(_) => "int".into(),
        TypeExpr::Float(_) => "float".into(),
        TypeExpr::Bool(_) => "bool".into(),
        TypeExpr::Choice(opts) => opts.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(" | "),
    }
}

/// Converts a value to a parameter's declared type (an int is accepted for a float).
pub(crate) fn coerce(v: &Val, ty: &TypeExpr) -> Result<Val, String> {
    match (ty, v) {
        (TypeExpr::Int(_), Val::Int(_)) | (TypeExpr::Float(_), Val::Float(_)) | (TypeExpr::Bool(_), Val::Bool(_)) => Ok(v.clone()),
        (TypeExpr::Float(_), Val::Int(i)) => Ok(Val::Float(*i as f64)),
        (TypeExpr::Choice(opts), Val::Choice(c)) => {
            if opts.iter().any(|o| o.name == *c) {
                Ok(v.clone())
            } else {
                let names: Vec<&str> = opts.iter().map(|o| o.name.as_str()).collect();
                let dym = did_you_mean(c, names.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                Err(format!("expected one of {}, found `{c}`{dym}", names.join(" | ")))
            }
        }
        (t, v) => Err(format!("expected {}, found {} `{v}`", type_name(t), v.type_name())),
    }
}

/// Names used as plain identifiers in `e`.
pub(crate) fn collect_names(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Name(p) => {
            if let Some(one) = p.as_single() {
                out.push(one.name.clone());
            }
        }
        ExprKind::List(items) => items.iter().for_each(|i| collect_names(i, out)),
        ExprKind::Call(c) => c.args.iter().for_each(|a| collect_names(&a.value, out)),
        ExprKind::Binary { lhs, rhs, .. } => {
            collect_names(lhs, out);
            collect_names(rhs, out);
        }
        ExprKind::Unary { expr, .. } | ExprKind::Transpose(expr) => collect_names(expr, out),
        ExprKind::If { cond, then, otherwise } => {
            collect_names(cond, out);
            collect_names(then, out);
            collect_names(otherwise, out);
        }
        _ => {}
    }
}

/// Finds a weight by its name relative to `g` (`attn.q.weight`), through block and shared
/// repeat children.
fn find_param(g: &Graph, name: &str) -> Option<(Vec<ChildId>, ParamId)> {
    if let Some(i) = g.params.iter().position(|p| p.name == name) {
        return Some((vec![], i));
    }
    for (ci, c) in g.children.iter().enumerate() {
        let rest = name.strip_prefix(c.name.as_str()).and_then(|r| r.strip_prefix('.'));
        let Some(rest) = rest else { continue };
        if matches!(c.kind, ChildKind::Repeat { shared: false, .. }) {
            continue;
        }
        if let Some((mut path, id)) = find_param(&c.graph, rest) {
            path.insert(0, ci);
            return Some((path, id));
        }
    }
    None
}

/// Trainable parameters, tied weights once, fixed tables excluded; repeats multiply.
pub(crate) fn count_params(g: &Graph) -> Option<u128> {
    let mut total: u128 = 0;
    for p in &g.params {
        if p.kind == ParamKind::Trainable {
            let n = p.shape.iter().try_fold(1u128, |a, &b| a.checked_mul(b as u128))?;
            total = total.checked_add(n)?;
        }
    }
    for c in &g.children {
        let n = count_params(&c.graph)?;
        let n = match c.kind {
            ChildKind::Block | ChildKind::Repeat { shared: true, .. } => n,
            ChildKind::Repeat { count, shared: false } => n.checked_mul(count as u128)?,
        };
        total = total.checked_add(n)?;
    }
    Some(total)
}
