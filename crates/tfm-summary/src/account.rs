//! The accounting walk: parameters, reads of tied weights, FLOPs and activation bytes per node.

use crate::{Binding, ConfigValue, PortSummary, Row, Summary, SummaryOptions, TiedWeight, Totals};
use std::collections::HashMap;
use tfm_ir::{Activation, ChildId, ChildKind, DimEnv, Graph, Model, Node, Op, ParamId, ParamKind, Prim, ValueId};

/// Bytes of one stored weight value (weights are kept in f32).
pub(crate) const WEIGHT_BYTES: u128 = 4;

/// Trainable and fixed elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params {
    pub trainable: u128,
    pub fixed: u128,
}

impl Params {
    fn add(self, o: Params) -> Params {
        Params { trainable: self.trainable.saturating_add(o.trainable), fixed: self.fixed.saturating_add(o.fixed) }
    }
    fn times(self, n: u128) -> Params {
        Params { trainable: self.trainable.saturating_mul(n), fixed: self.fixed.saturating_mul(n) }
    }
}

/// FLOPs and activation bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    flops: u128,
    act: u128,
}

impl Cost {
    fn add(self, o: Cost) -> Cost {
        Cost { flops: self.flops.saturating_add(o.flops), act: self.act.saturating_add(o.act) }
    }
    fn times(self, n: u128) -> Cost {
        Cost { flops: self.flops.saturating_mul(n), act: self.act.saturating_mul(n) }
    }
}

pub(crate) fn numel(shape: &[u64]) -> u128 {
    shape.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128))
}

/// How many copies of a child's weights exist.
pub(crate) fn weight_copies(kind: &ChildKind) -> u128 {
    match kind {
        ChildKind::Block | ChildKind::Repeat { shared: true, .. } => 1,
        ChildKind::Repeat { count, shared: false } => *count as u128,
    }
}

/// How many times a child's body runs per application.
fn run_copies(kind: &ChildKind) -> u128 {
    match kind {
        ChildKind::Block => 1,
        ChildKind::Repeat { count, .. } => *count as u128,
    }
}

/// Parameters of one copy of `g`, children included.
pub(crate) fn graph_params(g: &Graph) -> Params {
    let mut p = Params::default();
    for w in &g.params {
        let n = numel(&w.shape);
        match w.kind {
            ParamKind::Trainable => p.trainable = p.trainable.saturating_add(n),
            ParamKind::Fixed => p.fixed = p.fixed.saturating_add(n),
        }
    }
    for c in &g.children {
        p = p.add(graph_params(&c.graph).times(weight_copies(&c.kind)));
    }
    p
}

/// Counts, for every weight (addressed by the child path from the root and its id), how many
/// places read it.
pub(crate) fn count_reads(g: &Graph, path: &mut Vec<ChildId>, reads: &mut HashMap<(Vec<ChildId>, ParamId), u32>) {
    for n in &g.nodes {
        match &n.op {
            Op::Prim { params, .. } => {
                for p in params {
                    *reads.entry((path.clone(), *p)).or_default() += 1;
                }
            }
            Op::Weight { path: sub, param } => {
                let mut key = path.clone();
                key.extend(sub);
                *reads.entry((key, *param)).or_default() += 1;
            }
            Op::Apply { .. } => {}
        }
    }
    for (i, c) in g.children.iter().enumerate() {
        path.push(i);
        count_reads(&c.graph, path, reads);
        path.pop();
    }
}

/// The display name of the weight at `path`/`param`, repeats shown as `name.{0..n-1}`.
pub(crate) fn weight_name(root: &Graph, path: &[ChildId], param: ParamId) -> Option<(String, Vec<u64>)> {
    let mut g = root;
    let mut prefix = String::new();
    for &c in path {
        let child = g.children.get(c)?;
        let seg = match child.kind {
            ChildKind::Repeat { count, shared: false } => format!("{}.{}", child.name, range_label(count)),
            _ => child.name.clone(),
        };
        prefix = tfm_ir::join(&prefix, &seg);
        g = &child.graph;
    }
    let p = g.params.get(param)?;
    Some((tfm_ir::join(&prefix, &p.name), p.shape.clone()))
}

/// `{0..11}` for 12 copies.
pub(crate) fn range_label(count: u64) -> String {
    if count == 0 {
        "{}".to_string()
    } else {
        format!("{{0..{}}}", count - 1)
    }
}

/// Evaluates value shapes under one binding of shape variables.
struct Shapes<'a> {
    g: &'a Graph,
    env: DimEnv,
    /// Set when some dim could not be evaluated (a variable left unbound).
    unknown: bool,
}

impl Shapes<'_> {
    fn dims(&mut self, v: ValueId) -> Option<Vec<u128>> {
        let value = self.g.values.get(v)?;
        let mut out = Vec::with_capacity(value.ty.shape.len());
        for d in &value.ty.shape {
            match d.eval(&self.env) {
                Some(n) => out.push(n as u128),
                None => {
                    self.unknown = true;
                    return None;
                }
            }
        }
        Some(out)
    }
    fn numel(&mut self, v: ValueId) -> u128 {
        self.dims(v).map(|d| d.iter().fold(1u128, |a, &x| a.saturating_mul(x))).unwrap_or(0)
    }
    fn bytes(&mut self, v: ValueId) -> u128 {
        let b = self.g.values.get(v).map(|x| x.ty.dtype.bytes() as u128).unwrap_or(0);
        self.numel(v).saturating_mul(b)
    }
    fn last_dim(&mut self, v: ValueId) -> u128 {
        self.dims(v).and_then(|d| d.last().copied()).unwrap_or(0)
    }
}

/// Multiplies a list of factors with saturation.
fn prod(xs: &[u128]) -> u128 {
    xs.iter().fold(1u128, |a, &x| a.saturating_mul(x))
}

/// Binds the shape variables of a child's inputs from the tensors it is applied to.
fn child_env(parent: &mut Shapes<'_>, node: &Node, child: &Graph) -> DimEnv {
    let mut env = parent.env.clone();
    for (&ci, &pi) in child.inputs.iter().zip(&node.inputs) {
        let (Some(cv), Some(actual)) = (child.values.get(ci), parent.dims(pi)) else { continue };
        for (d, &n) in cv.ty.shape.iter().zip(&actual) {
            if let (Some(var), Ok(n)) = (d.as_var(), u64::try_from(n)) {
                env.insert(var.to_string(), n);
            }
        }
    }
    env
}

/// One application of `g` under `env`: total FLOPs and activation bytes, with per-node costs.
fn graph_cost(g: &Graph, env: DimEnv, unknown: &mut bool) -> (Cost, Vec<Cost>) {
    let mut s = Shapes { g, env, unknown: false };
    let mut total = Cost::default();
    let mut per_node = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let c = node_cost(&mut s, n, unknown);
        total = total.add(c);
        per_node.push(c);
    }
    *unknown |= s.unknown;
    (total, per_node)
}

fn node_cost(s: &mut Shapes<'_>, n: &Node, unknown: &mut bool) -> Cost {
    let g = s.g;
    match &n.op {
        Op::Weight { .. } => Cost::default(),
        Op::Apply { child } => {
            let Some(c) = g.children.get(*child) else { return Cost::default() };
            let env = child_env(s, n, &c.graph);
            let (cost, _) = graph_cost(&c.graph, env, unknown);
            cost.times(run_copies(&c.kind))
        }
        Op::Prim { prim, params } => {
            let out_bytes: u128 = n.outputs.iter().map(|&v| s.bytes(v)).fold(0, u128::saturating_add);
            let out_numel: u128 = n.outputs.iter().map(|&v| s.numel(v)).fold(0, u128::saturating_add);
            let in0 = n.inputs.first().copied();
            let in_numel = in0.map(|v| s.numel(v)).unwrap_or(0);
            let weight = |i: usize| params.get(i).and_then(|&p| g.params.get(p)).map(|p| p.shape.clone());
            match prim {
                Prim::Embedding | Prim::Sinusoidal | Prim::RelativeBias { .. } => Cost { flops: 0, act: out_bytes },
                Prim::Linear { bias } => {
                    let w = weight(0).unwrap_or_default();
                    let (out, inp) = (w.first().copied().unwrap_or(0) as u128, w.get(1).copied().unwrap_or(0) as u128);
                    let rows = out_numel.checked_div(out).unwrap_or(0);
                    let mut flops = prod(&[2, rows, inp, out]);
                    if *bias {
                        flops = flops.saturating_add(rows.saturating_mul(out));
                    }
                    Cost { flops, act: out_bytes }
                }
                Prim::LayerNorm { .. } | Prim::RmsNorm { .. } => Cost { flops: out_numel.saturating_mul(5), act: out_bytes },
                Prim::Attention(cfg) => {
                    let (Some(x), mem) = (in0.and_then(|v| s.dims(v)), if cfg.cross { n.inputs.get(1).and_then(|&v| s.dims(v)) } else { None }) else {
                        return Cost { flops: 0, act: out_bytes };
                    };
                    let batch = x.first().copied().unwrap_or(1);
                    let t = if x.len() >= 2 { x[x.len() - 2] } else { 1 };
                    let d = x.last().copied().unwrap_or(0);
                    let (sk, kv_in) = match &mem {
                        Some(m) if m.len() >= 2 => (m[m.len() - 2], m[m.len() - 1]),
                        _ => (t, d),
                    };
                    let hd = cfg.head_dim as u128;
                    let q_w = (cfg.heads as u128).saturating_mul(hd);
                    let kv_w = (cfg.kv_heads as u128).saturating_mul(hd);
                    let s_eff = if cfg.window > 0 { sk.min(cfg.window as u128) } else { sk };
                    let heads = cfg.heads as u128;
                    let proj = prod(&[2, batch, t, d, q_w])
                        .saturating_add(prod(&[4, batch, sk, kv_in, kv_w]))
                        .saturating_add(prod(&[2, batch, t, q_w, d]));
                    let scores = prod(&[4, batch, heads, t, s_eff, hd]);
                    let softmax = prod(&[5, batch, heads, t, s_eff]);
                    let internal = prod(&[batch, t, q_w])
                        .saturating_mul(2)
                        .saturating_add(prod(&[2, batch, sk, kv_w]))
                        .saturating_add(prod(&[batch, heads, t, s_eff]))
                        .saturating_mul(4);
                    Cost { flops: proj.saturating_add(scores).saturating_add(softmax), act: out_bytes.saturating_add(internal) }
                }
                Prim::Mlp { act, .. } => {
                    let w = weight(0).unwrap_or_default();
                    let hidden = w.first().copied().unwrap_or(0) as u128;
                    let d = in0.map(|v| s.last_dim(v)).unwrap_or(0);
                    let rows = in_numel.checked_div(d).unwrap_or(0);
                    let gated = matches!(act, Activation::Swiglu | Activation::Geglu);
                    let mats: u128 = if gated { 3 } else { 2 };
                    let elem: u128 = if gated { 2 } else { 1 };
                    let kept: u128 = if gated { 3 } else { 2 };
                    let flops = prod(&[2, mats, rows, d, hidden]).saturating_add(prod(&[elem, rows, hidden]));
                    Cost { flops, act: out_bytes.saturating_add(prod(&[kept, rows, hidden, 4])) }
                }
                Prim::PatchEmbed { .. } | Prim::Conv1d { .. } => {
                    let w = weight(0).unwrap_or_default();
                    let fan_in = numel(w.get(1..).unwrap_or(&[]));
                    Cost { flops: prod(&[2, out_numel, fan_in]), act: out_bytes }
                }
                Prim::MatMul => {
                    let k = in0.map(|v| s.last_dim(v)).unwrap_or(0);
                    Cost { flops: prod(&[2, out_numel, k]), act: out_bytes }
                }
                Prim::Softmax { .. } | Prim::LogSoftmax { .. } => Cost { flops: out_numel.saturating_mul(5), act: out_bytes },
                Prim::Normalize => Cost { flops: out_numel.saturating_mul(3), act: out_bytes },
                Prim::Mean { .. } | Prim::Sum { .. } => Cost { flops: in_numel, act: out_bytes },
                Prim::Add
                | Prim::Sub
                | Prim::Mul
                | Prim::Div
                | Prim::Neg
                | Prim::Scale(_)
                | Prim::Act(_)
                | Prim::Tanh
                | Prim::Sigmoid
                | Prim::Exp
                | Prim::Sqrt
                | Prim::Dropout { .. } => Cost { flops: out_numel, act: out_bytes },
                Prim::Concat { .. } | Prim::Arange { .. } | Prim::Alibi { .. } | Prim::PadMask { .. } => {
                    Cost { flops: 0, act: out_bytes }
                }
                Prim::Reshape { .. }
                | Prim::Permute { .. }
                | Prim::Split { .. }
                | Prim::Slice { .. }
                | Prim::Expand { .. }
                | Prim::First => Cost::default(),
            }
        }
    }
}

/// The primitive's name as written in a spec.
pub(crate) fn prim_name(p: &Prim) -> &'static str {
    match p {
        Prim::Embedding => "embedding",
        Prim::Linear { .. } => "linear",
        Prim::LayerNorm { .. } => "layer_norm",
        Prim::RmsNorm { .. } => "rms_norm",
        Prim::Attention(_) => "attention",
        Prim::Mlp { .. } => "mlp",
        Prim::PatchEmbed { .. } => "patch_embed",
        Prim::Conv1d { .. } => "conv1d",
        Prim::Sinusoidal => "sinusoidal",
        Prim::RelativeBias { .. } => "relative_bias",
        Prim::Add => "add",
        Prim::Sub => "sub",
        Prim::Mul => "mul",
        Prim::Div => "div",
        Prim::Neg => "neg",
        Prim::MatMul => "matmul",
        Prim::Scale(_) => "scale",
        Prim::Act(_) => "activation",
        Prim::Tanh => "tanh",
        Prim::Sigmoid => "sigmoid",
        Prim::Exp => "exp",
        Prim::Sqrt => "sqrt",
        Prim::Softmax { .. } => "softmax",
        Prim::LogSoftmax { .. } => "log_softmax",
        Prim::Dropout { .. } => "dropout",
        Prim::Arange { .. } => "arange",
        Prim::Reshape { .. } => "reshape",
        Prim::Permute { .. } => "permute",
        Prim::Concat { .. } => "concat",
        Prim::Split { .. } => "split",
        Prim::Slice { .. } => "slice",
        Prim::Expand { .. } => "expand",
        Prim::First => "first",
        Prim::Mean { .. } => "mean",
        Prim::Sum { .. } => "sum",
        Prim::Normalize => "normalize",
        Prim::Alibi { .. } => "alibi",
        Prim::PadMask { .. } => "pad_mask",
    }
}

/// The instance a weight belongs to: its name without the last segment (`ln_1.weight` -> `ln_1`).
pub(crate) fn instance_of(param_name: &str) -> &str {
    match param_name.rsplit_once('.') {
        Some((inst, _)) => inst,
        None => param_name,
    }
}

/// The name of the row that gathers top-level weightless functions.
pub(crate) const FUNCTIONS_ROW: &str = "(functions)";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum RowKey<'a> {
    Instance(&'a str),
    Child(ChildId),
    Functions,
}

/// Builds the summary of a checked model.
pub fn summarize(model: &Model, opts: &SummaryOptions) -> Summary {
    let g = &model.graph;
    let mut env = DimEnv::new();
    let mut bindings = vec![];
    for (i, v) in model.shape_vars.iter().enumerate() {
        let value = if i == 0 { opts.batch } else { opts.seq };
        env.insert(v.clone(), value);
        bindings.push(Binding { name: v.clone(), value });
    }
    let tokens: u128 = if model.shape_vars.len() >= 2 {
        (opts.batch as u128).saturating_mul(opts.seq as u128)
    } else {
        opts.batch as u128
    };
    let per_token = |flops: u128| if tokens == 0 { 0.0 } else { flops as f64 / tokens as f64 };

    let mut unknown = false;
    let (total_cost, node_costs) = graph_cost(g, env, &mut unknown);

    // Rows in the order the graph first touches them.
    let mut order: Vec<RowKey> = vec![];
    let mut costs: HashMap<RowKey, Cost> = HashMap::new();
    let mut outputs: HashMap<RowKey, Vec<ValueId>> = HashMap::new();
    let mut kinds: HashMap<RowKey, String> = HashMap::new();
    for (n, c) in g.nodes.iter().zip(&node_costs) {
        let key = match &n.op {
            Op::Prim { params, prim } => match params.first().and_then(|&p| g.params.get(p)) {
                Some(p) => {
                    let k = RowKey::Instance(instance_of(&p.name));
                    kinds.entry(k).or_insert_with(|| prim_name(prim).to_string());
                    k
                }
                None => RowKey::Functions,
            },
            Op::Apply { child } => RowKey::Child(*child),
            Op::Weight { path, param } => match path.first() {
                Some(&c) => RowKey::Child(c),
                None => match g.params.get(*param) {
                    Some(p) => RowKey::Instance(instance_of(&p.name)),
                    None => RowKey::Functions,
                },
            },
        };
        if !order.contains(&key) {
            order.push(key);
        }
        let e = costs.entry(key).or_default();
        *e = e.add(*c);
        if !matches!(n.op, Op::Weight { .. }) && key != RowKey::Functions {
            outputs.insert(key, n.outputs.clone());
        }
    }
    for p in &g.params {
        let k = RowKey::Instance(instance_of(&p.name));
        if !order.contains(&k) {
            order.push(k);
        }
    }
    for i in 0..g.children.len() {
        if !order.contains(&RowKey::Child(i)) {
            order.push(RowKey::Child(i));
        }
    }
    // The functions row goes last.
    if let Some(pos) = order.iter().position(|k| *k == RowKey::Functions) {
        order.remove(pos);
        order.push(RowKey::Functions);
    }

    let mut rows = vec![];
    for key in order {
        let cost = costs.get(&key).copied().unwrap_or_default();
        let (name, kind, doc, copies, params) = match key {
            RowKey::Instance(inst) => {
                let mut p = Params::default();
                for w in g.params.iter().filter(|w| instance_of(&w.name) == inst) {
                    let n = numel(&w.shape);
                    match w.kind {
                        ParamKind::Trainable => p.trainable = p.trainable.saturating_add(n),
                        ParamKind::Fixed => p.fixed = p.fixed.saturating_add(n),
                    }
                }
                let kind = kinds.get(&key).cloned().unwrap_or_else(|| "parameter".to_string());
                (inst.to_string(), kind, None, 1, p)
            }
            RowKey::Child(i) => {
                let Some(c) = g.children.get(i) else { continue };
                let params = graph_params(&c.graph).times(weight_copies(&c.kind));
                let (kind, copies) = match c.kind {
                    ChildKind::Block => (c.block.clone(), 1),
                    ChildKind::Repeat { count, shared } => {
                        (format!("{count} x {}{}", if shared { "shared " } else { "" }, c.block), count)
                    }
                };
                (c.name.clone(), kind, c.doc.clone(), copies, params)
            }
            RowKey::Functions => (FUNCTIONS_ROW.to_string(), "functions".to_string(), None, 1, Params::default()),
        };
        let output = outputs.get(&key).map(|vs| {
            vs.iter()
                .filter_map(|&v| g.values.get(v).map(|x| x.ty.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        rows.push(Row {
            name,
            kind,
            doc,
            copies,
            trainable: params.trainable,
            fixed: params.fixed,
            output,
            flops: cost.flops,
            flops_per_token: per_token(cost.flops),
            weight_bytes: params.trainable.saturating_add(params.fixed).saturating_mul(WEIGHT_BYTES),
            activation_bytes: cost.act,
        });
    }

    let tied = tied_weights(g);
    let params = graph_params(g);
    let tied_savings = tied
        .iter()
        .map(|t| t.numel.saturating_mul(t.reads.saturating_sub(1) as u128))
        .fold(0u128, u128::saturating_add);
    let weight_bytes = params.trainable.saturating_add(params.fixed).saturating_mul(WEIGHT_BYTES);
    let gradient_bytes = params.trainable.saturating_mul(WEIGHT_BYTES);
    let optimizer_bytes = params.trainable.saturating_mul(2 * WEIGHT_BYTES);
    let totals = Totals {
        trainable: params.trainable,
        fixed: params.fixed,
        tied_savings,
        flops_forward: total_cost.flops,
        flops_per_token: per_token(total_cost.flops),
        flops_train_step: total_cost.flops.saturating_mul(3),
        weight_bytes,
        gradient_bytes,
        optimizer_bytes,
        activation_bytes: total_cost.act,
        training_bytes: weight_bytes
            .saturating_add(gradient_bytes)
            .saturating_add(optimizer_bytes)
            .saturating_add(total_cost.act),
    };

    let mut notes = vec![];
    if tied.is_empty() {
        notes.push("no tied weights: every weight is read in one place".to_string());
    } else {
        for t in &tied {
            notes.push(format!(
                "`{}` is tied: read in {} places, one tensor, counted once in the trainable total",
                t.name, t.reads
            ));
        }
    }
    if params.fixed > 0 {
        notes.push(
            "fixed weights (sinusoidal tables) are buffers: stored with the weights, not trained, not in the trainable total"
                .to_string(),
        );
    }
    let binds: Vec<String> = bindings.iter().map(|b| format!("{} = {}", b.name, b.value)).collect();
    notes.push(format!(
        "FLOPs and activations at {}; per token divides by {}",
        if binds.is_empty() { "fixed sizes".to_string() } else { binds.join(", ") },
        if model.shape_vars.len() >= 2 { "batch x seq" } else { "batch (per example)" }
    ));
    notes.push(
        "activation memory estimates what backward keeps: every value produced, except weight reads and views, plus the internals of attention and mlp".to_string(),
    );
    if unknown {
        notes.push("some sizes depend on shape variables that could not be bound; they count as 0".to_string());
    }

    let port = |p: &tfm_ir::Port| PortSummary {
        name: p.name.clone(),
        ty: g.values.get(p.value).map(|v| v.ty.to_string()).unwrap_or_else(|| "?".to_string()),
        doc: p.doc.clone(),
    };
    Summary {
        model: model.name.clone(),
        doc: model.doc.clone(),
        batch: opts.batch,
        seq: opts.seq,
        bindings,
        config: model.params.iter().map(|(n, v)| ConfigValue { name: n.clone(), value: v.clone() }).collect(),
        inputs: model.inputs.iter().map(port).collect(),
        outputs: model.outputs.iter().map(port).collect(),
        objective: objective_text(model),
        rows,
        tied,
        totals,
        notes,
    }
}

/// `next_token(logits, tokens)`.
pub(crate) fn objective_text(model: &Model) -> Option<String> {
    let o = model.objective.as_ref()?;
    let kind = serde_plain_name(o.kind);
    let args: Vec<String> = o
        .args
        .iter()
        .map(|&v| {
            model
                .outputs
                .iter()
                .chain(&model.inputs)
                .find(|p| p.value == v)
                .map(|p| p.name.clone())
                .or_else(|| model.graph.values.get(v).and_then(|x| x.name.clone()))
                .unwrap_or_else(|| format!("%{v}"))
        })
        .collect();
    Some(format!("{kind}({})", args.join(", ")))
}

fn serde_plain_name(k: tfm_ir::ObjectiveKind) -> &'static str {
    use tfm_ir::ObjectiveKind::*;
    match k {
        NextToken => "next_token",
        MaskedToken => "masked_token",
        Classify => "classify",
        Seq2seq => "seq2seq",
        Contrastive => "contrastive",
        SpeechToText => "speech_to_text",
    }
}

/// The weight at a child path below `g`.
fn param_def<'a>(g: &'a Graph, path: &[ChildId], param: ParamId) -> Option<&'a tfm_ir::ParamDef> {
    let mut g = g;
    for &c in path {
        g = &g.children.get(c)?.graph;
    }
    g.params.get(param)
}

/// Every trainable weight read in more than one place (a fixed table read twice, such as the
/// sinusoidal positions of both a source and a target, is not trained, so tying does not arise), in a deterministic order.
pub(crate) fn tied_weights(g: &Graph) -> Vec<TiedWeight> {
    let mut reads = HashMap::new();
    count_reads(g, &mut vec![], &mut reads);
    let mut tied: Vec<_> = reads.into_iter().filter(|(_, n)| *n > 1).collect();
    tied.sort();
    tied.into_iter()
        .filter(|((path, param), _)| param_def(g, path, *param).is_some_and(|p| p.kind == ParamKind::Trainable))
        .filter_map(|((path, param), reads)| {
            let (name, shape) = weight_name(g, &path, param)?;
            Some(TiedWeight { numel: numel(&shape), name, shape, reads })
        })
        .collect()
}

/// The trainable and fixed totals of a model, for callers that need only these.
pub fn count_params(g: &Graph) -> (u128, u128) {
    let p = graph_params(g);
    (p.trainable, p.fixed)
}
