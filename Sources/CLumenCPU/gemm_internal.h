// Private interface shared by isa.c, gemm.c, the conv_*.c files and the attention kernels: ISA target attributes, scalar
// conversions, the packed-panel GEMM driver and its packers. Not part of the public API.
#ifndef LUMEN_GEMM_INTERNAL_H
#define LUMEN_GEMM_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "lumen_cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define LUMEN_X86 1
#define LUMEN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define LUMEN_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define LUMEN_TARGET_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,f16c")))
#else
#define LUMEN_X86 0
#endif

#if LUMEN_X86
// The attention kernels' prefetch of the next work item's rows. Items run query block fastest,
// then head, then batch; a block's query rows and output rows are strided (one head's Dh floats
// out of each row of ldq / ldo), and reading them on demand stalled the kernels' transposes.
typedef struct {
    const float *q;
    float *out;
    int64_t rows;  // 0: no next item in this task's range
} lumen_attn_next;

static inline lumen_attn_next lumen_attn_next_rows(int64_t item, int64_t end, int64_t qblocks, int64_t heads,
                                                   int64_t QB, int64_t Lq, int64_t Dh, const float *q, int64_t ldq,
                                                   float *out, int64_t ldo) {
    lumen_attn_next n = {NULL, NULL, 0};
    if (item + 1 >= end) return n;
    const int64_t qb = (item + 1) % qblocks, h = ((item + 1) / qblocks) % heads, b = (item + 1) / (qblocks * heads);
    n.q = q + (b * Lq + qb * QB) * ldq + h * Dh;
    n.out = out + (b * Lq + qb * QB) * ldo + h * Dh;
    n.rows = Lq - qb * QB < QB ? Lq - qb * QB : QB;
    return n;
}

/// Prefetches row i (< n.rows) of the next item's queries and outputs: every cache line of its Dh floats.
static inline void lumen_attn_prefetch_row(lumen_attn_next n, int64_t i, int64_t Dh, int64_t ldq, int64_t ldo) {
    if (i >= n.rows) return;
    for (int64_t d = 0; d < Dh; d += 16) {
        _mm_prefetch((const char *)(n.q + i * ldq + d), _MM_HINT_T0);
        _mm_prefetch((const char *)(n.out + i * ldo + d), _MM_HINT_T0);
    }
    _mm_prefetch((const char *)(n.q + i * ldq + Dh - 1), _MM_HINT_T0);
    _mm_prefetch((const char *)(n.out + i * ldo + Dh - 1), _MM_HINT_T0);
}

// In-register 16x16 transpose: r[i][j] -> r[j][i] (the GEMM's transposing packers, AVX-512
// attention's Q^T and output).
LUMEN_TARGET_AVX512 static inline __attribute__((always_inline)) void lumen_tr16_avx512(__m512 r[16]) {
    __m512 t[16], s[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        s[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        s[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        s[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        s[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    // s[4a+j], 128-bit block L = rows 4a..4a+3, element 4L+j
    for (int j = 0; j < 4; ++j) {
        __m512 p0 = _mm512_shuffle_f32x4(s[j], s[4 + j], 0x88);
        __m512 q0 = _mm512_shuffle_f32x4(s[j], s[4 + j], 0xDD);
        __m512 p1 = _mm512_shuffle_f32x4(s[8 + j], s[12 + j], 0x88);
        __m512 q1 = _mm512_shuffle_f32x4(s[8 + j], s[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(p0, p1, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(p0, p1, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(q0, q1, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(q0, q1, 0xDD);
    }
}

// In-register 8x8 transpose: r[i][j] -> r[j][i] (the GEMM's transposing packers, AVX2 attention's
// Q^T and output, the Winograd transforms' channel-minor strips).
LUMEN_TARGET_AVX2 static inline __attribute__((always_inline)) void lumen_tr8_avx2(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// The level the kernels use now (cheap: one relaxed atomic load after the first call).
int lumen_isa_current(void);
// Whether the GEMM driver computes in bf16 now (lumen_cpu_bf16(); cheap after the first call).
int lumen_bf16_active(void);

// ---------------------------------------------------------------------------------------------
// Scalar conversions (exact / round to nearest even), shared by every path.
// ---------------------------------------------------------------------------------------------

static inline uint32_t lumen_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float lumen_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float lumen_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        // zero or subnormal: m * 2^-24 is exact in f32
        float v = (float)m * 0x1p-24f;
        return lumen_u2f(lumen_f2u(v) | sign);
    }
    if (e == 31) return lumen_u2f(sign | 0x7f800000u | (m << 13));
    return lumen_u2f(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t lumen_f2h(float f) {
    uint32_t x = lumen_f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {  // inf or nan (nan stays nan, quiet)
        return (uint16_t)(sign | (x > 0x7f800000u ? (0x7e00u | ((x >> 13) & 0x3ffu)) : 0x7c00u));
    }
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (x < 0x38800000u) {                                     // half subnormal or zero
        if (x < 0x33000000u) return (uint16_t)sign;            // < 2^-25 rounds to 0
        uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u;
        uint32_t s = 126u - e;                                 // 14..24
        uint32_t q = m >> s, r = m & ((1u << s) - 1u), half = 1u << (s - 1u);
        if (r > half || (r == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t odd = (x >> 13) & 1u;
    return (uint16_t)(sign | ((x - 0x38000000u + 0xfffu + odd) >> 13));
}

static inline float lumen_bf2f(uint16_t b) { return lumen_u2f((uint32_t)b << 16); }

static inline uint16_t lumen_f2bf(float f) {
    uint32_t x = lumen_f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline float lumen_load_elem(const void *p, int dtype, int64_t i) {
    switch (dtype) {
    case LUMEN_DT_F16: return lumen_h2f(((const uint16_t *)p)[i]);
    case LUMEN_DT_BF16: return lumen_bf2f(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline size_t lumen_dtype_size(int dtype) { return dtype == LUMEN_DT_F32 ? 4 : 2; }

// ---------------------------------------------------------------------------------------------
// Packed-panel GEMM driver: C[m, n] (+)= alpha * sum_k A(m, k) * B(k, n) (+ bias).
// A is packed in panels of MR rows: panel[k*MR + i]; B in panels of NR columns: panel[k*NR + j].
// ---------------------------------------------------------------------------------------------

typedef struct lumen_src lumen_src;
// Packs indices [i0, i0+cnt) of a source (rows of A or columns of B) for k in [k0, k0+kc)
// into ceil(cnt/width) panels of kc*width floats each, zero-padding indices >= cnt.
typedef void (*lumen_pack_fn)(const lumen_src *s, int isa, int64_t i0, int64_t cnt, int64_t k0,
                              int64_t kc, int width, float *out);

enum { LUMEN_SRC_ROWS = 0, LUMEN_SRC_COLS = 1, LUMEN_SRC_CUSTOM = 2 };

struct lumen_src {
    int kind;        // ROWS: elem(i,k) = p[i*ld + k] (dtype); COLS: elem(i,k) = p[k*ld + i] (f32)
    int dtype;
    const void *p;
    int64_t ld;
    lumen_pack_fn custom;  // CUSTOM
    // convolution geometry (CUSTOM im2col source); columns are batch*OH*OW pixels, image b
    // starting at p + b*C*H*W
    int64_t C, H, W, KH, KW, SH, SW, PH, PW, OH, OW;
};

typedef struct {
    lumen_src a, b;
    float *c;
    int64_t ldc;
    const float *bias_m;  // per row m (indexed by global m) or NULL
    const float *bias_n;  // per column n or NULL
    float alpha;
    int accumulate;
    // Batched columns (convolution over several images as one GEMM): when col_group > 0, column
    // n lives in image n / col_group at c + (n / col_group) * col_group_stride + m*ldc +
    // n % col_group. col_group must be a multiple of NR so that no tile spans two images.
    int64_t col_group, col_group_stride;
    // Keep f32 even when bf16 compute is on (set by callers whose packing would cost more in
    // bf16 than the dot products save).
    int f32_only;
    // Ops fused after the product (lumen_conv2d_ex), applied once to each finished output, after
    // the last K block, in this order: + residual (laid out as C: the same offset from `residual`
    // as the output from `c`), then * post_mul + post_add, then Swift's min(max(v, lo), hi).
    // Each rounds as the separate op would, so results equal the unfused ops' bit for bit.
    const float *residual;
    int post_affine, post_clamp;
    float post_mul, post_add, post_lo, post_hi;
} lumen_gemm_op;

typedef struct {
    int mr, nr;
    int64_t kc, mc, nc;
    // Loop order inside an (ic, jc) block: 1 = over B micro-panels outside, A panels inside (the B
    // micro-panel lives in L1, the A block in L2); 0 = A panels outside (the B block lives in L2).
    int b_panel_in_l1;
} lumen_blocking;

lumen_blocking lumen_gemm_blocking(int isa);
// Thread-local 64-byte aligned scratch; slots 0 and 1 belong to the driver (A and B panels),
// slot 2 is free for packers, slot 3 is the bf16 driver's f32 staging panel, slots 4 and 5 hold
// the fused Winograd path's blocks. Grown as needed, never freed.
float *lumen_tl_buffer(int slot, size_t nfloats);
void lumen_gemm_run(const lumen_gemm_op *op, int isa, int64_t m0, int64_t m1, int64_t n0,
                    int64_t n1, int64_t K);
// The same product for operands already in the packed layouts, in one K block (K <= the level's
// kc; lumen_gemm_prepacked_ok): A's M rows at Ap + i * kc (kc = lumen_gemm_blocking(isa).kc; rows
// up to the next multiple of mr must be readable), B's columns in panels of nr, panel p at
// Bp + p * nr * K holding [k][nr] (columns past N zero). Output and epilogue from op (its a and b
// are not read). The Winograd path packs its transforms this way as it writes them.
int lumen_gemm_prepacked_ok(int isa, int64_t K);
void lumen_gemm_prepacked(const lumen_gemm_op *op, int isa, const float *Ap, const float *Bp,
                          int64_t M, int64_t N, int64_t K);
// Splits an M x N output among tasks (over M or N in units of the tile), sets [m0,m1) x [n0,n1).
void lumen_gemm_split(int isa, int64_t M, int64_t N, int task, int ntasks, int64_t *m0,
                      int64_t *m1, int64_t *n0, int64_t *n1);

// Converts n weights (f32, f16 or bf16) to f32 with the given level's vector code.
void lumen_cvt_row(int isa, const void *p, int dtype, int64_t n, float *o);
// A convolution path's switch (0 off, 1 where it is faster, 2 wherever it can run): the value in
// force, read once from the environment variable `env` ("0", "1" or "2"; anything else: 1).
// lumen_conv_mode_set stores `mode` (outside 0-2: 1) and returns it.
int lumen_conv_mode_get(int *now, const char *env);
int lumen_conv_mode_set(int *now, int mode);
// Convolutions with fewer output channels stay f32 when bf16 compute is on (see lumen_conv2d_ex);
// those with more run the bf16 GEMM, never the (f32) direct kernel.
#define LUMEN_CONV_BF16_MIN_O 192
// Direct 3x3 stride-1 "same" convolution (conv_direct.c): whether it takes this call (geometry,
// level, LUMEN_CONV_DIRECT and bf16 compute), and the call.
int lumen_conv3x3_direct_takes(int isa, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH,
                               int64_t KW, int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                               int64_t OH, int64_t OW);
void lumen_conv3x3_direct(int isa, const float *x, int64_t batch, int64_t C, int64_t H, int64_t W,
                          const void *w, int wdtype, const float *bias, float *y, int64_t O,
                          const lumen_conv_epilogue *ep, int task, int ntasks);

#endif
