// Normalisation, softmax and elementwise kernels. Reductions accumulate in 64 explicit lanes (SIMD
// without reassociating a single running sum: no fast-math) and end in a pairwise tree over the
// lanes: the order of every addition is fixed by the C code, so each instruction set gets the same
// sums. 64 lanes are 8 AVX2 or 4 AVX-512 accumulators, enough to hide the adds' latency (16 lanes
// left the sums latency-bound: group-norm 1.5x slower), and the tree keeps the final reduction
// short for the 320-wide rows of layer-norm (a serial sum of 64 lanes made layer-norm 1.5x slower
// than 16 lanes).
#include "lumen_cpu.h"
#include "vecmath.h"

#define LANES 64

LUMEN_INLINE void lumen_range(int64_t n, int task, int ntasks, int64_t *b, int64_t *e) {
    *b = n * task / ntasks;
    *e = n * (task + 1) / ntasks;
}

// The 64 lanes as four 16-float vectors (clang's generic vectors: one zmm each with AVX-512, two
// ymm with AVX2, four xmm in the generic build), so that the accumulators stay in registers. As
// `float acc[64]` they did in the main loop only: the partial last group and the final tree went
// through the stack, a store-to-load forwarding delay on every step of the reduction's chain
// (layer-norm's 320-wide rows spent most of their time there). Lane l of vector k is acc[16k + l].
// (-Wpsabi: clang notes that passing these by value changes the ABI without AVX-512; every function
// taking or returning them here is always-inline, so no call ever passes one.)
#pragma clang diagnostic ignored "-Wpsabi"
typedef float lumen_v16 __attribute__((vector_size(64)));
typedef float lumen_v8 __attribute__((vector_size(32)));
typedef float lumen_v4 __attribute__((vector_size(16)));
typedef struct { lumen_v16 v[4]; } lanes64;

LUMEN_INLINE lumen_v16 load16(const float *p) { lumen_v16 v; memcpy(&v, p, sizeof v); return v; }
LUMEN_INLINE lanes64 lanes_splat(float f) {
    lanes64 a;
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 16; l++) a.v[k][l] = f;
    return a;
}
/// The LANES floats of a partial last group (n < LANES of them at x), padded with `pad`.
LUMEN_INLINE lanes64 lanes_tail(const float *x, int64_t n, float pad) {
    float t[LANES];
    for (int l = 0; l < LANES; l++) t[l] = l < n ? x[l] : pad;
    lanes64 a;
    for (int k = 0; k < 4; k++) a.v[k] = load16(t + 16 * k);
    return a;
}

/// acc[0] + ... + acc[LANES - 1], pairwise: acc[l] += acc[l + w] for w = 32, 16, ..., 1.
LUMEN_INLINE float sum_lanes(lanes64 a) {
    lumen_v16 h = (a.v[0] + a.v[2]) + (a.v[1] + a.v[3]);  // w = 32, then 16
    lumen_v8 o = __builtin_shufflevector(h, h, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(h, h, 8, 9, 10, 11, 12, 13, 14, 15);
    lumen_v4 q = __builtin_shufflevector(o, o, 0, 1, 2, 3) + __builtin_shufflevector(o, o, 4, 5, 6, 7);
    float q0 = q[0] + q[2], q1 = q[1] + q[3];
    return q0 + q1;
}

/// Sum of x[0..<n] in LANES lanes (a partial last group of LANES goes to lanes 0, 1, ...; the other
/// lanes add 0, which leaves them unchanged).
LUMEN_INLINE float lane_sum(const float *x, int64_t n) {
    lanes64 a = lanes_splat(0.0f);
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < 4; k++) a.v[k] += load16(x + i + 16 * k);
    if (i < n) {
        lanes64 t = lanes_tail(x + i, n - i, 0.0f);
        for (int k = 0; k < 4; k++) a.v[k] += t.v[k];
    }
    return sum_lanes(a);
}

/// Sum of (x - mean)² over x[0..<n] (the partial group's padding is `mean`: its squares are 0).
LUMEN_INLINE float lane_sq_dev(const float *x, int64_t n, float mean) {
    lanes64 a = lanes_splat(0.0f);
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < 4; k++) {
            lumen_v16 d = load16(x + i + 16 * k) - mean;
            a.v[k] += d * d;
        }
    if (i < n) {
        lanes64 t = lanes_tail(x + i, n - i, mean);
        for (int k = 0; k < 4; k++) {
            lumen_v16 d = t.v[k] - mean;
            a.v[k] += d * d;
        }
    }
    return sum_lanes(a);
}

// b > a ? b : a per lane (C has no vector ?:; the comparison's all-ones lanes select b).
typedef int32_t lumen_i16 __attribute__((vector_size(64)));
typedef int32_t lumen_i8 __attribute__((vector_size(32)));
typedef int32_t lumen_i4 __attribute__((vector_size(16)));
#define LUMEN_VMAX(VT, IT)                                                                    \
    IT gt = (IT)(b > a);                                                                      \
    return (VT)((gt & (IT)b) | (~gt & (IT)a));
LUMEN_INLINE lumen_v16 max16(lumen_v16 a, lumen_v16 b) { LUMEN_VMAX(lumen_v16, lumen_i16) }
LUMEN_INLINE lumen_v8 max8(lumen_v8 a, lumen_v8 b) { LUMEN_VMAX(lumen_v8, lumen_i8) }
LUMEN_INLINE lumen_v4 max4(lumen_v4 a, lumen_v4 b) { LUMEN_VMAX(lumen_v4, lumen_i4) }
#undef LUMEN_VMAX

LUMEN_INLINE float lane_max(const float *x, int64_t n) {
    lanes64 a = lanes_splat(-INFINITY);
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < 4; k++) a.v[k] = max16(a.v[k], load16(x + i + 16 * k));
    if (i < n) {
        lanes64 t = lanes_tail(x + i, n - i, -INFINITY);
        for (int k = 0; k < 4; k++) a.v[k] = max16(a.v[k], t.v[k]);
    }
    lumen_v16 h = max16(max16(a.v[0], a.v[2]), max16(a.v[1], a.v[3]));
    lumen_v8 o = max8(__builtin_shufflevector(h, h, 0, 1, 2, 3, 4, 5, 6, 7),
                      __builtin_shufflevector(h, h, 8, 9, 10, 11, 12, 13, 14, 15));
    lumen_v4 q = max4(__builtin_shufflevector(o, o, 0, 1, 2, 3), __builtin_shufflevector(o, o, 4, 5, 6, 7));
    float q0 = q[2] > q[0] ? q[2] : q[0], q1 = q[3] > q[1] ? q[3] : q[1];
    return q1 > q0 ? q1 : q0;
}

// ---------------------------------------------------------------------------------------------

LUMEN_INLINE void group_norm_body(const float *x, float *y, int64_t batch, int64_t C, int64_t S,
                                  int64_t groups, float eps, const float *gamma, const float *beta,
                                  int silu, int task, int ntasks) {
    int64_t cpg = C / groups, b, e;
    lumen_range(batch * groups, task, ntasks, &b, &e);
    for (int64_t item = b; item < e; item++) {
        int64_t n = item / groups, g = item % groups;
        const float *xs = x + (n * C + g * cpg) * S;
        float *ys = y + (n * C + g * cpg) * S;
        int64_t len = cpg * S;
        // Two passes: the mean first, then the centred sum of squares (no cancellation).
        float mean = lane_sum(xs, len) / (float)len;
        float var = lane_sq_dev(xs, len, mean) / (float)len;
        float rstd = 1.0f / sqrtf(var + eps);
        for (int64_t c = 0; c < cpg; c++) {
            int64_t ch = g * cpg + c;
            float a = rstd * (gamma ? gamma[ch] : 1.0f);
            float sh = (beta ? beta[ch] : 0.0f) - mean * a;
            const float *xc = xs + c * S;
            float *yc = ys + c * S;
            if (silu) {
                LUMEN_VECTORIZE_INPLACE
                for (int64_t i = 0; i < S; i++) yc[i] = lumen_silu(xc[i] * a + sh);
            } else {
                LUMEN_VECTORIZE_INPLACE
                for (int64_t i = 0; i < S; i++) yc[i] = xc[i] * a + sh;
            }
        }
    }
}
LUMEN_DISPATCH(group_norm,
    (const float *x, float *y, int64_t batch, int64_t C, int64_t S, int64_t groups, float eps,
     const float *gamma, const float *beta, int silu, int task, int ntasks),
    (x, y, batch, C, S, groups, eps, gamma, beta, silu, task, ntasks))

void lumen_group_norm(const float *x, float *y, int64_t batch, int64_t C, int64_t S,
                      int64_t groups, float eps, const float *gamma, const float *beta,
                      int silu, int task, int ntasks) {
    group_norm_dispatch(x, y, batch, C, S, groups, eps, gamma, beta, silu, task, ntasks);
}

/// 1 / the standard deviation of a row whose mean is known (the centred squares' pass).
LUMEN_INLINE float layer_norm_rstd(const float *xr, int64_t D, float mean, float eps) {
    return 1.0f / sqrtf(lane_sq_dev(xr, D, mean) / (float)D + eps);
}

/// One row's output: (x - mean) * rstd, times gamma plus beta where given.
LUMEN_INLINE void layer_norm_row_out(const float *xr, float *yr, int64_t D, float mean, float rstd,
                                     const float *gamma, const float *beta) {
    // Two loops rather than one with `gamma ? ... : ...` inside, which clang vectorised with
    // masked loads of gamma and beta and blends (layer-norm at 0.28 ms instead of 0.2 for
    // 4096 x 320 with AVX2).
    if (gamma) {
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = 0; i < D; i++) yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
    } else {
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = 0; i < D; i++) yr[i] = (xr[i] - mean) * rstd;
    }
}

LUMEN_INLINE void layer_norm_body(const float *x, float *y, int64_t rows, int64_t D, float eps,
                                  const float *gamma, const float *beta, int task, int ntasks) {
    int64_t b, e;
    lumen_range(rows, task, ntasks, &b, &e);
    // Two rows at a time, each step written for both before the next: a row alone is one chain
    // (its sum and lane tree, the centred squares and theirs, the square root, the output), and
    // the second row's independent chain fills the first's waits (`lumen bench`, 4096 x 320, one
    // thread: 0.158 -> 0.146 ms with AVX2, 0.111 -> 0.104-0.110 with AVX-512; writing both rows
    // in one loop, which loads gamma and beta once for the two: AVX2 0.139-0.142). Each row's sums
    // are computed exactly as for a row alone. (Computing the next pair's statistics before
    // writing this pair, to overlap their chain with the writes, was slower: AVX2 0.147-0.153,
    // AVX-512 0.117-0.120.)
    int64_t r = b;
    for (; r + 2 <= e; r += 2) {
        const float *x0 = x + r * D, *x1 = x0 + D;
        float mean0 = lane_sum(x0, D) / (float)D, mean1 = lane_sum(x1, D) / (float)D;
        float rstd0 = layer_norm_rstd(x0, D, mean0, eps), rstd1 = layer_norm_rstd(x1, D, mean1, eps);
        float *y0 = y + r * D, *y1 = y0 + D;
        if (gamma) {  // one load of gamma and beta for both rows
            LUMEN_VECTORIZE_INPLACE
            for (int64_t i = 0; i < D; i++) {
                float g = gamma[i], bt = beta[i];
                float v0 = (x0[i] - mean0) * rstd0 * g + bt, v1 = (x1[i] - mean1) * rstd1 * g + bt;
                y0[i] = v0;
                y1[i] = v1;
            }
        } else {
            layer_norm_row_out(x0, y0, D, mean0, rstd0, NULL, NULL);
            layer_norm_row_out(x1, y1, D, mean1, rstd1, NULL, NULL);
        }
    }
    for (; r < e; r++) {
        const float *xr = x + r * D;
        float mean = lane_sum(xr, D) / (float)D;
        layer_norm_row_out(xr, y + r * D, D, mean, layer_norm_rstd(xr, D, mean, eps), gamma, beta);
    }
}
LUMEN_DISPATCH(layer_norm,
    (const float *x, float *y, int64_t rows, int64_t D, float eps, const float *gamma,
     const float *beta, int task, int ntasks),
    (x, y, rows, D, eps, gamma, beta, task, ntasks))

void lumen_layer_norm(const float *x, float *y, int64_t rows, int64_t D, float eps,
                      const float *gamma, const float *beta, int task, int ntasks) {
    layer_norm_dispatch(x, y, rows, D, eps, gamma, beta, task, ntasks);
}

LUMEN_INLINE void softmax_body(const float *x, float *y, int64_t rows, int64_t D, int task, int ntasks) {
    int64_t b, e;
    lumen_range(rows, task, ntasks, &b, &e);
    for (int64_t r = b; r < e; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        float m = lane_max(xr, D);
        if (m == -INFINITY) m = 0.0f;  // a fully masked row gives 0/0 = NaN, as PyTorch
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = 0; i < D; i++) yr[i] = xr[i] == -INFINITY ? 0.0f : lumen_expf(xr[i] - m);
        float inv = 1.0f / lane_sum(yr, D);
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = 0; i < D; i++) yr[i] *= inv;
    }
}
LUMEN_DISPATCH(softmax,
    (const float *x, float *y, int64_t rows, int64_t D, int task, int ntasks),
    (x, y, rows, D, task, ntasks))

void lumen_softmax(const float *x, float *y, int64_t rows, int64_t D, int task, int ntasks) {
    softmax_dispatch(x, y, rows, D, task, ntasks);
}

LUMEN_INLINE void unary_body(int op, const float *x, float *y, int64_t begin, int64_t end) {
    switch (op) {
    case LUMEN_UNARY_SILU:
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = begin; i < end; i++) y[i] = lumen_silu(x[i]);
        break;
    case LUMEN_UNARY_GELU_ERF:
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = begin; i < end; i++) y[i] = lumen_gelu_erf(x[i]);
        break;
    case LUMEN_UNARY_GELU_TANH:
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = begin; i < end; i++) y[i] = lumen_gelu_tanh(x[i]);
        break;
    case LUMEN_UNARY_QUICK_GELU:
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = begin; i < end; i++) y[i] = lumen_quick_gelu(x[i]);
        break;
    default:
        break;
    }
}
LUMEN_DISPATCH(unary, (int op, const float *x, float *y, int64_t begin, int64_t end),
               (op, x, y, begin, end))

void lumen_unary_f32(int op, const float *x, float *y, int64_t begin, int64_t end) {
    unary_dispatch(op, x, y, begin, end);
}

LUMEN_INLINE void geglu_body(const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd) {
    (void)rows;
    for (int64_t r = rowBegin; r < rowEnd; r++) {
        const float *a = x + r * 2 * D;
        const float *g = a + D;
        float *yr = y + r * D;
        // The pragma's four interleaved vectors (GELU's chain is long): 4096 x 1280, one thread,
        // 5.7 -> 4.5-4.8 ms with AVX2, 3.9 -> 1.9 ms with AVX-512, bitwise the same outputs. The
        // executor never runs GEGLU in place (its output is half its input), and even y == x
        // would be safe: row r's output [rD, rD + D) lies in rows already read (rD + D <= 2rD
        // for r >= 1; for r = 0 each a[i] is read before yr[i] is written).
        LUMEN_VECTORIZE_INPLACE
        for (int64_t i = 0; i < D; i++) yr[i] = a[i] * lumen_gelu_erf(g[i]);
    }
}
LUMEN_DISPATCH(geglu, (const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd),
               (x, y, rows, D, rowBegin, rowEnd))

void lumen_geglu(const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd) {
    geglu_dispatch(x, y, rows, D, rowBegin, rowEnd);
}
