//! Unit tests: one or more per shape rule, plus the weights of every layer primitive.

use super::*;
use tfm_ir::DType::{Bool, F32, I64};

fn v(n: &str) -> Dim {
    Dim::var(n)
}
fn k(n: u64) -> Dim {
    Dim::known(n)
}
fn t(dtype: DType, shape: Vec<Dim>) -> TensorType {
    TensorType { dtype, shape }
}
fn btd(d: u64) -> TensorType {
    t(F32, vec![v("B"), v("T"), k(d)])
}
fn run(p: &Prim, inputs: &[TensorType], weights: &[Vec<u64>]) -> Result<Vec<TensorType>, ShapeError> {
    let w: Vec<&[u64]> = weights.iter().map(|w| w.as_slice()).collect();
    infer(p, inputs, &w)
}
fn one(p: &Prim, inputs: &[TensorType], weights: &[Vec<u64>]) -> String {
    match run(p, inputs, weights) {
        Ok(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" | "),
        Err(e) => format!("error(arg {:?}): {e}", e.arg),
    }
}
fn shapes(spec: &LayerSpec) -> Vec<Vec<u64>> {
    spec.params("x", Span::default()).into_iter().map(|p| p.shape).collect()
}
fn attn_cfg(heads: u64, kv_heads: u64, head_dim: u64) -> AttentionCfg {
    AttentionCfg {
        heads,
        kv_heads,
        head_dim,
        causal: true,
        bias: true,
        k_bias: true,
        out_bias: true,
        fused_qkv: false,
        window: 0,
        rotary: false,
        rope_theta: 10000.0,
        dropout: 0.0,
        scale: true,
        cross: false,
        has_mask: false,
        has_bias: false,
    }
}

#[test]
fn axes_normalise() {
    assert_eq!(normalize_axis(-1, 3), Some(2));
    assert_eq!(normalize_axis(0, 3), Some(0));
    assert_eq!(normalize_axis(3, 3), None);
    assert_eq!(normalize_axis(-4, 3), None);
}

#[test]
fn broadcasting() {
    assert_eq!(broadcast_shapes(&[v("B"), k(1), k(4)], &[k(3), k(1)]), Some(vec![v("B"), k(3), k(4)]));
    assert_eq!(broadcast_shapes(&[k(2)], &[k(3)]), None);
    assert_eq!(one(&Prim::Add, &[btd(8), t(F32, vec![k(8)])], &[]), "f32[B, T, 8]");
    assert_eq!(one(&Prim::Mul, &[btd(8), btd(4)], &[]), "error(arg Some(1)): expected a shape that broadcasts with `[B, T, 8]`, found `f32[B, T, 4]`");
    assert!(one(&Prim::Sub, &[btd(8), t(I64, vec![k(8)])], &[]).starts_with("error(arg Some(1))"));
}

#[test]
fn matmul() {
    let logits = one(&Prim::MatMul, &[btd(768), t(F32, vec![k(768), k(50257)])], &[]);
    assert_eq!(logits, "f32[B, T, 50257]");
    let scores = one(&Prim::MatMul, &[t(F32, vec![v("B"), k(12), v("T"), k(64)]), t(F32, vec![v("B"), k(12), k(64), v("T")])], &[]);
    assert_eq!(scores, "f32[B, 12, T, T]");
    assert!(one(&Prim::MatMul, &[btd(768), t(F32, vec![k(50257), k(768)])], &[]).contains("second-last dim must be 768"));
    assert!(one(&Prim::MatMul, &[t(F32, vec![k(3)]), t(F32, vec![k(3), k(3)])], &[]).starts_with("error(arg Some(0))"));
}

#[test]
fn unary_and_activations() {
    for p in [Prim::Neg, Prim::Scale(0.5), Prim::Act(Activation::Gelu), Prim::Tanh, Prim::Sigmoid, Prim::Exp, Prim::Sqrt, Prim::Dropout { p: 0.1 }, Prim::Normalize] {
        assert_eq!(one(&p, &[btd(4)], &[]), "f32[B, T, 4]", "{p:?}");
    }
    assert_eq!(one(&Prim::Act(Activation::Swiglu), &[btd(8)], &[]), "f32[B, T, 4]");
    assert!(one(&Prim::Act(Activation::Geglu), &[btd(7)], &[]).contains("even last dim"));
    assert!(one(&Prim::Exp, &[t(I64, vec![v("B")])], &[]).contains("floating-point"));
}

#[test]
fn softmax_axes() {
    assert_eq!(one(&Prim::Softmax { axis: 2 }, &[btd(4)], &[]), "f32[B, T, 4]");
    assert!(one(&Prim::LogSoftmax { axis: 3 }, &[btd(4)], &[]).starts_with("error"));
}

#[test]
fn reshape_compares_symbolic_numel() {
    let x = t(F32, vec![v("B"), v("T"), k(768)]);
    let ok = Prim::Reshape { shape: vec![v("B"), v("T"), k(12), k(64)] };
    assert_eq!(one(&ok, std::slice::from_ref(&x), &[]), "f32[B, T, 12, 64]");
    let flat = Prim::Reshape { shape: vec![v("T").mul(&v("B")).mul(&k(768))] };
    assert_eq!(one(&flat, std::slice::from_ref(&x), &[]), "f32[768*B*T]");
    let bad = Prim::Reshape { shape: vec![v("B"), v("T"), k(12), k(32)] };
    let e = one(&bad, &[x], &[]);
    assert!(e.starts_with("error(arg Some(0))"), "{e}");
    assert!(e.contains("384*B*T elements") && e.contains("with 768*B*T elements"), "{e}");
}

#[test]
fn permute_concat_split_slice_expand() {
    let x = t(F32, vec![v("B"), k(12), v("T"), k(64)]);
    assert_eq!(one(&Prim::Permute { axes: vec![0, 2, 1, 3] }, std::slice::from_ref(&x), &[]), "f32[B, T, 12, 64]");
    assert!(one(&Prim::Permute { axes: vec![0, 0, 1, 3] }, std::slice::from_ref(&x), &[]).starts_with("error"));
    assert_eq!(one(&Prim::Concat { axis: 2 }, &[btd(3), btd(5)], &[]), "f32[B, T, 8]");
    assert_eq!(one(&Prim::Concat { axis: 1 }, &[btd(3), btd(3)], &[]), "f32[B, 2*T, 3]");
    assert!(one(&Prim::Concat { axis: 1 }, &[btd(3), btd(5)], &[]).starts_with("error(arg Some(1))"));
    assert_eq!(one(&Prim::Split { axis: 2, sizes: vec![k(4), k(4), k(8)] }, &[btd(16)], &[]), "f32[B, T, 4] | f32[B, T, 4] | f32[B, T, 8]");
    assert!(one(&Prim::Split { axis: 2, sizes: vec![k(4), k(4)] }, &[btd(16)], &[]).contains("size 8"));
    assert_eq!(one(&Prim::Slice { axis: 2, start: k(2), end: k(6) }, &[btd(16)], &[]), "f32[B, T, 4]");
    assert!(one(&Prim::Slice { axis: 2, start: k(2), end: k(20) }, &[btd(16)], &[]).starts_with("error"));
    assert_eq!(one(&Prim::Expand { shape: vec![v("B"), v("T"), k(4)] }, &[t(F32, vec![k(1), k(4)])], &[]), "f32[B, T, 4]");
    assert!(one(&Prim::Expand { shape: vec![v("B"), k(4)] }, &[t(F32, vec![k(3)])], &[]).starts_with("error"));
}

#[test]
fn pooling_and_misc() {
    assert_eq!(one(&Prim::First, &[btd(8)], &[]), "f32[B, 8]");
    assert_eq!(one(&Prim::Mean { axis: 1 }, &[btd(8)], &[]), "f32[B, 8]");
    assert_eq!(one(&Prim::Sum { axis: 0 }, &[btd(8)], &[]), "f32[T, 8]");
    assert_eq!(one(&Prim::Arange { n: v("T") }, &[], &[]), "i64[T]");
    assert_eq!(one(&Prim::Alibi { heads: 4, len: v("T") }, &[], &[]), "f32[4, T, T]");
    assert_eq!(one(&Prim::PadMask { pad_id: 0 }, &[t(I64, vec![v("B"), v("T")])], &[]), "bool[B, T]");
    assert!(one(&Prim::PadMask { pad_id: 0 }, &[btd(3)], &[]).contains("`i64` tensor"));
}

#[test]
fn embedding_linear_norms() {
    let ids = t(I64, vec![v("B"), v("T")]);
    let emb = LayerSpec::Embedding { num: 100, dim: 16, std: 0.02 };
    assert_eq!(shapes(&emb), vec![vec![100, 16]]);
    assert_eq!(one(&Prim::Embedding, std::slice::from_ref(&ids), &shapes(&emb)), "f32[B, T, 16]");
    assert!(one(&Prim::Embedding, &[btd(3)], &shapes(&emb)).contains("`i64` tensor"));

    let lin = LayerSpec::Linear { input: 16, output: 32, bias: true };
    let p = lin.params("proj", Span::default());
    assert_eq!(p[0].name, "proj.weight");
    assert_eq!(p[0].shape, vec![32, 16]);
    assert!(p[0].decay && !p[1].decay);
    assert_eq!(p[1].shape, vec![32]);
    assert_eq!(p[1].init, Init::Zeros);
    assert_eq!(one(&Prim::Linear { bias: true }, &[btd(16)], &shapes(&lin)), "f32[B, T, 32]");
    assert_eq!(one(&Prim::Linear { bias: true }, &[btd(8)], &shapes(&lin)), "error(arg Some(0)): expected `f32[*, 16]`, found `f32[B, T, 8]`");
    assert_eq!(shapes(&LayerSpec::Linear { input: 16, output: 32, bias: false }).len(), 1);

    let ln = LayerSpec::LayerNorm { dim: 16, eps: 1e-5, bias: true };
    let p = ln.params("ln", Span::default());
    assert_eq!((p[0].init.clone(), p[0].decay), (Init::Ones, false));
    assert_eq!(one(&Prim::LayerNorm { eps: 1e-5, bias: true }, &[btd(16)], &shapes(&ln)), "f32[B, T, 16]");
    let rms = LayerSpec::RmsNorm { dim: 16, eps: 1e-6 };
    assert_eq!(shapes(&rms), vec![vec![16]]);
    assert!(one(&Prim::RmsNorm { eps: 1e-6 }, &[btd(15)], &shapes(&rms)).starts_with("error"));
}

#[test]
fn attention_weights_and_rule() {
    // GPT-2: 768, 12 heads: 4 * 768^2 + 4 * 768 = 2_362_368.
    let spec = LayerSpec::Attention { d_model: 768, kv_dim: 768, cfg: attn_cfg(12, 12, 64) };
    let params = spec.params("attn", Span::default());
    let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias"]);
    assert_eq!(params.iter().map(|p| p.numel()).sum::<u64>(), 2_362_368);
    assert_eq!(params[3].init, Init::Normal { std: 0.02, residual: true });
    assert_eq!(params[0].init, Init::Normal { std: 0.02, residual: false });

    // Whisper tiny: 384, 6 heads, no key bias: 4 * 384^2 + 3 * 384 = 590_976.
    let mut cfg = attn_cfg(6, 6, 64);
    cfg.k_bias = false;
    let whisper = LayerSpec::Attention { d_model: 384, kv_dim: 384, cfg };
    let params = whisper.params("attn", Span::default());
    let names: Vec<_> = params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "attn.q.bias", "attn.v.bias", "attn.o.bias"]);
    assert_eq!(params.iter().map(|p| p.numel()).sum::<u64>(), 590_976);

    // Mistral: 4096, 32 heads, 8 kv heads, no bias: q 4096^2, k/v 1024*4096, o 4096^2.
    let mut cfg = attn_cfg(32, 8, 128);
    cfg.bias = false;
    cfg.out_bias = false;
    let gqa = LayerSpec::Attention { d_model: 4096, kv_dim: 4096, cfg: cfg.clone() };
    assert_eq!(shapes(&gqa), vec![vec![4096, 4096], vec![1024, 4096], vec![1024, 4096], vec![4096, 4096]]);

    cfg.fused_qkv = true;
    let fused = LayerSpec::Attention { d_model: 4096, kv_dim: 4096, cfg: cfg.clone() };
    assert_eq!(shapes(&fused), vec![vec![6144, 4096], vec![4096, 4096]]);
    assert_eq!(one(&Prim::Attention(cfg.clone()), &[btd(4096)], &shapes(&fused)), "f32[B, T, 4096]");

    let p = Prim::Attention(attn_cfg(12, 12, 64));
    assert_eq!(one(&p, &[btd(768)], &shapes(&spec)), "f32[B, T, 768]");
    assert!(one(&p, &[btd(512)], &shapes(&spec)).starts_with("error(arg Some(0)): expected `f32[B, T, 768]`"));

    // Cross attention with a mask, memory of kv_dim 512.
    let mut c = attn_cfg(12, 12, 64);
    c.cross = true;
    c.has_mask = true;
    let cross = LayerSpec::Attention { d_model: 768, kv_dim: 512, cfg: c.clone() };
    assert_eq!(shapes(&cross)[1], vec![768, 512]);
    let mem = t(F32, vec![v("B"), v("S"), k(512)]);
    let mask = t(Bool, vec![v("B"), v("S")]);
    assert_eq!(one(&Prim::Attention(c.clone()), &[btd(768), mem.clone(), mask], &shapes(&cross)), "f32[B, T, 768]");
    let bad_mask = t(Bool, vec![v("B"), v("T")]);
    assert!(one(&Prim::Attention(c.clone()), &[btd(768), mem, bad_mask], &shapes(&cross)).starts_with("error(arg Some(2))"));
    // Self-attention with a kv_dim that is not d_model is an error.
    let mut s = attn_cfg(12, 12, 64);
    s.cross = false;
    assert!(one(&Prim::Attention(s), &[btd(768)], &shapes(&cross)).contains("memory"));
}

#[test]
fn mlp_weights() {
    let gelu = LayerSpec::Mlp { d_model: 768, hidden: 3072, act: Activation::Gelu, bias: true };
    let p = gelu.params("mlp", Span::default());
    let names: Vec<_> = p.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["mlp.up.weight", "mlp.up.bias", "mlp.down.weight", "mlp.down.bias"]);
    assert_eq!(p.iter().map(|p| p.numel()).sum::<u64>(), 4_722_432);
    assert_eq!(p[2].init, Init::Normal { std: 0.02, residual: true });
    let swiglu = LayerSpec::Mlp { d_model: 4096, hidden: 11008, act: Activation::Swiglu, bias: false };
    assert_eq!(shapes(&swiglu), vec![vec![11008, 4096], vec![11008, 4096], vec![4096, 11008]]);
    assert_eq!(swiglu.params("m", Span::default())[0].name, "m.gate.weight");
    assert_eq!(one(&Prim::Mlp { act: Activation::Swiglu, bias: false }, &[btd(4096)], &shapes(&swiglu)), "f32[B, T, 4096]");
    assert!(one(&Prim::Mlp { act: Activation::Swiglu, bias: false }, &[btd(11008)], &shapes(&swiglu)).starts_with("error"));
}

#[test]
fn patch_embed_and_conv() {
    let pe = LayerSpec::PatchEmbed { channels: 3, dim: 768, patch: 16, bias: true };
    assert_eq!(shapes(&pe), vec![vec![768, 3, 16, 16], vec![768]]);
    let img = t(F32, vec![v("B"), k(3), k(224), k(224)]);
    assert_eq!(one(&Prim::PatchEmbed { patch: 16, bias: true }, &[img], &shapes(&pe)), "f32[B, 196, 768]");
    let odd = t(F32, vec![v("B"), k(3), k(225), k(224)]);
    assert!(one(&Prim::PatchEmbed { patch: 16, bias: true }, &[odd], &shapes(&pe)).contains("divisible"));
    let gray = t(F32, vec![v("B"), k(1), k(224), k(224)]);
    assert!(one(&Prim::PatchEmbed { patch: 16, bias: true }, &[gray], &shapes(&pe)).starts_with("error(arg Some(0))"));

    // Whisper front end: conv(80 -> 384, k3, p1), conv(384 -> 384, k3, s2, p1); 3000 -> 3000 -> 1500.
    let c1 = LayerSpec::Conv1d { input: 80, output: 384, kernel: 3, stride: 1, padding: 1, bias: true };
    assert_eq!(shapes(&c1), vec![vec![384, 80, 3], vec![384]]);
    let mel = t(F32, vec![v("B"), k(80), k(3000)]);
    assert_eq!(one(&Prim::Conv1d { stride: 1, padding: 1, bias: true }, &[mel], &shapes(&c1)), "f32[B, 384, 3000]");
    let c2 = LayerSpec::Conv1d { input: 384, output: 384, kernel: 3, stride: 2, padding: 1, bias: true };
    let x = t(F32, vec![v("B"), k(384), k(3000)]);
    assert_eq!(one(&Prim::Conv1d { stride: 2, padding: 1, bias: true }, &[x], &shapes(&c2)), "f32[B, 384, 1500]");
    let sym = t(F32, vec![v("B"), k(384), v("L").mul(&k(2))]);
    assert_eq!(one(&Prim::Conv1d { stride: 2, padding: 1, bias: true }, &[sym], &shapes(&c2)), "f32[B, 384, (2*L - 1)/2 + 1]");
}

#[test]
fn fixed_tables_relative_bias_and_free_parameters() {
    let sin = LayerSpec::Sinusoidal { len: 1500, dim: 384 };
    let p = sin.params("pos", Span::default());
    assert_eq!((p[0].name.as_str(), p[0].kind, p[0].init.clone()), ("pos.table", ParamKind::Fixed, Init::Sinusoidal));
    assert_eq!(one(&Prim::Sinusoidal, &[t(I64, vec![v("T")])], &shapes(&sin)), "f32[T, 384]");

    let rb = LayerSpec::RelativeBias { heads: 8, buckets: 32, max_distance: 128, bidirectional: true };
    assert_eq!(shapes(&rb), vec![vec![32, 8]]);
    let prim = Prim::RelativeBias { buckets: 32, max_distance: 128, bidirectional: true, q_len: v("T"), k_len: v("S") };
    assert_eq!(one(&prim, &[], &shapes(&rb)), "f32[8, T, S]");
    assert_eq!(rb.prim(), Some(prim));

    let scale = LayerSpec::Parameter { dims: vec![], init: Init::Constant(2.6592), decay: false };
    let p = scale.params("logit_scale", Span::default());
    assert_eq!((p[0].name.as_str(), p[0].numel(), p[0].decay), ("logit_scale.weight", 1, false));
    assert_eq!(scale.prim(), None);
}
