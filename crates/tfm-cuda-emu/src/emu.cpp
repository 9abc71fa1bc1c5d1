// The kernels, compiled for the host, and one C entry point per kernel: `emu_NAME(gx, gy, block,
// the kernel's parameters)` runs NAME on a grid of gx x gy blocks of `block` threads.
#include "emu.h"

#include "kernels.cu"

#define EMU(name, args, ...)                                                                       \
    extern "C" void emu_##name(unsigned gx, unsigned gy, unsigned block, __VA_ARGS__) {            \
        emu::launch(gx, gy, block, [=] { name args; });                                            \
    }

EMU(layer_norm_fwd, (y, mean, rstd, x, w, b, rows, cols, eps), float *y, float *mean, float *rstd, const float *x,
    const float *w, const float *b, int rows, int cols, float eps)
EMU(layer_norm_bwd_dx, (dx, dy, x, w, mean, rstd, rows, cols), float *dx, const float *dy, const float *x,
    const float *w, const float *mean, const float *rstd, int rows, int cols)
EMU(layer_norm_wb_partials, (pw, pb, dy, x, mean, rstd, rows, cols, per_chunk), float *pw, float *pb,
    const float *dy, const float *x, const float *mean, const float *rstd, int rows, int cols, int per_chunk)
EMU(col_sum_partials, (part, a, rows, cols, per_chunk), float *part, const float *a, int rows, int cols,
    int per_chunk)
EMU(col_sum_finish, (out, part, chunks, cols, scale), float *out, const float *part, int chunks, int cols,
    float scale)
EMU(add_fwd, (y, a, b, n), float *y, const float *a, const float *b, long long n)
EMU(add_into, (dst, src, n), float *dst, const float *src, long long n)
EMU(fill_rows, (y, b, rows, cols), float *y, const float *b, long long rows, int cols)
EMU(act_fwd, (y, x, n, kind), float *y, const float *x, long long n, int kind)
EMU(act_bwd, (dx, dy, x, n, kind), float *dx, const float *dy, const float *x, long long n, int kind)
EMU(softmax_rows_fwd, (p, s, rows, n, scale, q_len), float *p, const float *s, int rows, int n, float scale,
    int q_len)
EMU(softmax_rows_bwd, (ds, p, dp, rows, n, scale), float *ds, const float *p, const float *dp, int rows, int n,
    float scale)
EMU(attention_fwd, (o, lse, q, k, v, d), float *o, float *lse, const float *q, const float *k, const float *v,
    AttnDims d)
EMU(attention_bwd_dot, (dsum, dout, o, d), float *dsum, const float *dout, const float *o, AttnDims d)
EMU(attention_bwd_dq, (dq, dout, q, k, v, lse, dsum, d), float *dq, const float *dout, const float *q,
    const float *k, const float *v, const float *lse, const float *dsum, AttnDims d)
EMU(attention_bwd_dkdv, (dk, dv, dout, q, k, v, lse, dsum, d), float *dk, float *dv, const float *dout,
    const float *q, const float *k, const float *v, const float *lse, const float *dsum, AttnDims d)
EMU(cross_entropy_fwd, (loss, dlogits, logits, targets, rows, v, dscale, dscale_dev), float *loss, float *dlogits,
    const float *logits, const long long *targets, int rows, int v, float dscale, const float *dscale_dev)
EMU(embedding_fwd, (out, ids, table, n, dim), float *out, const long long *ids, const float *table, int n, int dim)
EMU(embedding_bwd, (dtable, dout, order, starts, uniq, n_uniq, dim), float *dtable, const float *dout,
    const int *order, const int *starts, const int *uniq, int n_uniq, int dim)
EMU(adamw, (w, m, v, g, n, c), float *w, float *m, float *v, const float *g, long long n, AdamwConsts c)
EMU(keep_scales_f32, (out, n, seed, p, scale), float *out, unsigned long long n, unsigned long long seed, float p,
    float scale)
EMU(dropout_fwd, (y, x, n, seed, p, scale), float *y, const float *x, unsigned long long n, unsigned long long seed,
    float p, float scale)
EMU(dropout_bwd, (dx, dy, n, seed, p, scale), float *dx, const float *dy, unsigned long long n,
    unsigned long long seed, float p, float scale)

// One entry point for every kernel: `emu_launch(name, gx, gy, block, params)` runs kernel `name`
// with its parameters read from `params[i]` (a pointer to the i-th parameter's value, as
// cuLaunchKernel takes them), each cast to the type the kernel declares. Returns 0, or -1 for an
// unknown name.
#include <cstring>
#include <utility>

template <class... A, std::size_t... I>
static void call_with(void (*f)(A...), void **p, std::index_sequence<I...>) {
    f(*static_cast<A *>(p[I])...);
}

template <class... A> static void run_kernel(void (*f)(A...), unsigned gx, unsigned gy, unsigned block, void **p) {
    emu::launch(gx, gy, block, [=] { call_with(f, p, std::index_sequence_for<A...>{}); });
}

#define TFM_KERNELS(X)                                                                                               \
    X(layer_norm_fwd) X(layer_norm_bwd_dx) X(layer_norm_wb_partials) X(col_sum_partials) X(col_sum_finish)          \
    X(add_fwd) X(add_into) X(fill_rows) X(act_fwd) X(act_bwd) X(softmax_rows_fwd) X(softmax_rows_bwd)             \
    X(attention_fwd) X(attention_bwd_dot) X(attention_bwd_dq) X(attention_bwd_dkdv) X(cross_entropy_fwd)            \
    X(embedding_fwd) X(embedding_bwd) X(adamw) X(keep_scales_f32) X(keep_scales_f16) X(dropout_fwd) X(dropout_bwd)       \
    X(rms_norm_fwd) X(rms_norm_bwd_dx) X(rms_norm_w_partials) X(rope_fwd) X(rope_bwd)

extern "C" int emu_launch(const char *name, unsigned gx, unsigned gy, unsigned block, void **params) {
#define TFM_RUN(k)                                                                                                   \
    if (std::strcmp(name, #k) == 0) {                                                                                \
        run_kernel(k, gx, gy, block, params);                                                                        \
        return 0;                                                                                                    \
    }
    TFM_KERNELS(TFM_RUN)
#undef TFM_RUN
    return -1;
}
