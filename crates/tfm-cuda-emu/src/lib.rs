//! Runs tfm's CUDA kernels (`tfm-kernels/src/kernels.cu`) on the CPU.
//!
//! The build compiles the kernel text as host C++ under `emu.h`, which runs each block's CUDA
//! threads as fibers on the calling thread (barriers, warp shuffles and shared memory behave as
//! on a GPU). The
//! functions here take host slices, check that they are as long as the kernel will index, and run
//! one kernel on the given grid: `grid` blocks (x, y) of `block` threads, a multiple of 32.
//!
//! This is for tests: it checks a kernel's logic and arithmetic, not its speed, under one
//! interleaving of its threads (a missing barrier can go unnoticed). The GPU's own `expf`, `erff`, `tanhf` and `rsqrtf` may differ from
//! the host's in the last bits.
#![allow(unsafe_code)]

use std::os::raw::c_int;
pub use tfm_kernels::{AdamwArgs, AttnDims};

type Grid = (u32, u32);

extern "C" {
    fn emu_layer_norm_fwd(gx: u32, gy: u32, b: u32, y: *mut f32, mean: *mut f32, rstd: *mut f32, x: *const f32, w: *const f32, bias: *const f32, rows: c_int, cols: c_int, eps: f32);
    fn emu_layer_norm_bwd_dx(gx: u32, gy: u32, b: u32, dx: *mut f32, dy: *const f32, x: *const f32, w: *const f32, mean: *const f32, rstd: *const f32, rows: c_int, cols: c_int);
    fn emu_layer_norm_wb_partials(gx: u32, gy: u32, b: u32, pw: *mut f32, pb: *mut f32, dy: *const f32, x: *const f32, mean: *const f32, rstd: *const f32, rows: c_int, cols: c_int, per_chunk: c_int);
    fn emu_col_sum_partials(gx: u32, gy: u32, b: u32, part: *mut f32, a: *const f32, rows: c_int, cols: c_int, per_chunk: c_int);
    fn emu_col_sum_finish(gx: u32, gy: u32, b: u32, out: *mut f32, part: *const f32, chunks: c_int, cols: c_int, scale: f32);
    fn emu_add_fwd(gx: u32, gy: u32, b: u32, y: *mut f32, a: *const f32, bb: *const f32, n: i64);
    fn emu_add_into(gx: u32, gy: u32, b: u32, dst: *mut f32, src: *const f32, n: i64);
    fn emu_fill_rows(gx: u32, gy: u32, b: u32, y: *mut f32, bias: *const f32, rows: i64, cols: c_int);
    fn emu_act_fwd(gx: u32, gy: u32, b: u32, y: *mut f32, x: *const f32, n: i64, kind: c_int);
    fn emu_act_bwd(gx: u32, gy: u32, b: u32, dx: *mut f32, dy: *const f32, x: *const f32, n: i64, kind: c_int);
    fn emu_softmax_rows_fwd(gx: u32, gy: u32, b: u32, p: *mut f32, s: *const f32, rows: c_int, n: c_int, scale: f32, q_len: c_int);
    fn emu_softmax_rows_bwd(gx: u32, gy: u32, b: u32, ds: *mut f32, p: *const f32, dp: *const f32, rows: c_int, n: c_int, scale: f32);
    fn emu_attention_fwd(gx: u32, gy: u32, b: u32, o: *mut f32, lse: *mut f32, q: *const f32, k: *const f32, v: *const f32, d: AttnDims);
    fn emu_attention_bwd_dot(gx: u32, gy: u32, b: u32, dsum: *mut f32, dout: *const f32, o: *const f32, d: AttnDims);
    fn emu_attention_bwd_dq(gx: u32, gy: u32, b: u32, dq: *mut f32, dout: *const f32, q: *const f32, k: *const f32, v: *const f32, lse: *const f32, dsum: *const f32, d: AttnDims);
    fn emu_attention_bwd_dkdv(gx: u32, gy: u32, b: u32, dk: *mut f32, dv: *mut f32, dout: *const f32, q: *const f32, k: *const f32, v: *const f32, lse: *const f32, dsum: *const f32, d: AttnDims);
    fn emu_cross_entropy_fwd(gx: u32, gy: u32, b: u32, loss: *mut f32, dlogits: *mut f32, logits: *const f32, targets: *const i64, rows: c_int, v: c_int, dscale: f32, dscale_dev: *const f32);
    fn emu_embedding_fwd(gx: u32, gy: u32, b: u32, out: *mut f32, ids: *const i64, table: *const f32, n: c_int, dim: c_int);
    fn emu_embedding_bwd(gx: u32, gy: u32, b: u32, dtable: *mut f32, dout: *const f32, order: *const c_int, starts: *const c_int, uniq: *const c_int, n_uniq: c_int, dim: c_int);
    fn emu_adamw(gx: u32, gy: u32, b: u32, w: *mut f32, m: *mut f32, v: *mut f32, g: *const f32, n: i64, c: AdamwArgs);
    fn emu_keep_scales_f32(gx: u32, gy: u32, b: u32, out: *mut f32, n: u64, seed: u64, p: f32, scale: f32);
    fn emu_dropout_fwd(gx: u32, gy: u32, b: u32, y: *mut f32, x: *const f32, n: u64, seed: u64, p: f32, scale: f32);
    fn emu_dropout_bwd(gx: u32, gy: u32, b: u32, dx: *mut f32, dy: *const f32, n: u64, seed: u64, p: f32, scale: f32);
}

fn check(what: &str, len: usize, need: usize) {
    assert!(len >= need, "tfm-cuda-emu: `{what}` holds {len} elements, the kernel reads {need}");
}

fn check_block(block: u32) {
    assert!(block > 0 && block % 32 == 0 && block <= 1024, "tfm-cuda-emu: a block of {block} threads (expected a multiple of 32, at most 1024)");
}

fn int(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or_else(|_| panic!("tfm-cuda-emu: {n} does not fit the kernel's int"))
}

fn opt(x: Option<&[f32]>, what: &str, need: usize) -> *const f32 {
    x.map_or(std::ptr::null(), |s| {
        check(what, s.len(), need);
        s.as_ptr()
    })
}

/// `layer_norm_fwd`: writes `y` (rows x cols), `mean` and `rstd` (rows).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_fwd(grid: Grid, block: u32, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, rows: usize, cols: usize, eps: f32) {
    check_block(block);
    for (what, len, need) in [("y", y.len(), rows * cols), ("mean", mean.len(), rows), ("rstd", rstd.len(), rows), ("x", x.len(), rows * cols)] {
        check(what, len, need);
    }
    let (w, b) = (opt(w, "w", cols), opt(b, "b", cols));
    // SAFETY: every buffer holds what the kernel indexes (checked above); the call returns after
    // every emulated thread has finished.
    unsafe { emu_layer_norm_fwd(grid.0, grid.1, block, y.as_mut_ptr(), mean.as_mut_ptr(), rstd.as_mut_ptr(), x.as_ptr(), w, b, int(rows), int(cols), eps) }
}

/// `layer_norm_bwd_dx`: adds into `dx`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd_dx(grid: Grid, block: u32, dx: &mut [f32], dy: &[f32], x: &[f32], w: Option<&[f32]>, mean: &[f32], rstd: &[f32], rows: usize, cols: usize) {
    check_block(block);
    for (what, len, need) in [("dx", dx.len(), rows * cols), ("dy", dy.len(), rows * cols), ("x", x.len(), rows * cols), ("mean", mean.len(), rows), ("rstd", rstd.len(), rows)] {
        check(what, len, need);
    }
    let w = opt(w, "w", cols);
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_layer_norm_bwd_dx(grid.0, grid.1, block, dx.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), w, mean.as_ptr(), rstd.as_ptr(), int(rows), int(cols)) }
}

/// `layer_norm_wb_partials`: writes `pw` and `pb` (chunks x cols, chunks = `grid.1`).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_wb_partials(grid: Grid, block: u32, pw: &mut [f32], pb: &mut [f32], dy: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], rows: usize, cols: usize, per_chunk: usize) {
    check_block(block);
    let chunks = grid.1 as usize;
    assert!(chunks * per_chunk >= rows, "tfm-cuda-emu: {chunks} chunks of {per_chunk} rows miss some of {rows}");
    for (what, len, need) in [("pw", pw.len(), chunks * cols), ("pb", pb.len(), chunks * cols), ("dy", dy.len(), rows * cols), ("x", x.len(), rows * cols), ("mean", mean.len(), rows), ("rstd", rstd.len(), rows)] {
        check(what, len, need);
    }
    // SAFETY: as in `layer_norm_fwd`; rows past `rows` are never read.
    unsafe { emu_layer_norm_wb_partials(grid.0, grid.1, block, pw.as_mut_ptr(), pb.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), mean.as_ptr(), rstd.as_ptr(), int(rows), int(cols), int(per_chunk)) }
}

/// `col_sum_partials`: writes `part` (chunks x cols, chunks = `grid.1`).
pub fn col_sum_partials(grid: Grid, block: u32, part: &mut [f32], a: &[f32], rows: usize, cols: usize, per_chunk: usize) {
    check_block(block);
    let chunks = grid.1 as usize;
    check("part", part.len(), chunks * cols);
    check("a", a.len(), rows * cols);
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_col_sum_partials(grid.0, grid.1, block, part.as_mut_ptr(), a.as_ptr(), int(rows), int(cols), int(per_chunk)) }
}

/// `col_sum_finish`: adds `scale` times the chunk sums into `out` (cols).
pub fn col_sum_finish(grid: Grid, block: u32, out: &mut [f32], part: &[f32], chunks: usize, cols: usize, scale: f32) {
    check_block(block);
    check("out", out.len(), cols);
    check("part", part.len(), chunks * cols);
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_col_sum_finish(grid.0, grid.1, block, out.as_mut_ptr(), part.as_ptr(), int(chunks), int(cols), scale) }
}

/// `add_fwd`: writes `y = a + b`.
pub fn add_fwd(grid: Grid, block: u32, y: &mut [f32], a: &[f32], b: &[f32]) {
    check_block(block);
    check("a", a.len(), y.len());
    check("b", b.len(), y.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_add_fwd(grid.0, grid.1, block, y.as_mut_ptr(), a.as_ptr(), b.as_ptr(), y.len() as i64) }
}

/// `add_into`: `dst += src`.
pub fn add_into(grid: Grid, block: u32, dst: &mut [f32], src: &[f32]) {
    check_block(block);
    check("src", src.len(), dst.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_add_into(grid.0, grid.1, block, dst.as_mut_ptr(), src.as_ptr(), dst.len() as i64) }
}

/// `fill_rows`: every row of `y` (rows x `b.len()`) set to `b`.
pub fn fill_rows(grid: Grid, block: u32, y: &mut [f32], b: &[f32]) {
    check_block(block);
    assert!(!b.is_empty() && y.len() % b.len() == 0, "tfm-cuda-emu: y is not whole rows of b");
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_fill_rows(grid.0, grid.1, block, y.as_mut_ptr(), b.as_ptr(), (y.len() / b.len()) as i64, int(b.len())) }
}

/// `act_fwd`: writes `y`; `kind` as `tfm_kernels::act`.
pub fn act_fwd(grid: Grid, block: u32, y: &mut [f32], x: &[f32], kind: i32) {
    check_block(block);
    check("y", y.len(), x.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_act_fwd(grid.0, grid.1, block, y.as_mut_ptr(), x.as_ptr(), x.len() as i64, kind) }
}

/// `act_bwd`: adds into `dx`.
pub fn act_bwd(grid: Grid, block: u32, dx: &mut [f32], dy: &[f32], x: &[f32], kind: i32) {
    check_block(block);
    check("dx", dx.len(), x.len());
    check("dy", dy.len(), x.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_act_bwd(grid.0, grid.1, block, dx.as_mut_ptr(), dy.as_ptr(), x.as_ptr(), x.len() as i64, kind) }
}

/// `softmax_rows_fwd`: writes `p` (rows x n).
#[allow(clippy::too_many_arguments)]
pub fn softmax_rows_fwd(grid: Grid, block: u32, p: &mut [f32], s: &[f32], rows: usize, n: usize, scale: f32, q_len: usize) {
    check_block(block);
    check("p", p.len(), rows * n);
    check("s", s.len(), rows * n);
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_softmax_rows_fwd(grid.0, grid.1, block, p.as_mut_ptr(), s.as_ptr(), int(rows), int(n), scale, int(q_len)) }
}

/// `softmax_rows_bwd`: writes `ds` (rows x n).
#[allow(clippy::too_many_arguments)]
pub fn softmax_rows_bwd(grid: Grid, block: u32, ds: &mut [f32], p: &[f32], dp: &[f32], rows: usize, n: usize, scale: f32) {
    check_block(block);
    for (what, len) in [("ds", ds.len()), ("p", p.len()), ("dp", dp.len())] {
        check(what, len, rows * n);
    }
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_softmax_rows_bwd(grid.0, grid.1, block, ds.as_mut_ptr(), p.as_ptr(), dp.as_ptr(), int(rows), int(n), scale) }
}

/// Where q, k and v lie in one buffer (element offsets); their gradients lie at the same
/// offsets of another.
#[derive(Clone, Copy, Debug)]
pub struct QkvAt {
    pub q: usize,
    pub k: usize,
    pub v: usize,
}

trait Checks {
    fn check(&self);
    fn span(&self, rows_per_batch: i32, row: i64, heads: i32) -> usize;
    fn check_qkv(&self, what: &str, len: usize, at: QkvAt);
    fn queries(&self) -> usize;
}

impl Checks for AttnDims {
    fn check(&self) {
        assert!(self.head_dim > 0 && self.head_dim <= 256, "tfm-cuda-emu: head dim {} (the kernels take 1 to 256)", self.head_dim);
        assert!(self.kv_heads > 0 && self.heads % self.kv_heads == 0, "tfm-cuda-emu: {} heads over {} kv heads", self.heads, self.kv_heads);
        for v in [self.batch, self.q_len, self.k_len] {
            assert!(v >= 0, "tfm-cuda-emu: a negative size");
        }
    }
    /// Elements a tensor of `rows_per_batch` rows of stride `row` spans from its first, for
    /// `heads` heads.
    fn span(&self, rows_per_batch: i32, row: i64, heads: i32) -> usize {
        let rows = self.batch as usize * rows_per_batch as usize;
        if rows == 0 {
            0
        } else {
            (rows - 1) * row as usize + (heads * self.head_dim) as usize
        }
    }
    fn check_qkv(&self, what: &str, len: usize, at: QkvAt) {
        check(&format!("{what} (q)"), len, at.q + self.span(self.q_len, self.q_row, self.heads));
        check(&format!("{what} (k)"), len, at.k + self.span(self.k_len, self.k_row, self.kv_heads));
        check(&format!("{what} (v)"), len, at.v + self.span(self.k_len, self.v_row, self.kv_heads));
    }
    fn queries(&self) -> usize {
        (self.batch * self.heads * self.q_len) as usize
    }
}

/// `attention_fwd`: writes `o` (o_row layout) and `lse` (batch x heads x q_len).
pub fn attention_fwd(grid: Grid, block: u32, o: &mut [f32], lse: &mut [f32], qkv: &[f32], at: QkvAt, d: AttnDims) {
    check_block(block);
    d.check();
    d.check_qkv("qkv", qkv.len(), at);
    check("o", o.len(), d.span(d.q_len, d.o_row, d.heads));
    check("lse", lse.len(), d.queries());
    let p = qkv.as_ptr();
    // SAFETY: as in `layer_norm_fwd`; every row the kernel reads lies in `qkv` (checked above).
    unsafe { emu_attention_fwd(grid.0, grid.1, block, o.as_mut_ptr(), lse.as_mut_ptr(), p.add(at.q), p.add(at.k), p.add(at.v), d) }
}

/// `attention_bwd_dot`: writes `dsum` (batch x heads x q_len).
pub fn attention_bwd_dot(grid: Grid, block: u32, dsum: &mut [f32], dout: &[f32], o: &[f32], d: AttnDims) {
    check_block(block);
    d.check();
    check("dsum", dsum.len(), d.queries());
    check("dout", dout.len(), d.span(d.q_len, d.o_row, d.heads));
    check("o", o.len(), d.span(d.q_len, d.o_row, d.heads));
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_attention_bwd_dot(grid.0, grid.1, block, dsum.as_mut_ptr(), dout.as_ptr(), o.as_ptr(), d) }
}

/// `attention_bwd_dq` (`dkdv` false) or `attention_bwd_dkdv` (`dkdv` true): adds into the
/// gradients in `dqkv`, laid out as `qkv`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(grid: Grid, block: u32, dkdv: bool, dqkv: &mut [f32], dout: &[f32], qkv: &[f32], at: QkvAt, lse: &[f32], dsum: &[f32], d: AttnDims) {
    check_block(block);
    d.check();
    d.check_qkv("qkv", qkv.len(), at);
    d.check_qkv("dqkv", dqkv.len(), at);
    check("dout", dout.len(), d.span(d.q_len, d.o_row, d.heads));
    check("lse", lse.len(), d.queries());
    check("dsum", dsum.len(), d.queries());
    let (p, g) = (qkv.as_ptr(), dqkv.as_mut_ptr());
    // SAFETY: as in `layer_norm_fwd`; every row read or written lies in its buffer (checked above).
    unsafe {
        if dkdv {
            emu_attention_bwd_dkdv(grid.0, grid.1, block, g.add(at.k), g.add(at.v), dout.as_ptr(), p.add(at.q), p.add(at.k), p.add(at.v), lse.as_ptr(), dsum.as_ptr(), d)
        } else {
            emu_attention_bwd_dq(grid.0, grid.1, block, g.add(at.q), dout.as_ptr(), p.add(at.q), p.add(at.k), p.add(at.v), lse.as_ptr(), dsum.as_ptr(), d)
        }
    }
}

/// `cross_entropy_fwd`: writes `loss` (rows) and, when given, adds the gradient into `dlogits`
/// (rows x v), scaled by `dscale` and by `dscale_dev[0]` when given. Targets must be in `0..v` or
/// -100, as the runtime checks before launching.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_fwd(grid: Grid, block: u32, loss: &mut [f32], dlogits: Option<&mut [f32]>, logits: &[f32], targets: &[i64], rows: usize, v: usize, dscale: f32, dscale_dev: Option<&[f32]>) {
    check_block(block);
    assert_eq!(grid.0 as usize, rows, "tfm-cuda-emu: cross_entropy_fwd runs one block per row");
    check("loss", loss.len(), rows);
    check("logits", logits.len(), rows * v);
    check("targets", targets.len(), rows);
    assert!(targets[..rows].iter().all(|&t| t == -100 || (0..v as i64).contains(&t)), "tfm-cuda-emu: a target outside 0..{v}");
    let d = dlogits.map_or(std::ptr::null_mut(), |d| {
        check("dlogits", d.len(), rows * v);
        d.as_mut_ptr()
    });
    // SAFETY: as in `layer_norm_fwd`; targets index within a row (checked above).
    let g = opt(dscale_dev, "dscale_dev", 1);
    unsafe { emu_cross_entropy_fwd(grid.0, grid.1, block, loss.as_mut_ptr(), d, logits.as_ptr(), targets.as_ptr(), int(rows), int(v), dscale, g) }
}

/// `embedding_fwd`: writes `out` (ids x dim).
pub fn embedding_fwd(grid: Grid, block: u32, out: &mut [f32], ids: &[i64], table: &[f32], dim: usize) {
    check_block(block);
    check("out", out.len(), ids.len() * dim);
    assert!(ids.iter().all(|&i| i >= 0 && (i as usize + 1) * dim <= table.len()), "tfm-cuda-emu: an id past the table");
    // SAFETY: as in `layer_norm_fwd`; every id indexes a row of the table (checked above).
    unsafe { emu_embedding_fwd(grid.0, grid.1, block, out.as_mut_ptr(), ids.as_ptr(), table.as_ptr(), int(ids.len()), int(dim)) }
}

/// `embedding_bwd`: adds into `dtable`; `order`, `starts`, `uniq` as `kernels::group_ids` makes.
pub fn embedding_bwd(grid: Grid, block: u32, dtable: &mut [f32], dout: &[f32], order: &[i32], starts: &[i32], uniq: &[i32], dim: usize) {
    check_block(block);
    assert_eq!(starts.len(), uniq.len() + 1, "tfm-cuda-emu: starts must have one entry more than uniq");
    assert!(uniq.iter().all(|&u| u >= 0 && (u as usize + 1) * dim <= dtable.len()), "tfm-cuda-emu: an id past the table");
    assert!(starts.windows(2).all(|w| 0 <= w[0] && w[0] <= w[1]) && starts.last().is_some_and(|&s| s as usize <= order.len()), "tfm-cuda-emu: bad starts");
    assert!(order.iter().all(|&o| o >= 0 && (o as usize + 1) * dim <= dout.len()), "tfm-cuda-emu: a position past dout");
    // SAFETY: as in `layer_norm_fwd`; every index is checked above.
    unsafe { emu_embedding_bwd(grid.0, grid.1, block, dtable.as_mut_ptr(), dout.as_ptr(), order.as_ptr(), starts.as_ptr(), uniq.as_ptr(), int(uniq.len()), int(dim)) }
}

/// `adamw`: updates `w`, `m` and `v` in place.
pub fn adamw(grid: Grid, block: u32, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], c: AdamwArgs) {
    check_block(block);
    for (what, len) in [("m", m.len()), ("v", v.len()), ("g", g.len())] {
        check(what, len, w.len());
    }
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_adamw(grid.0, grid.1, block, w.as_mut_ptr(), m.as_mut_ptr(), v.as_mut_ptr(), g.as_ptr(), w.len() as i64, c) }
}

/// `keep_scales_f32`: writes `out`.
pub fn keep_scales(grid: Grid, block: u32, out: &mut [f32], seed: u64, p: f32, scale: f32) {
    check_block(block);
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_keep_scales_f32(grid.0, grid.1, block, out.as_mut_ptr(), out.len() as u64, seed, p, scale) }
}

/// `dropout_fwd`: writes `y`.
pub fn dropout_fwd(grid: Grid, block: u32, y: &mut [f32], x: &[f32], seed: u64, p: f32, scale: f32) {
    check_block(block);
    check("y", y.len(), x.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_dropout_fwd(grid.0, grid.1, block, y.as_mut_ptr(), x.as_ptr(), x.len() as u64, seed, p, scale) }
}

/// `dropout_bwd`: adds into `dx`.
pub fn dropout_bwd(grid: Grid, block: u32, dx: &mut [f32], dy: &[f32], seed: u64, p: f32, scale: f32) {
    check_block(block);
    check("dx", dx.len(), dy.len());
    // SAFETY: as in `layer_norm_fwd`.
    unsafe { emu_dropout_bwd(grid.0, grid.1, block, dx.as_mut_ptr(), dy.as_ptr(), dy.len() as u64, seed, p, scale) }
}

extern "C" {
    fn emu_launch(name: *const std::os::raw::c_char, gx: u32, gy: u32, b: u32, params: *mut *mut std::ffi::c_void) -> c_int;
}

/// Runs kernel `name` with `params[i]` pointing at its i-th parameter's value (as
/// `cuLaunchKernel` takes them); errors for a name no kernel has.
///
/// # Safety
/// Each `params[i]` must point at a value of the type the kernel declares for parameter `i`, and
/// every device pointer among them at host memory holding what the kernel reads and writes.
pub unsafe fn launch(name: &str, grid: Grid, block: u32, params: &mut [*mut std::ffi::c_void]) -> Result<(), String> {
    check_block(block);
    let c = std::ffi::CString::new(name).map_err(|_| format!("tfm-cuda-emu: a kernel name with a NUL: {name:?}"))?;
    // SAFETY: the caller's contract above; `c` outlives the call.
    match unsafe { emu_launch(c.as_ptr(), grid.0, grid.1, block, params.as_mut_ptr()) } {
        0 => Ok(()),
        _ => Err(format!("tfm-cuda-emu: no kernel `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kernel_has_a_generic_entry() {
        let src = include_str!("emu.cpp");
        for k in tfm_kernels::ENTRY_POINTS {
            assert!(src.contains(&format!("X({k})")), "`{k}` is missing from TFM_KERNELS in emu.cpp");
        }
    }

    #[test]
    fn the_generic_entry_runs_a_kernel_and_refuses_unknown_names() {
        let (a, b) = ([1.0f32, 2.0, 3.0], [0.5f32, 0.25, 4.0]);
        let mut y = [0.0f32; 3];
        let (mut yp, mut ap, mut bp, mut n) = (y.as_mut_ptr() as u64, a.as_ptr() as u64, b.as_ptr() as u64, 3i64);
        let mut params = [&mut yp as *mut u64 as *mut std::ffi::c_void, &mut ap as *mut u64 as _, &mut bp as *mut u64 as _, &mut n as *mut i64 as _];
        // SAFETY: add_fwd(float *y, const float *a, const float *b, long long n): three pointers
        // to 3 floats each, then an i64.
        unsafe { super::launch("add_fwd", (1, 1), 32, &mut params) }.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(y, [1.5, 2.25, 7.0]);
        // SAFETY: an unknown name runs nothing.
        let err = unsafe { super::launch("no_such_kernel", (1, 1), 32, &mut params) };
        assert!(err.is_err());
    }
}
