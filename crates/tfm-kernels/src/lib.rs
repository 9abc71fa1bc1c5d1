//! tfm's CUDA kernels: their source (`kernels.cu`), the launch geometry each one expects, and the
//! structs they take by value.
//!
//! Built on every platform, with no CUDA: the runtime's launcher (`tfm_runtime::cuda_kernels`,
//! feature `cuda`) and the kernel emulator the tests run on the CPU (`tfm-cuda-emu`) both take
//! their grids and argument layouts from here, so both run the kernels the same way.

/// The CUDA C text of every kernel.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every entry point in [`SOURCE`].
pub const ENTRY_POINTS: [&str; 29] = [
    "layer_norm_fwd",
    "layer_norm_bwd_dx",
    "layer_norm_wb_partials",
    "col_sum_partials",
    "col_sum_finish",
    "add_fwd",
    "add_into",
    "fill_rows",
    "act_fwd",
    "act_bwd",
    "rms_norm_fwd",
    "rms_norm_bwd_dx",
    "rms_norm_w_partials",
    "rope_fwd",
    "rope_bwd",
    "softmax_rows_fwd",
    "softmax_rows_bwd",
    "attention_fwd",
    "attention_bwd_dot",
    "attention_bwd_dq",
    "attention_bwd_dkdv",
    "cross_entropy_fwd",
    "embedding_fwd",
    "embedding_bwd",
    "adamw",
    "keep_scales_f32",
    "keep_scales_f16",
    "dropout_fwd",
    "dropout_bwd",
];

/// A launch: `grid` blocks (x, y) of `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32),
    pub block: u32,
}

/// Threads per block of the elementwise and per-row kernels.
const THREADS: u32 = 256;
/// Rows per block of the one-warp-per-row kernels (4 warps).
const WARP_ROWS: u32 = 4;
/// Blocks of a grid-stride loop, at most: enough to fill any current GPU several times.
const MAX_STRIDE_BLOCKS: u64 = 4096;

/// One warp per row (`layer_norm_fwd`, `layer_norm_bwd_dx`, `rms_norm_fwd`, `rms_norm_bwd_dx`,
/// `softmax_rows_*`; `attention_fwd`,
/// `attention_bwd_dot` and `attention_bwd_dq` with a row per query and head, `attention_bwd_dkdv`
/// with a row per key and key head).
pub fn warp_per_row(rows: usize) -> Launch {
    let blocks = (rows as u64).div_ceil(WARP_ROWS as u64).max(1);
    Launch { grid: (u32::try_from(blocks).unwrap_or(u32::MAX), 1), block: 32 * WARP_ROWS }
}

/// One block per row (`cross_entropy_fwd`, `embedding_bwd` with one row per distinct id).
pub fn block_per_row(rows: usize) -> Launch {
    Launch { grid: (u32::try_from(rows.max(1)).unwrap_or(u32::MAX), 1), block: THREADS }
}

/// A grid-stride loop over `n` elements (`act_*`, `rope_*`, `adamw`, `dropout_*`,
/// `embedding_fwd`, `add_*`, `fill_rows`).
pub fn elementwise(n: usize) -> Launch {
    let blocks = (n as u64).div_ceil(THREADS as u64).clamp(1, MAX_STRIDE_BLOCKS);
    Launch { grid: (blocks as u32, 1), block: THREADS }
}

/// The longest head `attention_*` take: 32 lanes of `ATT_LANE_DIMS` (kernels.cu) dims.
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;

/// The shape of a fused attention, as the kernels take it (`AttnDims` in kernels.cu, field for
/// field). Row strides are in elements; see kernels.cu for the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnDims {
    pub batch: i32,
    pub heads: i32,
    pub kv_heads: i32,
    pub q_len: i32,
    pub k_len: i32,
    pub head_dim: i32,
    pub q_row: i64,
    pub k_row: i64,
    pub v_row: i64,
    pub o_row: i64,
    pub scale: f32,
    pub causal: i32,
    /// Dropout on the probabilities (0 for none); kept ones are multiplied by `drop_scale`.
    pub p_drop: f32,
    pub drop_scale: f32,
    pub seed: u64,
}

impl AttnDims {
    /// Why the kernels cannot run this shape, if they cannot.
    pub fn unsupported(&self) -> Option<String> {
        let hd = self.head_dim as usize;
        if hd == 0 || hd > ATTENTION_MAX_HEAD_DIM {
            return Some(format!("head dim {hd} (the fused kernels take 1 to {ATTENTION_MAX_HEAD_DIM})"));
        }
        if self.kv_heads <= 0 || self.heads % self.kv_heads != 0 {
            return Some(format!("{} heads over {} key/value heads", self.heads, self.kv_heads));
        }
        None
    }
}

/// The AdamW step's constants (`AdamwConsts` in kernels.cu, field for field): `gscale`
/// multiplies the gradient first, `decay` is `1 - lr * wd` (1 where the weight does not decay),
/// `step` is `lr / (1 - b1^t)`, `inv_sqrt_bc2` is `1 / sqrt(1 - b2^t)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwArgs {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    pub step: f32,
    pub decay: f32,
    pub gscale: f32,
}

/// The activation codes of `act_fwd` and `act_bwd`.
pub mod act {
    pub const GELU_TANH: i32 = 0;
    pub const GELU_ERF: i32 = 1;
    pub const SILU: i32 = 2;
    pub const RELU: i32 = 3;
}

/// Column sums in two passes (`col_sum_partials`, `layer_norm_wb_partials` or
/// `rms_norm_w_partials`, then `col_sum_finish`): the rows are cut into `chunks` of `per_chunk` rows, each chunk summed by
/// its own row of blocks, and the chunk sums added in order. Returns (chunks, per_chunk, the
/// partials' launch, the finishing launch).
pub fn column_sums(rows: usize, cols: usize) -> (usize, usize, Launch, Launch) {
    // about 256 chunks of at least 16 rows: enough blocks to fill the GPU while every thread
    // still sums a run of rows
    let per_chunk = rows.div_ceil(256).max(16).min(rows.max(1));
    let chunks = rows.div_ceil(per_chunk).max(1);
    let col_blocks = (cols as u64).div_ceil(THREADS as u64).max(1) as u32;
    let partials = Launch { grid: (col_blocks, u32::try_from(chunks).unwrap_or(u32::MAX)), block: THREADS };
    (chunks, per_chunk, partials, Launch { grid: (col_blocks, 1), block: THREADS })
}

/// The host side of `embedding_bwd`: the positions of `ids` grouped by id. Returns (order,
/// starts, distinct ids): the positions holding `uniq[u]` are `order[starts[u]..starts[u + 1]]`,
/// in increasing order.
pub fn group_ids(ids: &[usize]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (ids[i], i));
    let (mut starts, mut uniq) = (Vec::new(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        if uniq.last() != Some(&(ids[i] as i32)) {
            uniq.push(ids[i] as i32);
            starts.push(k as i32);
        }
    }
    starts.push(ids.len() as i32);
    (order.into_iter().map(|i| i as i32).collect(), starts, uniq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_is_in_the_source() {
        for f in ENTRY_POINTS {
            assert!(SOURCE.contains(&format!("__global__ void {f}(")), "`{f}` is not defined in kernels.cu");
        }
        assert_eq!(SOURCE.matches("__global__").count(), ENTRY_POINTS.len(), "kernels.cu defines a kernel the list lacks");
    }

    #[test]
    fn column_sums_cover_every_row_once() {
        for (rows, cols) in [(1, 1), (15, 3), (16, 384), (17, 5), (1000, 7), (16_384, 384), (100_000, 2)] {
            let (chunks, per, part, fin) = column_sums(rows, cols);
            assert!(chunks * per >= rows && (chunks - 1) * per < rows, "{rows} rows in {chunks} chunks of {per}");
            assert_eq!(part.grid.1 as usize, chunks);
            assert!(part.grid.0 * part.block >= cols as u32 && fin.grid.0 * fin.block >= cols as u32);
        }
    }

    #[test]
    fn ids_are_grouped_in_position_order() {
        let (order, starts, uniq) = group_ids(&[5, 2, 5, 0, 2, 5]);
        assert_eq!(uniq, vec![0, 2, 5]);
        assert_eq!(starts, vec![0, 1, 3, 6]);
        assert_eq!(order, vec![3, 1, 4, 0, 2, 5]);
    }
}
