//! tfm's CUDA kernels (`src/kernels.cu`) against plain f64 references and finite differences.
//!
//! Every check is written once over a `Runner`: `emu` runs the kernels on the CPU through
//! `tfm-cuda-emu` (every build, CI included), `gpu` runs the same checks on the GPU (CUDA builds,
//! on a machine with a device). Both take their launch geometry from `tfm_runtime::kernels`.

use tfm_runtime::kernels::{self, AdamwArgs, AttnDims, Launch};
use tfm_runtime::optim_cpu::{adamw_slices, AdamwConsts};
use tfm_cuda_emu::QkvAt;

/// One way to run the kernels: each method runs one kernel on host buffers.
#[allow(clippy::too_many_arguments)]
trait Runner {
    /// Whether results must equal the host's f32 arithmetic bit for bit (the emulator; a GPU
    /// may fuse multiply-adds).
    fn bitwise(&self) -> bool;
    fn layer_norm_fwd(&self, l: Launch, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, rows: usize, cols: usize, eps: f32);
    fn layer_norm_bwd_dx(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], w: Option<&[f32]>, mean: &[f32], rstd: &[f32], rows: usize, cols: usize);
    fn layer_norm_wb_partials(&self, l: Launch, pw: &mut [f32], pb: &mut [f32], dy: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], rows: usize, cols: usize, per_chunk: usize);
    fn col_sum_partials(&self, l: Launch, part: &mut [f32], a: &[f32], rows: usize, cols: usize, per_chunk: usize);
    fn col_sum_finish(&self, l: Launch, out: &mut [f32], part: &[f32], chunks: usize, cols: usize, scale: f32);
    fn add_fwd(&self, l: Launch, y: &mut [f32], a: &[f32], b: &[f32]);
    fn add_into(&self, l: Launch, dst: &mut [f32], src: &[f32]);
    fn fill_rows(&self, l: Launch, y: &mut [f32], b: &[f32]);
    fn act_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], kind: i32);
    fn act_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], kind: i32);
    fn softmax_rows_fwd(&self, l: Launch, p: &mut [f32], s: &[f32], rows: usize, n: usize, scale: f32, q_len: usize);
    fn softmax_rows_bwd(&self, l: Launch, ds: &mut [f32], p: &[f32], dp: &[f32], rows: usize, n: usize, scale: f32);
    fn attention_fwd(&self, l: Launch, o: &mut [f32], lse: &mut [f32], qkv: &[f32], at: QkvAt, d: AttnDims);
    fn attention_bwd_dot(&self, l: Launch, dsum: &mut [f32], dout: &[f32], o: &[f32], d: AttnDims);
    fn attention_bwd(&self, l: Launch, dkdv: bool, dqkv: &mut [f32], dout: &[f32], qkv: &[f32], at: QkvAt, lse: &[f32], dsum: &[f32], d: AttnDims);
    fn cross_entropy_fwd(&self, l: Launch, loss: &mut [f32], dlogits: Option<&mut [f32]>, logits: &[f32], targets: &[i64], rows: usize, v: usize, dscale: f32, dscale_dev: Option<&[f32]>);
    fn embedding_fwd(&self, l: Launch, out: &mut [f32], ids: &[i64], table: &[f32], dim: usize);
    fn embedding_bwd(&self, l: Launch, dtable: &mut [f32], dout: &[f32], order: &[i32], starts: &[i32], uniq: &[i32], dim: usize);
    fn adamw(&self, l: Launch, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], a: AdamwArgs);
    fn keep_scales(&self, l: Launch, out: &mut [f32], seed: u64, p: f32, scale: f32);
    fn dropout_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], seed: u64, p: f32, scale: f32);
    fn dropout_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], seed: u64, p: f32, scale: f32);
}

mod emu_runner {
    use super::*;
    use tfm_cuda_emu as emu;

    pub struct Emu;

    impl Runner for Emu {
        fn bitwise(&self) -> bool {
            true
        }
        fn layer_norm_fwd(&self, l: Launch, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, rows: usize, cols: usize, eps: f32) {
            emu::layer_norm_fwd(l.grid, l.block, y, mean, rstd, x, w, b, rows, cols, eps)
        }
        fn layer_norm_bwd_dx(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], w: Option<&[f32]>, mean: &[f32], rstd: &[f32], rows: usize, cols: usize) {
            emu::layer_norm_bwd_dx(l.grid, l.block, dx, dy, x, w, mean, rstd, rows, cols)
        }
        fn layer_norm_wb_partials(&self, l: Launch, pw: &mut [f32], pb: &mut [f32], dy: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], rows: usize, cols: usize, per_chunk: usize) {
            emu::layer_norm_wb_partials(l.grid, l.block, pw, pb, dy, x, mean, rstd, rows, cols, per_chunk)
        }
        fn col_sum_partials(&self, l: Launch, part: &mut [f32], a: &[f32], rows: usize, cols: usize, per_chunk: usize) {
            emu::col_sum_partials(l.grid, l.block, part, a, rows, cols, per_chunk)
        }
        fn col_sum_finish(&self, l: Launch, out: &mut [f32], part: &[f32], chunks: usize, cols: usize, scale: f32) {
            emu::col_sum_finish(l.grid, l.block, out, part, chunks, cols, scale)
        }
        fn add_fwd(&self, l: Launch, y: &mut [f32], a: &[f32], b: &[f32]) {
            emu::add_fwd(l.grid, l.block, y, a, b)
        }
        fn add_into(&self, l: Launch, dst: &mut [f32], src: &[f32]) {
            emu::add_into(l.grid, l.block, dst, src)
        }
        fn fill_rows(&self, l: Launch, y: &mut [f32], b: &[f32]) {
            emu::fill_rows(l.grid, l.block, y, b)
        }
        fn act_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], kind: i32) {
            emu::act_fwd(l.grid, l.block, y, x, kind)
        }
        fn act_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], kind: i32) {
            emu::act_bwd(l.grid, l.block, dx, dy, x, kind)
        }
        fn softmax_rows_fwd(&self, l: Launch, p: &mut [f32], s: &[f32], rows: usize, n: usize, scale: f32, q_len: usize) {
            emu::softmax_rows_fwd(l.grid, l.block, p, s, rows, n, scale, q_len)
        }
        fn softmax_rows_bwd(&self, l: Launch, ds: &mut [f32], p: &[f32], dp: &[f32], rows: usize, n: usize, scale: f32) {
            emu::softmax_rows_bwd(l.grid, l.block, ds, p, dp, rows, n, scale)
        }
        fn attention_fwd(&self, l: Launch, o: &mut [f32], lse: &mut [f32], qkv: &[f32], at: QkvAt, d: AttnDims) {
            emu::attention_fwd(l.grid, l.block, o, lse, qkv, at, d)
        }
        fn attention_bwd_dot(&self, l: Launch, dsum: &mut [f32], dout: &[f32], o: &[f32], d: AttnDims) {
            emu::attention_bwd_dot(l.grid, l.block, dsum, dout, o, d)
        }
        fn attention_bwd(&self, l: Launch, dkdv: bool, dqkv: &mut [f32], dout: &[f32], qkv: &[f32], at: QkvAt, lse: &[f32], dsum: &[f32], d: AttnDims) {
            emu::attention_bwd(l.grid, l.block, dkdv, dqkv, dout, qkv, at, lse, dsum, d)
        }
        fn cross_entropy_fwd(&self, l: Launch, loss: &mut [f32], dlogits: Option<&mut [f32]>, logits: &[f32], targets: &[i64], rows: usize, v: usize, dscale: f32, dscale_dev: Option<&[f32]>) {
            emu::cross_entropy_fwd(l.grid, l.block, loss, dlogits, logits, targets, rows, v, dscale, dscale_dev)
        }
        fn embedding_fwd(&self, l: Launch, out: &mut [f32], ids: &[i64], table: &[f32], dim: usize) {
            emu::embedding_fwd(l.grid, l.block, out, ids, table, dim)
        }
        fn embedding_bwd(&self, l: Launch, dtable: &mut [f32], dout: &[f32], order: &[i32], starts: &[i32], uniq: &[i32], dim: usize) {
            emu::embedding_bwd(l.grid, l.block, dtable, dout, order, starts, uniq, dim)
        }
        fn adamw(&self, l: Launch, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], a: AdamwArgs) {
            emu::adamw(l.grid, l.block, w, m, v, g, a)
        }
        fn keep_scales(&self, l: Launch, out: &mut [f32], seed: u64, p: f32, scale: f32) {
            emu::keep_scales(l.grid, l.block, out, seed, p, scale)
        }
        fn dropout_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], seed: u64, p: f32, scale: f32) {
            emu::dropout_fwd(l.grid, l.block, y, x, seed, p, scale)
        }
        fn dropout_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], seed: u64, p: f32, scale: f32) {
            emu::dropout_bwd(l.grid, l.block, dx, dy, seed, p, scale)
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu_runner {
    //! The same kernels on the GPU: inputs copied over, one launch, outputs copied back.
    #![allow(unsafe_code)]
    use super::*;
    use cudarc::driver::{CudaDevice, CudaSlice, DevicePtr, DeviceRepr, LaunchAsync, LaunchConfig};
    use std::sync::Arc;
    use tfm_runtime::cuda_kernels::{device, func, ByValue};

    pub struct Gpu;

    fn dev() -> &'static Arc<CudaDevice> {
        device().unwrap_or_else(|e| panic!("no CUDA device for the kernel tests: {e}"))
    }
    fn up<T: DeviceRepr + Clone + Unpin>(x: &[T]) -> CudaSlice<T> {
        dev().htod_sync_copy(x).unwrap_or_else(|e| panic!("copy to the GPU: {e:?}"))
    }
    fn down(from: &CudaSlice<f32>, to: &mut [f32]) {
        dev().dtoh_sync_copy_into(from, to).unwrap_or_else(|e| panic!("copy from the GPU: {e:?}"))
    }
    /// An optional input as a kernel pointer (null when absent).
    fn ptr(x: &Option<CudaSlice<f32>>) -> u64 {
        x.as_ref().map_or(0, |s| *s.device_ptr())
    }
    fn cfg(l: Launch) -> LaunchConfig {
        LaunchConfig { grid_dim: (l.grid.0, l.grid.1, 1), block_dim: (l.block, 1, 1), shared_mem_bytes: 0 }
    }
    macro_rules! launch {
        ($name:literal, $l:expr, $args:expr) => {{
            let f = func($name).unwrap_or_else(|e| panic!("{e}"));
            // SAFETY: every buffer was allocated above with the lengths the kernel indexes
            // (the emulator's wrappers check the same lengths on the CPU).
            unsafe { f.launch(cfg($l), $args) }.unwrap_or_else(|e| panic!("launching {}: {e:?}", $name));
            dev().synchronize().unwrap_or_else(|e| panic!("running {}: {e:?}", $name));
        }};
    }

    impl Runner for Gpu {
        fn bitwise(&self) -> bool {
            false
        }
        fn layer_norm_fwd(&self, l: Launch, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, rows: usize, cols: usize, eps: f32) {
            let (mut yd, mut md, mut rd, xd) = (up(y), up(mean), up(rstd), up(x));
            let (wd, bd) = (w.map(up), b.map(up));
            launch!("layer_norm_fwd", l, (&mut yd, &mut md, &mut rd, &xd, ptr(&wd), ptr(&bd), rows as i32, cols as i32, eps));
            down(&yd, y);
            down(&md, mean);
            down(&rd, rstd);
        }
        fn layer_norm_bwd_dx(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], w: Option<&[f32]>, mean: &[f32], rstd: &[f32], rows: usize, cols: usize) {
            let (mut dxd, dyd, xd, wd, md, rd) = (up(dx), up(dy), up(x), w.map(up), up(mean), up(rstd));
            launch!("layer_norm_bwd_dx", l, (&mut dxd, &dyd, &xd, ptr(&wd), &md, &rd, rows as i32, cols as i32));
            down(&dxd, dx);
        }
        fn layer_norm_wb_partials(&self, l: Launch, pw: &mut [f32], pb: &mut [f32], dy: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], rows: usize, cols: usize, per_chunk: usize) {
            let (mut pwd, mut pbd, dyd, xd, md, rd) = (up(pw), up(pb), up(dy), up(x), up(mean), up(rstd));
            launch!("layer_norm_wb_partials", l, (&mut pwd, &mut pbd, &dyd, &xd, &md, &rd, rows as i32, cols as i32, per_chunk as i32));
            down(&pwd, pw);
            down(&pbd, pb);
        }
        fn col_sum_partials(&self, l: Launch, part: &mut [f32], a: &[f32], rows: usize, cols: usize, per_chunk: usize) {
            let (mut pd, ad) = (up(part), up(a));
            launch!("col_sum_partials", l, (&mut pd, &ad, rows as i32, cols as i32, per_chunk as i32));
            down(&pd, part);
        }
        fn col_sum_finish(&self, l: Launch, out: &mut [f32], part: &[f32], chunks: usize, cols: usize, scale: f32) {
            let (mut od, pd) = (up(out), up(part));
            launch!("col_sum_finish", l, (&mut od, &pd, chunks as i32, cols as i32, scale));
            down(&od, out);
        }
        fn add_fwd(&self, l: Launch, y: &mut [f32], a: &[f32], b: &[f32]) {
            let (mut yd, ad, bd) = (up(y), up(a), up(b));
            launch!("add_fwd", l, (&mut yd, &ad, &bd, y.len() as i64));
            down(&yd, y);
        }
        fn add_into(&self, l: Launch, dst: &mut [f32], src: &[f32]) {
            let (mut dd, sd) = (up(dst), up(src));
            launch!("add_into", l, (&mut dd, &sd, dst.len() as i64));
            down(&dd, dst);
        }
        fn fill_rows(&self, l: Launch, y: &mut [f32], b: &[f32]) {
            let (mut yd, bd) = (up(y), up(b));
            launch!("fill_rows", l, (&mut yd, &bd, (y.len() / b.len()) as i64, b.len() as i32));
            down(&yd, y);
        }
        fn act_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], kind: i32) {
            let (mut yd, xd) = (up(y), up(x));
            launch!("act_fwd", l, (&mut yd, &xd, x.len() as i64, kind));
            down(&yd, y);
        }
        fn act_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], x: &[f32], kind: i32) {
            let (mut dxd, dyd, xd) = (up(dx), up(dy), up(x));
            launch!("act_bwd", l, (&mut dxd, &dyd, &xd, x.len() as i64, kind));
            down(&dxd, dx);
        }
        fn softmax_rows_fwd(&self, l: Launch, p: &mut [f32], s: &[f32], rows: usize, n: usize, scale: f32, q_len: usize) {
            let (mut pd, sd) = (up(p), up(s));
            launch!("softmax_rows_fwd", l, (&mut pd, &sd, rows as i32, n as i32, scale, q_len as i32));
            down(&pd, p);
        }
        fn softmax_rows_bwd(&self, l: Launch, ds: &mut [f32], p: &[f32], dp: &[f32], rows: usize, n: usize, scale: f32) {
            let (mut dsd, pd, dpd) = (up(ds), up(p), up(dp));
            launch!("softmax_rows_bwd", l, (&mut dsd, &pd, &dpd, rows as i32, n as i32, scale));
            down(&dsd, ds);
        }
        fn attention_fwd(&self, l: Launch, o: &mut [f32], lse: &mut [f32], qkv: &[f32], at: QkvAt, d: AttnDims) {
            let (mut od, mut ld, xd) = (up(o), up(lse), up(qkv));
            let base = *xd.device_ptr();
            let f = |off: usize| base + 4 * off as u64;
            launch!("attention_fwd", l, (&mut od, &mut ld, f(at.q), f(at.k), f(at.v), ByValue::from(d)));
            down(&od, o);
            down(&ld, lse);
        }
        fn attention_bwd_dot(&self, l: Launch, dsum: &mut [f32], dout: &[f32], o: &[f32], d: AttnDims) {
            let (mut sd, dd, od) = (up(dsum), up(dout), up(o));
            launch!("attention_bwd_dot", l, (&mut sd, &dd, &od, ByValue::from(d)));
            down(&sd, dsum);
        }
        fn attention_bwd(&self, l: Launch, dkdv: bool, dqkv: &mut [f32], dout: &[f32], qkv: &[f32], at: QkvAt, lse: &[f32], dsum: &[f32], d: AttnDims) {
            let (gd, dd, xd, ld, sd) = (up(dqkv), up(dout), up(qkv), up(lse), up(dsum));
            let (x, g) = (*xd.device_ptr(), *gd.device_ptr());
            let f = |base: u64, off: usize| base + 4 * off as u64;
            if dkdv {
                launch!("attention_bwd_dkdv", l, (f(g, at.k), f(g, at.v), &dd, f(x, at.q), f(x, at.k), f(x, at.v), &ld, &sd, ByValue::from(d)));
            } else {
                launch!("attention_bwd_dq", l, (f(g, at.q), &dd, f(x, at.q), f(x, at.k), f(x, at.v), &ld, &sd, ByValue::from(d)));
            }
            down(&gd, dqkv);
        }
        fn cross_entropy_fwd(&self, l: Launch, loss: &mut [f32], dlogits: Option<&mut [f32]>, logits: &[f32], targets: &[i64], rows: usize, v: usize, dscale: f32, dscale_dev: Option<&[f32]>) {
            let (mut ld, xd, td) = (up(loss), up(logits), up(targets));
            let dd = dlogits.as_deref().map(up);
            let gd = dscale_dev.map(up);
            launch!("cross_entropy_fwd", l, (&mut ld, ptr(&dd), &xd, &td, rows as i32, v as i32, dscale, ptr(&gd)));
            down(&ld, loss);
            if let (Some(d), Some(dd)) = (dlogits, dd) {
                down(&dd, d);
            }
        }
        fn embedding_fwd(&self, l: Launch, out: &mut [f32], ids: &[i64], table: &[f32], dim: usize) {
            let (mut od, id, td) = (up(out), up(ids), up(table));
            launch!("embedding_fwd", l, (&mut od, &id, &td, ids.len() as i32, dim as i32));
            down(&od, out);
        }
        fn embedding_bwd(&self, l: Launch, dtable: &mut [f32], dout: &[f32], order: &[i32], starts: &[i32], uniq: &[i32], dim: usize) {
            let (mut td, dd, od, sd, ud) = (up(dtable), up(dout), up(order), up(starts), up(uniq));
            launch!("embedding_bwd", l, (&mut td, &dd, &od, &sd, &ud, uniq.len() as i32, dim as i32));
            down(&td, dtable);
        }
        fn adamw(&self, l: Launch, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], a: AdamwArgs) {
            let (mut wd, mut md, mut vd, gd) = (up(w), up(m), up(v), up(g));
            launch!("adamw", l, (&mut wd, &mut md, &mut vd, &gd, w.len() as i64, ByValue::from(a)));
            down(&wd, w);
            down(&md, m);
            down(&vd, v);
        }
        fn keep_scales(&self, l: Launch, out: &mut [f32], seed: u64, p: f32, scale: f32) {
            let mut od = up(out);
            launch!("keep_scales_f32", l, (&mut od, out.len() as u64, seed, p, scale));
            down(&od, out);
        }
        fn dropout_fwd(&self, l: Launch, y: &mut [f32], x: &[f32], seed: u64, p: f32, scale: f32) {
            let (mut yd, xd) = (up(y), up(x));
            launch!("dropout_fwd", l, (&mut yd, &xd, x.len() as u64, seed, p, scale));
            down(&yd, y);
        }
        fn dropout_bwd(&self, l: Launch, dx: &mut [f32], dy: &[f32], seed: u64, p: f32, scale: f32) {
            let (mut dxd, dyd) = (up(dx), up(dy));
            launch!("dropout_bwd", l, (&mut dxd, &dyd, dy.len() as u64, seed, p, scale));
            down(&dxd, dx);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data and comparisons

/// Deterministic values in [-1, 1): a linear congruential generator.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Every `got[i]` within `tol * (1 + |want[i]|)` of `want[i]`.
fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, expected {w} (error {err:.3e}, tolerance {tol:e})");
    }
}

/// The central difference of `f` at `x`, one coordinate at a time (f64).
fn numeric_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let (h, x0) = (1e-6 * (1.0 + x[i].abs()), x[i]);
            x[i] = x0 + h;
            let up = f(&x);
            x[i] = x0 - h;
            let down = f(&x);
            x[i] = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// erf in f64: its Taylor series below 3, the asymptotic series of erfc above (both far more
/// accurate than f32).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let z = 1.0 / (2.0 * a * a);
        let series = 1.0 - z + 3.0 * z * z - 15.0 * z * z * z + 105.0 * z.powi(4);
        1.0 - (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series
    };
    r.copysign(x)
}

/// The activations in f64, by the kernels' codes.
fn act64(x: f64, kind: i32) -> f64 {
    match kind {
        kernels::act::GELU_ERF => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        kernels::act::SILU => x / (1.0 + (-x).exp()),
        kernels::act::RELU => x.max(0.0),
        _ => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        }
    }
}

/// Layer norm of one row in f64: (y, mean, rstd).
fn layer_norm_row(x: &[f64], w: Option<&[f32]>, b: Option<&[f32]>, eps: f64) -> (Vec<f64>, f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    let y = x
        .iter()
        .enumerate()
        .map(|(c, v)| (v - mean) * rstd * w.map_or(1.0, |w| w[c] as f64) + b.map_or(0.0, |b| b[c] as f64))
        .collect();
    (y, mean, rstd)
}

/// Softmax of one row in f64 over the first `lim` entries (the rest 0).
fn softmax_row(s: &[f64], scale: f64, lim: usize) -> Vec<f64> {
    let m = s[..lim].iter().map(|v| v * scale).fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = s[..lim].iter().map(|v| (v * scale - m).exp()).sum();
    (0..s.len()).map(|j| if j < lim { (s[j] * scale - m).exp() / z } else { 0.0 }).collect()
}

// ---------------------------------------------------------------------------------------------
// The checks, one per kernel family

fn check_layer_norm(r: &dyn Runner) {
    // rows not a multiple of a block's 4, widths below, at and above a warp's 32
    for (rows, cols, affine) in [(37, 67, true), (5, 384, false), (3, 8, true)] {
        let x: Vec<f32> = data(rows * cols, 1).iter().enumerate().map(|(i, v)| 3.0 * v + (i / cols) as f32 * 0.25).collect();
        let w: Vec<f32> = data(cols, 2).iter().map(|v| 1.0 + 0.5 * v).collect();
        let b = data(cols, 3);
        let (w, b) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
        let eps = 1e-5;
        let l = kernels::warp_per_row(rows);
        let (mut y, mut mean, mut rstd) = (vec![f32::NAN; rows * cols], vec![f32::NAN; rows], vec![f32::NAN; rows]);
        r.layer_norm_fwd(l, &mut y, &mut mean, &mut rstd, &x, w, b, rows, cols, eps);

        let x64 = wide(&x);
        let (mut want_y, mut want_mean, mut want_rstd) = (vec![], vec![], vec![]);
        for row in x64.chunks(cols) {
            let (y, m, s) = layer_norm_row(row, w, b, eps as f64);
            want_y.extend(y);
            want_mean.push(m);
            want_rstd.push(s);
        }
        close("layer norm y", &y, &want_y, 2e-6);
        close("layer norm mean", &mean, &want_mean, 1e-6);
        close("layer norm rstd", &rstd, &want_rstd, 2e-6);

        // backward of sum(dy * y): dx by finite differences, added to what dx held
        let dy = data(rows * cols, 4);
        let dx0 = data(rows * cols, 5);
        let mut dx = dx0.clone();
        r.layer_norm_bwd_dx(l, &mut dx, &dy, &x, w, &mean, &rstd, rows, cols);
        let mut want_dx = wide(&dx0);
        for (k, row) in x64.chunks(cols).enumerate() {
            let dyr = &dy[k * cols..(k + 1) * cols];
            let g = numeric_grad(row, |xr| layer_norm_row(xr, w, b, eps as f64).0.iter().zip(dyr).map(|(y, &d)| y * d as f64).sum());
            for (c, g) in g.into_iter().enumerate() {
                want_dx[k * cols + c] += g;
            }
        }
        close("layer norm dx", &dx, &want_dx, 1e-4);

        // dw = sum over rows of dy * xhat, db = sum of dy, added to what they held
        let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
        let (mut pw, mut pb) = (vec![f32::NAN; chunks * cols], vec![f32::NAN; chunks * cols]);
        r.layer_norm_wb_partials(lp, &mut pw, &mut pb, &dy, &x, &mean, &rstd, rows, cols, per);
        let (dw0, db0) = (data(cols, 6), data(cols, 7));
        let (mut dw, mut db) = (dw0.clone(), db0.clone());
        r.col_sum_finish(lf, &mut dw, &pw, chunks, cols, 1.0);
        r.col_sum_finish(lf, &mut db, &pb, chunks, cols, 1.0);
        let (mut want_dw, mut want_db) = (wide(&dw0), wide(&db0));
        for k in 0..rows {
            for c in 0..cols {
                let d = dy[k * cols + c] as f64;
                want_dw[c] += d * (x64[k * cols + c] - want_mean[k]) * want_rstd[k];
                want_db[c] += d;
            }
        }
        close("layer norm dw", &dw, &want_dw, 1e-5);
        close("layer norm db", &db, &want_db, 1e-5);
    }
}

fn check_column_sums(r: &dyn Runner) {
    for (rows, cols) in [(1000, 300), (7, 1), (16_384 / 8, 40)] {
        let a = data(rows * cols, 11);
        let (chunks, per, lp, lf) = kernels::column_sums(rows, cols);
        let run = || {
            let mut part = vec![f32::NAN; chunks * cols];
            r.col_sum_partials(lp, &mut part, &a, rows, cols, per);
            let mut out = vec![0.5f32; cols];
            r.col_sum_finish(lf, &mut out, &part, chunks, cols, 0.25);
            out
        };
        let out = run();
        let want: Vec<f64> = (0..cols).map(|c| 0.5 + 0.25 * (0..rows).map(|k| a[k * cols + c] as f64).sum::<f64>()).collect();
        close("column sums", &out, &want, 1e-4);
        let again = run();
        assert!(out.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "column sums differ between two runs");
    }
}

fn check_sums_and_fills(r: &dyn Runner) {
    let n = 3001;
    let (a, b) = (data(n, 111), data(n, 112));
    let l = kernels::elementwise(n);
    let mut y = vec![f32::NAN; n];
    r.add_fwd(l, &mut y, &a, &b);
    assert!((0..n).all(|i| y[i].to_bits() == (a[i] + b[i]).to_bits()), "add_fwd: not a + b");
    let mut d = a.clone();
    r.add_into(l, &mut d, &b);
    assert!((0..n).all(|i| d[i].to_bits() == (a[i] + b[i]).to_bits()), "add_into: not a + b");
    let (rows, cols) = (41, 73);
    let bias = data(cols, 113);
    let mut f = vec![f32::NAN; rows * cols];
    r.fill_rows(kernels::elementwise(rows * cols), &mut f, &bias);
    assert!(f.chunks(cols).all(|row| row == &bias[..]), "fill_rows: a row that is not the bias");
}

fn check_activations(r: &dyn Runner) {
    let n = 5000;
    let x: Vec<f32> = data(n, 21).iter().map(|v| 5.0 * v).collect();
    let l = kernels::elementwise(n);
    let names = ["gelu (tanh)", "gelu (erf)", "silu", "relu"];
    for kind in [kernels::act::GELU_TANH, kernels::act::GELU_ERF, kernels::act::SILU, kernels::act::RELU] {
        let name = names[kind as usize];
        let mut y = vec![f32::NAN; n];
        r.act_fwd(l, &mut y, &x, kind);
        let want: Vec<f64> = x.iter().map(|&v| act64(v as f64, kind)).collect();
        close(name, &y, &want, 2e-6);

        let (dy, dx0) = (data(n, 22), data(n, 23));
        let mut dx = dx0.clone();
        r.act_bwd(l, &mut dx, &dy, &x, kind);
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let v = x[i] as f64;
                let h = 1e-6;
                dx0[i] as f64 + dy[i] as f64 * (act64(v + h, kind) - act64(v - h, kind)) / (2.0 * h)
            })
            .collect();
        close(&format!("{name} dx"), &dx, &want, 2e-5);
    }
}

fn check_softmax(r: &dyn Runner) {
    // (batch x heads, queries, keys, causal): square causal, more keys than queries (a cache),
    // more queries than keys (the first rows see nothing), no mask
    for (bh, q, n, causal) in [(6, 19, 19, true), (2, 5, 70, true), (1, 40, 33, true), (7, 1, 45, false)] {
        let rows = bh * q;
        let s: Vec<f32> = data(rows * n, 31).iter().map(|v| 4.0 * v).collect();
        let scale = 1.0 / (n as f32).sqrt();
        let q_len = if causal { q } else { 0 };
        let l = kernels::warp_per_row(rows);
        let mut p = vec![f32::NAN; rows * n];
        r.softmax_rows_fwd(l, &mut p, &s, rows, n, scale, q_len);
        let lim = |row: usize| if causal { (row % q + n + 1).saturating_sub(q).min(n) } else { n };
        let s64 = wide(&s);
        let mut want = vec![];
        for row in 0..rows {
            let lim = lim(row);
            if lim == 0 {
                want.extend(std::iter::repeat(0.0).take(n));
            } else {
                want.extend(softmax_row(&s64[row * n..(row + 1) * n], scale as f64, lim));
            }
        }
        close("softmax", &p, &want, 1e-6);
        for row in 0..rows {
            assert!(p[row * n + lim(row)..(row + 1) * n].iter().all(|&v| v == 0.0), "softmax row {row}: a masked key has weight");
        }

        // backward of sum(dp * p) with respect to the scores
        let dp = data(rows * n, 32);
        let mut ds = vec![f32::NAN; rows * n];
        r.softmax_rows_bwd(l, &mut ds, &p, &dp, rows, n, scale);
        let mut want = vec![];
        for row in 0..rows {
            let lim = lim(row);
            let dpr = &dp[row * n..(row + 1) * n];
            if lim == 0 {
                want.extend(std::iter::repeat(0.0).take(n));
            } else {
                want.extend(numeric_grad(&s64[row * n..(row + 1) * n], |sr| softmax_row(sr, scale as f64, lim).iter().zip(dpr).map(|(p, &d)| p * d as f64).sum()));
            }
        }
        close("softmax ds", &ds, &want, 2e-5);
    }
}

/// Attention in f64 over a packed q/k/v buffer: (o in `d.o_row` layout, logsumexp per query;
/// 0 for a query that sees no key). `mult` holds the dropout multipliers of every
/// (batch, head, query, key), in that order.
fn attention_ref(qkv: &[f64], at: QkvAt, d: &AttnDims, mult: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (bs, h_n, hkv, tq, tk, hd) = (d.batch as usize, d.heads as usize, d.kv_heads as usize, d.q_len as usize, d.k_len as usize, d.head_dim as usize);
    let (qr, kr, vr, or) = (d.q_row as usize, d.k_row as usize, d.v_row as usize, d.o_row as usize);
    let mut o = vec![0.0; bs * tq * or];
    let mut lse = vec![0.0; bs * h_n * tq];
    for b in 0..bs {
        for h in 0..h_n {
            let g = h / (h_n / hkv);
            for i in 0..tq {
                let lim = if d.causal != 0 { (i + tk + 1).saturating_sub(tq).min(tk) } else { tk };
                if lim == 0 {
                    continue;
                }
                let q = &qkv[at.q + (b * tq + i) * qr + h * hd..][..hd];
                let s: Vec<f64> = (0..lim)
                    .map(|j| {
                        let k = &qkv[at.k + (b * tk + j) * kr + g * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() * d.scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                lse[(b * h_n + h) * tq + i] = m + z.ln();
                for (j, sj) in s.iter().enumerate() {
                    let p = (sj - m).exp() / z * mult[((b * h_n + h) * tq + i) * tk + j] as f64;
                    let v = &qkv[at.v + (b * tk + j) * vr + g * hd..][..hd];
                    for c in 0..hd {
                        o[(b * tq + i) * or + h * hd + c] += p * v[c];
                    }
                }
            }
        }
    }
    (o, lse)
}

fn check_attention(r: &dyn Runner) {
    struct Case {
        batch: usize,
        heads: usize,
        kv_heads: usize,
        q_len: usize,
        k_len: usize,
        hd: usize,
        causal: bool,
        p_drop: f32,
        /// q, k and v interleaved in rows (a fused projection's output), else three blocks
        fused: bool,
    }
    let cases = [
        // self-attention from a fused projection, grouped key/value heads, a head dim that is not
        // a multiple of 32
        Case { batch: 2, heads: 4, kv_heads: 2, q_len: 21, k_len: 21, hd: 40, causal: true, p_drop: 0.0, fused: true },
        // a few queries over a longer cache, with dropout
        Case { batch: 1, heads: 3, kv_heads: 3, q_len: 5, k_len: 23, hd: 32, causal: true, p_drop: 0.3, fused: false },
        // cross-attention, no mask, head dim over 32
        Case { batch: 2, heads: 2, kv_heads: 2, q_len: 9, k_len: 14, hd: 64, causal: false, p_drop: 0.0, fused: false },
        // more queries than keys: the first four see nothing
        Case { batch: 1, heads: 1, kv_heads: 1, q_len: 12, k_len: 8, hd: 16, causal: true, p_drop: 0.0, fused: false },
    ];
    for (n, c) in cases.iter().enumerate() {
        let (qw, kw) = (c.heads * c.hd, c.kv_heads * c.hd);
        let (at, row_q, row_kv, len) = if c.fused {
            let row = qw + 2 * kw;
            (QkvAt { q: 0, k: qw, v: qw + kw }, row, row, c.batch * c.q_len * row)
        } else {
            let (nq, nk) = (c.batch * c.q_len * qw, c.batch * c.k_len * kw);
            (QkvAt { q: 0, k: nq, v: nq + nk }, qw, kw, nq + 2 * nk)
        };
        let d = AttnDims {
            batch: c.batch as i32,
            heads: c.heads as i32,
            kv_heads: c.kv_heads as i32,
            q_len: c.q_len as i32,
            k_len: c.k_len as i32,
            head_dim: c.hd as i32,
            q_row: row_q as i64,
            k_row: row_kv as i64,
            v_row: row_kv as i64,
            o_row: qw as i64,
            scale: 1.0 / (c.hd as f32).sqrt(),
            causal: c.causal as i32,
            p_drop: c.p_drop,
            drop_scale: 1.0 / (1.0 - c.p_drop),
            seed: 99 + n as u64,
        };
        assert_eq!(d.unsupported(), None);
        let qkv: Vec<f32> = data(len, 81 + n as u64).iter().map(|v| 2.0 * v).collect();
        let queries = c.batch * c.heads * c.q_len;
        let mut mult = vec![1.0f32; queries * c.k_len];
        if c.p_drop > 0.0 {
            r.keep_scales(kernels::elementwise(mult.len()), &mut mult, d.seed, d.p_drop, d.drop_scale);
        }
        let lq = kernels::warp_per_row(queries);
        let (mut o, mut lse) = (vec![f32::NAN; c.batch * c.q_len * qw], vec![f32::NAN; queries]);
        r.attention_fwd(lq, &mut o, &mut lse, &qkv, at, d);
        let qkv64 = wide(&qkv);
        let (want_o, want_lse) = attention_ref(&qkv64, at, &d, &mult);
        close(&format!("attention case {n}: o"), &o, &want_o, 2e-6);
        close(&format!("attention case {n}: logsumexp"), &lse, &want_lse, 2e-6);

        // backward of sum(dout * o): every q, k, v gradient against finite differences
        let dout = data(o.len(), 91 + n as u64);
        let mut dsum = vec![f32::NAN; queries];
        r.attention_bwd_dot(lq, &mut dsum, &dout, &o, d);
        let want_dsum: Vec<f64> = (0..queries)
            .map(|w| {
                let (b, h, i) = (w / (c.heads * c.q_len), (w / c.q_len) % c.heads, w % c.q_len);
                let at = (b * c.q_len + i) * qw + h * c.hd;
                (0..c.hd).map(|k| dout[at + k] as f64 * want_o[at + k]).sum()
            })
            .collect();
        close(&format!("attention case {n}: dout . o"), &dsum, &want_dsum, 1e-5);
        let g0 = data(len, 101 + n as u64);
        let mut g = g0.clone();
        r.attention_bwd(lq, false, &mut g, &dout, &qkv, at, &lse, &dsum, d);
        r.attention_bwd(kernels::warp_per_row(c.batch * c.kv_heads * c.k_len), true, &mut g, &dout, &qkv, at, &lse, &dsum, d);
        let loss = |x: &[f64]| attention_ref(x, at, &d, &mult).0.iter().zip(&dout).map(|(o, &g)| o * g as f64).sum::<f64>();
        let mut x = qkv64.clone();
        for i in (0..len).step_by(7) {
            let (h, x0) = (1e-6, x[i]);
            x[i] = x0 + h;
            let up = loss(&x);
            x[i] = x0 - h;
            let down = loss(&x);
            x[i] = x0;
            let want = g0[i] as f64 + (up - down) / (2.0 * h);
            let err = (g[i] as f64 - want).abs();
            assert!(err <= 2e-5 * (1.0 + want.abs()), "attention case {n}: gradient of element {i}: got {}, expected {want} (error {err:.3e})", g[i]);
        }
    }
}

fn check_cross_entropy(r: &dyn Runner) {
    for (rows, v) in [(23, 1000), (3, 5)] {
        let logits: Vec<f32> = data(rows * v, 41).iter().map(|x| 4.0 * x).collect();
        let targets: Vec<i64> = (0..rows).map(|i| if i % 8 == 3 { -100 } else { ((i * 7919 + 13) % v) as i64 }).collect();
        let count = targets.iter().filter(|&&t| t != -100).count();
        let dscale = 1.0 / count as f32;
        let l = kernels::block_per_row(rows);
        // the gradient is added to what dlogits held, times the upstream gradient read on the device
        let d0 = data(rows * v, 42);
        let upstream = 0.75f32;
        let (mut loss, mut d) = (vec![f32::NAN; rows], d0.clone());
        r.cross_entropy_fwd(l, &mut loss, Some(&mut d), &logits, &targets, rows, v, dscale, Some(&[upstream]));
        let (mut want_loss, mut want_d) = (vec![], vec![]);
        for (row, &t) in targets.iter().enumerate() {
            let x = wide(&logits[row * v..(row + 1) * v]);
            let p = softmax_row(&x, 1.0, v);
            let base = &d0[row * v..(row + 1) * v];
            if t == -100 {
                want_loss.push(0.0);
                want_d.extend(base.iter().map(|&b| b as f64));
            } else {
                want_loss.push(-p[t as usize].ln());
                let f = dscale as f64 * upstream as f64;
                want_d.extend(p.iter().enumerate().map(|(j, p)| base[j] as f64 + (p - if j == t as usize { 1.0 } else { 0.0 }) * f));
            }
        }
        close("cross-entropy loss", &loss, &want_loss, 2e-6);
        close("cross-entropy dlogits", &d, &want_d, 1e-6);

        // evaluation: the loss alone
        let mut only = vec![f32::NAN; rows];
        r.cross_entropy_fwd(l, &mut only, None, &logits, &targets, rows, v, dscale, None);
        assert_eq!(only, loss, "cross-entropy: the loss changes when no gradient is asked for");
    }
}

fn check_embedding(r: &dyn Runner) {
    let (vocab, dim, n) = (50, 70, 300);
    let table = data(vocab * dim, 51);
    let ids: Vec<usize> = (0..n).map(|i| (i * i * 31 + 7) % vocab).collect();
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let mut out = vec![f32::NAN; n * dim];
    r.embedding_fwd(kernels::elementwise(n * dim), &mut out, &ids64, &table, dim);
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(out[i * dim..(i + 1) * dim], table[id * dim..(id + 1) * dim], "embedding row {i}");
    }

    let dout = data(n * dim, 52);
    let (order, starts, uniq) = kernels::group_ids(&ids);
    let d0 = data(vocab * dim, 53);
    let run = || {
        let mut d = d0.clone();
        r.embedding_bwd(kernels::block_per_row(uniq.len()), &mut d, &dout, &order, &starts, &uniq, dim);
        d
    };
    let d = run();
    let mut want = wide(&d0);
    for (i, &id) in ids.iter().enumerate() {
        for c in 0..dim {
            want[id * dim + c] += dout[i * dim + c] as f64;
        }
    }
    close("embedding dtable", &d, &want, 1e-5);
    assert!(d.iter().zip(run()).all(|(a, b)| a.to_bits() == b.to_bits()), "embedding gradients differ between two runs");
}

fn check_adamw(r: &dyn Runner) {
    let n = 10_000;
    let (b1, b2, eps, lr, wd, t) = (0.9f64, 0.95f64, 1e-8f64, 6e-4f64, 0.1f64, 7i32);
    for (decay, gscale) in [(Some((1.0 - lr * wd) as f32), 1.0f32), (None, 0.37)] {
        let c = AdamwConsts {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_sqrt_bc2: (1.0 / (1.0 - b2.powi(t)).sqrt()) as f32,
            eps: eps as f32,
            step: (lr / (1.0 - b1.powi(t))) as f32,
            decay,
        };
        let g = data(n, 61);
        let (w0, m0) = (data(n, 62), data(n, 63).iter().map(|v| 0.1 * v).collect::<Vec<_>>());
        let v0: Vec<f32> = data(n, 64).iter().map(|v| 0.01 * v * v).collect();
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        let a = AdamwArgs { b1: c.b1, one_minus_b1: c.one_minus_b1, b2: c.b2, one_minus_b2: c.one_minus_b2, inv_sqrt_bc2: c.inv_sqrt_bc2, eps: c.eps, step: c.step, decay: c.decay.unwrap_or(1.0), gscale };
        r.adamw(kernels::elementwise(n), &mut w, &mut m, &mut v, &g, a);
        // the CPU kernel on the scaled gradient (the kernel's first step, in f32)
        let gs: Vec<f32> = g.iter().map(|g| g * gscale).collect();
        let (mut ww, mut wm, mut wv) = (w0, m0, v0);
        adamw_slices(&c, &mut ww, &gs, &mut wm, &mut wv);
        if r.bitwise() {
            for (what, got, want) in [("w", &w, &ww), ("m", &m, &wm), ("v", &v, &wv)] {
                assert!(got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "adamw {what}: not bit for bit the CPU kernel's");
            }
        } else {
            close("adamw w", &w, &wide(&ww), 1e-6);
            close("adamw m", &m, &wide(&wm), 1e-6);
            close("adamw v", &v, &wide(&wv), 1e-6);
        }
    }
}

fn check_dropout(r: &dyn Runner) {
    let n = 20_000;
    let (p, scale) = (0.2f32, 1.25f32);
    let l = kernels::elementwise(n);
    let mut ks = vec![f32::NAN; n];
    r.keep_scales(l, &mut ks, 42, p, scale);
    assert!(ks.iter().all(|&k| k == 0.0 || k == scale), "dropout multipliers other than 0 and the scale");
    let dropped = ks.iter().filter(|&&k| k == 0.0).count() as f64 / n as f64;
    let sd = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
    assert!((dropped - p as f64).abs() < 5.0 * sd, "dropped {dropped:.4} of the elements, expected {p} (sd {sd:.4})");
    // neighbours are independent: pairs both dropped at about p^2
    let both = ks.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64 / (n - 1) as f64;
    assert!((both - (p * p) as f64).abs() < 0.01, "neighbouring elements dropped together {both:.4}, expected {:.4}", p * p);

    let x = data(n, 71);
    let mut y = vec![f32::NAN; n];
    r.dropout_fwd(l, &mut y, &x, 42, p, scale);
    assert!((0..n).all(|i| y[i].to_bits() == (if ks[i] == 0.0 { 0.0 } else { x[i] * scale }).to_bits()), "dropout: y is not x times the multipliers of the same seed");
    let (dy, dx0) = (data(n, 72), data(n, 73));
    let mut dx = dx0.clone();
    r.dropout_bwd(l, &mut dx, &dy, 42, p, scale);
    assert!((0..n).all(|i| dx[i].to_bits() == (if ks[i] == 0.0 { dx0[i] } else { dx0[i] + dy[i] * scale }).to_bits()), "dropout backward: not the forward's mask");

    let mut other = vec![f32::NAN; n];
    r.keep_scales(l, &mut other, 43, p, scale);
    let differ = ks.iter().zip(&other).filter(|(a, b)| a != b).count() as f64 / n as f64;
    assert!(differ > 0.25, "seeds 42 and 43 draw nearly the same mask ({differ:.3} differ)");
}

macro_rules! on_runner {
    ($module:ident, $runner:expr) => {
        mod $module {
            use super::*;
            #[test]
            fn layer_norm_forward_and_backward() {
                check_layer_norm(&$runner)
            }
            #[test]
            fn column_sums_in_chunks() {
                check_column_sums(&$runner)
            }
            #[test]
            fn sums_and_row_fills() {
                check_sums_and_fills(&$runner)
            }
            #[test]
            fn activations() {
                check_activations(&$runner)
            }
            #[test]
            fn softmax_with_causal_mask() {
                check_softmax(&$runner)
            }
            #[test]
            fn fused_attention_forward_and_backward() {
                check_attention(&$runner)
            }
            #[test]
            fn cross_entropy_with_ignored_rows() {
                check_cross_entropy(&$runner)
            }
            #[test]
            fn embedding_lookup_and_gradient() {
                check_embedding(&$runner)
            }
            #[test]
            fn adamw_matches_the_cpu_kernel() {
                check_adamw(&$runner)
            }
            #[test]
            fn dropout_from_a_counter_hash() {
                check_dropout(&$runner)
            }
        }
    };
}

on_runner!(emu, emu_runner::Emu);
#[cfg(feature = "cuda")]
on_runner!(gpu, gpu_runner::Gpu);
