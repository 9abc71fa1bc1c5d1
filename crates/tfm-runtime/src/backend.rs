//! The hot operations, as a trait over the device: default methods written with dfdx ops serve
//! every device; the CPU overrides them with fused, parallel kernels (`cpu.rs`), the GPU with
//! fused CUDA kernels (`cuda.rs`).

use crate::value::{e, Ctx, Elem, Half, BT, FT, IT};
use crate::{dev_err, layout, run_err, Batch, HostTensor, ParamStore, Runtime, RuntimeError};
use dfdx::prelude::*;
use tfm_ir::Activation;

type R<X> = Result<X, RuntimeError>;

/// Columns `off..off + width` of the last axis of a `[B, L, W]` tensor (q, k and v inside a
/// fused projection are read in place).
#[derive(Clone, Copy)]
pub struct Cols<'a, D: Device<E>, E: Elem = f32> {
    pub x: &'a FT<D, E>,
    pub off: usize,
    pub width: usize,
}

impl<'a, E: Elem, D: Device<E>> Cols<'a, D, E> {
    pub fn all(x: &'a FT<D, E>) -> Self {
        Cols { x, off: 0, width: x.last() }
    }
    pub fn row_stride(&self) -> usize {
        self.x.last()
    }
}

/// The attention core's sizes and switches.
#[derive(Clone, Copy, Debug)]
pub struct CoreCfg {
    pub b: usize,
    /// Query length.
    pub t: usize,
    /// Key length.
    pub s: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub hd: usize,
    pub causal: bool,
    /// 0 = none; else a query attends to keys `j` with `i - window < j`.
    pub window: usize,
    pub scale: f32,
    /// Attention dropout probability (0 when not training).
    pub dropout: f32,
}

impl CoreCfg {
    /// Whether query `i` may attend to key `j` (before any padding mask).
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        (!self.causal || j <= i) && (self.window == 0 || j + self.window > i)
    }
}

/// What a device says about itself, whatever the element type it runs.
pub trait DeviceInfo {
    /// Process-wide set-up the device wants before the first pass (called by `Runtime::new`).
    #[doc(hidden)]
    fn prepare_host() {}

    /// Waits until the work queued on the device is done (timing; the CPU's work is done when an
    /// op returns).
    fn sync(&self) -> R<()> {
        Ok(())
    }

    /// `(free, total)` bytes of device memory, where the device has its own (a GPU).
    fn memory_info(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A device that runs both element types: `f32`, and half precision for mixed-precision training.
pub trait AnyPrecision: Backend + Backend<Half> {}

impl<D: Backend + Backend<Half>> AnyPrecision for D {}

/// Operations with a device-specific fast path. Every method has a correct default built from
/// dfdx ops; devices override what they can do faster.
pub trait Backend<E: Elem = f32>: Device<E> + DeviceInfo + Sized {

    // Whole passes: the CPU moves each onto a rayon worker, so its parallel kernels join inside
    // the pool instead of waking the pool from outside for every op.
    #[doc(hidden)]
    fn pass_forward(
        rt: &Runtime<Self>,
        store: &ParamStore<Self, E>,
        inputs: &[HostTensor],
        train: bool,
        seed: u64,
    ) -> R<Vec<HostTensor>> {
        rt.forward_here(store, inputs, train, seed)
    }
    #[doc(hidden)]
    fn pass_loss_and_grads(rt: &Runtime<Self>, store: &ParamStore<Self, E>, batch: &Batch, seed: u64, loss_scale: f32) -> R<(f32, Gradients<E, Self>)> {
        rt.loss_and_grads_here(store, batch, seed, loss_scale)
    }
    #[doc(hidden)]
    fn pass_loss(rt: &Runtime<Self>, store: &ParamStore<Self, E>, batch: &Batch) -> R<f32> {
        rt.loss_here(store, batch)
    }

    /// `x [*, in] @ w[out, in]^T + b`.
    fn linear<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, w: &FT<Self, E>, b: Option<&FT<Self, E>>) -> R<FT<Self, E>> {
        generic::linear(cx, x, w, b)
    }
    /// Batched `a [.., m, k] @ b [.., k, n]` with broadcasting of the leading dims.
    fn matmul<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, a: &FT<Self, E>, b: &FT<Self, E>) -> R<FT<Self, E>> {
        generic::matmul(cx, a, b)
    }
    fn layer_norm<T: Tape<E, Self>>(
        cx: &mut Ctx<Self, T, E>,
        x: &FT<Self, E>,
        w: &FT<Self, E>,
        b: Option<&FT<Self, E>>,
        eps: f32,
    ) -> R<FT<Self, E>> {
        generic::layer_norm(cx, x, w, b, eps)
    }
    fn rms_norm<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, w: &FT<Self, E>, eps: f32) -> R<FT<Self, E>> {
        generic::rms_norm(cx, x, w, eps)
    }
    /// Elementwise activation (`gelu`, `gelu_exact`, `relu`, `silu`; gated ones are built from these).
    fn act<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, act: Activation) -> R<FT<Self, E>> {
        generic::act(cx, x, act)
    }
    /// Same-shape elementwise sum.
    fn add<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, a: &FT<Self, E>, b: &FT<Self, E>) -> R<FT<Self, E>> {
        Ok(cx.zip(a, b, |a, b| a + b))
    }
    /// `[B, T, heads * hd]`: softmax(scale * q k^T + bias + masks) v per head.
    fn attention_core<T: Tape<E, Self>>(
        cx: &mut Ctx<Self, T, E>,
        q: Cols<Self, E>,
        k: Cols<Self, E>,
        v: Cols<Self, E>,
        cfg: CoreCfg,
        mask: Option<&BT>,
        bias: Option<&FT<Self, E>>,
    ) -> R<FT<Self, E>> {
        generic::attention_core(cx, q, k, v, cfg, mask, bias)
    }
    /// Rotary embedding (rotate-half) of the `heads * hd` columns of `x [B, L, W]`, positions 0..L.
    fn rope<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: Cols<Self, E>, heads: usize, hd: usize, theta: f32) -> R<FT<Self, E>> {
        generic::rope(cx, x, heads, hd, theta)
    }
    /// Rows of `w [num, dim]` picked by `ids`.
    fn embedding<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, w: &FT<Self, E>, ids: &IT) -> R<FT<Self, E>> {
        generic::embedding(cx, w, ids)
    }
    /// Mean cross-entropy of `logits [rows, V]` against `targets` (`-100` = ignored); a scalar.
    fn cross_entropy<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, logits: &FT<Self, E>, targets: &[i64]) -> R<FT<Self, E>> {
        generic::cross_entropy(cx, logits, targets)
    }
    /// Inverted dropout with keep probability `1 - p`.
    fn dropout<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, p: f32) -> R<FT<Self, E>> {
        generic::dropout(cx, x, p)
    }
    /// `out[i] = x[idx[i]]` with an accumulating backward.
    fn gather<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, idx: Vec<usize>, shape: Vec<usize>) -> R<FT<Self, E>> {
        cx.gather(x, idx, shape)
    }
    /// `x` broadcast to `shape` (numpy rules: `x`'s dims aligned right, each equal or 1).
    fn broadcast<T: Tape<E, Self>>(cx: &mut Ctx<Self, T, E>, x: &FT<Self, E>, shape: &[usize]) -> R<FT<Self, E>> {
        generic::broadcast(cx, x, shape)
    }
}

/// Mixed precision on the CPU runs dfdx's kernels throughout (the fused kernels are `f32`): it
/// exists to test the half-precision path where no GPU is at hand, not for speed.
impl Backend<Half> for Cpu {}

/// Half precision on a GPU: dfdx's kernels, with dropout masks drawn on the device. (The `f32`
/// operations with fused kernels are in `cuda.rs`.)
#[cfg(feature = "cuda")]
impl Backend<Half> for Cuda {
    fn dropout<T: Tape<Half, Self>>(cx: &mut Ctx<Self, T, Half>, x: &FT<Self, Half>, p: f32) -> R<FT<Self, Half>> {
        cuda_dropout(cx, x, p)
    }
}

/// Dropout with multipliers drawn on the GPU (`cuda_kernels::keep_scales`), seeded from the
/// run's generator: same seed, same masks.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_dropout<E: Elem, T: Tape<E, Cuda>>(cx: &mut Ctx<Cuda, T, E>, x: &FT<Cuda, E>, p: f32) -> R<FT<Cuda, E>>
where
    Cuda: Device<E>,
    <Cuda as Storage<E>>::Vec: cudarc::driver::DevicePtr<E>,
{
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let seed = cx.rng.next_u64();
    let m = crate::cuda_kernels::keep_scales::<E>(&cx.dev, x.numel(), p, 1.0 / (1.0 - p), seed)?;
    let m = FT { t: m, shape: x.shape.clone(), uid: crate::value::fresh_uid(), host: None, dev: None };
    Ok(cx.zip(x, &m, |x, m| x * m))
}

#[cfg(feature = "cuda")]
impl DeviceInfo for Cuda {
    fn sync(&self) -> R<()> {
        self.try_synchronize().map_err(dev_err)
    }
    fn memory_info(&self) -> Option<(u64, u64)> {
        crate::device::gpu_memory_info()
    }
}

/// Checks one label per row of `rows x v` logits, each in `0..v` or -100 (ignored); returns how
/// many count.
pub(crate) fn check_targets(targets: &[i64], rows: usize, v: usize) -> R<usize> {
    if targets.len() != rows {
        return Err(run_err(format!("cross-entropy: expected {rows} labels, found {}", targets.len())));
    }
    let mut count = 0;
    for &t in targets {
        if t == -100 {
            continue;
        }
        if t < 0 || t as usize >= v {
            return Err(run_err(format!(
                "expected labels in 0..{v} (or -100 to ignore), found {t}; hint: check the data's vocabulary or class count"
            )));
        }
        count += 1;
    }
    Ok(count)
}

pub(crate) fn check_ids(ids: &IT, num: usize, what: &str) -> R<Vec<usize>> {
    ids.data
        .iter()
        .map(|&i| {
            if i < 0 || i as usize >= num {
                Err(run_err(format!(
                    "{what}: expected ids in 0..{num}, found {i}; hint: token ids must be below the vocabulary size and positions below the context length"
                )))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// The rotary tables for `l` positions: `cos[l, hd]`, signed `sin[l, hd]` (negative in the first
/// half, as rotate-half pairs `x1` with `-x2`).
pub(crate) fn rope_tables(l: usize, hd: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = hd / 2;
    let mut cos = vec![0.0; l * hd];
    let mut sin = vec![0.0; l * hd];
    for p in 0..l {
        for i in 0..half {
            let inv = (theta as f64).powf(-(2.0 * i as f64) / hd as f64);
            let a = p as f64 * inv;
            let (s, c) = a.sin_cos();
            cos[p * hd + i] = c as f32;
            cos[p * hd + i + half] = c as f32;
            sin[p * hd + i] = -s as f32;
            sin[p * hd + i + half] = s as f32;
        }
    }
    (cos, sin)
}

/// Device-generic implementations with dfdx ops.
pub mod generic {
    use super::*;

    pub fn linear<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, w: &FT<D, E>, b: Option<&FT<D, E>>) -> R<FT<D, E>> {
        let (o, i) = (w.shape[0], w.numel() / w.shape[0].max(1));
        let n = x.rows();
        let w = &cx.distinct(x, w);
        let xt = cx.tr(x).reshape_like(&(n, i));
        let wt = w.t.clone().reshape_like(&(o, i)).permute::<(usize, usize), Axes2<1, 0>>();
        let mut y = xt.try_matmul(wt).map_err(dev_err)?;
        if let Some(b) = b {
            let bb = b.t.clone().reshape_like(&(o,)).broadcast_like::<(usize, usize), Axis<0>>(&(n, o));
            y = y + bb;
        }
        let mut shape = x.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = o;
        }
        Ok(cx.keep(y, shape))
    }

    pub fn matmul<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, a: &FT<D, E>, b: &FT<D, E>) -> R<FT<D, E>> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        if ra < 2 || rb < 2 {
            return Err(run_err("matmul: expected operands with at least 2 dims"));
        }
        let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
        if b.shape[rb - 2] != k {
            return Err(run_err(format!("matmul: expected inner dims to agree, found {k} and {}", b.shape[rb - 2])));
        }
        let b = &cx.distinct(a, b);
        if rb == 2 {
            let rows = a.numel() / k.max(1);
            let y = cx.tr(a).reshape_like(&(rows, k)).try_matmul(b.t.clone().reshape_like(&(k, n))).map_err(dev_err)?;
            let mut shape = a.shape.clone();
            shape[ra - 1] = n;
            return Ok(cx.keep(y, shape));
        }
        let (a, b, batch) = broadcast_batch(cx, a, b)?;
        let nb: usize = batch.iter().product();
        let y = cx
            .tr(&a)
            .reshape_like(&(nb, m, k))
            .try_matmul(b.t.clone().reshape_like(&(nb, k, n)))
            .map_err(dev_err)?;
        let mut shape = batch;
        shape.extend([m, n]);
        Ok(cx.keep(y, shape))
    }

    /// Broadcasts the leading dims of two matmul operands to a common batch shape.
    pub fn broadcast_batch<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, a: &FT<D, E>, b: &FT<D, E>) -> R<(FT<D, E>, FT<D, E>, Vec<usize>)> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        let (ba, bb) = (&a.shape[..ra - 2], &b.shape[..rb - 2]);
        let batch = layout::broadcast_shapes(ba, bb)
            .ok_or_else(|| run_err(format!("matmul: batch dims {ba:?} and {bb:?} do not broadcast")))?;
        let expand = |cx: &mut Ctx<D, T, E>, x: &FT<D, E>, r: usize| -> R<FT<D, E>> {
            if x.shape[..r - 2] == batch[..] {
                return Ok(x.clone());
            }
            let mut to = batch.clone();
            to.extend_from_slice(&x.shape[r - 2..]);
            let idx = layout::broadcast(&x.shape, &to);
            cx.gather(x, idx, to)
        };
        let a2 = expand(cx, a, ra)?;
        let b2 = expand(cx, b, rb)?;
        Ok((a2, b2, batch))
    }

    pub fn layer_norm<E: Elem, D: Device<E>, T: Tape<E, D>>(
        cx: &mut Ctx<D, T, E>,
        x: &FT<D, E>,
        w: &FT<D, E>,
        b: Option<&FT<D, E>>,
        eps: f32,
    ) -> R<FT<D, E>> {
        let (r, n) = (x.rows(), x.last());
        let xn = cx.tr(x).reshape_like(&(r, n)).try_normalize::<Axis<1>>(eps).map_err(dev_err)?;
        let mut y = xn * w.t.clone().reshape_like(&(n,)).broadcast_like::<(usize, usize), Axis<0>>(&(r, n));
        if let Some(b) = b {
            y = y + b.t.clone().reshape_like(&(n,)).broadcast_like::<(usize, usize), Axis<0>>(&(r, n));
        }
        Ok(cx.keep(y, x.shape.clone()))
    }

    pub fn rms_norm<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, w: &FT<D, E>, eps: f32) -> R<FT<D, E>> {
        let (r, n) = (x.rows(), x.last());
        let ms = cx.tr(x).reshape_like(&(r, n)).square().sum::<(usize,), Axis<1>>() * e::<E>(1.0 / n as f32);
        let inv = (ms + e::<E>(eps)).sqrt().recip();
        let inv = cx.keep(inv, vec![r]);
        let y = cx.tr(&inv).broadcast_like::<(usize, usize), Axis<1>>(&(r, n)) * x.t.clone().reshape_like(&(r, n));
        let y = y * w.t.clone().reshape_like(&(n,)).broadcast_like::<(usize, usize), Axis<0>>(&(r, n));
        Ok(cx.keep(y, x.shape.clone()))
    }

    pub fn act<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, act: Activation) -> R<FT<D, E>> {
        Ok(match act {
            Activation::Gelu => cx.map(x, |t| t.fast_gelu()),
            Activation::Relu => cx.map(x, |t| t.relu()),
            Activation::Silu => {
                let s = cx.map(x, |t| t.sigmoid());
                cx.zip(&s, x, |s, x| s * x)
            }
            Activation::GeluExact => gelu_exact(cx, x)?,
            Activation::Swiglu | Activation::Geglu => {
                return Err(run_err("gated activations apply to two tensors; use them through `mlp`"))
            }
        })
    }

    /// `x * Phi(x)` with Phi from erfc's Abramowitz-Stegun 7.1.26 form (error below 1.5e-7),
    /// differentiated by dfdx through elementary ops (never dfdx's `accurate_gelu`).
    pub fn gelu_exact<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>) -> R<FT<D, E>> {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
        let z = cx.map(x, |t| t.abs() * e::<E>(std::f32::consts::FRAC_1_SQRT_2));
        let tt = cx.map(&z, |z| (z * e::<E>(P) + e::<E>(1.0)).recip());
        let mut poly = cx.map(&tt, |t| t * e::<E>(A[4]));
        for a in A[..4].iter().rev() {
            let a = e::<E>(*a);
            poly = cx.map(&poly, |u| u + a);
            poly = cx.zip(&poly, &tt, |u, t| u * t);
        }
        let g = cx.map(x, |t| (t.square() * e::<E>(-0.5)).exp());
        // q = P(X > |x|) = erfc(|x| / sqrt 2) / 2
        let q = cx.zip(&poly, &g, |p, g| p * g * e::<E>(0.5));
        let one_minus_q = cx.map(&q, |q| q.negate() + e::<E>(1.0));
        let cond = x.t.clone().ge(e::<E>(0.0));
        let phi = cond.try_choose(cx.tr(&one_minus_q), q.t.clone()).map_err(dev_err)?;
        let phi = cx.keep(phi, x.shape.clone());
        Ok(cx.zip(&phi, x, |p, x| p * x))
    }

    /// The attention core with dfdx's views: heads picked by a gather over whole heads (one index
    /// per row and head, not per element), scores and `P @ V` as batched products of permuted
    /// views, masks added as `[T, S]` and `[B, S]` tables broadcast on the device. Nothing the size
    /// of the scores is built on the host, so it stays fast on a device behind a bus.
    pub fn attention_core<E: Elem, D: Backend<E>, T: Tape<E, D>>(
        cx: &mut Ctx<D, T, E>,
        q: Cols<D, E>,
        k: Cols<D, E>,
        v: Cols<D, E>,
        c: CoreCfg,
        mask: Option<&BT>,
        bias: Option<&FT<D, E>>,
    ) -> R<FT<D, E>> {
        let (b, t, s, h, hd) = (c.b, c.t, c.s, c.heads, c.hd);
        let group = h / c.kv_heads.max(1);
        for x in [&q, &k, &v] {
            on_head_boundaries(x, hd)?;
        }
        type S4 = (usize, usize, usize, usize);
        type S3 = (usize, usize, usize);
        let bh = b * h;
        let qh = split_heads(cx, q, b * t, h, hd, 1)?;
        let kh = split_heads(cx, k, b * s, h, hd, group)?;
        let vh = split_heads(cx, v, b * s, h, hd, group)?;
        // Heads moved next to the batch, `[B H, len, hd]`, so each product is one batched call
        // (dfdx runs a 4-D product as one call per batch row: 128 cuBLAS calls a layer at batch
        // 64, forward alone); the copies cost one pass over q, k and v.
        let by_head = |cx: &mut Ctx<D, T, E>, x: &FT<D, E>, len: usize| -> FT<D, E> {
            let y = cx.tr(x).reshape_like(&(b, len, h, hd)).permute::<S4, Axes4<0, 2, 1, 3>>().reshape_like(&(bh, len, hd));
            cx.keep(y, vec![bh, len, hd])
        };
        let (q3, k3, v3) = (by_head(cx, &qh, t), by_head(cx, &kh, s), by_head(cx, &vh, s));
        // [B H, T, hd] @ [B H, hd, S], the scale folded into q (T hd products, not T S)
        let qs = cx.tr(&q3).reshape_like(&(bh, t, hd)) * e::<E>(c.scale);
        let kt = k3.t.clone().reshape_like(&(bh, s, hd)).permute::<S3, Axes3<0, 2, 1>>();
        let sc = qs.try_matmul(kt).map_err(dev_err)?;
        let mut sc = cx.keep(sc, vec![b, h, t, s]);
        if let Some(bias) = bias {
            let bb = bias.t.clone().reshape_like(&(h * t * s,)).broadcast_like::<(usize, usize), Axis<0>>(&(b, h * t * s));
            let y = cx.tr(&sc).reshape_like(&(b, h * t * s)) + bb;
            sc = cx.keep(y, vec![b, h, t, s]);
        }
        if (0..t).any(|i| (0..s).any(|j| !c.allowed(i, j))) {
            let m = cx.kept(format!("mask {t} {s} {} {}", c.causal, c.window), (t, s), || {
                E::vec_from_f32((0..t * s).map(|ij| if c.allowed(ij / s, ij % s) { 0.0 } else { E::MASKED }).collect())
            })?;
            let m = m.broadcast_like::<(usize, usize, usize), Axis<0>>(&(b * h, t, s));
            let y = cx.tr(&sc).reshape_like(&(b * h, t, s)) + m;
            sc = cx.keep(y, vec![b, h, t, s]);
        }
        if let Some(mask) = mask.filter(|m| m.data.iter().any(|k| !k)) {
            let table: Vec<f32> = mask.data.iter().map(|&k| if k { 0.0 } else { E::MASKED }).collect();
            let m = cx.dev.try_tensor_from_vec(E::vec_from_f32(table), (b, s)).map_err(dev_err)?;
            let m = m.broadcast_like::<(usize, usize, usize), Axis<1>>(&(b, h * t, s));
            let y = cx.tr(&sc).reshape_like(&(b, h * t, s)) + m;
            sc = cx.keep(y, vec![b, h, t, s]);
        }
        let p = cx.tr(&sc).reshape_like(&(b * h * t, s)).softmax::<Axis<1>>();
        let mut p = cx.keep(p, vec![b, h, t, s]);
        if c.dropout > 0.0 {
            // the device's own dropout (on a GPU, multipliers drawn there)
            p = D::dropout(cx, &p, c.dropout)?;
        }
        // [B H, T, S] @ [B H, S, hd], then heads back beside each other: [B, T, H hd]
        let o = cx.tr(&p).reshape_like(&(bh, t, s)).try_matmul(v3.t.clone().reshape_like(&(bh, s, hd))).map_err(dev_err)?;
        let o = o.reshape_like(&(b, h, t, hd)).permute::<S4, Axes4<0, 2, 1, 3>>().try_reshape_like(&(b * t * h * hd,)).map_err(dev_err)?;
        Ok(cx.keep(o, vec![b, t, h * hd]))
    }

    /// Attention reads whole heads: the executor's projections are `heads x hd` wide, so columns
    /// start and end on head boundaries (and the checker keeps `hd` at least 1).
    fn on_head_boundaries<E: Elem, D: Device<E>>(x: &Cols<D, E>, hd: usize) -> R<()> {
        if hd == 0 || x.off % hd != 0 || x.width % hd != 0 || x.row_stride() % hd != 0 {
            return Err(run_err(format!(
                "internal: attention columns {}..{} of width {} do not fall on heads of {hd}",
                x.off,
                x.off + x.width,
                x.row_stride()
            )));
        }
        Ok(())
    }

    /// `[rows, heads, hd]`: head `j` of each row is head `first + j / group` of the columns `c`
    /// (grouped keys and values are repeated for their query heads). Free when the columns are
    /// exactly the heads in order.
    fn split_heads<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, c: Cols<D, E>, rows: usize, heads: usize, hd: usize, group: usize) -> R<FT<D, E>> {
        let total = c.row_stride() / hd;
        let first = c.off / hd;
        if first == 0 && total == heads && group == 1 {
            return Ok(c.x.reshaped(vec![rows, heads, hd]));
        }
        let it = cx.kept(format!("heads {rows} {heads} {first} {group}"), (rows, heads), || {
            (0..rows).flat_map(|_| (0..heads).map(|j| first + j / group)).collect()
        })?;
        let y = cx.tr(c.x).reshape_like(&(rows, total, hd)).try_gather(it).map_err(dev_err)?;
        Ok(cx.keep(y, vec![rows, heads, hd]))
    }

    /// Rotary embedding with `[L, hd]` cos and signed sin tables broadcast over batch and heads on
    /// the device, and rotate-half as a swap of each head's halves (one index per row and head).
    pub fn rope<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: Cols<D, E>, heads: usize, hd: usize, theta: f32) -> R<FT<D, E>> {
        let (b, l) = (x.x.shape[0], x.x.shape[1]);
        on_head_boundaries(&x, hd)?;
        if hd % 2 == 1 {
            return Err(run_err(format!("rotary embeddings: expected an even head size, found {hd}")));
        }
        let half = hd / 2;
        let rows = b * l * heads;
        let xh = split_heads(cx, x, b * l, heads, hd, 1)?;
        let (cos, sin) = rope_tables(l, hd, theta);
        let table = |v: Vec<f32>| -> R<Tensor<(usize, usize, usize, usize), E, D>> {
            let t = cx.dev.try_tensor_from_vec(E::vec_from_f32(v), (l, hd)).map_err(dev_err)?;
            Ok(t.broadcast_like::<(usize, usize, usize, usize), Axes2<0, 2>>(&(b, l, heads, hd)))
        };
        let (cos, sin) = (table(cos)?, table(sin)?);
        let swap: Vec<usize> = (0..rows).flat_map(|_| [1, 0]).collect();
        let it = cx.dev.try_tensor_from_vec(swap, (rows, 2)).map_err(dev_err)?;
        let rot = cx.tr(&xh).reshape_like(&(rows, 2, half)).try_gather(it).map_err(dev_err)?;
        let rot = rot.reshape_like(&(b, l, heads, hd)) * sin;
        let rot = cx.keep(rot, vec![b, l, heads * hd]);
        let a = cx.tr(&xh).reshape_like(&(b, l, heads, hd)) * cos;
        let a = cx.keep(a, vec![b, l, heads * hd]);
        Ok(cx.zip(&a, &rot, |a, r| a + r))
    }

    pub fn embedding<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, w: &FT<D, E>, ids: &IT) -> R<FT<D, E>> {
        let (num, dim) = (w.shape[0], w.numel() / w.shape[0].max(1));
        let idx = check_ids(ids, num, "embedding")?;
        let n = idx.len();
        // positions 0..n are the same every pass: kept on the device
        let it = if idx.iter().enumerate().all(|(i, &j)| i == j) {
            cx.kept(format!("arange {n}"), (n,), || idx)?
        } else {
            cx.index(idx)?
        };
        let y = cx.tr(w).reshape_like(&(num, dim)).try_gather(it).map_err(dev_err)?;
        let _: &Tensor<(usize, usize), E, D, T> = &y;
        let mut shape = ids.shape.clone();
        shape.push(dim);
        debug_assert_eq!(shape.iter().product::<usize>(), n * dim);
        Ok(cx.keep(y, shape))
    }

    pub fn cross_entropy<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, logits: &FT<D, E>, targets: &[i64]) -> R<FT<D, E>> {
        let (rows, v) = (logits.rows(), logits.last());
        let count = check_targets(targets, rows, v)?;
        if count == 0 {
            return cx.constant(vec![0.0], vec![]);
        }
        // log-softmax of every row, the target's entry picked per row; ignored rows pick entry 0
        // and are weighted out (host work per row, not per logit)
        let sel: Vec<usize> = targets.iter().map(|&t| if t == -100 { 0 } else { t as usize }).collect();
        let it = cx.index(sel)?;
        let picked = cx.tr(logits).reshape_like(&(rows, v)).log_softmax::<Axis<1>>().try_select(it).map_err(dev_err)?;
        let _: &Tensor<(usize,), E, D, T> = &picked;
        let picked = if count == rows {
            picked
        } else {
            let w: Vec<f32> = targets.iter().map(|&t| if t == -100 { 0.0 } else { 1.0 }).collect();
            picked * cx.dev.try_tensor_from_vec(E::vec_from_f32(w), (rows,)).map_err(dev_err)?
        };
        let loss = if E::NAME == "f32" {
            picked.sum::<(), Axis<0>>() * e::<E>(-1.0 / count as f32)
        } else {
            // half precision: a sum of 16k per-token losses near ln(vocab) passes f16's 65504
            // (the reduction accumulates in f32 but stores in f16), so scale by 1/sqrt(n)
            // before and after it
            let r = 1.0 / (count as f32).sqrt();
            (picked * e::<E>(-r)).sum::<(), Axis<0>>() * e::<E>(r)
        };
        Ok(cx.keep(loss, vec![]))
    }

    pub fn dropout<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, p: f32) -> R<FT<D, E>> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        // one multiplier per element (0, or 1 / (1 - p) where kept), drawn on all host threads
        // (attention dropout draws B H T S of them per layer); an index gather would send twice
        // the bytes and a concatenation
        let scale = cx.rng.keep_scales(x.numel(), p, 1.0 / (1.0 - p));
        let m = cx.constant(scale, x.shape.clone())?;
        Ok(cx.zip(x, &m, |x, m| x * m))
    }

    /// `x` broadcast to `shape` on the device: dims are grouped into runs that are kept or
    /// repeated, and the common patterns (repeat before, after, or around the kept data; kept
    /// data around a repeat) are one dfdx broadcast; anything else is an index gather.
    pub fn broadcast<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, shape: &[usize]) -> R<FT<D, E>> {
        let out: usize = shape.iter().product();
        if x.numel() == out {
            return Ok(x.reshaped(shape.to_vec()));
        }
        let groups = layout::broadcast_groups(&x.shape, shape)
            .ok_or_else(|| run_err(format!("expected shapes that broadcast, found {:?} and {:?}", x.shape, shape)))?;
        let to = shape.to_vec();
        let t = cx.tr(x);
        use layout::Run::{Keep, Repeat};
        let y = match groups[..] {
            [Repeat(b), Keep(k)] => t.reshape_like(&(k,)).broadcast_like::<_, Axis<0>>(&(b, k)).reshape_like(&(out,)),
            [Keep(k), Repeat(b)] => t.reshape_like(&(k,)).broadcast_like::<_, Axis<1>>(&(k, b)).reshape_like(&(out,)),
            [Repeat(a), Keep(k), Repeat(b)] => t.reshape_like(&(k,)).broadcast_like::<_, Axes2<0, 2>>(&(a, k, b)).reshape_like(&(out,)),
            [Keep(a), Repeat(b), Keep(k)] => t.reshape_like(&(a, k)).broadcast_like::<_, Axis<1>>(&(a, b, k)).reshape_like(&(out,)),
            _ => {
                drop(t);
                let idx = layout::broadcast(&x.shape, shape);
                return cx.gather(x, idx, to);
            }
        };
        Ok(cx.keep(y, to))
    }

    /// Sum over `axis`.
    pub fn sum_axis<E: Elem, D: Device<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, axis: usize) -> R<FT<D, E>> {
        let pre: usize = x.shape[..axis].iter().product();
        let n = x.shape[axis];
        let post: usize = x.shape[axis + 1..].iter().product();
        let y = cx.tr(x).reshape_like(&(pre, n, post)).sum::<(usize, usize), Axis<1>>();
        let mut shape = x.shape.clone();
        shape.remove(axis);
        Ok(cx.keep(y, shape))
    }

    /// Moves `axis` last (a gather) when it is not already, applies `f` over rows, moves it back.
    pub fn over_axis<E: Elem, D: Device<E>, T: Tape<E, D>>(
        cx: &mut Ctx<D, T, E>,
        x: &FT<D, E>,
        axis: usize,
        f: impl FnOnce(Tensor<(usize, usize), E, D, T>) -> Tensor<(usize, usize), E, D, T>,
    ) -> R<FT<D, E>> {
        let r = x.shape.len();
        if axis + 1 == r {
            let y = f(cx.tr(x).reshape_like(&(x.rows(), x.last())));
            return Ok(cx.keep(y, x.shape.clone()));
        }
        let mut axes: Vec<usize> = (0..r).filter(|&a| a != axis).collect();
        axes.push(axis);
        let (idx, moved) = layout::permute(&x.shape, &axes);
        let xm = cx.gather(x, idx, moved.clone())?;
        let ym = {
            let y = f(cx.tr(&xm).reshape_like(&(xm.rows(), xm.last())));
            cx.keep(y, moved.clone())
        };
        let mut back = vec![0; r];
        for (i, &a) in axes.iter().enumerate() {
            back[a] = i;
        }
        let (idx, shape) = layout::permute(&moved, &back);
        cx.gather(&ym, idx, shape)
    }
}
