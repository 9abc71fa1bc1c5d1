//! Unit tests over hand-built IR whose counts are worked out by hand in the comments.

use crate::{count_params, render_table, snapshot, summarize, SummaryOptions};
use tfm_diag::Span;
use tfm_ir::*;

fn val(g: &mut Graph, dtype: DType, shape: Vec<Dim>, name: &str) -> ValueId {
    g.values.push(Value { ty: TensorType { dtype, shape }, name: Some(name.to_string()), span: Span::default() });
    g.values.len() - 1
}

fn param(g: &mut Graph, name: &str, shape: Vec<u64>, kind: ParamKind) -> ParamId {
    g.params.push(ParamDef {
        name: name.to_string(),
        shape,
        kind,
        init: Init::Normal { std: 0.02, residual: false },
        decay: true,
        span: Span::default(),
    });
    g.params.len() - 1
}

fn node(g: &mut Graph, op: Op, inputs: Vec<ValueId>, outputs: Vec<ValueId>) {
    g.nodes.push(Node { op, inputs, outputs, span: Span::default() });
}

fn bt(d: u64) -> Vec<Dim> {
    vec![Dim::var("B"), Dim::var("T"), Dim::known(d)]
}

fn model(name: &str, graph: Graph, shape_vars: &[&str]) -> Model {
    let inputs = graph.inputs.iter().map(|&v| Port { name: graph.values[v].name.clone().unwrap_or_default(), value: v, doc: None }).collect();
    let outputs = graph.outputs.iter().map(|&v| Port { name: graph.values[v].name.clone().unwrap_or_default(), value: v, doc: None }).collect();
    Model {
        name: name.to_string(),
        doc: Some("a hand-built test model".to_string()),
        params: vec![("d".to_string(), ConstValue::Int(3))],
        shape_vars: shape_vars.iter().map(|s| s.to_string()).collect(),
        inputs,
        outputs,
        objective: None,
        graph,
        span: Span::default(),
    }
}

/// `y = linear(x)`, in 3 -> out 5 with bias.
fn linear_model() -> Model {
    let mut g = Graph::default();
    let x = val(&mut g, DType::F32, bt(3), "x");
    let w = param(&mut g, "proj.weight", vec![5, 3], ParamKind::Trainable);
    let b = param(&mut g, "proj.bias", vec![5], ParamKind::Trainable);
    let y = val(&mut g, DType::F32, bt(5), "y");
    node(&mut g, Op::Prim { prim: Prim::Linear { bias: true }, params: vec![w, b] }, vec![x], vec![y]);
    g.inputs = vec![x];
    g.outputs = vec![y];
    model("lin", g, &["B", "T"])
}

#[test]
fn linear_layer_params_flops_and_memory() {
    let m = linear_model();
    let s = summarize(&m, &SummaryOptions { batch: 2, seq: 7 });
    // 5*3 weights + 5 biases.
    assert_eq!(s.totals.trainable, 20);
    assert_eq!(s.totals.fixed, 0);
    // 14 rows; each 2*3*5 multiply-add FLOPs plus 5 bias adds = 35 per row.
    assert_eq!(s.totals.flops_forward, 14 * 35);
    assert_eq!(s.totals.flops_per_token, 35.0);
    assert_eq!(s.totals.flops_train_step, 3 * 14 * 35);
    // Output f32[2, 7, 5] = 70 floats = 280 bytes.
    assert_eq!(s.totals.activation_bytes, 280);
    assert_eq!(s.totals.weight_bytes, 80);
    assert_eq!(s.totals.gradient_bytes, 80);
    assert_eq!(s.totals.optimizer_bytes, 160);
    assert_eq!(s.totals.training_bytes, 80 + 80 + 160 + 280);
    assert_eq!(s.rows.len(), 1);
    assert_eq!(s.rows[0].name, "proj");
    assert_eq!(s.rows[0].kind, "linear");
    assert_eq!(s.rows[0].output.as_deref(), Some("f32[B, T, 5]"));
    assert_eq!(s.bindings.iter().map(|b| (b.name.as_str(), b.value)).collect::<Vec<_>>(), vec![("B", 2), ("T", 7)]);
    assert!(s.tied.is_empty());
}

/// A tied embedding: `h = tok(ids)`, `logits = h @ tok.weight^T` through a weight read.
fn tied_model() -> Model {
    let mut g = Graph::default();
    let ids = val(&mut g, DType::I64, vec![Dim::var("B"), Dim::var("T")], "ids");
    let w = param(&mut g, "tok.weight", vec![11, 4], ParamKind::Trainable);
    let table = param(&mut g, "pos.table", vec![16, 4], ParamKind::Fixed);
    let h = val(&mut g, DType::F32, bt(4), "h");
    node(&mut g, Op::Prim { prim: Prim::Embedding, params: vec![w] }, vec![ids], vec![h]);
    let wt = val(&mut g, DType::F32, vec![Dim::known(11), Dim::known(4)], "tok.weight");
    node(&mut g, Op::Weight { path: vec![], param: w }, vec![], vec![wt]);
    let wtt = val(&mut g, DType::F32, vec![Dim::known(4), Dim::known(11)], "");
    node(&mut g, Op::Prim { prim: Prim::Permute { axes: vec![1, 0] }, params: vec![] }, vec![wt], vec![wtt]);
    let logits = val(&mut g, DType::F32, bt(11), "logits");
    node(&mut g, Op::Prim { prim: Prim::MatMul, params: vec![] }, vec![h, wtt], vec![logits]);
    let _ = table;
    g.inputs = vec![ids];
    g.outputs = vec![logits];
    model("tied", g, &["B", "T"])
}

#[test]
fn tied_weight_is_counted_once_and_fixed_tables_apart() {
    let m = tied_model();
    let s = summarize(&m, &SummaryOptions { batch: 1, seq: 3 });
    assert_eq!(s.totals.trainable, 44);
    assert_eq!(s.totals.fixed, 64);
    assert_eq!(s.tied.len(), 1);
    assert_eq!(s.tied[0].name, "tok.weight");
    assert_eq!(s.tied[0].reads, 2);
    assert_eq!(s.totals.tied_savings, 44);
    // The matmul: 3 tokens x 11 outputs x 4 inner x 2.
    assert_eq!(s.totals.flops_forward, 3 * 11 * 4 * 2);
    // Embedding output 3*4 floats + logits 3*11 floats; the permute is a view.
    assert_eq!(s.totals.activation_bytes, (12 + 33) * 4);
    // Weights include the fixed table.
    assert_eq!(s.totals.weight_bytes, (44 + 64) * 4);
    assert_eq!(s.totals.optimizer_bytes, 44 * 8);
    let names: Vec<_> = s.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["tok", "pos", "(functions)"]);
    assert!(s.notes.iter().any(|n| n.contains("`tok.weight` is tied")));
    let snap = snapshot(&m);
    assert!(snap.contains("tied: tok.weight (read in 2 places, counted once)"), "{snap}");
    assert!(snap.contains("pos.table   [16, 4]  64  fixed"), "{snap}");
}

/// A layer body `y = x + linear(x)` (d = 8) repeated `count` times.
fn repeat_model(count: u64, shared: bool) -> Model {
    let mut body = Graph::default();
    let x = val(&mut body, DType::F32, bt(8), "x");
    let w = param(&mut body, "fc.weight", vec![8, 8], ParamKind::Trainable);
    let h = val(&mut body, DType::F32, bt(8), "h");
    node(&mut body, Op::Prim { prim: Prim::Linear { bias: false }, params: vec![w] }, vec![x], vec![h]);
    let y = val(&mut body, DType::F32, bt(8), "y");
    node(&mut body, Op::Prim { prim: Prim::Add, params: vec![] }, vec![x, h], vec![y]);
    body.inputs = vec![x];
    body.outputs = vec![y];

    let mut g = Graph::default();
    let x = val(&mut g, DType::F32, bt(8), "x");
    let y = val(&mut g, DType::F32, bt(8), "y");
    g.children.push(Child {
        name: "blocks".to_string(),
        kind: ChildKind::Repeat { count, shared },
        block: "layer".to_string(),
        doc: Some("a residual linear layer".to_string()),
        graph: body,
        span: Span::default(),
    });
    node(&mut g, Op::Apply { child: 0 }, vec![x], vec![y]);
    g.inputs = vec![x];
    g.outputs = vec![y];
    model("deep", g, &["B", "T"])
}

#[test]
fn repeats_multiply_and_are_not_expanded() {
    let m = repeat_model(12, false);
    let s = summarize(&m, &SummaryOptions { batch: 1, seq: 1 });
    assert_eq!(s.totals.trainable, 12 * 64);
    // Per copy and token: 2*8*8 for the linear, 8 for the add.
    assert_eq!(s.totals.flops_forward, 12 * (128 + 8));
    assert_eq!(s.rows[0].kind, "12 x layer");
    assert_eq!(s.rows[0].copies, 12);
    assert_eq!(s.rows[0].doc.as_deref(), Some("a residual linear layer"));
    let snap = snapshot(&m);
    assert!(snap.contains("blocks.{0..11}.fc.weight  [8, 8]  64 x 12"), "{snap}");

    let shared = summarize(&repeat_model(12, true), &SummaryOptions { batch: 1, seq: 1 });
    assert_eq!(shared.totals.trainable, 64);
    assert_eq!(shared.totals.flops_forward, 12 * (128 + 8));
    assert_eq!(shared.rows[0].kind, "12 x shared layer");
}

#[test]
fn huge_models_do_not_overflow_or_take_time() {
    // 10^15 copies of a 64-weight layer at seq 10^9: saturating u128 arithmetic, no expansion.
    let m = repeat_model(1_000_000_000_000_000, false);
    let s = summarize(&m, &SummaryOptions { batch: 1_000_000, seq: 1_000_000_000 });
    assert_eq!(s.totals.trainable, 64 * 1_000_000_000_000_000);
    assert_eq!(count_params(&m.graph), (64_000_000_000_000_000, 0));
    assert!(s.totals.flops_forward > 0);
    let table = render_table(&s);
    assert!(table.contains("64,000,000,000,000,000"), "{table}");
}

#[test]
fn attention_flops_follow_the_documented_formula() {
    let (d, heads, t) = (16u64, 4u64, 10u64);
    let mut g = Graph::default();
    let x = val(&mut g, DType::F32, bt(d), "x");
    let mut ps = vec![];
    for n in ["q", "k", "v", "o"] {
        ps.push(param(&mut g, &format!("attn.{n}.weight"), vec![d, d], ParamKind::Trainable));
    }
    let y = val(&mut g, DType::F32, bt(d), "y");
    let cfg = AttentionCfg {
        heads,
        kv_heads: heads,
        head_dim: d / heads,
        causal: true,
        bias: false,
        k_bias: false,
        out_bias: false,
        fused_qkv: false,
        window: 0,
        rotary: false,
        rope_theta: 10000.0,
        dropout: 0.0,
        scale: true,
        cross: false,
        has_mask: false,
        has_bias: false,
    };
    node(&mut g, Op::Prim { prim: Prim::Attention(cfg), params: ps }, vec![x], vec![y]);
    g.inputs = vec![x];
    g.outputs = vec![y];
    let m = model("attn", g, &["B", "T"]);
    let s = summarize(&m, &SummaryOptions { batch: 1, seq: t });
    // Per token: 2 * 4 * d^2 projections, 2 * 2 * T * d scores and weighted sum, 5 * heads * T softmax.
    let per_token = 2 * 4 * d * d + 4 * t * d + 5 * heads * t;
    assert_eq!(s.totals.flops_forward, (t * per_token) as u128);
    assert_eq!(s.totals.trainable, (4 * d * d) as u128);
    // Kept: output, q, merged heads (T*d each), k and v (T*d each), probabilities heads*T*T.
    assert_eq!(s.totals.activation_bytes, ((5 * t * d + heads * t * t) * 4) as u128);
}

#[test]
fn summary_serialises_to_json_and_yaml() {
    let s = summarize(&tied_model(), &SummaryOptions { batch: 2, seq: 3 });
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["totals"]["trainable"], 44);
    assert_eq!(json["rows"][0]["name"], "tok");
    let yaml = serde_yaml::to_string(&s).expect("yaml");
    assert!(yaml.contains("trainable: 44"), "{yaml}");
}

#[test]
fn snapshot_lists_params_ports_and_totals() {
    let snap = snapshot(&linear_model());
    let expected = "model lin
/// a hand-built test model
params:
  d = 3
inputs:
  x: f32[B, T, 3]
outputs:
  y: f32[B, T, 5]
weights:
  proj.weight  [5, 3]  15
  proj.bias    [5]     5
totals:
  trainable: 20
  fixed: 0
";
    assert_eq!(snap, expected);
}

#[test]
fn table_shows_rows_totals_and_notes() {
    let s = summarize(&tied_model(), &SummaryOptions { batch: 1, seq: 3 });
    let t = render_table(&s);
    assert!(t.contains("parameters: 44 trainable, 64 fixed"), "{t}");
    assert!(t.contains("tied: tok.weight [11, 4] read in 2 places, counted once"), "{t}");
    assert!(t.contains("note: fixed weights"), "{t}");
}
