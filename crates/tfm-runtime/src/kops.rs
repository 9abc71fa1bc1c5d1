//! The GPU's fused operations, written once over a [`KernelDevice`]: the `f32` hot operations
//! (linear layers, layer norm, GELU, sums, dropout, embedding, cross-entropy, attention) as
//! tfm's kernels (`tfm-kernels`) and matrix products, with their backward on the run's tape.
//!
//! The kernels address memory by raw pointer, but dfdx 0.13 hands out no tensor's storage, only
//! the buffers of its gradient store (`Gradients::get_or_alloc_mut`). So:
//! - a kernel writes its output into a gradient buffer of a size-only probe (a [`Slot`]), the
//!   value's dfdx tensor is copied from there (`Gradients::get`), and the value keeps the slot
//!   (`FT::dev`) so that the next kernel reads it in place;
//! - a value no kernel made (a weight, the output of a dfdx op) is copied into a buffer once per
//!   pass by a one-op backward pass: the gradient of `sum(probe * x)` with respect to `probe` is
//!   exactly `x` ([`dev_of`]);
//! - backward closures take the output's gradient buffer and the inputs' gradient buffers from
//!   the store by address and add into them, as the CPU's fused kernels do.
//!
//! Two devices implement [`KernelDevice`]: `Cuda` (`cuda.rs`: NVRTC-loaded kernels, cuBLAS),
//! and, with the `emu` feature, `Cpu` through the kernel emulator (`tfm-cuda-emu`), so that the
//! tests run this file's code, not only the kernels, on any machine
//! (`Runtime::set_gpu_kernels`).

use crate::backend::{check_ids, check_targets, generic, Cols, CoreCfg};
use crate::kernels::{self, AttnDims, Launch};
use crate::value::{fresh_uid, Ctx, DevPtr, Flat, BT, FT, IT};
use crate::{dev_err, run_err, RuntimeError};
use dfdx::prelude::*;
use std::any::Any;
use std::sync::Arc;

type R<X> = Result<X, RuntimeError>;

/// A kernel parameter: a device address or count (`U64`), an int, a float, or a struct passed
/// by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    U64(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    Attn(AttnDims),
}

impl Arg {
    /// A pointer to the value, as `cuLaunchKernel` takes each parameter (only ever read).
    pub(crate) fn param(&self) -> *mut std::ffi::c_void {
        let p: *const std::ffi::c_void = match self {
            Arg::U64(v) => v as *const u64 as *const _,
            Arg::I32(v) => v as *const i32 as *const _,
            Arg::I64(v) => v as *const i64 as *const _,
            Arg::F32(v) => v as *const f32 as *const _,
            Arg::Attn(v) => v as *const AttnDims as *const _,
        };
        p as *mut _
    }
}

impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::U64(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::I32(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}
impl From<AttnDims> for Arg {
    fn from(v: AttnDims) -> Self {
        Arg::Attn(v)
    }
}

/// A kernel's parameter list.
macro_rules! args {
    ($($a:expr),* $(,)?) => { [$(Arg::from($a)),*] };
}

/// Memory of the device's own (scratch, uploaded host data), kept alive by `_keep`.
pub(crate) struct Buf {
    pub ptr: u64,
    pub _keep: Box<dyn Any>,
}

/// A device the fused operations run on: kernels by name, row-major products, buffers.
pub(crate) trait KernelDevice: crate::backend::Backend<f32> {
    /// Whether the kernels can run (their load or compile error otherwise).
    fn ready() -> R<()>;
    /// The address of a gradient-store buffer.
    fn buf_addr(v: &mut <Self as Storage<f32>>::Vec) -> u64;
    /// Queues kernel `name` on `l` with `args` (whose device addresses must stay valid until the
    /// kernel has run: they are held by the caller's values, slots or closures).
    fn launch(name: &'static str, l: Launch, args: &mut [Arg]) -> Result<(), Self::Err>;
    /// Row-major `C[m, n] = op(A) op(B) + beta C`, `op` a transpose where asked; leading dims in
    /// elements.
    #[allow(clippy::too_many_arguments)]
    fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: u64, lda: usize, b: u64, ldb: usize, beta: f32, c: u64, ldc: usize) -> Result<(), Self::Err>;
    /// `n` zeroed f32 of scratch.
    fn scratch(n: usize) -> Result<Buf, Self::Err>;
    /// Host data on the device.
    fn upload(v: HostVec) -> Result<Buf, Self::Err>;
}

/// Host data the kernels read: `long long` ids and targets, `int` groups, `float` tables.
pub(crate) enum HostVec {
    I64(Vec<i64>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl From<Vec<i64>> for HostVec {
    fn from(v: Vec<i64>) -> Self {
        HostVec::I64(v)
    }
}
impl From<Vec<i32>> for HostVec {
    fn from(v: Vec<i32>) -> Self {
        HostVec::I32(v)
    }
}
impl From<Vec<f32>> for HostVec {
    fn from(v: Vec<f32>) -> Self {
        HostVec::F32(v)
    }
}

fn launch<D: KernelDevice>(name: &'static str, l: Launch, args: &mut [Arg]) -> Result<(), D::Err> {
    D::launch(name, l, args)
}

fn addr_of(b: &Buf) -> u64 {
    b.ptr
}

type Alloc<D> = Arc<dyn Fn(&mut Gradients<f32, D>) -> Result<u64, <D as HasErr>::Err>>;
type Getter<D> = Arc<dyn Fn(&Gradients<f32, D>) -> Flat<D>>;

/// A buffer the kernels write: the gradient buffer of a probe, in a store of its own.
struct Slot<D: KernelDevice> {
    grads: Gradients<f32, D>,
    get: Getter<D>,
}

/// Keeps a store of gradients (and so its buffers) alive.
struct Keep<D: KernelDevice>(#[allow(dead_code)] Gradients<f32, D>);

// SAFETY: `FT` (which holds these through `DevPtr`) must be `Send` for the CPU's threads. On a
// GPU a slot or a kept store only ever lives in values of a `Cuda` runtime, and `Cuda` is
// neither `Send` nor `Sync` (its streams are raw pointers), so such values never leave the thread
// that runs the pass. On the CPU (the emulator) every part of them (host vectors, dfdx's `Cpu`,
// its ghost tensors) is `Send` and `Sync` already; only the boxed closures are not marked so.
#[allow(unsafe_code)]
unsafe impl<D: KernelDevice> Send for Slot<D> {}
#[allow(unsafe_code)]
unsafe impl<D: KernelDevice> Sync for Slot<D> {}
#[allow(unsafe_code)]
unsafe impl<D: KernelDevice> Send for Keep<D> {}
#[allow(unsafe_code)]
unsafe impl<D: KernelDevice> Sync for Keep<D> {}

/// The size-only probe of `n` elements (a dfdx ghost: id, length and shape, no storage), as
/// closures that allocate its gradient buffer in a store and take a tensor from it.
fn probe<D: KernelDevice, T>(cx: &Ctx<D, T>, n: usize) -> R<(Alloc<D>, Getter<D>)> {
    let dev = cx.dev.clone();
    cx.consts.get(format!("kernel slot probe {n}"), move || {
        let t: Flat<D> = dev.try_zeros_like(&(n,)).map_err(dev_err)?;
        let ghost = Arc::new(t.ghost());
        let g2 = ghost.clone();
        let alloc: Alloc<D> = Arc::new(move |grads: &mut Gradients<f32, D>| Ok(D::buf_addr(grads.get_or_alloc_mut(&*ghost)?)));
        let get: Getter<D> = Arc::new(move |grads: &Gradients<f32, D>| grads.get(&*g2));
        Ok((alloc, get))
    })
}

/// A zeroed buffer of `n` (at least 1) elements for a kernel's output, and its address.
fn slot<D: KernelDevice, T>(cx: &Ctx<D, T>, n: usize) -> R<(Slot<D>, u64)> {
    let (alloc, get) = probe(cx, n.max(1))?;
    let mut grads = Gradients::leaky();
    let ptr = alloc(&mut grads).map_err(dev_err)?;
    Ok((Slot { grads, get }, ptr))
}

/// The value a kernel wrote into `slot`: its dfdx tensor (a copy) and the slot it came from.
fn finish<D: KernelDevice>(slot: Slot<D>, ptr: u64, shape: Vec<usize>) -> FT<D> {
    let t = (slot.get)(&slot.grads);
    let len = shape.iter().product();
    FT { t, shape, uid: fresh_uid(), host: None, dev: Some(DevPtr { ptr, len, keep: Arc::new(slot) }) }
}

/// The device address of `x`'s elements: its own slot when a kernel made it, else a copy made
/// once per pass (the gradient of `sum(probe * x)` with respect to `probe`, which is `x` times
/// one, exactly).
pub(crate) fn dev_of<D: KernelDevice, T>(cx: &mut Ctx<D, T>, x: &FT<D>) -> R<DevPtr> {
    let n = x.numel();
    if let Some(d) = x.dev.as_ref().filter(|d| d.len == n) {
        return Ok(d.clone());
    }
    if let Some(d) = cx.exported.get(&x.uid).filter(|d| d.len == n) {
        return Ok(d.clone());
    }
    let probe: Flat<D> = cx.dev.try_zeros_like(&(n,)).map_err(dev_err)?;
    let loss = probe.clone().traced(Gradients::leaky()).try_mul(x.t.clone()).and_then(|y| y.try_sum::<(), Axis<0>>()).map_err(dev_err)?;
    let mut grads = loss.try_backward().map_err(dev_err)?;
    let ptr = D::buf_addr(grads.get_or_alloc_mut(&probe).map_err(dev_err)?);
    let d = DevPtr { ptr, len: n, keep: Arc::new(Keep(grads)) };
    cx.exported.insert(x.uid, d.clone());
    Ok(d)
}

/// The address of `t`'s gradient buffer (allocated, zeroed, if `t` has none yet).
fn grad_of<D: KernelDevice>(grads: &mut Gradients<f32, D>, t: &Flat<D>) -> Result<u64, D::Err> {
    Ok(D::buf_addr(grads.get_or_alloc_mut(t)?))
}

/// Column sums of `a [rows, cols]` times `scale`, added into `out [cols]`.
fn col_sums<D: KernelDevice>(out: u64, a: u64, rows: usize, cols: usize, scale: f32) -> Result<(), D::Err> {
    let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
    let part = D::scratch(chunks * cols)?;
    launch::<D>("col_sum_partials", lp, &mut args![part.ptr, a, rows as i32, cols as i32, per as i32])?;
    launch::<D>("col_sum_finish", lf, &mut args![out, part.ptr, chunks as i32, cols as i32, scale])
}

/// The kernels can run; with the emulator, counts one fused operation
/// (`Runtime::fused_gpu_ops`, for tests: a GPU's training step does not pay for the count).
fn begin<D: KernelDevice, T>(cx: &Ctx<D, T>) -> R<()> {
    D::ready()?;
    #[cfg(feature = "emu")]
    ops_counter(&cx.consts)?.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "emu"))]
    let _ = cx;
    Ok(())
}

/// How many operations the fused kernels ran, for the passes of one runtime.
#[cfg(feature = "emu")]
pub(crate) fn ops_counter(consts: &crate::value::Consts) -> R<Arc<std::sync::atomic::AtomicUsize>> {
    consts.get("fused gpu ops run".to_string(), || Ok(Arc::new(std::sync::atomic::AtomicUsize::new(0))))
}

/// The kernels' code for an elementwise activation (gated ones are built from these).
pub(crate) fn act_kind(act: tfm_ir::Activation) -> Option<i32> {
    use tfm_ir::Activation as A;
    match act {
        A::Gelu => Some(kernels::act::GELU_TANH),
        A::GeluExact => Some(kernels::act::GELU_ERF),
        A::Silu => Some(kernels::act::SILU),
        A::Relu => Some(kernels::act::RELU),
        A::Swiglu | A::Geglu => None,
    }
}

/// Whether the fused kernels take these values: the run asks for them and none is empty (an
/// empty value has no buffer to address).
pub(crate) fn fused<D: KernelDevice, T>(cx: &Ctx<D, T>, xs: &[&FT<D>]) -> bool {
    cx.fused && xs.iter().all(|x| x.numel() > 0)
}

/// `x [*, in] @ w [out, in]^T + b` as one cuBLAS product (the bias filled in first).
pub(crate) fn linear<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: &FT<D>, w: &FT<D>, b: Option<&FT<D>>) -> R<FT<D>> {
    let (o, i) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let n = x.rows();
    if x.last() != i || b.is_some_and(|b| b.numel() != o) {
        return generic::linear(cx, x, w, b);
    }
    begin(cx)?;
    let (xd, wd) = (dev_of(cx, x)?, dev_of(cx, w)?);
    let bd = b.map(|b| dev_of(cx, b)).transpose()?;
    let (s, y) = slot(cx, n * o)?;
    let beta = if let Some(bd) = &bd {
        launch::<D>("fill_rows", kernels::elementwise(n * o), &mut args![y, bd.ptr, n as i64, o as i32]).map_err(dev_err)?;
        1.0
    } else {
        0.0
    };
    D::gemm(false, true, n, o, i, xd.ptr, i, wd.ptr, i, beta, y, o).map_err(dev_err)?;
    let mut shape = x.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = o;
    }
    let out = finish(s, y, shape);
    if T::OWNS_TAPE {
        let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            // (named whole: a closure using only `xd.ptr` would capture the address alone and
            // let the buffer go)
            let _keep = (&xd, &wd);
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)?;
            D::gemm(false, false, n, i, o, gy, o, wd.ptr, i, 1.0, gx, i)?;
            let gw = grad_of::<D>(grads, &wt)?;
            D::gemm(true, false, o, i, n, gy, o, xd.ptr, i, 1.0, gw, i)?;
            if let Some(bt) = bt {
                let gb = grad_of::<D>(grads, &bt)?;
                col_sums::<D>(gb, gy, n, o, 1.0)?;
            }
            Ok(())
        });
    }
    Ok(out)
}

/// Layer norm over the last axis, one warp per row; the row statistics are kept for the backward.
pub(crate) fn layer_norm<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: &FT<D>, w: &FT<D>, b: Option<&FT<D>>, eps: f32) -> R<FT<D>> {
    let (rows, cols) = (x.rows(), x.last());
    if w.numel() != cols || b.is_some_and(|b| b.numel() != cols) {
        return generic::layer_norm(cx, x, w, b, eps);
    }
    begin(cx)?;
    let (xd, wd) = (dev_of(cx, x)?, dev_of(cx, w)?);
    let bd = b.map(|b| dev_of(cx, b)).transpose()?;
    let (s, y) = slot(cx, rows * cols)?;
    let (mean, rstd) = (D::scratch(rows).map_err(dev_err)?, D::scratch(rows).map_err(dev_err)?);
    let l = kernels::warp_per_row(rows);
    let bp = bd.as_ref().map_or(0, |b| b.ptr);
    launch::<D>("layer_norm_fwd", l, &mut args![y, addr_of(&mean), addr_of(&rstd), xd.ptr, wd.ptr, bp, rows as i32, cols as i32, eps]).map_err(dev_err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, wt, bt, ot) = (x.t.clone(), w.t.clone(), b.map(|b| b.t.clone()), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&xd, &wd);
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)?;
            launch::<D>("layer_norm_bwd_dx", l, &mut args![gx, gy, xd.ptr, wd.ptr, addr_of(&mean), addr_of(&rstd), rows as i32, cols as i32])?;
            let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
            let (pw, pb) = (D::scratch(chunks * cols)?, D::scratch(chunks * cols)?);
            launch::<D>("layer_norm_wb_partials", lp, &mut args![addr_of(&pw), addr_of(&pb), gy, xd.ptr, addr_of(&mean), addr_of(&rstd), rows as i32, cols as i32, per as i32])?;
            let gw = grad_of::<D>(grads, &wt)?;
            launch::<D>("col_sum_finish", lf, &mut args![gw, addr_of(&pw), chunks as i32, cols as i32, 1.0f32])?;
            if let Some(bt) = bt {
                let gb = grad_of::<D>(grads, &bt)?;
                launch::<D>("col_sum_finish", lf, &mut args![gb, addr_of(&pb), chunks as i32, cols as i32, 1.0f32])?;
            }
            Ok(())
        });
    }
    Ok(out)
}

/// An elementwise activation, `kind` as `kernels::act`.
pub(crate) fn act<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: &FT<D>, kind: i32) -> R<FT<D>> {
    begin(cx)?;
    let n = x.numel();
    let xd = dev_of(cx, x)?;
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch::<D>("act_fwd", l, &mut args![y, xd.ptr, n as i64, kind]).map_err(dev_err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, ot) = (x.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = &xd;
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)?;
            launch::<D>("act_bwd", l, &mut args![gx, gy, xd.ptr, n as i64, kind])
        });
    }
    Ok(out)
}

/// RMS norm over the last axis, one warp per row.
pub(crate) fn rms_norm<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: &FT<D>, w: &FT<D>, eps: f32) -> R<FT<D>> {
    let (rows, cols) = (x.rows(), x.last());
    if w.numel() != cols {
        return generic::rms_norm(cx, x, w, eps);
    }
    begin(cx)?;
    let (xd, wd) = (dev_of(cx, x)?, dev_of(cx, w)?);
    let (s, y) = slot(cx, rows * cols)?;
    let rstd = D::scratch(rows).map_err(dev_err)?;
    let l = kernels::warp_per_row(rows);
    launch::<D>("rms_norm_fwd", l, &mut args![y, addr_of(&rstd), xd.ptr, wd.ptr, rows as i32, cols as i32, eps]).map_err(dev_err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, wt, ot) = (x.t.clone(), w.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&xd, &wd);
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)?;
            launch::<D>("rms_norm_bwd_dx", l, &mut args![gx, gy, xd.ptr, wd.ptr, addr_of(&rstd), rows as i32, cols as i32])?;
            let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
            let pw = D::scratch(chunks * cols)?;
            launch::<D>("rms_norm_w_partials", lp, &mut args![addr_of(&pw), gy, xd.ptr, addr_of(&rstd), rows as i32, cols as i32, per as i32])?;
            let gw = grad_of::<D>(grads, &wt)?;
            launch::<D>("col_sum_finish", lf, &mut args![gw, addr_of(&pw), chunks as i32, cols as i32, 1.0f32])
        });
    }
    Ok(out)
}

/// Rotary embeddings of the `heads * hd` columns of `x [B, L, W]`, positions 0..L, with the same
/// cos and sin tables as the CPU (`rope_tables`), uploaded once per length.
pub(crate) fn rope<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: Cols<D>, heads: usize, hd: usize, theta: f32) -> R<FT<D>> {
    let width = heads * hd;
    if x.x.shape.len() != 3 || hd % 2 == 1 || x.off + width > x.row_stride() {
        // the generic version reports what is wrong
        return generic::rope(cx, x, heads, hd, theta);
    }
    begin(cx)?;
    let (b, l, stride) = (x.x.shape[0], x.x.shape[1], x.row_stride());
    let rows = b * l;
    let xd = dev_of(cx, x.x)?;
    let tables: Arc<(Buf, Buf)> = cx.consts.get(format!("rope tables {l} {hd} {theta}"), || {
        let (cos, sin) = crate::backend::rope_tables(l, hd, theta);
        Ok(Arc::new((D::upload(cos.into()).map_err(dev_err)?, D::upload(sin.into()).map_err(dev_err)?)))
    })?;
    let (s, y) = slot(cx, rows * width)?;
    let le = kernels::elementwise(rows * width);
    let xp = xd.ptr + 4 * x.off as u64;
    let dims = |rows: usize| (rows as i64, l as i32, stride as i64, heads as i32, hd as i32);
    let (r64, l32, s64, h32, hd32) = dims(rows);
    launch::<D>("rope_fwd", le, &mut args![y, xp, tables.0.ptr, tables.1.ptr, r64, l32, s64, h32, hd32]).map_err(dev_err)?;
    let out = finish(s, y, vec![b, l, width]);
    if T::OWNS_TAPE {
        let (xt, ot, off) = (x.x.t.clone(), out.t.clone(), x.off as u64);
        cx.tape.add_backward_op(move |grads| {
            let (cos, sin) = (addr_of(&tables.0), addr_of(&tables.1));
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)? + 4 * off;
            launch::<D>("rope_bwd", le, &mut args![gx, gy, cos, sin, r64, l32, s64, h32, hd32])
        });
    }
    Ok(out)
}

/// `a + b`, same sizes.
pub(crate) fn add<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, a: &FT<D>, b: &FT<D>) -> R<FT<D>> {
    begin(cx)?;
    let n = a.numel();
    if b.numel() != n {
        return Err(run_err(format!("add: expected operands of equal size, found {n} and {}", b.numel())));
    }
    let (ad, bd) = (dev_of(cx, a)?, dev_of(cx, b)?);
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch::<D>("add_fwd", l, &mut args![y, ad.ptr, bd.ptr, n as i64]).map_err(dev_err)?;
    let out = finish(s, y, a.shape.clone());
    if T::OWNS_TAPE {
        let (at, bt, ot) = (a.t.clone(), b.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of::<D>(grads, &ot)?;
            let ga = grad_of::<D>(grads, &at)?;
            launch::<D>("add_into", l, &mut args![ga, gy, n as i64])?;
            let gb = grad_of::<D>(grads, &bt)?;
            launch::<D>("add_into", l, &mut args![gb, gy, n as i64])
        });
    }
    Ok(out)
}

/// Inverted dropout from the counter hash: the backward draws the same mask from the seed.
pub(crate) fn dropout<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, x: &FT<D>, p: f32) -> R<FT<D>> {
    begin(cx)?;
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.numel();
    let (seed, scale) = (cx.rng.next_u64(), 1.0 / (1.0 - p));
    let xd = dev_of(cx, x)?;
    let (s, y) = slot(cx, n)?;
    let l = kernels::elementwise(n);
    launch::<D>("dropout_fwd", l, &mut args![y, xd.ptr, n as u64, seed, p, scale]).map_err(dev_err)?;
    let out = finish(s, y, x.shape.clone());
    if T::OWNS_TAPE {
        let (xt, ot) = (x.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let gy = grad_of::<D>(grads, &ot)?;
            let gx = grad_of::<D>(grads, &xt)?;
            launch::<D>("dropout_bwd", l, &mut args![gx, gy, n as u64, seed, p, scale])
        });
    }
    Ok(out)
}

/// Rows of `w` by id; the backward groups positions by id on the host (no atomics).
pub(crate) fn embedding<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, w: &FT<D>, ids: &IT) -> R<FT<D>> {
    begin(cx)?;
    let (num, dim) = (w.shape[0], w.numel() / w.shape[0].max(1));
    let idx = check_ids(ids, num, "embedding")?;
    let n = idx.len();
    let wd = dev_of(cx, w)?;
    let ids_dev = D::upload(idx.iter().map(|&i| i as i64).collect::<Vec<i64>>().into()).map_err(dev_err)?;
    let (s, y) = slot(cx, n * dim)?;
    launch::<D>("embedding_fwd", kernels::elementwise(n * dim), &mut args![y, addr_of(&ids_dev), wd.ptr, n as i32, dim as i32]).map_err(dev_err)?;
    let mut shape = ids.shape.clone();
    shape.push(dim);
    let out = finish(s, y, shape);
    if T::OWNS_TAPE {
        let (order, starts, uniq) = kernels::group_ids(&idx);
        let groups = uniq.len();
        let (order, starts, uniq) = (D::upload(order.into()).map_err(dev_err)?, D::upload(starts.into()).map_err(dev_err)?, D::upload(uniq.into()).map_err(dev_err)?);
        let (wt, ot) = (w.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&ids_dev, &wd);
            let gy = grad_of::<D>(grads, &ot)?;
            let gw = grad_of::<D>(grads, &wt)?;
            launch::<D>("embedding_bwd", kernels::block_per_row(groups), &mut args![gw, gy, addr_of(&order), addr_of(&starts), addr_of(&uniq), groups as i32, dim as i32])
        });
    }
    Ok(out)
}

/// Mean cross-entropy (`-100` ignored); the backward adds the gradient into the logits' buffer in
/// one pass per row.
pub(crate) fn cross_entropy<D: KernelDevice, T: Tape<f32, D>>(cx: &mut Ctx<D, T>, logits: &FT<D>, targets: &[i64]) -> R<FT<D>> {
    begin(cx)?;
    let (rows, v) = (logits.rows(), logits.last());
    let count = check_targets(targets, rows, v)?;
    if count == 0 {
        return cx.constant(vec![0.0], vec![]);
    }
    let ld = dev_of(cx, logits)?;
    let tg = D::upload(targets.to_vec().into()).map_err(dev_err)?;
    let per_row = D::scratch(rows).map_err(dev_err)?;
    let l = kernels::block_per_row(rows);
    let dscale = 1.0 / count as f32;
    launch::<D>("cross_entropy_fwd", l, &mut args![addr_of(&per_row), 0u64, ld.ptr, addr_of(&tg), rows as i32, v as i32, dscale, 0u64]).map_err(dev_err)?;
    let (s, y) = slot(cx, 1)?;
    col_sums::<D>(y, addr_of(&per_row), rows, 1, dscale).map_err(dev_err)?;
    let out = finish(s, y, vec![]);
    if T::OWNS_TAPE {
        let (lt, ot) = (logits.t.clone(), out.t.clone());
        cx.tape.add_backward_op(move |grads| {
            let _keep = &ld;
            let gy = grad_of::<D>(grads, &ot)?;
            let gl = grad_of::<D>(grads, &lt)?;
            // the per-row losses again (cheap), and the gradient added into the logits' buffer
            launch::<D>("cross_entropy_fwd", l, &mut args![addr_of(&per_row), gl, ld.ptr, addr_of(&tg), rows as i32, v as i32, dscale, gy])
        });
    }
    Ok(out)
}

/// The fused kernels' attention, when they cover `cfg` (no mask, bias or window; causal only
/// over equal lengths).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_core<D: KernelDevice, T: Tape<f32, D>>(
    cx: &mut Ctx<D, T>,
    q: Cols<D>,
    k: Cols<D>,
    v: Cols<D>,
    cfg: CoreCfg,
    mask: Option<&BT>,
    bias: Option<&FT<D>>,
) -> R<FT<D>> {
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
    begin(cx)?;
    let d = AttnDims { seed: if p_drop > 0.0 { cx.rng.next_u64() } else { 0 }, ..d };
    let (qd, kd, vd) = (dev_of(cx, q.x)?, dev_of(cx, k.x)?, dev_of(cx, v.x)?);
    let (qp, kp, vp) = (qd.ptr + 4 * q.off as u64, kd.ptr + 4 * k.off as u64, vd.ptr + 4 * v.off as u64);
    let queries = cfg.b * cfg.heads * cfg.t;
    let width = cfg.heads * cfg.hd;
    let (s, o) = slot(cx, cfg.b * cfg.t * width)?;
    let lse = D::scratch(queries).map_err(dev_err)?;
    let lq = kernels::warp_per_row(queries);
    launch::<D>("attention_fwd", lq, &mut args![o, addr_of(&lse), qp, kp, vp, d]).map_err(dev_err)?;
    let out = finish(s, o, vec![cfg.b, cfg.t, width]);
    if T::OWNS_TAPE {
        let (qt, kt, vt, ot) = (q.x.t.clone(), k.x.t.clone(), v.x.t.clone(), out.t.clone());
        let (qo, ko, vo) = (q.off as u64, k.off as u64, v.off as u64);
        let od = out.dev.clone();
        let lk = kernels::warp_per_row(cfg.b * cfg.kv_heads * cfg.s);
        cx.tape.add_backward_op(move |grads| {
            let _keep = (&qd, &kd, &vd);
            let o = od.as_ref().map_or(0, |o| o.ptr);
            let gy = grad_of::<D>(grads, &ot)?;
            let dsum = D::scratch(queries)?;
            launch::<D>("attention_bwd_dot", lq, &mut args![addr_of(&dsum), gy, o, d])?;
            let gq = grad_of::<D>(grads, &qt)? + 4 * qo;
            launch::<D>("attention_bwd_dq", lq, &mut args![gq, gy, qp, kp, vp, addr_of(&lse), addr_of(&dsum), d])?;
            let gk = grad_of::<D>(grads, &kt)? + 4 * ko;
            let gv = grad_of::<D>(grads, &vt)? + 4 * vo;
            launch::<D>("attention_bwd_dkdv", lk, &mut args![gk, gv, gy, qp, kp, vp, addr_of(&lse), addr_of(&dsum), d])
        });
    }
    Ok(out)
}


/// The emulated GPU: the kernels run on the CPU through `tfm-cuda-emu`, "device addresses" are
/// host addresses, and products are plain loops.
#[cfg(feature = "emu")]
mod emulated {
    use super::*;

    fn failed(_: String) -> CpuError {
        CpuError::WrongNumElements
    }

    impl KernelDevice for Cpu {
        fn ready() -> R<()> {
            Ok(())
        }

        fn buf_addr(v: &mut <Self as Storage<f32>>::Vec) -> u64 {
            v.as_mut_ptr() as u64
        }

        fn launch(name: &'static str, l: Launch, args: &mut [Arg]) -> Result<(), CpuError> {
            let mut params: Vec<*mut std::ffi::c_void> = args.iter().map(Arg::param).collect();
            // SAFETY: the fused operations pass each kernel the parameter list kernels.cu
            // declares, with addresses of live host buffers of the extents it indexes.
            #[allow(unsafe_code)]
            #[allow(unsafe_code)]
            unsafe { tfm_cuda_emu::launch(name, l.grid, l.block, &mut params) }.map_err(failed)
        }

        fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: u64, lda: usize, b: u64, ldb: usize, beta: f32, c: u64, ldc: usize) -> Result<(), CpuError> {
            let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
            for r in 0..m {
                for col in 0..n {
                    let mut s = 0.0f32;
                    for p in 0..k {
                        let ai = if ta { p * lda + r } else { r * lda + p };
                        let bi = if tb { col * ldb + p } else { p * ldb + col };
                        // SAFETY: the callers pass buffers of the extents these indices reach.
                        #[allow(unsafe_code)]
                        unsafe {
                            s += *a.add(ai) * *b.add(bi);
                        }
                    }
                    // SAFETY: as above, for C.
                    #[allow(unsafe_code)]
                    unsafe {
                        let at = c.add(r * ldc + col);
                        *at = if beta == 0.0 { s } else { s + beta * *at };
                    }
                }
            }
            Ok(())
        }

        fn scratch(n: usize) -> Result<Buf, CpuError> {
            let mut v = vec![0.0f32; n.max(1)];
            Ok(Buf { ptr: v.as_mut_ptr() as u64, _keep: Box::new(v) })
        }

        fn upload(v: HostVec) -> Result<Buf, CpuError> {
            // the vector moves into the box; its elements stay where they are
            fn keep<X: 'static>(v: Vec<X>) -> Buf {
                Buf { ptr: v.as_ptr() as u64, _keep: Box::new(v) }
            }
            Ok(match v {
                HostVec::I64(v) => keep(v),
                HostVec::I32(v) => keep(v),
                HostVec::F32(v) => keep(v),
            })
        }
    }
}
