//! Resolves names, loads imports and the standard library, applies overrides, and elaborates
//! `.tfm` models into validated IR.
//!
//! # Phases
//! 1. [`load`]: parse the file, its imports (relative to the importing file) and, on `import std`,
//!    the embedded standard library ([`tfm_std::FILES`], shown as `<std>/nn.tfm`); report import
//!    cycles and duplicate top-level names.
//! 2. Select the models (`--model`), resolve variants (`model b = a { x = 1 }`) and `--set`
//!    overrides into parameter values.
//! 3. [`elab`]: elaborate each model body: parameters in order, inputs (their types introduce the
//!    shape variables `B`, `T`), constraints, layer instances (primitive weights via
//!    [`tfm_shape::LayerSpec`], block instances and repeats as [`tfm_ir::Child`] graphs elaborated
//!    once), tensor bindings checked by [`tfm_shape::infer`], outputs, objective, expectations.
//!    Block bodies keep their own shape variables symbolic; at an application the ports are
//!    unified with the argument types and the outputs substituted ([`tfm_ir::Dim::subst`]).
//!
//! Weights read by `Op::Prim` are listed in the order documented in [`tfm_shape`].
//!
//! # Error codes
//! Names and structure of calls:
//! - `E0101` unknown name (with a did-you-mean over everything in scope)
//! - `E0102` duplicate definition (parameters, inputs, layers, outputs, items, imports, objectives)
//! - `E0103` unknown argument
//! - `E0104` missing argument
//! - `E0105` bad argument list (too many positional arguments, an argument given twice)
//! - `E0106` unknown model (`--model`)
//! - `E0107` an override names no parameter of the model
//! - `E0108` wrong kind of thing (a layer used as a tensor, a function declared as a layer, ...)
//! - `E0109` recursive block
//!
//! Types and shapes:
//! - `E0201` type mismatch of a compile-time value (expected int, found float)
//! - `E0202` tensor shape mismatch in a primitive (`expected f32[*, 768], found f32[B, T, 512]`)
//! - `E0203` shape mismatch at a block input port
//! - `E0204` integer division that is not exact
//! - `E0205` arithmetic overflow
//! - `E0206` division by zero
//! - `E0207` unknown dtype
//! - `E0208` invalid size (zero or negative dimension, repeat count)
//! - `E0209` wrong number of tensors bound
//! - `E0210` objective argument of the wrong type
//! - `E0211` a condition or value that depends on a shape variable where a constant is needed
//!
//! Constraints and expectations:
//! - `E0301` constraint violated (`where`, `require`), with the author's message
//! - `E0302` expectation failed (`expect params`, `expect out: type`)
//! - `E0303` a model parameter has no value
//! - `E0304` an override value that cannot be parsed
//!
//! Imports and structure:
//! - `E0401` an imported file cannot be read
//! - `E0402` import cycle
//! - `E0403` `repeat` of a block whose first input and output types differ
//! - `E0404` misplaced statement (objective or expect in a block)
//! - `E0405` the selected item is not a model

mod dump;
mod elab;
mod load;
mod prims;
mod value;

pub use dump::dump_model;

use elab::{Ctx, Given};
use load::{ItemRef, World};
use std::collections::{HashMap, HashSet};
use tfm_diag::{did_you_mean, Diagnostic, FileId, SourceMap, Span};
use tfm_syntax::ast;
use value::Val;

/// The stable diagnostic codes of this phase (see the crate docs).
pub mod codes {
    pub const UNKNOWN: &str = "E0101";
    pub const DUPLICATE: &str = "E0102";
    pub const UNKNOWN_ARG: &str = "E0103";
    pub const MISSING_ARG: &str = "E0104";
    pub const BAD_ARG: &str = "E0105";
    pub const UNKNOWN_MODEL: &str = "E0106";
    pub const UNKNOWN_OVERRIDE: &str = "E0107";
    pub const KIND: &str = "E0108";
    pub const RECURSION: &str = "E0109";
    pub const TYPE: &str = "E0201";
    pub const SHAPE: &str = "E0202";
    pub const PORT: &str = "E0203";
    pub const INEXACT: &str = "E0204";
    pub const OVERFLOW: &str = "E0205";
    pub const DIV_ZERO: &str = "E0206";
    pub const DTYPE: &str = "E0207";
    pub const BAD_DIM: &str = "E0208";
    pub const ARITY: &str = "E0209";
    pub const OBJECTIVE: &str = "E0210";
    pub const SYMBOLIC: &str = "E0211";
    pub const CONSTRAINT: &str = "E0301";
    pub const EXPECT: &str = "E0302";
    pub const NO_VALUE: &str = "E0303";
    pub const BAD_OVERRIDE: &str = "E0304";
    pub const IMPORT: &str = "E0401";
    pub const IMPORT_CYCLE: &str = "E0402";
    pub const REPEAT: &str = "E0403";
    pub const STRUCTURE: &str = "E0404";
    pub const NOT_MODEL: &str = "E0405";
}

/// Options from the command line.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// `--set k=v`, raw strings.
    pub overrides: Vec<(String, String)>,
    /// `--model NAME`.
    pub model: Option<String>,
}

/// The result of one `expect` statement.
#[derive(Clone, Debug)]
pub struct ExpectOutcome {
    pub span: Span,
    pub description: String,
    pub passed: bool,
}

/// A model that elaborated without error.
#[derive(Clone, Debug)]
pub struct CheckedModel {
    pub model: tfm_ir::Model,
    pub file: FileId,
    pub expectations: Vec<ExpectOutcome>,
}

/// Everything a check produced.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub models: Vec<CheckedModel>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks the file at `path`; imports are relative to its folder.
pub fn check_file(path: &std::path::Path, opts: &CheckOptions, sources: &mut SourceMap) -> Checked {
    let name = path.to_string_lossy().replace('\\', "/");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let d = Diagnostic::error(codes::IMPORT, format!("cannot read `{name}`: {}", e.to_string().to_lowercase())).hint("check the path");
            return Checked { models: vec![], diagnostics: vec![d] };
        }
    };
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p }).unwrap_or(std::path::Path::new("."));
    let canonical = std::fs::canonicalize(path).ok();
    check_text(&name, &text, dir, canonical, opts, sources)
}

/// Checks source text; imports are relative to the current directory.
pub fn check_source(name: &str, text: &str, opts: &CheckOptions, sources: &mut SourceMap) -> Checked {
    check_text(name, text, std::path::Path::new("."), None, opts, sources)
}

fn check_text(name: &str, text: &str, dir: &std::path::Path, canonical: Option<std::path::PathBuf>, opts: &CheckOptions, sources: &mut SourceMap) -> Checked {
    let mut world = World::default();
    let root = world.load_root(name, text, dir, canonical, sources);
    let file = world.modules[root].files[0].0;
    let mut diags = std::mem::take(&mut world.diags);
    let mut models = vec![];

    // Select the models.
    let items = &world.modules[root].files[0].1.items;
    let mut selected: Vec<usize> = vec![];
    match &opts.model {
        Some(m) => match items.iter().position(|it| it.name().name == *m) {
            Some(i) if matches!(items[i], ast::Item::Block(_)) => {
                diags.push(
                    Diagnostic::error(codes::NOT_MODEL, format!("`{m}` is a block, not a model"))
                        .at(items[i].name().span, "a block")
                        .hint("select a model with `--model`; blocks are checked where they are used"),
                );
            }
            Some(i) => selected.push(i),
            None => {
                let names: Vec<&str> = items.iter().filter(|it| !matches!(it, ast::Item::Block(_))).map(|it| it.name().name.as_str()).collect();
                let mut d = Diagnostic::error(codes::UNKNOWN_MODEL, format!("no model named `{m}` in `{name}`"));
                d = match did_you_mean(m, names.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None if names.is_empty() => d.hint("the file declares no models"),
                    None => d.hint(format!("models: {}", names.join(", "))),
                };
                diags.push(d);
            }
        },
        None => selected = (0..items.len()).filter(|i| !matches!(items[*i], ast::Item::Block(_))).collect(),
    }

    // Parse `--set` values once.
    let mut cli: Vec<(String, String, Val)> = vec![];
    for (k, v) in &opts.overrides {
        match value::parse_override(v) {
            Some(val) => cli.push((k.clone(), format!("{k}={v}"), val)),
            None => diags.push(
                Diagnostic::error(codes::BAD_OVERRIDE, format!("cannot read the value of `--set {k}={v}`"))
                    .hint("expected an int (`24`), a float (`0.1`), `true`/`false`, or a choice name (`swiglu`)"),
            ),
        }
    }

    let mut cx = Ctx::new(&world);
    for i in selected {
        let r = ItemRef { module: root, file: 0, item: i };
        let before = cx.errors();
        if let Some(m) = check_model(&mut cx, r, &cli) {
            if cx.errors() == before {
                models.push(CheckedModel { model: m.0, file, expectations: m.1 });
            }
        }
    }
    // Blocks of this file that no model used: check them with what is known without arguments.
    let used: HashSet<ItemRef> = cx.used.clone();
    for (i, it) in world.modules[root].files[0].1.items.iter().enumerate() {
        let r = ItemRef { module: root, file: 0, item: i };
        if let ast::Item::Block(d) = it {
            if !used.contains(&r) && opts.model.is_none() {
                cx.check_unused_block(r, d);
            }
        }
    }
    diags.extend(std::mem::take(&mut cx.diags));
    Checked { models, diagnostics: dedup(diags) }
}

fn dedup(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diags.len());
    for d in diags {
        if !out.iter().any(|o| o.code == d.code && o.message == d.message && o.primary_span() == d.primary_span()) {
            out.push(d);
        }
    }
    out
}

fn decl_params(d: &ast::Decl) -> Vec<&ast::Ident> {
    d.body
        .iter()
        .filter_map(|s| match s {
            ast::Stmt::Param { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

/// Elaborates one model or variant with the command-line overrides.
fn check_model(cx: &mut Ctx<'_>, r: ItemRef, cli: &[(String, String, Val)]) -> Option<(tfm_ir::Model, Vec<ExpectOutcome>)> {
    let world = cx.world;
    let item = world.item(r);
    let (name, doc, span) = match item {
        ast::Item::Model(d) => (d.name.name.clone(), d.doc.clone(), d.span),
        ast::Item::Variant(v) => (v.name.name.clone(), v.doc.clone(), v.span),
        ast::Item::Block(_) => return None,
    };
    let (base, mut given) = resolve_variant(cx, r)?;
    let decl = match world.item(base) {
        ast::Item::Model(d) | ast::Item::Block(d) => d,
        ast::Item::Variant(_) => return None,
    };
    let pnames = decl_params(decl);
    let mut ok = true;
    for (k, raw, val) in cli {
        if pnames.iter().any(|p| p.name == *k) {
            given.insert(k.clone(), Given { val: val.clone(), span: None, raw: Some(raw.clone()) });
        } else {
            let mut d = Diagnostic::error(codes::UNKNOWN_OVERRIDE, format!("model `{name}` has no parameter `{k}` (from `--set {raw}`)"));
            d = match did_you_mean(k, pnames.iter().map(|p| p.name.as_str())) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint(format!("its parameters: {}", pnames.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "))),
            };
            cx.diags.push(d);
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let el = cx.elab_decl(base, &given, true)?;
    let model = tfm_ir::Model {
        name,
        doc: doc.or_else(|| decl.doc.clone()),
        params: el.params,
        shape_vars: el.shape_vars,
        inputs: el.inputs,
        outputs: el.outputs,
        objective: el.objective,
        graph: el.graph,
        span,
    };
    Some((model, el.expectations))
}

/// Follows `model b = a { ... }` to the base model, merging overrides (the outermost wins).
fn resolve_variant(cx: &mut Ctx<'_>, r: ItemRef) -> Option<(ItemRef, HashMap<String, Given>)> {
    let world = cx.world;
    let mut chain: Vec<ItemRef> = vec![];
    let mut cur = r;
    loop {
        if chain.contains(&cur) {
            let names: Vec<String> = chain.iter().chain(std::iter::once(&cur)).map(|x| format!("`{}`", world.item(*x).name().name)).collect();
            cx.diags.push(
                Diagnostic::error(codes::RECURSION, format!("variant cycle: {}", names.join(" -> ")))
                    .at(world.item(r).name().span, "this variant never reaches a model")
                    .hint("a variant must be based on a model"),
            );
            return None;
        }
        chain.push(cur);
        match world.item(cur) {
            ast::Item::Variant(v) => {
                let m = &world.modules[cur.module];
                let next = match v.base.segments.as_slice() {
                    [one] => m.items.get(&one.name).copied(),
                    [ns, n] => m.namespaces.get(&ns.name).and_then(|mid| world.modules[*mid].items.get(&n.name).copied()),
                    _ => None,
                };
                match next {
                    Some(n) if matches!(world.item(n), ast::Item::Block(_)) => {
                        cx.diags.push(
                            Diagnostic::error(codes::NOT_MODEL, format!("`{}` is a block; a variant must be based on a model", v.base.dotted()))
                                .at(v.base.span, "a block")
                                .hint("declare it with `model`, or wrap it in a model"),
                        );
                        return None;
                    }
                    Some(n) => cur = n,
                    None => {
                        let names: Vec<&str> = m.items.keys().map(|s| s.as_str()).collect();
                        let mut d = Diagnostic::error(codes::UNKNOWN, format!("unknown model `{}`", v.base.dotted())).at(v.base.span, "not found");
                        if let Some(s) = did_you_mean(&v.base.dotted(), names) {
                            d = d.hint(format!("did you mean `{s}`?"));
                        }
                        cx.diags.push(d);
                        return None;
                    }
                }
            }
            _ => break,
        }
    }
    let base = cur;
    let decl = match world.item(base) {
        ast::Item::Model(d) | ast::Item::Block(d) => d,
        ast::Item::Variant(_) => return None,
    };
    let pnames = decl_params(decl);
    let mut given: HashMap<String, Given> = HashMap::new();
    let mut ok = true;
    // Innermost variant first so outer ones overwrite.
    for vr in chain.iter().rev() {
        let ast::Item::Variant(v) = world.item(*vr) else { continue };
        for (k, e) in &v.overrides {
            if !pnames.iter().any(|p| p.name == k.name) {
                let mut d = Diagnostic::error(codes::UNKNOWN_OVERRIDE, format!("`{}` has no parameter `{}`", decl.name.name, k.name)).at(k.span, "not a parameter");
                if let Some(s) = did_you_mean(&k.name, pnames.iter().map(|p| p.name.as_str())) {
                    d = d.hint(format!("did you mean `{s}`?"));
                }
                cx.diags.push(d.with(decl.name.span, "model declared here"));
                ok = false;
                continue;
            }
            match cx.const_expr(vr.module, e) {
                Some(val) => {
                    given.insert(k.name.clone(), Given { val, span: Some(e.span), raw: None });
                }
                None => ok = false,
            }
        }
    }
    ok.then_some((base, given))
}
