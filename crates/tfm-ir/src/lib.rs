//! The validated, typed graph IR that the checker produces and every back end consumes.
//!
//! # Shape of the IR
//! A [`Model`] owns a root [`Graph`]. A graph has
//! - `params`: the weights declared directly at this level, with names relative to the graph
//!   (`ln_1.weight`, `attn.qkv.weight`);
//! - `children`: sub-instances (a block instance or a `repeat`), each with its own graph and a
//!   name that prefixes its weights (`blocks` -> `blocks.3.attn.qkv.weight`);
//! - `values`: typed SSA values; `inputs`/`outputs` index into them;
//! - `nodes`: in topological order; each reads and writes values.
//!
//! # Invariants (established by `tfm-elab`, relied on by `tfm-summary` and `tfm-runtime`)
//! - Every value is written by exactly one node or is a graph input; nodes are topologically
//!   ordered.
//! - Every value's type is fully known: dims are concrete or expressions over the model's shape
//!   variables (`B`, `T`), which a back end binds from the actual input tensors.
//! - A `Repeat` child's body graph has its first input's type equal to its single output's type.
//! - Parameter shapes are concrete (`u64`), even for a 7B model: nothing is allocated.

pub mod dim;

pub use dim::{Dim, DimEnv};
use serde::Serialize;
use tfm_diag::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
    I64,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }
    pub fn bytes(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

pub type ValueId = usize;
pub type ParamId = usize;
pub type ChildId = usize;

#[derive(Clone, Debug, Serialize)]
pub struct Value {
    pub ty: TensorType,
    /// The source name, if the value was bound to one.
    pub name: Option<String>,
    pub span: Span,
}

/// How a weight is initialised.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Normal(0, std). `residual` marks output projections that get GPT-2's 1/sqrt(2 * layers) scale.
    Normal { std: f64, residual: bool },
    Zeros,
    Ones,
    Constant(f64),
    /// Fixed sinusoidal table (Vaswani et al.), never trained.
    Sinusoidal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    Trainable,
    /// A buffer: part of the model, not trained, not counted in `params` (sinusoidal tables).
    Fixed,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParamDef {
    /// Relative to the owning graph, e.g. `ln_1.weight`.
    pub name: String,
    pub shape: Vec<u64>,
    pub kind: ParamKind,
    pub init: Init,
    /// AdamW weight decay applies (false for norms, biases and embeddings by default).
    pub decay: bool,
    pub span: Span,
}

impl ParamDef {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, Serialize)]
pub enum ChildKind {
    /// One block instance.
    Block,
    /// `repeat count { block }`: weights named `name.<i>.*`, or `name.*` when shared.
    Repeat { count: u64, shared: bool },
}

#[derive(Clone, Debug, Serialize)]
pub struct Child {
    pub name: String,
    pub kind: ChildKind,
    /// The block name, for summaries (`decoder_layer`).
    pub block: String,
    pub doc: Option<String>,
    pub graph: Graph,
    pub span: Span,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Graph {
    pub params: Vec<ParamDef>,
    pub children: Vec<Child>,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub enum Op {
    /// A primitive; `params` are the weights it reads, in the order the primitive documents.
    Prim { prim: Prim, params: Vec<ParamId> },
    /// Applies a child instance (block or repeat) to `inputs`.
    Apply { child: ChildId },
    /// Reads a weight as a tensor (`tok.weight`); `param` is a path below this graph:
    /// `(children path, param id)` so tied weights inside children are reachable.
    Weight { path: Vec<ChildId>, param: ParamId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (GPT-2, PyTorch `approximate="tanh"`).
    Gelu,
    /// GELU, erf form.
    GeluExact,
    Relu,
    Silu,
    Swiglu,
    Geglu,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttentionCfg {
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub causal: bool,
    pub bias: bool,
    /// Whether the key projection has a bias (only meaningful when `bias`; Whisper has none).
    /// Always equal to `bias` when `fused_qkv`.
    pub k_bias: bool,
    pub out_bias: bool,
    pub fused_qkv: bool,
    /// Sliding window (0 = none): a query attends to the last `window` keys.
    pub window: u64,
    pub rotary: bool,
    pub rope_theta: f64,
    pub dropout: f64,
    /// Scale scores by 1/sqrt(head_dim) (T5 does not).
    pub scale: bool,
    /// Inputs: x, then memory if cross, then mask if `has_mask`, then bias if `has_bias`.
    pub cross: bool,
    pub has_mask: bool,
    pub has_bias: bool,
}

/// Every primitive the checker accepts. Tensor inputs arrive in `Node::inputs`; weights in
/// `Op::Prim::params`. Axes are normalised to non-negative indices.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Prim {
    // layers (read weights)
    /// params: [weight]; inputs: [ids]
    Embedding,
    /// params: [weight, bias?]
    Linear { bias: bool },
    /// params: [weight, bias?]
    LayerNorm { eps: f64, bias: bool },
    /// params: [weight]
    RmsNorm { eps: f64 },
    /// params: q,k,v,o weights then biases (or qkv, o when fused): see `tfm-elab` docs.
    Attention(AttentionCfg),
    /// params: [up.w, up.b?, down.w, down.b?] or gated [gate.w, gate.b?, up.w, up.b?, down.w, down.b?]
    Mlp { act: Activation, bias: bool },
    /// params: [weight, bias?]; f32[B, C, H, W] -> f32[B, (H/p)*(W/p), dim]
    PatchEmbed { patch: u64, bias: bool },
    /// params: [weight, bias?]
    Conv1d { stride: u64, padding: u64, bias: bool },
    /// params: [table] (fixed); inputs: [positions]
    Sinusoidal,
    /// params: [weight [buckets, heads]]; no tensor inputs; outputs f32[heads, T, S] with dims T, S
    RelativeBias { buckets: u64, max_distance: u64, bidirectional: bool, q_len: Dim, k_len: Dim },

    // functions
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    /// Batched matrix product with broadcasting of leading dims.
    MatMul,
    /// Multiply by a compile-time constant.
    Scale(f64),
    Act(Activation),
    Tanh,
    Sigmoid,
    Exp,
    Sqrt,
    Softmax { axis: usize },
    LogSoftmax { axis: usize },
    Dropout { p: f64 },
    Arange { n: Dim },
    Reshape { shape: Vec<Dim> },
    Permute { axes: Vec<usize> },
    Concat { axis: usize },
    Split { axis: usize, sizes: Vec<Dim> },
    Slice { axis: usize, start: Dim, end: Dim },
    Expand { shape: Vec<Dim> },
    /// f32[B, T, D] -> f32[B, D]
    First,
    Mean { axis: usize },
    Sum { axis: usize },
    /// L2-normalise the last axis.
    Normalize,
    /// f32[heads, T, T] ALiBi bias.
    Alibi { heads: u64, len: Dim },
    /// i64[B, T] -> bool[B, T]: true where the token is not `pad_id`.
    PadMask { pad_id: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    NextToken,
    MaskedToken,
    Classify,
    Seq2seq,
    Contrastive,
    SpeechToText,
}

#[derive(Clone, Debug, Serialize)]
pub struct Objective {
    pub kind: ObjectiveKind,
    /// Values of the root graph the objective reads (outputs or inputs), in argument order.
    pub args: Vec<ValueId>,
    pub span: Span,
}

/// A model input or output port.
#[derive(Clone, Debug, Serialize)]
pub struct Port {
    pub name: String,
    pub value: ValueId,
    pub doc: Option<String>,
}

/// A resolved compile-time parameter value, for summaries and hashes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConstValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Choice(String),
}

impl std::fmt::Display for ConstValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConstValue::Int(i) => write!(f, "{i}"),
            ConstValue::Float(x) => write!(f, "{x:?}"),
            ConstValue::Bool(b) => write!(f, "{b}"),
            ConstValue::Choice(c) => write!(f, "{c}"),
        }
    }
}

/// A checked model: everything a back end needs.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    pub name: String,
    pub doc: Option<String>,
    /// Parameter values after defaults and overrides, in declaration order.
    pub params: Vec<(String, ConstValue)>,
    /// The shape variables of the inputs (`B`, `T`), in first-seen order.
    pub shape_vars: Vec<String>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub objective: Option<Objective>,
    pub graph: Graph,
    pub span: Span,
}

impl Graph {
    /// Calls `f(full_name, param)` for every weight, expanding repeats (`blocks.3.ln_1.weight`).
    /// A shared repeat yields its weights once. Cost is proportional to the expanded count, so
    /// only back ends that allocate should call it; summaries multiply instead.
    pub fn for_each_param(&self, prefix: &str, f: &mut dyn FnMut(&str, &ParamDef)) {
        for p in &self.params {
            f(&join(prefix, &p.name), p);
        }
        for c in &self.children {
            let base = join(prefix, &c.name);
            match c.kind {
                ChildKind::Block | ChildKind::Repeat { shared: true, .. } => c.graph.for_each_param(&base, f),
                ChildKind::Repeat { count, shared: false } => {
                    for i in 0..count {
                        c.graph.for_each_param(&format!("{base}.{i}"), f);
                    }
                }
            }
        }
    }
}

/// `a.b`, or `b` when `a` is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}
