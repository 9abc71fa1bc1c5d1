//! The primitives the checker knows: layer constructors, functions, value built-ins and
//! objectives, with their argument lists and how each becomes IR.

use crate::codes;
use crate::elab::{describe, Body, Ev};
use crate::value::Val;
use tfm_diag::{Diagnostic, Span};
use tfm_ir::{Activation, AttentionCfg, Dim, Init, ObjectiveKind, ParamId, Prim, ValueId};
use tfm_shape::{normalize_axis, LayerSpec};
use tfm_syntax::ast;

/// Primitive layers (own weights; declared with `layer`).
pub(crate) const LAYERS: &[&str] =
    &["embedding", "linear", "layer_norm", "rms_norm", "attention", "mlp", "patch_embed", "conv1d", "sinusoidal", "relative_bias", "parameter"];

/// Functions on tensors (no weights).
pub(crate) const FUNCTIONS: &[&str] = &[
    "gelu", "gelu_exact", "relu", "silu", "swiglu", "geglu", "tanh", "sigmoid", "exp", "sqrt", "neg", "softmax", "log_softmax", "dropout", "arange",
    "reshape", "transpose", "permute", "concat", "split", "slice", "expand", "first", "mean", "sum", "normalize", "alibi", "pad_mask", "scale",
];

/// Functions on compile-time values. (`sqrt` of a number is handled with the tensor `sqrt`.)
pub(crate) const BUILTINS: &[&str] = &["min", "max", "floor_div", "ceil_div", "float", "int"];

pub(crate) const OBJECTIVES: &[&str] = &["next_token", "masked_token", "classify", "seq2seq", "contrastive", "speech_to_text"];

pub(crate) const ACT_NAMES: &[&str] = &["gelu", "gelu_exact", "relu", "silu", "swiglu", "geglu"];

/// `(argument name, floating point?, dims by variable name)` per objective argument.
pub(crate) type Pattern = &'static [(&'static str, bool, &'static [&'static str])];

pub(crate) fn objective(name: &str) -> Option<(ObjectiveKind, Pattern)> {
    const LM: Pattern = &[("logits", true, &["B", "T", "V"]), ("tokens", false, &["B", "T"])];
    Some(match name {
        "next_token" => (ObjectiveKind::NextToken, LM),
        "masked_token" => (ObjectiveKind::MaskedToken, LM),
        "speech_to_text" => (ObjectiveKind::SpeechToText, LM),
        "seq2seq" => (ObjectiveKind::Seq2seq, &[("logits", true, &["B", "T", "V"]), ("targets", false, &["B", "T"])]),
        "classify" => (ObjectiveKind::Classify, &[("logits", true, &["B", "C"]), ("labels", false, &["B"])]),
        "contrastive" => (ObjectiveKind::Contrastive, &[("a", true, &["B", "D"]), ("b", true, &["B", "D"]), ("scale", true, &[])]),
        _ => return None,
    })
}

pub(crate) fn activation(name: &str) -> Option<Activation> {
    Some(match name {
        "gelu" => Activation::Gelu,
        "gelu_exact" => Activation::GeluExact,
        "relu" => Activation::Relu,
        "silu" => Activation::Silu,
        "swiglu" => Activation::Swiglu,
        "geglu" => Activation::Geglu,
        _ => return None,
    })
}

type Slots = Vec<Option<(Ev, Span)>>;

/// Binds and evaluates the arguments of a primitive.
fn args<'w>(b: &mut Body<'_, 'w>, what: &str, names: &[&str], c: &'w ast::Call) -> Option<Slots> {
    let slots = b.bind_args(what, names, &c.args, c.span)?;
    let mut out = vec![];
    let mut ok = true;
    for s in slots {
        match s {
            Some(a) => match b.eval(&a.value) {
                Some(ev) => out.push(Some((ev, a.value.span))),
                None => {
                    ok = false;
                    out.push(None)
                }
            },
            None => out.push(None),
        }
    }
    ok.then_some(out)
}

struct A<'a, 'b, 'c, 'w> {
    b: &'a mut Body<'c, 'w>,
    slots: &'b mut Slots,
    names: &'b [&'b str],
    what: String,
    span: Span,
}

impl A<'_, '_, '_, '_> {
    fn take(&mut self, i: usize) -> Option<(Ev, Span)> {
        self.slots[i].take()
    }
    fn req(&mut self, i: usize) -> Option<(Ev, Span)> {
        let r = self.take(i);
        if r.is_none() {
            let d = Diagnostic::error(codes::MISSING_ARG, format!("missing argument `{}` for {}", self.names[i], self.what))
                .at(self.span, format!("`{}` is not given", self.names[i]))
                .hint(format!("it takes: {}", self.names.join(", ")));
            self.b.emit_pub(d);
        }
        r
    }
    fn size(&mut self, i: usize) -> Option<u64> {
        let (ev, s) = self.req(i)?;
        self.b.need_size(ev, s, self.names[i])
    }
    fn size_or(&mut self, i: usize, default: u64) -> Option<u64> {
        match self.take(i) {
            Some((ev, s)) => self.b.need_size(ev, s, self.names[i]),
            None => Some(default),
        }
    }
    fn nonneg_or(&mut self, i: usize, default: u64) -> Option<u64> {
        match self.take(i) {
            Some((ev, s)) => {
                let n = self.b.need_int(ev, s)?;
                if n < 0 {
                    self.b.emit_pub(Diagnostic::error(codes::BAD_DIM, format!("expected `{}` of at least 0, found {n}", self.names[i])).at(s, "negative"));
                    return None;
                }
                Some(n as u64)
            }
            None => Some(default),
        }
    }
    fn int_or(&mut self, i: usize, default: i64) -> Option<i64> {
        match self.take(i) {
            Some((ev, s)) => self.b.need_int(ev, s),
            None => Some(default),
        }
    }
    fn float_or(&mut self, i: usize, default: f64) -> Option<f64> {
        match self.take(i) {
            Some((ev, s)) => self.b.need_float(ev, s),
            None => Some(default),
        }
    }
    fn bool_or(&mut self, i: usize, default: bool) -> Option<bool> {
        match self.take(i) {
            Some((ev, s)) => self.b.need_bool(ev, s),
            None => Some(default),
        }
    }
    fn choice_or(&mut self, i: usize, options: &[&str], default: &str) -> Option<String> {
        match self.take(i) {
            Some((ev, s)) => self.b.need_choice(ev, s, options),
            None => Some(default.to_string()),
        }
    }
    fn tensor(&mut self, i: usize) -> Option<(ValueId, Span)> {
        let (ev, s) = self.req(i)?;
        Some((self.b.need_tensor(ev, s)?, s))
    }
    fn opt_tensor(&mut self, i: usize) -> Option<Option<(ValueId, Span)>> {
        match self.take(i) {
            Some((ev, s)) => Some(Some((self.b.need_tensor(ev, s)?, s))),
            None => Some(None),
        }
    }
    fn dim(&mut self, i: usize) -> Option<Dim> {
        let (ev, s) = self.req(i)?;
        self.b.need_dim(ev, s)
    }
    fn dims(&mut self, i: usize) -> Option<Vec<Dim>> {
        let (ev, s) = self.req(i)?;
        let list = self.b.need_list(ev, s)?;
        let mut out = vec![];
        for (ev, s) in list {
            out.push(self.b.need_dim(ev, s)?);
        }
        Some(out)
    }
    /// An axis of a tensor of `rank` dims, negative counting from the end.
    fn axis(&mut self, i: usize, default: Option<i64>, rank: usize) -> Option<usize> {
        let (raw, s) = match self.take(i) {
            Some((ev, s)) => (self.b.need_int(ev, s)?, s),
            None => match default {
                Some(d) => (d, self.span),
                None => {
                    self.slots[i] = None;
                    self.req(i)?;
                    return None;
                }
            },
        };
        match normalize_axis(raw, rank) {
            Some(a) => Some(a),
            None => {
                self.b.emit_pub(
                    Diagnostic::error(codes::SHAPE, format!("expected an axis in {}..{rank} for a tensor with {rank} dims, found {raw}", -(rank as i64)))
                        .at(s, "axis out of range"),
                );
                None
            }
        }
    }
}

/// Builds the spec of a primitive layer from `layer name = prim(args)`.
pub(crate) fn layer_spec<'w>(b: &mut Body<'_, 'w>, p: &str, c: &'w ast::Call) -> Option<LayerSpec> {
    let names: &[&str] = match p {
        "embedding" => &["num", "dim", "std"],
        "linear" => &["in", "out", "bias"],
        "layer_norm" => &["dim", "eps", "bias"],
        "rms_norm" => &["dim", "eps"],
        "attention" => &["d_model", "heads", "kv_heads", "head_dim", "causal", "bias", "out_bias", "fused_qkv", "window", "rotary", "rope_theta", "kv_dim", "dropout", "scale", "k_bias"],
        "mlp" => &["d_model", "hidden", "act", "bias"],
        "patch_embed" => &["channels", "dim", "patch", "bias"],
        "conv1d" => &["in", "out", "kernel", "stride", "padding", "bias"],
        "sinusoidal" => &["len", "dim"],
        "relative_bias" => &["heads", "buckets", "max_distance", "bidirectional"],
        "parameter" => &["dims", "init", "std", "value", "decay"],
        _ => return None,
    };
    let what = format!("`{p}`");
    let mut slots = args(b, &what, names, c)?;
    let mut a = A { b, slots: &mut slots, names, what, span: c.span };
    Some(match p {
        "embedding" => LayerSpec::Embedding { num: a.size(0)?, dim: a.size(1)?, std: a.float_or(2, 0.02)? },
        "linear" => LayerSpec::Linear { input: a.size(0)?, output: a.size(1)?, bias: a.bool_or(2, true)? },
        "layer_norm" => LayerSpec::LayerNorm { dim: a.size(0)?, eps: a.float_or(1, 1e-5)?, bias: a.bool_or(2, true)? },
        "rms_norm" => LayerSpec::RmsNorm { dim: a.size(0)?, eps: a.float_or(1, 1e-6)? },
        "attention" => {
            let d_model = a.size(0)?;
            let heads = a.size(1)?;
            let kv_heads = a.size_or(2, heads)?;
            let head_dim = match a.take(3) {
                Some((ev, s)) => a.b.need_size(ev, s, "head_dim")?,
                None => {
                    if d_model % heads != 0 {
                        a.b.emit_pub(
                            Diagnostic::error(codes::INEXACT, format!("`attention`: d_model = {d_model} is not divisible by heads = {heads}"))
                                .at(c.span, "head_dim defaults to d_model / heads")
                                .hint("choose heads that divide d_model, or pass `head_dim:` explicitly"),
                        );
                        return None;
                    }
                    d_model / heads
                }
            };
            if heads % kv_heads != 0 {
                a.b.emit_pub(
                    Diagnostic::error(codes::CONSTRAINT, format!("`attention`: heads = {heads} is not a multiple of kv_heads = {kv_heads}"))
                        .at(c.span, "grouped-query attention shares each key/value head among heads / kv_heads query heads")
                        .hint("choose kv_heads that divides heads"),
                );
                return None;
            }
            let causal = a.bool_or(4, false)?;
            let bias = a.bool_or(5, true)?;
            let out_bias = a.bool_or(6, bias)?;
            let fused_qkv = a.bool_or(7, false)?;
            let window = a.nonneg_or(8, 0)?;
            let rotary = a.bool_or(9, false)?;
            let rope_theta = a.float_or(10, 10000.0)?;
            let kv_dim = a.size_or(11, d_model)?;
            let dropout = a.float_or(12, 0.0)?;
            let scale = a.bool_or(13, true)?;
            let k_bias = a.bool_or(14, bias)?;
            if k_bias && !bias {
                a.b.emit_pub(Diagnostic::error(codes::CONSTRAINT, "`attention`: expected `k_bias: false` when `bias: false`, found `k_bias: true`").at(c.span, "a key bias without the other projection biases").hint("set `bias: true`, or drop `k_bias`"));
                return None;
            }
            if fused_qkv && bias && !k_bias {
                a.b.emit_pub(Diagnostic::error(codes::CONSTRAINT, "`attention`: `k_bias: false` needs `fused_qkv: false`").at(c.span, "a fused qkv projection has one bias for q, k and v").hint("drop `fused_qkv` to leave out the key bias"));
                return None;
            }
            if fused_qkv && kv_dim != d_model {
                a.b.emit_pub(Diagnostic::error(codes::CONSTRAINT, "`attention`: a fused qkv projection needs kv_dim == d_model").at(c.span, "fused_qkv with kv_dim").hint("drop `fused_qkv` for cross-attention"));
                return None;
            }
            if rotary && head_dim % 2 != 0 {
                a.b.emit_pub(Diagnostic::error(codes::CONSTRAINT, format!("`attention`: rotary embeddings need an even head_dim, found {head_dim}")).at(c.span, "rotary"));
                return None;
            }
            let cfg = AttentionCfg {
                heads,
                kv_heads,
                head_dim,
                causal,
                bias,
                k_bias,
                out_bias,
                fused_qkv,
                window,
                rotary,
                rope_theta,
                dropout,
                scale,
                cross: false,
                has_mask: false,
                has_bias: false,
            };
            LayerSpec::Attention { d_model, kv_dim, cfg }
        }
        "mlp" => {
            let d_model = a.size(0)?;
            let hidden = a.size(1)?;
            let act = a.choice_or(2, ACT_NAMES, "gelu")?;
            LayerSpec::Mlp { d_model, hidden, act: activation(&act)?, bias: a.bool_or(3, true)? }
        }
        "patch_embed" => LayerSpec::PatchEmbed { channels: a.size(0)?, dim: a.size(1)?, patch: a.size(2)?, bias: a.bool_or(3, true)? },
        "conv1d" => LayerSpec::Conv1d {
            input: a.size(0)?,
            output: a.size(1)?,
            kernel: a.size(2)?,
            stride: a.size_or(3, 1)?,
            padding: a.nonneg_or(4, 0)?,
            bias: a.bool_or(5, true)?,
        },
        "sinusoidal" => LayerSpec::Sinusoidal { len: a.size(0)?, dim: a.size(1)? },
        "relative_bias" => LayerSpec::RelativeBias {
            heads: a.size(0)?,
            buckets: a.size_or(1, 32)?,
            max_distance: a.size_or(2, 128)?,
            bidirectional: a.bool_or(3, true)?,
        },
        "parameter" => {
            let (ev, s) = a.req(0)?;
            let list = a.b.need_list(ev, s)?;
            let mut dims = vec![];
            for (ev, s) in list {
                dims.push(a.b.need_size(ev, s, "dims")?);
            }
            let init = a.choice_or(1, &["normal", "zeros", "ones", "constant"], "normal")?;
            let std = a.float_or(2, 0.02)?;
            let value = a.float_or(3, 0.0)?;
            let decay = a.bool_or(4, false)?;
            let init = match init.as_str() {
                "zeros" => Init::Zeros,
                "ones" => Init::Ones,
                "constant" => Init::Constant(value),
                _ => Init::Normal { std, residual: false },
            };
            LayerSpec::Parameter { dims, init, decay }
        }
        _ => return None,
    })
}

/// Applies a primitive layer instance `n` to the call's arguments.
pub(crate) fn apply_layer<'w>(b: &mut Body<'_, 'w>, n: &str, spec: &LayerSpec, params: Vec<ParamId>, c: &'w ast::Call) -> Option<Ev> {
    let what = format!("`{n}` (a `{}` layer)", spec.name());
    let mut prim = match spec.prim() {
        Some(p) => p,
        None => {
            b.emit_pub(
                Diagnostic::error(codes::KIND, format!("`{n}` is a free parameter and cannot be applied"))
                    .at(c.callee.span, "not applicable")
                    .hint(format!("read it as a tensor: `{n}.weight`")),
            );
            return None;
        }
    };
    let names: &[&str] = match spec {
        LayerSpec::Attention { .. } => &["x", "memory", "mask", "bias"],
        LayerSpec::RelativeBias { .. } => &["q_len", "k_len"],
        _ => &["x"],
    };
    let mut slots = args(b, &what, names, c)?;
    let mut a = A { b, slots: &mut slots, names, what: what.clone(), span: c.span };
    let mut inputs = vec![];
    match &mut prim {
        Prim::Attention(cfg) => {
            inputs.push(a.tensor(0)?);
            for (i, flag) in [(1, 0), (2, 1), (3, 2)] {
                if let Some(t) = a.opt_tensor(i)? {
                    inputs.push(t);
                    match flag {
                        0 => cfg.cross = true,
                        1 => cfg.has_mask = true,
                        _ => cfg.has_bias = true,
                    }
                }
            }
        }
        Prim::RelativeBias { q_len, k_len, .. } => {
            *q_len = a.dim(0)?;
            *k_len = a.dim(1)?;
        }
        _ => inputs.push(a.tensor(0)?),
    }
    b.prim_node_w(prim, inputs, params, c.span, n)
}

/// A function primitive (no weights) applied in an expression.
pub(crate) fn function<'w>(b: &mut Body<'_, 'w>, f: &str, c: &'w ast::Call) -> Option<Ev> {
    let names: &[&str] = match f {
        "softmax" | "log_softmax" | "mean" | "sum" => &["x", "dim"],
        "dropout" => &["x", "p"],
        "arange" => &["n"],
        "reshape" | "expand" => &["x", "shape"],
        "transpose" => &["x", "a", "b"],
        "permute" => &["x", "axes"],
        "concat" => &["xs", "dim"],
        "split" => &["x", "sizes", "dim"],
        "slice" => &["x", "dim", "start", "end"],
        "alibi" => &["heads", "len"],
        "pad_mask" => &["tokens", "pad_id"],
        "scale" => &["x", "c"],
        _ => &["x"],
    };
    let what = format!("`{f}`");
    let mut slots = args(b, &what, names, c)?;
    // `sqrt` of a number is the value built-in.
    if f == "sqrt" {
        if let Some(Some((Ev::Val(v), s))) = slots.first() {
            let (v, s) = (v.clone(), *s);
            let Some(x) = v.as_f64() else {
                b.emit_pub(Diagnostic::error(codes::TYPE, format!("expected a number or a tensor, found {} `{v}`", v.type_name())).at(s, "here"));
                return None;
            };
            if x < 0.0 {
                b.emit_pub(Diagnostic::error(codes::TYPE, format!("square root of the negative number {x}")).at(s, "negative"));
                return None;
            }
            return Some(Ev::Val(Val::Float(x.sqrt())));
        }
    }
    let mut a = A { b, slots: &mut slots, names, what, span: c.span };
    let (prim, inputs) = match f {
        "gelu" | "gelu_exact" | "relu" | "silu" | "swiglu" | "geglu" => (Prim::Act(activation(f)?), vec![a.tensor(0)?]),
        "tanh" => (Prim::Tanh, vec![a.tensor(0)?]),
        "sigmoid" => (Prim::Sigmoid, vec![a.tensor(0)?]),
        "exp" => (Prim::Exp, vec![a.tensor(0)?]),
        "sqrt" => (Prim::Sqrt, vec![a.tensor(0)?]),
        "neg" => (Prim::Neg, vec![a.tensor(0)?]),
        "first" => (Prim::First, vec![a.tensor(0)?]),
        "normalize" => (Prim::Normalize, vec![a.tensor(0)?]),
        "softmax" | "log_softmax" | "mean" | "sum" => {
            let x = a.tensor(0)?;
            let rank = a.b.value_type(x.0).shape.len();
            let default = if f.ends_with("softmax") { Some(-1) } else { None };
            let axis = a.axis(1, default, rank)?;
            let prim = match f {
                "softmax" => Prim::Softmax { axis },
                "log_softmax" => Prim::LogSoftmax { axis },
                "mean" => Prim::Mean { axis },
                _ => Prim::Sum { axis },
            };
            (prim, vec![x])
        }
        "dropout" => {
            let x = a.tensor(0)?;
            let (ev, s) = a.req(1)?;
            let p = a.b.need_float(ev, s)?;
            if !(0.0..1.0).contains(&p) {
                a.b.emit_pub(Diagnostic::error(codes::CONSTRAINT, format!("expected a dropout probability in [0, 1), found {p}")).at(s, "out of range"));
                return None;
            }
            (Prim::Dropout { p }, vec![x])
        }
        "scale" => {
            let x = a.tensor(0)?;
            let (ev, s) = a.req(1)?;
            (Prim::Scale(a.b.need_float(ev, s)?), vec![x])
        }
        "arange" => (Prim::Arange { n: a.dim(0)? }, vec![]),
        "reshape" => {
            let x = a.tensor(0)?;
            (Prim::Reshape { shape: a.dims(1)? }, vec![x])
        }
        "expand" => {
            let x = a.tensor(0)?;
            (Prim::Expand { shape: a.dims(1)? }, vec![x])
        }
        "transpose" => {
            let x = a.tensor(0)?;
            let rank = a.b.value_type(x.0).shape.len();
            let i = a.axis(1, Some(-2), rank)?;
            let j = a.axis(2, Some(-1), rank)?;
            let mut axes: Vec<usize> = (0..rank).collect();
            axes.swap(i, j);
            (Prim::Permute { axes }, vec![x])
        }
        "permute" => {
            let x = a.tensor(0)?;
            let rank = a.b.value_type(x.0).shape.len();
            let (ev, s) = a.req(1)?;
            let list = a.b.need_list(ev, s)?;
            let mut axes = vec![];
            for (ev, s) in list {
                let raw = a.b.need_int(ev, s)?;
                match normalize_axis(raw, rank) {
                    Some(ax) => axes.push(ax),
                    None => {
                        a.b.emit_pub(Diagnostic::error(codes::SHAPE, format!("expected an axis of a tensor with {rank} dims, found {raw}")).at(s, "axis out of range"));
                        return None;
                    }
                }
            }
            (Prim::Permute { axes }, vec![x])
        }
        "concat" => {
            let (ev, s) = a.req(0)?;
            let list = a.b.need_list(ev, s)?;
            let mut xs = vec![];
            for (ev, s) in list {
                xs.push((a.b.need_tensor(ev, s)?, s));
            }
            let rank = xs.first().map(|x| a.b.value_type(x.0).shape.len()).unwrap_or(0);
            let axis = a.axis(1, Some(0), rank.max(1))?;
            (Prim::Concat { axis }, xs)
        }
        "split" => {
            let x = a.tensor(0)?;
            let rank = a.b.value_type(x.0).shape.len();
            let sizes = a.dims(1)?;
            let axis = a.axis(2, Some(0), rank)?;
            (Prim::Split { axis, sizes }, vec![x])
        }
        "slice" => {
            let x = a.tensor(0)?;
            let rank = a.b.value_type(x.0).shape.len();
            let axis = a.axis(1, None, rank)?;
            let start = a.dim(2)?;
            let end = a.dim(3)?;
            (Prim::Slice { axis, start, end }, vec![x])
        }
        "alibi" => {
            let heads = a.size(0)?;
            (Prim::Alibi { heads, len: a.dim(1)? }, vec![])
        }
        "pad_mask" => {
            let x = a.tensor(0)?;
            (Prim::PadMask { pad_id: a.int_or(1, 0)? }, vec![x])
        }
        _ => return None,
    };
    b.prim_node(prim, inputs, c.span, f)
}

/// A built-in function on compile-time values.
pub(crate) fn builtin<'w>(b: &mut Body<'_, 'w>, f: &str, c: &'w ast::Call) -> Option<Ev> {
    let names: &[&str] = match f {
        "float" | "int" => &["x"],
        _ => &["a", "b"],
    };
    let what = format!("`{f}`");
    let mut slots = args(b, &what, names, c)?;
    let mut a = A { b, slots: &mut slots, names, what, span: c.span };
    match f {
        "float" => {
            let (ev, s) = a.req(0)?;
            Some(Ev::Val(Val::Float(a.b.need_float(ev, s)?)))
        }
        "int" => {
            let (ev, s) = a.req(0)?;
            let x = a.b.need_float(ev, s)?;
            if !(x.is_finite() && x.abs() < 9.2e18) {
                a.b.emit_pub(Diagnostic::error(codes::OVERFLOW, format!("`int({x})` does not fit in 64 bits")).at(s, "too large"));
                return None;
            }
            Some(Ev::Val(Val::Int(x.trunc() as i64)))
        }
        "floor_div" | "ceil_div" => {
            let (x, xs) = a.req(0)?;
            let (y, ys) = a.req(1)?;
            let y = a.b.need_int(y, ys)?;
            if y <= 0 {
                a.b.emit_pub(Diagnostic::error(codes::DIV_ZERO, format!("`{f}` needs a positive divisor, found {y}")).at(ys, "not positive"));
                return None;
            }
            let up = f == "ceil_div";
            match x {
                Ev::Dim(d) => {
                    let d = if up { d.add(&Dim::constant(y - 1)) } else { d };
                    Some(Ev::Dim(d.floor_div(y as u64)))
                }
                other => {
                    let x = a.b.need_int(other, xs)?;
                    let q = x.div_euclid(y);
                    let q = if up && x.rem_euclid(y) != 0 { q + 1 } else { q };
                    Some(Ev::Val(Val::Int(q)))
                }
            }
        }
        "min" | "max" => {
            let (x, xs) = a.req(0)?;
            let (y, ys) = a.req(1)?;
            let x = a.b.need_val(x, xs)?;
            let y = a.b.need_val(y, ys)?;
            let pick_first = |p: bool| if (f == "min") == p { 0 } else { 1 };
            match (&x, &y) {
                (Val::Int(i), Val::Int(j)) => Some(Ev::Val(Val::Int(if pick_first(i <= j) == 0 { *i } else { *j }))),
                _ => match (x.as_f64(), y.as_f64()) {
                    (Some(i), Some(j)) => Some(Ev::Val(Val::Float(if pick_first(i <= j) == 0 { i } else { j }))),
                    _ => {
                        let bad = if x.as_f64().is_none() { (&x, xs) } else { (&y, ys) };
                        a.b.emit_pub(Diagnostic::error(codes::TYPE, format!("expected a number, found {}", describe(&Ev::Val(bad.0.clone())))).at(bad.1, "not a number"));
                        None
                    }
                },
            }
        }
        _ => None,
    }
}
