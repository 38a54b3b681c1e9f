// Normalisation, softmax and elementwise kernels. Reductions accumulate in 64 explicit lanes so
// that the vectoriser can use SIMD without reassociating a single running sum (no fast-math), and
// end in a pairwise tree over the lanes: the order of every addition is fixed by the C code, so
// each instruction set gets the same sums. 64 lanes are 8 AVX2 or 4 AVX-512 accumulators, enough
// to hide the adds' latency (16 lanes left the sums latency-bound: group-norm 1.5x slower), and
// the tree keeps the final reduction short for the 320-wide rows of layer-norm (a serial sum of
// 64 lanes made layer-norm 1.5x slower than 16 lanes).
#include "lumen_cpu.h"
#include "vecmath.h"

#define LANES 64

LUMEN_INLINE void lumen_range(int64_t n, int task, int ntasks, int64_t *b, int64_t *e) {
    *b = n * task / ntasks;
    *e = n * (task + 1) / ntasks;
}

/// acc[0] + ... + acc[LANES - 1], pairwise (acc is overwritten).
LUMEN_INLINE float sum_lanes(float *acc) {
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/// Sum of x[0..<n] in LANES lanes (a partial last group of LANES goes to lanes 0, 1, ...).
LUMEN_INLINE float lane_sum(const float *x, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += x[i];
    return sum_lanes(acc);
}

/// Sum of (x - mean)² over x[0..<n].
LUMEN_INLINE float lane_sq_dev(const float *x, int64_t n, float mean) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) { float d = x[i + l] - mean; acc[l] += d * d; }
    for (int l = 0; i < n; i++, l++) { float d = x[i] - mean; acc[l] += d * d; }
    return sum_lanes(acc);
}

LUMEN_INLINE float lane_max(const float *x, int64_t n) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
    for (int l = 0; i < n; i++, l++) acc[l] = x[i] > acc[l] ? x[i] : acc[l];
    for (int w = LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] = acc[l + w] > acc[l] ? acc[l + w] : acc[l];
    return acc[0];
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

LUMEN_INLINE void layer_norm_body(const float *x, float *y, int64_t rows, int64_t D, float eps,
                                  const float *gamma, const float *beta, int task, int ntasks) {
    int64_t b, e;
    lumen_range(rows, task, ntasks, &b, &e);
    for (int64_t r = b; r < e; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        float mean = lane_sum(xr, D) / (float)D;
        float rstd = 1.0f / sqrtf(lane_sq_dev(xr, D, mean) / (float)D + eps);
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
        for (int64_t i = 0; i < D; i++) yr[i] = a[i] * lumen_gelu_erf(g[i]);
    }
}
LUMEN_DISPATCH(geglu, (const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd),
               (x, y, rows, D, rowBegin, rowEnd))

void lumen_geglu(const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd) {
    geglu_dispatch(x, y, rows, D, rowBegin, rowEnd);
}
