//! Gradient checks against central finite differences for every primitive and objective, written
//! once over the device (`check_*<D: Backend>(dev)`, each run with and without the fused
//! kernels), plus the dfdx bug guards, run-time errors and an end-to-end training test.

use crate::fixtures::*;
use crate::*;
use tfm_ir::*;

fn normal(std: f64) -> Init {
    Init::Normal { std, residual: false }
}

fn f32s(shape: &[u64]) -> TensorType {
    f32t(shape.iter().map(|&d| k(d)).collect())
}

fn i64s(shape: &[u64]) -> TensorType {
    i64t(shape.iter().map(|&d| k(d)).collect())
}

/// A deterministic value in [-1, 1) for probe weights.
fn pseudo(i: usize) -> f32 {
    let mut r = crate::value::Rng::new(i as u64 * 7919 + 13);
    r.uniform() * 2.0 - 1.0
}

/// A model with one output built by `f`, no objective.
fn single(f: impl FnOnce(&mut GraphBuilder) -> ValueId) -> Model {
    let mut b = GraphBuilder::default();
    let out = f(&mut b);
    b.g.outputs.push(out);
    model("probe", b.g, vec![], None)
}

/// A differentiable tensor for tests: a weight read as a value.
fn wv(b: &mut GraphBuilder, name: &str, shape: &[u64]) -> ValueId {
    let p = b.param(name, shape.to_vec(), normal(1.0));
    b.weight(p)
}

struct Case {
    model: Model,
    inputs: Vec<HostTensor>,
    train: bool,
    /// Skip entries whose value is this close to a kink (relu).
    kink: f32,
}

impl Case {
    fn new(model: Model) -> Case {
        Case { model, inputs: vec![], train: false, kink: 0.0 }
    }
    fn inputs(mut self, inputs: Vec<HostTensor>) -> Case {
        self.inputs = inputs;
        self
    }
}

const EPS: f32 = 1e-2;

fn close(ana: f32, num: f32) -> bool {
    (ana - num).abs() <= 1e-2 * ana.abs().max(num.abs()) + 3e-3
}

/// Indices to perturb: all of a small weight, an even spread of a large one.
fn picks(n: usize) -> Vec<usize> {
    if n <= 12 {
        (0..n).collect()
    } else {
        (0..12).map(|i| (i * n) / 12 + (i % 3)).filter(|&i| i < n).collect()
    }
}

/// Checks d(sum(output * probe))/d(weight) against central differences, fused and generic.
fn gradcheck<D: Backend>(dev: &D, case: &Case) -> Result<(), String> {
    for fused in [true, false] {
        let mut rt = Runtime::new(case.model.clone(), dev.clone()).map_err(|e| e.to_string())?;
        rt.set_fused(fused);
        let store = rt.init_params(3);
        let outs = rt.forward(&store, &case.inputs, case.train, 7).map_err(|e| e.to_string())?;
        let n = outs[0].len();
        let probe: Vec<f32> = (0..n).map(pseudo).collect();
        let (_, grads) = rt.probe_grads(&store, &case.inputs, &probe, case.train).map_err(|e| e.to_string())?;
        let mut checked = 0;
        for (pi, p) in store.params.iter().enumerate() {
            if !p.trainable {
                continue;
            }
            let g = grads.get(&p.value).as_vec();
            let data = p.value.as_vec();
            for i in picks(data.len()) {
                if case.kink > 0.0 && data[i].abs() < case.kink {
                    continue;
                }
                let at = |delta: f32| -> Result<f32, String> {
                    let mut s2 = store.clone();
                    let mut d = data.clone();
                    d[i] += delta;
                    s2.params[pi].value = dev.tensor_from_vec(d, (data.len(),));
                    rt.probe_loss(&s2, &case.inputs, &probe, case.train).map_err(|e| e.to_string())
                };
                let num = (at(EPS)? - at(-EPS)?) / (2.0 * EPS);
                if !close(g[i], num) {
                    return Err(format!(
                        "fused={fused}: d/d {}[{i}]: backward {} vs finite difference {num}",
                        p.name, g[i]
                    ));
                }
                checked += 1;
            }
        }
        if checked == 0 {
            return Err("nothing was checked".into());
        }
    }
    #[cfg(feature = "emu")]
    gpu_kernels_match(dev, case)?;
    Ok(())
}

/// Whether two results agree within the tolerance of two f32 computations in different orders.
#[cfg(feature = "emu")]
fn near(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 + 1e-3 * a.abs().max(b.abs())
}

/// The GPU's fused operations (`kops`), run on the kernel emulator, against the CPU's fused
/// kernels (which the finite differences above check): outputs and every weight's gradient, in
/// evaluation mode (the two draw dropout masks differently). Only a CPU runtime has the emulator.
#[cfg(feature = "emu")]
fn gpu_kernels_match<D: Backend>(dev: &D, case: &Case) -> Result<(), String> {
    if std::any::TypeId::of::<D>() != std::any::TypeId::of::<Cpu>() {
        return Ok(());
    }
    let run = |gpu: bool| -> Result<(Vec<f32>, Vec<Vec<f32>>, usize), String> {
        let mut rt = Runtime::new(case.model.clone(), dev.clone()).map_err(|e| e.to_string())?;
        rt.set_gpu_kernels(gpu);
        let store = rt.init_params(3);
        let outs = rt.forward(&store, &case.inputs, false, 7).map_err(|e| e.to_string())?;
        let out: Vec<f32> = outs.iter().flat_map(|o| match o {
            HostTensor::F32 { data, .. } => data.clone(),
            _ => vec![],
        }).collect();
        let probe: Vec<f32> = (0..outs[0].len()).map(pseudo).collect();
        let (_, grads) = rt.probe_grads(&store, &case.inputs, &probe, false).map_err(|e| e.to_string())?;
        let g = store.params.iter().filter(|p| p.trainable).map(|p| grads.get(&p.value).as_vec()).collect();
        Ok((out, g, rt.fused_gpu_ops()))
    };
    let (out_cpu, g_cpu, _) = run(false)?;
    let (out_gpu, g_gpu, ops) = run(true)?;
    if ops == 0 {
        // nothing in this model has a fused GPU operation (an RMS norm, a permute, ...)
        return Ok(());
    }
    for (i, (a, b)) in out_gpu.iter().zip(&out_cpu).enumerate() {
        if !near(*a, *b) {
            return Err(format!("GPU kernels on the emulator: output[{i}] {a} vs the CPU's {b}"));
        }
    }
    for (w, (ga, gb)) in g_gpu.iter().zip(&g_cpu).enumerate() {
        for (i, (a, b)) in ga.iter().zip(gb).enumerate() {
            if !near(*a, *b) {
                return Err(format!("GPU kernels on the emulator: gradient of weight {w}, element {i}: {a} vs the CPU's {b}"));
            }
        }
    }
    Ok(())
}

/// Checks the objective's gradient (`loss_and_grads`) against central differences of `loss`.
fn losscheck<D: Backend>(dev: &D, m: &Model, batch: &Batch) -> Result<(), String> {
    for fused in [true, false] {
        let mut rt = Runtime::new(m.clone(), dev.clone()).map_err(|e| e.to_string())?;
        rt.set_fused(fused);
        let store = rt.init_params(5);
        let (l, grads) = rt.loss_and_grads(&store, batch, 1).map_err(|e| e.to_string())?;
        let l2 = rt.loss(&store, batch).map_err(|e| e.to_string())?;
        if (l - l2).abs() > 1e-5 * l.abs().max(1.0) {
            return Err(format!("fused={fused}: train and eval losses differ without dropout: {l} vs {l2}"));
        }
        for (pi, p) in store.params.iter().enumerate() {
            let g = grads.get(&p.value).as_vec();
            let data = p.value.as_vec();
            for i in picks(data.len()) {
                let at = |delta: f32| -> Result<f32, String> {
                    let mut s2 = store.clone();
                    let mut d = data.clone();
                    d[i] += delta;
                    s2.params[pi].value = dev.tensor_from_vec(d, (data.len(),));
                    rt.loss(&s2, batch).map_err(|e| e.to_string())
                };
                let num = (at(EPS)? - at(-EPS)?) / (2.0 * EPS);
                if !close(g[i], num) {
                    return Err(format!("fused={fused}: d loss/d {}[{i}]: backward {} vs finite difference {num}", p.name, g[i]));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- checks, generic over the device

pub fn check_linear<D: Backend>(dev: D) -> Result<(), String> {
    for bias in [true, false] {
        let m = single(|b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let w = b.param("w", vec![5, 4], normal(0.5));
            let mut ps = vec![w];
            if bias {
                ps.push(b.param("b", vec![5], normal(0.5)));
            }
            b.prim(Prim::Linear { bias }, ps, vec![x], f32s(&[2, 3, 5]))
        });
        gradcheck(&dev, &Case::new(m))?;
    }
    Ok(())
}

pub fn check_matmul<D: Backend>(dev: D) -> Result<(), String> {
    let shapes: [(&[u64], &[u64], &[u64]); 4] = [
        (&[2, 3, 4], &[4, 5], &[2, 3, 5]),
        (&[2, 3, 4], &[2, 4, 5], &[2, 3, 5]),
        (&[1, 3, 4], &[2, 4, 5], &[2, 3, 5]),
        (&[3, 4], &[2, 4, 2], &[2, 3, 2]),
    ];
    for (sa, sb, so) in shapes {
        let m = single(|b| {
            let x = wv(b, "a", sa);
            let y = wv(b, "b", sb);
            b.prim(Prim::MatMul, vec![], vec![x, y], f32s(so))
        });
        gradcheck(&dev, &Case::new(m))?;
    }
    // the same tensor on both sides: x @ x^T and x @ x
    let m = single(|b| {
        let x = wv(b, "x", &[2, 3, 3]);
        let xt = b.prim(Prim::Permute { axes: vec![0, 2, 1] }, vec![], vec![x], f32s(&[2, 3, 3]));
        let y = b.prim(Prim::MatMul, vec![], vec![x, xt], f32s(&[2, 3, 3]));
        b.prim(Prim::MatMul, vec![], vec![y, y], f32s(&[2, 3, 3]))
    });
    gradcheck(&dev, &Case::new(m))?;
    // `x @ w^T` (the product reads `w` in place), and `w^T` used twice (materialised)
    for twice in [false, true] {
        let m = single(|b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let w = wv(b, "w", &[5, 4]);
            let wt = b.prim(Prim::Permute { axes: vec![1, 0] }, vec![], vec![w], f32s(&[4, 5]));
            let y = b.prim(Prim::MatMul, vec![], vec![x, wt], f32s(&[2, 3, 5]));
            if twice {
                let z = b.prim(Prim::MatMul, vec![], vec![x, wt], f32s(&[2, 3, 5]));
                b.prim(Prim::Mul, vec![], vec![y, z], f32s(&[2, 3, 5]))
            } else {
                y
            }
        });
        let in_place = crate::exec::transposes_read_in_place(&m.graph).iter().any(|&k| k);
        if in_place == twice {
            return Err(format!("x @ w^T (w^T used twice: {twice}): read in place {in_place}"));
        }
        gradcheck(&dev, &Case::new(m))?;
    }
    Ok(())
}

pub fn check_norms<D: Backend>(dev: D) -> Result<(), String> {
    // 6 wide, and 37 wide (the kernels' 16-lane blocks plus a remainder)
    for n in [6u64, 37] {
        for bias in [true, false] {
            let m = single(|b| {
                let x = wv(b, "x", &[2, 3, n]);
                let w = b.param("w", vec![n], normal(1.0));
                let mut ps = vec![w];
                if bias {
                    ps.push(b.param("b", vec![n], normal(1.0)));
                }
                b.prim(Prim::LayerNorm { eps: 1e-5, bias }, ps, vec![x], f32s(&[2, 3, n]))
            });
            gradcheck(&dev, &Case::new(m)).map_err(|e| format!("layer norm {n} wide, bias {bias}: {e}"))?;
        }
        let m = single(|b| {
            let x = wv(b, "x", &[2, 3, n]);
            let w = b.param("w", vec![n], normal(1.0));
            b.prim(Prim::RmsNorm { eps: 1e-6 }, vec![w], vec![x], f32s(&[2, 3, n]))
        });
        gradcheck(&dev, &Case::new(m)).map_err(|e| format!("RMS norm {n} wide: {e}"))?;
    }
    Ok(())
}

pub fn check_elementwise<D: Backend>(dev: D) -> Result<(), String> {
    let unary = [
        Prim::Act(Activation::Gelu),
        Prim::Act(Activation::GeluExact),
        Prim::Act(Activation::Silu),
        Prim::Act(Activation::Relu),
        Prim::Tanh,
        Prim::Sigmoid,
        Prim::Exp,
        Prim::Neg,
        Prim::Scale(-2.5),
    ];
    for p in unary {
        let relu = p == Prim::Act(Activation::Relu);
        let m = single(|b| {
            let x = wv(b, "x", &[2, 3, 4]);
            b.prim(p.clone(), vec![], vec![x], f32s(&[2, 3, 4]))
        });
        let mut case = Case::new(m);
        if relu {
            case.kink = 3.0 * EPS;
        }
        gradcheck(&dev, &case).map_err(|e| format!("{p:?}: {e}"))?;
    }
    // sqrt of a positive value
    let m = single(|b| {
        let x = wv(b, "x", &[2, 3]);
        let e = b.prim(Prim::Exp, vec![], vec![x], f32s(&[2, 3]));
        b.prim(Prim::Sqrt, vec![], vec![e], f32s(&[2, 3]))
    });
    gradcheck(&dev, &Case::new(m))?;
    // binary ops with broadcasting; x * x uses one tensor twice
    type Bin<'a> = (Prim, &'a [u64], &'a [u64], &'a [u64]);
    let cases: [Bin; 6] = [
        (Prim::Add, &[2, 3, 4], &[4], &[2, 3, 4]),
        (Prim::Sub, &[2, 1, 4], &[3, 1], &[2, 3, 4]),
        (Prim::Add, &[2, 3, 1], &[2, 3, 4], &[2, 3, 4]),
        // kept, repeated, kept, repeated: no single broadcast, an index gather
        (Prim::Mul, &[2, 1, 3, 1], &[2, 4, 3, 5], &[2, 4, 3, 5]),
        (Prim::Mul, &[2, 3, 4], &[2, 3, 4], &[2, 3, 4]),
        (Prim::Div, &[2, 3], &[3], &[2, 3]),
    ];
    for (p, sa, sb, so) in cases {
        let m = single(|b| {
            let x = wv(b, "a", sa);
            let y = wv(b, "b", sb);
            let y = if p == Prim::Div { b.prim(Prim::Exp, vec![], vec![y], f32s(sb)) } else { y };
            b.prim(p.clone(), vec![], vec![x, y], f32s(so))
        });
        gradcheck(&dev, &Case::new(m)).map_err(|e| format!("{p:?}: {e}"))?;
    }
    let m = single(|b| {
        let x = wv(b, "x", &[2, 3]);
        let y = b.prim(Prim::Mul, vec![], vec![x, x], f32s(&[2, 3]));
        b.prim(Prim::Add, vec![], vec![y, x], f32s(&[2, 3]))
    });
    gradcheck(&dev, &Case::new(m))
}

pub fn check_mlp<D: Backend>(dev: D) -> Result<(), String> {
    let acts = [Activation::Gelu, Activation::GeluExact, Activation::Relu, Activation::Silu, Activation::Swiglu, Activation::Geglu];
    for act in acts {
        for bias in [true, false] {
            let gated = matches!(act, Activation::Swiglu | Activation::Geglu);
            let m = single(|b| {
                let x = wv(b, "x", &[2, 2, 4]);
                let mut ps = vec![];
                let mut lin = |b: &mut GraphBuilder, n: &str, o: u64, i: u64| {
                    ps.push(b.param(&format!("mlp.{n}.weight"), vec![o, i], normal(0.5)));
                    if bias {
                        ps.push(b.param(&format!("mlp.{n}.bias"), vec![o], normal(0.5)));
                    }
                };
                if gated {
                    lin(b, "gate", 6, 4);
                }
                lin(b, "up", 6, 4);
                lin(b, "down", 4, 6);
                b.prim(Prim::Mlp { act, bias }, ps, vec![x], f32s(&[2, 2, 4]))
            });
            let mut case = Case::new(m);
            if act == Activation::Relu {
                // hidden pre-activations are not weights; relu kinks are rare at these sizes but
                // a perturbation may cross one: use the tolerance of a smooth activation elsewhere
                case.kink = 0.0;
            }
            gradcheck(&dev, &case).map_err(|e| format!("{act:?} bias={bias}: {e}"))?;
        }
    }
    Ok(())
}

fn attn_cfg(heads: u64, kv: u64, hd: u64) -> AttentionCfg {
    AttentionCfg {
        heads,
        kv_heads: kv,
        head_dim: hd,
        causal: false,
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

/// An attention model over `x [2, 4, 6]` (memory `[2, 5, 6]` when cross).
fn attn_model(c: AttentionCfg) -> Model {
    let s = if c.cross { 5 } else { 4 };
    attn_model_len(c, 4, s)
}

/// An attention model over `x [2, t, 6]` (memory `[2, s, 6]` when cross).
fn attn_model_len(c: AttentionCfg, t: u64, s: u64) -> Model {
    let d = 6u64;
    single(|b| {
        let x = wv(b, "x", &[2, t, d]);
        let mut ins = vec![x];
        if c.cross {
            ins.push(wv(b, "mem", &[2, s, d]));
        }
        if c.has_mask {
            let ids = b.input(i64s(&[2, s]), "ids");
            ins.push(b.prim(Prim::PadMask { pad_id: 0 }, vec![], vec![ids], TensorType { dtype: DType::Bool, shape: vec![k(2), k(s)] }));
        }
        if c.has_bias {
            let w = b.param("rel.weight", vec![8, c.heads], normal(1.0));
            ins.push(b.prim(
                Prim::RelativeBias { buckets: 8, max_distance: 16, bidirectional: true, q_len: k(t), k_len: k(s) },
                vec![w],
                vec![],
                f32s(&[c.heads, t, s]),
            ));
        }
        let (qd, kd) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let mut ws = vec![];
        let mut bs = vec![];
        if c.fused_qkv {
            ws.push(b.param("attn.qkv.weight", vec![qd + 2 * kd, d], normal(0.4)));
            if c.bias {
                bs.push(b.param("attn.qkv.bias", vec![qd + 2 * kd], normal(0.4)));
            }
        } else {
            for (n, o) in [("q", qd), ("k", kd), ("v", kd)] {
                ws.push(b.param(&format!("attn.{n}.weight"), vec![o, d], normal(0.4)));
                if c.bias && (n != "k" || c.k_bias) {
                    bs.push(b.param(&format!("attn.{n}.bias"), vec![o], normal(0.4)));
                }
            }
        }
        ws.push(b.param("attn.o.weight", vec![d, qd], normal(0.4)));
        if c.out_bias {
            bs.push(b.param("attn.o.bias", vec![d], normal(0.4)));
        }
        ws.extend(bs);
        b.prim(Prim::Attention(c), ws, ins, f32s(&[2, t, d]))
    })
}

pub fn check_attention<D: Backend>(dev: D) -> Result<(), String> {
    let base = attn_cfg(2, 2, 3);
    let mut variants: Vec<(&str, AttentionCfg)> = vec![("plain", base.clone())];
    variants.push(("causal fused", AttentionCfg { causal: true, fused_qkv: true, ..base.clone() }));
    variants.push(("gqa", AttentionCfg { heads: 4, kv_heads: 2, head_dim: 2, causal: true, ..base.clone() }));
    variants.push(("window", AttentionCfg { causal: true, window: 2, bias: false, out_bias: false, ..base.clone() }));
    variants.push(("rotary", AttentionCfg { rotary: true, head_dim: 4, heads: 2, kv_heads: 1, causal: true, ..base.clone() }));
    variants.push(("rotary fused", AttentionCfg { rotary: true, head_dim: 4, fused_qkv: true, ..base.clone() }));
    variants.push(("cross", AttentionCfg { cross: true, ..base.clone() }));
    variants.push(("cross without a key bias", AttentionCfg { cross: true, k_bias: false, ..base.clone() }));
    variants.push(("mask", AttentionCfg { has_mask: true, ..base.clone() }));
    variants.push(("bias unscaled", AttentionCfg { has_bias: true, scale: false, ..base.clone() }));
    variants.push(("cross mask bias", AttentionCfg { cross: true, has_mask: true, has_bias: true, ..base.clone() }));
    for (name, c) in variants {
        let mask = c.has_mask;
        let s = if c.cross { 5 } else { 4 };
        let mut case = Case::new(attn_model(c));
        if mask {
            // pad (id 0) the last key of the first sequence and the first of the second
            let mut ids = vec![1i64; 2 * s];
            ids[s - 1] = 0;
            ids[s] = 0;
            case = case.inputs(vec![HostTensor::I64 { shape: vec![2, s], data: ids }]);
        }
        gradcheck(&dev, &case).map_err(|e| format!("attention {name}: {e}"))?;
    }
    // weights found by position alone: the missing key bias shifts v's and o's biases down
    let mut m = attn_model(AttentionCfg { k_bias: false, ..base.clone() });
    for (i, p) in m.graph.params.iter_mut().enumerate() {
        p.name = format!("w{i}");
    }
    gradcheck(&dev, &Case::new(m)).map_err(|e| format!("attention without a key bias, by position: {e}"))?;
    // sequences longer than the small-core limit (64): the blocked products, with and without
    // the causal mask, self- and cross-attention
    for (name, c, t, s) in [
        ("long", base.clone(), 70, 70),
        ("long causal", AttentionCfg { causal: true, ..base.clone() }, 70, 70),
        ("long cross", AttentionCfg { cross: true, ..base.clone() }, 67, 72),
    ] {
        gradcheck(&dev, &Case::new(attn_model_len(c, t, s))).map_err(|e| format!("attention {name}: {e}"))?;
    }
    // attention dropout in training mode: the mask is fixed by the seed
    let mut case = Case::new(attn_model(AttentionCfg { dropout: 0.3, causal: true, ..base }));
    case.train = true;
    gradcheck(&dev, &case).map_err(|e| format!("attention dropout: {e}"))
}

pub fn check_layers<D: Backend>(dev: D) -> Result<(), String> {
    // embedding
    let m = single(|b| {
        let ids = b.input(i64s(&[2, 3]), "ids");
        let w = b.param("emb.weight", vec![5, 4], normal(1.0));
        b.prim(Prim::Embedding, vec![w], vec![ids], f32s(&[2, 3, 4]))
    });
    let ids = HostTensor::I64 { shape: vec![2, 3], data: vec![0, 4, 4, 2, 1, 4] };
    gradcheck(&dev, &Case::new(m).inputs(vec![ids]))?;
    // patch embedding: [2, 3, 4, 4] with 2x2 patches
    let m = single(|b| {
        let x = wv(b, "img", &[2, 3, 4, 4]);
        let w = b.param("patch.weight", vec![5, 3, 2, 2], normal(0.5));
        let bb = b.param("patch.bias", vec![5], normal(0.5));
        b.prim(Prim::PatchEmbed { patch: 2, bias: true }, vec![w, bb], vec![x], f32s(&[2, 4, 5]))
    });
    gradcheck(&dev, &Case::new(m))?;
    // conv1d with stride and padding: L = 7, k = 3 -> (7 + 2 - 3) / 2 + 1 = 4
    let m = single(|b| {
        let x = wv(b, "audio", &[2, 3, 7]);
        let w = b.param("conv.weight", vec![4, 3, 3], normal(0.5));
        let bb = b.param("conv.bias", vec![4], normal(0.5));
        b.prim(Prim::Conv1d { stride: 2, padding: 1, bias: true }, vec![w, bb], vec![x], f32s(&[2, 4, 4]))
    });
    gradcheck(&dev, &Case::new(m))?;
    // relative bias
    let m = single(|b| {
        let w = b.param("rel.weight", vec![8, 2], normal(1.0));
        b.prim(
            Prim::RelativeBias { buckets: 8, max_distance: 16, bidirectional: false, q_len: k(5), k_len: k(5) },
            vec![w],
            vec![],
            f32s(&[2, 5, 5]),
        )
    });
    gradcheck(&dev, &Case::new(m))
}

pub fn check_layout<D: Backend>(dev: D) -> Result<(), String> {
    let s3 = |d: &[u64]| f32s(d);
    type Build = Box<dyn Fn(&mut GraphBuilder) -> ValueId>;
    let builds: Vec<(&str, Build)> = vec![
        ("softmax axis 1", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            b.prim(Prim::Softmax { axis: 1 }, vec![], vec![x], s3(&[2, 3, 4]))
        })),
        ("log_softmax", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            b.prim(Prim::LogSoftmax { axis: 2 }, vec![], vec![x], s3(&[2, 3, 4]))
        })),
        ("reshape permute", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let r = b.prim(Prim::Reshape { shape: vec![k(6), k(4)] }, vec![], vec![x], s3(&[6, 4]));
            b.prim(Prim::Permute { axes: vec![1, 0] }, vec![], vec![r], s3(&[4, 6]))
        })),
        ("concat", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let y = wv(b, "y", &[2, 2, 4]);
            b.prim(Prim::Concat { axis: 1 }, vec![], vec![x, y, x], s3(&[2, 8, 4]))
        })),
        ("split", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let parts = b.node(
                Op::Prim { prim: Prim::Split { axis: 2, sizes: vec![k(1), k(3)] }, params: vec![] },
                vec![x],
                vec![s3(&[2, 3, 1]), s3(&[2, 3, 3])],
            );
            b.prim(Prim::Concat { axis: 2 }, vec![], vec![parts[1], parts[0]], s3(&[2, 3, 4]))
        })),
        // the guard for dfdx's slice bug: `x` gets gradient through a slice and directly
        ("slice and reuse", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let s = b.prim(Prim::Slice { axis: 1, start: k(1), end: k(3) }, vec![], vec![x], s3(&[2, 2, 4]));
            let s2 = b.prim(Prim::Slice { axis: 1, start: k(0), end: k(2) }, vec![], vec![x], s3(&[2, 2, 4]));
            let y = b.prim(Prim::Mul, vec![], vec![s, s2], s3(&[2, 2, 4]));
            b.prim(Prim::Concat { axis: 1 }, vec![], vec![y, x], s3(&[2, 5, 4]))
        })),
        ("expand", Box::new(move |b| {
            let x = wv(b, "x", &[1, 3, 1]);
            b.prim(Prim::Expand { shape: vec![k(2), k(3), k(4)] }, vec![], vec![x], s3(&[2, 3, 4]))
        })),
        ("first", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            let f = b.prim(Prim::First, vec![], vec![x], s3(&[2, 4]));
            let t = b.prim(Prim::Tanh, vec![], vec![x], s3(&[2, 3, 4]));
            let m = b.prim(Prim::Mean { axis: 1 }, vec![], vec![t], s3(&[2, 4]));
            b.prim(Prim::Add, vec![], vec![f, m], s3(&[2, 4]))
        })),
        ("sum", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 4]);
            b.prim(Prim::Sum { axis: 0 }, vec![], vec![x], s3(&[3, 4]))
        })),
        ("normalize", Box::new(move |b| {
            let x = wv(b, "x", &[3, 4]);
            b.prim(Prim::Normalize, vec![], vec![x], s3(&[3, 4]))
        })),
        ("alibi", Box::new(move |b| {
            let x = wv(b, "x", &[2, 3, 3]);
            let a = b.prim(Prim::Alibi { heads: 2, len: k(3) }, vec![], vec![], s3(&[2, 3, 3]));
            let y = b.prim(Prim::Add, vec![], vec![x, a], s3(&[2, 3, 3]));
            b.prim(Prim::Softmax { axis: 2 }, vec![], vec![y], s3(&[2, 3, 3]))
        })),
    ];
    for (name, build) in builds {
        let m = single(|b| build(b));
        gradcheck(&dev, &Case::new(m)).map_err(|e| format!("{name}: {e}"))?;
    }
    // dropout in training mode (the mask is fixed by the seed)
    let m = single(|b| {
        let x = wv(b, "x", &[4, 8]);
        b.prim(Prim::Dropout { p: 0.4 }, vec![], vec![x], f32s(&[4, 8]))
    });
    let mut case = Case::new(m);
    case.train = true;
    gradcheck(&dev, &case).map_err(|e| format!("dropout: {e}"))
}

pub fn check_objectives<D: Backend>(dev: D) -> Result<(), String> {
    // next_token on a small GPT: shifted tokens, and explicit targets
    let m = gpt(GptSize { vocab: 7, context: 6, layers: 2, heads: 2, d_model: 8, dropout: 0.0 });
    let toks = HostTensor::I64 { shape: vec![2, 5], data: vec![1, 2, 3, 4, 5, 6, 0, 1, 2, 3] };
    losscheck(&dev, &m, &Batch { inputs: vec![toks.clone()], targets: None }).map_err(|e| format!("next_token: {e}"))?;
    let tg = HostTensor::I64 { shape: vec![2, 5], data: vec![2, 3, 4, 5, 6, 0, 1, 2, 3, -100] };
    losscheck(&dev, &m, &Batch { inputs: vec![toks], targets: Some(tg) }).map_err(|e| format!("next_token targets: {e}"))?;
    // classify and masked_token over a linear head
    for kind in [ObjectiveKind::Classify, ObjectiveKind::MaskedToken] {
        let mut b = GraphBuilder::default();
        let x = b.input(f32s(&[3, 4]), "x");
        let w = b.param("head.weight", vec![5, 4], normal(0.5));
        let logits = if kind == ObjectiveKind::Classify {
            b.prim(Prim::Linear { bias: false }, vec![w], vec![x], f32s(&[3, 5]))
        } else {
            let l = b.prim(Prim::Linear { bias: false }, vec![w], vec![x], f32s(&[3, 5]));
            b.prim(Prim::Reshape { shape: vec![k(1), k(3), k(5)] }, vec![], vec![l], f32s(&[1, 3, 5]))
        };
        let labels = b.input(if kind == ObjectiveKind::Classify { i64s(&[3]) } else { i64s(&[1, 3]) }, "labels");
        b.g.outputs.push(logits);
        let m = model("head", b.g, vec![], Some((kind, vec![logits, labels])));
        let xs = HostTensor::F32 { shape: vec![3, 4], data: (0..12).map(pseudo).collect() };
        let ls = if kind == ObjectiveKind::Classify {
            HostTensor::I64 { shape: vec![3], data: vec![4, 0, 2] }
        } else {
            HostTensor::I64 { shape: vec![1, 3], data: vec![4, -100, 2] }
        };
        losscheck(&dev, &m, &Batch { inputs: vec![xs, ls], targets: None }).map_err(|e| format!("{kind:?}: {e}"))?;
    }
    // contrastive: two projections and a learned scale
    let mut b = GraphBuilder::default();
    let x = b.input(f32s(&[3, 4]), "img");
    let y = b.input(f32s(&[3, 4]), "txt");
    let wa = b.param("a.weight", vec![4, 4], normal(0.5));
    let wb = b.param("b.weight", vec![4, 4], normal(0.5));
    let sc = b.param("logit_scale", vec![], Init::Constant(0.5));
    let ea = b.prim(Prim::Linear { bias: false }, vec![wa], vec![x], f32s(&[3, 4]));
    let ea = b.prim(Prim::Normalize, vec![], vec![ea], f32s(&[3, 4]));
    let eb = b.prim(Prim::Linear { bias: false }, vec![wb], vec![y], f32s(&[3, 4]));
    let eb = b.prim(Prim::Normalize, vec![], vec![eb], f32s(&[3, 4]));
    let s = b.weight(sc);
    b.g.outputs.push(ea);
    let m = model("clip", b.g, vec![], Some((ObjectiveKind::Contrastive, vec![ea, eb, s])));
    let xs = HostTensor::F32 { shape: vec![3, 4], data: (0..12).map(pseudo).collect() };
    let ys = HostTensor::F32 { shape: vec![3, 4], data: (12..24).map(pseudo).collect() };
    losscheck(&dev, &m, &Batch { inputs: vec![xs, ys], targets: None }).map_err(|e| format!("contrastive: {e}"))
}

macro_rules! on_cpu {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() {
                    if let Err(e) = super::$name(dfdx::prelude::Cpu::default()) {
                        panic!("{e}");
                    }
                }
            )*
        }
    };
}

/// The same checks on the GPU, through the device-generic path (the CUDA test binary carried to
/// a GPU machine; `scripts/stage-cuda.sh` builds it).
#[cfg(feature = "cuda")]
macro_rules! on_cuda {
    ($($name:ident),* $(,)?) => {
        mod cuda {
            $(
                #[test]
                fn $name() {
                    let dev = match crate::device::cuda_device(0) {
                        Ok(dev) => dev,
                        Err(e) => panic!("expected a usable CUDA device, found: {e}"),
                    };
                    if let Err(e) = super::$name(dev) {
                        panic!("{e}");
                    }
                }
            )*
        }
    };
}

#[cfg(feature = "cuda")]
on_cuda!(check_linear, check_matmul, check_norms, check_elementwise, check_mlp, check_attention, check_layers, check_layout, check_objectives);

on_cpu!(check_linear, check_matmul, check_norms, check_elementwise, check_mlp, check_attention, check_layers, check_layout, check_objectives);

// ---------------------------------------------------------------- dfdx bug guards and values

/// erf by its Maclaurin series in f64 (converges fast for |x| < 3).
pub(crate) fn erf_ref(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 || n < 5.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn gelu_exact_matches_the_erf_form_and_its_derivative() {
    // dfdx's accurate_gelu has a derivative off by a factor; ours must match x*Phi(x) and
    // Phi(x) + x*phi(x) computed here in f64.
    let xs: Vec<f32> = (-12..=12).map(|i| i as f32 * 0.25).collect();
    let n = xs.len() as u64;
    for fused in [true, false] {
        let m = single(|b| {
            let p = b.param("x", vec![n], Init::Zeros);
            let x = b.weight(p);
            b.prim(Prim::Act(Activation::GeluExact), vec![], vec![x], f32s(&[n]))
        });
        let mut rt = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
        rt.set_fused(fused);
        let mut store = rt.init_params(0);
        store.params[0].value = rt.device().tensor_from_vec(xs.clone(), (xs.len(),));
        let y = rt.forward(&store, &[], false, 0).expect("forward");
        let y = y[0].as_f32().expect("f32").to_vec();
        let ones = vec![1.0; xs.len()];
        let (_, g) = rt.probe_grads(&store, &[], &ones, false).expect("grads");
        let g = g.get(&store.params[0].value).as_vec();
        for (i, &x) in xs.iter().enumerate() {
            let x64 = x as f64;
            let phi_cdf = 0.5 * (1.0 + erf_ref(x64 / std::f64::consts::SQRT_2));
            let pdf = (-x64 * x64 / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((y[i] as f64 - x64 * phi_cdf).abs() < 2e-6, "fused={fused} gelu_exact({x}) = {}", y[i]);
            let d = phi_cdf + x64 * pdf;
            assert!((g[i] as f64 - d).abs() < 2e-5, "fused={fused} gelu_exact'({x}) = {} vs {d}", g[i]);
        }
    }
}

#[test]
fn fused_and_generic_paths_agree_on_a_gpt() {
    let m = gpt(GptSize { vocab: 11, context: 8, layers: 2, heads: 2, d_model: 16, dropout: 0.0 });
    let toks = HostTensor::I64 { shape: vec![3, 8], data: (0..24).map(|i| (i * 5 % 11) as i64).collect() };
    let batch = Batch { inputs: vec![toks], targets: None };
    let mut a = Runtime::new(m.clone(), dfdx::prelude::Cpu::default()).expect("runtime");
    let mut b = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
    a.set_fused(true);
    b.set_fused(false);
    let store = a.init_params(11);
    let (la, ga) = a.loss_and_grads(&store, &batch, 0).expect("fused");
    let (lb, gb) = b.loss_and_grads(&store, &batch, 0).expect("generic");
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    for p in &store.params {
        let (x, y) = (ga.get(&p.value).as_vec(), gb.get(&p.value).as_vec());
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= 1e-4 + 1e-3 * v.abs(), "{}: {u} vs {v}", p.name);
        }
    }
}

#[test]
fn fused_and_generic_paths_agree_on_a_long_causal_gpt() {
    // context 150 > the fused core's causal block (64): exercises the skipped blocks and a
    // ragged last block, forward and backward
    let (b, t) = (2usize, 150usize);
    let m = gpt(GptSize { vocab: 13, context: t as u64, layers: 1, heads: 2, d_model: 8, dropout: 0.0 });
    let toks = HostTensor::I64 { shape: vec![b, t], data: (0..b * t).map(|i| ((i * 7 + i / 5) % 13) as i64).collect() };
    let batch = Batch { inputs: vec![toks], targets: None };
    let mut a = Runtime::new(m.clone(), dfdx::prelude::Cpu::default()).expect("runtime");
    let mut g = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
    a.set_fused(true);
    g.set_fused(false);
    let mut store = a.init_params(5);
    // larger weights than the init, so attention is far from uniform
    for p in &mut store.params {
        if p.name.contains("qkv.weight") {
            p.value = p.value.clone() * 40.0;
        }
    }
    let (la, ga) = a.loss_and_grads(&store, &batch, 0).expect("fused");
    let (lb, gb) = g.loss_and_grads(&store, &batch, 0).expect("generic");
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
    for p in &store.params {
        let (x, y) = (ga.get(&p.value).as_vec(), gb.get(&p.value).as_vec());
        assert!(y.iter().any(|v| *v != 0.0), "{}: no gradient", p.name);
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= 1e-5 + 1e-3 * v.abs(), "{}: {u} vs {v}", p.name);
        }
    }
}

#[test]
fn init_follows_param_defs() {
    let m = gpt(GptSize { vocab: 50, context: 16, layers: 3, heads: 2, d_model: 32, dropout: 0.0 });
    let rt = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
    let s = rt.init_params(1);
    let names: Vec<_> = s.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(&names[..5], ["tok.weight", "pos.weight", "ln_f.weight", "ln_f.bias", "blocks.0.ln_1.weight"]);
    assert_eq!(names.last(), Some(&"blocks.2.mlp.down.bias"));
    let std = |name: &str| {
        let v = s.get(name).expect("param").value.as_vec();
        (v.iter().map(|x| (x * x) as f64).sum::<f64>() / v.len() as f64).sqrt()
    };
    assert!((std("tok.weight") - 0.02).abs() < 0.002);
    // residual projections: 0.02 / sqrt(2 * 3)
    assert!((std("blocks.1.mlp.down.weight") - 0.02 / 6f64.sqrt()).abs() < 0.0008);
    assert!(s.get("ln_f.weight").expect("w").value.as_vec().iter().all(|&x| x == 1.0));
    assert!(s.get("blocks.0.attn.o.bias").expect("b").value.as_vec().iter().all(|&x| x == 0.0));
    assert!(s.get("blocks.0.attn.qkv.weight").expect("w").value.as_vec() != s.get("blocks.1.attn.qkv.weight").expect("w").value.as_vec());
    let t = crate::init::sinusoidal_table(4, 6);
    assert!((t[6] - 1f32.sin()).abs() < 1e-6 && (t[6 + 1] - 1f32.cos()).abs() < 1e-6);
    assert!((t[2 * 6 + 2] - (2.0f64 / 10000f64.powf(2.0 / 6.0)).sin() as f32).abs() < 1e-6);
}

/// Seeded runs repeat bit for bit on the CPU: the fused kernels' parallel reductions (bias,
/// norm-weight and attention-bias gradients) must add their partial sums in a fixed order, not in
/// the order work stealing happens to finish them. The model is large enough for every one of
/// them to split into several chunks, and passes run side by side so that the scheduling varies.
#[test]
fn gradients_repeat_bit_for_bit_across_passes() {
    let m = gpt(GptSize { vocab: 65, context: 64, layers: 2, heads: 4, d_model: 128, dropout: 0.1 });
    let rt = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
    let s = rt.init_params(3);
    let (b, t) = (12usize, 64usize);
    let toks: Vec<i64> = (0..b * t).map(|i| ((i * 31 + i / 7) % 65) as i64).collect();
    let batch = Batch { inputs: vec![HostTensor::I64 { shape: vec![b, t], data: toks }], targets: None };
    let pass = || {
        let (loss, g) = rt.loss_and_grads(&s, &batch, 5).expect("pass");
        let grads: Vec<Vec<u32>> = s.params.iter().map(|p| g.get(&p.value).as_vec().iter().map(|x| x.to_bits()).collect()).collect();
        (loss.to_bits(), grads)
    };
    let first = pass();
    // Passes running side by side in one pool steal each other's work all the time.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().expect("pool");
    let others: Vec<_> = pool.install(|| {
        use rayon::prelude::*;
        (0..12).into_par_iter().map(|_| pass()).collect()
    });
    for again in others {
        assert_eq!(again.0, first.0, "loss differs between identical passes");
        for (p, (a, b)) in s.params.iter().zip(again.1.iter().zip(&first.1)) {
            let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(diff, 0, "gradient of `{}` differs in {diff} of {} elements between identical passes", p.name, a.len());
        }
    }
}

/// Mixed precision: the same GPT run with half-precision weights and values (dfdx's `AMP<f16>`,
/// loss scaled by 1024 before the backward pass) gives the `f32` loss to within half precision's
/// rounding and, once unscaled, gradients pointing the same way as the `f32` ones.
fn check_half_precision<D: AnyPrecision>(dev: D) -> Result<(), String> {
    let m = gpt(GptSize { vocab: 65, context: 32, layers: 2, heads: 4, d_model: 64, dropout: 0.0 });
    let rt = Runtime::new(m, dev).map_err(|e| e.to_string())?;
    let s = rt.init_params(11);
    let (b, t) = (4usize, 32usize);
    let toks: Vec<i64> = (0..b * t).map(|i| ((i * 17 + i / 5) % 65) as i64).collect();
    let batch = Batch { inputs: vec![HostTensor::I64 { shape: vec![b, t], data: toks }], targets: None };
    let (l32, g32) = rt.loss_and_grads(&s, &batch, 1).map_err(|e| e.to_string())?;
    let half = s.cast::<Half>();
    let scale = 1024.0f32;
    let (l16, g16) = rt.loss_and_grads_in(&half, &batch, 1, scale).map_err(|e| e.to_string())?;
    if (l16 - l32).abs() > 0.01 * l32 {
        return Err(format!("loss: f16 {l16} against f32 {l32}"));
    }
    let eval16 = rt.loss_in(&half, &batch).map_err(|e| e.to_string())?;
    if (eval16 - l32).abs() > 0.01 * l32 {
        return Err(format!("evaluation loss: f16 {eval16} against f32 {l32}"));
    }
    for (p, ph) in s.params.iter().zip(&half.params) {
        let a = g32.get(&p.value).as_vec();
        let h: Vec<f32> = g16.get(&ph.value).to_dtype::<f32>().as_vec().iter().map(|x| x / scale).collect();
        if h.iter().any(|x| !x.is_finite()) {
            return Err(format!("`{}`: a gradient overflowed", p.name));
        }
        let dot: f64 = a.iter().zip(&h).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
        let (na, nh) = (a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(), h.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt());
        if na < 1e-6 {
            continue;
        }
        let cos = dot / (na * nh).max(1e-30);
        if cos < 0.99 || (nh / na - 1.0).abs() > 0.05 {
            return Err(format!("`{}`: f16 gradient at cosine {cos:.4} to the f32 one, norms {nh:.4e} against {na:.4e}", p.name));
        }
    }
    // 16,384 tokens at about ln 65 each: their sum is past f16's largest number (65,504)
    let (b, t) = (512usize, 32usize);
    let toks: Vec<i64> = (0..b * t).map(|i| ((i * 31 + i / 7) % 65) as i64).collect();
    let big = Batch { inputs: vec![HostTensor::I64 { shape: vec![b, t], data: toks }], targets: None };
    let l32 = rt.loss(&s, &big).map_err(|e| e.to_string())?;
    let (l16, _) = rt.loss_and_grads_in(&half, &big, 1, scale).map_err(|e| e.to_string())?;
    if !l16.is_finite() || (l16 - l32).abs() > 0.01 * l32 {
        return Err(format!("loss over {} tokens: f16 {l16} against f32 {l32}", b * t));
    }
    Ok(())
}

#[test]
fn half_precision_pass_matches_f32_on_cpu() {
    check_half_precision(dfdx::prelude::Cpu::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[cfg(feature = "cuda")]
#[test]
fn half_precision_pass_matches_f32_on_cuda() {
    let dev = crate::device::cuda_device(0).unwrap_or_else(|e| panic!("expected a usable CUDA device, found: {e}"));
    check_half_precision(dev).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------- run-time errors

#[test]
fn bad_inputs_are_errors_not_panics() {
    let m = gpt(GptSize { vocab: 7, context: 4, layers: 1, heads: 2, d_model: 8, dropout: 0.0 });
    let rt = Runtime::new(m, dfdx::prelude::Cpu::default()).expect("runtime");
    let s = rt.init_params(0);
    let run = |h: HostTensor| rt.forward(&s, &[h], false, 0);
    // longer than the context: positions beyond the table
    let e = run(HostTensor::I64 { shape: vec![1, 6], data: vec![1; 6] }).expect_err("too long");
    assert!(e.to_string().contains("expected ids in 0..4, found 4"), "{e}");
    // token id beyond the vocabulary
    let e = run(HostTensor::I64 { shape: vec![1, 3], data: vec![1, 9, 2] }).expect_err("bad id");
    assert!(e.to_string().contains("expected ids in 0..7, found 9"), "{e}");
    // wrong dtype and rank
    let e = run(HostTensor::F32 { shape: vec![1, 3], data: vec![0.0; 3] }).expect_err("dtype");
    assert_eq!(e.to_string(), "input `tokens`: expected i64[B, T], found a f32 tensor");
    let e = run(HostTensor::I64 { shape: vec![3], data: vec![1; 3] }).expect_err("rank");
    assert_eq!(e.to_string(), "input `tokens`: expected i64[B, T], found shape [3]");
    // inconsistent data length
    let e = run(HostTensor::I64 { shape: vec![2, 3], data: vec![1; 5] }).expect_err("len");
    assert!(e.to_string().contains("holds 6 elements, found 5"), "{e}");
    // labels out of range
    let b = Batch {
        inputs: vec![HostTensor::I64 { shape: vec![1, 3], data: vec![1, 2, 3] }],
        targets: Some(HostTensor::I64 { shape: vec![1, 3], data: vec![1, 2, 8] }),
    };
    let e = rt.loss(&s, &b).expect_err("labels");
    assert!(e.to_string().contains("expected labels in 0..7"), "{e}");
    // a store of another model
    let other = Runtime::new(gpt(GptSize { vocab: 7, context: 4, layers: 2, heads: 2, d_model: 8, dropout: 0.0 }), dfdx::prelude::Cpu::default())
        .expect("runtime")
        .init_params(0);
    assert!(rt.loss(&other, &b).is_err());
}

#[test]
fn shape_variables_must_agree_across_inputs() {
    let mut b = GraphBuilder::default();
    let x = b.input(f32t(vec![v("B"), k(2)]), "x");
    let y = b.input(f32t(vec![v("B"), k(2)]), "y");
    let s = b.prim(Prim::Add, vec![], vec![x, y], f32t(vec![v("B"), k(2)]));
    b.g.outputs.push(s);
    let rt = Runtime::new(model("two", b.g, vec![], None), dfdx::prelude::Cpu::default()).expect("runtime");
    let st = rt.init_params(0);
    let h = |n: usize| HostTensor::F32 { shape: vec![n, 2], data: vec![1.0; 2 * n] };
    let out = rt.forward(&st, &[h(3), h(3)], false, 0).expect("ok");
    assert_eq!(out[0], HostTensor::F32 { shape: vec![3, 2], data: vec![2.0; 6] });
    let e = rt.forward(&st, &[h(3), h(4)], false, 0).expect_err("mismatch");
    assert_eq!(e.to_string(), "input `y`: shape variable `B` is 3 in an earlier input but 4 here (expected f32[B, 2], found shape [4, 2])");
    let e = rt.loss(&st, &Batch { inputs: vec![h(3), h(3)], targets: None }).expect_err("no objective");
    assert!(e.to_string().contains("declares no objective"), "{e}");
}

// ---------------------------------------------------------------- end to end

/// Plain SGD on every trainable weight.
fn sgd<D: Backend>(store: &mut ParamStore<D>, grads: &dfdx::prelude::Gradients<f32, D>, lr: f32) {
    for p in &mut store.params {
        if p.trainable {
            let g = grads.get(&p.value);
            p.value = p.value.clone() - g * lr;
        }
    }
}

pub fn train_tiny_gpt<D: Backend>(dev: D) -> (f32, f32) {
    let m = gpt(GptSize { vocab: 8, context: 16, layers: 2, heads: 2, d_model: 32, dropout: 0.0 });
    let rt = Runtime::new(m, dev).expect("runtime");
    let mut store = rt.init_params(42);
    // toy pattern: each sequence counts up by a per-sequence step, modulo 8
    let mut rng = crate::value::Rng::new(9);
    let mut batch = || {
        let (b, t) = (8, 16);
        let mut data = Vec::with_capacity(b * t);
        for _ in 0..b {
            let start = (rng.next_u64() % 8) as i64;
            let step = 1 + (rng.next_u64() % 2) as i64;
            data.extend((0..t as i64).map(|i| (start + step * i) % 8));
        }
        Batch { inputs: vec![HostTensor::I64 { shape: vec![b, t], data }], targets: None }
    };
    let eval = batch();
    let first = rt.loss(&store, &eval).expect("loss");
    for step in 0..50 {
        let (_, grads) = rt.loss_and_grads(&store, &batch(), step).expect("step");
        sgd(&mut store, &grads, 0.5);
    }
    let last = rt.loss(&store, &eval).expect("loss");
    (first, last)
}

#[test]
fn tiny_gpt_learns_a_pattern_with_sgd() {
    let (first, last) = train_tiny_gpt(dfdx::prelude::Cpu::default());
    // starts near ln(8) = 2.08; must at least halve in 50 steps
    assert!((first - 8f32.ln()).abs() < 0.1, "initial loss {first}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn dropout_scales_depend_on_the_seed_alone() {
    let draw = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| crate::value::Rng::new(42).keep_scales(300_001, 0.2, 1.25))
    };
    let (one, two) = (draw(1), draw(2));
    assert_eq!(one, two, "the multipliers must not depend on the thread count");
    assert!(one.iter().all(|&v| v == 0.0 || v == 1.25));
    let kept = one.iter().filter(|&&v| v > 0.0).count() as f64 / one.len() as f64;
    // binomial standard deviation at n = 300k is 0.0007
    assert!((kept - 0.8).abs() < 0.004, "kept {kept}");
    assert_ne!(crate::value::Rng::new(43).keep_scales(1000, 0.2, 1.25), one[..1000].to_vec());
    // blocks are not copies of each other
    assert_ne!(one[..1000], one[65_536..66_536]);
}

#[cfg(feature = "cuda")]
#[test]
fn dropout_multipliers_drawn_on_the_gpu_keep_the_right_share() {
    let dev = crate::device::cuda_device(0).unwrap_or_else(|e| panic!("expected a usable CUDA device, found: {e}"));
    let n = 1_000_003;
    for p in [0.1f32, 0.5] {
        let scale = 1.0 / (1.0 - p);
        let a = crate::cuda_kernels::keep_scales::<f32>(&dev, n, p, scale, 42).expect("draw").as_vec();
        assert_eq!(a.len(), n);
        assert!(a.iter().all(|&v| v == 0.0 || v == scale), "p {p}: a multiplier is neither 0 nor {scale}");
        let kept = a.iter().filter(|&&v| v > 0.0).count() as f64 / n as f64;
        // binomial standard deviation at n = 1M is at most 0.0005
        assert!((kept - (1.0 - p as f64)).abs() < 0.003, "p {p}: kept {kept}");
        let again = crate::cuda_kernels::keep_scales::<f32>(&dev, n, p, scale, 42).expect("draw").as_vec();
        assert_eq!(a, again, "the same seed must give the same multipliers");
        let other = crate::cuda_kernels::keep_scales::<f32>(&dev, n, p, scale, 43).expect("draw").as_vec();
        assert_ne!(a, other);
        // neighbouring elements are independent: P(both kept) = (1 - p)^2
        let both = a.windows(2).filter(|w| w[0] > 0.0 && w[1] > 0.0).count() as f64 / (n - 1) as f64;
        assert!((both - (1.0 - p as f64).powi(2)).abs() < 0.003, "p {p}: neighbours both kept {both}");
        let h = crate::cuda_kernels::keep_scales::<Half>(&dev, n, p, scale, 42).expect("draw");
        let h: Vec<f32> = h.to_dtype::<f32>().as_vec();
        let hs = Half::of(scale).value();
        assert!(h.iter().zip(&a).all(|(&x, &y)| (y == 0.0 && x == 0.0) || (y > 0.0 && x == hs)), "p {p}: f16 multipliers differ from f32's");
    }
}


/// The GPU's fused operations (tfm's CUDA kernels, on the emulator) against the CPU's fused
/// kernels on a whole GPT: loss and every weight's gradient, and that the GPU operations ran.
#[cfg(feature = "emu")]
#[test]
fn gpu_kernels_on_the_emulator_match_the_cpu_on_a_gpt() {
    let m = gpt(GptSize { vocab: 11, context: 8, layers: 2, heads: 2, d_model: 16, dropout: 0.0 });
    let toks = HostTensor::I64 { shape: vec![3, 8], data: (0..24).map(|i| (i * 5 % 11) as i64).collect() };
    let batch = Batch { inputs: vec![toks], targets: None };
    let cpu = Runtime::new(m.clone(), Cpu::default()).expect("runtime");
    let mut gpu = Runtime::new(m, Cpu::default()).expect("runtime");
    gpu.set_gpu_kernels(true);
    let store = cpu.init_params(11);
    let (la, ga) = cpu.loss_and_grads(&store, &batch, 0).expect("cpu");
    let (lb, gb) = gpu.loss_and_grads(&store, &batch, 0).expect("gpu kernels");
    // embedding, 2 x (2 layer norms, 4 linears, attention, GELU, 2 sums), final norm, head,
    // cross-entropy: every op of the model but the position table's broadcast
    assert!(gpu.fused_gpu_ops() >= 20, "only {} fused GPU operations ran", gpu.fused_gpu_ops());
    assert!((la - lb).abs() < 1e-5, "loss: cpu {la} vs gpu kernels {lb}");
    for p in &store.params {
        let (x, y) = (ga.get(&p.value).as_vec(), gb.get(&p.value).as_vec());
        assert!(x.iter().any(|v| *v != 0.0), "{}: no gradient", p.name);
        for (u, v) in x.iter().zip(&y) {
            assert!((u - v).abs() <= 1e-4 + 1e-3 * u.abs(), "{}: cpu {u} vs gpu kernels {v}", p.name);
        }
    }
    // evaluation gives the training loss (no dropout here), from the same kernels
    let le = gpu.loss(&store, &batch).expect("gpu kernels, evaluation");
    assert!((le - lb).abs() < 1e-5, "evaluation {le} vs training {lb}");
}

/// With dropout, the GPU's kernels draw their masks from the counter hash: the same seed gives
/// the same loss and gradients, another seed another loss, and the loss stays near the CPU's
/// (both drop a fifth of the activations).
#[cfg(feature = "emu")]
#[test]
fn gpu_kernels_on_the_emulator_train_with_dropout() {
    let m = gpt(GptSize { vocab: 11, context: 8, layers: 1, heads: 2, d_model: 16, dropout: 0.2 });
    let toks = HostTensor::I64 { shape: vec![2, 8], data: (0..16).map(|i| (i * 3 % 11) as i64).collect() };
    let batch = Batch { inputs: vec![toks], targets: None };
    let mut gpu = Runtime::new(m, Cpu::default()).expect("runtime");
    gpu.set_gpu_kernels(true);
    let store = gpu.init_params(4);
    let (l1, g1) = gpu.loss_and_grads(&store, &batch, 1).expect("seed 1");
    let (l1b, g1b) = gpu.loss_and_grads(&store, &batch, 1).expect("seed 1 again");
    let (l2, _) = gpu.loss_and_grads(&store, &batch, 2).expect("seed 2");
    let eval = gpu.loss(&store, &batch).expect("evaluation");
    assert_eq!(l1.to_bits(), l1b.to_bits(), "same seed, different loss");
    for p in &store.params {
        assert_eq!(g1.get(&p.value).as_vec(), g1b.get(&p.value).as_vec(), "{}: same seed, different gradient", p.name);
    }
    assert_ne!(l1, l2, "seeds 1 and 2 drew the same dropout masks");
    assert_ne!(l1, eval, "dropout changed nothing in training");
    assert!(l1.is_finite() && (l1 - eval).abs() < 0.5 * eval, "training loss {l1} far from evaluation {eval}");
}
