//! Dimension algebra helpers and one shape rule per primitive.
//!
//! Two jobs:
//! - [`LayerSpec::params`]: the weights a primitive layer owns, from its compile-time arguments,
//!   with PyTorch layouts, initialisation and weight-decay flags;
//! - [`infer`]: given the input tensor types (and the weight shapes of layer primitives), the
//!   output types of a [`Prim`], or a structured [`ShapeError`].
//!
//! # Weight order of layer primitives (`Op::Prim::params`)
//! The order of [`LayerSpec::params`] is the order of `Op::Prim::params`:
//! - `embedding`: `weight`; `sinusoidal`: `table`; `relative_bias`, `parameter`: `weight`;
//! - `linear`, `patch_embed`, `conv1d`, `layer_norm`: `weight`, then `bias` if any; `rms_norm`: `weight`;
//! - `attention`: weights first, then biases: `q.weight, k.weight, v.weight, o.weight`, then
//!   `q.bias, k.bias, v.bias` (when `bias`; `k.bias` only when `k_bias` too) and `o.bias`
//!   (when `out_bias`); fused:
//!   `qkv.weight, o.weight`, then `qkv.bias` (when `bias`), `o.bias` (when `out_bias`);
//! - `mlp`: `up.weight, up.bias?, down.weight, down.bias?`; gated (`swiglu`, `geglu`):
//!   `gate.weight, gate.bias?, up.weight, up.bias?, down.weight, down.bias?`.

use std::fmt;
use tfm_diag::Span;
use tfm_ir::{Activation, AttentionCfg, DType, Dim, Init, ParamDef, ParamKind, Prim, TensorType};

/// Why a primitive cannot be applied to the given tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// Which tensor input (0-based) is at fault, if one is.
    pub arg: Option<usize>,
    /// What the rule wanted, e.g. `` `f32[*, 768]` ``.
    pub expected: String,
    /// What it got, e.g. `` `f32[B, T, 512]` ``.
    pub found: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl ShapeError {
    fn new(arg: Option<usize>, expected: impl Into<String>, found: impl Into<String>) -> Self {
        ShapeError { arg, expected: expected.into(), found: found.into(), hint: None }
    }
    fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

type R<T> = Result<T, ShapeError>;

/// Normalises a possibly negative axis (`-1` is the last) for a tensor of `rank` dims.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) { Some(a as usize) } else { None }
}

/// The product of dims, symbolically.
pub fn numel(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(1), |acc, d| acc.mul(d))
}

/// NumPy broadcasting of two shapes; `None` where two dims differ and neither is 1.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let n = a.len().max(b.len());
    let one = Dim::known(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n { Some(&a[i + a.len() - n]) } else { None };
        let db = if i + b.len() >= n { Some(&b[i + b.len() - n]) } else { None };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if *x == one => y.clone(),
            (Some(x), Some(y)) if *y == one => x.clone(),
            _ => return None,
        };
        out.push(d);
    }
    Some(out)
}

fn shape_str(dims: &[Dim]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}

fn ty_str(t: &TensorType) -> String {
    format!("`{t}`")
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::Bf16)
}

fn want_float(t: &TensorType, arg: usize) -> R<()> {
    if is_float(t.dtype) {
        Ok(())
    } else {
        Err(ShapeError::new(Some(arg), "a floating-point tensor", ty_str(t)))
    }
}

fn want_dtype(t: &TensorType, d: DType, arg: usize) -> R<()> {
    if t.dtype == d {
        Ok(())
    } else {
        Err(ShapeError::new(Some(arg), format!("a `{}` tensor", d.name()), ty_str(t)))
    }
}

fn want_rank(t: &TensorType, rank: usize, arg: usize, pattern: &str) -> R<()> {
    if t.shape.len() == rank {
        Ok(())
    } else {
        Err(ShapeError::new(Some(arg), format!("`{pattern}` ({rank} dims)"), format!("{} ({} dims)", ty_str(t), t.shape.len())))
    }
}

fn want_min_rank(t: &TensorType, rank: usize, arg: usize) -> R<()> {
    if t.shape.len() >= rank {
        Ok(())
    } else {
        Err(ShapeError::new(Some(arg), format!("a tensor with at least {rank} dims"), ty_str(t)))
    }
}

fn want_last(t: &TensorType, d: u64, arg: usize) -> R<()> {
    want_min_rank(t, 1, arg)?;
    let last = &t.shape[t.shape.len() - 1];
    if *last == Dim::known(d) {
        Ok(())
    } else {
        Err(ShapeError::new(Some(arg), format!("`{}[*, {d}]`", t.dtype.name()), ty_str(t))
            .hint(format!("the last dim must be {d}, the layer's input size")))
    }
}

fn with_last(t: &TensorType, dtype: DType, d: Dim) -> TensorType {
    let mut shape = t.shape.clone();
    shape.pop();
    shape.push(d);
    TensorType { dtype, shape }
}

fn with_appended(t: &TensorType, dtype: DType, d: Dim) -> TensorType {
    let mut shape = t.shape.clone();
    shape.push(d);
    TensorType { dtype, shape }
}

fn arity(inputs: &[TensorType], lo: usize, hi: usize) -> R<()> {
    if inputs.len() < lo || inputs.len() > hi {
        let want = if lo == hi { format!("{lo} tensor argument(s)") } else { format!("{lo} to {hi} tensor arguments") };
        return Err(ShapeError::new(None, want, format!("{}", inputs.len())));
    }
    Ok(())
}

fn weight<'a>(weights: &[&'a [u64]], i: usize, what: &str) -> R<&'a [u64]> {
    weights.get(i).copied().ok_or_else(|| ShapeError::new(None, format!("weight `{what}`"), "no weight"))
}

fn dims2(w: &[u64], what: &str) -> R<(u64, u64)> {
    match w {
        [a, b] => Ok((*a, *b)),
        _ => Err(ShapeError::new(None, format!("a 2-d `{what}` weight"), format!("{} dims", w.len()))),
    }
}

/// Output types of `prim` applied to `inputs`. `weights` are the shapes of the weights the
/// primitive reads, in the order documented at the top of this crate (empty for functions).
pub fn infer(prim: &Prim, inputs: &[TensorType], weights: &[&[u64]]) -> Result<Vec<TensorType>, ShapeError> {
    let one = |t: TensorType| Ok(vec![t]);
    match prim {
        Prim::Embedding | Prim::Sinusoidal => {
            arity(inputs, 1, 1)?;
            let (_, dim) = dims2(weight(weights, 0, "weight")?, "weight")?;
            want_dtype(&inputs[0], DType::I64, 0)?;
            one(with_appended(&inputs[0], DType::F32, Dim::known(dim)))
        }
        Prim::Linear { .. } => {
            arity(inputs, 1, 1)?;
            let (out, inp) = dims2(weight(weights, 0, "weight")?, "weight")?;
            want_float(&inputs[0], 0)?;
            want_last(&inputs[0], inp, 0)?;
            one(with_last(&inputs[0], inputs[0].dtype, Dim::known(out)))
        }
        Prim::LayerNorm { .. } | Prim::RmsNorm { .. } => {
            arity(inputs, 1, 1)?;
            let w = weight(weights, 0, "weight")?;
            let dim = w.first().copied().unwrap_or(0);
            want_float(&inputs[0], 0)?;
            want_last(&inputs[0], dim, 0)?;
            one(inputs[0].clone())
        }
        Prim::Mlp { act, .. } => {
            arity(inputs, 1, 1)?;
            // gate (when gated) and up both have `d_model` columns.
            let _ = act;
            let (_, d) = dims2(weight(weights, 0, "up.weight")?, "up")?;
            want_float(&inputs[0], 0)?;
            want_last(&inputs[0], d, 0)?;
            one(inputs[0].clone())
        }
        Prim::Attention(cfg) => infer_attention(cfg, inputs, weights),
        Prim::PatchEmbed { patch, .. } => {
            arity(inputs, 1, 1)?;
            let w = weight(weights, 0, "weight")?;
            let (dim, ch) = match w {
                [d, c, _, _] => (*d, *c),
                _ => return Err(ShapeError::new(None, "a 4-d patch weight", format!("{} dims", w.len()))),
            };
            let x = &inputs[0];
            want_float(x, 0)?;
            want_rank(x, 4, 0, &format!("f32[B, {ch}, H, W]"))?;
            if x.shape[1] != Dim::known(ch) {
                return Err(ShapeError::new(Some(0), format!("`f32[B, {ch}, H, W]`"), ty_str(x))
                    .hint(format!("dim 1 holds the {ch} image channels")));
            }
            for ax in [2, 3] {
                if let Some(n) = x.shape[ax].as_known() {
                    if *patch == 0 || n % patch != 0 {
                        return Err(ShapeError::new(Some(0), format!("image sides divisible by the patch size {patch}"), ty_str(x))
                            .hint("resize the image or choose a patch size that divides it"));
                    }
                }
            }
            let n = x.shape[2].floor_div(*patch).mul(&x.shape[3].floor_div(*patch));
            one(TensorType { dtype: x.dtype, shape: vec![x.shape[0].clone(), n, Dim::known(dim)] })
        }
        Prim::Conv1d { stride, padding, .. } => {
            arity(inputs, 1, 1)?;
            let w = weight(weights, 0, "weight")?;
            let (out, inp, k) = match w {
                [o, i, k] => (*o, *i, *k),
                _ => return Err(ShapeError::new(None, "a 3-d conv weight", format!("{} dims", w.len()))),
            };
            let x = &inputs[0];
            want_float(x, 0)?;
            want_rank(x, 3, 0, &format!("f32[B, {inp}, L]"))?;
            if x.shape[1] != Dim::known(inp) {
                return Err(ShapeError::new(Some(0), format!("`f32[B, {inp}, L]`"), ty_str(x))
                    .hint(format!("dim 1 holds the {inp} input channels")));
            }
            let padded = x.shape[2].add(&Dim::known(padding.saturating_mul(2)));
            if let Some(p) = padded.as_const() {
                if p < k as i64 {
                    return Err(ShapeError::new(Some(0), format!("a length of at least {k} after padding"), ty_str(x)));
                }
            }
            let len = padded.sub(&Dim::known(k)).floor_div((*stride).max(1)).add(&Dim::known(1));
            one(TensorType { dtype: x.dtype, shape: vec![x.shape[0].clone(), Dim::known(out), len] })
        }
        Prim::RelativeBias { q_len, k_len, .. } => {
            arity(inputs, 0, 0)?;
            let (_, heads) = dims2(weight(weights, 0, "weight")?, "weight")?;
            one(TensorType { dtype: DType::F32, shape: vec![Dim::known(heads), q_len.clone(), k_len.clone()] })
        }
        Prim::Add | Prim::Sub | Prim::Mul | Prim::Div => {
            arity(inputs, 2, 2)?;
            let (a, b) = (&inputs[0], &inputs[1]);
            if a.dtype != b.dtype {
                return Err(ShapeError::new(Some(1), format!("a `{}` tensor like the left operand", a.dtype.name()), ty_str(b)));
            }
            match broadcast_shapes(&a.shape, &b.shape) {
                Some(shape) => one(TensorType { dtype: a.dtype, shape }),
                None => Err(ShapeError::new(Some(1), format!("a shape that broadcasts with `[{}]`", shape_str(&a.shape)), ty_str(b))
                    .hint("aligned from the right, each pair of dims must be equal or one of them 1")),
            }
        }
        Prim::MatMul => {
            arity(inputs, 2, 2)?;
            let (a, b) = (&inputs[0], &inputs[1]);
            want_float(a, 0)?;
            want_min_rank(a, 2, 0)?;
            want_min_rank(b, 2, 1)?;
            if a.dtype != b.dtype {
                return Err(ShapeError::new(Some(1), format!("a `{}` tensor like the left operand", a.dtype.name()), ty_str(b)));
            }
            let k = &a.shape[a.shape.len() - 1];
            let kb = &b.shape[b.shape.len() - 2];
            if k != kb {
                return Err(ShapeError::new(Some(1), format!("`[*, {k}, N]` (its second-last dim must be {k}, the last dim of the left operand)"), ty_str(b))
                    .hint("transpose one operand with `^T` if the layout is swapped"));
            }
            let batch = broadcast_shapes(&a.shape[..a.shape.len() - 2], &b.shape[..b.shape.len() - 2]).ok_or_else(|| {
                ShapeError::new(Some(1), format!("batch dims that broadcast with `[{}]`", shape_str(&a.shape[..a.shape.len() - 2])), ty_str(b))
            })?;
            let mut shape = batch;
            shape.push(a.shape[a.shape.len() - 2].clone());
            shape.push(b.shape[b.shape.len() - 1].clone());
            one(TensorType { dtype: a.dtype, shape })
        }
        Prim::Neg | Prim::Scale(_) | Prim::Act(_) | Prim::Tanh | Prim::Sigmoid | Prim::Exp | Prim::Sqrt | Prim::Dropout { .. } | Prim::Normalize => {
            arity(inputs, 1, 1)?;
            want_float(&inputs[0], 0)?;
            if let Prim::Act(Activation::Swiglu | Activation::Geglu) = prim {
                let x = &inputs[0];
                want_min_rank(x, 1, 0)?;
                let last = &x.shape[x.shape.len() - 1];
                let half = last.div_exact(2).ok_or_else(|| ShapeError::new(Some(0), "an even last dim (gated activations split it in two)", ty_str(x)))?;
                return one(with_last(x, x.dtype, half));
            }
            if let Prim::Normalize = prim {
                want_min_rank(&inputs[0], 1, 0)?;
            }
            one(inputs[0].clone())
        }
        Prim::Softmax { axis } | Prim::LogSoftmax { axis } => {
            arity(inputs, 1, 1)?;
            want_float(&inputs[0], 0)?;
            check_axis(&inputs[0], *axis)?;
            one(inputs[0].clone())
        }
        Prim::Arange { n } => {
            arity(inputs, 0, 0)?;
            one(TensorType { dtype: DType::I64, shape: vec![n.clone()] })
        }
        Prim::Reshape { shape } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            let (a, b) = (numel(&x.shape), numel(shape));
            if a != b {
                return Err(ShapeError::new(Some(0), format!("a tensor with {b} elements to reshape to `[{}]`", shape_str(shape)), format!("{} with {a} elements", ty_str(x)))
                    .hint("reshape must keep the number of elements"));
            }
            one(TensorType { dtype: x.dtype, shape: shape.clone() })
        }
        Prim::Permute { axes } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            let mut seen = vec![false; x.shape.len()];
            let ok = axes.len() == x.shape.len()
                && axes.iter().all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
            if !ok {
                return Err(ShapeError::new(Some(0), format!("a tensor with {} dims (axes {:?} must be a permutation of its dims)", axes.len(), axes), ty_str(x)));
            }
            one(TensorType { dtype: x.dtype, shape: axes.iter().map(|&a| x.shape[a].clone()).collect() })
        }
        Prim::Concat { axis } => {
            if inputs.is_empty() {
                return Err(ShapeError::new(None, "at least one tensor to concatenate", "none"));
            }
            let first = &inputs[0];
            check_axis(first, *axis)?;
            let mut total = Dim::known(0);
            for (i, t) in inputs.iter().enumerate() {
                let mut same = t.dtype == first.dtype && t.shape.len() == first.shape.len();
                if same {
                    same = t.shape.iter().zip(&first.shape).enumerate().all(|(ax, (a, b))| ax == *axis || a == b);
                }
                if !same {
                    let mut pat: Vec<String> = first.shape.iter().map(|d| d.to_string()).collect();
                    pat[*axis] = "*".into();
                    return Err(ShapeError::new(Some(i), format!("`{}[{}]` (all dims but {axis} equal)", first.dtype.name(), pat.join(", ")), ty_str(t)));
                }
                total = total.add(&t.shape[*axis]);
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            one(TensorType { dtype: first.dtype, shape })
        }
        Prim::Split { axis, sizes } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            check_axis(x, *axis)?;
            let total = sizes.iter().fold(Dim::known(0), |a, s| a.add(s));
            if total != x.shape[*axis] {
                return Err(ShapeError::new(Some(0), format!("dim {axis} of size {total} (the sum of the split sizes)"), ty_str(x)));
            }
            Ok(sizes
                .iter()
                .map(|s| {
                    let mut shape = x.shape.clone();
                    shape[*axis] = s.clone();
                    TensorType { dtype: x.dtype, shape }
                })
                .collect())
        }
        Prim::Slice { axis, start, end } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            check_axis(x, *axis)?;
            let len = end.sub(start);
            let size = &x.shape[*axis];
            if let (Some(s), Some(e)) = (start.as_const(), end.as_const()) {
                if s < 0 || e < s || size.as_const().is_some_and(|n| e > n) {
                    return Err(ShapeError::new(Some(0), format!("0 <= start <= end <= {size} on dim {axis}"), format!("start {s}, end {e} on {}", ty_str(x))));
                }
            }
            let mut shape = x.shape.clone();
            shape[*axis] = len;
            one(TensorType { dtype: x.dtype, shape })
        }
        Prim::Expand { shape } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            let ok = shape.len() >= x.shape.len()
                && x.shape.iter().rev().zip(shape.iter().rev()).all(|(a, b)| a == b || *a == Dim::known(1));
            if !ok {
                return Err(ShapeError::new(Some(0), format!("a tensor that expands to `[{}]` (dims equal or 1)", shape_str(shape)), ty_str(x)));
            }
            one(TensorType { dtype: x.dtype, shape: shape.clone() })
        }
        Prim::First => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            want_rank(x, 3, 0, "f32[B, T, D]")?;
            one(TensorType { dtype: x.dtype, shape: vec![x.shape[0].clone(), x.shape[2].clone()] })
        }
        Prim::Mean { axis } | Prim::Sum { axis } => {
            arity(inputs, 1, 1)?;
            let x = &inputs[0];
            if matches!(prim, Prim::Mean { .. }) {
                want_float(x, 0)?;
            }
            check_axis(x, *axis)?;
            let mut shape = x.shape.clone();
            shape.remove(*axis);
            one(TensorType { dtype: x.dtype, shape })
        }
        Prim::Alibi { heads, len } => {
            arity(inputs, 0, 0)?;
            one(TensorType { dtype: DType::F32, shape: vec![Dim::known(*heads), len.clone(), len.clone()] })
        }
        Prim::PadMask { .. } => {
            arity(inputs, 1, 1)?;
            want_dtype(&inputs[0], DType::I64, 0)?;
            one(TensorType { dtype: DType::Bool, shape: inputs[0].shape.clone() })
        }
    }
}

fn check_axis(t: &TensorType, axis: usize) -> R<()> {
    if axis < t.shape.len() {
        Ok(())
    } else {
        Err(ShapeError::new(Some(0), format!("a tensor with more than {axis} dims (axis {axis})"), ty_str(t)))
    }
}

fn infer_attention(cfg: &AttentionCfg, inputs: &[TensorType], weights: &[&[u64]]) -> R<Vec<TensorType>> {
    let want = 1 + cfg.cross as usize + cfg.has_mask as usize + cfg.has_bias as usize;
    arity(inputs, want, want)?;
    // d_model from the output projection's rows; kv_dim from k's columns (d_model when fused).
    let (d_model, kv_dim) = if cfg.fused_qkv {
        let (_, d) = dims2(weight(weights, 0, "qkv.weight")?, "qkv")?;
        (d, d)
    } else {
        let (_, d) = dims2(weight(weights, 0, "q.weight")?, "q")?;
        let (_, kv) = dims2(weight(weights, 1, "k.weight")?, "k")?;
        (d, kv)
    };
    let x = &inputs[0];
    want_float(x, 0)?;
    want_rank(x, 3, 0, &format!("f32[B, T, {d_model}]"))?;
    if x.shape[2] != Dim::known(d_model) {
        return Err(ShapeError::new(Some(0), format!("`{}[B, T, {d_model}]`", x.dtype.name()), ty_str(x)).hint(format!("attention was declared with d_model = {d_model}")));
    }
    let (b, t) = (&x.shape[0], &x.shape[1]);
    let mut i = 1;
    let s = if cfg.cross {
        let m = &inputs[i];
        want_float(m, i)?;
        if m.shape.len() != 3 || &m.shape[0] != b || m.shape[2] != Dim::known(kv_dim) {
            return Err(ShapeError::new(Some(i), format!("memory `{}[{b}, S, {kv_dim}]`", x.dtype.name()), ty_str(m))
                .hint("cross-attention memory must share the batch dim and have kv_dim features"));
        }
        i += 1;
        m.shape[1].clone()
    } else {
        if kv_dim != d_model {
            return Err(ShapeError::new(None, format!("a memory tensor (kv_dim = {kv_dim} differs from d_model = {d_model})"), "self-attention")
                .hint("pass the memory as the second argument, or drop `kv_dim`"));
        }
        t.clone()
    };
    if cfg.has_mask {
        let m = &inputs[i];
        let ok = m.dtype == DType::Bool && m.shape.len() == 2 && &m.shape[0] == b && m.shape[1] == s;
        if !ok {
            return Err(ShapeError::new(Some(i), format!("mask `bool[{b}, {s}]`"), ty_str(m)));
        }
        i += 1;
    }
    if cfg.has_bias {
        let m = &inputs[i];
        let expect = [Dim::known(cfg.heads), t.clone(), s.clone()];
        let ok = is_float(m.dtype) && (m.shape == expect || (m.shape.len() == 4 && m.shape[0] == Dim::known(1) && m.shape[1..] == expect));
        if !ok {
            return Err(ShapeError::new(Some(i), format!("bias `f32[{}, {t}, {s}]`", cfg.heads), ty_str(m)));
        }
    }
    Ok(vec![x.clone()])
}

/// A primitive layer with its compile-time arguments: everything needed to create its weights.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerSpec {
    /// `std`: standard deviation of the normal initialisation (0.02 unless the spec says).
    Embedding { num: u64, dim: u64, std: f64 },
    Linear { input: u64, output: u64, bias: bool },
    LayerNorm { dim: u64, eps: f64, bias: bool },
    RmsNorm { dim: u64, eps: f64 },
    /// `cfg.cross`, `has_mask`, `has_bias` are set when the layer is applied.
    Attention { d_model: u64, kv_dim: u64, cfg: AttentionCfg },
    Mlp { d_model: u64, hidden: u64, act: Activation, bias: bool },
    PatchEmbed { channels: u64, dim: u64, patch: u64, bias: bool },
    Conv1d { input: u64, output: u64, kernel: u64, stride: u64, padding: u64, bias: bool },
    Sinusoidal { len: u64, dim: u64 },
    RelativeBias { heads: u64, buckets: u64, max_distance: u64, bidirectional: bool },
    /// A free weight (`parameter([dims], init: ..., decay: false)`), read as `name.weight`.
    Parameter { dims: Vec<u64>, init: Init, decay: bool },
}

const STD: f64 = 0.02;

fn normal(residual: bool) -> Init {
    Init::Normal { std: STD, residual }
}

impl LayerSpec {
    /// The primitive's name as written in source.
    pub fn name(&self) -> &'static str {
        match self {
            LayerSpec::Embedding { .. } => "embedding",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::LayerNorm { .. } => "layer_norm",
            LayerSpec::RmsNorm { .. } => "rms_norm",
            LayerSpec::Attention { .. } => "attention",
            LayerSpec::Mlp { .. } => "mlp",
            LayerSpec::PatchEmbed { .. } => "patch_embed",
            LayerSpec::Conv1d { .. } => "conv1d",
            LayerSpec::Sinusoidal { .. } => "sinusoidal",
            LayerSpec::RelativeBias { .. } => "relative_bias",
            LayerSpec::Parameter { .. } => "parameter",
        }
    }

    /// The weights, named `<prefix>.<inner>`, in the order `Op::Prim::params` lists them.
    /// Sizes that overflow `u64` saturate to `u64::MAX`.
    pub fn params(&self, prefix: &str, span: Span) -> Vec<ParamDef> {
        let mut out = vec![];
        let mut push = |name: &str, shape: Vec<u64>, init: Init, decay: bool, kind: ParamKind| {
            out.push(ParamDef { name: tfm_ir::join(prefix, name), shape, kind, init, decay, span });
        };
        let t = ParamKind::Trainable;
        match self {
            LayerSpec::Embedding { num, dim, std } => push("weight", vec![*num, *dim], Init::Normal { std: *std, residual: false }, false, t),
            LayerSpec::Linear { input, output, bias } => {
                push("weight", vec![*output, *input], normal(false), true, t);
                if *bias {
                    push("bias", vec![*output], Init::Zeros, false, t);
                }
            }
            LayerSpec::LayerNorm { dim, bias, .. } => {
                push("weight", vec![*dim], Init::Ones, false, t);
                if *bias {
                    push("bias", vec![*dim], Init::Zeros, false, t);
                }
            }
            LayerSpec::RmsNorm { dim, .. } => push("weight", vec![*dim], Init::Ones, false, t),
            LayerSpec::Attention { d_model, kv_dim, cfg } => {
                let (h, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
                // Saturating: absurd sizes become u64::MAX, which the checker rejects.
                let m = |a: u64, b: u64| a.saturating_mul(b);
                let qkv_rows = m(h.saturating_add(kv.saturating_mul(2)), hd);
                if cfg.fused_qkv {
                    push("qkv.weight", vec![qkv_rows, *d_model], normal(false), true, t);
                    push("o.weight", vec![*d_model, m(h, hd)], normal(true), true, t);
                    if cfg.bias {
                        push("qkv.bias", vec![qkv_rows], Init::Zeros, false, t);
                    }
                } else {
                    push("q.weight", vec![m(h, hd), *d_model], normal(false), true, t);
                    push("k.weight", vec![m(kv, hd), *kv_dim], normal(false), true, t);
                    push("v.weight", vec![m(kv, hd), *kv_dim], normal(false), true, t);
                    push("o.weight", vec![*d_model, m(h, hd)], normal(true), true, t);
                    if cfg.bias {
                        push("q.bias", vec![m(h, hd)], Init::Zeros, false, t);
                        if cfg.k_bias {
                            push("k.bias", vec![m(kv, hd)], Init::Zeros, false, t);
                        }
                        push("v.bias", vec![m(kv, hd)], Init::Zeros, false, t);
                    }
                }
                if cfg.out_bias {
                    push("o.bias", vec![*d_model], Init::Zeros, false, t);
                }
            }
            LayerSpec::Mlp { d_model, hidden, act, bias } => {
                if matches!(act, Activation::Swiglu | Activation::Geglu) {
                    push("gate.weight", vec![*hidden, *d_model], normal(false), true, t);
                    if *bias {
                        push("gate.bias", vec![*hidden], Init::Zeros, false, t);
                    }
                }
                push("up.weight", vec![*hidden, *d_model], normal(false), true, t);
                if *bias {
                    push("up.bias", vec![*hidden], Init::Zeros, false, t);
                }
                push("down.weight", vec![*d_model, *hidden], normal(true), true, t);
                if *bias {
                    push("down.bias", vec![*d_model], Init::Zeros, false, t);
                }
            }
            LayerSpec::PatchEmbed { channels, dim, patch, bias } => {
                push("weight", vec![*dim, *channels, *patch, *patch], normal(false), true, t);
                if *bias {
                    push("bias", vec![*dim], Init::Zeros, false, t);
                }
            }
            LayerSpec::Conv1d { input, output, kernel, bias, .. } => {
                push("weight", vec![*output, *input, *kernel], normal(false), true, t);
                if *bias {
                    push("bias", vec![*output], Init::Zeros, false, t);
                }
            }
            LayerSpec::Sinusoidal { len, dim } => push("table", vec![*len, *dim], Init::Sinusoidal, false, ParamKind::Fixed),
            LayerSpec::RelativeBias { heads, buckets, .. } => push("weight", vec![*buckets, *heads], normal(false), false, t),
            LayerSpec::Parameter { dims, init, decay } => push("weight", dims.clone(), init.clone(), *decay, t),
        }
        out
    }

    /// The primitive applied by this layer, before application-time flags (attention's
    /// `cross`/`has_mask`/`has_bias`, relative bias lengths) are filled in. `None` for `parameter`.
    pub fn prim(&self) -> Option<Prim> {
        Some(match self {
            LayerSpec::Embedding { .. } => Prim::Embedding,
            LayerSpec::Linear { bias, .. } => Prim::Linear { bias: *bias },
            LayerSpec::LayerNorm { eps, bias, .. } => Prim::LayerNorm { eps: *eps, bias: *bias },
            LayerSpec::RmsNorm { eps, .. } => Prim::RmsNorm { eps: *eps },
            LayerSpec::Attention { cfg, .. } => Prim::Attention(cfg.clone()),
            LayerSpec::Mlp { act, bias, .. } => Prim::Mlp { act: *act, bias: *bias },
            LayerSpec::PatchEmbed { patch, bias, .. } => Prim::PatchEmbed { patch: *patch, bias: *bias },
            LayerSpec::Conv1d { stride, padding, bias, .. } => Prim::Conv1d { stride: *stride, padding: *padding, bias: *bias },
            LayerSpec::Sinusoidal { .. } => Prim::Sinusoidal,
            LayerSpec::RelativeBias { buckets, max_distance, bidirectional, .. } => Prim::RelativeBias {
                buckets: *buckets,
                max_distance: *max_distance,
                bidirectional: *bidirectional,
                q_len: Dim::var("T"),
                k_len: Dim::var("S"),
            },
            LayerSpec::Parameter { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests;
