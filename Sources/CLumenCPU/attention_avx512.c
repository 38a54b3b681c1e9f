// The AVX-512 attention kernel: the same online-softmax recurrence as attention.c, with the two
// products register-blocked like a GEMM micro-kernel. Q·Kᵀ runs 8 query rows × 32 keys at a
// time over a key block packed transposed; P·V runs 8 rows × 48 output lanes over the keys,
// reading V rows in place (masked at the head's edge).
#include <stdlib.h>
#include "lumen_cpu.h"
#include "vecmath.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { QB = 64, KB = 64 };

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))

/// e^x on 16 lanes, the same approximation as lumen_expf.
AVX512 static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                    _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/// S[r0..r0+8][c0..c0+32] = qs[r0..r0+8] · kt[:, c0..c0+32] over dh.
AVX512 static inline void qk_8x32(const float *qs, int64_t dh, const float *kt, float *s, int r0, int c0) {
    __m512 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float *q = qs + (int64_t)r0 * dh;
    for (int64_t d = 0; d < dh; d++) {
        __m512 b0 = _mm512_load_ps(kt + d * KB + c0), b1 = _mm512_load_ps(kt + d * KB + c0 + 16);
        for (int r = 0; r < 8; r++) {
            __m512 a = _mm512_set1_ps(q[r * dh + d]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < 8; r++) {
        _mm512_store_ps(s + (r0 + r) * KB + c0, acc[r][0]);
        _mm512_store_ps(s + (r0 + r) * KB + c0 + 16, acc[r][1]);
    }
}

/// o[r0..r0+8][d0 .. d0+16·NV] += P[r0..r0+8][0..nk] · V[0..nk][d0 ..], lanes past `lanes` masked.
#define PV_KERNEL(NV)                                                                                   \
    AVX512 static void pv_8x##NV(const float *p, const float *v, int64_t ldv, int64_t nk, float *o,       \
                                 int64_t ldo, int r0, int64_t d0, int64_t lanes) {                         \
        __mmask16 mask[NV];                                                                              \
        __m512 acc[8][NV];                                                                               \
        for (int c = 0; c < NV; c++) {                                                                   \
            int64_t left = lanes - 16 * c;                                                               \
            mask[c] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (left > 0 ? left : 0)) - 1);  \
            for (int r = 0; r < 8; r++) acc[r][c] = _mm512_load_ps(o + (r0 + r) * ldo + d0 + 16 * c);   \
        }                                                                                                \
        for (int64_t j = 0; j < nk; j++) {                                                               \
            __m512 vv[NV];                                                                               \
            for (int c = 0; c < NV; c++) vv[c] = _mm512_maskz_loadu_ps(mask[c], v + j * ldv + d0 + 16 * c); \
            for (int r = 0; r < 8; r++) {                                                                \
                __m512 a = _mm512_set1_ps(p[(r0 + r) * KB + j]);                                         \
                for (int c = 0; c < NV; c++) acc[r][c] = _mm512_fmadd_ps(a, vv[c], acc[r][c]);          \
            }                                                                                            \
        }                                                                                                \
        for (int c = 0; c < NV; c++)                                                                     \
            for (int r = 0; r < 8; r++) _mm512_store_ps(o + (r0 + r) * ldo + d0 + 16 * c, acc[r][c]);   \
    }
PV_KERNEL(1)
PV_KERNEL(2)
PV_KERNEL(3)

typedef struct {
    float *qs, *kt, *s, *o;
    int64_t dh;
    float *kt_all;  // one head's K^T blocks, packed once and shared by its query blocks
    size_t kt_cap;
} scratch512;

static _Thread_local scratch512 sc;

static int ensure(int64_t dh) {
    if (sc.dh >= dh) return 1;
    free(sc.qs); free(sc.kt); free(sc.s); free(sc.o);
    int64_t dhp = (dh + 15) / 16 * 16;
    sc.qs = aligned_alloc(64, (size_t)(QB * dhp * 4));
    sc.kt = aligned_alloc(64, (size_t)(dhp * KB * 4));
    sc.s = aligned_alloc(64, (size_t)(QB * KB * 4));
    sc.o = aligned_alloc(64, (size_t)(QB * dhp * 4));
    sc.dh = (sc.qs && sc.kt && sc.s && sc.o) ? dh : 0;
    return sc.dh != 0;
}

static float *ensure_kt_all(size_t floats) {
    if (sc.kt_cap >= floats) return sc.kt_all;
    free(sc.kt_all);
    sc.kt_all = aligned_alloc(64, (floats * 4 + 63) / 64 * 64);
    sc.kt_cap = sc.kt_all ? floats : 0;
    return sc.kt_all;
}

/// kt[d][j] = K[k0 + j][d] for j < nk, zero for nk <= j < KB.
static void pack_kt512(const float *kbase, int64_t ldk, int64_t k0, int64_t nk, int64_t Dh, float *kt) {
    for (int64_t d = 0; d < Dh; d++) {
        float *row = kt + d * KB;
        for (int64_t j = 0; j < nk; j++) row[j] = kbase[(k0 + j) * ldk + d];
        for (int64_t j = nk; j < KB; j++) row[j] = 0.0f;
    }
}

AVX512 int lumen_attention_avx512(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                  const float *v, int64_t ldv, float *out, int64_t ldo,
                                  int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                                  float scale, int causal, int task, int ntasks) {
    if (!ensure(Dh)) return -1;
    const int64_t dhp = (Dh + 15) / 16 * 16;
    float *qs = sc.qs, *s = sc.s, *o = sc.o;
    // K^T of the head in hand, [Lk/KB][Dh][KB], packed once per head instead of once per query
    // block (a strided scalar gather: at Lk 4096 and Dh 40 it cost about a fifth of the kernel's
    // time); above 8 MiB, one key block at a time as before.
    const int64_t nkb = (Lk + KB - 1) / KB;
    const int per_head = nkb * KB * Dh <= ((int64_t)2 << 20);
    float *kt_all = per_head ? ensure_kt_all((size_t)(nkb * KB * Dh)) : NULL;
    if (per_head && !kt_all) return -1;
    int64_t packed = -1;
    int64_t qblocks = (Lq + QB - 1) / QB;
    int64_t items = B * heads * qblocks;
    int64_t begin = items * task / ntasks, end = items * (task + 1) / ntasks;
    for (int64_t item = begin; item < end; item++) {
        int64_t qb = item % qblocks, h = (item / qblocks) % heads, b = item / (qblocks * heads);
        int64_t q0 = qb * QB, nq = Lq - q0 < QB ? Lq - q0 : QB;
        int64_t groups = (nq + 7) / 8, rows = groups * 8;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        if (per_head && packed != b * heads + h) {
            const int64_t kend_all = causal ? (Lq < Lk ? Lq : Lk) : Lk;  // keys any query block reads
            for (int64_t k0 = 0; k0 < kend_all; k0 += KB)
                pack_kt512(kbase, ldk, k0, kend_all - k0 < KB ? kend_all - k0 : KB, Dh, kt_all + (k0 / KB) * Dh * KB);
            packed = b * heads + h;
        }
        float m[QB], l[QB];
        for (int64_t i = 0; i < rows; i++) {
            for (int64_t d = 0; d < Dh; d++) qs[i * Dh + d] = i < nq ? qbase[(q0 + i) * ldq + d] * scale : 0.0f;
            for (int64_t d = 0; d < dhp; d++) o[i * dhp + d] = 0.0f;
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += KB) {
            int64_t nk = kend - k0 < KB ? kend - k0 : KB;
            const float *kt = per_head ? kt_all + (k0 / KB) * Dh * KB : sc.kt;
            if (!per_head) pack_kt512(kbase, ldk, k0, nk, Dh, sc.kt);
            int cols = nk > 32 ? 2 : 1;
            for (int64_t g = 0; g < groups; g++)
                for (int c = 0; c < cols; c++) qk_8x32(qs, Dh, kt, s, (int)(g * 8), c * 32);
            // Online softmax, row by row: P = exp(S - m_new), masked keys get P = 0.
            int64_t pvKeys = 0;
            for (int64_t i = 0; i < rows; i++) {
                float *srow = s + i * KB;
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
                __mmask16 tail = (__mmask16)((1u << (valid % 16)) - 1);
                __m512 mx = _mm512_set1_ps(-INFINITY);
                int64_t j = 0;
                for (; j + 16 <= valid; j += 16) mx = _mm512_max_ps(mx, _mm512_load_ps(srow + j));
                if (j < valid) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_load_ps(srow + j));
                float bm = _mm512_reduce_max_ps(mx);
                float mnew = m[i] > bm ? m[i] : bm;
                // e^0 is exactly 1: no exponential where the running maximum stands
                float corr = m[i] == -INFINITY ? 0.0f : m[i] == mnew ? 1.0f : lumen_expf(m[i] - mnew);
                __m512 mn = _mm512_set1_ps(mnew), sum = _mm512_setzero_ps();
                // without a causal mask every row's keys are the block's nk: lanes past it are never
                // read by P·V; with one, P·V reads up to the longest row, so all KB lanes are written
                const int64_t jn = causal ? KB : (valid + 15) / 16 * 16;
                for (j = 0; j < jn; j += 16) {
                    __mmask16 keep = j + 16 <= valid ? (__mmask16)0xFFFF : (j < valid ? tail : (__mmask16)0);
                    __m512 pv = _mm512_maskz_mov_ps(keep, exp16(_mm512_sub_ps(_mm512_load_ps(srow + j), mn)));
                    _mm512_store_ps(srow + j, pv);
                    sum = _mm512_add_ps(sum, pv);
                }
                l[i] = l[i] * corr + _mm512_reduce_add_ps(sum);
                m[i] = mnew;
                if (corr != 1.0f) {
                    __m512 cv = _mm512_set1_ps(corr);
                    for (int64_t d = 0; d < dhp; d += 16)
                        _mm512_store_ps(o + i * dhp + d, _mm512_mul_ps(cv, _mm512_load_ps(o + i * dhp + d)));
                }
            }
            if (pvKeys == 0) continue;
            const float *vblock = vbase + k0 * ldv;
            for (int64_t g = 0; g < groups; g++) {
                for (int64_t d0 = 0; d0 < Dh; d0 += 48) {
                    int64_t lanes = Dh - d0 < 48 ? Dh - d0 : 48;
                    int nv = (int)((lanes + 15) / 16);
                    if (nv == 3) pv_8x3(s, vblock, ldv, pvKeys, o, dhp, (int)(g * 8), d0, lanes);
                    else if (nv == 2) pv_8x2(s, vblock, ldv, pvKeys, o, dhp, (int)(g * 8), d0, lanes);
                    else pv_8x1(s, vblock, ldv, pvKeys, o, dhp, (int)(g * 8), d0, lanes);
                }
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            float inv = 1.0f / l[i];
            float *dst = out + (b * Lq + q0 + i) * ldo + h * Dh;
            for (int64_t d = 0; d < Dh; d++) dst[d] = o[i * dhp + d] * inv;
        }
    }
    return 0;
}
#endif
