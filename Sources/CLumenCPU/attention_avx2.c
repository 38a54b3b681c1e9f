// The AVX2 attention kernel: attention_avx512.c's blocking with 8-lane vectors. Q·Kᵀ runs 6
// query rows × 16 keys at a time. P·V reads V rows from a packed copy padded with zeros to whole
// vectors (so its inner loop has no masked loads, whose masks took the registers the accumulators
// needed), in tiles of at most 12 accumulators: 3 rows × 3 vectors, 6 × 2 or 12 × 1 (4 × 3 used all
// 16 ymm registers and clang spilled an accumulator to the stack in every step: P·V ran at 2/3 of
// Q·Kᵀ's rate). Rows are padded to a multiple of 12 so every grouping tiles the block, and a query
// block is 72 rows, so whole blocks have no padding rows. K^T and V are packed once per head and
// shared by its query blocks; the softmax runs over whole vectors without masks where it can.
#include <stdlib.h>
#include "gemm_internal.h"
#include "vecmath.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { QB = 72, KB_MAX = 128, ROWS_MAX = 72 };

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

/// kt[d][j] = K[k0 + j][d] for d < Dh, j < nk, zero for nk <= j < KB: 8x8 register transposes for
/// whole 8x8 tiles (the scalar gather it replaces cost 10-20% of a block at Dh 40), scalar edges.
AVX2 static void pack_kt(const float *kbase, int64_t ldk, int64_t k0, int64_t nk, int64_t Dh, float *kt, int64_t KB) {
    const int64_t d8 = Dh / 8 * 8, j8 = nk / 8 * 8;
    for (int64_t d = 0; d < d8; d += 8)
        for (int64_t j = 0; j < j8; j += 8) {
            __m256 r[8];
            for (int t = 0; t < 8; t++) r[t] = _mm256_loadu_ps(kbase + (k0 + j + t) * ldk + d);
            lumen_tr8_avx2(r);
            for (int t = 0; t < 8; t++) _mm256_store_ps(kt + (d + t) * KB + j, r[t]);
        }
    for (int64_t d = 0; d < Dh; d++) {
        float *row = kt + d * KB;
        for (int64_t j = d < d8 ? j8 : 0; j < nk; j++) row[j] = kbase[(k0 + j) * ldk + d];
        for (int64_t j = nk; j < KB; j++) row[j] = 0.0f;
    }
}

/// vp[j][d] = V[k0 + j][d] for j < nk, d < Dh, zero for Dh <= d < dhp (whole vectors).
AVX2 static void pack_v(const float *vbase, int64_t ldv, int64_t k0, int64_t nk, int64_t Dh, int64_t dhp, float *vp) {
    for (int64_t j = 0; j < nk; j++) {
        const float *src = vbase + (k0 + j) * ldv;
        float *dst = vp + j * dhp;
        int64_t d = 0;
        for (; d + 8 <= Dh; d += 8) _mm256_store_ps(dst + d, _mm256_loadu_ps(src + d));
        for (; d < dhp; d++) dst[d] = d < Dh ? src[d] : 0.0f;
    }
}

/// S[r0..r0+6][c0..c0+16] = qs[r0..r0+6] · kt[:, c0..c0+16].
AVX2 static inline void qk_6x16(const float *qs, int64_t dh, const float *kt, float *s, int r0, int c0, int64_t KB) {
    __m256 acc[6][2];
    for (int r = 0; r < 6; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *q = qs + (int64_t)r0 * dh;
    for (int64_t d = 0; d < dh; d++) {
        __m256 b0 = _mm256_load_ps(kt + d * KB + c0), b1 = _mm256_load_ps(kt + d * KB + c0 + 8);
        for (int r = 0; r < 6; r++) {
            __m256 a = _mm256_broadcast_ss(q + r * dh + d);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < 6; r++) {
        _mm256_store_ps(s + (r0 + r) * KB + c0, acc[r][0]);
        _mm256_store_ps(s + (r0 + r) * KB + c0 + 8, acc[r][1]);
    }
}

/// o[r0..r0+R][d0 .. d0+8·NV] += P[r0..r0+R][0..nk] · Vp[0..nk][d0 ..] (Vp: packed, ld dhp); with
/// `fresh`, = instead of += (o not read).
AVX2 static inline __attribute__((always_inline)) void pv_tile(const float *p, const float *vp, int64_t dhp,
                                                               int64_t nk, float *o, int r0, int64_t d0,
                                                               const int R, const int NV, int64_t KB,
                                                               int fresh) {
    __m256 acc[12][3];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++)
            acc[r][c] = fresh ? _mm256_setzero_ps() : _mm256_load_ps(o + (r0 + r) * dhp + d0 + 8 * c);
    for (int64_t j = 0; j < nk; j++) {
        __m256 vv[3];
        for (int c = 0; c < NV; c++) vv[c] = _mm256_load_ps(vp + j * dhp + d0 + 8 * c);
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(p + (r0 + r) * KB + j);
            for (int c = 0; c < NV; c++) acc[r][c] = _mm256_fmadd_ps(a, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) _mm256_store_ps(o + (r0 + r) * dhp + d0 + 8 * c, acc[r][c]);
}

/// o[0..rows][0..dhp] (+)= P[0..rows][0..nk] · Vp: the dhp/8 vectors of a row in chunks of 3 while
/// more than 4 remain, then 3, 2+2, 2 or 1.
AVX2 static void pv_block(const float *p, const float *vp, int64_t dhp, int64_t nk, float *o, int64_t rows, int64_t KB,
                          int fresh) {
    int64_t nvec = dhp / 8, c0 = 0;
    while (nvec - c0 > 0) {
        int64_t left = nvec - c0;
        int nv = left > 4 || left == 3 ? 3 : left >= 2 ? 2 : 1;
        if (nv == 3)
            for (int64_t r = 0; r < rows; r += 3) pv_tile(p, vp, dhp, nk, o, (int)r, c0 * 8, 3, 3, KB, fresh);
        else if (nv == 2)
            for (int64_t r = 0; r < rows; r += 6) pv_tile(p, vp, dhp, nk, o, (int)r, c0 * 8, 6, 2, KB, fresh);
        else
            for (int64_t r = 0; r < rows; r += 12) pv_tile(p, vp, dhp, nk, o, (int)r, c0 * 8, 12, 1, KB, fresh);
        c0 += nv;
    }
}

typedef struct {
    float *qs, *s, *o;
    int64_t dh;
    // One head's K^T blocks and padded V rows, packed once and shared by its query blocks.
    float *kv;
    size_t kv_cap;
} scratch_avx2;

static _Thread_local scratch_avx2 sc;

static int ensure(int64_t dh) {
    if (sc.dh >= dh) return 1;
    free(sc.qs); free(sc.s); free(sc.o);
    int64_t dhp = (dh + 7) / 8 * 8 + 16;  // room for a 24-lane chunk past the last full vector
    sc.qs = aligned_alloc(64, (size_t)(ROWS_MAX * dhp * 4));
    sc.s = aligned_alloc(64, (size_t)(ROWS_MAX * KB_MAX * 4));
    sc.o = aligned_alloc(64, (size_t)(ROWS_MAX * dhp * 4));
    sc.dh = (sc.qs && sc.s && sc.o) ? dh : 0;
    return sc.dh != 0;
}

static float *ensure_kv(size_t floats) {
    if (sc.kv_cap >= floats) return sc.kv;
    free(sc.kv);
    sc.kv = aligned_alloc(64, (floats * 4 + 63) / 64 * 64);
    sc.kv_cap = sc.kv ? floats : 0;
    return sc.kv;
}

AVX2 int lumen_attention_avx2(const float *q, int64_t ldq, const float *k, int64_t ldk,
                              const float *v, int64_t ldv, float *out, int64_t ldo,
                              int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                              float scale, int causal, int task, int ntasks) {
    if (!ensure(Dh)) return -1;
    const int64_t dhp = (Dh + 7) / 8 * 8;
    float *qs = sc.qs, *s = sc.s, *o = sc.o;
    // scores in base-2 units: see exp2_nonpos8
    const float scale2 = scale * 1.44269504088896341f;
    // Key blocks of 64; a short key sequence (cross-attention's 77 text tokens) in one block of
    // whole 16-key groups instead of 64 + a remainder, whose second pass over the rows' softmax
    // bookkeeping, output rescaling and P·V loads cost more than its keys' work.
    const int64_t KB = Lk <= KB_MAX ? (Lk + 15) / 16 * 16 : 64;
    // K^T blocks [Lk/KB][Dh][KB] and V rows [Lk][dhp] of the head in hand (-1: none yet), packed
    // once per head instead of once per query block (re-reading K and V from memory for every
    // 72 queries cost 4-5% at Lk 4096); above 8 MiB (the VAE's 512-wide single head) one key
    // block at a time, as before.
    const int64_t nkb = (Lk + KB - 1) / KB;
    const int per_head = nkb * KB * (Dh + dhp) <= ((int64_t)2 << 20);
    const int64_t slots = per_head ? nkb : 1;
    float *kv = ensure_kv((size_t)(slots * KB * (Dh + dhp)));
    if (!kv) return -1;
    float *kt_all = kv, *vp_all = kv + slots * KB * Dh;
    int64_t packed = -1;
    int64_t qblocks = (Lq + QB - 1) / QB;
    int64_t items = B * heads * qblocks;
    int64_t begin = items * task / ntasks, end = items * (task + 1) / ntasks;
    for (int64_t item = begin; item < end; item++) {
        int64_t qb = item % qblocks, h = (item / qblocks) % heads, b = item / (qblocks * heads);
        int64_t q0 = qb * QB, nq = Lq - q0 < QB ? Lq - q0 : QB;
        int64_t rows = (nq + 11) / 12 * 12;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        if (per_head && packed != b * heads + h) {
            const int64_t kend_all = causal ? (Lq < Lk ? Lq : Lk) : Lk;  // keys any query block reads
            for (int64_t k0 = 0; k0 < kend_all; k0 += KB) {
                const int64_t nk = kend_all - k0 < KB ? kend_all - k0 : KB;
                pack_kt(kbase, ldk, k0, nk, Dh, kt_all + (k0 / KB) * Dh * KB, KB);
                pack_v(vbase, ldv, k0, nk, Dh, dhp, vp_all + k0 * dhp);
            }
            packed = b * heads + h;
        }
        float m[ROWS_MAX], l[ROWS_MAX];
        const int64_t d8 = Dh / 8 * 8;
        const __m256 vscale = _mm256_set1_ps(scale2);
        for (int64_t i = 0; i < rows; i++) {
            float *dst = qs + i * Dh;
            if (i < nq) {
                const float *src = qbase + (q0 + i) * ldq;
                int64_t d = 0;
                for (; d < d8; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_loadu_ps(src + d), vscale));
                for (; d < Dh; d++) dst[d] = src[d] * scale2;
            } else {
                for (int64_t d = 0; d < Dh; d++) dst[d] = 0.0f;
            }
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        // The next item's query rows and output rows, fetched into the cache a row at a time
        // during this block's softmax: both are strided (one head's Dh floats out of each row of
        // ldq / ldo), and reading them on demand cost 10-15% of a 77-key block.
        const float *pf_q = NULL;
        float *pf_o = NULL;
        int64_t pf_n = 0;
        if (item + 1 < end) {
            int64_t nqb = (item + 1) % qblocks, nh = ((item + 1) / qblocks) % heads, nb = (item + 1) / (qblocks * heads);
            pf_q = q + nb * Lq * ldq + nh * Dh + nqb * QB * ldq;
            pf_o = out + (nb * Lq + nqb * QB) * ldo + nh * Dh;
            pf_n = Lq - nqb * QB < QB ? Lq - nqb * QB : QB;
        }
        int fresh = 1;  // o not written yet: the first P·V stores instead of adding
        int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += KB) {
            int64_t nk = kend - k0 < KB ? kend - k0 : KB;
            if (!per_head) {
                pack_kt(kbase, ldk, k0, nk, Dh, kt_all, KB);
                pack_v(vbase, ldv, k0, nk, Dh, dhp, vp_all);
            }
            const float *kt = per_head ? kt_all + (k0 / KB) * Dh * KB : kt_all;
            const float *vpb = per_head ? vp_all + k0 * dhp : vp_all;
            int cols = (int)((nk + 15) / 16);
            for (int64_t g = 0; g < rows / 6; g++)
                for (int c = 0; c < cols; c++) qk_6x16(qs, Dh, kt, s, (int)(g * 6), c * 16, KB);
            int64_t pvKeys = 0;
            for (int64_t i = 0; i < rows; i++) {
                float *srow = s + i * KB;
                if (k0 == 0 && i < pf_n) {
                    for (int64_t d = 0; d < Dh; d += 16) {
                        _mm_prefetch((const char *)(pf_q + i * ldq + d), _MM_HINT_T0);
                        _mm_prefetch((const char *)(pf_o + i * ldo + d), _MM_HINT_T0);
                    }
                    _mm_prefetch((const char *)(pf_q + i * ldq + Dh - 1), _MM_HINT_T0);
                    _mm_prefetch((const char *)(pf_o + i * ldo + Dh - 1), _MM_HINT_T0);
                }
                int64_t valid = i < nq ? nk : 0;
                if (causal && i < nq) {
                    int64_t lim = q0 + i - k0 + 1;
                    if (lim < valid) valid = lim < 0 ? 0 : lim;
                }
                if (valid <= 0) {
                    for (int64_t j = 0; j < KB; j++) srow[j] = 0.0f;
                    continue;
                }
                if (valid > pvKeys) pvKeys = valid;
                // The block maximum over the valid lanes, keys [0, jn) in whole vectors: without a
                // causal mask every row's keys are the block's nk, and only the last vector can be
                // partial; with one, the rows differ, and lanes up to KB are written (zero past
                // `valid`) because P·V reads up to the longest row. Masks only past the last
                // whole vector of valid keys.
                const int64_t jn = causal ? KB : (valid + 7) / 8 * 8;
                // vectors [0, jw) are whole (every lane valid); only [jw, jn) need masks
                const int64_t jw = valid / 8 * 8;
                const __m256 ninf = _mm256_set1_ps(-INFINITY);
                __m256 mx = ninf;
                for (int64_t j = 0; j < jw; j += 8) mx = _mm256_max_ps(_mm256_load_ps(srow + j), mx);
                for (int64_t j = jw; j < jn; j += 8) {
                    __m256 keep = _mm256_castsi256_ps(lane_mask(valid - j));
                    mx = _mm256_max_ps(_mm256_blendv_ps(ninf, _mm256_load_ps(srow + j), keep), mx);
                }
                // max(v, acc) keeps acc where v is NaN, so no lane of mx is NaN and the order of
                // the maxima below does not matter
                __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
                h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                h = _mm_max_ss(h, _mm_movehdup_ps(h));
                const float bm = _mm_cvtss_f32(h);
                float mnew = m[i] > bm ? m[i] : bm;
                // e^0 is exactly 1: no exponential where the running maximum stands
                float corr = m[i] == -INFINITY ? 0.0f : m[i] == mnew ? 1.0f : lumen_expf((m[i] - mnew) * 0.693147180559945309f);
                __m256 mn = _mm256_set1_ps(mnew), sum = _mm256_setzero_ps();
                for (int64_t j = 0; j < jw; j += 8) {
                    __m256 pv = exp2_nonpos8(_mm256_sub_ps(_mm256_load_ps(srow + j), mn));
                    _mm256_store_ps(srow + j, pv);
                    sum = _mm256_add_ps(sum, pv);
                }
                for (int64_t j = jw; j < jn; j += 8) {
                    __m256 keep = _mm256_castsi256_ps(lane_mask(valid - j));
                    __m256 pv = _mm256_and_ps(keep, exp2_nonpos8(_mm256_sub_ps(_mm256_load_ps(srow + j), mn)));
                    _mm256_store_ps(srow + j, pv);
                    sum = _mm256_add_ps(sum, pv);
                }
                __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
                t4 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
                t4 = _mm_add_ss(t4, _mm_movehdup_ps(t4));
                const float total = _mm_cvtss_f32(t4);
                l[i] = l[i] * corr + total;
                m[i] = mnew;
                if (corr != 1.0f && corr != 0.0f && !fresh) {  // corr 0: the row's first keys
                    __m256 cv = _mm256_set1_ps(corr);
                    for (int64_t d = 0; d < dhp; d += 8)
                        _mm256_store_ps(o + i * dhp + d, _mm256_mul_ps(cv, _mm256_load_ps(o + i * dhp + d)));
                }
            }
            if (pvKeys == 0) continue;
            pv_block(s, vpb, dhp, pvKeys, o, rows, KB, fresh);
            fresh = 0;
        }
        if (fresh)
            for (int64_t i = 0; i < rows * dhp; i++) o[i] = 0.0f;
        for (int64_t i = 0; i < nq; i++) {
            const float inv = 1.0f / l[i];
            const __m256 vinv = _mm256_set1_ps(inv);
            float *dst = out + (b * Lq + q0 + i) * ldo + h * Dh;
            int64_t d = 0;
            for (; d < d8; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_load_ps(o + i * dhp + d), vinv));
            for (; d < Dh; d++) dst[d] = o[i * dhp + d] * inv;
        }
    }
    return 0;
}
#endif
