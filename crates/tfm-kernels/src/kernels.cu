// tfm's own CUDA kernels (f32), compiled at run time with NVRTC.
//
// The same text is compiled for the host by the kernel emulator (crates/tfm-cuda-emu), which runs
// every CUDA thread of a block as a fiber, so the tests check these kernels' arithmetic,
// indexing and reductions on any machine. Keep to what both compilers take: no headers, no
// templates in kernel signatures, `extern "C"` entry points, warp shuffles on whole warps,
// block sizes that are multiples of 32, and no early return before a `__syncthreads`.
//
// Conventions:
// - `rows x cols` arrays are row-major and contiguous.
// - A backward kernel *adds* into an input gradient (`dx += ...`): a tensor read by two ops
//   collects both gradients. Outputs of forward kernels and scratch arrays are overwritten.
// - Launch geometry is fixed per kernel by `kernels.rs` (`Launch`); a kernel that works "one warp
//   per row" expects `blockDim.x / 32` rows per block, one that works "one block per row" expects
//   `gridDim.x == rows`.

#define FULL_MASK 0xffffffffu
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// The sum of `v` over the block, returned to every thread. `sh` is 32 floats of shared memory;
// the first barrier keeps a previous reduction's readers ahead of this one's writers.
__device__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.0f);
}

__device__ float block_max(float v, float *sh) {
    int lane = threadIdx.x % 32, wid = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    return warp_max(lane < nw ? sh[lane] : -INFINITY);
}

// The dropout hash: the keep decision for element i is a function of (seed, i) alone, so a
// backward pass draws the same mask again instead of storing it.

// splitmix64's finaliser: a bijective 64-bit mix, so distinct (seed, index) pairs give
// independent-looking outputs
__device__ unsigned long long mix(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ bool keep(unsigned long long seed, unsigned long long i, float p) {
    unsigned long long h = mix(seed ^ mix(i + 0x9e3779b97f4a7c15ULL));
    float u = (float)(h >> 40) * (1.0f / 16777216.0f);
    return u >= p;
}

// ---------------------------------------------------------------------------------------------
// Layer norm

// y = (x - mean) * rstd * w + b per row, one warp per row; `w` and `b` may be null (1 and 0).
// `mean` and `rstd` (may be null) keep the row statistics for the backward pass.
extern "C" __global__ void layer_norm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                                          const float *b, int rows, int cols, float eps) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *xr = x + row * cols;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += xr[c];
    float mu = warp_sum(s) / cols;
    float q = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float d = xr[c] - mu;
        q += d * d;
    }
    float rs = rsqrtf(warp_sum(q) / cols + eps);
    float *yr = y + row * cols;
    for (int c = lane; c < cols; c += 32) {
        float v = (xr[c] - mu) * rs;
        if (w) v *= w[c];
        if (b) v += b[c];
        yr[c] = v;
    }
    if (lane == 0) {
        if (mean) mean[row] = mu;
        if (rstd) rstd[row] = rs;
    }
}

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, one warp per row.
extern "C" __global__ void layer_norm_bwd_dx(float *dx, const float *dy, const float *x, const float *w,
                                             const float *mean, const float *rstd, int rows, int cols) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *xr = x + row * cols, *dyr = dy + row * cols;
    float mu = mean[row], rs = rstd[row];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < cols; c += 32) {
        float g = dyr[c] * (w ? w[c] : 1.0f);
        sg += g;
        sgx += g * (xr[c] - mu) * rs;
    }
    sg = warp_sum(sg) / cols;
    sgx = warp_sum(sgx) / cols;
    float *dxr = dx + row * cols;
    for (int c = lane; c < cols; c += 32) {
        float g = dyr[c] * (w ? w[c] : 1.0f);
        float xh = (xr[c] - mu) * rs;
        dxr[c] += rs * (g - sg - xh * sgx);
    }
}

// Per chunk of rows (blockIdx.y), per column: pw = sum(dy * xhat), pb = sum(dy). The partial
// sums go to `col_sum_finish`, which adds them in a fixed order (no atomics: results do not
// depend on scheduling).
extern "C" __global__ void layer_norm_wb_partials(float *pw, float *pb, const float *dy, const float *x,
                                                  const float *mean, const float *rstd, int rows, int cols,
                                                  int per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    long long r0 = (long long)blockIdx.y * per_chunk;
    long long r1 = r0 + per_chunk < rows ? r0 + per_chunk : rows;
    float sw = 0.0f, sb = 0.0f;
    for (long long r = r0; r < r1; ++r) {
        float g = dy[r * cols + c];
        sw += g * (x[r * cols + c] - mean[r]) * rstd[r];
        sb += g;
    }
    pw[(long long)blockIdx.y * cols + c] = sw;
    pb[(long long)blockIdx.y * cols + c] = sb;
}

// Per chunk of rows (blockIdx.y), per column: part = sum over the chunk's rows of a.
extern "C" __global__ void col_sum_partials(float *part, const float *a, int rows, int cols, int per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    long long r0 = (long long)blockIdx.y * per_chunk;
    long long r1 = r0 + per_chunk < rows ? r0 + per_chunk : rows;
    float s = 0.0f;
    for (long long r = r0; r < r1; ++r) s += a[r * cols + c];
    part[(long long)blockIdx.y * cols + c] = s;
}

// out[c] += scale * (part[0][c] + part[1][c] + ...), the parts added in chunk order.
extern "C" __global__ void col_sum_finish(float *out, const float *part, int chunks, int cols, float scale) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += part[(long long)k * cols + c];
    out[c] += s * scale;
}

// ---------------------------------------------------------------------------------------------
// Elementwise sums and row fills

// y = a + b
extern "C" __global__ void add_fwd(float *y, const float *a, const float *b, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

// dst += src
extern "C" __global__ void add_into(float *dst, const float *src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] += src[i];
}

// y[r, :] = b for every row (a bias, before a product adds into it)
extern "C" __global__ void fill_rows(float *y, const float *b, long long rows, int cols) {
    long long n = rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = b[i % cols];
}

// ---------------------------------------------------------------------------------------------
// Activations: `kind` 0 is GELU's tanh approximation (GPT-2's), 1 GELU's erf form, 2 SiLU, 3 ReLU.

__device__ float act(float x, int kind) {
    if (kind == 1) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    if (kind == 2) return x / (1.0f + expf(-x));
    if (kind == 3) return x > 0.0f ? x : 0.0f;
    float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

__device__ float act_grad(float x, int kind) {
    if (kind == 1) {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    if (kind == 2) {
        float sg = 1.0f / (1.0f + expf(-x));
        return sg * (1.0f + x * (1.0f - sg));
    }
    if (kind == 3) return x > 0.0f ? 1.0f : 0.0f;
    float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    float t = tanhf(u);
    float du = 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

extern "C" __global__ void act_fwd(float *y, const float *x, long long n, int kind) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = act(x[i], kind);
}

extern "C" __global__ void act_bwd(float *dx, const float *dy, const float *x, long long n, int kind) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] += dy[i] * act_grad(x[i], kind);
}

// ---------------------------------------------------------------------------------------------
// RMS norm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), one warp per row.

extern "C" __global__ void rms_norm_fwd(float *y, float *rstd, const float *x, const float *w, int rows, int cols, float eps) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *xr = x + row * cols;
    float q = 0.0f;
    for (int c = lane; c < cols; c += 32) q += xr[c] * xr[c];
    float rs = rsqrtf(warp_sum(q) / cols + eps);
    float *yr = y + row * cols;
    for (int c = lane; c < cols; c += 32) yr[c] = xr[c] * rs * w[c];
    if (lane == 0) rstd[row] = rs;
}

// dx += rstd * g - x * rstd^3 * mean(g * x) with g = dy * w, one warp per row.
extern "C" __global__ void rms_norm_bwd_dx(float *dx, const float *dy, const float *x, const float *w, const float *rstd,
                                          int rows, int cols) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *xr = x + row * cols, *dyr = dy + row * cols;
    float rs = rstd[row];
    float sgx = 0.0f;
    for (int c = lane; c < cols; c += 32) sgx += dyr[c] * w[c] * xr[c];
    sgx = warp_sum(sgx) / cols;
    float *dxr = dx + row * cols;
    for (int c = lane; c < cols; c += 32) dxr[c] += rs * dyr[c] * w[c] - xr[c] * rs * rs * rs * sgx;
}

// Per chunk of rows (blockIdx.y), per column: pw = sum(dy * x * rstd), for `col_sum_finish`.
extern "C" __global__ void rms_norm_w_partials(float *pw, const float *dy, const float *x, const float *rstd, int rows,
                                               int cols, int per_chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    long long r0 = (long long)blockIdx.y * per_chunk;
    long long r1 = r0 + per_chunk < rows ? r0 + per_chunk : rows;
    float s = 0.0f;
    for (long long r = r0; r < r1; ++r) s += dy[r * cols + c] * x[r * cols + c] * rstd[r];
    pw[(long long)blockIdx.y * cols + c] = s;
}

// ---------------------------------------------------------------------------------------------
// Rotary embeddings (rotate-half): for row r at position p = r % len, head h and dim d, with
// pd the dim half a head away (d + hd/2 or d - hd/2),
//   y[r, h hd + d] = x[r, h hd + d] cos[p, d] + x[r, h hd + pd] sin[p, d].
// x is read through its row stride (a slice of a fused projection); cos and sin are [len, hd]
// tables with the sign of the rotation folded into sin. Elementwise over rows x heads x hd.

extern "C" __global__ void rope_fwd(float *y, const float *x, const float *cos_t, const float *sin_t, long long rows,
                                    int len, long long x_row, int heads, int hd) {
    long long width = (long long)heads * hd, n = rows * width;
    int half = hd / 2;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / width;
        int col = (int)(i % width), d = col % hd, p = (int)(r % len);
        int pcol = col - d + (d < half ? d + half : d - half);
        y[i] = x[r * x_row + col] * cos_t[p * hd + d] + x[r * x_row + pcol] * sin_t[p * hd + d];
    }
}

// dx[r, h hd + d] += dy[r, h hd + d] cos[p, d] + dy[r, h hd + pd] sin[p, pd]: the transpose of
// the forward, gathered (the pairing of d and pd is its own inverse), so no two threads write
// one element.
extern "C" __global__ void rope_bwd(float *dx, const float *dy, const float *cos_t, const float *sin_t, long long rows,
                                    int len, long long x_row, int heads, int hd) {
    long long width = (long long)heads * hd, n = rows * width;
    int half = hd / 2;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long r = i / width;
        int col = (int)(i % width), d = col % hd, p = (int)(r % len);
        int pd = d < half ? d + half : d - half;
        dx[r * x_row + col] += dy[i] * cos_t[p * hd + d] + dy[r * width + col - d + pd] * sin_t[p * hd + pd];
    }
}

// ---------------------------------------------------------------------------------------------
// Attention probabilities: a softmax over rows of scores, with the scale and the causal mask
// applied on the fly (no mask tensor).

// p[r, j] = softmax_j(scale * s[r, j]) over the keys row r may see. With q_len > 0 the rows are
// (batch x heads x q_len) queries over n keys, and query i = r % q_len sees keys
// j <= i + (n - q_len) (the last query sees every key); the others get exactly 0.
// One warp per row.
extern "C" __global__ void softmax_rows_fwd(float *p, const float *s, int rows, int n, float scale, int q_len) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int lim = n;
    if (q_len > 0) {
        long long l = row % q_len + (n - q_len) + 1;
        lim = l < 0 ? 0 : (l > n ? n : (int)l);
    }
    const float *sr = s + row * n;
    float *pr = p + row * n;
    float m = -INFINITY;
    for (int j = lane; j < lim; j += 32) m = fmaxf(m, sr[j] * scale);
    m = warp_max(m);
    float z = 0.0f;
    for (int j = lane; j < lim; j += 32) z += expf(sr[j] * scale - m);
    z = warp_sum(z);
    float inv = lim > 0 ? 1.0f / z : 0.0f;
    for (int j = lane; j < n; j += 32) pr[j] = j < lim ? expf(sr[j] * scale - m) * inv : 0.0f;
}

// ds[r, j] = scale * p[r, j] * (dp[r, j] - sum_k p[r, k] dp[r, k]), overwriting `ds`. One warp
// per row.
extern "C" __global__ void softmax_rows_bwd(float *ds, const float *p, const float *dp, int rows, int n, float scale) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const float *pr = p + row * n, *dpr = dp + row * n;
    float d = 0.0f;
    for (int j = lane; j < n; j += 32) d += pr[j] * dpr[j];
    d = warp_sum(d);
    float *dsr = ds + row * n;
    for (int j = lane; j < n; j += 32) dsr[j] = scale * pr[j] * (dpr[j] - d);
}

// ---------------------------------------------------------------------------------------------
// Fused attention: softmax(scale * q k^T, causal) v without the (q_len x k_len) score matrix in
// memory, forward and backward, with grouped key/value heads and dropout on the probabilities.
//
// Rows of q, k, v, o are read in place with their row strides (a fused qkv projection needs no
// permute): query i of head h in batch b is q[(b * q_len + i) * q_row + h * head_dim + c]; keys and
// values likewise with kv head h / (heads / kv_heads); o and dout like q with `o_row`. Each warp
// handles one query (forward, dq) or one key (dk, dv); a lane holds head dims c = lane + 32 t, so
// head_dim is at most 32 * ATT_LANE_DIMS. The forward keeps each query's logsumexp for the
// backward, which recomputes the probabilities from it (the flash-attention recipe). No atomics:
// the gradients of a query or key are summed by one warp, in key or query order.

#define ATT_LANE_DIMS 8

struct AttnDims {
    int batch, heads, kv_heads, q_len, k_len, head_dim;
    long long q_row, k_row, v_row, o_row;
    float scale;
    int causal;
    // dropout on the probabilities: p_drop = 0 for none; kept ones are multiplied by drop_scale
    float p_drop, drop_scale;
    unsigned long long seed;
};

// Keys j < attn_key_limit are visible to query i (causal: the last query sees every key).
__device__ int attn_key_limit(const AttnDims &d, int i) {
    if (!d.causal) return d.k_len;
    int l = i + (d.k_len - d.q_len) + 1;
    return l < 0 ? 0 : (l > d.k_len ? d.k_len : l);
}

__device__ void attn_load(float *r, const float *row, int hd, int lane) {
    for (int t = 0; t < ATT_LANE_DIMS; ++t) {
        int c = lane + 32 * t;
        r[t] = c < hd ? row[c] : 0.0f;
    }
}

// sum over c of r[c] * row[c], on every lane
__device__ float attn_dot(const float *r, const float *row, int hd, int lane) {
    float s = 0.0f;
    for (int t = 0; t < ATT_LANE_DIMS; ++t) {
        int c = lane + 32 * t;
        if (c < hd) s += r[t] * row[c];
    }
    return warp_sum(s);
}

// the dropout multiplier of probability (b, h, i, j): 0 or drop_scale (1 without dropout)
__device__ float attn_keep(const AttnDims &d, long long bh, int i, int j) {
    if (d.p_drop <= 0.0f) return 1.0f;
    unsigned long long idx = ((unsigned long long)bh * d.q_len + i) * d.k_len + j;
    return keep(d.seed, idx, d.p_drop) ? d.drop_scale : 0.0f;
}

// o = dropout(softmax(scale q k^T)) v; lse = the logsumexp of each query's scaled scores
// (0 for a query that sees no key, whose output is 0). One warp per (b, h, i).
extern "C" __global__ void attention_fwd(float *o, float *lse, const float *q, const float *k, const float *v, AttnDims d) {
    int lane = threadIdx.x % 32;
    long long w = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (w >= (long long)d.batch * d.heads * d.q_len) return;
    int i = (int)(w % d.q_len);
    long long bh = w / d.q_len;
    int h = (int)(bh % d.heads), b = (int)(bh / d.heads), hd = d.head_dim;
    int kvh = h / (d.heads / d.kv_heads);
    float qr[ATT_LANE_DIMS], acc[ATT_LANE_DIMS];
    attn_load(qr, q + ((long long)b * d.q_len + i) * d.q_row + (long long)h * hd, hd, lane);
    for (int t = 0; t < ATT_LANE_DIMS; ++t) acc[t] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    int lim = attn_key_limit(d, i);
    for (int j = 0; j < lim; ++j) {
        long long kv = ((long long)b * d.k_len + j);
        float s = attn_dot(qr, k + kv * d.k_row + (long long)kvh * hd, hd, lane) * d.scale;
        float m2 = fmaxf(m, s);
        float corr = expf(m - m2);
        float pj = expf(s - m2);
        l = l * corr + pj;
        float pv = pj * attn_keep(d, bh, i, j);
        const float *vj = v + kv * d.v_row + (long long)kvh * hd;
        for (int t = 0; t < ATT_LANE_DIMS; ++t) {
            int c = lane + 32 * t;
            acc[t] = acc[t] * corr + (c < hd ? pv * vj[c] : 0.0f);
        }
        m = m2;
    }
    float inv = lim > 0 ? 1.0f / l : 0.0f;
    float *oi = o + ((long long)b * d.q_len + i) * d.o_row + (long long)h * hd;
    for (int t = 0; t < ATT_LANE_DIMS; ++t) {
        int c = lane + 32 * t;
        if (c < hd) oi[c] = acc[t] * inv;
    }
    if (lane == 0) lse[w] = lim > 0 ? m + logf(l) : 0.0f;
}

// dsum[(b, h, i)] = dout_i . o_i, the sum over keys of p * dp that the softmax backward needs.
// One warp per (b, h, i).
extern "C" __global__ void attention_bwd_dot(float *dsum, const float *dout, const float *o, AttnDims d) {
    int lane = threadIdx.x % 32;
    long long w = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (w >= (long long)d.batch * d.heads * d.q_len) return;
    int i = (int)(w % d.q_len);
    long long bh = w / d.q_len;
    int h = (int)(bh % d.heads), b = (int)(bh / d.heads), hd = d.head_dim;
    long long at = ((long long)b * d.q_len + i) * d.o_row + (long long)h * hd;
    float r[ATT_LANE_DIMS];
    attn_load(r, dout + at, hd, lane);
    float s = attn_dot(r, o + at, hd, lane);
    if (lane == 0) dsum[w] = s;
}

// dq_i += scale * sum_j p_ij (dp_ij - dsum_i) k_j, with dp_ij = keep_ij * (dout_i . v_j).
// One warp per (b, h, i); dq has q's layout.
extern "C" __global__ void attention_bwd_dq(float *dq, const float *dout, const float *q, const float *k, const float *v,
                                            const float *lse, const float *dsum, AttnDims d) {
    int lane = threadIdx.x % 32;
    long long w = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (w >= (long long)d.batch * d.heads * d.q_len) return;
    int i = (int)(w % d.q_len);
    long long bh = w / d.q_len;
    int h = (int)(bh % d.heads), b = (int)(bh / d.heads), hd = d.head_dim;
    int kvh = h / (d.heads / d.kv_heads);
    long long qat = ((long long)b * d.q_len + i) * d.q_row + (long long)h * hd;
    float qr[ATT_LANE_DIMS], dr[ATT_LANE_DIMS], acc[ATT_LANE_DIMS];
    attn_load(qr, q + qat, hd, lane);
    attn_load(dr, dout + ((long long)b * d.q_len + i) * d.o_row + (long long)h * hd, hd, lane);
    for (int t = 0; t < ATT_LANE_DIMS; ++t) acc[t] = 0.0f;
    float li = lse[w], di = dsum[w];
    int lim = attn_key_limit(d, i);
    for (int j = 0; j < lim; ++j) {
        long long kv = ((long long)b * d.k_len + j);
        const float *kj = k + kv * d.k_row + (long long)kvh * hd;
        float p = expf(attn_dot(qr, kj, hd, lane) * d.scale - li);
        float dp = attn_dot(dr, v + kv * d.v_row + (long long)kvh * hd, hd, lane) * attn_keep(d, bh, i, j);
        float ds = p * (dp - di) * d.scale;
        for (int t = 0; t < ATT_LANE_DIMS; ++t) {
            int c = lane + 32 * t;
            if (c < hd) acc[t] += ds * kj[c];
        }
    }
    for (int t = 0; t < ATT_LANE_DIMS; ++t) {
        int c = lane + 32 * t;
        if (c < hd) dq[qat + c] += acc[t];
    }
}

// dk_j += scale * sum_(h, i) p_ij (dp_ij - dsum_i) q_i and dv_j += sum_(h, i) keep_ij p_ij dout_i,
// over the query heads h that share key head kvh and the queries i that see key j. One warp per
// (b, kvh, j); dk and dv have k's and v's layouts.
extern "C" __global__ void attention_bwd_dkdv(float *dk, float *dv, const float *dout, const float *q, const float *k,
                                              const float *v, const float *lse, const float *dsum, AttnDims d) {
    int lane = threadIdx.x % 32;
    long long w = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (w >= (long long)d.batch * d.kv_heads * d.k_len) return;
    int j = (int)(w % d.k_len);
    long long bk = w / d.k_len;
    int kvh = (int)(bk % d.kv_heads), b = (int)(bk / d.kv_heads), hd = d.head_dim;
    int group = d.heads / d.kv_heads;
    long long kv = (long long)b * d.k_len + j;
    long long kat = kv * d.k_row + (long long)kvh * hd, vat = kv * d.v_row + (long long)kvh * hd;
    float kr[ATT_LANE_DIMS], vr[ATT_LANE_DIMS], dka[ATT_LANE_DIMS], dva[ATT_LANE_DIMS];
    attn_load(kr, k + kat, hd, lane);
    attn_load(vr, v + vat, hd, lane);
    for (int t = 0; t < ATT_LANE_DIMS; ++t) dka[t] = dva[t] = 0.0f;
    // the first query that sees key j
    int i0 = 0;
    if (d.causal) {
        int f = j - (d.k_len - d.q_len);
        i0 = f > 0 ? f : 0;
    }
    for (int g = 0; g < group; ++g) {
        int h = kvh * group + g;
        long long bh = (long long)b * d.heads + h;
        for (int i = i0; i < d.q_len; ++i) {
            long long row = (long long)b * d.q_len + i;
            const float *qi = q + row * d.q_row + (long long)h * hd;
            const float *di = dout + row * d.o_row + (long long)h * hd;
            long long at = bh * d.q_len + i;
            float p = expf(attn_dot(kr, qi, hd, lane) * d.scale - lse[at]);
            float kp = attn_keep(d, bh, i, j);
            float dp = attn_dot(vr, di, hd, lane) * kp;
            float ds = p * (dp - dsum[at]) * d.scale;
            for (int t = 0; t < ATT_LANE_DIMS; ++t) {
                int c = lane + 32 * t;
                if (c < hd) {
                    dka[t] += ds * qi[c];
                    dva[t] += p * kp * di[c];
                }
            }
        }
    }
    for (int t = 0; t < ATT_LANE_DIMS; ++t) {
        int c = lane + 32 * t;
        if (c < hd) {
            dk[kat + c] += dka[t];
            dv[vat + c] += dva[t];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy: one block per row of logits. loss[r] = logsumexp(x[r]) - x[r, t[r]], and with
// `dlogits` non-null also its gradient, (softmax(x[r]) - onehot(t[r])) * dscale * (*dscale_dev
// when that is non-null: the upstream gradient, read on the device), added into `dlogits` in the
// same pass. A target of -100 is ignored (loss and gradient 0). Targets were checked on the host.
extern "C" __global__ void cross_entropy_fwd(float *loss, float *dlogits, const float *logits,
                                             const long long *targets, int rows, int v, float dscale,
                                             const float *dscale_dev) {
    __shared__ float sh[32];
    long long row = blockIdx.x;
    if (row >= rows) return;
    const float *x = logits + row * v;
    long long t = targets[row];
    float m = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) m = fmaxf(m, x[j]);
    m = block_max(m, sh);
    float z = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) z += expf(x[j] - m);
    z = block_sum(z, sh);
    bool ignored = t == -100;
    if (threadIdx.x == 0) loss[row] = ignored ? 0.0f : m + logf(z) - x[t];
    if (dlogits && !ignored) {
        float *d = dlogits + row * v;
        float inv = 1.0f / z;
        float f = dscale_dev ? dscale * *dscale_dev : dscale;
        for (int j = threadIdx.x; j < v; j += blockDim.x) d[j] += (expf(x[j] - m) * inv - (j == t ? 1.0f : 0.0f)) * f;
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding lookups.

// out[i, :] = table[ids[i], :] (ids checked on the host).
extern "C" __global__ void embedding_fwd(float *out, const long long *ids, const float *table, int n, int dim) {
    long long total = (long long)n * dim;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total; k += (long long)gridDim.x * blockDim.x) {
        long long i = k / dim;
        int c = (int)(k % dim);
        out[k] = table[ids[i] * dim + c];
    }
}

// dtable[uniq[u], :] += sum of dout[order[k], :] for k in starts[u] .. starts[u + 1], one block per
// distinct id. The host groups the positions by id (`order`, `starts`), so every row of the
// table is written by one block, in a fixed order: no atomics, the same bits every run.
extern "C" __global__ void embedding_bwd(float *dtable, const float *dout, const int *order, const int *starts,
                                         const int *uniq, int n_uniq, int dim) {
    int u = blockIdx.x;
    if (u >= n_uniq) return;
    float *dst = dtable + (long long)uniq[u] * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float s = 0.0f;
        for (int k = starts[u]; k < starts[u + 1]; ++k) s += dout[(long long)order[k] * dim + c];
        dst[c] += s;
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW, in place: the same f32 steps, in the same order, as the CPU kernel (`optim_cpu.rs`).
// `gscale` multiplies the gradient first (clipping, loss scale; 1 leaves it exact); `decay` is
// 1 - lr * wd, or 1 for a weight that does not decay; `step` is lr / (1 - b1^t).
struct AdamwConsts {
    float b1, omb1, b2, omb2, inv_sqrt_bc2, eps, step, decay, gscale;
};

extern "C" __global__ void adamw(float *w, float *m, float *v, const float *g, long long n, AdamwConsts c) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i] * c.gscale;
        float mi = m[i] * c.b1 + gi * c.omb1;
        float vi = v[i] * c.b2 + (gi * gi) * c.omb2;
        float denom = sqrtf(vi) * c.inv_sqrt_bc2 + c.eps;
        w[i] = w[i] * c.decay - (mi / denom) * c.step;
        m[i] = mi;
        v[i] = vi;
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout from the counter-based hash (`keep`, above).

// The multipliers themselves: 0 with probability p, else `scale`.
extern "C" __global__ void keep_scales_f32(float *out, unsigned long long n, unsigned long long seed, float p, float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        out[i] = keep(seed, i, p) ? scale : 0.0f;
    }
}

// f16 written as its bit pattern (no header needed)
extern "C" __global__ void keep_scales_f16(unsigned short *out, unsigned long long n, unsigned long long seed, float p,
                                           unsigned short scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        out[i] = keep(seed, i, p) ? scale : (unsigned short)0;
    }
}

// y = x * mask * scale, the mask drawn from (seed, i).
extern "C" __global__ void dropout_fwd(float *y, const float *x, unsigned long long n, unsigned long long seed, float p,
                                       float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] = keep(seed, i, p) ? x[i] * scale : 0.0f;
    }
}

// dx += dy * mask * scale, the same mask drawn again.
extern "C" __global__ void dropout_bwd(float *dx, const float *dy, unsigned long long n, unsigned long long seed, float p,
                                       float scale) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        if (keep(seed, i, p)) dx[i] += dy[i] * scale;
    }
}
