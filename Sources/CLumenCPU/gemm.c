// Blocked, packed-panel GEMM (BLIS style) for lumen_linear and lumen_matmul_f32.
//
// Loop nest (per task): jc over N in NC blocks -> pc over K in KC blocks (pack B block, weights
// converted to f32 here) -> ic over M in MC blocks (pack A block) -> ir over MR panels (the A
// micro-panel, MR x KC, stays in L1) -> jr over NR panels (B micro-panels stream from L2) ->
// register-tiled microkernel (broadcast A, vector B, MR x NR accumulators).
//
// Packed layouts: B panels are k-major (panel[k*NR + j]); A panels are row-major with a fixed
// row stride KS = KC (panel[i*KS + k]) so that packing A is a plain converting copy (for conv the
// f16 weights, for linear the activations) and the kernel reaches row i at a constant offset.
// lumen_linear: A = x, B = w (transposing pack, converted from f16/bf16 on the fly).
// lumen_conv2d: A = w, B = the im2col panel gathered from the input (conv.c).
// M <= 4 linear layers skip packing: dot products straight from the weight rows.
//
// Microkernels: AVX-512 14x32 (28 zmm accumulators), AVX2 6x16 (12 ymm), portable 6x8 / 6x16.
#include "gemm_internal.h"

#include <stdlib.h>

// ---------------------------------------------------------------------------------------------
// Thread-local, 64-byte aligned packing buffers (grown, never shrunk; one set per thread).
// ---------------------------------------------------------------------------------------------

static _Thread_local float *tl_buf[6];
static _Thread_local size_t tl_cap[6];

float *lumen_tl_buffer(int slot, size_t nfloats) {
    nfloats += 128;  // slack for over-wide stores at panel ends
    if (tl_cap[slot] < nfloats) {
        free(tl_buf[slot]);
        size_t cap = nfloats + nfloats / 4;
        void *p = NULL;
        if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) abort();
        tl_buf[slot] = (float *)p;
        tl_cap[slot] = cap;
    }
    return tl_buf[slot];
}

// ---------------------------------------------------------------------------------------------
// Blocking
// ---------------------------------------------------------------------------------------------

#if defined(__aarch64__)
#define GEN_MR 6
#define GEN_NR 16
#else
#define GEN_MR 6
#define GEN_NR 8
#endif
// KC (the K block) is also the fixed row stride of packed A panels (row-major, MR rows of KS
// floats), so the microkernels address every A row with a constant displacement.
#define GEN_KS 256
#define AVX2_KS_L1 256
#define AVX2_KS_L2 320
#define AVX512_KS 384
// AVX-512 blocks (Zen 5: 48 KiB L1d, 1 MiB L2 per core): the A micro-panel 14 x 384 f32 = 21 KiB
// stays in L1; the packed B block 384 x 512 f32 = 768 KiB stays in L2; the A block 168 x 384 =
// 252 KiB is reused from L2 across the NC block. (KC 256..512, MC 84..336 and NC 256..1024 were
// all within noise of each other on the SD shapes.)
#define AVX512_MC (14 * 12)
#define AVX512_NC 512
// AVX2 machines have L2s from 256 KiB (Haswell..Skylake client) through 512 KiB (Zen 2/3) to 1 MiB
// and more (Zen 4/5, recent Intel). Where the L2 holds the B block (KC x NC = 320 x 512 f32 =
// 640 KiB at most), the A block and the C tiles written through it, the AVX-512 order is kept: an A
// micro-panel in L1, the B block streamed from L2. There a K of 257..320 runs as one K block of
// KC 320 (SD's K = 320 GEMMs: one pass over C instead of two, +8-10% on a Zen 5 with 1 MiB L2;
// larger K keeps KC 256, which measured 3-5% better at K = 1280 than 320). Smaller L2s use BLIS's Haswell
// order and blocks: the B micro-panel (256 x 16 f32 = 16 KiB, half a 32 KiB L1) stays in L1 while
// the A block (144 KiB) is read from L2 and the B block (256 x 1024 f32 = 1 MiB) from L3.
#define AVX2_MC (6 * 24)
#define AVX2_NC_L2 512
#define AVX2_NC_L3 1024
#define AVX2_L2_FOR_B_BLOCK (896 * 1024)

lumen_blocking lumen_gemm_blocking(int isa) {
    lumen_blocking b;
    b.b_panel_in_l1 = 0;
    switch (isa) {
#if LUMEN_X86
    case LUMEN_ISA_AVX512:
        b.mr = 14; b.nr = 32; b.kc = AVX512_KS; b.mc = AVX512_MC; b.nc = AVX512_NC;
        break;
    case LUMEN_ISA_AVX2:
        b.mr = 6; b.nr = 16; b.mc = AVX2_MC;
        b.b_panel_in_l1 = lumen_cpu_l2_bytes() < AVX2_L2_FOR_B_BLOCK;
        b.nc = b.b_panel_in_l1 ? AVX2_NC_L3 : AVX2_NC_L2;
        b.kc = AVX2_KS_L1;  // AVX2_KS_L2 for one K block of 257..320 (lumen_gemm_run)
        break;
#endif
    default:
        b.mr = GEN_MR; b.nr = GEN_NR; b.kc = GEN_KS; b.mc = GEN_MR * 16; b.nc = 512;
        break;
    }
    return b;
}

// ---------------------------------------------------------------------------------------------
// Microkernels: C[0..MR, 0..NR] = epilogue(sum_k A[i*KS + k] * B[k*NR + j])
// ---------------------------------------------------------------------------------------------

typedef struct {
    float alpha;
    int load_c;            // add the existing C
    const float *bias_m;   // bias_m[i] per row, or NULL
    const float *bias_n;   // bias_n[j] per column, or NULL
    // The fused ops of the last K block (lumen_gemm_op's residual/post_*), or all zero.
    int post;              // any of the three below
    const float *res;      // the residual at this tile's first output (row stride ldc), or NULL
    int affine, clamp;
    float mul, add, lo, hi;
} lumen_epi;

// The fused ops for the tile whose first output is C (only in the last K block).
static inline void lumen_epi_post(lumen_epi *e, const lumen_gemm_op *op, int last, const float *C) {
    if (!last) return;
    e->res = op->residual ? op->residual + (C - op->c) : NULL;
    e->affine = op->post_affine;
    e->clamp = op->post_clamp;
    e->mul = op->post_mul;
    e->add = op->post_add;
    e->lo = op->post_lo;
    e->hi = op->post_hi;
    e->post = e->res != NULL || e->affine || e->clamp;
}

// The same ops on one value (edges and the portable kernel). Separate statements: no FMA
// contraction, as the unfused ops compute them.
static inline float lumen_post1(const lumen_epi *e, float v, float r) {
    if (e->res) v = v + r;
    if (e->affine) {
        float t = v * e->mul;
        v = t + e->add;
    }
    if (e->clamp) {
        v = e->lo >= v ? e->lo : v;  // Swift.max(v, lo): NaN stays NaN
        v = e->hi < v ? e->hi : v;   // Swift.min(v, hi)
    }
    return v;
}

typedef void (*lumen_ukernel)(int64_t kc, const float *A, const float *B, float *C, int64_t ldc,
                              const lumen_epi *e);

static void uk_generic(int64_t kc, const float *restrict A, const float *restrict B,
                       float *restrict C, int64_t ldc, const lumen_epi *e) {
    float acc[GEN_MR][GEN_NR];
    for (int i = 0; i < GEN_MR; ++i)
        for (int j = 0; j < GEN_NR; ++j) acc[i][j] = 0.0f;
    for (int64_t k = 0; k < kc; ++k) {
        for (int i = 0; i < GEN_MR; ++i) {
            float a = A[i * GEN_KS];
            for (int j = 0; j < GEN_NR; ++j) acc[i][j] += a * B[j];
        }
        A += 1;
        B += GEN_NR;
    }
    for (int i = 0; i < GEN_MR; ++i) {
        float *c = C + i * ldc;
        float bm = e->bias_m ? e->bias_m[i] : 0.0f;
        for (int j = 0; j < GEN_NR; ++j) {
            float v = acc[i][j] * e->alpha + bm;
            if (e->bias_n) v += e->bias_n[j];
            if (e->load_c) v += c[j];
            if (e->post) v = lumen_post1(e, v, e->res ? e->res[i * ldc + j] : 0.0f);
            c[j] = v;
        }
    }
}

#if LUMEN_X86

// The fused ops on two vectors of one row (r: the residual row, or NULL).
LUMEN_TARGET_AVX512 static inline __attribute__((always_inline)) void lumen_post_avx512(
    __m512 *x0, __m512 *x1, const float *r, const lumen_epi *e) {
    if (r) {
        *x0 = _mm512_add_ps(*x0, _mm512_loadu_ps(r));
        *x1 = _mm512_add_ps(*x1, _mm512_loadu_ps(r + 16));
    }
    if (e->affine) {
        const __m512 m = _mm512_set1_ps(e->mul), a = _mm512_set1_ps(e->add);
        *x0 = _mm512_add_ps(_mm512_mul_ps(*x0, m), a);
        *x1 = _mm512_add_ps(_mm512_mul_ps(*x1, m), a);
    }
    if (e->clamp) {
        const __m512 lo = _mm512_set1_ps(e->lo), hi = _mm512_set1_ps(e->hi);
        // lo >= v ? lo : v (NaN stays NaN, -0 becomes +0 at lo = 0), then hi < v ? hi : v
        *x0 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(lo, *x0, _CMP_GE_OQ), *x0, lo);
        *x1 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(lo, *x1, _CMP_GE_OQ), *x1, lo);
        *x0 = _mm512_min_ps(hi, *x0);
        *x1 = _mm512_min_ps(hi, *x1);
    }
}

// AVX-512 14x32: 28 accumulators + 2 B vectors + 1 broadcast = 31 zmm.
LUMEN_TARGET_AVX512 static void uk_avx512(int64_t kc, const float *restrict A,
                                          const float *restrict B, float *restrict C, int64_t ldc,
                                          const lumen_epi *e) {
#define Z _mm512_setzero_ps()
    __m512 c00 = Z, c01 = Z, c10 = Z, c11 = Z, c20 = Z, c21 = Z, c30 = Z, c31 = Z, c40 = Z, c41 = Z;
    __m512 c50 = Z, c51 = Z, c60 = Z, c61 = Z, c70 = Z, c71 = Z, c80 = Z, c81 = Z, c90 = Z, c91 = Z;
    __m512 ca0 = Z, ca1 = Z, cb0 = Z, cb1 = Z, cc0 = Z, cc1 = Z, cd0 = Z, cd1 = Z;
#undef Z
#define ROW(r, i, o)                                                                              \
    {                                                                                             \
        __m512 a_ = _mm512_set1_ps(A[(i) * AVX512_KS + (o)]);                                     \
        c##r##0 = _mm512_fmadd_ps(a_, b0, c##r##0);                                               \
        c##r##1 = _mm512_fmadd_ps(a_, b1, c##r##1);                                               \
    }
#define KSTEP(o)                                                                                  \
    {                                                                                             \
        __m512 b0 = _mm512_load_ps(B + (o) * 32), b1 = _mm512_load_ps(B + (o) * 32 + 16);        \
        ROW(0, 0, o) ROW(1, 1, o) ROW(2, 2, o) ROW(3, 3, o) ROW(4, 4, o) ROW(5, 5, o)              \
        ROW(6, 6, o) ROW(7, 7, o) ROW(8, 8, o) ROW(9, 9, o) ROW(a, 10, o) ROW(b, 11, o)           \
        ROW(c, 12, o) ROW(d, 13, o)                                                               \
    }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        // B micro-panels stream from L2: fetch the 8 lines needed 8 k-steps ahead
        _mm_prefetch((const char *)(B + 32 * 8), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 32), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 48), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 80), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 96), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 112), _MM_HINT_T0);
        KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
        A += 4;
        B += 128;
    }
    for (; k < kc; ++k) {
        KSTEP(0)
        A += 1;
        B += 32;
    }
#undef KSTEP
#undef ROW
    const __m512 va = _mm512_set1_ps(e->alpha);
    const int scale = e->alpha != 1.0f, lc = e->load_c, post = e->post;
    const float *bm = e->bias_m;
    __m512 bn0 = _mm512_setzero_ps(), bn1 = _mm512_setzero_ps();
    if (e->bias_n) {
        bn0 = _mm512_loadu_ps(e->bias_n);
        bn1 = _mm512_loadu_ps(e->bias_n + 16);
    }
#define EPI(r, i)                                                                                 \
    {                                                                                             \
        __m512 x0 = c##r##0, x1 = c##r##1;                                                        \
        float *cp = C + (i) * ldc;                                                                \
        if (scale) { x0 = _mm512_mul_ps(x0, va); x1 = _mm512_mul_ps(x1, va); }                    \
        x0 = _mm512_add_ps(x0, bn0); x1 = _mm512_add_ps(x1, bn1);                                 \
        if (bm) {                                                                                 \
            __m512 t_ = _mm512_set1_ps(bm[(i)]);                                                  \
            x0 = _mm512_add_ps(x0, t_); x1 = _mm512_add_ps(x1, t_);                               \
        }                                                                                         \
        if (lc) {                                                                                 \
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(cp));                                          \
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(cp + 16));                                     \
        }                                                                                         \
        if (post) lumen_post_avx512(&x0, &x1, e->res ? e->res + (i) * ldc : NULL, e);             \
        _mm512_storeu_ps(cp, x0);                                                                 \
        _mm512_storeu_ps(cp + 16, x1);                                                            \
    }
    EPI(0, 0) EPI(1, 1) EPI(2, 2) EPI(3, 3) EPI(4, 4) EPI(5, 5) EPI(6, 6)
    EPI(7, 7) EPI(8, 8) EPI(9, 9) EPI(a, 10) EPI(b, 11) EPI(c, 12) EPI(d, 13)
#undef EPI
}

// AVX-512 R x 32 (R < 14): the rows left below the last whole 14-row panel (64 = 4 x 14 + 8, as
// TAESD's 64-channel convolutions have; 3 for an RGB output), computed and written directly
// instead of as a 14-row tile of zero rows through a scratch tile. Same order of operations per
// output as uk_avx512, so results do not depend on which kernel a row went through.
LUMEN_TARGET_AVX512 static inline __attribute__((always_inline)) void uk_avx512_rows_body(
    int64_t kc, const float *restrict A, const float *restrict B, float *restrict C, int64_t ldc,
    const lumen_epi *e, const int R) {
    __m512 c0[13], c1[13];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; ++r) {
        c0[r] = _mm512_setzero_ps();
        c1[r] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(B + 32 * 8), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 32), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 48), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 80), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 96), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 112), _MM_HINT_T0);
#pragma clang loop unroll(full)
        for (int o = 0; o < 4; ++o) {
            const __m512 b0 = _mm512_load_ps(B + o * 32), b1 = _mm512_load_ps(B + o * 32 + 16);
#pragma clang loop unroll(full)
            for (int r = 0; r < R; ++r) {
                const __m512 a = _mm512_set1_ps(A[r * AVX512_KS + o]);
                c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
                c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
            }
        }
        A += 4;
        B += 128;
    }
    for (; k < kc; ++k) {
        const __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; ++r) {
            const __m512 a = _mm512_set1_ps(A[r * AVX512_KS]);
            c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
        }
        A += 1;
        B += 32;
    }
    const __m512 va = _mm512_set1_ps(e->alpha);
    const int scale = e->alpha != 1.0f, lc = e->load_c, post = e->post;
    const float *bm = e->bias_m;
    __m512 bn0 = _mm512_setzero_ps(), bn1 = _mm512_setzero_ps();
    if (e->bias_n) {
        bn0 = _mm512_loadu_ps(e->bias_n);
        bn1 = _mm512_loadu_ps(e->bias_n + 16);
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < R; ++r) {
        __m512 x0 = c0[r], x1 = c1[r];
        float *cp = C + r * ldc;
        if (scale) { x0 = _mm512_mul_ps(x0, va); x1 = _mm512_mul_ps(x1, va); }
        x0 = _mm512_add_ps(x0, bn0); x1 = _mm512_add_ps(x1, bn1);
        if (bm) {
            const __m512 t = _mm512_set1_ps(bm[r]);
            x0 = _mm512_add_ps(x0, t); x1 = _mm512_add_ps(x1, t);
        }
        if (lc) {
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(cp));
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(cp + 16));
        }
        if (post) lumen_post_avx512(&x0, &x1, e->res ? e->res + r * ldc : NULL, e);
        _mm512_storeu_ps(cp, x0);
        _mm512_storeu_ps(cp + 16, x1);
    }
}

#define LUMEN_UK_ROWS_512(R)                                                                      \
    LUMEN_TARGET_AVX512 static void uk_avx512_r##R(int64_t kc, const float *restrict A,            \
                                                   const float *restrict B, float *restrict C,     \
                                                   int64_t ldc, const lumen_epi *e) {              \
        uk_avx512_rows_body(kc, A, B, C, ldc, e, R);                                              \
    }
LUMEN_UK_ROWS_512(1) LUMEN_UK_ROWS_512(2) LUMEN_UK_ROWS_512(3) LUMEN_UK_ROWS_512(4)
LUMEN_UK_ROWS_512(5) LUMEN_UK_ROWS_512(6) LUMEN_UK_ROWS_512(7) LUMEN_UK_ROWS_512(8)
LUMEN_UK_ROWS_512(9) LUMEN_UK_ROWS_512(10) LUMEN_UK_ROWS_512(11) LUMEN_UK_ROWS_512(12)
LUMEN_UK_ROWS_512(13)
#undef LUMEN_UK_ROWS_512

LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) void lumen_post_avx2(
    __m256 *x0, __m256 *x1, const float *r, const lumen_epi *e) {
    if (r) {
        *x0 = _mm256_add_ps(*x0, _mm256_loadu_ps(r));
        *x1 = _mm256_add_ps(*x1, _mm256_loadu_ps(r + 8));
    }
    if (e->affine) {
        const __m256 m = _mm256_set1_ps(e->mul), a = _mm256_set1_ps(e->add);
        *x0 = _mm256_add_ps(_mm256_mul_ps(*x0, m), a);
        *x1 = _mm256_add_ps(_mm256_mul_ps(*x1, m), a);
    }
    if (e->clamp) {
        const __m256 lo = _mm256_set1_ps(e->lo), hi = _mm256_set1_ps(e->hi);
        *x0 = _mm256_blendv_ps(*x0, lo, _mm256_cmp_ps(lo, *x0, _CMP_GE_OQ));
        *x1 = _mm256_blendv_ps(*x1, lo, _mm256_cmp_ps(lo, *x1, _CMP_GE_OQ));
        *x0 = _mm256_min_ps(hi, *x0);
        *x1 = _mm256_min_ps(hi, *x1);
    }
}

// AVX2 6x16: 12 accumulators + 2 B vectors + 1 broadcast = 15 ymm. KS (the A row stride, = the
// blocking's KC) is a constant of each instantiation below.
LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) void uk_avx2_body(
    int64_t kc, const float *restrict A, const float *restrict B, float *restrict C, int64_t ldc,
    const lumen_epi *e, const int64_t KS) {
#define Z _mm256_setzero_ps()
    __m256 c00 = Z, c01 = Z, c10 = Z, c11 = Z, c20 = Z, c21 = Z, c30 = Z, c31 = Z, c40 = Z, c41 = Z;
    __m256 c50 = Z, c51 = Z;
#undef Z
#define ROW(r, i, o)                                                                              \
    {                                                                                             \
        __m256 a_ = _mm256_broadcast_ss(A + (i) * KS + (o));                                      \
        c##r##0 = _mm256_fmadd_ps(a_, b0, c##r##0);                                               \
        c##r##1 = _mm256_fmadd_ps(a_, b1, c##r##1);                                               \
    }
#define KSTEP(o)                                                                                  \
    {                                                                                             \
        __m256 b0 = _mm256_load_ps(B + (o) * 16), b1 = _mm256_load_ps(B + (o) * 16 + 8);         \
        ROW(0, 0, o) ROW(1, 1, o) ROW(2, 2, o) ROW(3, 3, o) ROW(4, 4, o) ROW(5, 5, o)              \
    }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(B + 16 * 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 16 * 18), _MM_HINT_T0);
        KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
        A += 4;
        B += 64;
    }
    for (; k < kc; ++k) {
        KSTEP(0)
        A += 1;
        B += 16;
    }
#undef KSTEP
#undef ROW
    const __m256 va = _mm256_set1_ps(e->alpha);
    const int scale = e->alpha != 1.0f, lc = e->load_c, post = e->post;
    const float *bm = e->bias_m;
    __m256 bn0 = _mm256_setzero_ps(), bn1 = _mm256_setzero_ps();
    if (e->bias_n) {
        bn0 = _mm256_loadu_ps(e->bias_n);
        bn1 = _mm256_loadu_ps(e->bias_n + 8);
    }
#define EPI(r, i)                                                                                 \
    {                                                                                             \
        __m256 x0 = c##r##0, x1 = c##r##1;                                                        \
        float *cp = C + (i) * ldc;                                                                \
        if (scale) { x0 = _mm256_mul_ps(x0, va); x1 = _mm256_mul_ps(x1, va); }                    \
        x0 = _mm256_add_ps(x0, bn0); x1 = _mm256_add_ps(x1, bn1);                                 \
        if (bm) {                                                                                 \
            __m256 t_ = _mm256_set1_ps(bm[(i)]);                                                  \
            x0 = _mm256_add_ps(x0, t_); x1 = _mm256_add_ps(x1, t_);                               \
        }                                                                                         \
        if (lc) {                                                                                 \
            x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cp));                                          \
            x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cp + 8));                                      \
        }                                                                                         \
        if (post) lumen_post_avx2(&x0, &x1, e->res ? e->res + (i) * ldc : NULL, e);               \
        _mm256_storeu_ps(cp, x0);                                                                 \
        _mm256_storeu_ps(cp + 8, x1);                                                             \
    }
    EPI(0, 0) EPI(1, 1) EPI(2, 2) EPI(3, 3) EPI(4, 4) EPI(5, 5)
#undef EPI
}

LUMEN_TARGET_AVX2 static void uk_avx2_ks256(int64_t kc, const float *restrict A, const float *restrict B,
                                            float *restrict C, int64_t ldc, const lumen_epi *e) {
    uk_avx2_body(kc, A, B, C, ldc, e, AVX2_KS_L1);
}

LUMEN_TARGET_AVX2 static void uk_avx2_ks320(int64_t kc, const float *restrict A, const float *restrict B,
                                            float *restrict C, int64_t ldc, const lumen_epi *e) {
    uk_avx2_body(kc, A, B, C, ldc, e, AVX2_KS_L2);
}
// AVX2 R x 16 (R < 6): the rows below the last whole 6-row panel, written directly (as
// uk_avx512_rows_body; 64 = 10 x 6 + 4).
LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) void uk_avx2_rows_body(
    int64_t kc, const float *restrict A, const float *restrict B, float *restrict C, int64_t ldc,
    const lumen_epi *e, const int64_t KS, const int R) {
    __m256 c0[5], c1[5];
#pragma clang loop unroll(full)
    for (int r = 0; r < R; ++r) {
        c0[r] = _mm256_setzero_ps();
        c1[r] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(B + 16 * 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 16 * 18), _MM_HINT_T0);
#pragma clang loop unroll(full)
        for (int o = 0; o < 4; ++o) {
            const __m256 b0 = _mm256_load_ps(B + o * 16), b1 = _mm256_load_ps(B + o * 16 + 8);
#pragma clang loop unroll(full)
            for (int r = 0; r < R; ++r) {
                const __m256 a = _mm256_broadcast_ss(A + r * KS + o);
                c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
                c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
            }
        }
        A += 4;
        B += 64;
    }
    for (; k < kc; ++k) {
        const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
#pragma clang loop unroll(full)
        for (int r = 0; r < R; ++r) {
            const __m256 a = _mm256_broadcast_ss(A + r * KS);
            c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
        }
        A += 1;
        B += 16;
    }
    const __m256 va = _mm256_set1_ps(e->alpha);
    const int scale = e->alpha != 1.0f, lc = e->load_c, post = e->post;
    const float *bm = e->bias_m;
    __m256 bn0 = _mm256_setzero_ps(), bn1 = _mm256_setzero_ps();
    if (e->bias_n) {
        bn0 = _mm256_loadu_ps(e->bias_n);
        bn1 = _mm256_loadu_ps(e->bias_n + 8);
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < R; ++r) {
        __m256 x0 = c0[r], x1 = c1[r];
        float *cp = C + r * ldc;
        if (scale) { x0 = _mm256_mul_ps(x0, va); x1 = _mm256_mul_ps(x1, va); }
        x0 = _mm256_add_ps(x0, bn0); x1 = _mm256_add_ps(x1, bn1);
        if (bm) {
            const __m256 t = _mm256_set1_ps(bm[r]);
            x0 = _mm256_add_ps(x0, t); x1 = _mm256_add_ps(x1, t);
        }
        if (lc) {
            x0 = _mm256_add_ps(x0, _mm256_loadu_ps(cp));
            x1 = _mm256_add_ps(x1, _mm256_loadu_ps(cp + 8));
        }
        if (post) lumen_post_avx2(&x0, &x1, e->res ? e->res + r * ldc : NULL, e);
        _mm256_storeu_ps(cp, x0);
        _mm256_storeu_ps(cp + 8, x1);
    }
}

#define LUMEN_UK_ROWS_256(R)                                                                      \
    LUMEN_TARGET_AVX2 static void uk_avx2_ks256_r##R(int64_t kc, const float *restrict A,          \
                                                     const float *restrict B, float *restrict C,   \
                                                     int64_t ldc, const lumen_epi *e) {            \
        uk_avx2_rows_body(kc, A, B, C, ldc, e, AVX2_KS_L1, R);                                    \
    }                                                                                             \
    LUMEN_TARGET_AVX2 static void uk_avx2_ks320_r##R(int64_t kc, const float *restrict A,          \
                                                     const float *restrict B, float *restrict C,   \
                                                     int64_t ldc, const lumen_epi *e) {            \
        uk_avx2_rows_body(kc, A, B, C, ldc, e, AVX2_KS_L2, R);                                    \
    }
LUMEN_UK_ROWS_256(1) LUMEN_UK_ROWS_256(2) LUMEN_UK_ROWS_256(3) LUMEN_UK_ROWS_256(4) LUMEN_UK_ROWS_256(5)
#undef LUMEN_UK_ROWS_256
#endif  // LUMEN_X86

// The kernel for a whole-width tile of mr < MR rows (NULL: the full kernel through a scratch tile).
static lumen_ukernel lumen_ukernel_rows_for(int isa, const lumen_blocking *bl, int mr) {
#if LUMEN_X86
    static const lumen_ukernel r512[14] = {NULL, uk_avx512_r1, uk_avx512_r2, uk_avx512_r3, uk_avx512_r4,
                                           uk_avx512_r5, uk_avx512_r6, uk_avx512_r7, uk_avx512_r8,
                                           uk_avx512_r9, uk_avx512_r10, uk_avx512_r11, uk_avx512_r12,
                                           uk_avx512_r13};
    static const lumen_ukernel r256[6] = {NULL, uk_avx2_ks256_r1, uk_avx2_ks256_r2, uk_avx2_ks256_r3,
                                          uk_avx2_ks256_r4, uk_avx2_ks256_r5};
    static const lumen_ukernel r320[6] = {NULL, uk_avx2_ks320_r1, uk_avx2_ks320_r2, uk_avx2_ks320_r3,
                                          uk_avx2_ks320_r4, uk_avx2_ks320_r5};
    if (isa == LUMEN_ISA_AVX512 && mr > 0 && mr < 14) return r512[mr];
    if (isa == LUMEN_ISA_AVX2 && mr > 0 && mr < 6) return bl->kc == AVX2_KS_L2 ? r320[mr] : r256[mr];
#else
    (void)isa;
    (void)mr;
#endif
    (void)bl;
    return NULL;
}

static lumen_ukernel lumen_ukernel_for(int isa, const lumen_blocking *bl) {
#if LUMEN_X86
    if (isa == LUMEN_ISA_AVX512) return uk_avx512;
    if (isa == LUMEN_ISA_AVX2) return bl->kc == AVX2_KS_L2 ? uk_avx2_ks320 : uk_avx2_ks256;
#else
    (void)isa;
#endif
    (void)bl;
    return uk_generic;
}

// ---------------------------------------------------------------------------------------------
// Packers
// ---------------------------------------------------------------------------------------------

// B operand packers (k-major panels). ROWS source: elem(i, k) = p[(i0+i)*ld + k0+k] stored as
// dtype -> out[pan][k][width] (a transposing pack: 16x16 / 8x8 register transposes on x86).
static void pack_rows_generic(const void *p, int dtype, int64_t ld, int64_t i0, int64_t cnt,
                              int64_t k0, int64_t kc, int width, float *out) {
    int64_t npan = (cnt + width - 1) / width;
    for (int64_t pan = 0; pan < npan; ++pan) {
        float *o = out + pan * kc * width;
        for (int i = 0; i < width; ++i) {
            int64_t r = pan * width + i;
            if (r >= cnt) {
                for (int64_t k = 0; k < kc; ++k) o[k * width + i] = 0.0f;
                continue;
            }
            int64_t base = (i0 + r) * ld + k0;
            if (dtype == LUMEN_DT_F32) {
                const float *s = (const float *)p + base;
                for (int64_t k = 0; k < kc; ++k) o[k * width + i] = s[k];
            } else if (dtype == LUMEN_DT_F16) {
                const uint16_t *s = (const uint16_t *)p + base;
                for (int64_t k = 0; k < kc; ++k) o[k * width + i] = lumen_h2f(s[k]);
            } else {
                const uint16_t *s = (const uint16_t *)p + base;
                for (int64_t k = 0; k < kc; ++k) o[k * width + i] = lumen_bf2f(s[k]);
            }
        }
    }
}

// COLS source: elem(i, k) = p[(k0+k)*ld + i0+i] (f32) -> out[pan][k][width].
static void pack_cols_generic(const float *p, int64_t ld, int64_t i0, int64_t cnt, int64_t k0,
                              int64_t kc, int width, float *out) {
    int64_t npan = (cnt + width - 1) / width;
    for (int64_t pan = 0; pan < npan; ++pan) {
        float *o = out + pan * kc * width;
        int64_t n = cnt - pan * width;
        if (n > width) n = width;
        const float *s = p + k0 * ld + i0 + pan * width;
        for (int64_t k = 0; k < kc; ++k) {
            const float *sk = s + k * ld;
            float *ok = o + k * width;
            int j = 0;
            for (; j < n; ++j) ok[j] = sk[j];
            for (; j < width; ++j) ok[j] = 0.0f;
        }
    }
}

#if LUMEN_X86

LUMEN_TARGET_AVX512 static inline __m512 ld16_avx512(const void *p, int dtype, __mmask16 m) {
    if (dtype == LUMEN_DT_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    if (dtype == LUMEN_DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    return _mm512_maskz_loadu_ps(m, p);
}

LUMEN_TARGET_AVX512 static void pack_rows_avx512(const void *p, int dtype, int64_t ld, int64_t i0,
                                                 int64_t cnt, int64_t k0, int64_t kc, int width,
                                                 float *out) {
    const size_t es = lumen_dtype_size(dtype);
    const char *base = (const char *)p + (size_t)(i0 * ld + k0) * es;
    int64_t npan = (cnt + width - 1) / width;
    for (int64_t pan = 0; pan < npan; ++pan) {
        for (int g = 0; g < width; g += 16) {
            int gw = width - g < 16 ? width - g : 16;
            __mmask16 sm = (__mmask16)((1u << gw) - 1u);
            int64_t r0 = pan * width + g;
            int64_t valid = cnt - r0;
            if (valid > gw) valid = gw;
            float *o = out + pan * kc * width + g;
            if (valid <= 0) {
                for (int64_t k = 0; k < kc; ++k) _mm512_mask_storeu_ps(o + k * width, sm, _mm512_setzero_ps());
                continue;
            }
            const char *rp = base + (size_t)(r0 * ld) * es;
            const size_t rs = (size_t)ld * es;
            for (int64_t k = 0; k < kc; k += 16) {
                int kn = kc - k < 16 ? (int)(kc - k) : 16;
                __mmask16 lm = (__mmask16)((1u << kn) - 1u);
                __m512 r[16];
                const char *src = rp + (size_t)k * es;
                for (int i = 0; i < 16; ++i)
                    r[i] = i < valid ? ld16_avx512(src + (size_t)i * rs, dtype, lm) : _mm512_setzero_ps();
                lumen_tr16_avx512(r);
                float *ok = o + k * width;
                if (kn == 16) {
                    for (int t = 0; t < 16; ++t) _mm512_mask_storeu_ps(ok + t * width, sm, r[t]);
                } else {
                    for (int t = 0; t < kn; ++t) _mm512_mask_storeu_ps(ok + t * width, sm, r[t]);
                }
            }
        }
    }
}

LUMEN_TARGET_AVX512 static void pack_cols_avx512(const float *p, int64_t ld, int64_t i0,
                                                 int64_t cnt, int64_t k0, int64_t kc, int width,
                                                 float *out) {
    int64_t npan = (cnt + width - 1) / width;
    for (int64_t pan = 0; pan < npan; ++pan) {
        float *o = out + pan * kc * width;
        int64_t n = cnt - pan * width;
        if (n > width) n = width;
        const float *s = p + k0 * ld + i0 + pan * width;
        for (int g = 0; g < width; g += 16) {
            int gw = width - g < 16 ? width - g : 16;
            int gv = (int)(n - g);
            if (gv < 0) gv = 0;
            if (gv > gw) gv = gw;
            __mmask16 sm = (__mmask16)((1u << gw) - 1u), lm = (__mmask16)((1u << gv) - 1u);
            for (int64_t k = 0; k < kc; ++k)
                _mm512_mask_storeu_ps(o + k * width + g, sm, _mm512_maskz_loadu_ps(lm, s + k * ld + g));
        }
    }
}

LUMEN_TARGET_AVX2 static inline __m256 ld8_avx2(const void *p, int dtype, int kn) {
    if (kn < 8) {
        uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (dtype == LUMEN_DT_F32) {
            float tf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            memcpy(tf, p, (size_t)kn * 4);
            return _mm256_loadu_ps(tf);
        }
        memcpy(tmp, p, (size_t)kn * 2);
        return ld8_avx2(tmp, dtype, 8);
    }
    if (dtype == LUMEN_DT_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    if (dtype == LUMEN_DT_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    return _mm256_loadu_ps((const float *)p);
}

// Stores 8 lanes (width >= 8) or the first `gw` lanes (gw < 8, via a full store whose tail the
// next k overwrites; buffers carry slack for the last one).
LUMEN_TARGET_AVX2 static void pack_rows_avx2(const void *p, int dtype, int64_t ld, int64_t i0,
                                             int64_t cnt, int64_t k0, int64_t kc, int width,
                                             float *out) {
    const size_t es = lumen_dtype_size(dtype);
    const char *base = (const char *)p + (size_t)(i0 * ld + k0) * es;
    int64_t npan = (cnt + width - 1) / width;
    for (int64_t pan = 0; pan < npan; ++pan) {
        for (int g = 0; g < width; g += 8) {
            int gw = width - g < 8 ? width - g : 8;
            int64_t r0 = pan * width + g;
            int64_t valid = cnt - r0;
            if (valid > gw) valid = gw;
            float *o = out + pan * kc * width + g;
            if (valid <= 0) {
                for (int64_t k = 0; k < kc; ++k)
                    for (int j = 0; j < gw; ++j) o[k * width + j] = 0.0f;
                continue;
            }
            const char *rp = base + (size_t)(r0 * ld) * es;
            const size_t rs = (size_t)ld * es;
            for (int64_t k = 0; k < kc; k += 8) {
                int kn = kc - k < 8 ? (int)(kc - k) : 8;
                __m256 r[8];
                const char *src = rp + (size_t)k * es;
                for (int i = 0; i < 8; ++i)
                    r[i] = i < valid ? ld8_avx2(src + (size_t)i * rs, dtype, kn) : _mm256_setzero_ps();
                lumen_tr8_avx2(r);
                float *ok = o + k * width;
                if (gw == 8) {
                    for (int t = 0; t < kn; ++t) _mm256_storeu_ps(ok + t * width, r[t]);
                } else {
                    // rows beyond gw in this group are zero here and are overwritten later
                    for (int t = 0; t < kn; ++t) _mm256_storeu_ps(ok + t * width, r[t]);
                }
            }
        }
    }
}
#endif  // LUMEN_X86

static void pack_b(const lumen_src *s, int isa, int64_t i0, int64_t cnt, int64_t k0, int64_t kc,
                     int width, float *out) {
    switch (s->kind) {
    case LUMEN_SRC_ROWS:
#if LUMEN_X86
        if (isa == LUMEN_ISA_AVX512) {
            pack_rows_avx512(s->p, s->dtype, s->ld, i0, cnt, k0, kc, width, out);
            return;
        }
        if (isa == LUMEN_ISA_AVX2) {
            pack_rows_avx2(s->p, s->dtype, s->ld, i0, cnt, k0, kc, width, out);
            return;
        }
#endif
        pack_rows_generic(s->p, s->dtype, s->ld, i0, cnt, k0, kc, width, out);
        return;
    case LUMEN_SRC_COLS:
#if LUMEN_X86
        if (isa == LUMEN_ISA_AVX512) {
            pack_cols_avx512((const float *)s->p, s->ld, i0, cnt, k0, kc, width, out);
            return;
        }
#endif
        pack_cols_generic((const float *)s->p, s->ld, i0, cnt, k0, kc, width, out);
        return;
    default:
        s->custom(s, isa, i0, cnt, k0, kc, width, out);
        return;
    }
}

// A operand, row layout: out[i*ks + k] for rows i in [0, roundup(cnt, mr)), k in [0, kc);
// rows >= cnt are zero. A ROWS source is a plain (converting) copy of each row.
static void cvt_row_generic(const void *p, int dtype, int64_t kc, float *o) {
    if (dtype == LUMEN_DT_F32) {
        memcpy(o, p, (size_t)kc * 4);
    } else if (dtype == LUMEN_DT_F16) {
        const uint16_t *s = (const uint16_t *)p;
        for (int64_t k = 0; k < kc; ++k) o[k] = lumen_h2f(s[k]);
    } else {
        const uint16_t *s = (const uint16_t *)p;
        for (int64_t k = 0; k < kc; ++k) o[k] = lumen_bf2f(s[k]);
    }
}

#if LUMEN_X86
LUMEN_TARGET_AVX512 static void cvt_row_avx512(const void *p, int dtype, int64_t kc, float *o) {
    const size_t es = lumen_dtype_size(dtype);
    const char *s = (const char *)p;
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) _mm512_storeu_ps(o + k, ld16_avx512(s + k * es, dtype, 0xffff));
    if (k < kc) {
        __mmask16 m = (__mmask16)((1u << (kc - k)) - 1u);
        _mm512_mask_storeu_ps(o + k, m, ld16_avx512(s + k * es, dtype, m));
    }
}

LUMEN_TARGET_AVX2 static void cvt_row_avx2(const void *p, int dtype, int64_t kc, float *o) {
    const size_t es = lumen_dtype_size(dtype);
    const char *s = (const char *)p;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) _mm256_storeu_ps(o + k, ld8_avx2(s + k * es, dtype, 8));
    if (k < kc) {
        float t[8];
        _mm256_storeu_ps(t, ld8_avx2(s + k * es, dtype, (int)(kc - k)));
        for (int j = 0; k + j < kc; ++j) o[k + j] = t[j];
    }
}
#endif

void lumen_cvt_row(int isa, const void *p, int dtype, int64_t n, float *o) {
#if LUMEN_X86
    if (isa == LUMEN_ISA_AVX512) { cvt_row_avx512(p, dtype, n, o); return; }
    if (isa == LUMEN_ISA_AVX2) { cvt_row_avx2(p, dtype, n, o); return; }
#endif
    (void)isa;
    cvt_row_generic(p, dtype, n, o);
}

static void pack_a(const lumen_src *s, int isa, int64_t i0, int64_t cnt, int64_t k0, int64_t kc,
                   int mr, int ks, float *out) {
    const int64_t rows = (cnt + mr - 1) / mr * mr;
    if (s->kind == LUMEN_SRC_ROWS) {
        const size_t es = lumen_dtype_size(s->dtype);
        for (int64_t i = 0; i < cnt; ++i) {
            const void *src = (const char *)s->p + (size_t)((i0 + i) * s->ld + k0) * es;
#if LUMEN_X86
            if (isa == LUMEN_ISA_AVX512) cvt_row_avx512(src, s->dtype, kc, out + i * ks);
            else if (isa == LUMEN_ISA_AVX2) cvt_row_avx2(src, s->dtype, kc, out + i * ks);
            else
#endif
                cvt_row_generic(src, s->dtype, kc, out + i * ks);
        }
    } else {
        // COLS: elem(i, k) = p[(k0+k)*ld + i0+i] (f32): transposing copy
        const float *p = (const float *)s->p + k0 * s->ld + i0;
        for (int64_t k = 0; k < kc; ++k) {
            const float *pk = p + k * s->ld;
            for (int64_t i = 0; i < cnt; ++i) out[i * ks + k] = pk[i];
        }
    }
    (void)isa;
    for (int64_t i = cnt; i < rows; ++i) memset(out + i * ks, 0, (size_t)kc * 4);
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

static inline int64_t lumen_col_offset(const lumen_gemm_op *op, int64_t n) {
    if (op->col_group <= 0) return n;
    int64_t b = n / op->col_group;
    return b * op->col_group_stride + (n - b * op->col_group);
}

static void lumen_gemm_k0(const lumen_gemm_op *op, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t m = m0; m < m1; ++m) {
        float *c = op->c + m * op->ldc;
        for (int64_t n = n0; n < n1; ++n) {
            float *cn = c + lumen_col_offset(op, n);
            float v = op->accumulate ? *cn : 0.0f;
            if (op->bias_m) v += op->bias_m[m];
            if (op->bias_n) v += op->bias_n[n];
            lumen_epi e;
            memset(&e, 0, sizeof e);
            lumen_epi_post(&e, op, 1, cn);
            if (e.post) v = lumen_post1(&e, v, e.res ? *e.res : 0.0f);
            *cn = v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bf16 compute (lumen_cpu_set_bf16): the same loop nest, tiles (14x32), split and epilogue, but
// both operands are rounded to bf16 (round to nearest even) while packing and multiplied with
// VDPBF16PS, which adds a pair of adjacent-k bf16 products into each f32 lane. Packed layouts
// hold K-pairs as 32-bit words (low half = even k, high half = odd k; an odd K is padded with a
// zero): A panels are row-major, word A[i*KSP + p] = (a[i, 2p], a[i, 2p+1]); B panels are
// pair-major, word B[p*32 + j] = (b[2p, j], b[2p+1, j]). Each panel is first packed as f32 by the
// f32 packers above (into a per-panel staging buffer that stays in L2) and then converted, so
// every source kind (weights, activations, im2col) is handled by the code the f32 path uses.
// ---------------------------------------------------------------------------------------------

#if LUMEN_X86

// K block in elements: an A row holds BF16_KSP pairs, the same 1.5 KiB as an f32 row of KC 384,
// so the A micro-panel and the B block take the same L1/L2 room as in f32.
#define BF16_KC 768
#define BF16_KSP (BF16_KC / 2)

// f32 row of kc values -> (kc+1)/2 pair words, rounded to nearest even, zero padded.
LUMEN_TARGET_AVX512BF16 static void bf16_pack_row(const float *src, int64_t kc, uint32_t *dst) {
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) {
        __m512 lo = _mm512_loadu_ps(src + k), hi = _mm512_loadu_ps(src + k + 16);
        _mm512_storeu_si512((void *)(dst + k / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (k < kc) {
        const int64_t r = kc - k;  // 1..31
        const __mmask16 m0 = (__mmask16)(r >= 16 ? 0xffffu : (1u << r) - 1u);
        const __mmask16 m1 = (__mmask16)(r > 16 ? (1u << (r - 16)) - 1u : 0u);
        __m512 lo = _mm512_maskz_loadu_ps(m0, src + k), hi = _mm512_maskz_loadu_ps(m1, src + k + 16);
        const __mmask16 wm = (__mmask16)((1u << ((r + 1) / 2)) - 1u);
        _mm512_mask_storeu_epi32((void *)(dst + k / 2), wm, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

// A row straight from a ROWS source (f32, f16 or bf16): kc values -> (kc+1)/2 pair words.
LUMEN_TARGET_AVX512BF16 static void bf16_pack_row_src(const void *p, int dtype, int64_t kc,
                                                      uint32_t *dst) {
    const size_t es = lumen_dtype_size(dtype);
    const char *s = (const char *)p;
    int64_t k = 0;
    for (; k + 32 <= kc; k += 32) {
        __m512 lo = ld16_avx512(s + k * es, dtype, 0xffff), hi = ld16_avx512(s + (k + 16) * es, dtype, 0xffff);
        _mm512_storeu_si512((void *)(dst + k / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (k < kc) {
        const int64_t r = kc - k;  // 1..31
        const __mmask16 m0 = (__mmask16)(r >= 16 ? 0xffffu : (1u << r) - 1u);
        const __mmask16 m1 = (__mmask16)(r > 16 ? (1u << (r - 16)) - 1u : 0u);
        __m512 lo = ld16_avx512(s + k * es, dtype, m0), hi = ld16_avx512(s + (k + 16) * es, dtype, m1);
        const __mmask16 wm = (__mmask16)((1u << ((r + 1) / 2)) - 1u);
        _mm512_mask_storeu_epi32((void *)(dst + k / 2), wm, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

// f32 B panel (kc x 32, k-major) -> (kc+1)/2 x 32 pair words.
LUMEN_TARGET_AVX512BF16 static void bf16_pack_bpanel(const float *src, int64_t kc, uint32_t *dst) {
    // 16-bit element t of cvtne2ps(r1, r0) is r0[t] (t < 16) or r1[t - 16]: interleave them
    const __m512i il = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                        23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2) {
        const float *r0 = src + k * 32, *r1 = r0 + 32;
        __m512i v0 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(r1), _mm512_load_ps(r0));
        __m512i v1 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(r1 + 16), _mm512_load_ps(r0 + 16));
        _mm512_store_si512((void *)(dst + k * 16), _mm512_permutexvar_epi16(il, v0));
        _mm512_store_si512((void *)(dst + k * 16 + 16), _mm512_permutexvar_epi16(il, v1));
    }
    if (k < kc) {
        const float *r0 = src + k * 32;
        const __m512 z = _mm512_setzero_ps();
        __m512i v0 = (__m512i)_mm512_cvtne2ps_pbh(z, _mm512_load_ps(r0));
        __m512i v1 = (__m512i)_mm512_cvtne2ps_pbh(z, _mm512_load_ps(r0 + 16));
        _mm512_store_si512((void *)(dst + k * 16), _mm512_permutexvar_epi16(il, v0));
        _mm512_store_si512((void *)(dst + k * 16 + 16), _mm512_permutexvar_epi16(il, v1));
    }
}

// 14x32 bf16 microkernel over kp K-pairs: 28 f32 accumulators + 2 B vectors + 1 broadcast.
LUMEN_TARGET_AVX512BF16 static void uk_bf16(int64_t kp, const uint32_t *restrict A,
                                            const uint32_t *restrict B, float *restrict C,
                                            int64_t ldc, const lumen_epi *e) {
#define Z _mm512_setzero_ps()
    __m512 c00 = Z, c01 = Z, c10 = Z, c11 = Z, c20 = Z, c21 = Z, c30 = Z, c31 = Z, c40 = Z, c41 = Z;
    __m512 c50 = Z, c51 = Z, c60 = Z, c61 = Z, c70 = Z, c71 = Z, c80 = Z, c81 = Z, c90 = Z, c91 = Z;
    __m512 ca0 = Z, ca1 = Z, cb0 = Z, cb1 = Z, cc0 = Z, cc1 = Z, cd0 = Z, cd1 = Z;
#undef Z
#define ROW(r, i, o)                                                                              \
    {                                                                                             \
        __m512bh a_ = (__m512bh)_mm512_set1_epi32((int)A[(i) * BF16_KSP + (o)]);                  \
        c##r##0 = _mm512_dpbf16_ps(c##r##0, a_, b0);                                              \
        c##r##1 = _mm512_dpbf16_ps(c##r##1, a_, b1);                                              \
    }
#define KSTEP(o)                                                                                  \
    {                                                                                             \
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(B + (o) * 32));                  \
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(B + (o) * 32 + 16));             \
        ROW(0, 0, o) ROW(1, 1, o) ROW(2, 2, o) ROW(3, 3, o) ROW(4, 4, o) ROW(5, 5, o)              \
        ROW(6, 6, o) ROW(7, 7, o) ROW(8, 8, o) ROW(9, 9, o) ROW(a, 10, o) ROW(b, 11, o)           \
        ROW(c, 12, o) ROW(d, 13, o)                                                               \
    }
    int64_t p = 0;
    for (; p + 4 <= kp; p += 4) {
        _mm_prefetch((const char *)(B + 32 * 8), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 32), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 48), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 80), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 96), _MM_HINT_T0);
        _mm_prefetch((const char *)(B + 32 * 8 + 112), _MM_HINT_T0);
        KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
        A += 4;
        B += 128;
    }
    for (; p < kp; ++p) {
        KSTEP(0)
        A += 1;
        B += 32;
    }
#undef KSTEP
#undef ROW
    const __m512 va = _mm512_set1_ps(e->alpha);
    const int scale = e->alpha != 1.0f, lc = e->load_c, post = e->post;
    const float *bm = e->bias_m;
    __m512 bn0 = _mm512_setzero_ps(), bn1 = _mm512_setzero_ps();
    if (e->bias_n) {
        bn0 = _mm512_loadu_ps(e->bias_n);
        bn1 = _mm512_loadu_ps(e->bias_n + 16);
    }
#define EPI(r, i)                                                                                 \
    {                                                                                             \
        __m512 x0 = c##r##0, x1 = c##r##1;                                                        \
        float *cp = C + (i) * ldc;                                                                \
        if (scale) { x0 = _mm512_mul_ps(x0, va); x1 = _mm512_mul_ps(x1, va); }                    \
        x0 = _mm512_add_ps(x0, bn0); x1 = _mm512_add_ps(x1, bn1);                                 \
        if (bm) {                                                                                 \
            __m512 t_ = _mm512_set1_ps(bm[(i)]);                                                  \
            x0 = _mm512_add_ps(x0, t_); x1 = _mm512_add_ps(x1, t_);                               \
        }                                                                                         \
        if (lc) {                                                                                 \
            x0 = _mm512_add_ps(x0, _mm512_loadu_ps(cp));                                          \
            x1 = _mm512_add_ps(x1, _mm512_loadu_ps(cp + 16));                                     \
        }                                                                                         \
        if (post) lumen_post_avx512(&x0, &x1, e->res ? e->res + (i) * ldc : NULL, e);             \
        _mm512_storeu_ps(cp, x0);                                                                 \
        _mm512_storeu_ps(cp + 16, x1);                                                            \
    }
    EPI(0, 0) EPI(1, 1) EPI(2, 2) EPI(3, 3) EPI(4, 4) EPI(5, 5) EPI(6, 6) EPI(7, 7) EPI(8, 8)
    EPI(9, 9) EPI(a, 10) EPI(b, 11) EPI(c, 12) EPI(d, 13)
#undef EPI
}

// lumen_gemm_run in bf16 (isa is AVX512 and the CPU has AVX512_BF16).
static void lumen_gemm_run_bf16(const lumen_gemm_op *op, int isa, int64_t m0, int64_t m1,
                                int64_t n0, int64_t n1, int64_t K) {
    const lumen_blocking bl = lumen_gemm_blocking(isa);
    const int MR = bl.mr, NR = bl.nr;  // 14, 32
    // K blocks of at most BF16_KC, even except the last, so pairs never straddle two blocks
    const int64_t nkb = (K + BF16_KC - 1) / BF16_KC;
    int64_t kcb = (K + nkb - 1) / nkb;
    kcb += kcb & 1;
    const int64_t kpb = kcb / 2;
    const int64_t mcmax = bl.mc, ncmax = bl.nc;
    const int64_t M = m1 - m0, N = n1 - n0;
    int64_t mcb = M < mcmax ? M : mcmax, ncb = N < ncmax ? N : ncmax;
    mcb = (mcb + MR - 1) / MR * MR;
    ncb = (ncb + NR - 1) / NR * NR;
    uint32_t *Ap = (uint32_t *)lumen_tl_buffer(0, (size_t)(mcb * BF16_KSP));
    uint32_t *Bp = (uint32_t *)lumen_tl_buffer(1, (size_t)(ncb * kpb));
    // staging for one f32 panel: B (kc x NR) or A (MR rows of stride BF16_KC)
    const size_t stage_n = (size_t)(kcb * NR) > (size_t)(MR * BF16_KC) ? (size_t)(kcb * NR)
                                                                          : (size_t)(MR * BF16_KC);
    float *St = lumen_tl_buffer(3, stage_n);
    float tmp[14 * 32] __attribute__((aligned(64)));
    const int64_t ldc = op->ldc;

    for (int64_t jc = n0; jc < n1; jc += ncmax) {
        const int64_t nc = n1 - jc < ncmax ? n1 - jc : ncmax;
        for (int64_t pc = 0; pc < K; pc += kcb) {
            const int64_t kc = K - pc < kcb ? K - pc : kcb;
            const int64_t kp = (kc + 1) / 2;
            const int first = pc == 0, last = pc + kc >= K;
            for (int64_t jr = 0; jr < nc; jr += NR) {
                const int64_t cnt = nc - jr < NR ? nc - jr : NR;
                pack_b(&op->b, isa, jc + jr, cnt, pc, kc, NR, St);
                bf16_pack_bpanel(St, kc, Bp + jr * kp);
            }
            for (int64_t ic = m0; ic < m1; ic += mcmax) {
                const int64_t mc = m1 - ic < mcmax ? m1 - ic : mcmax;
                if (op->a.kind == LUMEN_SRC_ROWS) {  // converted straight from the source rows
                    const lumen_src *a = &op->a;
                    const size_t es = lumen_dtype_size(a->dtype);
                    const int64_t rows = (mc + MR - 1) / MR * MR;
                    for (int64_t i = 0; i < mc; ++i)
                        bf16_pack_row_src((const char *)a->p + (size_t)((ic + i) * a->ld + pc) * es,
                                          a->dtype, kc, Ap + i * BF16_KSP);
                    for (int64_t i = mc; i < rows; ++i) memset(Ap + i * BF16_KSP, 0, (size_t)kp * 4);
                } else {
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        const int64_t cnt = mc - ir < MR ? mc - ir : MR;
                        pack_a(&op->a, isa, ic + ir, cnt, pc, kc, MR, BF16_KC, St);
                        for (int i = 0; i < MR; ++i)
                            bf16_pack_row(St + i * BF16_KC, kc, Ap + (ir + i) * BF16_KSP);
                    }
                }
                for (int64_t ir = 0; ir < mc; ir += MR) {
                    const int mr = mc - ir < MR ? (int)(mc - ir) : MR;
                    const uint32_t *Apan = Ap + ir * BF16_KSP;
                    const int64_t gm = ic + ir;
                    for (int64_t jr = 0; jr < nc; jr += NR) {
                        const int nr = nc - jr < NR ? (int)(nc - jr) : NR;
                        const uint32_t *Bpan = Bp + jr * kp;
                        const int64_t gn = jc + jr;
                        float *C = op->c + gm * ldc + lumen_col_offset(op, gn);
                        if (mr == MR && nr == NR) {
                            lumen_epi e = {op->alpha, first ? op->accumulate : 1,
                                           first && op->bias_m ? op->bias_m + gm : NULL,
                                           first && op->bias_n ? op->bias_n + gn : NULL};
                            lumen_epi_post(&e, op, last, C);
                            uk_bf16(kp, Apan, Bpan, C, ldc, &e);
                        } else {
                            lumen_epi e = {op->alpha, 0, NULL, NULL};
                            uk_bf16(kp, Apan, Bpan, tmp, NR, &e);
                            lumen_epi_post(&e, op, last, C);
                            const int lc = first ? op->accumulate : 1;
                            for (int i = 0; i < mr; ++i) {
                                float *c = C + i * ldc;
                                const float *t = tmp + i * NR;
                                float bm = first && op->bias_m ? op->bias_m[gm + i] : 0.0f;
                                for (int j = 0; j < nr; ++j) {
                                    float v = t[j] + bm;
                                    if (first && op->bias_n) v += op->bias_n[gn + j];
                                    if (lc) v += c[j];
                                    if (e.post) v = lumen_post1(&e, v, e.res ? e.res[i * ldc + j] : 0.0f);
                                    c[j] = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
#endif  // LUMEN_X86

// One MR x NR tile of the (ic, jc) block: the microkernel straight into C when the tile is whole,
// through tmp (then the epilogue in scalar code) at the edges.
static inline __attribute__((always_inline)) void gemm_tile(
    const lumen_gemm_op *op, lumen_ukernel uk, const lumen_ukernel *rows, lumen_blocking bl,
    const float *Ap, const float *Bp,
    int64_t ic, int64_t ir, int64_t mc, int64_t jc, int64_t jr, int64_t nc, int64_t kc, int first,
    int last, float *tmp) {
    const int MR = bl.mr, NR = bl.nr;
    const int64_t ldc = op->ldc;
    const int mr = mc - ir < MR ? (int)(mc - ir) : MR;
    const float *Apan = Ap + ir * bl.kc;
    const int64_t gm = ic + ir;
    const int nr = nc - jr < NR ? (int)(nc - jr) : NR;
    const float *Bpan = Bp + jr * kc;
    const int64_t gn = jc + jr;
    float *C = op->c + gm * ldc + lumen_col_offset(op, gn);
    const lumen_ukernel ukr = mr < MR && nr == NR ? rows[mr] : NULL;
    if ((mr == MR || ukr) && nr == NR) {
        lumen_epi e = {op->alpha, first ? op->accumulate : 1,
                       first && op->bias_m ? op->bias_m + gm : NULL,
                       first && op->bias_n ? op->bias_n + gn : NULL};
        lumen_epi_post(&e, op, last, C);
        (mr == MR ? uk : ukr)(kc, Apan, Bpan, C, ldc, &e);
    } else {
        lumen_epi e = {op->alpha, 0, NULL, NULL};
        uk(kc, Apan, Bpan, tmp, NR, &e);
        lumen_epi_post(&e, op, last, C);
        const int lc = first ? op->accumulate : 1;
        for (int i = 0; i < mr; ++i) {
            float *c = C + i * ldc;
            const float *t = tmp + i * NR;
            float bm = first && op->bias_m ? op->bias_m[gm + i] : 0.0f;
            for (int j = 0; j < nr; ++j) {
                float v = t[j] + bm;
                if (first && op->bias_n) v += op->bias_n[gn + j];
                if (lc) v += c[j];
                if (e.post) v = lumen_post1(&e, v, e.res ? e.res[i * ldc + j] : 0.0f);
                c[j] = v;
            }
        }
    }
}

void lumen_gemm_run(const lumen_gemm_op *op, int isa, int64_t m0, int64_t m1, int64_t n0,
                    int64_t n1, int64_t K) {
    if (m1 <= m0 || n1 <= n0) return;
    if (K <= 0) {
        lumen_gemm_k0(op, m0, m1, n0, n1);
        return;
    }
#if LUMEN_X86
    if (isa == LUMEN_ISA_AVX512 && !op->f32_only && lumen_bf16_active()) {
        lumen_gemm_run_bf16(op, isa, m0, m1, n0, n1, K);
        return;
    }
#endif
    lumen_blocking bl = lumen_gemm_blocking(isa);
#if LUMEN_X86
    if (isa == LUMEN_ISA_AVX2 && !bl.b_panel_in_l1 && K > bl.kc && K <= AVX2_KS_L2) bl.kc = AVX2_KS_L2;
#endif
    const int MR = bl.mr, NR = bl.nr;
    const lumen_ukernel uk = lumen_ukernel_for(isa, &bl);
    lumen_ukernel rows[14] = {NULL};
    for (int r = 1; r < MR && r < 14; ++r) rows[r] = lumen_ukernel_rows_for(isa, &bl, r);
    const int64_t nkb = (K + bl.kc - 1) / bl.kc;
    const int64_t kcb = (K + nkb - 1) / nkb;
    const int64_t mcmax = bl.mc, ncmax = bl.nc;
    const int64_t M = m1 - m0, N = n1 - n0;
    int64_t mcb = M < mcmax ? M : mcmax, ncb = N < ncmax ? N : ncmax;
    mcb = (mcb + MR - 1) / MR * MR;
    ncb = (ncb + NR - 1) / NR * NR;
    float *Ap = lumen_tl_buffer(0, (size_t)(mcb * bl.kc));
    float *Bp = lumen_tl_buffer(1, (size_t)(ncb * kcb));
    float tmp[14 * 32] __attribute__((aligned(64)));

    for (int64_t jc = n0; jc < n1; jc += ncmax) {
        const int64_t nc = n1 - jc < ncmax ? n1 - jc : ncmax;
        for (int64_t pc = 0; pc < K; pc += kcb) {
            const int64_t kc = K - pc < kcb ? K - pc : kcb;
            const int first = pc == 0, last = pc + kc >= K;
            pack_b(&op->b, isa, jc, nc, pc, kc, NR, Bp);
            for (int64_t ic = m0; ic < m1; ic += mcmax) {
                const int64_t mc = m1 - ic < mcmax ? m1 - ic : mcmax;
                pack_a(&op->a, isa, ic, mc, pc, kc, MR, (int)bl.kc, Ap);
                if (bl.b_panel_in_l1) {
                    // jr outer: one B micro-panel (kc x NR) stays in L1 while the A panels of the
                    // block stream from L2.
                    for (int64_t jr = 0; jr < nc; jr += NR)
                        for (int64_t ir = 0; ir < mc; ir += MR)
                            gemm_tile(op, uk, rows, bl, Ap, Bp, ic, ir, mc, jc, jr, nc, kc, first, last, tmp);
                } else {
                    // ir outer: one A micro-panel stays in L1 while the B block streams from L2.
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        for (int64_t jr = 0; jr < nc; jr += NR)
                            gemm_tile(op, uk, rows, bl, Ap, Bp, ic, ir, mc, jc, jr, nc, kc, first, last, tmp);
                }
            }
        }
    }
}

int lumen_gemm_prepacked_ok(int isa, int64_t K) {
    const lumen_blocking bl = lumen_gemm_blocking(isa);
    return (isa == LUMEN_ISA_AVX512 || isa == LUMEN_ISA_AVX2) && K > 0 && K <= bl.kc;
}

void lumen_gemm_prepacked(const lumen_gemm_op *op, int isa, const float *Ap, const float *Bp,
                          int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0 || !lumen_gemm_prepacked_ok(isa, K)) return;
    const lumen_blocking bl = lumen_gemm_blocking(isa);
    const lumen_ukernel uk = lumen_ukernel_for(isa, &bl);
    lumen_ukernel rows[14] = {NULL};
    for (int r = 1; r < bl.mr && r < 14; ++r) rows[r] = lumen_ukernel_rows_for(isa, &bl, r);
    float tmp[14 * 32] __attribute__((aligned(64)));
    // one K block: A's rows and B's panels are already in the packed layouts (gemm_tile reads
    // A's tile at Ap + ir * kc and B's at Bp + jr * K)
    for (int64_t ir = 0; ir < M; ir += bl.mr)
        for (int64_t jr = 0; jr < N; jr += bl.nr)
            gemm_tile(op, uk, rows, bl, Ap, Bp, 0, ir, M, 0, jr, N, K, 1, 1, tmp);
}

void lumen_gemm_split(int isa, int64_t M, int64_t N, int task, int ntasks, int64_t *m0,
                      int64_t *m1, int64_t *n0, int64_t *n1) {
    *m0 = 0; *m1 = M; *n0 = 0; *n1 = N;
    if (ntasks <= 1) return;
    const lumen_blocking bl = lumen_gemm_blocking(isa);
    const int64_t um = (M + bl.mr - 1) / bl.mr, un = (N + bl.nr - 1) / bl.nr;
    // Splitting M repacks all of B in every task, splitting N repacks all of A: split the
    // larger dimension unless that leaves too few tiles per task.
    int splitM = M >= N;
    if (splitM && um < 2 * ntasks && un > um) splitM = 0;
    if (!splitM && un < 2 * ntasks && um > un) splitM = 1;
    const int64_t U = splitM ? um : un, unit = splitM ? bl.mr : bl.nr, ext = splitM ? M : N;
    int64_t u0 = U * task / ntasks, u1 = U * (task + 1) / ntasks;
    int64_t b = u0 * unit, e = u1 * unit;
    if (b > ext) b = ext;
    if (e > ext) e = ext;
    if (splitM) { *m0 = b; *m1 = e; } else { *n0 = b; *n1 = e; }
}

// ---------------------------------------------------------------------------------------------
// Small-M linear (M <= 4): dot products straight from the weight rows, no packing.
// ---------------------------------------------------------------------------------------------

static void linear_smallm_generic(const float *x, int64_t ldx, const void *w, int wdtype,
                                  int64_t ldw, float *acc_out, int64_t M, int64_t n, int64_t K) {
    // acc_out[m] = sum_k x[m,k] * w[n,k]
    float acc[4][8];
    for (int m = 0; m < 4; ++m)
        for (int j = 0; j < 8; ++j) acc[m][j] = 0.0f;
    int64_t k = 0;
    float wb[8];
    for (; k + 8 <= K; k += 8) {
        for (int j = 0; j < 8; ++j) wb[j] = lumen_load_elem(w, wdtype, n * ldw + k + j);
        for (int m = 0; m < M; ++m)
            for (int j = 0; j < 8; ++j) acc[m][j] += x[m * ldx + k + j] * wb[j];
    }
    for (int m = 0; m < M; ++m) {
        float s = 0.0f;
        for (int j = 0; j < 8; ++j) s += acc[m][j];
        for (int64_t kk = k; kk < K; ++kk) s += x[m * ldx + kk] * lumen_load_elem(w, wdtype, n * ldw + kk);
        acc_out[m] = s;
    }
}

#if LUMEN_X86
LUMEN_TARGET_AVX512 static void linear_smallm_avx512(const float *x, int64_t ldx, const void *w,
                                                     int wdtype, int64_t ldw, float *acc_out,
                                                     int64_t M, int64_t n, int64_t K) {
    const size_t es = lumen_dtype_size(wdtype);
    const char *wr = (const char *)w + (size_t)(n * ldw) * es;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K; k += 16) {
        int kn = K - k < 16 ? (int)(K - k) : 16;
        __mmask16 lm = (__mmask16)((1u << kn) - 1u);
        __m512 wv = ld16_avx512(wr + (size_t)k * es, wdtype, lm);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lm, x + k), wv, a0);
        if (M > 1) a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lm, x + ldx + k), wv, a1);
        if (M > 2) a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lm, x + 2 * ldx + k), wv, a2);
        if (M > 3) a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(lm, x + 3 * ldx + k), wv, a3);
    }
    acc_out[0] = _mm512_reduce_add_ps(a0);
    if (M > 1) acc_out[1] = _mm512_reduce_add_ps(a1);
    if (M > 2) acc_out[2] = _mm512_reduce_add_ps(a2);
    if (M > 3) acc_out[3] = _mm512_reduce_add_ps(a3);
}

LUMEN_TARGET_AVX2 static void linear_smallm_avx2(const float *x, int64_t ldx, const void *w,
                                                 int wdtype, int64_t ldw, float *acc_out,
                                                 int64_t M, int64_t n, int64_t K) {
    const size_t es = lumen_dtype_size(wdtype);
    const char *wr = (const char *)w + (size_t)(n * ldw) * es;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv = ld8_avx2(wr + (size_t)k * es, wdtype, 8);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), wv, a0);
        if (M > 1) a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + ldx + k), wv, a1);
        if (M > 2) a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 2 * ldx + k), wv, a2);
        if (M > 3) a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 3 * ldx + k), wv, a3);
    }
    float t[4][8];
    _mm256_storeu_ps(t[0], a0);
    _mm256_storeu_ps(t[1], a1);
    _mm256_storeu_ps(t[2], a2);
    _mm256_storeu_ps(t[3], a3);
    for (int m = 0; m < M; ++m) {
        float s = ((t[m][0] + t[m][4]) + (t[m][1] + t[m][5])) + ((t[m][2] + t[m][6]) + (t[m][3] + t[m][7]));
        for (int64_t kk = k; kk < K; ++kk) s += x[m * ldx + kk] * lumen_load_elem(w, wdtype, n * ldw + kk);
        acc_out[m] = s;
    }
}
#endif

static void linear_smallm(const float *x, int64_t ldx, const void *w, int wdtype, int64_t ldw,
                          const float *bias, float *y, int64_t ldy, int64_t M, int64_t n0,
                          int64_t n1, int64_t K, int accumulate, int isa) {
    float acc[4];
    for (int64_t n = n0; n < n1; ++n) {
#if LUMEN_X86
        if (isa == LUMEN_ISA_AVX512) linear_smallm_avx512(x, ldx, w, wdtype, ldw, acc, M, n, K);
        else if (isa == LUMEN_ISA_AVX2) linear_smallm_avx2(x, ldx, w, wdtype, ldw, acc, M, n, K);
        else
#endif
            linear_smallm_generic(x, ldx, w, wdtype, ldw, acc, M, n, K);
        (void)isa;
        for (int64_t m = 0; m < M; ++m) {
            float v = acc[m];
            if (bias) v += bias[n];
            if (accumulate) v += y[m * ldy + n];
            y[m * ldy + n] = v;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

void lumen_linear(const float *x, int64_t ldx, const void *w, int wdtype, int64_t ldw,
                  const float *bias, float *y, int64_t ldy, int64_t M, int64_t N, int64_t K,
                  int accumulate, int task, int ntasks) {
    if (M <= 0 || N <= 0) return;
    const int isa = lumen_isa_current();
    if (ntasks < 1) { ntasks = 1; task = 0; }
    if (M <= 4 && K > 0) {
        int64_t n0 = N * task / ntasks, n1 = N * (task + 1) / ntasks;
        linear_smallm(x, ldx, w, wdtype, ldw, bias, y, ldy, M, n0, n1, K, accumulate, isa);
        return;
    }
    lumen_gemm_op op;
    memset(&op, 0, sizeof op);
    op.a.kind = LUMEN_SRC_ROWS; op.a.dtype = LUMEN_DT_F32; op.a.p = x; op.a.ld = ldx;
    op.b.kind = LUMEN_SRC_ROWS; op.b.dtype = wdtype; op.b.p = w; op.b.ld = ldw;
    op.c = y; op.ldc = ldy;
    op.bias_n = bias;
    op.alpha = 1.0f;
    op.accumulate = accumulate;
    int64_t m0, m1, n0, n1;
    lumen_gemm_split(isa, M, N, task, ntasks, &m0, &m1, &n0, &n1);
    lumen_gemm_run(&op, isa, m0, m1, n0, n1, K);
}

void lumen_matmul_f32(const float *a, int64_t lda, int transA, const float *b, int64_t ldb,
                      int transB, float *c, int64_t ldc, int64_t M, int64_t N, int64_t K,
                      float alpha, int task, int ntasks) {
    if (M <= 0 || N <= 0) return;
    const int isa = lumen_isa_current();
    if (ntasks < 1) { ntasks = 1; task = 0; }
    lumen_gemm_op op;
    memset(&op, 0, sizeof op);
    op.a.kind = transA ? LUMEN_SRC_COLS : LUMEN_SRC_ROWS; op.a.dtype = LUMEN_DT_F32; op.a.p = a; op.a.ld = lda;
    op.b.kind = transB ? LUMEN_SRC_ROWS : LUMEN_SRC_COLS; op.b.dtype = LUMEN_DT_F32; op.b.p = b; op.b.ld = ldb;
    op.c = c; op.ldc = ldc;
    op.alpha = alpha;
    op.accumulate = 0;
    int64_t m0, m1, n0, n1;
    lumen_gemm_split(isa, M, N, task, ntasks, &m0, &m1, &n0, &n1);
    lumen_gemm_run(&op, isa, m0, m1, n0, n1, K);
}
