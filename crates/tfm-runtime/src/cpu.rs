//! Fused, rayon-parallel CPU kernels for the hot operations, as dfdx custom ops: the forward
//! computes on host buffers, the backward closure (on the run's tape) reads the output's
//! gradient and accumulates into the inputs' gradients, keyed by the same tensors as dfdx's own
//! ops. `Ctx::fused == false` falls back to the generic dfdx versions.

use crate::backend::{check_ids, check_targets, generic, rope_tables, Backend, Cols, CoreCfg, DeviceInfo};
use crate::gemm::{sgemm, sgemm_par, sgemm_small, MatRef};
#[cfg(feature = "emu")]
use crate::kops;
use crate::mathf;
use crate::value::{Ctx, Flat, HostPtr, Rng, BT, FT, IT};
use crate::{layout, run_err, Batch, HostTensor, ParamStore, Runtime, RuntimeError};
use dfdx::prelude::*;
use rayon::prelude::*;
use std::sync::Arc;
use tfm_ir::Activation;

type R<X> = Result<X, RuntimeError>;
type Grads = Gradients<f32, Cpu>;

/// Elements per parallel task for elementwise work.
const CHUNK: usize = 1 << 14;

/// Read access to a value's elements on the host.
#[derive(Clone)]
enum HostData {
    /// The tensor's own storage, kept alive by the clone held here.
    View { _keep: Flat<Cpu>, at: HostPtr },
    /// A copy, for tensors dfdx made.
    Owned(Arc<Vec<f32>>),
}

impl std::ops::Deref for HostData {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: see `HostPtr`: the pointer and length describe the storage of the tensor
            // held alongside, which stays allocated and unwritten while that clone exists.
            #[allow(unsafe_code)]
            HostData::View { at, .. } => unsafe { std::slice::from_raw_parts(at.ptr, at.len) },
            HostData::Owned(v) => v,
        }
    }
}

/// The data of `x` on the host: its own storage when a kernel made `x`, else a copy.
fn host(x: &FT<Cpu>) -> HostData {
    crate::gemm::single_threaded_kernels();
    match x.host {
        Some(at) if at.len == x.numel() => HostData::View { _keep: x.t.clone(), at },
        _ => {
            let mut v = vec![0.0; x.numel()];
            x.t.copy_into(&mut v);
            HostData::Owned(Arc::new(v))
        }
    }
}

/// Takes the output's accumulated gradient out of the store (nobody reads it afterwards).
fn take_grad(grads: &mut Grads, t: &Flat<Cpu>) -> Result<Vec<f32>, CpuError> {
    let g = grads.get_or_alloc_mut(t)?;
    Ok(std::mem::take(&mut **g))
}

/// Runs `f` on the gradient buffer of `t`, allocating it if needed.
fn with_grad(grads: &mut Grads, t: &Flat<Cpu>, f: impl FnOnce(&mut [f32])) -> Result<(), CpuError> {
    let g = grads.get_or_alloc_mut(t)?;
    f(&mut g[..]);
    Ok(())
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        for (a, b) in d.iter_mut().zip(s) {
            *a += b;
        }
    });
}

/// Adds up per-chunk partial sums in chunk order. Chunks are computed in parallel, but combining
/// them with rayon's `reduce` would add them in an order set by work stealing, so the same run
/// would give different floating-point results from one time to the next.
fn sum_in_order(parts: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    for p in &parts {
        if !p.is_empty() {
            mathf::axpy(&mut out, 1.0, p);
        }
    }
    out
}

fn out_shape_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

/// tanh by Eigen's rational approximation (a few ulp in f32), branch-free so loops vectorise.
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 - 8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    p *= x;
    let mut q = 1.198_258_4e-6f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    p / q
}

#[inline(always)]
fn gelu_tanh(x: f32) -> (f32, f32) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    let u = C * (x + 0.044_715 * x * x * x);
    let t = fast_tanh(u);
    let y = 0.5 * x * (1.0 + t);
    let d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044_715 * x * x);
    (y, d)
}

#[inline(always)]
fn relu(x: f32) -> (f32, f32) {
    if x > 0.0 {
        (x, 1.0)
    } else {
        (0.0, 0.0)
    }
}

/// An elementwise activation as a custom op; `f` returns (value, derivative).
fn act_op<T: Tape<f32, Cpu>, F: Fn(f32) -> (f32, f32) + Sync + Send + Copy + 'static>(cx: &mut Ctx<Cpu, T>, x: &FT<Cpu>, f: F) -> R<FT<Cpu>> {
    let xh = host(x);
    let mut y = vec![0.0; xh.len()];
    let out = if T::OWNS_TAPE {
        // keep the derivative (computed alongside the value) instead of the input: the backward
        // pass is then one multiply per element, and the input's buffer can be freed
        let mut dy = vec![0.0; xh.len()];
        y.par_chunks_mut(CHUNK).zip(dy.par_chunks_mut(CHUNK)).zip(xh.par_chunks(CHUNK)).for_each(|((y, dy), x)| {
            for ((o, d), &v) in y.iter_mut().zip(dy.iter_mut()).zip(x) {
                (*o, *d) = f(v);
            }
        });
        drop(xh);
        let out = cx.constant_cached(y, x.shape.clone())?;
        let (xt, ot) = (x.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = take_grad(grads, &ot)?;
            with_grad(grads, &xt, |gx| {
                gx.par_chunks_mut(CHUNK).zip(gy.par_chunks(CHUNK)).zip(dy.par_chunks(CHUNK)).for_each(|((gx, gy), dy)| {
                    for ((a, g), d) in gx.iter_mut().zip(gy).zip(dy) {
                        *a += g * d;
                    }
                });
            })
        });
        out
    } else {
        y.par_chunks_mut(CHUNK).zip(xh.par_chunks(CHUNK)).for_each(|(y, x)| {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = f(v).0;
            }
        });
        cx.constant_cached(y, x.shape.clone())?
    };
    Ok(out)
}

/// Makes glibc's malloc keep freed memory for reuse: every step allocates and frees the same
/// large activation and gradient buffers, which by default go back to the kernel (munmap or heap
/// trimming) and come back as fresh zeroed pages, a page fault per 4 KiB. Skipped where the
/// user tuned malloc through its environment variables. Runs before the first pass (from
/// `Runtime::new`), ideally before worker threads pick their arenas.
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let tuned = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"].iter().any(|v| std::env::var_os(v).is_some());
        if !tuned {
            glibc_keep_freed_memory();
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    // SAFETY: `mallopt` only sets glibc allocator parameters (under the allocator's own lock);
    // it takes plain integers and touches no memory of ours. 32 MiB is glibc's largest allowed
    // mmap threshold; larger blocks are still mapped and unmapped individually.
    #[allow(unsafe_code)]
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 16 << 20);
        // one arena: memory one worker thread frees is reused by the others instead of each
        // thread's arena keeping its own copy of the step's buffers
        mallopt(M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_keep_freed_memory() {}

impl DeviceInfo for Cpu {
    fn prepare_host() {
        keep_freed_memory();
    }
}

impl Backend for Cpu {
    fn pass_forward(rt: &Runtime<Cpu>, store: &ParamStore<Cpu>, inputs: &[HostTensor], train: bool, seed: u64) -> R<Vec<HostTensor>> {
        keep_freed_memory();
        rayon::join(|| rt.forward_here(store, inputs, train, seed), || ()).0
    }
    fn pass_loss_and_grads(rt: &Runtime<Cpu>, store: &ParamStore<Cpu>, batch: &Batch, seed: u64, loss_scale: f32) -> R<(f32, Grads)> {
        keep_freed_memory();
        rayon::join(|| rt.loss_and_grads_here(store, batch, seed, loss_scale), || ()).0
    }
    fn pass_loss(rt: &Runtime<Cpu>, store: &ParamStore<Cpu>, batch: &Batch) -> R<f32> {
        keep_freed_memory();
        rayon::join(|| rt.loss_here(store, batch), || ()).0
    }

    fn linear<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, b: Option<&FT<Self>>) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[x, w]) {
            return kops::linear(cx, x, w, b);
        }
        if !cx.fused {
            return generic::linear(cx, x, w, b);
        }
        let (o, i) = (w.shape[0], w.numel() / w.shape[0].max(1));
        let n = x.rows();
        let xh = host(x);
        let wh = host(w);
        let mut y = vec![0.0; n * o];
        let beta = if let Some(b) = b {
            let bh = host(b);
            y.par_chunks_mut(o.max(1) * 64).for_each(|c| {
                for row in c.chunks_mut(o.max(1)) {
                    row.copy_from_slice(&bh);
                }
            });
            1.0
        } else {
            0.0
        };
        sgemm_par(n, i, o, 1.0, MatRef::rows(&xh, 0, i), MatRef::trans(&wh, 0, i), beta, &mut y, 0, o);
        let out = cx.constant_cached(y, out_shape_last(&x.shape, o))?;
        if T::OWNS_TAPE {
            let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &xt, |gx| {
                    sgemm_par(n, o, i, 1.0, MatRef::rows(&gy, 0, o), MatRef::rows(&wh, 0, i), 1.0, gx, 0, i);
                })?;
                with_grad(grads, &wt, |gw| {
                    sgemm_par(o, n, i, 1.0, MatRef::trans(&gy, 0, o), MatRef::rows(&xh, 0, i), 1.0, gw, 0, i);
                })?;
                if let Some(bt) = bt {
                    let parts: Vec<Vec<f32>> = gy
                        .par_chunks(o.max(1) * 64)
                        .map(|c| {
                            let mut acc = vec![0.0f32; o];
                            for row in c.chunks(o.max(1)) {
                                for (a, g) in acc.iter_mut().zip(row) {
                                    *a += g;
                                }
                            }
                            acc
                        })
                        .collect();
                    let db = sum_in_order(parts, o);
                    with_grad(grads, &bt, |gb| add_into(gb, &db))?;
                }
                Ok(())
            });
        }
        Ok(out)
    }

    fn matmul<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, a: &FT<Self>, b: &FT<Self>) -> R<FT<Self>> {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        if !cx.fused || ra < 2 || rb < 2 || a.shape[ra - 1] != b.shape[rb - 2] {
            return generic::matmul(cx, a, b);
        }
        let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
        let (ba, bb) = (&a.shape[..ra - 2], &b.shape[..rb - 2]);
        let batch = layout::broadcast_shapes(ba, bb)
            .ok_or_else(|| run_err(format!("matmul: batch dims {ba:?} and {bb:?} do not broadcast")))?;
        let nb: usize = batch.iter().product();
        // which a / b matrix each output matrix reads
        let (ia, ib) = if rb == 2 {
            ((0..nb).collect::<Vec<_>>(), vec![0; nb])
        } else {
            (layout::broadcast(ba, &batch), layout::broadcast(bb, &batch))
        };
        let ah = host(a);
        let bh = host(b);
        let mut y = vec![0.0; nb * m * n];
        if rb == 2 {
            sgemm_par(nb * m, k, n, 1.0, MatRef::rows(&ah, 0, k), MatRef::rows(&bh, 0, n), 0.0, &mut y, 0, n);
        } else {
            for bi in 0..nb {
                let (oa, ob) = (ia[bi] * m * k, ib[bi] * k * n);
                sgemm_par(m, k, n, 1.0, MatRef::rows(&ah, oa, k), MatRef::rows(&bh, ob, n), 0.0, &mut y, bi * m * n, n);
            }
        }
        let mut shape = batch;
        shape.extend([m, n]);
        let out = cx.constant_cached(y, shape)?;
        if T::OWNS_TAPE {
            let (at, bt, ot) = (a.t.clone(), b.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &at, |ga| {
                    if rb == 2 {
                        sgemm_par(nb * m, n, k, 1.0, MatRef::rows(&gy, 0, n), MatRef::trans(&bh, 0, n), 1.0, ga, 0, k);
                    } else {
                        for bi in 0..nb {
                            let ob = ib[bi] * k * n;
                            sgemm_par(m, n, k, 1.0, MatRef::rows(&gy, bi * m * n, n), MatRef::trans(&bh, ob, n), 1.0, ga, ia[bi] * m * k, k);
                        }
                    }
                })?;
                with_grad(grads, &bt, |gb| {
                    if rb == 2 {
                        sgemm_par(k, nb * m, n, 1.0, MatRef::trans(&ah, 0, k), MatRef::rows(&gy, 0, n), 1.0, gb, 0, n);
                    } else {
                        for bi in 0..nb {
                            let oa = ia[bi] * m * k;
                            sgemm_par(k, m, n, 1.0, MatRef::trans(&ah, oa, k), MatRef::rows(&gy, bi * m * n, n), 1.0, gb, ib[bi] * k * n, n);
                        }
                    }
                })?;
                Ok(())
            });
        }
        Ok(out)
    }

    fn layer_norm<T: Tape<f32, Self>>(
        cx: &mut Ctx<Self, T>,
        x: &FT<Self>,
        w: &FT<Self>,
        b: Option<&FT<Self>>,
        eps: f32,
    ) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[x, w]) {
            return kops::layer_norm(cx, x, w, b, eps);
        }
        if !cx.fused {
            return generic::layer_norm(cx, x, w, b, eps);
        }
        norm(cx, x, w, b, eps, false)
    }

    fn rms_norm<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, eps: f32) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[x, w]) {
            return kops::rms_norm(cx, x, w, eps);
        }
        if !cx.fused {
            return generic::rms_norm(cx, x, w, eps);
        }
        norm(cx, x, w, None, eps, true)
    }

    fn act<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, act: Activation) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if let Some(kind) = kops::act_kind(act).filter(|_| cx.gpu_kernels && kops::fused(cx, &[x])) {
            return kops::act(cx, x, kind);
        }
        if !cx.fused || matches!(act, Activation::Swiglu | Activation::Geglu) {
            return generic::act(cx, x, act);
        }
        match act {
            Activation::Gelu => act_op(cx, x, gelu_tanh),
            Activation::GeluExact => act_op(cx, x, mathf::gelu_erf),
            Activation::Relu => act_op(cx, x, relu),
            _ => act_op(cx, x, mathf::silu),
        }
    }

    fn add<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, a: &FT<Self>, b: &FT<Self>) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[a, b]) {
            return kops::add(cx, a, b);
        }
        if !cx.fused {
            return Ok(cx.zip(a, b, |a, b| a + b));
        }
        let (ah, bh) = (host(a), host(b));
        if ah.len() != bh.len() {
            return Err(run_err(format!("add: expected operands of equal size, found {} and {}", ah.len(), bh.len())));
        }
        let y: Vec<f32> = ah.par_iter().zip(bh.par_iter()).with_min_len(CHUNK).map(|(u, v)| u + v).collect();
        let out = cx.constant_cached(y, a.shape.clone())?;
        if T::OWNS_TAPE {
            let (at, bt, ot) = (a.t.clone(), b.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &at, |g| add_into(g, &gy))?;
                with_grad(grads, &bt, |g| add_into(g, &gy))
            });
        }
        Ok(out)
    }

    fn attention_core<T: Tape<f32, Self>>(
        cx: &mut Ctx<Self, T>,
        q: Cols<Self>,
        k: Cols<Self>,
        v: Cols<Self>,
        cfg: CoreCfg,
        mask: Option<&BT>,
        bias: Option<&FT<Self>>,
    ) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[q.x, k.x, v.x]) {
            return kops::attention_core(cx, q, k, v, cfg, mask, bias);
        }
        if !cx.fused {
            return generic::attention_core(cx, q, k, v, cfg, mask, bias);
        }
        attention(cx, q, k, v, cfg, mask, bias)
    }

    fn rope<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: Cols<Self>, heads: usize, hd: usize, theta: f32) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[x.x]) {
            return kops::rope(cx, x, heads, hd, theta);
        }
        if !cx.fused {
            return generic::rope(cx, x, heads, hd, theta);
        }
        let (b, l, w) = (x.x.shape[0], x.x.shape[1], x.row_stride());
        let (off, width, half) = (x.off, heads * hd, hd / 2);
        let xh = host(x.x);
        let (cos, sin) = rope_tables(l, hd, theta);
        let mut y = vec![0.0; b * l * width];
        y.par_chunks_mut(width.max(1)).enumerate().for_each(|(r, row)| {
            let p = r % l;
            let src = &xh[r * w + off..r * w + off + width];
            for h in 0..heads {
                for d in 0..hd {
                    let pd = if d < half { d + half } else { d - half };
                    row[h * hd + d] = src[h * hd + d] * cos[p * hd + d] + src[h * hd + pd] * sin[p * hd + d];
                }
            }
        });
        let out = cx.constant_cached(y, vec![b, l, width])?;
        if T::OWNS_TAPE {
            let (xt, ot) = (x.x.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &xt, |gx| {
                    gx.par_chunks_mut(w.max(1)).enumerate().for_each(|(r, grow)| {
                        let p = r % l;
                        let g = &gy[r * width..(r + 1) * width];
                        let dst = &mut grow[off..off + width];
                        for h in 0..heads {
                            for d in 0..hd {
                                let pd = if d < half { d + half } else { d - half };
                                let gd = g[h * hd + d];
                                dst[h * hd + d] += gd * cos[p * hd + d];
                                dst[h * hd + pd] += gd * sin[p * hd + d];
                            }
                        }
                    });
                })
            });
        }
        Ok(out)
    }

    fn embedding<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, w: &FT<Self>, ids: &IT) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[w]) && !ids.data.is_empty() {
            return kops::embedding(cx, w, ids);
        }
        if !cx.fused {
            return generic::embedding(cx, w, ids);
        }
        let (num, dim) = (w.shape[0], w.numel() / w.shape[0].max(1));
        let idx = check_ids(ids, num, "embedding")?;
        let wh = host(w);
        let mut y = vec![0.0; idx.len() * dim];
        y.par_chunks_mut(dim.max(1)).zip(idx.par_iter()).for_each(|(row, &i)| row.copy_from_slice(&wh[i * dim..(i + 1) * dim]));
        let mut shape = ids.shape.clone();
        shape.push(dim);
        let out = cx.constant_cached(y, shape)?;
        if T::OWNS_TAPE {
            let (wt, ot) = (w.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &wt, |gw| {
                    for (r, &i) in idx.iter().enumerate() {
                        for (a, g) in gw[i * dim..(i + 1) * dim].iter_mut().zip(&gy[r * dim..(r + 1) * dim]) {
                            *a += g;
                        }
                    }
                })
            });
        }
        Ok(out)
    }

    fn cross_entropy<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, logits: &FT<Self>, targets: &[i64]) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[logits]) {
            return kops::cross_entropy(cx, logits, targets);
        }
        if !cx.fused {
            return generic::cross_entropy(cx, logits, targets);
        }
        let (rows, v) = (logits.rows(), logits.last());
        let count = check_targets(targets, rows, v)?;
        if count == 0 {
            return cx.constant(vec![0.0], vec![]);
        }
        let lh = host(logits);
        let targets = targets.to_vec();
        // per row: log-sum-exp
        let lse: Vec<f32> = lh
            .par_chunks(v.max(1))
            .map(|row| {
                mathf::log_sum_exp(row)
            })
            .collect();
        let total: f64 = targets
            .iter()
            .enumerate()
            .filter(|(_, &t)| t != -100)
            .map(|(r, &t)| (lse[r] - lh[r * v + t as usize]) as f64)
            .sum();
        let out = cx.constant(vec![(total / count as f64) as f32], vec![])?;
        if T::OWNS_TAPE {
            let (lt, ot) = (logits.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gl = take_grad(grads, &ot)?.first().copied().unwrap_or(0.0) / count as f32;
                with_grad(grads, &lt, |g| {
                    g.par_chunks_mut(v.max(1)).enumerate().for_each(|(r, grow)| {
                        let t = targets[r];
                        if t == -100 {
                            return;
                        }
                        let (row, m) = (&lh[r * v..(r + 1) * v], lse[r]);
                        for (d, &x) in grow.iter_mut().zip(row) {
                            *d += gl * mathf::exp(x - m);
                        }
                        grow[t as usize] -= gl;
                    });
                })
            });
        }
        Ok(out)
    }

    fn dropout<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, p: f32) -> R<FT<Self>> {
        #[cfg(feature = "emu")]
        if cx.gpu_kernels && kops::fused(cx, &[x]) {
            return kops::dropout(cx, x, p);
        }
        if !cx.fused {
            return generic::dropout(cx, x, p);
        }
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = cx.rng.keep_mask(x.numel(), p);
        let s = 1.0 / (1.0 - p);
        let mut y = host(x).to_vec();
        for (v, &k) in y.iter_mut().zip(&keep) {
            *v = if k { *v * s } else { 0.0 };
        }
        let out = cx.constant_cached(y, x.shape.clone())?;
        if T::OWNS_TAPE {
            let (xt, ot) = (x.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &xt, |gx| {
                    for ((d, g), &k) in gx.iter_mut().zip(&gy).zip(&keep) {
                        if k {
                            *d += g * s;
                        }
                    }
                })
            });
        }
        Ok(out)
    }

    fn broadcast<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, shape: &[usize]) -> R<FT<Self>> {
        if !cx.fused {
            return generic::broadcast(cx, x, shape);
        }
        let idx = layout::broadcast(&x.shape, shape);
        Self::gather(cx, x, idx, shape.to_vec())
    }

    fn gather<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, idx: Vec<usize>, shape: Vec<usize>) -> R<FT<Self>> {
        if !cx.fused {
            return cx.gather(x, idx, shape);
        }
        let n = x.numel();
        if let Some(bad) = idx.iter().find(|&&i| i >= n) {
            return Err(run_err(format!("internal: gather index {bad} out of range for {n} elements")));
        }
        let xh = host(x);
        let y: Vec<f32> = idx.par_iter().map(|&i| xh[i]).collect();
        let out = cx.constant_cached(y, shape)?;
        if T::OWNS_TAPE {
            let (xt, ot) = (x.t.clone(), out.t.clone());
            cx.tape.add_backward_op(move |grads| {
                let gy = take_grad(grads, &ot)?;
                with_grad(grads, &xt, |gx| {
                    for (&i, g) in idx.iter().zip(&gy) {
                        gx[i] += g;
                    }
                })
            });
        }
        Ok(out)
    }
}

/// Layer norm (`rms == false`) or RMS norm over the last axis, rows in parallel.
fn norm<T: Tape<f32, Cpu>>(cx: &mut Ctx<Cpu, T>, x: &FT<Cpu>, w: &FT<Cpu>, b: Option<&FT<Cpu>>, eps: f32, rms: bool) -> R<FT<Cpu>> {
    let n = x.last().max(1);
    let rows = x.rows();
    let xh = host(x);
    let wh = host(w);
    let bh = b.map(host);
    let mut y = vec![0.0; xh.len()];
    // (mean, rstd) per row; rows in blocks of about CHUNK elements per parallel task
    let mut stats = vec![(0.0f32, 0.0f32); rows];
    let rows_per = (CHUNK / n).max(1);
    {
        let (w, bias): (&[f32], Option<&[f32]>) = (&wh, bh.as_deref());
        y.par_chunks_mut(rows_per * n).zip(xh.par_chunks(rows_per * n)).zip(stats.par_chunks_mut(rows_per)).for_each(|((yc, xc), sc)| {
            for ((yr, xr), st) in yc.chunks_exact_mut(n).zip(xc.chunks_exact(n)).zip(sc.iter_mut()) {
                let mean = if rms { 0.0 } else { mathf::sum(xr) / n as f32 };
                let var = mathf::sum_sq_dev(xr, mean) / n as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                *st = (mean, rstd);
                match bias {
                    Some(bias) => {
                        for (((o, &v), &g), &c) in yr.iter_mut().zip(xr).zip(w).zip(bias) {
                            *o = mathf::madd((v - mean) * rstd, g, c);
                        }
                    }
                    None => {
                        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                            *o = (v - mean) * rstd * g;
                        }
                    }
                }
            }
        });
    }
    let out = cx.constant_cached(y, x.shape.clone())?;
    if T::OWNS_TAPE {
        let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = take_grad(grads, &ot)?;
            let w: &[f32] = &wh;
            with_grad(grads, &xt, |gx| {
                gx.par_chunks_mut(rows_per * n).zip(gy.par_chunks(rows_per * n)).zip(xh.par_chunks(rows_per * n)).zip(stats.par_chunks(rows_per)).for_each(
                    |(((gxc, gyc), xc), sc)| {
                        for (((gxr, gyr), xr), &(mean, rstd)) in gxc.chunks_exact_mut(n).zip(gyc.chunks_exact(n)).zip(xc.chunks_exact(n)).zip(sc) {
                            // with g = gy * w and xhat = (x - mean) * rstd:
                            // s1 = mean(g), s2 = mean(g * xhat) = (sum(g x) - mean sum(g)) rstd / n
                            let gw = mathf::dot(gyr, w);
                            let s1 = if rms { 0.0 } else { gw / n as f32 };
                            let s2 = (mathf::dot3(gyr, w, xr) - mean * gw) * rstd / n as f32;
                            for (((d, &g), &wj), &v) in gxr.iter_mut().zip(gyr).zip(w).zip(xr) {
                                let xhat = (v - mean) * rstd;
                                *d += rstd * (g * wj - s1 - xhat * s2);
                            }
                        }
                    },
                );
            })?;
            let parts: Vec<(Vec<f32>, Vec<f32>)> = gy
                .par_chunks(rows_per * n)
                .zip(xh.par_chunks(rows_per * n))
                .enumerate()
                .map(|(c, (gyc, xc))| {
                    let mut dw = vec![0.0f32; n];
                    let mut db = vec![0.0f32; n];
                    for (r, (gyr, xr)) in gyc.chunks(n).zip(xc.chunks(n)).enumerate() {
                        let (mean, rstd) = stats[c * rows_per + r];
                        for (((a, d), &g), &v) in dw.iter_mut().zip(db.iter_mut()).zip(gyr).zip(xr) {
                            *a += g * (v - mean) * rstd;
                            *d += g;
                        }
                    }
                    (dw, db)
                })
                .collect();
            let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
            let (dw, db) = (sum_in_order(dws, n), sum_in_order(dbs, n));
            with_grad(grads, &wt, |g| add_into(g, &dw))?;
            if let Some(bt) = bt {
                with_grad(grads, &bt, |g| add_into(g, &db))?;
            }
            Ok(())
        });
    }
    Ok(out)
}

/// Queries and keys per head up to which the attention products use the unpacked kernel.
const SMALL_CORE: usize = 64;

/// Query rows per block when skipping the causal mask's upper triangle.
const CAUSAL_BLOCK: usize = 64;

/// Whether the attention core skips key blocks no query in a row block can see: causal
/// self-attention long enough for the blocks to pay for themselves.
fn causal_blocks(c: &CoreCfg) -> bool {
    c.causal && c.t == c.s && c.t > CAUSAL_BLOCK
}

/// Query row blocks `(r0, r1, keys)`: rows `r0..r1` read keys `0..keys` (every key without
/// causal blocking; keys past `keys` are masked for all of these rows).
fn row_blocks(c: &CoreCfg) -> Vec<(usize, usize, usize)> {
    if !causal_blocks(c) {
        return vec![(0, c.t, c.s)];
    }
    (0..c.t).step_by(CAUSAL_BLOCK).map(|r0| {
        let r1 = (r0 + CAUSAL_BLOCK).min(c.t);
        (r0, r1, r1)
    }).collect()
}

/// Key column blocks `(c0, c1, first_row)`: keys `c0..c1` are seen only by query rows
/// `first_row..t` (every row without causal blocking).
fn col_blocks(c: &CoreCfg) -> Vec<(usize, usize, usize)> {
    if !causal_blocks(c) {
        return vec![(0, c.s, 0)];
    }
    (0..c.s).step_by(CAUSAL_BLOCK).map(|c0| (c0, (c0 + CAUSAL_BLOCK).min(c.s), c0)).collect()
}

/// Takes the gradient buffer of `t` out of the store (zeros if it has none yet), to be put back
/// with [`put_grad`]: lets one kernel write several inputs' gradients at once.
fn take_buf(grads: &mut Grads, t: &Flat<Cpu>, len: usize) -> Result<Vec<f32>, CpuError> {
    let buf = take_grad(grads, t)?;
    if buf.len() != len {
        // the buffer was already taken: two inputs share one tensor under different ids
        return Err(CpuError::WrongNumElements);
    }
    Ok(buf)
}

fn put_grad(grads: &mut Grads, t: &Flat<Cpu>, buf: Vec<f32>) -> Result<(), CpuError> {
    **grads.get_or_alloc_mut(t)? = buf;
    Ok(())
}

/// Scores, masks and softmax of one head: `p [T, S]` holds the probabilities on return (entries
/// a causal block skipped stay as they were, 0). `rows` is [`row_blocks`] of `c`.
#[allow(clippy::too_many_arguments)]
fn head_probs(
    c: &CoreCfg,
    rows: &[(usize, usize, usize)],
    mm: MatMul,
    p: &mut [f32],
    q: MatRef,
    k: MatRef,
    bias: Option<&[f32]>,
    key_ok: Option<&[bool]>,
) {
    let (t, s) = (c.t, c.s);
    for &(r0, r1, cols) in rows {
        mm(r1 - r0, c.hd, cols, c.scale, MatRef { off: q.off + r0 * q.rs, ..q }, k, 0.0, p, r0 * s, s);
    }
    for i in 0..t {
        let row = &mut p[i * s..(i + 1) * s];
        if let Some(bb) = bias {
            for (x, bv) in row.iter_mut().zip(&bb[i * s..(i + 1) * s]) {
                *x += bv;
            }
        }
        // causal: keys past `i` are masked for this row, so they are simply 0
        let lim = if c.causal { (i + 1).min(s) } else { s };
        row[lim..].iter_mut().for_each(|x| *x = 0.0);
        let row = &mut row[..lim];
        if c.window > 0 || key_ok.is_some() {
            for (j, x) in row.iter_mut().enumerate() {
                if !(c.allowed(i, j) && key_ok.map(|ok| ok[j]).unwrap_or(true)) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        mathf::softmax_in_place(row);
    }
}

/// A matrix product kernel (`sgemm` or `sgemm_small`).
type MatMul = fn(usize, usize, usize, f32, MatRef, MatRef, f32, &mut [f32], usize, usize);

/// The whole attention core, one batch element per parallel task (every head in turn, with
/// buffers reused across heads): scores by `sgemm`, bias, causal / window / padding masks and
/// softmax fused per row, dropout, then `P @ V` written straight into the output's columns. The
/// backward pass likewise accumulates `dq`, `dk` and `dv` straight into the inputs' gradients.
fn attention<T: Tape<f32, Cpu>>(
    cx: &mut Ctx<Cpu, T>,
    q: Cols<Cpu>,
    k: Cols<Cpu>,
    v: Cols<Cpu>,
    c: CoreCfg,
    mask: Option<&BT>,
    bias: Option<&FT<Cpu>>,
) -> R<FT<Cpu>> {
    let (b, t, s, h, hd) = (c.b, c.t, c.s, c.heads, c.hd);
    let group = h / c.kv_heads.max(1);
    let (wq, wk, wv) = (q.row_stride(), k.row_stride(), v.row_stride());
    let (qo, ko, vo) = (q.off, k.off, v.off);
    let (same_qk, same_qv, same_kv) = (k.x.uid == q.x.uid, v.x.uid == q.x.uid, v.x.uid == k.x.uid);
    let qh = host(q.x);
    let kh = if same_qk { qh.clone() } else { host(k.x) };
    let vh = if same_qv {
        qh.clone()
    } else if same_kv {
        kh.clone()
    } else {
        host(v.x)
    };
    let bh: Option<HostData> = bias.map(host);
    let mk: Option<Arc<Vec<bool>>> = mask.map(|m| m.data.clone());
    let seed = cx.rng.next_u64();
    let width = h * hd;
    let ts = t * s;
    // nothing to attend to (or from): the output is zeros
    let empty = b * t * s * h * hd == 0;
    // short sequences: the unpacked kernel; long ones: blocked products (and causal skipping)
    let mm: MatMul = if c.t <= SMALL_CORE && c.s <= SMALL_CORE { sgemm_small } else { sgemm };
    let (rows, cols) = (row_blocks(&c), col_blocks(&c));
    let mut probs = vec![0.0f32; b * h * ts];
    // dropout scale per score (0 or 1/(1-p)), when dropout is on
    let mut drops: Option<Vec<f32>> = (c.dropout > 0.0).then(|| vec![0.0f32; b * h * ts]);
    let mut y = vec![0.0f32; b * t * width];
    if !empty {
        let dchunks: Vec<Option<&mut [f32]>> = match &mut drops {
            Some(d) => d.chunks_mut(h * ts).map(Some).collect(),
            None => (0..b).map(|_| None).collect(),
        };
        y.par_chunks_mut(t * width).zip(probs.par_chunks_mut(h * ts)).zip(dchunks).enumerate().for_each(|(bi, ((yb, pb), mut db))| {
            let mut pd = vec![0.0f32; if db.is_some() { ts } else { 0 }];
            let key_ok = mk.as_ref().map(|m| &m[bi * s..(bi + 1) * s]);
            for hi in 0..h {
                let g = hi / group;
                let p = &mut pb[hi * ts..(hi + 1) * ts];
                let (qb, kb, vb) = (bi * t * wq + qo + hi * hd, bi * s * wk + ko + g * hd, bi * s * wv + vo + g * hd);
                let hb = bh.as_ref().map(|x| &x[hi * ts..(hi + 1) * ts]);
                head_probs(&c, &rows, mm, p, MatRef::rows(&qh, qb, wq), MatRef::trans(&kh, kb, wk), hb, key_ok);
                let pv: &[f32] = match db.as_deref_mut() {
                    Some(db) => {
                        let d = &mut db[hi * ts..(hi + 1) * ts];
                        let mut rng = Rng::new(seed ^ ((bi * h + hi) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        let sc = 1.0 / (1.0 - c.dropout);
                        for ((dm, x), &pp) in d.iter_mut().zip(pd.iter_mut()).zip(p.iter()) {
                            *dm = if rng.uniform() >= c.dropout { sc } else { 0.0 };
                            *x = pp * *dm;
                        }
                        &pd
                    }
                    None => p,
                };
                for &(r0, r1, keys) in &rows {
                    mm(r1 - r0, keys, hd, 1.0, MatRef::rows(pv, r0 * s, s), MatRef::rows(&vh, vb, wv), 0.0, yb, r0 * width + hi * hd, width);
                }
            }
        });
    }
    let out = cx.constant_cached(y, vec![b, t, width])?;
    if T::OWNS_TAPE && !empty {
        let (qt, kt, vt, ot) = (q.x.t.clone(), k.x.t.clone(), v.x.t.clone(), out.t.clone());
        let bias_t = bias.map(|x| x.t.clone());
        let (lq, lk, lv) = (q.x.numel(), k.x.numel(), v.x.numel());
        cx.tape.add_backward_op(move |grads| {
            let gy = take_grad(grads, &ot)?;
            // the distinct gradient buffers (a fused projection gives q, k and v one tensor)
            let mut gq = take_buf(grads, &qt, lq)?;
            let mut gk = if same_qk { None } else { Some(take_buf(grads, &kt, lk)?) };
            let mut gv = if same_qv || same_kv { None } else { Some(take_buf(grads, &vt, lv)?) };
            let ki = if same_qk { 0 } else { 1 };
            let vi = if same_qv {
                0
            } else if same_kv {
                ki
            } else {
                ki + 1
            };
            // per batch element: its rows of each buffer
            let mut slots: Vec<Vec<&mut [f32]>> = (0..b).map(|_| Vec::with_capacity(3)).collect();
            for (slot, ch) in slots.iter_mut().zip(gq.chunks_mut(t * wq)) {
                slot.push(ch);
            }
            for (buf, rows) in [(gk.as_mut(), s * wk), (gv.as_mut(), s * wv)] {
                if let Some(buf) = buf {
                    for (slot, ch) in slots.iter_mut().zip(buf.chunks_mut(rows)) {
                        slot.push(ch);
                    }
                }
            }
            let with_bias = bias_t.is_some();
            let dbias: Vec<Vec<f32>> = slots
                .into_par_iter()
                .enumerate()
                .map(|(bi, mut bufs)| {
                    let mut dp = vec![0.0f32; ts];
                    let mut pd = vec![0.0f32; if drops.is_some() { ts } else { 0 }];
                    let mut dbias = vec![0.0f32; if with_bias { h * ts } else { 0 }];
                    for hi in 0..h {
                        let g = hi / group;
                        let at = (bi * h + hi) * ts;
                        let p = &probs[at..at + ts];
                        let drop = drops.as_ref().map(|d| &d[at..at + ts]);
                        let gob = bi * t * width + hi * hd;
                        let (qb, kb, vb) = (bi * t * wq + qo + hi * hd, bi * s * wk + ko + g * hd, bi * s * wv + vo + g * hd);
                        // dP' = dO V^T (causal: only the blocks the forward computed; the rest is 0,
                        // reset here since `dp` is reused across heads)
                        if causal_blocks(&c) {
                            dp.fill(0.0);
                        }
                        for &(r0, r1, keys) in &rows {
                            mm(r1 - r0, hd, keys, 1.0, MatRef::rows(&gy, gob + r0 * width, width), MatRef::trans(&vh, vb, wv), 0.0, &mut dp, r0 * s, s);
                        }
                        let pv: &[f32] = match drop {
                            Some(d) => {
                                pd.iter_mut().zip(p.iter().zip(d)).for_each(|(x, (a, m))| *x = a * m);
                                &pd
                            }
                            None => p,
                        };
                        // dV += P'^T dO over the query rows that see each key block
                        for &(c0, c1, r) in &cols {
                            let dst = &mut *bufs[vi];
                            mm(c1 - c0, t - r, hd, 1.0, MatRef::trans(pv, r * s + c0, s), MatRef::rows(&gy, gob + r * width, width), 1.0, dst, c0 * wv + vo + g * hd, wv);
                        }
                        // dS = P * (dP - rowsum(P * dP))
                        if let Some(d) = drop {
                            dp.iter_mut().zip(d).for_each(|(x, m)| *x *= m);
                        }
                        for i in 0..t {
                            let pr = &p[i * s..(i + 1) * s];
                            let dr = &mut dp[i * s..(i + 1) * s];
                            let dot = mathf::dot(pr, dr);
                            for (x, &pp) in dr.iter_mut().zip(pr) {
                                *x = pp * (*x - dot);
                            }
                        }
                        // dQ += scale dS K, dK += scale dS^T Q
                        for &(r0, r1, keys) in &rows {
                            let dst = &mut *bufs[0];
                            mm(r1 - r0, keys, hd, c.scale, MatRef::rows(&dp, r0 * s, s), MatRef::rows(&kh, kb, wk), 1.0, dst, r0 * wq + qo + hi * hd, wq);
                        }
                        for &(c0, c1, r) in &cols {
                            let dst = &mut *bufs[ki];
                            mm(c1 - c0, t - r, hd, c.scale, MatRef::trans(&dp, r * s + c0, s), MatRef::rows(&qh, qb + r * wq, wq), 1.0, dst, c0 * wk + ko + g * hd, wk);
                        }
                        if with_bias {
                            mathf::axpy(&mut dbias[hi * ts..(hi + 1) * ts], 1.0, &dp);
                        }
                    }
                    dbias
                })
                .collect::<Vec<_>>();
            let dbias = sum_in_order(dbias, if with_bias { h * ts } else { 0 });
            put_grad(grads, &qt, gq)?;
            if let Some(gk) = gk {
                put_grad(grads, &kt, gk)?;
            }
            if let Some(gv) = gv {
                put_grad(grads, &vt, gv)?;
            }
            if let Some(bt) = &bias_t {
                with_grad(grads, bt, |gb| add_into(gb, &dbias))?;
            }
            Ok(())
        });
    }
    Ok(out)
}
