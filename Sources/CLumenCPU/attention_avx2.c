// The AVX2 attention kernel, vectorised along the query rows like attention_avx512.c: a block
// of 64 queries is eight 8-lane vectors; the scores are computed transposed, S^T[key][query] =
// K · Q^T, in tiles of 6 keys × 2 query vectors (12 accumulators, 2 loads and a broadcast: 15 of
// the 16 ymm registers), keys broadcast from K's rows in place; the online softmax runs down the
// keys with vertical vector operations only (each query's maximum, correction and sum are lanes);
// P·V accumulates O^T[d][query] += V[key][d] · P^T[key][query] in tiles of 6 head dims × 2 query
// vectors. Q^T and the output go through 8x8 register transposes. (The kernel it replaces ran
// 6 query rows × 16 keys with per-row horizontal reductions and scalar bookkeeping: 72–85% of
// the FMA peak on one thread at SD's shapes.)
#include <stdlib.h>
#include <math.h>
#include "gemm_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { QB = 64, QV = QB / 8, KB_LONG = 64, KB_MAX = 128 };

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// 2^x for the softmax's x = y - max(y) <= 0, where y are the scores in base-2 units (the query
// rows are scaled by log2(e) with the softmax scale, so e^(s - max s) = 2^(y - max y)). x is clamped
// at -126 (2^-126 is the smallest normal; a softmax row's sum is at least 1, so nothing below about
// 2^-25 changes it). The integer part n comes from adding 1.5 * 2^23 + 127, which leaves n + 127 in
// the low bits of t (shifted into the exponent field: 2^n); the fraction f = x - n in [-1/2, 1/2]
// goes through a degree-6 polynomial (coefficients fitted to 2^f's relative error in float64; float32
// evaluation measured at 7.9e-8 relative on a 200001-point grid). 13 vector operations with the
// subtraction of the maximum, where a general e^x (clamps both ways, floor, split ln 2, conversion)
// took 19.
AVX2 static inline __m256 exp2_nonpos8(__m256 x) {
    const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);
    x = _mm256_max_ps(_mm256_set1_ps(-126.0f), x);  // NaN stays NaN
    __m256 t = _mm256_add_ps(x, magic);
    __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(t, magic));
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.5353361959569156e-4f), f, _mm256_set1_ps(1.3398875016719103e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.61843691766262e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5503323674201965e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022647738456726e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471824645996e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

AVX2 static inline __m256i lane_mask(int64_t lanes) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(lanes < 0 ? 0 : lanes > 8 ? 8 : lanes)), idx);
}

/// The one tile both products use: out[r][0..16] (+)= Σ_t a[r·ar + t·at] · b[t][0..16] for r < R,
/// t < n (b and out rows QB apart; `accumulate` adds to out, else overwrites it). Q·K^T:
/// a = K (ar = ldk, at = 1), b = Q^T, t over the head dims; P·V: a = V (ar = 1, at = ldv),
/// b = P^T, t over the keys. Inlined with constant strides, R and `accumulate`.
AVX2 static inline __attribute__((always_inline)) void tile_t(const float *b, const float *a, int64_t ar,
                                                              int64_t at, int64_t n, float *out, const int R,
                                                              const int accumulate) {
    __m256 acc[6][2];
    for (int r = 0; r < R; r++) {
        acc[r][0] = accumulate ? _mm256_load_ps(out + r * QB) : _mm256_setzero_ps();
        acc[r][1] = accumulate ? _mm256_load_ps(out + r * QB + 8) : _mm256_setzero_ps();
    }
    for (int64_t t = 0; t < n; t++) {
        const __m256 b0 = _mm256_load_ps(b + t * QB), b1 = _mm256_load_ps(b + t * QB + 8);
        for (int r = 0; r < R; r++) {
            const __m256 x = _mm256_broadcast_ss(a + r * ar + t * at);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++) {
        _mm256_store_ps(out + r * QB, acc[r][0]);
        _mm256_store_ps(out + r * QB + 8, acc[r][1]);
    }
}

/// st[r][c0 .. c0+16] = Σ_d K[r][d] · qt[d][c0 .. c0+16] for r < R (K rows ldk apart; st rows QB).
AVX2 static inline __attribute__((always_inline)) void qk_t(const float *qt, const float *kr, int64_t ldk,
                                                            int64_t Dh, float *st, const int R) {
    tile_t(qt, kr, ldk, 1, Dh, st, R, 0);
}

/// ot[r][0..16] += Σ_j V[j][r] · st[j][0..16] for r < R, j < nk (V rows ldv apart; ot, st rows QB).
AVX2 static inline __attribute__((always_inline)) void pv_t(const float *st, const float *vr, int64_t ldv,
                                                            int64_t nk, float *ot, const int R) {
    tile_t(st, vr, 1, ldv, nk, ot, R, 1);
}

/// S^T for keys [0, nk) of the block and the query vectors [0, 2·pairs).
AVX2 static void qk_block(const float *qt, const float *kr, int64_t ldk, int64_t Dh, float *st, int64_t nk, int pairs) {
    for (int c = 0; c < 2 * pairs; c += 2) {
        int64_t j = 0;
        for (; j + 6 <= nk; j += 6) qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 6);
        switch (nk - j) {
        case 5: qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 5); break;
        case 4: qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 4); break;
        case 3: qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 3); break;
        case 2: qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 2); break;
        case 1: qk_t(qt + 8 * c, kr + j * ldk, ldk, Dh, st + j * QB + 8 * c, 1); break;
        default: break;
        }
    }
}

AVX2 static void pv_block(const float *st, const float *vr, int64_t ldv, int64_t nk, float *ot, int64_t Dh, int pairs) {
    for (int c = 0; c < 2 * pairs; c += 2) {
        int64_t d = 0;
        for (; d + 6 <= Dh; d += 6) pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 6);
        switch (Dh - d) {
        case 5: pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 5); break;
        case 4: pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 4); break;
        case 3: pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 3); break;
        case 2: pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 2); break;
        case 1: pv_t(st + 8 * c, vr + d, ldv, nk, ot + d * QB + 8 * c, 1); break;
        default: break;
        }
    }
}

static int key_block_now = 0;  // 0: not read yet

static int key_block_valid(int keys) { return keys >= 8 && keys <= KB_MAX ? keys : KB_LONG; }

int lumen_cpu_set_attention_key_block(int keys) {
    keys = key_block_valid(keys);
    __atomic_store_n(&key_block_now, keys, __ATOMIC_RELAXED);
    return keys;
}

static int64_t key_block(void) {
    int keys = __atomic_load_n(&key_block_now, __ATOMIC_RELAXED);
    if (keys == 0) {
        const char *e = getenv("LUMEN_ATTN_KEY_BLOCK");
        keys = key_block_valid(e ? atoi(e) : 0);
        __atomic_store_n(&key_block_now, keys, __ATOMIC_RELAXED);
    }
    return keys;
}

typedef struct {
    float *qt, *st, *ot;
    int64_t dh;
} scratch_avx2;

static _Thread_local scratch_avx2 sc;

static int ensure(int64_t dh) {
    if (sc.dh >= dh) return 1;
    free(sc.qt); free(sc.st); free(sc.ot);
    sc.qt = aligned_alloc(64, (size_t)(dh * QB * 4));
    sc.st = aligned_alloc(64, (size_t)(KB_MAX * QB * 4));
    sc.ot = aligned_alloc(64, (size_t)(dh * QB * 4));
    sc.dh = (sc.qt && sc.st && sc.ot) ? dh : 0;
    return sc.dh != 0;
}

AVX2 int lumen_attention_avx2(const float *q, int64_t ldq, const float *k, int64_t ldk,
                              const float *v, int64_t ldv, float *out, int64_t ldo,
                              int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                              float scale, int causal, int task, int ntasks) {
    if (!ensure(Dh)) return -1;
    float *qt = sc.qt, *st = sc.st, *ot = sc.ot;
    const float scale2 = scale * 1.44269504088896341f;  // scores in base-2 units: see exp2_nonpos8
    // A short key sequence (cross-attention's 77 text tokens) in one block; longer ones in blocks
    // of 64 keys (a block's S^T is 16 KiB: with 128 keys it would fill a Zen 3's 32 KiB L1; 128
    // measured 2% faster on a Zen 5's 48 KiB, 48 and 32 1% and 3% slower) or key_block()'s.
    const int64_t KB = Lk <= KB_MAX ? Lk : key_block();
    const int64_t qblocks = (Lq + QB - 1) / QB, items = B * heads * qblocks;
    const int64_t begin = items * task / ntasks, end = items * (task + 1) / ntasks;
    const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(-INFINITY), one = _mm256_set1_ps(1.0f);
    const __m256 vscale = _mm256_set1_ps(scale2);
    for (int64_t item = begin; item < end; item++) {
        const int64_t qb = item % qblocks, h = (item / qblocks) % heads, b = item / (qblocks * heads);
        const int64_t q0 = qb * QB, nq = Lq - q0 < QB ? Lq - q0 : QB;
        const int pairs = (int)((nq + 15) / 16);  // query vector pairs holding the block's rows
        const int nv = 2 * pairs;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        // qt[d][i] = Q[q0 + i][d] · scale2 (zero past nq) by 8x8 transposes; ot = 0
        for (int64_t g = 0; g < 8 * nv; g += 8)
            for (int64_t d0 = 0; d0 < Dh; d0 += 8) {
                const int64_t w = Dh - d0 < 8 ? Dh - d0 : 8;
                const __m256i lanes = lane_mask(w);
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = g + i < nq ? _mm256_mul_ps(_mm256_maskload_ps(qbase + (q0 + g + i) * ldq + d0, lanes), vscale)
                                      : _mm256_setzero_ps();
                lumen_tr8_avx2(r);
                for (int64_t j = 0; j < w; j++) _mm256_store_ps(qt + (d0 + j) * QB + g, r[j]);
            }
        for (int64_t d = 0; d < Dh; d++)
            for (int c = 0; c < nv; c++) _mm256_store_ps(ot + d * QB + 8 * c, _mm256_setzero_ps());
        __m256 m[QV], l[QV], row[QV];
        for (int c = 0; c < nv; c++) {
            m[c] = ninf;
            l[c] = _mm256_setzero_ps();
            row[c] = _mm256_add_ps(_mm256_set1_ps((float)(q0 + 8 * c)), lane);  // each lane's query index
        }
        // the next item's rows, prefetched during this block's first softmax
        const lumen_attn_next next = lumen_attn_next_rows(item, end, qblocks, heads, QB, Lq, Dh, q, ldq, out, ldo);
        const int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += KB) {
            const int64_t nk = kend - k0 < KB ? kend - k0 : KB;
            qk_block(qt, kbase + k0 * ldk, ldk, Dh, st, nk, pairs);
            int rescale = 0;
            __m256 corr[QV];
            for (int c = 0; c < nv; c++) {
                for (int64_t i = 8 * c; k0 == 0 && i < 8 * c + 8; i++) lumen_attn_prefetch_row(next, i, Dh, ldq, ldo);
                // Causal: key k0 + j is visible to the lanes whose query index is >= k0 + j. The
                // maximum is over visible keys only (a hidden key scoring far above them would
                // push their weights down to the exponential's floor).
                __m256 mx = ninf;
                for (int64_t j = 0; j < nk; j++) {
                    __m256 sv = _mm256_load_ps(st + j * QB + 8 * c);
                    if (causal)
                        sv = _mm256_blendv_ps(ninf, sv, _mm256_cmp_ps(_mm256_set1_ps((float)(k0 + j)), row[c], _CMP_LE_OQ));
                    mx = _mm256_max_ps(sv, mx);
                }
                const __m256 mn = _mm256_max_ps(m[c], mx);
                // e^0 = 1 where the maximum stands; otherwise 2^(m - m_new) (2^-126 from the
                // clamp where m = -inf: it multiplies l = 0 and o = 0)
                const __m256 moved = _mm256_cmp_ps(mn, m[c], _CMP_NEQ_OQ);
                corr[c] = _mm256_blendv_ps(one, exp2_nonpos8(_mm256_sub_ps(m[c], mn)), moved);
                rescale |= _mm256_movemask_ps(moved) != 0;
                __m256 sum = _mm256_setzero_ps();
                for (int64_t j = 0; j < nk; j++) {
                    __m256 p = exp2_nonpos8(_mm256_sub_ps(_mm256_load_ps(st + j * QB + 8 * c), mn));
                    if (causal)
                        p = _mm256_and_ps(p, _mm256_cmp_ps(_mm256_set1_ps((float)(k0 + j)), row[c], _CMP_LE_OQ));
                    _mm256_store_ps(st + j * QB + 8 * c, p);
                    sum = _mm256_add_ps(sum, p);
                }
                l[c] = _mm256_fmadd_ps(l[c], corr[c], sum);
                m[c] = mn;
            }
            if (rescale)
                for (int64_t d = 0; d < Dh; d++)
                    for (int c = 0; c < nv; c++)
                        _mm256_store_ps(ot + d * QB + 8 * c, _mm256_mul_ps(corr[c], _mm256_load_ps(ot + d * QB + 8 * c)));
            pv_block(st, vbase + k0 * ldv, ldv, nk, ot, Dh, pairs);
        }
        // out[q0 + i][d] = ot[d][i] / l[i], by 8x8 transposes
        for (int c = 0; c < nv; c++) l[c] = _mm256_div_ps(one, l[c]);
        for (int64_t d0 = 0; d0 < Dh; d0 += 8) {
            const int64_t w = Dh - d0 < 8 ? Dh - d0 : 8;
            const __m256i lanes = lane_mask(w);
            for (int c = 0; c < nv && 8 * c < nq; c++) {
                __m256 r[8];
                for (int j = 0; j < 8; j++)
                    r[j] = j < w ? _mm256_mul_ps(l[c], _mm256_load_ps(ot + (d0 + j) * QB + 8 * c)) : _mm256_setzero_ps();
                lumen_tr8_avx2(r);
                for (int64_t i = 0; i < 8 && 8 * c + i < nq; i++)
                    _mm256_maskstore_ps(out + (b * Lq + q0 + 8 * c + i) * ldo + h * Dh + d0, lanes, r[i]);
            }
        }
    }
    return 0;
}
#else
int lumen_cpu_set_attention_key_block(int keys) {
    (void)keys;
    return 64;
}
#endif
