// Winograd 3x3 convolutions (stride 1, padding 1): F(m x m, 3 x 3) with m = 6 (8 x 8 input tiles,
// 64 products per 36 outputs instead of 324), m = 4 (6 x 6 tiles, 36 per 16 instead of 144) or
// m = 2 (4 x 4 tiles, 16 per 4 instead of 36).
//
// For each input tile d (alpha x alpha, alpha = m + 2) and channel c, V = B^T d B; for each
// output channel o and channel c, U = G g G^T; then for each of the alpha^2 positions xi a GEMM
//     M[xi][tile][o] = sum_c V[xi][tile][c] * U[xi][o][c]
// through the packed-panel driver, and each output tile is A^T M A (+ bias, + the fused ops).
// The transforms are Toom-Cook's for the points named below (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015, give the construction and the F(2x2, 3x3) matrices).
//
// The work runs in phases with a barrier between them (lumen_winograd_run_phase; the caller's
// thread pool runs each phase on all tasks): for every block of tiles and block of output
// channels, (1) the transforms of the block's input tiles and weights, (2) the alpha^2 GEMMs,
// (3) the output transform. A plan keeps the scratch (V, U and M) within a budget: either all
// tiles at once and the output channels in blocks (V made once), or all output channels at once
// and the tiles in blocks (U made once). Channels are handled 8 at a time (C and O multiples of
// 8), as 8-lane vectors: tiles are transposed into channel-minor strips on the way in and back
// on the way out. Where the transformed weights are small (64-128 channels), the fused mode
// instead transforms all the weights in one phase and then lets every task take units of tiles
// through all three steps while their V and M stay near (about twice the L2; plan_fused); there
// the transforms write the GEMM's packed operands, so that the products need no packing
// (lumen_gemm_prepacked), and F(6x6) is taken from 128 pixels a side.
#include "gemm_internal.h"

#include <stdlib.h>

#if LUMEN_X86

typedef float v8 __attribute__((vector_size(32), aligned(32)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(32)));

#define WG_TARGET LUMEN_TARGET_AVX2
#define WG_INLINE static inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// 1-D transforms on 8-lane vectors (s: stride between the elements, in vectors); a float
// operand of a vector operation stands for its splat
// ---------------------------------------------------------------------------------------------

// For m = 4 the points are 0, 1, -1, 1/2, -2 and infinity rather than the usual 0, +-1, +-2: in
// f32 at 64-320 channels that gives a 2.6x smaller largest error (a float32 simulation against
// float64; Barabasz et al., "Error analysis and improving the accuracy of Winograd convolution for
// deep neural networks", 2020, point to the same set), and A^T's entries stay powers of two.

// For m = 6 the points are 0, 1, -1, 1/2, -1/2, 2, -2 and infinity (the usual set; B^T's and G's
// first rows negated, which leaves their products unchanged). Its largest f32 error is about 5x
// F(4x4)'s (a float32 simulation against float64 at 64 and 128 channels: 1.3e-5 against 2.4e-6
// of the largest output), for 64 products per 36 outputs instead of 36 per 16.

// B^T (alpha x alpha) applied to d[0], d[s], ...
WG_TARGET WG_INLINE void wg_bt(int m, const v8 *d, int sd, v8 *o, int so) {
    if (m == 6) {
        const v8 d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd], d4 = d[4 * sd], d5 = d[5 * sd],
                 d6 = d[6 * sd], d7 = d[7 * sd];
        o[0] = d0 - d6 + 5.25f * (d4 - d2);
        const v8 e1 = d2 + d6 - 4.25f * d4, f1 = d1 + d5 - 4.25f * d3;
        o[so] = e1 + f1;
        o[2 * so] = e1 - f1;
        const v8 e3 = 4.0f * d2 - 5.0f * d4 + d6, f3 = 2.0f * d1 - 2.5f * d3 + 0.5f * d5;
        o[3 * so] = e3 + f3;
        o[4 * so] = e3 - f3;
        const v8 e5 = 0.25f * d2 - 1.25f * d4 + d6, f5 = 0.5f * d1 - 2.5f * d3 + 2.0f * d5;
        o[5 * so] = e5 + f5;
        o[6 * so] = e5 - f5;
        o[7 * so] = d7 - d1 + 5.25f * (d3 - d5);
    } else if (m == 4) {
        const v8 d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd], d4 = d[4 * sd], d5 = d[5 * sd];
        o[0] = d0 + 1.5f * (d3 - d1) + d4 - 2.0f * d2;
        o[so] = d4 - d1 + 0.5f * d2 + 2.5f * d3;
        o[2 * so] = d4 + d1 - 2.5f * d2 + 0.5f * d3;
        o[3 * so] = d4 - d2 + 2.0f * (d3 - d1);
        o[4 * so] = d4 - d2 + 0.5f * (d1 - d3);
        o[5 * so] = d5 + d1 + 1.5f * (d4 - d2) - 2.0f * d3;
    } else {
        const v8 d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd];
        o[0] = d0 - d2;
        o[so] = d1 + d2;
        o[2 * so] = d2 - d1;
        o[3 * so] = d1 - d3;
    }
}

// G (alpha x 3) applied to g[0], g[s], g[2s]
WG_TARGET WG_INLINE void wg_g(int m, const v8 *g, int sg, v8 *o, int so) {
    const v8 g0 = g[0], g1 = g[sg], g2 = g[2 * sg];
    if (m == 6) {
        const v8 e = g0 + g2;
        o[0] = g0;
        o[so] = (-2.0f / 9) * (e + g1);
        o[2 * so] = (-2.0f / 9) * (e - g1);
        const v8 e3 = 32.0f * g0 + 8.0f * g2, e5 = g0 + 4.0f * g2;
        o[3 * so] = (1.0f / 45) * (e3 + 16.0f * g1);
        o[4 * so] = (1.0f / 45) * (e3 - 16.0f * g1);
        o[5 * so] = (1.0f / 90) * (e5 + 2.0f * g1);
        o[6 * so] = (1.0f / 90) * (e5 - 2.0f * g1);
        o[7 * so] = g2;
    } else if (m == 4) {
        const float t3 = 1.0f / 3, f15 = 1.0f / 15;
        const v8 e = g0 + g2;
        o[0] = g0;
        o[so] = t3 * (e + g1);
        o[2 * so] = t3 * (g1 - e);
        o[3 * so] = -(4.0f * f15) * (4.0f * g0 + 2.0f * g1 + g2);
        o[4 * so] = f15 * (g0 - 2.0f * g1 + 4.0f * g2);
        o[5 * so] = g2;
    } else {
        const v8 e = g0 + g2;
        o[0] = g0;
        o[so] = 0.5f * (e + g1);
        o[2 * so] = 0.5f * (e - g1);
        o[3 * so] = g2;
    }
}

// A^T (m x alpha) applied to v[0], v[s], ...
WG_TARGET WG_INLINE void wg_at(int m, const v8 *v, int sv, v8 *o, int so) {
    if (m == 6) {
        const v8 v0 = v[0], v7 = v[7 * sv];
        const v8 a1 = v[sv] + v[2 * sv], b1 = v[sv] - v[2 * sv];
        const v8 a3 = v[3 * sv] + v[4 * sv], b3 = v[3 * sv] - v[4 * sv];
        const v8 a5 = v[5 * sv] + v[6 * sv], b5 = v[5 * sv] - v[6 * sv];
        o[0] = v0 + a1 + a3 + a5;
        o[so] = b1 + 0.5f * b3 + 2.0f * b5;
        o[2 * so] = a1 + 0.25f * a3 + 4.0f * a5;
        o[3 * so] = b1 + 0.125f * b3 + 8.0f * b5;
        o[4 * so] = a1 + 0.0625f * a3 + 16.0f * a5;
        o[5 * so] = b1 + 0.03125f * b3 + 32.0f * b5 + v7;
    } else if (m == 4) {
        const v8 v0 = v[0], v1 = v[sv], v2 = v[2 * sv], v3 = v[3 * sv], v4 = v[4 * sv], v5 = v[5 * sv];
        const v8 a = v1 + v2, b = v1 - v2;
        o[0] = v0 + a + v3 + v4;
        o[so] = b + 0.5f * v3 - 2.0f * v4;
        o[2 * so] = a + 0.25f * v3 + 4.0f * v4;
        o[3 * so] = b + 0.125f * v3 - 8.0f * v4 + v5;
    } else {
        const v8 v0 = v[0], v1 = v[sv], v2 = v[2 * sv], v3 = v[3 * sv];
        o[0] = v0 + v1 + v2;
        o[so] = v1 - v2 - v3;
    }
}

WG_TARGET WG_INLINE v8 wg_loadu(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

WG_TARGET WG_INLINE void wg_storeu(float *p, v8 v) { memcpy(p, &v, sizeof v); }

// ---------------------------------------------------------------------------------------------
// Phase 1a: input tiles [tx0, tx1) of one strip (image b, tile row ty) for channels [c0, c0 + 8),
// stored at V[xi * vs + (tloc0 + tx - tx0) * C + c]
// ---------------------------------------------------------------------------------------------

WG_TARGET WG_INLINE void wg_input_strip_m(const int m, const lumen_winograd_plan *p, const float *x,
                                          int64_t b, int64_t ty, int64_t tx0, int64_t tx1, int64_t c0,
                                          float *V, int64_t vs, int64_t ldv, int64_t tloc0) {
    const int alpha = m + 2;
    const int64_t C = p->C, H = p->H, W = p->W;
    // strip columns: input columns xs .. xe - 1
    const int64_t xs = m * tx0 - 1, xe = m * tx1 + 1, XW = xe - xs;
    const int64_t lo = xs < 0 ? 0 : xs, hi = xe < W ? xe : W;
    // xt[(r * XW + xi) * 8 + lane] = x[b, c0 + lane, ty*m - 1 + r, xs + xi] (0 outside the image)
    v8 *xt = (v8 *)lumen_tl_buffer(2, (size_t)(alpha * XW * 8));
    const int64_t y0 = ty * m - 1;
    const float *xb = x + (b * C + c0) * H * W;
    for (int r = 0; r < alpha; ++r) {
        v8 *row = xt + r * XW;  // row[x - xs] for x in [xs, xe)
        const int64_t y = y0 + r;
        if (y < 0 || y >= H || lo >= hi) {
            for (int64_t xi = 0; xi < XW; ++xi) row[xi] = (v8){0};
            continue;
        }
        for (int64_t xx = xs; xx < lo; ++xx) row[xx - xs] = (v8){0};
        const float *src = xb + y * W;
        int64_t xx = lo;
        for (; xx + 8 <= hi; xx += 8) {
            __m256 r8[8];
            for (int l = 0; l < 8; ++l) r8[l] = _mm256_loadu_ps(src + l * H * W + xx);
            lumen_tr8_avx2(r8);  // r8[j] = column xx + j of the 8 channels
            for (int j = 0; j < 8; ++j) row[xx - xs + j] = (v8)r8[j];
        }
        for (; xx < hi; ++xx) {
            v8 v;
            for (int l = 0; l < 8; ++l) v[l] = src[l * H * W + xx];
            row[xx - xs] = v;
        }
        for (xx = hi; xx < xe; ++xx) row[xx - xs] = (v8){0};
    }
    v8 d[64], t[64];
    for (int64_t tx = tx0; tx < tx1; ++tx) {
        const v8 *tile = xt + m * (tx - tx0);  // tile[r * XW + j]
        for (int j = 0; j < alpha; ++j) wg_bt(m, tile + j, (int)XW, t + j, alpha);  // columns
        for (int i = 0; i < alpha; ++i) wg_bt(m, t + i * alpha, 1, d + i * alpha, 1);  // rows
        float *dst = V + (tloc0 + tx - tx0) * ldv + c0;
        for (int k = 0; k < alpha * alpha; ++k) wg_storeu(dst + k * vs, d[k]);
    }
}

// V's rows (tiles) at stride ldv: C, or the GEMM's packed-A stride (fused mode, pack_nr > 0)
WG_TARGET static void wg_input_strip4(const lumen_winograd_plan *p, const float *x, int64_t b, int64_t ty,
                                      int64_t tx0, int64_t tx1, int64_t c0, float *V, int64_t vs,
                                      int64_t ldv, int64_t tloc0) {
    wg_input_strip_m(4, p, x, b, ty, tx0, tx1, c0, V, vs, ldv, tloc0);
}

WG_TARGET static void wg_input_strip6(const lumen_winograd_plan *p, const float *x, int64_t b, int64_t ty,
                                      int64_t tx0, int64_t tx1, int64_t c0, float *V, int64_t vs,
                                      int64_t ldv, int64_t tloc0) {
    wg_input_strip_m(6, p, x, b, ty, tx0, tx1, c0, V, vs, ldv, tloc0);
}

WG_TARGET static void wg_input_strip2(const lumen_winograd_plan *p, const float *x, int64_t b, int64_t ty,
                                      int64_t tx0, int64_t tx1, int64_t c0, float *V, int64_t vs,
                                      int64_t ldv, int64_t tloc0) {
    wg_input_strip_m(2, p, x, b, ty, tx0, tx1, c0, V, vs, ldv, tloc0);
}

static void wg_input_strip(const lumen_winograd_plan *p, const float *x, int64_t b, int64_t ty,
                           int64_t tx0, int64_t tx1, int64_t c0, float *V, int64_t vs, int64_t ldv,
                           int64_t tloc0) {
    (p->m == 6 ? wg_input_strip6 : p->m == 4 ? wg_input_strip4 : wg_input_strip2)(p, x, b, ty, tx0, tx1, c0, V,
                                                                                  vs, ldv, tloc0);
}

// ---------------------------------------------------------------------------------------------
// Phase 1b: transformed weights of output channel o (all input channels)
// ---------------------------------------------------------------------------------------------

// U[xi * us + oloc * C + c]
WG_TARGET static void wg_weights(const lumen_winograd_plan *p, int isa, const void *w, int wdtype,
                                 int64_t o, float *U, int64_t us, int64_t oloc) {
    const int m = (int)p->m, alpha = m + 2;
    const int64_t C = p->C;
    float *g = lumen_tl_buffer(2, (size_t)(C * 9));
    lumen_cvt_row(isa, (const char *)w + (size_t)(o * C * 9) * lumen_dtype_size(wdtype), wdtype, C * 9, g);
    v8 gv[9], t[24], u[64];
    for (int64_t c0 = 0; c0 < C; c0 += 8) {
        for (int k = 0; k < 9; ++k)
            for (int l = 0; l < 8; ++l) gv[k][l] = g[(c0 + l) * 9 + k];
        for (int j = 0; j < 3; ++j) wg_g(m, gv + j, 3, t + j, 3);          // along kh: t[i][kw]
        for (int i = 0; i < alpha; ++i) wg_g(m, t + i * 3, 1, u + i * alpha, 1);  // along kw
        float *dst = U + oloc * C + c0;
        for (int k = 0; k < alpha * alpha; ++k) wg_storeu(dst + k * us, u[k]);
    }
}

// The same into the GEMM's packed B for output channels [o0, o0 + 8) (o0 a multiple of 8, nr of
// 8), 8 output channels a vector, so that each transformed weight vector is one store:
// U[xi * us + (o0 / nr) * nr * C + c * nr + o0 % nr + lane]. Channels o >= O get zeros.
WG_TARGET static void wg_weights_packed(const lumen_winograd_plan *p, int isa, const void *w, int wdtype,
                                        int64_t o0, float *U, int64_t us, int64_t nr) {
    const int m = (int)p->m, alpha = m + 2;
    const int64_t C = p->C, n = C * 9;
    float *g = lumen_tl_buffer(2, (size_t)(8 * n));  // g[l * n + c * 9 + k]: output channel o0 + l
    for (int l = 0; l < 8; ++l) {
        if (o0 + l < p->O)
            lumen_cvt_row(isa, (const char *)w + (size_t)((o0 + l) * n) * lumen_dtype_size(wdtype), wdtype, n, g + l * n);
        else
            memset(g + l * n, 0, sizeof(float) * (size_t)n);
    }
    v8 gv[9], t[24], u[64];
    float *base = U + (o0 / nr) * nr * C + o0 % nr;
    for (int64_t c = 0; c < C; ++c) {
        for (int k = 0; k < 9; ++k)
            for (int l = 0; l < 8; ++l) gv[k][l] = g[l * n + c * 9 + k];
        for (int j = 0; j < 3; ++j) wg_g(m, gv + j, 3, t + j, 3);                // along kh
        for (int i = 0; i < alpha; ++i) wg_g(m, t + i * 3, 1, u + i * alpha, 1);  // along kw
        for (int k = 0; k < alpha * alpha; ++k) wg_storeu(base + c * nr + k * us, u[k]);
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 3: output tiles [tx0, tx1) of one strip for output channels [o0, o0 + 8), read from
// M[xi * ms + (tloc0 + tx - tx0) * ldm + ol0 + lane]
// ---------------------------------------------------------------------------------------------

WG_TARGET WG_INLINE void wg_output_strip_m(const int m, const lumen_winograd_plan *p, const float *M,
                                           int64_t ms, int64_t ldm, int64_t b, int64_t ty, int64_t tx0,
                                           int64_t tx1, int64_t o0, int64_t ol0, int64_t tloc0,
                                           const float *bias, float *y, const lumen_conv_epilogue *ep) {
    const int alpha = m + 2;
    const int64_t O = p->O, H = p->H, W = p->W;
    const int64_t YW = m * (tx1 - tx0), xbeg = m * tx0, xend = m * tx1 < W ? m * tx1 : W;
    v8 *yt = (v8 *)lumen_tl_buffer(2, (size_t)(m * YW * 8));  // yt[i * YW + x - xbeg]
    v8 bv = (v8){0};
    if (bias) bv = wg_loadu(bias + o0);
    v8 v[64], t[48], r[36];
    for (int64_t tx = tx0; tx < tx1; ++tx) {
        const float *src = M + (tloc0 + tx - tx0) * ldm + ol0;
        for (int k = 0; k < alpha * alpha; ++k) v[k] = wg_loadu(src + k * ms);
        for (int j = 0; j < alpha; ++j) wg_at(m, v + j, alpha, t + j, alpha);  // t[i][j], i < m
        for (int i = 0; i < m; ++i) wg_at(m, t + i * alpha, 1, r + i * m, 1);  // r[i][jj]
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j) yt[i * YW + (tx - tx0) * m + j] = r[i * m + j] + bv;
    }
    const float *res = ep ? ep->residual : NULL;
    const int affine = ep && ep->affine, clamp = ep && ep->clamp;
    const float mul = affine ? ep->mul : 0, add = affine ? ep->add : 0;
    const float lo = clamp ? ep->lo : 0, hi = clamp ? ep->hi : 0;
    const v8 vlo = lo + (v8){0}, vhi = hi + (v8){0};  // splats (the comparisons below want vectors)
    for (int i = 0; i < m; ++i) {
        const int64_t yy = ty * m + i;
        if (yy >= H) break;
        const int64_t base = ((b * O + o0) * H + yy) * W;  // channel o0's row; + l*H*W per lane
        int64_t xx = xbeg;
        for (; xx + 8 <= xend; xx += 8) {
            __m256 r8[8];
            for (int j = 0; j < 8; ++j) r8[j] = (__m256)yt[i * YW + (xx - xbeg) + j];
            lumen_tr8_avx2(r8);  // r8[l] = channel o0 + l, columns xx .. xx+7
            for (int l = 0; l < 8; ++l) {
                v8 q = (v8)r8[l];
                const int64_t off = base + l * H * W + xx;
                if (res) q = q + wg_loadu(res + off);
                if (affine) { q = q * mul; q = q + add; }
                if (clamp) {  // max(q, lo) then min(., hi) as Swift computes them: NaN stays NaN
                    const v8i below = (v8i)(vlo >= q), above = (v8i)(vhi < q);
                    q = (v8)(((v8i)vlo & below) | ((v8i)q & ~below));
                    q = (v8)(((v8i)vhi & above) | ((v8i)q & ~above));
                }
                wg_storeu(y + off, q);
            }
        }
        for (; xx < xend; ++xx) {
            const v8 q = yt[i * YW + (xx - xbeg)];
            for (int l = 0; l < 8; ++l) {
                const int64_t off = base + l * H * W + xx;
                float s = q[l];
                if (res) s = s + res[off];
                if (affine) { s = s * mul; s = s + add; }
                if (clamp) {
                    if (lo >= s) s = lo;  // max(s, lo) as Swift: NaN stays NaN
                    if (s > hi) s = hi;
                }
                y[off] = s;
            }
        }
    }
}

#define WG_OUTPUT_ARGS                                                                              \
    const lumen_winograd_plan *p, const float *M, int64_t ms, int64_t ldm, int64_t b, int64_t ty,   \
        int64_t tx0, int64_t tx1, int64_t o0, int64_t ol0, int64_t tloc0, const float *bias, float *y, \
        const lumen_conv_epilogue *ep

WG_TARGET static void wg_output_strip4(WG_OUTPUT_ARGS) {
    wg_output_strip_m(4, p, M, ms, ldm, b, ty, tx0, tx1, o0, ol0, tloc0, bias, y, ep);
}

WG_TARGET static void wg_output_strip6(WG_OUTPUT_ARGS) {
    wg_output_strip_m(6, p, M, ms, ldm, b, ty, tx0, tx1, o0, ol0, tloc0, bias, y, ep);
}

WG_TARGET static void wg_output_strip2(WG_OUTPUT_ARGS) {
    wg_output_strip_m(2, p, M, ms, ldm, b, ty, tx0, tx1, o0, ol0, tloc0, bias, y, ep);
}

static void wg_output_strip(WG_OUTPUT_ARGS) {
    (p->m == 6 ? wg_output_strip6 : p->m == 4 ? wg_output_strip4 : wg_output_strip2)(p, M, ms, ldm, b, ty, tx0, tx1,
                                                                                     o0, ol0, tloc0, bias, y, ep);
}
#undef WG_OUTPUT_ARGS

#endif  // LUMEN_X86

// ---------------------------------------------------------------------------------------------
// Plan and phases
// ---------------------------------------------------------------------------------------------

static int winograd_mode_now = -1;  // -1: not read yet

static int winograd_mode(void) {  // 0 off, 1 where it is faster (default), 2 wherever it can run
    return lumen_conv_mode_get(&winograd_mode_now, "LUMEN_CONV_WINOGRAD");
}

int lumen_cpu_set_conv_winograd(int mode) { return lumen_conv_mode_set(&winograd_mode_now, mode); }

int lumen_cpu_conv_winograd(void) { return winograd_mode(); }

static int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

// Floats from one plane (of U, V or M) to the next: at least n, an odd number of 64-byte cache
// lines (16 past a multiple of 32 floats). The transforms touch all the planes for each tile (each
// weight): planes an odd number of lines apart fall in as many different cache sets as there are
// planes (up to 64, in L1's 64 sets and in L2's); at a multiple of 4 KiB apart (as 56 tiles of the
// packed stride 384 are, 64 x 64 weights, or the unfused blocks of the UNet's convolutions) they
// all share one set, and the transforms ran at half speed (the fused 64 -> 64 convolution) or the
// whole unfused convolution 10-35% slower.
static int64_t wg_plane_stride(int64_t n) { return (n + 31) / 32 * 32 + 16; }

// The unfused mode's plane strides for blocks of `tiles` tiles and `ob` output channels: V (tiles
// x C), U (ob x C) and M (tiles x ob); the scratch holds alpha^2 planes of each, in that order.
typedef struct { int64_t vs, us, ms; } wg_strides;

static wg_strides wg_block_strides(int64_t tiles, int64_t ob, int64_t C) {
    return (wg_strides){wg_plane_stride(tiles * C), wg_plane_stride(ob * C), wg_plane_stride(tiles * ob)};
}

static int64_t wg_block_floats(int64_t a2, int64_t tiles, int64_t ob, int64_t C) {
    const wg_strides st = wg_block_strides(tiles, ob, C);
    return a2 * (st.vs + st.us + st.ms);
}

// Fills p for tile size m within `budget` floats of scratch; 0 where nothing fits. The scratch
// holds, per block, V (a2 x tiles x C), U (a2 x ob x C) and M (a2 x tiles x ob). Among the block
// shapes that fit, the cheapest by a rough model: the GEMMs' FLOPs inflated where a block is thin
// (packing and edge overheads grow as 32/rows), plus the weight transforms, which are redone for
// every tile block when the output channels are split too (about 100 GEMM FLOPs per weight).
static int plan_for(int64_t batch, int64_t C, int64_t H, int64_t W, int64_t O, int m,
                    int64_t budget, lumen_winograd_plan *p) {
    const int64_t a2 = (m + 2) * (m + 2);
    const int64_t TH = (H + m - 1) / m, TW = (W + m - 1) / m, S = batch * TH, T = S * TW;
    memset(p, 0, sizeof *p);
    double bestCost = 0;
    int found = 0;
    for (int64_t nob = 1; nob == 1 || (O + nob - 1) / nob >= 64; ++nob) {
        const int64_t ob = round8((O + nob - 1) / nob);
        const int64_t nobReal = (O + ob - 1) / ob;
        if (a2 * ob * C >= budget) continue;
        int64_t rows = (budget - a2 * ob * C) / (a2 * TW * (C + ob));
        if (rows > S) rows = S;
        // with the planes' padding (wg_plane_stride)
        while (rows >= 1 && wg_block_floats(a2, rows * TW, ob, C) > budget) --rows;
        if (rows < 1) continue;
        const int64_t ntb = (S + rows - 1) / rows;
        rows = (S + ntb - 1) / ntb;
        const double tb = (double)(rows * TW);
        const double gemm = 2.0 * (double)(a2 * T) * (double)O * (double)C * (1.0 + 32.0 / tb) *
                            (1.0 + 32.0 / (double)ob);
        const double wt = 100.0 * (double)O * (double)C * (double)(nobReal > 1 ? ntb : 1);
        const double cost = gemm + wt;
        if (!found || cost < bestCost) {
            found = 1;
            bestCost = cost;
            p->strips_per_block = rows; p->tb_tiles = rows * TW; p->ob = ob;
            p->n_tblocks = ntb; p->n_oblocks = nobReal;
            p->scratch_floats = wg_block_floats(a2, rows * TW, ob, C);
        }
        if (ob <= 8) break;
    }
    if (!found) return 0;
    p->batch = batch; p->C = C; p->H = H; p->W = W; p->O = O; p->m = m;
    p->TH = TH; p->TW = TW;
    return 1;
}

// Fused mode (all the weights' transforms shared, then each task transforms, multiplies and
// transforms back blocks of tiles that stay in its cache): where U is small. -1 chooses, 0 never,
// 1 wherever U fits (tests, A/B runs).
static int wg_fused_pref = -1;
#define WG_FUSED_U_MAX ((int64_t)1 << 20)  // floats of U: 4 MB

int lumen_cpu_set_winograd_fused(int pref) {
    if (pref < -1 || pref > 1) pref = -1;
    __atomic_store_n(&wg_fused_pref, pref, __ATOMIC_RELAXED);
    return pref;
}

// The fused mode's U plane stride (output channels padded to whole B panels when packed)
static int64_t wg_fused_us(const lumen_winograd_plan *p) {
    const int64_t nr = p->pack_nr;
    return wg_plane_stride((nr ? (p->O + nr - 1) / nr * nr : p->O) * p->C);
}

static int plan_fused(int64_t batch, int64_t C, int64_t H, int64_t W, int64_t O, int m,
                      lumen_winograd_plan *p) {
    const int64_t a2 = (m + 2) * (m + 2);
    if (a2 * O * C > WG_FUSED_U_MAX) return 0;
    const int64_t TH = (H + m - 1) / m, TW = (W + m - 1) / m;
    // A block's V and M: about twice the L2, in whole micro-panels of GEMM rows. Measured on Zen
    // 5's 1 MiB, 2 threads, with the transforms writing the packed operands (tools/kernel_harness.c
    // winograd): against one L2, F(6x6) 128 -> 128 at 512x512 1573 GFLOP/s against 1441 with
    // AVX-512, 989 against 981 with AVX2; 64 -> 64 at 512x512 1178 against 1161 and 828 against
    // 814; F(4x4) 64 -> 64 at 512x512 1087-1091 against 1032-1035 (AVX-512), the rest within the
    // runs' spread. (Before the packed operands one L2 was best: smaller blocks paid less for the
    // GEMM's packing.)
    const int isa = lumen_isa_current();
    const lumen_blocking bl = lumen_gemm_blocking(isa);
    const int64_t mr = bl.mr;
    const int64_t target = lumen_cpu_l2_bytes() / 2;  // floats
    int64_t tb = target / (a2 * (C + O));
    if (tb > 512) tb = 512;
    tb = tb / mr * mr;
    if (tb < mr) tb = mr;
    memset(p, 0, sizeof *p);
    p->batch = batch; p->C = C; p->H = H; p->W = W; p->O = O; p->m = m;
    p->TH = TH; p->TW = TW;
    p->fused = 1;
    // Units of tb consecutive tiles in the order (image, tile row, tile column), so that every
    // unit but the last fills whole micro-panels (a unit may end in one strip and go on in the
    // next; cutting units at strips' ends left a few rows to the slower row-remainder kernels in
    // every strip), but at least 8 units where there are tiles for them, so that every task of a
    // machine with more cores gets some of a small image.
    const int64_t T = batch * TH * TW;
    const int64_t per8 = T / 8 / mr * mr;  // whole micro-panels for at least 8 units
    if (per8 >= mr && tb > per8) tb = per8;
    p->tb_tiles = tb;
    p->n_tblocks = 1; p->n_oblocks = 1; p->ob = O;
    if (lumen_gemm_prepacked_ok(isa, C)) {
        // the transforms write the GEMM's packed operands: U in B panels (padded to whole
        // panels), V as A rows at the packed stride
        p->pack_nr = bl.nr; p->pack_ks = bl.kc; p->pack_mr = bl.mr; p->isa = isa;
    }
    // U from the scratch's first 64-byte boundary (the kernels load B aligned), then one cache
    // line for the counter of units handed out
    p->scratch_floats = 16 + a2 * wg_fused_us(p) + 16;
    return 1;
}

// Where the fused mode's U and unit counter lie in the scratch
static float *wg_fused_u(float *scratch) { return (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); }

static int64_t *wg_fused_counter(const lumen_winograd_plan *p, float *scratch) {
    const int64_t a2 = (p->m + 2) * (p->m + 2);
    return (int64_t *)(wg_fused_u(scratch) + a2 * wg_fused_us(p));
}

// Scratch budget: 12 M floats (48 MB) unless set (tests make it small to force several blocks).
static int64_t wg_budget_now = (int64_t)12 << 20;
#define WG_BUDGET_FLOATS __atomic_load_n(&wg_budget_now, __ATOMIC_RELAXED)

int64_t lumen_cpu_set_winograd_budget(int64_t floats) {
    if (floats <= 0) floats = (int64_t)12 << 20;
    __atomic_store_n(&wg_budget_now, floats, __ATOMIC_RELAXED);
    return floats;
}

int lumen_winograd_plan_make(int64_t batch, int64_t C, int64_t H, int64_t W, int64_t O,
                             int64_t KH, int64_t KW, int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                             int m, lumen_winograd_plan *p) {
    memset(p, 0, sizeof *p);
#if LUMEN_X86
    const int isa = lumen_isa_current();
    if (isa != LUMEN_ISA_AVX512 && isa != LUMEN_ISA_AVX2) return 0;
    if (KH != 3 || KW != 3 || SH != 1 || SW != 1 || PH != 1 || PW != 1) return 0;
    if (batch <= 0 || C <= 0 || H <= 0 || W <= 0 || O <= 0 || C % 8 || O % 8) return 0;
    if (lumen_bf16_active()) return 0;
    const int mode = winograd_mode();
    if (mode == 0) return 0;
    if (m != 0 && m != 2 && m != 4 && m != 6) return 0;
    const int chosen = m == 0;
    if (m == 0) m = 4;
    const int fused = __atomic_load_n(&wg_fused_pref, __ATOMIC_RELAXED);
    if (mode == 1 && chosen) {
        // Where it is faster than lumen_conv2d's direct kernel or implicit GEMM (measured with
        // tools/kernel_harness.c winograd, 2 threads, Zen 5; docs/performance.md): from 64
        // channels, F(4x4) from 24 pixels a side, F(2x2) from 12. With AVX-512, whose direct
        // kernel runs twice as fast as with AVX2 while the transforms gain less, below 256
        // channels only the fused F(4x4) wins (64 -> 64 at 256x256: 1.2-1.3x, 128 -> 128 at
        // 512x512: 1.7x; the unfused phases were slower); and the UNet's concatenation
        // convolutions (960 -> 320 at 64x64, 1920 -> 640 at 32x32: C = 3 O) run faster as F(2x2):
        // F(4x4)'s input transforms of that many channels split the tiles into small blocks.
        // With AVX2, F(2x2) from 6 pixels a side: the UNet's 8x8 convolutions at 512 (1280 -> 1280
        // and 2560 -> 1280, batch 2) ran 1.16-1.19x the direct kernel's speed, 1280 -> 1280 at 6x6
        // 1.3x, at 4x4 0.6x (2 threads, best of 10, three alternated rounds); with AVX-512 the
        // direct kernel stays 1.3-1.4x faster than F(2x2) at 8x8.
        const int64_t side = H < W ? H : W;
        if (C < 64 || O < 64 || side < (isa == LUMEN_ISA_AVX2 ? 6 : 12)) return 0;
        m = side >= 24 ? 4 : 2;
        if (isa == LUMEN_ISA_AVX512) {
            if ((C < 256 || O < 256) && (m != 4 || fused == 0 || 36 * C * O > WG_FUSED_U_MAX)) return 0;
            if (C >= 3 * O) m = 2;
        }
        // F(6x6) in the fused mode from 128 pixels a side (64 -> 64 at 128x128 to 512x512 and
        // 128 -> 128 at 256x256 and 512x512: 1.04-1.14x F(4x4)'s speed with AVX-512, 1.09-1.18x
        // with AVX2; at 64x64 the runs spread too much to tell them apart). Its error is 4-5x
        // F(4x4)'s (1e-5 of the largest output at these shapes).
        if (m == 4 && side >= 128 && fused != 0 && 64 * C * O <= WG_FUSED_U_MAX) m = 6;
    }
    if (fused != 0 && plan_fused(batch, C, H, W, O, m, p)) return 1;
    if (plan_for(batch, C, H, W, O, m, WG_BUDGET_FLOATS, p)) return 1;
    // chosen: F(2x2) where F(4x4)'s blocks do not fit the budget
    if (chosen && m == 4 && plan_for(batch, C, H, W, O, 2, WG_BUDGET_FLOATS, p)) return 1;
    memset(p, 0, sizeof *p);
    return 0;
#else
    (void)batch; (void)C; (void)H; (void)W; (void)O; (void)KH; (void)KW; (void)SH; (void)SW;
    (void)PH; (void)PW; (void)m;
    return 0;
#endif
}

int64_t lumen_winograd_phases(const lumen_winograd_plan *p) {
    return p->fused ? 2 : 3 * p->n_tblocks * p->n_oblocks;
}

#if LUMEN_X86
// The products' GEMM: M (tiles x out channels, row stride ldc) = V (tiles x C) * U^T (U: out
// channels x C), f32 even when bf16 compute is on; the caller sets a.p, b.p and c.
static lumen_gemm_op wg_gemm_op(int64_t C, int64_t ldc) {
    lumen_gemm_op op;
    memset(&op, 0, sizeof op);
    op.a.kind = LUMEN_SRC_ROWS; op.a.dtype = LUMEN_DT_F32; op.a.ld = C;
    op.b.kind = LUMEN_SRC_ROWS; op.b.dtype = LUMEN_DT_F32; op.b.ld = C;
    op.ldc = ldc;
    op.alpha = 1.0f;
    op.f32_only = 1;
    return op;
}


// Fused mode, phase 1: this task's units of tiles, each transformed, multiplied and transformed
// back while its V and M (thread-local) stay in the cache.
static void wg_fused_units(const lumen_winograd_plan *p, int isa, const float *x, const float *U,
                           int64_t *counter, const float *bias, float *y, const lumen_conv_epilogue *ep) {
    const int m = (int)p->m;
    const int64_t a2 = (m + 2) * (m + 2), C = p->C, O = p->O, TW = p->TW, TH = p->TH;
    const int64_t Tb = p->tb_tiles, T = p->batch * TH * TW;
    const int64_t units = (T + Tb - 1) / Tb;
    // V: rows at stride C, or (prepacked) the GEMM's A rows at stride ks, tiles padded to whole
    // micro-panels
    const int64_t nr = p->pack_nr, mr = nr ? p->pack_mr : 1, ldv = nr ? p->pack_ks : C;
    const int64_t Tbp = (Tb + mr - 1) / mr * mr, us = wg_fused_us(p);
    const int64_t vs = wg_plane_stride(Tbp * ldv), ms = wg_plane_stride(Tb * O);
    float *Vt = lumen_tl_buffer(4, (size_t)(a2 * vs));
    float *Mt = lumen_tl_buffer(5, (size_t)(a2 * ms));
    lumen_gemm_op op = wg_gemm_op(C, O);
    // Units are handed out one at a time from the shared counter (phase 0 zeroed it), so that a
    // task slowed by other work on its core does not hold up the others at the barrier; a unit's
    // results do not depend on which task computes it.
    for (int64_t u; (u = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED)) < units;) {
        // the unit: tiles [t0, t1) in the order (image, tile row, tile column), in the strips
        // [t0 / TW, (t1 - 1) / TW]
        const int64_t t0 = u * Tb, t1 = t0 + Tb < T ? t0 + Tb : T, nt = t1 - t0;
        for (int64_t s = t0 / TW; s * TW < t1; ++s) {
            const int64_t tx0 = t0 > s * TW ? t0 - s * TW : 0, tx1 = t1 < (s + 1) * TW ? t1 - s * TW : TW;
            for (int64_t c0 = 0; c0 < C; c0 += 8)
                wg_input_strip(p, x, s / TH, s % TH, tx0, tx1, c0, Vt, vs, ldv, s * TW + tx0 - t0);
        }
        if (nr) {
            // rows past the unit's tiles up to the micro-panel's end: zeros (a kernel may read them)
            const int64_t ntp = (nt + mr - 1) / mr * mr;
            for (int64_t q = 0; q < a2; ++q)
                for (int64_t r = nt; r < ntp; ++r) memset(Vt + q * vs + r * ldv, 0, sizeof(float) * (size_t)C);
            for (int64_t q = 0; q < a2; ++q) {
                op.c = Mt + q * ms;
                lumen_gemm_prepacked(&op, (int)p->isa, Vt + q * vs, U + q * us, nt, O, C);
            }
        } else {
            for (int64_t q = 0; q < a2; ++q) {
                op.a.p = Vt + q * vs;
                op.b.p = U + q * us;
                op.c = Mt + q * ms;
                lumen_gemm_run(&op, isa, 0, nt, 0, O, C);
            }
        }
        for (int64_t s = t0 / TW; s * TW < t1; ++s) {
            const int64_t tx0 = t0 > s * TW ? t0 - s * TW : 0, tx1 = t1 < (s + 1) * TW ? t1 - s * TW : TW;
            for (int64_t o0 = 0; o0 < O; o0 += 8)
                wg_output_strip(p, Mt, ms, O, s / TH, s % TH, tx0, tx1, o0, o0, s * TW + tx0 - t0, bias, y, ep);
        }
    }
}
#endif

void lumen_winograd_run_phase(const lumen_winograd_plan *p, int64_t phase, const float *x,
                              const void *w, int wdtype, const float *bias, float *y,
                              const lumen_conv_epilogue *ep, float *scratch, int task, int ntasks) {
#if LUMEN_X86
    if (ntasks < 1) { ntasks = 1; task = 0; }
    const int isa = lumen_isa_current();
    const int m = (int)p->m;
    const int64_t a2 = (m + 2) * (m + 2), C = p->C, O = p->O, TW = p->TW, TH = p->TH;
    if (p->fused) {
        // phase 0: all the weights' transforms (U, shared) and the unit counter zeroed; phase 1:
        // the tiles, unit by unit
        float *U = wg_fused_u(scratch);
        int64_t *counter = wg_fused_counter(p, scratch);
        if (phase == 0) {
            const int64_t nr = p->pack_nr;
            if (nr) {
                const int64_t nb = (O + nr - 1) / nr * nr / 8;  // blocks of 8 output channels
                const int64_t q0 = nb * task / ntasks, q1 = nb * (task + 1) / ntasks;
                for (int64_t q = q0; q < q1; ++q) wg_weights_packed(p, isa, w, wdtype, 8 * q, U, wg_fused_us(p), nr);
            } else {
                const int64_t q0 = O * task / ntasks, q1 = O * (task + 1) / ntasks;
                for (int64_t o = q0; o < q1; ++o) wg_weights(p, isa, w, wdtype, o, U, wg_fused_us(p), o);
            }
            if (task == 0) __atomic_store_n(counter, 0, __ATOMIC_RELAXED);
        } else {
            wg_fused_units(p, isa, x, U, counter, bias, y, ep);
        }
        return;
    }
    const int64_t Tb = p->tb_tiles, Ob = p->ob, S = p->batch * TH;
    const int64_t iter = phase / 3, kind = phase % 3;
    const int64_t tblock = iter / p->n_oblocks, oblock = iter % p->n_oblocks;
    const int64_t s0 = tblock * p->strips_per_block;
    const int64_t s1 = s0 + p->strips_per_block < S ? s0 + p->strips_per_block : S;
    const int64_t o0 = oblock * Ob, o1 = o0 + Ob < O ? o0 + Ob : O;
    const int64_t tiles = (s1 - s0) * TW, ocount = o1 - o0;
    const wg_strides st = wg_block_strides(Tb, Ob, C);
    const int64_t vs = st.vs, us = st.us, ms = st.ms;
    float *V = scratch, *U = V + a2 * vs, *M = U + a2 * us;
    if (kind == 0) {
        const int doV = oblock == 0, doU = tblock == 0 || p->n_oblocks > 1;
        if (doV) {
            const int64_t cb = C / 8, units = (s1 - s0) * cb;
            const int64_t u0 = units * task / ntasks, u1 = units * (task + 1) / ntasks;
            for (int64_t u = u0; u < u1; ++u) {
                const int64_t s = s0 + u / cb, c0 = (u % cb) * 8;
                wg_input_strip(p, x, s / TH, s % TH, 0, TW, c0, V, vs, C, (s - s0) * TW);
            }
        }
        if (doU) {
            const int64_t q0 = o0 + ocount * task / ntasks, q1 = o0 + ocount * (task + 1) / ntasks;
            for (int64_t o = q0; o < q1; ++o) wg_weights(p, isa, w, wdtype, o, U, us, o - o0);
        }
    } else if (kind == 1) {
        lumen_gemm_op op = wg_gemm_op(C, Ob);
        int64_t m0, m1, n0, n1;
        lumen_gemm_split(isa, tiles, ocount, task, ntasks, &m0, &m1, &n0, &n1);
        if (m0 >= m1 || n0 >= n1) return;
        for (int64_t k = 0; k < a2; ++k) {
            op.a.p = V + k * vs;
            op.b.p = U + k * us;
            op.c = M + k * ms;
            lumen_gemm_run(&op, isa, m0, m1, n0, n1, C);
        }
    } else {
        const int64_t ob8 = ocount / 8, units = (s1 - s0) * ob8;
        const int64_t u0 = units * task / ntasks, u1 = units * (task + 1) / ntasks;
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t s = s0 + u / ob8, ol = (u % ob8) * 8;
            wg_output_strip(p, M, ms, Ob, s / TH, s % TH, 0, TW, o0 + ol, ol,
                            (s - s0) * TW, bias, y, ep);
        }
    }
#else
    (void)p; (void)phase; (void)x; (void)w; (void)wdtype; (void)bias; (void)y; (void)ep;
    (void)scratch; (void)task; (void)ntasks;
#endif
}

void lumen_conv2d_winograd(const lumen_winograd_plan *p, const float *x, const void *w, int wdtype,
                           const float *bias, float *y, const lumen_conv_epilogue *ep) {
    float *scratch = NULL;
    if (posix_memalign((void **)&scratch, 64, (size_t)p->scratch_floats * sizeof(float)) != 0) abort();
    const int64_t n = lumen_winograd_phases(p);
    for (int64_t ph = 0; ph < n; ++ph) lumen_winograd_run_phase(p, ph, x, w, wdtype, bias, y, ep, scratch, 0, 1);
    free(scratch);
}
