//! CUDA against CPU: every dfdx op the runtime lowers to, forward and backward, run once on each
//! device with the same inputs and compared within stated tolerances.
//!
//! Each case is one function generic over the device, so the same code runs on `Cpu` and `Cuda`.
//! Needs a CUDA device: `cargo test -p tfm-runtime --features cuda --test cuda_ops`.
#![cfg(feature = "cuda")]

use dfdx::prelude::*;

type M<D> = Tensor<(usize, usize), f32, D>;

/// Named host copies of a case's outputs and gradients.
type Outputs = Vec<(&'static str, Vec<f32>)>;

/// Deterministic values in [-1, 1): a small linear congruential generator.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn gpu() -> Cuda {
    match Cuda::try_build(0, 0) {
        Ok(dev) => dev,
        Err(e) => panic!("expected a usable CUDA device 0, found an error: {e}"),
    }
}

/// Asserts that every named output agrees: |cpu - gpu| <= atol + rtol * |cpu|, elementwise.
fn assert_close(cpu: &Outputs, gpu: &Outputs, atol: f32, rtol: f32) {
    assert_eq!(
        cpu.len(),
        gpu.len(),
        "expected the same number of outputs on both devices"
    );
    for ((name, c), (_, g)) in cpu.iter().zip(gpu) {
        assert_eq!(
            c.len(),
            g.len(),
            "{name}: expected {} values on the gpu, found {}",
            c.len(),
            g.len()
        );
        assert!(
            c.iter().all(|v| v.is_finite()),
            "{name}: cpu result is not finite"
        );
        let mut worst = (0usize, 0.0f32);
        for (i, (x, y)) in c.iter().zip(g).enumerate() {
            let excess = (x - y).abs() - (atol + rtol * x.abs());
            if excess > worst.1 || y.is_nan() {
                worst = (i, if y.is_nan() { f32::INFINITY } else { excess });
            }
        }
        let (i, excess) = worst;
        assert!(
            excess <= 0.0,
            "{name}[{i}]: expected cpu {} and gpu {} to agree within {atol:e} + {rtol:e}*|cpu|",
            c[i],
            g[i]
        );
        println!("{name}: {} values agree", c.len());
    }
}

/// Runs a case on both devices, CPU first, and compares.
fn compare(case: fn(&Cpu) -> Outputs, case_gpu: fn(&Cuda) -> Outputs, atol: f32, rtol: f32) {
    let c = case(&Cpu::default());
    let g = case_gpu(&gpu());
    assert_close(&c, &g, atol, rtol);
}

/// Loss = sum(y * w) for a fixed w, so every element of y gets a distinct gradient.
fn weighted_sum<S: Shape, D: Device<f32>>(
    y: Tensor<S, f32, D, OwnedTape<f32, D>>,
    seed: u64,
) -> Tensor<(), f32, D, OwnedTape<f32, D>> {
    let dev = y.device().clone();
    let shape = *y.shape();
    let w = dev.tensor_from_vec(data(shape.num_elements(), seed), shape);
    (y * w).sum::<(), _>()
}

fn matmul_2d<D: Device<f32>>(dev: &D) -> Outputs {
    let (m, k, n) = (33, 70, 17);
    let a: M<D> = dev.tensor_from_vec(data(m * k, 1), (m, k));
    let b: M<D> = dev.tensor_from_vec(data(k * n, 2), (k, n));
    let y = a
        .clone()
        .traced(Gradients::leaky())
        .matmul(b.retaped::<OwnedTape<f32, D>>());
    let yv = y.with_empty_tape().as_vec();
    let g = weighted_sum(y, 3).backward();
    vec![
        ("y", yv),
        ("grad a", g.get(&a).as_vec()),
        ("grad b", g.get(&b).as_vec()),
    ]
}

/// Causal self-attention as the runtime lowers it: fused QKV sliced three ways, heads split with
/// reshape + permute, a batched 4-D matmul on permuted strides, an additive upper-triangular mask,
/// softmax over the last axis, and the heads merged back (a non-contiguous reshape).
fn attention<D: Device<f32>>(dev: &D) -> Outputs {
    let (b, t, h, hd) = (2usize, 7usize, 3usize, 4usize);
    let c = h * hd;
    let qkv: Tensor<(usize, usize, usize), f32, D> =
        dev.tensor_from_vec(data(b * t * 3 * c, 4), (b, t, 3 * c));
    let x = qkv.clone().traced(Gradients::leaky());
    let split = |x: Tensor<(usize, usize, usize), f32, D, OwnedTape<f32, D>>, i: usize| {
        x.slice((.., .., i * c..(i + 1) * c))
            .reshape_like(&(b, t, h, hd))
            .permute::<_, Axes4<0, 2, 1, 3>>()
    };
    let q = split(x.with_empty_tape(), 0);
    let k = split(x.with_empty_tape(), 1);
    let v = split(x, 2);
    let scores = q.matmul(k.permute::<_, Axes4<0, 1, 3, 2>>()) * (1.0 / (hd as f32).sqrt());
    let mask = dev
        .upper_tri_like(&(t, t), f32::NEG_INFINITY, 1)
        .broadcast_like::<_, Axes2<0, 1>>(&(b, h, t, t));
    let probs = (scores + mask).softmax::<Axis<3>>();
    let probs_v = probs.with_empty_tape().as_vec();
    let y = probs
        .matmul(v)
        .permute::<_, Axes4<0, 2, 1, 3>>()
        .reshape_like(&(b, t, c));
    let yv = y.with_empty_tape().as_vec();
    let g = weighted_sum(y, 5).backward();
    vec![
        ("probs", probs_v),
        ("y", yv),
        ("grad qkv", g.get(&qkv).as_vec()),
    ]
}

/// Layer norm (normalize, then gamma and beta broadcast over rows) followed by tanh GELU.
fn layer_norm_gelu<D: Device<f32>>(dev: &D) -> Outputs {
    let (n, c) = (9usize, 24usize);
    let x: M<D> = dev.tensor_from_vec(data(n * c, 6), (n, c));
    let gamma: Tensor<(usize,), f32, D> = dev.tensor_from_vec(data(c, 7), (c,));
    let beta: Tensor<(usize,), f32, D> = dev.tensor_from_vec(data(c, 8), (c,));
    let xt = x.clone().traced(Gradients::leaky());
    let gt = gamma
        .retaped::<OwnedTape<f32, D>>()
        .broadcast_like::<_, Axis<0>>(&(n, c));
    let bt = beta
        .retaped::<OwnedTape<f32, D>>()
        .broadcast_like::<_, Axis<0>>(&(n, c));
    let y = (xt.normalize::<Axis<1>>(1e-5) * gt + bt).fast_gelu();
    let yv = y.with_empty_tape().as_vec();
    let g = weighted_sum(y, 9).backward();
    vec![
        ("y", yv),
        ("grad x", g.get(&x).as_vec()),
        ("grad gamma", g.get(&gamma).as_vec()),
        ("grad beta", g.get(&beta).as_vec()),
    ]
}

/// Token and position embeddings: gather rows by id, slice the position table, broadcast, add.
fn embeddings<D: Device<f32>>(dev: &D) -> Outputs {
    let (vocab, ctx, c, b, t) = (11usize, 8usize, 6usize, 3usize, 5usize);
    let wte: M<D> = dev.tensor_from_vec(data(vocab * c, 10), (vocab, c));
    let wpe: M<D> = dev.tensor_from_vec(data(ctx * c, 11), (ctx, c));
    let ids: Vec<usize> = (0..b * t).map(|i| (i * 7 + 3) % vocab).collect();
    let ids: Tensor<(usize, usize), usize, D> = dev.tensor_from_vec(ids, (b, t));
    let tok = wte.clone().traced(Gradients::leaky()).gather(ids);
    let pos = wpe
        .retaped::<OwnedTape<f32, D>>()
        .slice((0..t, ..))
        .broadcast_like::<_, Axis<0>>(&(b, t, c));
    let y = tok + pos;
    let yv = y.with_empty_tape().as_vec();
    let g = weighted_sum(y, 12).backward();
    vec![
        ("y", yv),
        ("grad wte", g.get(&wte).as_vec()),
        ("grad wpe", g.get(&wpe).as_vec()),
    ]
}

/// Cross-entropy: log-softmax over the vocabulary, select the targets, mean, negate.
fn cross_entropy<D: Device<f32>>(dev: &D) -> Outputs {
    let (n, vocab) = (13usize, 29usize);
    let logits: M<D> = dev.tensor_from_vec(
        data(n * vocab, 13).iter().map(|v| v * 4.0).collect(),
        (n, vocab),
    );
    let targets: Vec<usize> = (0..n).map(|i| (i * 5 + 1) % vocab).collect();
    let targets: Tensor<(usize,), usize, D> = dev.tensor_from_vec(targets, (n,));
    let loss = logits
        .clone()
        .traced(Gradients::leaky())
        .log_softmax::<Axis<1>>()
        .select(targets)
        .mean::<(), _>()
        .negate();
    let lv = loss.with_empty_tape().as_vec();
    let g = loss.backward();
    vec![("loss", lv), ("grad logits", g.get(&logits).as_vec())]
}

/// Reductions and elementwise ops used by schedules, clipping and metrics.
fn reductions<D: Device<f32>>(dev: &D) -> Outputs {
    let (n, c) = (10usize, 37usize);
    let x: M<D> = dev.tensor_from_vec(data(n * c, 14), (n, c));
    let sq = x.clone().square().sum::<(), _>().sqrt().as_vec();
    let row_max = x.clone().max::<(usize,), Axis<1>>().as_vec();
    let col_mean = x.clone().mean::<(usize,), Axis<0>>().as_vec();
    let y = x
        .clone()
        .traced(Gradients::leaky())
        .tanh()
        .sigmoid()
        .exp()
        .ln()
        .sqrt();
    let yv = y.with_empty_tape().as_vec();
    let g = weighted_sum(y, 15).backward();
    vec![
        ("l2 norm", sq),
        ("row max", row_max),
        ("col mean", col_mean),
        ("unary chain", yv),
        ("grad unary chain", g.get(&x).as_vec()),
    ]
}

/// Two fused AdamW steps with decoupled weight decay, moments kept by the caller.
fn adamw<D: Device<f32>>(dev: &D) -> Outputs {
    let n = 50usize;
    let mut p: Tensor<(usize,), f32, D> = dev.tensor_from_vec(data(n, 16), (n,));
    let cfg = AdamConfig {
        lr: 1e-2,
        betas: [0.9, 0.95],
        eps: 1e-8,
        weight_decay: Some(WeightDecay::Decoupled(0.1)),
    };
    let mut m1 = Gradients::<f32, D>::leaky();
    let mut m2 = Gradients::<f32, D>::leaky();
    for step in 1..=2 {
        let loss = weighted_sum(
            p.clone().traced(Gradients::leaky()).square(),
            17 + step as u64,
        );
        let mut g = loss.backward();
        let grad = g.get_or_alloc_mut(&p).expect("allocating the gradient");
        let m1v = m1
            .get_or_alloc_mut(&p)
            .expect("allocating the first moment");
        let m2v = m2
            .get_or_alloc_mut(&p)
            .expect("allocating the second moment");
        cfg.try_update(step, &mut p, m1v, m2v, grad)
            .expect("adam update");
    }
    vec![("params after 2 steps", p.as_vec())]
}

macro_rules! device_case {
    ($name:ident, $atol:expr, $rtol:expr) => {
        #[test]
        fn $name() {
            compare(super::$name::<Cpu>, super::$name::<Cuda>, $atol, $rtol);
        }
    };
}

mod cpu_vs_cuda {
    use super::*;
    device_case!(matmul_2d, 1e-5, 1e-4);
    device_case!(attention, 1e-5, 1e-4);
    device_case!(layer_norm_gelu, 1e-5, 1e-4);
    device_case!(embeddings, 0.0, 0.0);
    device_case!(cross_entropy, 1e-6, 1e-5);
    device_case!(reductions, 1e-5, 1e-5);
    device_case!(adamw, 1e-6, 1e-5);
}

/// Conversions and concatenation are compiled at run time with NVRTC and include CUDA headers
/// from the include path baked in at build time: this fails if that path is missing.
#[test]
fn runtime_compiled_kernels() {
    let dev = gpu();
    let x: Tensor<(usize, usize), f32, Cuda> = dev.tensor_from_vec(data(12, 20), (3, 4));
    let as_f64 = x.clone().to_dtype::<f64>().as_vec();
    let expected: Vec<f64> = x.as_vec().iter().map(|v| f64::from(*v)).collect();
    assert_eq!(as_f64, expected, "f32 -> f64 conversion changed values");
    let joined = (x.clone(), x.clone()).concat_along(Axis::<0>).as_vec();
    let mut expected = x.as_vec();
    expected.extend(x.as_vec());
    assert_eq!(
        joined, expected,
        "concat_along on the gpu differs from appending on the host"
    );
}
