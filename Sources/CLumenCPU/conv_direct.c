// Direct 3x3, stride-1, padding-1 convolution ("same" size), computed from the input rows.
//
// The implicit GEMM of conv.c gathers an im2col panel for every cache block and then multiplies it;
// with few output channels (TAESD's 64, an RGB head's 3) each gathered element feeds only that many
// FMAs, so the gather costs a large share of the work. Here nothing is gathered per k: each task
// walks its output rows in order and keeps, for every input channel, the three input rows the
// current output row needs in a ring of zero-padded rows (one new row per channel per output row,
// so each input row is copied once). An output tile of one row (32 pixels on AVX-512, 16 on AVX2)
// and MR output channels then loads, for every k = (c, kh, kw), its input vector straight from the
// ring (row kh, shifted by kw) and multiplies it by MR broadcast weights; rows above or below the
// image are skipped. The ring also breaks the power-of-two channel stride of the image (1 MiB at
// 64 channels x 512 x 512), whose rows otherwise share cache sets: reading the image in place ran
// at 360-480 GFLOP/s depending on where the pages landed, the ring at a steady rate.
// The weights are converted to f32 once per call into panels of MR channels, [k][MR], k in the
// weights' own order (c, kh, kw): the sum over k runs in the GEMM's order, in one register
// accumulator per output (no K blocks), and bias and the fused ops follow as the GEMM applies them.
#include "gemm_internal.h"

// Narrower images have mostly edge tiles (the automatic choice only; forced mode takes any width).
#define DIRECT_MIN_W 16

#if LUMEN_X86

typedef struct {
    const float *res;  // the residual at the tile's first output of its first channel, or NULL
    int affine, clamp;
    float mul, add, lo, hi;
} direct_post;

// ---------------------------------------------------------------------------------------------
// AVX-512: MR x 32 (two vectors), MR <= 14; MR x 64 (four) for up to 7 output channels
// ---------------------------------------------------------------------------------------------

LUMEN_TARGET_AVX512 static inline __attribute__((always_inline)) __m512
direct_post512(__m512 v, const float *r, __mmask16 m, const direct_post *p) {
    if (r) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r));
    if (p->affine) v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(p->mul)), _mm512_set1_ps(p->add));
    if (p->clamp) {
        const __m512 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(lo, v, _CMP_GE_OQ), v, lo);  // max(v, lo), NaN kept
        v = _mm512_min_ps(hi, v);                                                // min(v, hi)
    }
    return v;
}

// One tile: xr = the ring at this tile's first column (padded column ow0 - 1 of row slot 0,
// channel 0); ro[kh] = offset of row kh's slot; cs = channel stride of the ring (floats).
// st[v]: lanes of vector v that are stored (partial last tile).
LUMEN_TARGET_AVX512 static inline __attribute__((always_inline)) void direct512_body(
    const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro, int khlo,
    int khhi, const __mmask16 *st, float *y, int64_t ldy, const float *bias, const direct_post *p,
    const int MR, const int NV, const int masked) {
    __m512 acc[4][14];
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; ++r)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < C; ++c, xr += cs, A += 9 * MR) {
        for (int kh = khlo; kh < khhi; ++kh) {
            const float *row = xr + ro[kh];
            const float *a = A + kh * 3 * MR;
            // the same row of the next channel (the hardware prefetcher does not follow the ring)
#pragma clang loop unroll(full)
            for (int v = 0; v <= NV; ++v) _mm_prefetch((const char *)(row + cs + 16 * v), _MM_HINT_T0);
#pragma clang loop unroll(full)
            for (int kw = 0; kw < 3; ++kw) {
                __m512 b[4];
#pragma clang loop unroll(full)
                for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(row + kw + 16 * v);
#pragma clang loop unroll(full)
                for (int r = 0; r < MR; ++r) {
                    const __m512 av = _mm512_set1_ps(a[kw * MR + r]);
#pragma clang loop unroll(full)
                    for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(av, b[v], acc[v][r]);
                }
            }
        }
    }
    const int post = p->res != NULL || p->affine || p->clamp;
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; ++r) {
        float *o = y + r * ldy;
        const float *rr = post && p->res ? p->res + r * ldy : NULL;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; ++v) {
            const __mmask16 sv = masked ? st[v] : 0xffff;
            __m512 x = acc[v][r];
            if (bias) x = _mm512_add_ps(x, _mm512_set1_ps(bias[r]));
            if (post) x = direct_post512(x, rr ? rr + 16 * v : NULL, sv, p);
            if (masked)
                _mm512_mask_storeu_ps(o + 16 * v, sv, x);
            else
                _mm512_storeu_ps(o + 16 * v, x);
        }
    }
}

typedef void (*direct_kernel512)(const float *restrict A, const float *xr, int64_t C, int64_t cs,
                                 const int64_t *ro, int khlo, int khhi, const __mmask16 *st,
                                 float *y, int64_t ldy, const float *bias, const direct_post *p);

#define DIRECT512(R, NV, NAME)                                                                     \
    LUMEN_TARGET_AVX512 static void direct512_r##NAME(                                             \
        const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro,        \
        int khlo, int khhi, const __mmask16 *st, float *y, int64_t ldy, const float *bias,         \
        const direct_post *p) {                                                                    \
        direct512_body(A, xr, C, cs, ro, khlo, khhi, st, y, ldy, bias, p, R, NV, 0);               \
    }                                                                                              \
    LUMEN_TARGET_AVX512 static void direct512_m##NAME(                                             \
        const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro,        \
        int khlo, int khhi, const __mmask16 *st, float *y, int64_t ldy, const float *bias,         \
        const direct_post *p) {                                                                    \
        direct512_body(A, xr, C, cs, ro, khlo, khhi, st, y, ldy, bias, p, R, NV, 1);               \
    }
DIRECT512(1, 2, 1) DIRECT512(2, 2, 2) DIRECT512(3, 2, 3) DIRECT512(4, 2, 4) DIRECT512(5, 2, 5)
DIRECT512(6, 2, 6) DIRECT512(7, 2, 7) DIRECT512(8, 2, 8) DIRECT512(9, 2, 9) DIRECT512(10, 2, 10)
DIRECT512(11, 2, 11) DIRECT512(12, 2, 12) DIRECT512(13, 2, 13) DIRECT512(14, 2, 14)
// Wide tiles (64 columns) for a convolution with few output channels (an RGB head): MR x 2
// vectors keep only 2 MR accumulators in flight, too few for the FMA units' latency
DIRECT512(1, 4, w1) DIRECT512(2, 4, w2) DIRECT512(3, 4, w3) DIRECT512(4, 4, w4) DIRECT512(5, 4, w5)
DIRECT512(6, 4, w6) DIRECT512(7, 4, w7)
#undef DIRECT512

static const direct_kernel512 direct512_plain[15] = {
    NULL, direct512_r1, direct512_r2, direct512_r3, direct512_r4, direct512_r5, direct512_r6,
    direct512_r7, direct512_r8, direct512_r9, direct512_r10, direct512_r11, direct512_r12,
    direct512_r13, direct512_r14};
static const direct_kernel512 direct512_masked[15] = {
    NULL, direct512_m1, direct512_m2, direct512_m3, direct512_m4, direct512_m5, direct512_m6,
    direct512_m7, direct512_m8, direct512_m9, direct512_m10, direct512_m11, direct512_m12,
    direct512_m13, direct512_m14};
#define DIRECT512_WIDE_MAX 7
static const direct_kernel512 direct512_wide_plain[8] = {NULL, direct512_rw1, direct512_rw2, direct512_rw3,
                                                         direct512_rw4, direct512_rw5, direct512_rw6, direct512_rw7};
static const direct_kernel512 direct512_wide_masked[8] = {NULL, direct512_mw1, direct512_mw2, direct512_mw3,
                                                          direct512_mw4, direct512_mw5, direct512_mw6, direct512_mw7};

// ---------------------------------------------------------------------------------------------
// AVX2: MR x 16 (two vectors), MR <= 6; MR x 32 (four) for up to 3 output channels
// ---------------------------------------------------------------------------------------------

LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) __m256
direct_post256(__m256 v, const float *r, __m256i m, const direct_post *p) {
    if (r) v = _mm256_add_ps(v, _mm256_maskload_ps(r, m));
    if (p->affine) v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(p->mul)), _mm256_set1_ps(p->add));
    if (p->clamp) {
        const __m256 lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
        v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps(lo, v, _CMP_GE_OQ));  // max(v, lo), NaN kept
        v = _mm256_min_ps(hi, v);                                       // min(v, hi)
    }
    return v;
}

// st: the number of lanes stored (1..8 NV; 8 NV unless masked).
LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) void direct256_body(
    const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro, int khlo,
    int khhi, int st, float *y, int64_t ldy, const float *bias, const direct_post *p, const int MR,
    const int NV, const int masked) {
    __m256 acc[4][6];
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; ++r)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; ++v) acc[v][r] = _mm256_setzero_ps();
    for (int64_t c = 0; c < C; ++c, xr += cs, A += 9 * MR) {
        for (int kh = khlo; kh < khhi; ++kh) {
            const float *row = xr + ro[kh];
            const float *a = A + kh * 3 * MR;
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v += 2) _mm_prefetch((const char *)(row + cs + 8 * v), _MM_HINT_T0);
            _mm_prefetch((const char *)(row + cs + 8 * NV), _MM_HINT_T0);
#pragma clang loop unroll(full)
            for (int kw = 0; kw < 3; ++kw) {
                __m256 b[4];
#pragma clang loop unroll(full)
                for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(row + kw + 8 * v);
#pragma clang loop unroll(full)
                for (int r = 0; r < MR; ++r) {
                    const __m256 av = _mm256_broadcast_ss(a + kw * MR + r);
#pragma clang loop unroll(full)
                    for (int v = 0; v < NV; ++v) acc[v][r] = _mm256_fmadd_ps(av, b[v], acc[v][r]);
                }
            }
        }
    }
    const int post = p->res != NULL || p->affine || p->clamp;
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma clang loop unroll(full)
    for (int r = 0; r < MR; ++r) {
        float *o = y + r * ldy;
        const float *rr = post && p->res ? p->res + r * ldy : NULL;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; ++v) {
            const __m256i sv = _mm256_cmpgt_epi32(_mm256_set1_epi32(masked ? st - 8 * v : 8), idx);
            __m256 x = acc[v][r];
            if (bias) x = _mm256_add_ps(x, _mm256_set1_ps(bias[r]));
            if (post) x = direct_post256(x, rr ? rr + 8 * v : NULL, sv, p);
            if (masked)
                _mm256_maskstore_ps(o + 8 * v, sv, x);
            else
                _mm256_storeu_ps(o + 8 * v, x);
        }
    }
}

typedef void (*direct_kernel256)(const float *restrict A, const float *xr, int64_t C, int64_t cs,
                                 const int64_t *ro, int khlo, int khhi, int st, float *y,
                                 int64_t ldy, const float *bias, const direct_post *p);

#define DIRECT256(R, NV, NAME)                                                                     \
    LUMEN_TARGET_AVX2 static void direct256_r##NAME(                                               \
        const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro,        \
        int khlo, int khhi, int st, float *y, int64_t ldy, const float *bias,                      \
        const direct_post *p) {                                                                    \
        direct256_body(A, xr, C, cs, ro, khlo, khhi, st, y, ldy, bias, p, R, NV, 0);               \
    }                                                                                              \
    LUMEN_TARGET_AVX2 static void direct256_m##NAME(                                               \
        const float *restrict A, const float *xr, int64_t C, int64_t cs, const int64_t *ro,        \
        int khlo, int khhi, int st, float *y, int64_t ldy, const float *bias,                      \
        const direct_post *p) {                                                                    \
        direct256_body(A, xr, C, cs, ro, khlo, khhi, st, y, ldy, bias, p, R, NV, 1);               \
    }
DIRECT256(1, 2, 1) DIRECT256(2, 2, 2) DIRECT256(3, 2, 3) DIRECT256(4, 2, 4) DIRECT256(5, 2, 5)
DIRECT256(6, 2, 6)
// Wide tiles (32 columns) for few output channels, as direct512_rw*
DIRECT256(1, 4, w1) DIRECT256(2, 4, w2) DIRECT256(3, 4, w3)
#undef DIRECT256

static const direct_kernel256 direct256_plain[7] = {NULL, direct256_r1, direct256_r2, direct256_r3,
                                                     direct256_r4, direct256_r5, direct256_r6};
static const direct_kernel256 direct256_masked[7] = {NULL, direct256_m1, direct256_m2, direct256_m3,
                                                      direct256_m4, direct256_m5, direct256_m6};
#define DIRECT256_WIDE_MAX 3
static const direct_kernel256 direct256_wide_plain[4] = {NULL, direct256_rw1, direct256_rw2, direct256_rw3};
static const direct_kernel256 direct256_wide_masked[4] = {NULL, direct256_mw1, direct256_mw2, direct256_mw3};

// A row of tiles of TW columns (32, or 64 with wide kernels), the last one masked.
LUMEN_TARGET_AVX512 static void direct_tiles512(const float *Ap, int pr, int wide, const float *xr, int64_t C,
                                                int64_t cs, const int64_t *ro, int khlo, int khhi,
                                                int64_t W, float *y, int64_t ldy, const float *bias,
                                                direct_post *post, const float *res) {
    const int64_t TW = wide ? 64 : 32;
    const direct_kernel512 plain = wide ? direct512_wide_plain[pr] : direct512_plain[pr];
    const direct_kernel512 masked = wide ? direct512_wide_masked[pr] : direct512_masked[pr];
    for (int64_t ow0 = 0; ow0 < W; ow0 += TW) {
        post->res = res ? res + ow0 : NULL;
        if (ow0 + TW <= W) {
            plain(Ap, xr + ow0, C, cs, ro, khlo, khhi, NULL, y + ow0, ldy, bias, post);
        } else {
            const int64_t n = W - ow0;
            __mmask16 st[4];
            for (int v = 0; v < 4; ++v)
                st[v] = (__mmask16)(n >= 16 * (v + 1) ? 0xffffu : n <= 16 * v ? 0u : (1u << (n - 16 * v)) - 1u);
            masked(Ap, xr + ow0, C, cs, ro, khlo, khhi, st, y + ow0, ldy, bias, post);
        }
    }
}

LUMEN_TARGET_AVX2 static void direct_tiles256(const float *Ap, int pr, int wide, const float *xr, int64_t C,
                                              int64_t cs, const int64_t *ro, int khlo, int khhi,
                                              int64_t W, float *y, int64_t ldy, const float *bias,
                                              direct_post *post, const float *res) {
    const int64_t TW = wide ? 32 : 16;
    const direct_kernel256 plain = wide ? direct256_wide_plain[pr] : direct256_plain[pr];
    const direct_kernel256 masked = wide ? direct256_wide_masked[pr] : direct256_masked[pr];
    for (int64_t ow0 = 0; ow0 < W; ow0 += TW) {
        post->res = res ? res + ow0 : NULL;
        if (ow0 + TW <= W)
            plain(Ap, xr + ow0, C, cs, ro, khlo, khhi, (int)TW, y + ow0, ldy, bias, post);
        else
            masked(Ap, xr + ow0, C, cs, ro, khlo, khhi, (int)(W - ow0), y + ow0, ldy, bias, post);
    }
}

#endif  // LUMEN_X86

static int direct_mode_now = -1;  // -1: not read yet

static int direct_mode(void) { return lumen_conv_mode_get(&direct_mode_now, "LUMEN_CONV_DIRECT"); }

int lumen_cpu_set_conv_direct(int mode) { return lumen_conv_mode_set(&direct_mode_now, mode); }

int lumen_conv_mode_get(int *now, const char *env) {
    int m = __atomic_load_n(now, __ATOMIC_RELAXED);
    if (m < 0) {
        const char *e = getenv(env);
        m = e && e[0] >= '0' && e[0] <= '2' && e[1] == 0 ? e[0] - '0' : 1;
        __atomic_store_n(now, m, __ATOMIC_RELAXED);
    }
    return m;
}

int lumen_conv_mode_set(int *now, int mode) {
    if (mode < 0 || mode > 2) mode = 1;
    __atomic_store_n(now, mode, __ATOMIC_RELAXED);
    return mode;
}

int lumen_conv3x3_direct_takes(int isa, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH,
                               int64_t KW, int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                               int64_t OH, int64_t OW) {
    if (isa != LUMEN_ISA_AVX512 && isa != LUMEN_ISA_AVX2) return 0;
    if (KH != 3 || KW != 3 || SH != 1 || SW != 1 || PH != 1 || PW != 1 || OH != H || OW != W) return 0;
    if (C <= 0 || H <= 0 || W <= 0 || O <= 0) return 0;
    if (O >= LUMEN_CONV_BF16_MIN_O && lumen_bf16_active()) return 0;
    const int mode = direct_mode();
    if (mode != 1) return mode == 2;
    // Measured against the implicit GEMM (tools/kernel_harness.c conv, 2 threads, Zen 5): with
    // fewer than 8 input channels the per-row overhead dominates.
    if (C < 8 || W < DIRECT_MIN_W) return 0;
    // Every task packs its share of the weights as f32 once per call: up to 640 -> 640 (3.7 M
    // weights) this is as fast or faster on both levels (64 -> 64 at 512x512: 1.5x with AVX-512,
    // 1.3x with AVX2; an RGB head 64 -> 3: 4x); at the UNet's 1280 -> 1280 at 16x16 (14.7 M) the
    // GEMM's blocking is faster.
    return O * C * 9 <= ((int64_t)4 << 20);
}

int lumen_conv2d_uses_direct(int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                             int64_t SH, int64_t SW, int64_t PH, int64_t PW) {
    if (SH <= 0 || SW <= 0) return 0;
    const int64_t OH = (H + 2 * PH - KH) / SH + 1, OW = (W + 2 * PW - KW) / SW + 1;
    const int isa = lumen_isa_current();
    return lumen_conv3x3_direct_takes(isa, C, H, W, O, KH, KW, SH, SW, PH, PW, OH, OW);
}

void lumen_conv3x3_direct(int isa, const float *x, int64_t batch, int64_t C, int64_t H, int64_t W,
                          const void *w, int wdtype, const float *bias, float *y, int64_t O,
                          const lumen_conv_epilogue *ep, int task, int ntasks) {
#if LUMEN_X86
    if (ntasks < 1) { ntasks = 1; task = 0; }
    const int64_t K = C * 9, HW = H * W, rows = batch * H;
    const int MR = isa == LUMEN_ISA_AVX512 ? 14 : 6;
    // Few output channels (one partial panel: an RGB head): tiles twice as wide
    const int wide = O <= (isa == LUMEN_ISA_AVX512 ? DIRECT512_WIDE_MAX : DIRECT256_WIDE_MAX);
    const int64_t TW = (isa == LUMEN_ISA_AVX512 ? 32 : 16) * (wide ? 2 : 1);
    const int64_t panels = (O + MR - 1) / MR;
    // Tasks split the output rows; where every task packing all the weights would cost more than
    // its share of the work is worth, they split the channel panels too, each packing its own.
    int64_t pg = 1;
    if (ntasks > 1 && O * K * (int64_t)ntasks > ((int64_t)1 << 21)) {
        for (int64_t d = ntasks; d > 1; --d)
            if (ntasks % d == 0 && panels >= 2 * d) { pg = d; break; }
    }
    const int64_t rg = ntasks / pg, g = task % pg, rt = task / pg;
    const int64_t p0 = panels * g / pg, p1 = panels * (g + 1) / pg;
    const int64_t r0 = rows * rt / rg, r1 = rows * (rt + 1) / rg;
    if (r0 >= r1 || p0 >= p1) return;
    const int64_t m0 = p0 * MR, m1 = p1 * MR < O ? p1 * MR : O;

    // Ring of padded input rows: [c][slot 0..2][pitch], column -1 at index 0, columns past W zero
    // up to the last tile's reach. The pitch keeps the channel stride off powers of two.
    int64_t pitch = (W + TW - 1) / TW * TW + 2;
    pitch = (pitch + 3) / 4 * 4 + 4;
    const int64_t cs = 3 * pitch;
    float *A = lumen_tl_buffer(2, (size_t)((m1 - m0) * K + K + C * cs + 16));
    float *tmp = A + (m1 - m0) * K;
    float *ring = tmp + K;

    // This task's weights, [panel][k][MR] (a last panel of rem < MR channels is packed [k][rem]).
    const size_t es = lumen_dtype_size(wdtype);
    for (int64_t m = m0; m < m1; ++m) {
        const int64_t pnl = m / MR, mi = m % MR;
        const int64_t pr = pnl == panels - 1 ? O - pnl * MR : MR;  // channels in this panel
        lumen_cvt_row(isa, (const char *)w + (size_t)(m * K) * es, wdtype, K, tmp);
        float *dst = A + (pnl * MR - m0) * K + mi;
        for (int64_t k = 0; k < K; ++k) dst[k * pr] = tmp[k];
    }
    memset(ring, 0, (size_t)(C * cs) * sizeof(float));

    direct_post post;
    memset(&post, 0, sizeof post);
    if (ep) {
        post.affine = ep->affine != 0;
        post.clamp = ep->clamp != 0;
        post.mul = ep->mul; post.add = ep->add; post.lo = ep->lo; post.hi = ep->hi;
    }
    int64_t loaded_b = -1, loaded_hi = -1;  // the ring holds rows [.., loaded_hi] of image loaded_b
    for (int64_t row = r0; row < r1; ++row) {
        const int64_t b = row / H, oh = row - b * H;
        const float *xb = x + b * C * HW;
        // make rows oh-1 .. oh+1 (those inside the image) resident: slot = input row % 3
        int64_t from = oh - 1 < 0 ? 0 : oh - 1;
        if (loaded_b == b && loaded_hi >= from) from = loaded_hi + 1;
        const int64_t to = oh + 1 < H ? oh + 1 : H - 1;
        for (int64_t ih = from; ih <= to; ++ih) {
            float *slot = ring + (ih % 3) * pitch + 1;
            for (int64_t c = 0; c < C; ++c) memcpy(slot + c * cs, xb + c * HW + ih * W, (size_t)W * 4);
        }
        loaded_b = b;
        loaded_hi = to;
        const int khlo = oh == 0 ? 1 : 0, khhi = oh == H - 1 ? 2 : 3;
        int64_t ro[3];
        for (int kh = 0; kh < 3; ++kh) {
            const int64_t ih = oh + kh - 1;
            ro[kh] = ih >= 0 && ih < H ? (ih % 3) * pitch : 0;
        }
        float *yb = y + b * O * HW + oh * W;
        const float *rb = ep && ep->residual ? ep->residual + b * O * HW + oh * W : NULL;
        for (int64_t pnl = p0; pnl < p1; ++pnl) {
            const int64_t mp = pnl * MR;
            const int pr = (int)(pnl == panels - 1 ? O - mp : MR);
            const float *Ap = A + (mp - m0) * K;
            const float *bp = bias ? bias + mp : NULL;
            const float *rp = rb ? rb + mp * HW : NULL;
            if (isa == LUMEN_ISA_AVX512)
                direct_tiles512(Ap, pr, wide, ring, C, cs, ro, khlo, khhi, W, yb + mp * HW, HW, bp, &post, rp);
            else
                direct_tiles256(Ap, pr, wide, ring, C, cs, ro, khlo, khhi, W, yb + mp * HW, HW, bp, &post, rp);
        }
    }
#else
    (void)isa; (void)x; (void)batch; (void)C; (void)H; (void)W; (void)w; (void)wdtype; (void)bias;
    (void)y; (void)O; (void)ep; (void)task; (void)ntasks;
#endif
}
