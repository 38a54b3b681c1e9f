// The AVX-512 attention kernel, vectorised along the query rows: a block of 64 queries is four
// 16-lane vectors, and the scores are computed transposed, S^T[key][query] = K · Q^T, 6 keys ×
// 4 query vectors at a time (keys broadcast from K's rows in place). The online softmax then
// runs down the keys with vertical vector operations only: every row's maximum, correction and
// sum are lanes of 4 vectors (no horizontal reductions, no per-row scalar bookkeeping), and P·V
// accumulates O^T[d][query] += V[key][d] · P^T[key][query], 6 head dims × 4 query vectors at a
// time, so a head of 40 dims is 6 + 6 + ... + 4 dims, not 48 lanes of which 8 are padding.
#include <stdlib.h>
#include <math.h>
#include "gemm_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { QB = 64, KB_MAX = 128 };

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))

/// 2^x for x <= 0 (attention_avx2.c's exp2_nonpos8 on 16 lanes: the same clamp, shifter and fit).
AVX512 static inline __m512 exp2_nonpos16(__m512 x) {
    const __m512 magic = _mm512_set1_ps(12582912.0f + 127.0f);
    x = _mm512_max_ps(_mm512_set1_ps(-126.0f), x);  // NaN stays NaN
    __m512 t = _mm512_add_ps(x, magic);
    __m512 f = _mm512_sub_ps(x, _mm512_sub_ps(t, magic));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.5353361959569156e-4f), f, _mm512_set1_ps(1.3398875016719103e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.61843691766262e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503323674201965e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022647738456726e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471824645996e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)));
}

/// The one tile both products use: out[r][0..64] (+)= Σ_t a[r·ar + t·at] · b[t][0..64] for r < R,
/// t < n (b and out rows QB apart; `accumulate` adds to out, else overwrites it). Q·K^T:
/// a = K (ar = ldk, at = 1), b = Q^T, t over the head dims; P·V: a = V (ar = 1, at = ldv),
/// b = P^T, t over the keys. Inlined with constant strides, R and `accumulate`.
AVX512 static inline __attribute__((always_inline)) void tile_t(const float *b, const float *a, int64_t ar,
                                                                int64_t at, int64_t n, float *out, const int R,
                                                                const int accumulate) {
    __m512 acc[6][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++)
            acc[r][c] = accumulate ? _mm512_load_ps(out + r * QB + 16 * c) : _mm512_setzero_ps();
    for (int64_t t = 0; t < n; t++) {
        __m512 bv[4];
        for (int c = 0; c < 4; c++) bv[c] = _mm512_load_ps(b + t * QB + 16 * c);
        for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(a[r * ar + t * at]);
            for (int c = 0; c < 4; c++) acc[r][c] = _mm512_fmadd_ps(x, bv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) _mm512_store_ps(out + r * QB + 16 * c, acc[r][c]);
}

/// st[j0 + r][0..64] = Σ_d K[j0 + r][d] · qt[d][0..64] for r < R (K rows ldk apart).
AVX512 static inline __attribute__((always_inline)) void qk_t(const float *qt, const float *kr, int64_t ldk,
                                                              int64_t Dh, float *st, const int R) {
    tile_t(qt, kr, ldk, 1, Dh, st, R, 0);
}

/// ot[d0 + r][0..64] += Σ_j V[j][d0 + r] · st[j][0..64] for r < R, j < nk (V rows ldv apart).
AVX512 static inline __attribute__((always_inline)) void pv_t(const float *st, const float *vr, int64_t ldv,
                                                              int64_t nk, float *ot, const int R) {
    tile_t(st, vr, 1, ldv, nk, ot, R, 1);
}

AVX512 static void qk_block(const float *qt, const float *kr, int64_t ldk, int64_t Dh, float *st, int64_t nk) {
    int64_t j = 0;
    for (; j + 6 <= nk; j += 6) qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 6);
    switch (nk - j) {
    case 5: qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 5); break;
    case 4: qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 4); break;
    case 3: qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 3); break;
    case 2: qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 2); break;
    case 1: qk_t(qt, kr + j * ldk, ldk, Dh, st + j * QB, 1); break;
    default: break;
    }
}

AVX512 static void pv_block(const float *st, const float *vr, int64_t ldv, int64_t nk, float *ot, int64_t Dh) {
    int64_t d = 0;
    for (; d + 6 <= Dh; d += 6) pv_t(st, vr + d, ldv, nk, ot + d * QB, 6);
    switch (Dh - d) {
    case 5: pv_t(st, vr + d, ldv, nk, ot + d * QB, 5); break;
    case 4: pv_t(st, vr + d, ldv, nk, ot + d * QB, 4); break;
    case 3: pv_t(st, vr + d, ldv, nk, ot + d * QB, 3); break;
    case 2: pv_t(st, vr + d, ldv, nk, ot + d * QB, 2); break;
    case 1: pv_t(st, vr + d, ldv, nk, ot + d * QB, 1); break;
    default: break;
    }
}

typedef struct {
    float *qt, *st, *ot;
    int64_t dh;
} scratch512;

static _Thread_local scratch512 sc;

static int ensure(int64_t dh) {
    if (sc.dh >= dh) return 1;
    free(sc.qt); free(sc.st); free(sc.ot);
    sc.qt = aligned_alloc(64, (size_t)(dh * QB * 4));
    sc.st = aligned_alloc(64, (size_t)(KB_MAX * QB * 4));
    sc.ot = aligned_alloc(64, (size_t)(dh * QB * 4));
    sc.dh = (sc.qt && sc.st && sc.ot) ? dh : 0;
    return sc.dh != 0;
}

AVX512 int lumen_attention_avx512(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                   const float *v, int64_t ldv, float *out, int64_t ldo,
                                   int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                                   float scale, int causal, int task, int ntasks) {
    if (!ensure(Dh)) return -1;
    float *qt = sc.qt, *st = sc.st, *ot = sc.ot;
    const float scale2 = scale * 1.44269504088896341f;  // scores in base-2 units: see exp2_nonpos16
    // Key blocks of 128 (a block's S^T is 32 KiB; 64 measured 3% slower at 4096 keys), so a short
    // key sequence (cross-attention's 77 text tokens) is one block.
    const int64_t KB = Lk <= KB_MAX ? Lk : KB_MAX;
    const int64_t qblocks = (Lq + QB - 1) / QB, items = B * heads * qblocks;
    const int64_t begin = items * task / ntasks, end = items * (task + 1) / ntasks;
    const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int64_t item = begin; item < end; item++) {
        const int64_t qb = item % qblocks, h = (item / qblocks) % heads, b = item / (qblocks * heads);
        const int64_t q0 = qb * QB, nq = Lq - q0 < QB ? Lq - q0 : QB;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        // qt[d][i] = Q[q0 + i][d] · scale2, zero for the rows past nq, by 16x16 transposes (a
        // scalar copy cost a tenth of a 77-key block); ot = 0
        const __m512 vscale = _mm512_set1_ps(scale2);
        for (int64_t g = 0; g < QB; g += 16)
            for (int64_t d0 = 0; d0 < Dh; d0 += 16) {
                const int64_t w = Dh - d0 < 16 ? Dh - d0 : 16;
                const __mmask16 lanes = (__mmask16)((1u << w) - 1);
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = g + i < nq ? _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, qbase + (q0 + g + i) * ldq + d0), vscale)
                                      : _mm512_setzero_ps();
                lumen_tr16_avx512(r);
                for (int64_t j = 0; j < w; j++) _mm512_store_ps(qt + (d0 + j) * QB + g, r[j]);
            }
        for (int64_t x = 0; x < Dh * QB; x += 16) _mm512_store_ps(ot + x, _mm512_setzero_ps());
        __m512 m[4], l[4], row[4];
        for (int c = 0; c < 4; c++) {
            m[c] = ninf;
            l[c] = _mm512_setzero_ps();
            row[c] = _mm512_add_ps(_mm512_set1_ps((float)(q0 + 16 * c)), lane);  // each lane's query index
        }
        // the next item's rows, prefetched during this block's first softmax
        const lumen_attn_next next = lumen_attn_next_rows(item, end, qblocks, heads, QB, Lq, Dh, q, ldq, out, ldo);
        const int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += KB) {
            const int64_t nk = kend - k0 < KB ? kend - k0 : KB;
            qk_block(qt, kbase + k0 * ldk, ldk, Dh, st, nk);
            for (int64_t i = 0; k0 == 0 && i < next.rows; i++) lumen_attn_prefetch_row(next, i, Dh, ldq, ldo);
            // Causal: key k0 + j is visible to the lanes whose query index is >= k0 + j.
            __m512 mx[4] = {ninf, ninf, ninf, ninf};
            for (int64_t j = 0; j < nk; j++) {
                const __m512 key = _mm512_set1_ps((float)(k0 + j));
                for (int c = 0; c < 4; c++) {
                    __m512 sv = _mm512_load_ps(st + j * QB + 16 * c);
                    if (causal) sv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(key, row[c], _CMP_LE_OQ), ninf, sv);
                    mx[c] = _mm512_max_ps(sv, mx[c]);
                }
            }
            int rescale = 0;
            __m512 corr[4], mn[4], sum[4];
            for (int c = 0; c < 4; c++) {
                mn[c] = _mm512_max_ps(m[c], mx[c]);
                // e^0 = 1 where the maximum stands; otherwise 2^(m - m_new) (2^-126 from the
                // clamp where m = -inf: it multiplies l = 0 and o = 0)
                const __mmask16 moved = _mm512_cmp_ps_mask(mn[c], m[c], _CMP_NEQ_OQ);
                corr[c] = _mm512_mask_blend_ps(moved, _mm512_set1_ps(1.0f),
                                               exp2_nonpos16(_mm512_sub_ps(m[c], mn[c])));
                rescale |= moved != 0;
                sum[c] = _mm512_setzero_ps();
            }
            for (int64_t j = 0; j < nk; j++) {
                const __m512 key = _mm512_set1_ps((float)(k0 + j));
                for (int c = 0; c < 4; c++) {
                    __m512 p = exp2_nonpos16(_mm512_sub_ps(_mm512_load_ps(st + j * QB + 16 * c), mn[c]));
                    if (causal) p = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(key, row[c], _CMP_LE_OQ), p);
                    _mm512_store_ps(st + j * QB + 16 * c, p);
                    sum[c] = _mm512_add_ps(sum[c], p);
                }
            }
            for (int c = 0; c < 4; c++) {
                l[c] = _mm512_fmadd_ps(l[c], corr[c], sum[c]);
                m[c] = mn[c];
            }
            if (rescale)
                for (int64_t d = 0; d < Dh; d++)
                    for (int c = 0; c < 4; c++)
                        _mm512_store_ps(ot + d * QB + 16 * c, _mm512_mul_ps(corr[c], _mm512_load_ps(ot + d * QB + 16 * c)));
            pv_block(st, vbase + k0 * ldv, ldv, nk, ot, Dh);
        }
        // out[q0 + i][d] = ot[d][i] / l[i], by 16x16 transposes
        for (int c = 0; c < 4; c++) l[c] = _mm512_div_ps(_mm512_set1_ps(1.0f), l[c]);
        for (int64_t g = 0; g < nq; g += 16)
            for (int64_t d0 = 0; d0 < Dh; d0 += 16) {
                const int64_t w = Dh - d0 < 16 ? Dh - d0 : 16;
                const __mmask16 lanes = (__mmask16)((1u << w) - 1);
                __m512 r[16];
                for (int j = 0; j < 16; j++)
                    r[j] = j < w ? _mm512_mul_ps(l[g / 16], _mm512_load_ps(ot + (d0 + j) * QB + g)) : _mm512_setzero_ps();
                lumen_tr16_avx512(r);
                for (int64_t i = 0; i < 16 && g + i < nq; i++)
                    _mm512_mask_storeu_ps(out + (b * Lq + q0 + g + i) * ldo + h * Dh + d0, lanes, r[i]);
            }
    }
    return 0;
}
#endif
