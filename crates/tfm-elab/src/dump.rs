//! A compact, stable text dump of a checked model (used by snapshot tests and `--dump`-style output).

use std::fmt::Write;
use tfm_ir::{ChildKind, Graph, Init, Model, Op, ParamKind, Prim};

/// Renders `model` as indented text: parameters, weights with shapes, children, values, nodes.
pub fn dump_model(model: &Model) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "model {}", model.name);
    let params: Vec<String> = model.params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let _ = writeln!(s, "  params: {}", params.join(", "));
    let _ = writeln!(s, "  shape vars: {}", model.shape_vars.join(", "));
    graph(&mut s, &model.graph, 1);
    let ins: Vec<String> = model.inputs.iter().map(|p| format!("{}=%{}", p.name, p.value)).collect();
    let outs: Vec<String> = model.outputs.iter().map(|p| format!("{}=%{}", p.name, p.value)).collect();
    let _ = writeln!(s, "  inputs: {}", ins.join(", "));
    let _ = writeln!(s, "  outputs: {}", outs.join(", "));
    if let Some(o) = &model.objective {
        let args: Vec<String> = o.args.iter().map(|a| format!("%{a}")).collect();
        let _ = writeln!(s, "  objective: {:?}({})", o.kind, args.join(", "));
    }
    s
}

fn init(i: &Init) -> String {
    match i {
        Init::Normal { std, residual: false } => format!("normal({std})"),
        Init::Normal { std, residual: true } => format!("normal({std}, residual)"),
        Init::Zeros => "zeros".into(),
        Init::Ones => "ones".into(),
        Init::Constant(c) => format!("constant({c})"),
        Init::Sinusoidal => "sinusoidal".into(),
    }
}

fn graph(s: &mut String, g: &Graph, depth: usize) {
    let pad = "  ".repeat(depth);
    for p in &g.params {
        let shape: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
        let kind = if p.kind == ParamKind::Fixed { " fixed" } else { "" };
        let decay = if p.decay { " decay" } else { "" };
        let _ = writeln!(s, "{pad}weight {} [{}] {}{kind}{decay}", p.name, shape.join(", "), init(&p.init));
    }
    for c in &g.children {
        let kind = match c.kind {
            ChildKind::Block => "block".to_string(),
            ChildKind::Repeat { count, shared: false } => format!("repeat {count}"),
            ChildKind::Repeat { count, shared: true } => format!("repeat {count} shared"),
        };
        let _ = writeln!(s, "{pad}child {} = {kind} {}", c.name, c.block);
        graph(s, &c.graph, depth + 1);
    }
    for &i in &g.inputs {
        let v = &g.values[i];
        let _ = writeln!(s, "{pad}%{i} {}: {} (input)", v.name.as_deref().unwrap_or("_"), v.ty);
    }
    for n in &g.nodes {
        let outs: Vec<String> = n.outputs.iter().map(|o| format!("%{o}")).collect();
        let ins: Vec<String> = n.inputs.iter().map(|o| format!("%{o}")).collect();
        let tys: Vec<String> = n.outputs.iter().map(|o| g.values[*o].ty.to_string()).collect();
        let names: Vec<String> = n.outputs.iter().filter_map(|o| g.values[*o].name.clone()).collect();
        let named = if names.is_empty() { String::new() } else { format!("  // {}", names.join(", ")) };
        let op = match &n.op {
            Op::Prim { prim, params } => {
                let ps: Vec<&str> = params.iter().map(|p| g.params[*p].name.as_str()).collect();
                let w = if ps.is_empty() { String::new() } else { format!(" [{}]", ps.join(", ")) };
                format!("{}({}){w}", prim_text(prim), ins.join(", "))
            }
            Op::Apply { child } => format!("apply {}({})", g.children[*child].name, ins.join(", ")),
            Op::Weight { path, param } => {
                let mut gg = g;
                let mut prefix = vec![];
                for c in path {
                    prefix.push(gg.children[*c].name.clone());
                    gg = &gg.children[*c].graph;
                }
                prefix.push(gg.params[*param].name.clone());
                format!("weight {}", prefix.join("."))
            }
        };
        let _ = writeln!(s, "{pad}{} = {op} : {}{named}", outs.join(", "), tys.join(", "));
    }
    if !g.outputs.is_empty() {
        let outs: Vec<String> = g.outputs.iter().map(|o| format!("%{o}")).collect();
        let _ = writeln!(s, "{pad}return {}", outs.join(", "));
    }
}

fn dims(ds: &[tfm_ir::Dim]) -> String {
    ds.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

/// `Debug`, except that dims print as written (`T`, `2*T`) rather than as polynomials.
fn prim_text(p: &Prim) -> String {
    match p {
        Prim::Arange { n } => format!("Arange {{ n: {n} }}"),
        Prim::Reshape { shape } => format!("Reshape {{ shape: [{}] }}", dims(shape)),
        Prim::Expand { shape } => format!("Expand {{ shape: [{}] }}", dims(shape)),
        Prim::Split { axis, sizes } => format!("Split {{ axis: {axis}, sizes: [{}] }}", dims(sizes)),
        Prim::Slice { axis, start, end } => format!("Slice {{ axis: {axis}, start: {start}, end: {end} }}"),
        Prim::Alibi { heads, len } => format!("Alibi {{ heads: {heads}, len: {len} }}"),
        Prim::RelativeBias { buckets, max_distance, bidirectional, q_len, k_len } => {
            format!("RelativeBias {{ buckets: {buckets}, max_distance: {max_distance}, bidirectional: {bidirectional}, q_len: {q_len}, k_len: {k_len} }}")
        }
        other => format!("{other:?}"),
    }
}
