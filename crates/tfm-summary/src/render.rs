//! Text output: the human summary table and the deterministic model snapshot.

use crate::account::{numel, range_label, tied_weights, graph_params, objective_text};
use crate::Summary;
use std::fmt::Write;
use tfm_ir::{ChildKind, Graph, Model, ParamKind};

/// `124439808` -> `124,439,808`.
pub fn group_digits(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    let phase = s.len() % 3;
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && i % 3 == phase {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes in binary units: `474.70 MiB`.
pub fn human_bytes(b: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    format!("{x:.2} {}", UNITS[u])
}

/// FLOPs with an SI prefix: `1.23 GFLOP`.
pub fn human_flops(f: f64) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut x = f;
    let mut u = 0;
    while x.abs() >= 1000.0 && u + 1 < UNITS.len() {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{x:.0} FLOP")
    } else {
        format!("{x:.2} {}FLOP", UNITS[u])
    }
}

/// Left-aligned columns separated by two spaces; trailing spaces trimmed.
fn columns(rows: &[Vec<String>], right: &[bool]) -> String {
    let ncol = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; ncol];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i] - c.chars().count();
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human-readable summary table.
pub fn render_table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model {}", s.model);
    if let Some(doc) = &s.doc {
        for line in doc.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    let binds: Vec<String> = s.bindings.iter().map(|b| format!("{} = {}", b.name, b.value)).collect();
    let _ = writeln!(out, "sizes: batch {}, seq {}{}", s.batch, s.seq, if binds.is_empty() { String::new() } else { format!(" ({})", binds.join(", ")) });
    for p in &s.inputs {
        let _ = writeln!(out, "input  {}: {}{}", p.name, p.ty, p.doc.as_ref().map(|d| format!("  // {d}")).unwrap_or_default());
    }
    for p in &s.outputs {
        let _ = writeln!(out, "output {}: {}{}", p.name, p.ty, p.doc.as_ref().map(|d| format!("  // {d}")).unwrap_or_default());
    }
    if let Some(o) = &s.objective {
        let _ = writeln!(out, "objective {o}");
    }
    out.push('\n');

    let mut table = vec![vec![
        "layer".to_string(),
        "kind".to_string(),
        "trainable".to_string(),
        "fixed".to_string(),
        "output".to_string(),
        "FLOPs/token".to_string(),
        "weights".to_string(),
        "activations".to_string(),
    ]];
    for r in &s.rows {
        table.push(vec![
            r.name.clone(),
            r.kind.clone(),
            group_digits(r.trainable),
            group_digits(r.fixed),
            r.output.clone().unwrap_or_default(),
            human_flops(r.flops_per_token),
            human_bytes(r.weight_bytes),
            human_bytes(r.activation_bytes),
        ]);
    }
    let t = &s.totals;
    table.push(vec![
        "total".to_string(),
        String::new(),
        group_digits(t.trainable),
        group_digits(t.fixed),
        String::new(),
        human_flops(t.flops_per_token),
        human_bytes(t.weight_bytes),
        human_bytes(t.activation_bytes),
    ]);
    out.push_str(&columns(&table, &[false, false, true, true, false, true, true, true]));

    let docs: Vec<_> = s.rows.iter().filter_map(|r| r.doc.as_ref().map(|d| (r, d))).collect();
    if !docs.is_empty() {
        out.push('\n');
        for (r, d) in docs {
            let _ = writeln!(out, "{} ({}):", r.name, r.kind);
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }

    out.push('\n');
    let _ = writeln!(out, "parameters: {} trainable, {} fixed", group_digits(t.trainable), group_digits(t.fixed));
    for w in &s.tied {
        let _ = writeln!(out, "tied: {} {:?} read in {} places, counted once", w.name, w.shape, w.reads);
    }
    let _ = writeln!(
        out,
        "forward: {} per step, {} per token; training step ~ {}",
        human_flops(t.flops_forward as f64),
        human_flops(t.flops_per_token),
        human_flops(t.flops_train_step as f64)
    );
    let _ = writeln!(out, "memory (f32): weights {}, gradients {}, AdamW state {}", human_bytes(t.weight_bytes), human_bytes(t.gradient_bytes), human_bytes(t.optimizer_bytes));
    let _ = writeln!(out, "activations (estimate): {}; training total ~ {}", human_bytes(t.activation_bytes), human_bytes(t.training_bytes));
    out.push('\n');
    for n in &s.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

/// Collects `(name, shape, copies, kind)` for every weight, repeats not expanded.
fn weight_rows(g: &Graph, prefix: &str, copies: u128, out: &mut Vec<(String, Vec<u64>, u128, ParamKind)>) {
    for p in &g.params {
        out.push((tfm_ir::join(prefix, &p.name), p.shape.clone(), copies, p.kind));
    }
    for c in &g.children {
        match c.kind {
            ChildKind::Block | ChildKind::Repeat { shared: true, .. } => {
                weight_rows(&c.graph, &tfm_ir::join(prefix, &c.name), copies, out)
            }
            ChildKind::Repeat { count, shared: false } => weight_rows(
                &c.graph,
                &tfm_ir::join(prefix, &format!("{}.{}", c.name, range_label(count))),
                copies.saturating_mul(count as u128),
                out,
            ),
        }
    }
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// The deterministic text of a model that `tfm check` compares with the stored snapshot:
/// parameter values, port types, the objective, every weight (repeats as `blocks.{0..11}.*`,
/// never expanded) with its shape and element count, and the totals.
pub fn snapshot(model: &Model) -> String {
    let g = &model.graph;
    let mut out = String::new();
    let _ = writeln!(out, "model {}", model.name);
    if let Some(doc) = &model.doc {
        for line in doc.lines() {
            let _ = writeln!(out, "/// {line}");
        }
    }
    if !model.params.is_empty() {
        out.push_str("params:\n");
        for (n, v) in &model.params {
            let _ = writeln!(out, "  {n} = {v}");
        }
    }
    let ty = |v: usize| g.values.get(v).map(|x| x.ty.to_string()).unwrap_or_else(|| "?".to_string());
    out.push_str("inputs:\n");
    for p in &model.inputs {
        let _ = writeln!(out, "  {}: {}", p.name, ty(p.value));
    }
    out.push_str("outputs:\n");
    for p in &model.outputs {
        let _ = writeln!(out, "  {}: {}", p.name, ty(p.value));
    }
    if let Some(o) = objective_text(model) {
        let _ = writeln!(out, "objective: {o}");
    }
    out.push_str("weights:\n");
    let mut rows = vec![];
    weight_rows(g, "", 1, &mut rows);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, shape, copies, kind)| {
            let n = numel(shape);
            let count = if *copies == 1 {
                group_digits(n)
            } else {
                format!("{} x {}", group_digits(n), group_digits(*copies))
            };
            let mut r = vec![format!("  {name}"), shape_text(shape), count];
            if *kind == ParamKind::Fixed {
                r.push("fixed".to_string());
            }
            r
        })
        .collect();
    out.push_str(&columns(&table, &[false, false, false, false]));
    let p = graph_params(g);
    out.push_str("totals:\n");
    let _ = writeln!(out, "  trainable: {}", group_digits(p.trainable));
    let _ = writeln!(out, "  fixed: {}", group_digits(p.fixed));
    for t in tied_weights(g) {
        let _ = writeln!(out, "  tied: {} (read in {} places, counted once)", t.name, t.reads);
    }
    out
}
