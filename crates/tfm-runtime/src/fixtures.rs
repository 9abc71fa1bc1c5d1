//! Hand-built IR for tests and benchmarks: a small graph builder and a nanoGPT-style model,
//! independent of the front end.

use tfm_diag::Span;
use tfm_ir::*;

/// Builds one graph value by value.
#[derive(Default)]
pub struct GraphBuilder {
    pub g: Graph,
}

pub fn f32t(shape: Vec<Dim>) -> TensorType {
    TensorType { dtype: DType::F32, shape }
}

pub fn i64t(shape: Vec<Dim>) -> TensorType {
    TensorType { dtype: DType::I64, shape }
}

/// Shorthand: a known dim.
pub fn k(n: u64) -> Dim {
    Dim::known(n)
}

/// Shorthand: a shape variable.
pub fn v(name: &str) -> Dim {
    Dim::var(name)
}

impl GraphBuilder {
    pub fn value(&mut self, ty: TensorType, name: Option<&str>) -> ValueId {
        self.g.values.push(Value { ty, name: name.map(str::to_string), span: Span::default() });
        self.g.values.len() - 1
    }
    pub fn input(&mut self, ty: TensorType, name: &str) -> ValueId {
        let id = self.value(ty, Some(name));
        self.g.inputs.push(id);
        id
    }
    pub fn param(&mut self, name: &str, shape: Vec<u64>, init: Init) -> ParamId {
        self.g.params.push(ParamDef {
            name: name.to_string(),
            shape,
            kind: if init == Init::Sinusoidal { ParamKind::Fixed } else { ParamKind::Trainable },
            decay: false,
            init,
            span: Span::default(),
        });
        self.g.params.len() - 1
    }
    pub fn node(&mut self, op: Op, inputs: Vec<ValueId>, outs: Vec<TensorType>) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = outs.into_iter().map(|t| self.value(t, None)).collect();
        self.g.nodes.push(Node { op, inputs, outputs: outputs.clone(), span: Span::default() });
        outputs
    }
    /// A primitive with one output.
    pub fn prim(&mut self, prim: Prim, params: Vec<ParamId>, inputs: Vec<ValueId>, out: TensorType) -> ValueId {
        self.node(Op::Prim { prim, params }, inputs, vec![out])[0]
    }
    /// Reads a weight of this graph as a value.
    pub fn weight(&mut self, param: ParamId) -> ValueId {
        let shape = self.g.params[param].shape.iter().map(|&d| Dim::known(d)).collect();
        self.node(Op::Weight { path: vec![], param }, vec![], vec![f32t(shape)])[0]
    }
    pub fn child(&mut self, name: &str, kind: ChildKind, graph: Graph) -> ChildId {
        self.g.children.push(Child {
            name: name.to_string(),
            kind,
            block: name.to_string(),
            doc: None,
            graph,
            span: Span::default(),
        });
        self.g.children.len() - 1
    }
}

/// Wraps a root graph as a model whose ports are the graph's inputs and outputs.
pub fn model(name: &str, g: Graph, params: Vec<(String, ConstValue)>, objective: Option<(ObjectiveKind, Vec<ValueId>)>) -> Model {
    let inputs = g
        .inputs
        .iter()
        .map(|&v| Port { name: g.values[v].name.clone().unwrap_or_else(|| format!("in{v}")), value: v, doc: None })
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|&v| Port { name: g.values[v].name.clone().unwrap_or_else(|| format!("out{v}")), value: v, doc: None })
        .collect();
    let mut shape_vars = vec![];
    for &i in &g.inputs {
        for d in &g.values[i].ty.shape {
            for var in d.vars() {
                if !shape_vars.contains(&var) {
                    shape_vars.push(var);
                }
            }
        }
    }
    Model {
        name: name.to_string(),
        doc: None,
        params,
        shape_vars,
        inputs,
        outputs,
        objective: objective.map(|(kind, args)| Objective { kind, args, span: Span::default() }),
        graph: g,
        span: Span::default(),
    }
}

/// The sizes of a GPT.
#[derive(Clone, Copy, Debug)]
pub struct GptSize {
    pub vocab: u64,
    pub context: u64,
    pub layers: u64,
    pub heads: u64,
    pub d_model: u64,
    pub dropout: f64,
}

/// GPT-2 style decoder: learned positions, pre-LayerNorm blocks with fused QKV attention and a
/// GELU MLP, final LayerNorm, head tied to the token embedding; objective `next_token`.
pub fn gpt(s: GptSize) -> Model {
    let c = s.d_model;
    let bt = |last: Dim| f32t(vec![v("B"), v("T"), last]);
    let mut blk = GraphBuilder::default();
    let ln1w = blk.param("ln_1.weight", vec![c], Init::Ones);
    let ln1b = blk.param("ln_1.bias", vec![c], Init::Zeros);
    let qkvw = blk.param("attn.qkv.weight", vec![3 * c, c], Init::Normal { std: 0.02, residual: false });
    let qkvb = blk.param("attn.qkv.bias", vec![3 * c], Init::Zeros);
    let ow = blk.param("attn.o.weight", vec![c, c], Init::Normal { std: 0.02, residual: true });
    let ob = blk.param("attn.o.bias", vec![c], Init::Zeros);
    let ln2w = blk.param("ln_2.weight", vec![c], Init::Ones);
    let ln2b = blk.param("ln_2.bias", vec![c], Init::Zeros);
    let upw = blk.param("mlp.up.weight", vec![4 * c, c], Init::Normal { std: 0.02, residual: false });
    let upb = blk.param("mlp.up.bias", vec![4 * c], Init::Zeros);
    let dw = blk.param("mlp.down.weight", vec![c, 4 * c], Init::Normal { std: 0.02, residual: true });
    let db = blk.param("mlp.down.bias", vec![c], Init::Zeros);
    let x = blk.input(bt(k(c)), "x");
    let a = blk.prim(Prim::LayerNorm { eps: 1e-5, bias: true }, vec![ln1w, ln1b], vec![x], bt(k(c)));
    let cfg = AttentionCfg {
        heads: s.heads,
        kv_heads: s.heads,
        head_dim: c / s.heads,
        causal: true,
        bias: true,
        k_bias: true,
        out_bias: true,
        fused_qkv: true,
        window: 0,
        rotary: false,
        rope_theta: 10000.0,
        dropout: s.dropout,
        scale: true,
        cross: false,
        has_mask: false,
        has_bias: false,
    };
    let a = blk.prim(Prim::Attention(cfg), vec![qkvw, ow, qkvb, ob], vec![a], bt(k(c)));
    let a = blk.prim(Prim::Dropout { p: s.dropout }, vec![], vec![a], bt(k(c)));
    let h = blk.prim(Prim::Add, vec![], vec![x, a], bt(k(c)));
    let m = blk.prim(Prim::LayerNorm { eps: 1e-5, bias: true }, vec![ln2w, ln2b], vec![h], bt(k(c)));
    let m = blk.prim(Prim::Mlp { act: Activation::Gelu, bias: true }, vec![upw, upb, dw, db], vec![m], bt(k(c)));
    let m = blk.prim(Prim::Dropout { p: s.dropout }, vec![], vec![m], bt(k(c)));
    let y = blk.prim(Prim::Add, vec![], vec![h, m], bt(k(c)));
    blk.g.outputs.push(y);

    let mut g = GraphBuilder::default();
    let tok = g.param("tok.weight", vec![s.vocab, c], Init::Normal { std: 0.02, residual: false });
    let pos = g.param("pos.weight", vec![s.context, c], Init::Normal { std: 0.02, residual: false });
    let lnw = g.param("ln_f.weight", vec![c], Init::Ones);
    let lnb = g.param("ln_f.bias", vec![c], Init::Zeros);
    let blocks = g.child("blocks", ChildKind::Repeat { count: s.layers, shared: false }, blk.g);
    let tokens = g.input(i64t(vec![v("B"), v("T")]), "tokens");
    let ar = g.prim(Prim::Arange { n: v("T") }, vec![], vec![], i64t(vec![v("T")]));
    let te = g.prim(Prim::Embedding, vec![tok], vec![tokens], bt(k(c)));
    let pe = g.prim(Prim::Embedding, vec![pos], vec![ar], f32t(vec![v("T"), k(c)]));
    let x = g.prim(Prim::Add, vec![], vec![te, pe], bt(k(c)));
    let x = g.prim(Prim::Dropout { p: s.dropout }, vec![], vec![x], bt(k(c)));
    let x = g.node(Op::Apply { child: blocks }, vec![x], vec![bt(k(c))])[0];
    let x = g.prim(Prim::LayerNorm { eps: 1e-5, bias: true }, vec![lnw, lnb], vec![x], bt(k(c)));
    let w = g.weight(tok);
    let wt = g.prim(Prim::Permute { axes: vec![1, 0] }, vec![], vec![w], f32t(vec![k(c), k(s.vocab)]));
    let logits = g.prim(Prim::MatMul, vec![], vec![x, wt], bt(k(s.vocab)));
    g.g.values[logits].name = Some("logits".into());
    g.g.outputs.push(logits);
    let params = vec![
        ("vocab".to_string(), ConstValue::Int(s.vocab as i64)),
        ("context".to_string(), ConstValue::Int(s.context as i64)),
        ("layers".to_string(), ConstValue::Int(s.layers as i64)),
    ];
    model("gpt", g.g, params, Some((ObjectiveKind::NextToken, vec![logits, tokens])))
}
