// tfm's own CUDA kernels (f32), compiled at run time with NVRTC.
//
// The same text is compiled for the host by the kernel emulator (crates/tfm-cuda-emu), which runs
// every CUDA thread of a block as an OS thread, so the tests check these kernels' arithmetic,
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

// out[c] += part[0][c] + part[1][c] + ... in chunk order.
extern "C" __global__ void col_sum_finish(float *out, const float *part, int chunks, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += part[(long long)k * cols + c];
    out[c] += s;
}

// ---------------------------------------------------------------------------------------------
// GELU: `exact` selects the erf form; otherwise the tanh approximation (GPT-2's).

__device__ float gelu(float x, int exact) {
    if (exact) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

__device__ float gelu_grad(float x, int exact) {
    if (exact) {
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return cdf + x * pdf;
    }
    float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    float t = tanhf(u);
    float du = 0.79788456080286536f * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

extern "C" __global__ void gelu_fwd(float *y, const float *x, long long n, int exact) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = gelu(x[i], exact);
}

extern "C" __global__ void gelu_bwd(float *dx, const float *dy, const float *x, long long n, int exact) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] += dy[i] * gelu_grad(x[i], exact);
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
// Cross-entropy: one block per row of logits. loss[r] = logsumexp(x[r]) - x[r, t[r]], and with
// `dlogits` non-null also its gradient, (softmax(x[r]) - onehot(t[r])) * dscale, written in the
// same pass. A target of -100 is ignored (loss and gradient 0). Targets were checked on the host.
extern "C" __global__ void cross_entropy_fwd(float *loss, float *dlogits, const float *logits,
                                             const long long *targets, int rows, int v, float dscale) {
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
    if (dlogits) {
        float *d = dlogits + row * v;
        float inv = 1.0f / z;
        for (int j = threadIdx.x; j < v; j += blockDim.x)
            d[j] = ignored ? 0.0f : (expf(x[j] - m) * inv - (j == t ? 1.0f : 0.0f)) * dscale;
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
// Dropout from a counter-based hash: the keep decision for element i is a function of
// (seed, i) alone, so the backward pass draws the same mask again instead of storing it.

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
