//! Fused CUDA kernels for the hot operations in `f32` (feature `cuda`): the GPU's counterpart of
//! `cpu.rs`, running tfm's own kernels (`tfm-kernels`) and cuBLAS products.
//!
//! dfdx 0.13 hands out no tensor's device storage, only the buffers of its gradient store
//! (`Gradients::get_or_alloc_mut`). So:
//! - a kernel writes its output into a gradient buffer of a size-only probe (a [`Slot`]), the
//!   value's dfdx tensor is copied from there (`Gradients::get`, one device copy), and the value
//!   keeps the slot (`FT::dev`) so that the next kernel reads it in place;
//! - a value no kernel made (a weight, the output of a dfdx op) is copied into a slot once per
//!   pass by a small backward pass: the gradient of `sum(probe * x)` with respect to `probe` is
//!   exactly `x` ([`dev_of`]);
//! - backward closures go on the run's tape, as on the CPU: they take the output's gradient
//!   buffer and the inputs' gradient buffers from the store by address and add into them.
//!
//! Work is queued on the legacy default stream that dfdx's device also uses, so kernels, cuBLAS
//! calls and dfdx's own ops run in order; host data (token ids, targets) is uploaded
//! asynchronously and kept alive by the closures that read it. Anything the kernels do not cover
//! (masks, biases and windows in attention, other activations, half precision, `fused = false`)
//! takes the generic dfdx path.

use crate::backend::{check_ids, check_targets, generic, Backend, Cols, CoreCfg};
use crate::cuda_kernels::{device, func, ByValue};
use crate::kernels::{self, AttnDims, Launch};
use crate::value::{fresh_uid, Ctx, DevPtr, Flat, BT, FT, IT};
use crate::{dev_err, run_err, RuntimeError};
use cudarc::cublas::{result as blas, sys::cublasOperation_t, CudaBlas};
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DeviceRepr, DriverError, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;
use std::sync::{Arc, OnceLock};
use tfm_ir::Activation;

type R<X> = Result<X, RuntimeError>;
type G = Gradients<f32, Cuda>;
type Alloc = Arc<dyn Fn(&mut G) -> Result<u64, CudaError>>;
type Getter = Arc<dyn Fn(&G) -> Flat<Cuda>>;

/// A device buffer the kernels write: the gradient buffer of a probe in a store of its own.
struct Slot {
    grads: G,
    get: Getter,
}

/// Keeps a store of gradients (and so its buffers) alive.
struct Keep(#[allow(dead_code)] G);

/// A kernel (or the device handle) that failed to load, as the device error that backward
/// closures return. (The forward pass, which runs first, reports the real cause.)
fn missing(_what: &str) -> CudaError {
    CudaError::Driver(DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_FOUND))
}

fn cfg(l: Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: (l.grid.0, l.grid.1, 1), block_dim: (l.block, 1, 1), shared_mem_bytes: 0 }
}

/// Queues kernel `name` on `l`.
///
/// Every launch below passes device addresses of live buffers (slots, gradient buffers and
/// scratch slices held by the caller or its closure until the work is queued behind later use)
/// with the element counts the kernel indexes, as `tests/kernels.rs` checks on the emulator.
fn launch<P>(name: &str, l: Launch, args: P) -> Result<(), CudaError>
where
    CudaFunction: LaunchAsync<P>,
{
    let f = func(name).map_err(|_| missing(name))?;
    // SAFETY: see above; the argument lists match the kernels' signatures in kernels.cu.
    #[allow(unsafe_code)]
    unsafe { f.launch(cfg(l), args) }.map_err(CudaError::from)
}

fn blas_handle() -> Result<&'static CudaBlas, CudaError> {
    static BLAS: OnceLock<Option<CudaBlas>> = OnceLock::new();
    BLAS.get_or_init(|| device().ok().and_then(|d| CudaBlas::new(d.clone()).ok()))
        .as_ref()
        .ok_or_else(|| missing("cublas"))
}

/// Row-major `C[m, n] = op(A) op(B) + beta C`, `op` a transpose where asked; leading dims in
/// elements. (cuBLAS is column-major: it computes `C^T = op(B)^T op(A)^T`.)
#[allow(clippy::too_many_arguments)]
fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: u64, lda: usize, b: u64, ldb: usize, beta: f32, c: u64, ldc: usize) -> Result<(), CudaError> {
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let h = blas_handle()?;
    let (alpha, beta) = (1.0f32, beta);
    let i = |x: usize| x as std::os::raw::c_int;
    // SAFETY: a, b and c address live buffers of at least the rows x leading-dim extents the
    // callers pass; alpha and beta are host scalars that outlive the call.
    #[allow(unsafe_code)]
    unsafe {
        blas::sgemm(*h.handle(), op(tb), op(ta), i(n), i(m), i(k), &alpha, b as *const f32, i(ldb), a as *const f32, i(lda), &beta, c as *mut f32, i(ldc))
    }
    .map_err(CudaError::from)
}

/// The size-only probe of `n` elements (a dfdx ghost: id, length and shape, no storage), as
/// closures that allocate its gradient buffer in a store and take a tensor from it.
fn probe<T>(cx: &Ctx<Cuda, T>, n: usize) -> R<(Alloc, Getter)> {
    let dev = cx.dev.clone();
    cx.consts.get(format!("cuda slot probe {n}"), move || {
        let t: Flat<Cuda> = dev.try_zeros_like(&(n,)).map_err(dev_err)?;
        let ghost = Arc::new(t.ghost());
        let g2 = ghost.clone();
        let alloc: Alloc = Arc::new(move |grads: &mut G| Ok(*grads.get_or_alloc_mut(&*ghost)?.device_ptr()));
        let get: Getter = Arc::new(move |grads: &G| grads.get(&*g2));
        Ok((alloc, get))
    })
}

/// A zeroed buffer of `n` elements for a kernel's output, and its address.
fn slot<T>(cx: &Ctx<Cuda, T>, n: usize) -> R<(Slot, u64)> {
    let (alloc, get) = probe(cx, n.max(1))?;
    let mut grads = G::leaky();
    let ptr = alloc(&mut grads).map_err(dev_err)?;
    Ok((Slot { grads, get }, ptr))
}

/// The value a kernel wrote into `slot`: its dfdx tensor (a copy) and the slot it came from.
fn finish(slot: Slot, ptr: u64, shape: Vec<usize>) -> FT<Cuda> {
    let t = (slot.get)(&slot.grads);
    let len = shape.iter().product();
    FT { t, shape, uid: fresh_uid(), host: None, dev: Some(DevPtr { ptr, len, keep: Arc::new(slot) }) }
}

// SAFETY: `FT` (which holds these through `DevPtr`) must be `Send` for the CPU's threads, but a
// slot or a kept store only ever lives in values of a `Cuda` runtime, and `Cuda` itself is neither
// `Send` nor `Sync` (its streams are raw pointers): such values never leave the thread that runs
// the pass, so these impls are never exercised across threads.
#[allow(unsafe_code)]
unsafe impl Send for Slot {}
#[allow(unsafe_code)]
unsafe impl Sync for Slot {}
#[allow(unsafe_code)]
unsafe impl Send for Keep {}
#[allow(unsafe_code)]
unsafe impl Sync for Keep {}

/// The device address of `x`'s elements: its own slot when a kernel made it, else a copy made
/// once per pass (the gradient of `sum(probe * x)` with respect to `probe`, which is `x` times
/// one, exactly).
pub(crate) fn dev_of<T>(cx: &mut Ctx<Cuda, T>, x: &FT<Cuda>) -> R<DevPtr> {
    let n = x.numel();
    if let Some(d) = x.dev.as_ref().filter(|d| d.len == n) {
        return Ok(d.clone());
    }
    if let Some(d) = cx.exported.get(&x.uid).filter(|d| d.len == n) {
        return Ok(d.clone());
    }
    let probe: Flat<Cuda> = cx.dev.try_zeros_like(&(n,)).map_err(dev_err)?;
    let loss = probe.clone().traced(G::leaky()).try_mul(x.t.clone()).and_then(|y| y.try_sum::<(), Axis<0>>()).map_err(dev_err)?;
    let mut grads = loss.try_backward().map_err(dev_err)?;
    let ptr = *grads.get_or_alloc_mut(&probe).map_err(dev_err)?.device_ptr();
    let d = DevPtr { ptr, len: n, keep: Arc::new(Keep(grads)) };
    cx.exported.insert(x.uid, d.clone());
    Ok(d)
}

/// The address of `t`'s gradient buffer (allocated, zeroed, if `t` has none yet).
fn grad_of(grads: &mut G, t: &Flat<Cuda>) -> Result<u64, CudaError> {
    Ok(*grads.get_or_alloc_mut(t)?.device_ptr())
}

/// A scratch buffer of our own (statistics kept for the backward pass, partial sums).
fn scratch(n: usize) -> Result<CudaSlice<f32>, CudaError> {
    device().map_err(|_| missing("device"))?.alloc_zeros::<f32>(n.max(1)).map_err(CudaError::from)
}

/// Host data on the device, copied asynchronously (the slice keeps the host buffer until then).
fn upload<X: DeviceRepr + Unpin>(v: Vec<X>) -> Result<CudaSlice<X>, CudaError> {
    device().map_err(|_| missing("device"))?.htod_copy(v).map_err(CudaError::from)
}

fn addr<X>(s: &CudaSlice<X>) -> u64 {
    *s.device_ptr()
}

/// Column sums of `a [rows, cols]` times `scale`, added into `out [cols]`.
fn col_sums(out: u64, a: u64, rows: usize, cols: usize, scale: f32) -> Result<(), CudaError> {
    let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
    let part = scratch(chunks * cols)?;
    launch("col_sum_partials", lp, (addr(&part), a, rows as i32, cols as i32, per as i32))?;
    launch("col_sum_finish", lf, (out, addr(&part), chunks as i32, cols as i32, scale))
}

fn err(e: CudaError) -> RuntimeError {
    dev_err(e)
}

pub(crate) fn linear<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, x: &FT<Cuda>, w: &FT<Cuda>, b: Option<&FT<Cuda>>) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let (o, i) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let n = x.rows();
    if x.last() != i || b.is_some_and(|b| b.numel() != o) {
        return generic::linear(cx, x, w, b);
    }
    let (xd, wd) = (dev_of(cx, x)?, dev_of(cx, w)?);
    let bd = b.map(|b| dev_of(cx, b)).transpose()?;
    let (s, y) = slot(cx, n * o)?;
    let beta = if let Some(bd) = &bd {
        launch("fill_rows", kernels::elementwise(n * o), (y, bd.ptr, n as i64, o as i32)).map_err(err)?;
        1.0
    } else {
        0.0
    };
    gemm(false, true, n, o, i, xd.ptr, i, wd.ptr, i, beta, y, o).map_err(err)?;
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = o;
    }
    let out = finish(s, y, shape);
    if T::OWNS_TAPE {
        let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of(grads, &ot)?;
            let gx = grad_of(grads, &xt)?;
            gemm(false, false, n, i, o, gy, o, wd.ptr, i, 1.0, gx, i)?;
            let gw = grad_of(grads, &wt)?;
            gemm(true, false, o, i, n, gy, o, xd.ptr, i, 1.0, gw, i)?;
            if let Some(bt) = bt {
                let gb = grad_of(grads, &bt)?;
                col_sums(gb, gy, n, o, 1.0)?;
            }
            Ok(())
        });
    }
    Ok(out)
}

pub(crate) fn layer_norm<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, x: &FT<Cuda>, w: &FT<Cuda>, b: Option<&FT<Cuda>>, eps: f32) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let (rows, cols) = (x.rows(), x.last());
    if w.numel() != cols || b.is_some_and(|b| b.numel() != cols) {
        return generic::layer_norm(cx, x, w, b, eps);
    }
    let (xd, wd) = (dev_of(cx, x)?, dev_of(cx, w)?);
    let bd = b.map(|b| dev_of(cx, b)).transpose()?;
    let (s, y) = slot(cx, rows * cols)?;
    let (mean, rstd) = (scratch(rows).map_err(err)?, scratch(rows).map_err(err)?);
    let l = kernels::warp_per_row(rows);
    let bp = bd.as_ref().map_or(0, |b| b.ptr);
    launch("layer_norm_fwd", l, (y, addr(&mean), addr(&rstd), xd.ptr, wd.ptr, bp, rows as i32, cols as i32, eps)).map_err(err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&xd, &bd);
            let gy = grad_of(grads, &ot)?;
            let gx = grad_of(grads, &xt)?;
            launch("layer_norm_bwd_dx", l, (gx, gy, xd.ptr, wd.ptr, addr(&mean), addr(&rstd), rows as i32, cols as i32))?;
            let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
            let (pw, pb) = (scratch(chunks * cols)?, scratch(chunks * cols)?);
            launch("layer_norm_wb_partials", lp, (addr(&pw), addr(&pb), gy, xd.ptr, addr(&mean), addr(&rstd), rows as i32, cols as i32, per as i32))?;
            let gw = grad_of(grads, &wt)?;
            launch("col_sum_finish", lf, (gw, addr(&pw), chunks as i32, cols as i32, 1.0f32))?;
            if let Some(bt) = bt {
                let gb = grad_of(grads, &bt)?;
                launch("col_sum_finish", lf, (gb, addr(&pb), chunks as i32, cols as i32, 1.0f32))?;
            }
            Ok(())
        });
    }
    Ok(out)
}

pub(crate) fn gelu<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, x: &FT<Cuda>, exact: bool) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let n = x.numel();
    let xd = dev_of(cx, x)?;
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch("gelu_fwd", l, (y, xd.ptr, n as i64, exact as i32)).map_err(err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, ot) = (x.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of(grads, &ot)?;
            let gx = grad_of(grads, &xt)?;
            launch("gelu_bwd", l, (gx, gy, xd.ptr, n as i64, exact as i32))
        });
    }
    Ok(out)
}

pub(crate) fn add<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, a: &FT<Cuda>, b: &FT<Cuda>) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let n = a.numel();
    if b.numel() != n {
        return Err(run_err(format!("add: expected operands of equal size, found {n} and {}", b.numel())));
    }
    let (ad, bd) = (dev_of(cx, a)?, dev_of(cx, b)?);
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch("add_fwd", l, (y, ad.ptr, bd.ptr, n as i64)).map_err(err)?;
    let out = finish(s, y, a.shape.clone());
    if T::OWNS_TAPE {
        let (at, bt, ot) = (a.t.clone(), b.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of(grads, &ot)?;
            let ga = grad_of(grads, &at)?;
            launch("add_into", l, (ga, gy, n as i64))?;
            let gb = grad_of(grads, &bt)?;
            launch("add_into", l, (gb, gy, n as i64))
        });
    }
    Ok(out)
}

pub(crate) fn dropout<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, x: &FT<Cuda>, p: f32) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.numel();
    let (seed, scale) = (cx.rng.next_u64(), 1.0 / (1.0 - p));
    let xd = dev_of(cx, x)?;
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch("dropout_fwd", l, (y, xd.ptr, n as u64, seed, p, scale)).map_err(err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, ot) = (x.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of(grads, &ot)?;
            let gx = grad_of(grads, &xt)?;
            launch("dropout_bwd", l, (gx, gy, n as u64, seed, p, scale))
        });
    }
    Ok(out)
}

pub(crate) fn embedding<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, w: &FT<Cuda>, ids: &IT) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let (num, dim) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let idx = check_ids(ids, num, "embedding")?;
    let n = idx.len();
    let wd = dev_of(cx, w)?;
    let ids_dev = upload(idx.iter().map(|&i| i as i64).collect::<Vec<i64>>()).map_err(err)?;
    let (s, y) = slot(cx, n * dim)?;
    launch("embedding_fwd", kernels::elementwise(n * dim), (y, addr(&ids_dev), wd.ptr, n as i32, dim as i32)).map_err(err)?;
    let mut shape = ids.shape.clone();
    shape.push(dim);
    let out = finish(s, y, shape);
    if T::OWNS_TAPE {
        let (order, starts, uniq) = kernels::group_ids(&idx);
        let groups = uniq.len();
        let (order, starts, uniq) = (upload(order).map_err(err)?, upload(starts).map_err(err)?, upload(uniq).map_err(err)?);
        let (wt, ot) = (w.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&ids_dev, &wd);
            let gy = grad_of(grads, &ot)?;
            let gw = grad_of(grads, &wt)?;
            launch("embedding_bwd", kernels::block_per_row(groups), (gw, gy, addr(&order), addr(&starts), addr(&uniq), groups as i32, dim as i32))
        });
    }
    Ok(out)
}

pub(crate) fn cross_entropy<T: Tape<f32, Cuda>>(cx: &mut Ctx<Cuda, T>, logits: &FT<Cuda>, targets: &[i64]) -> R<FT<Cuda>> {
    device()?; // the kernels' load error, if they failed to load
    let (rows, v) = (logits.rows(), logits.last());
    if targets.len() != rows {
        return Err(run_err(format!("cross-entropy: expected {rows} labels, found {}", targets.len())));
    }
    let count = check_targets(targets, v)?;
    if count == 0 {
        return cx.constant(vec![0.0], vec![]);
    }
    let ld = dev_of(cx, logits)?;
    let tg = upload(targets.to_vec()).map_err(err)?;
    let per_row = scratch(rows).map_err(err)?;
    let l = kernels::block_per_row(rows);
    let dscale = 1.0 / count as f32;
    launch("cross_entropy_fwd", l, (addr(&per_row), 0u64, ld.ptr, addr(&tg), rows as i32, v as i32, dscale, 0u64)).map_err(err)?;
    let (s, y) = slot(cx, 1)?;
    col_sums(y, addr(&per_row), rows, 1, dscale).map_err(err)?;
    let out = finish(s, y, vec![]);
    if T::OWNS_TAPE {
        let (lt, ot) = (logits.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of(grads, &ot)?;
            let gl = grad_of(grads, &lt)?;
            // the per-row losses again (cheap), and the gradient added into the logits' buffer
            launch("cross_entropy_fwd", l, (addr(&per_row), gl, ld.ptr, addr(&tg), rows as i32, v as i32, dscale, gy))
        });
    }
    Ok(out)
}

/// The fused kernels' attention, when they cover `cfg` (no mask, bias or window; causal only
/// over equal lengths).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_core<T: Tape<f32, Cuda>>(
    cx: &mut Ctx<Cuda, T>,
    q: Cols<Cuda>,
    k: Cols<Cuda>,
    v: Cols<Cuda>,
    cfg: CoreCfg,
    mask: Option<&BT>,
    bias: Option<&FT<Cuda>>,
) -> R<FT<Cuda>> {
    let p_drop = if cx.train { cfg.dropout } else { 0.0 };
    let d = AttnDims {
        batch: cfg.b as i32,
        heads: cfg.heads as i32,
        kv_heads: cfg.kv_heads as i32,
        q_len: cfg.t as i32,
        k_len: cfg.s as i32,
        head_dim: cfg.hd as i32,
        q_row: q.row_stride() as i64,
        k_row: k.row_stride() as i64,
        v_row: v.row_stride() as i64,
        o_row: (cfg.heads * cfg.hd) as i64,
        scale: cfg.scale,
        causal: cfg.causal as i32,
        p_drop,
        drop_scale: if p_drop > 0.0 { 1.0 / (1.0 - p_drop) } else { 1.0 },
        seed: 0,
    };
    // the kernels' causal mask lines the last query up with the last key; `CoreCfg::allowed`
    // lines up the first ones, so they agree only when the lengths do
    let causal_offset = cfg.causal && cfg.s != cfg.t;
    if mask.is_some() || bias.is_some() || cfg.window != 0 || causal_offset || d.unsupported().is_some() {
        return generic::attention_core(cx, q, k, v, cfg, mask, bias);
    }
    device()?;
    let d = AttnDims { seed: if p_drop > 0.0 { cx.rng.next_u64() } else { 0 }, ..d };
    let (qd, kd, vd) = (dev_of(cx, q.x)?, dev_of(cx, k.x)?, dev_of(cx, v.x)?);
    let (qp, kp, vp) = (qd.ptr + 4 * q.off as u64, kd.ptr + 4 * k.off as u64, vd.ptr + 4 * v.off as u64);
    let queries = cfg.b * cfg.heads * cfg.t;
    let width = cfg.heads * cfg.hd;
    let (s, o) = slot(cx, cfg.b * cfg.t * width)?;
    let lse = scratch(queries).map_err(err)?;
    let lq = kernels::warp_per_row(queries);
    launch("attention_fwd", lq, (o, addr(&lse), qp, kp, vp, ByValue::from(d))).map_err(err)?;
    let out = finish(s, o, vec![cfg.b, cfg.t, width]);
    if T::OWNS_TAPE {
        let (qt, kt, vt, ot) = (q.x.t.clone(), k.x.t.clone(), v.x.t.clone(), out.t.clone());
        let (qo, ko, vo) = (q.off as u64, k.off as u64, v.off as u64);
        let od = out.dev.clone();
        let lk = kernels::warp_per_row(cfg.b * cfg.kv_heads * cfg.s);
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&qd, &kd, &vd);
            let o = od.as_ref().map_or(0, |o| o.ptr);
            let gy = grad_of(grads, &ot)?;
            let dsum = scratch(queries)?;
            launch("attention_bwd_dot", lq, (addr(&dsum), gy, o, ByValue::from(d)))?;
            let gq = grad_of(grads, &qt)? + 4 * qo;
            launch("attention_bwd_dq", lq, (gq, gy, qp, kp, vp, addr(&lse), addr(&dsum), ByValue::from(d)))?;
            let gk = grad_of(grads, &kt)? + 4 * ko;
            let gv = grad_of(grads, &vt)? + 4 * vo;
            launch("attention_bwd_dkdv", lk, (gk, gv, gy, qp, kp, vp, addr(&lse), addr(&dsum), ByValue::from(d)))
        });
    }
    Ok(out)
}

/// Whether the fused kernels take these values: the run asks for them and none is empty (an
/// empty value has no buffer to address).
fn fused<T>(cx: &Ctx<Cuda, T>, xs: &[&FT<Cuda>]) -> bool {
    cx.fused && xs.iter().all(|x| x.numel() > 0)
}

/// The f32 operations with a fused kernel; everything else keeps dfdx's.
impl Backend<f32> for Cuda {
    fn linear<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, b: Option<&FT<Self>>) -> R<FT<Self>> {
        if !fused(cx, &[x, w]) {
            return generic::linear(cx, x, w, b);
        }
        linear(cx, x, w, b)
    }
    fn layer_norm<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, b: Option<&FT<Self>>, eps: f32) -> R<FT<Self>> {
        if !fused(cx, &[x, w]) {
            return generic::layer_norm(cx, x, w, b, eps);
        }
        layer_norm(cx, x, w, b, eps)
    }
    fn act<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, act: Activation) -> R<FT<Self>> {
        match act {
            Activation::Gelu if fused(cx, &[x]) => gelu(cx, x, false),
            Activation::GeluExact if fused(cx, &[x]) => gelu(cx, x, true),
            _ => generic::act(cx, x, act),
        }
    }
    fn add<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, a: &FT<Self>, b: &FT<Self>) -> R<FT<Self>> {
        if !fused(cx, &[a, b]) {
            return Ok(cx.zip(a, b, |a, b| a + b));
        }
        add(cx, a, b)
    }
    fn attention_core<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, q: Cols<Self>, k: Cols<Self>, v: Cols<Self>, cfg: CoreCfg, mask: Option<&BT>, bias: Option<&FT<Self>>) -> R<FT<Self>> {
        if !fused(cx, &[q.x, k.x, v.x]) {
            return generic::attention_core(cx, q, k, v, cfg, mask, bias);
        }
        attention_core(cx, q, k, v, cfg, mask, bias)
    }
    fn embedding<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, w: &FT<Self>, ids: &IT) -> R<FT<Self>> {
        if !fused(cx, &[w]) || ids.data.is_empty() {
            return generic::embedding(cx, w, ids);
        }
        embedding(cx, w, ids)
    }
    fn cross_entropy<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, logits: &FT<Self>, targets: &[i64]) -> R<FT<Self>> {
        if !fused(cx, &[logits]) {
            return generic::cross_entropy(cx, logits, targets);
        }
        cross_entropy(cx, logits, targets)
    }
    fn dropout<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, p: f32) -> R<FT<Self>> {
        if !fused(cx, &[x]) {
            return crate::backend::cuda_dropout(cx, x, p);
        }
        dropout(cx, x, p)
    }
}
