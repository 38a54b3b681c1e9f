// The AVX-512 attention kernel: the same online-softmax recurrence as attention.c, with the two
// products register-blocked like a GEMM micro-kernel. Q·Kᵀ runs 8 query rows × 32 keys at a
// time over a key block packed transposed; P·V runs 8 rows × 48 output lanes over the keys,
// reading V rows in place (masked at the head's edge).
#include <stdlib.h>
#include "lumen_cpu.h"
#include "vecmath.h"

#if defined(__x86_64__)
#include <immintrin.h>

enum { QB = 64, KB_MAX = 128 };

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))

/// 2^x on 16 lanes for the softmax's x = y - max(y) <= 0, y being the scores in base-2 units:
/// attention_avx2.c's exp2_nonpos8 (the same clamp, shifter and degree-6 fit), 13 operations with
/// the subtraction where e^x took 19.
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

/// S[r0..r0+8][c0..c0+32] = qs[r0..r0+8] · kt[:, c0..c0+32] over dh.
AVX512 static inline void qk_8x32(const float *qs, int64_t dh, const float *kt, float *s, int r0, int c0, int64_t KB) {
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

/// S[r0..r0+8][c0..c0+16] = qs[r0..r0+8] · kt[:, c0..c0+16]: a key block's last 16 keys or fewer
/// (77 keys run as 32 + 32 + 16 instead of three 32-key tiles, a fifth of whose products were
/// padding).
AVX512 static inline void qk_8x16(const float *qs, int64_t dh, const float *kt, float *s, int r0, int c0, int64_t KB) {
    __m512 acc[8];
    for (int r = 0; r < 8; r++) acc[r] = _mm512_setzero_ps();
    const float *q = qs + (int64_t)r0 * dh;
    for (int64_t d = 0; d < dh; d++) {
        __m512 b0 = _mm512_load_ps(kt + d * KB + c0);
        for (int r = 0; r < 8; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r * dh + d]), b0, acc[r]);
    }
    for (int r = 0; r < 8; r++) _mm512_store_ps(s + (r0 + r) * KB + c0, acc[r]);
}

/// o[r0..r0+8][d0 .. d0+16·NV] += P[r0..r0+8][0..nk] · Vp[0..nk][d0 ..] (Vp: V's rows packed
/// contiguously at the stride dhp, zero past Dh, so the loads need no masks).
#define PV_KERNEL(NV)                                                                                   \
    AVX512 static void pv_8x##NV(const float *p, const float *vp, int64_t dhp, int64_t nk, float *o,     \
                                 int r0, int64_t d0, int64_t KB) {                                       \
        __m512 acc[8][NV];                                                                               \
        for (int c = 0; c < NV; c++)                                                                     \
            for (int r = 0; r < 8; r++) acc[r][c] = _mm512_load_ps(o + (r0 + r) * dhp + d0 + 16 * c);   \
        for (int64_t j = 0; j < nk; j++) {                                                               \
            __m512 vv[NV];                                                                               \
            for (int c = 0; c < NV; c++) vv[c] = _mm512_load_ps(vp + j * dhp + d0 + 16 * c);             \
            for (int r = 0; r < 8; r++) {                                                                \
                __m512 a = _mm512_set1_ps(p[(r0 + r) * KB + j]);                                         \
                for (int c = 0; c < NV; c++) acc[r][c] = _mm512_fmadd_ps(a, vv[c], acc[r][c]);          \
            }                                                                                            \
        }                                                                                                \
        for (int c = 0; c < NV; c++)                                                                     \
            for (int r = 0; r < 8; r++) _mm512_store_ps(o + (r0 + r) * dhp + d0 + 16 * c, acc[r][c]);   \
    }
PV_KERNEL(1)
PV_KERNEL(2)
PV_KERNEL(3)

typedef struct {
    float *qs, *s, *o;
    int64_t dh;
    // One head's K^T blocks and packed V rows, packed once and shared by its query blocks.
    float *kv;
    size_t kv_cap;
} scratch512;

static _Thread_local scratch512 sc;

static int ensure(int64_t dh) {
    if (sc.dh >= dh) return 1;
    free(sc.qs); free(sc.s); free(sc.o);
    int64_t dhp = (dh + 15) / 16 * 16;
    sc.qs = aligned_alloc(64, (size_t)(QB * dhp * 4));
    sc.s = aligned_alloc(64, (size_t)(QB * KB_MAX * 4));
    sc.o = aligned_alloc(64, (size_t)(QB * dhp * 4));
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

/// kt[d][j] = K[k0 + j][d] for j < nk, zero for nk <= j < KB.
static void pack_kt512(const float *kbase, int64_t ldk, int64_t k0, int64_t nk, int64_t Dh, float *kt, int64_t KB) {
    for (int64_t d = 0; d < Dh; d++) {
        float *row = kt + d * KB;
        for (int64_t j = 0; j < nk; j++) row[j] = kbase[(k0 + j) * ldk + d];
        for (int64_t j = nk; j < KB; j++) row[j] = 0.0f;
    }
}

/// vp[j][d] = V[k0 + j][d] for j < nk, d < Dh, zero for Dh <= d < dhp. V's rows lie ldv apart
/// (a head's Dh floats out of each token's row): P·V read them in place, masked, from 3-4 partial
/// cache lines per key, for each 8 query rows (4096 x 4096 x 40: P·V took 1.5x Q·Kᵀ's time for
/// the same products).
AVX512 static void pack_v512(const float *vbase, int64_t ldv, int64_t k0, int64_t nk, int64_t Dh, int64_t dhp, float *vp) {
    for (int64_t j = 0; j < nk; j++)
        for (int64_t d = 0; d < dhp; d += 16) {
            __mmask16 lanes = Dh - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (Dh - d > 0 ? Dh - d : 0)) - 1);
            _mm512_store_ps(vp + j * dhp + d, _mm512_maskz_loadu_ps(lanes, vbase + (k0 + j) * ldv + d));
        }
}

AVX512 int lumen_attention_avx512(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                  const float *v, int64_t ldv, float *out, int64_t ldo,
                                  int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                                  float scale, int causal, int task, int ntasks) {
    if (!ensure(Dh)) return -1;
    const int64_t dhp = (Dh + 15) / 16 * 16;
    float *qs = sc.qs, *s = sc.s, *o = sc.o;
    const float scale2 = scale * 1.44269504088896341f;  // scores in base-2 units
    // K^T of the head in hand, [Lk/KB][Dh][KB], packed once per head instead of once per query
    // block (a strided scalar gather: at Lk 4096 and Dh 40 it cost about a fifth of the kernel's
    // time); above 8 MiB, one key block at a time as before.
    // A short key sequence (cross-attention's 77 text tokens) in one block of whole 16-key
    // groups, as in attention_avx2.c (77 keys ran as 64 + 13, the 13 through a whole 32-key tile
    // and a second pass of the rows' softmax bookkeeping). Longer ones in blocks of 128 keys for
    // heads up to 64 wide (each row's softmax bookkeeping and P·V's accumulator loads and stores
    // paid once per 128 keys: 4096 x 4096 x 40 +5%, one thread; the block's scores are 32 KiB),
    // 64 for wider heads (1024 x 1024 x 80 measured no better at 128, whose K^T block is 40 KiB).
    const int64_t KB = Lk <= KB_MAX ? (Lk + 15) / 16 * 16 : Dh <= 64 ? 128 : 64;
    const int64_t nkb = (Lk + KB - 1) / KB;
    // K^T blocks [Lk/KB][Dh][KB] and V rows [Lk][dhp] of the head in hand, packed once per head
    // and shared by its query blocks, up to 8 MiB; above (the VAE's 512-wide single head), one
    // key block at a time.
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
        int64_t groups = (nq + 7) / 8, rows = groups * 8;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        if (per_head && packed != b * heads + h) {
            const int64_t kend_all = causal ? (Lq < Lk ? Lq : Lk) : Lk;  // keys any query block reads
            for (int64_t k0 = 0; k0 < kend_all; k0 += KB) {
                const int64_t nk = kend_all - k0 < KB ? kend_all - k0 : KB;
                pack_kt512(kbase, ldk, k0, nk, Dh, kt_all + (k0 / KB) * Dh * KB, KB);
                pack_v512(vbase, ldv, k0, nk, Dh, dhp, vp_all + k0 * dhp);
            }
            packed = b * heads + h;
        }
        float m[QB], l[QB];
        // Q's rows scaled (in base-2 units, see exp2_nonpos16) in masked vectors; padding rows zero.
        const __m512 vscale = _mm512_set1_ps(scale2);
        for (int64_t i = 0; i < rows; i++) {
            const float *src = qbase + (q0 + i) * ldq;
            for (int64_t d = 0; d < Dh; d += 16) {
                __mmask16 lanes = Dh - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (Dh - d)) - 1);
                __m512 x = i < nq ? _mm512_maskz_loadu_ps(lanes, src + d) : _mm512_setzero_ps();
                _mm512_mask_storeu_ps(qs + i * Dh + d, lanes, _mm512_mul_ps(x, vscale));
            }
            for (int64_t d = 0; d < dhp; d += 16) _mm512_store_ps(o + i * dhp + d, _mm512_setzero_ps());
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        // The next item's query and output rows, fetched during this block's softmax (as in
        // attention_avx2.c: both are strided, one head's Dh floats out of each row).
        const float *pf_q = NULL;
        float *pf_o = NULL;
        int64_t pf_n = 0;
        if (item + 1 < end) {
            int64_t nqb = (item + 1) % qblocks, nh = ((item + 1) / qblocks) % heads, nb = (item + 1) / (qblocks * heads);
            pf_q = q + nb * Lq * ldq + nh * Dh + nqb * QB * ldq;
            pf_o = out + (nb * Lq + nqb * QB) * ldo + nh * Dh;
            pf_n = Lq - nqb * QB < QB ? Lq - nqb * QB : QB;
        }
        int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += KB) {
            int64_t nk = kend - k0 < KB ? kend - k0 : KB;
            if (!per_head) {
                pack_kt512(kbase, ldk, k0, nk, Dh, kt_all, KB);
                pack_v512(vbase, ldv, k0, nk, Dh, dhp, vp_all);
            }
            const float *kt = per_head ? kt_all + (k0 / KB) * Dh * KB : kt_all;
            const float *vpb = per_head ? vp_all + k0 * dhp : vp_all;
            for (int64_t g = 0; g < groups; g++) {
                int c = 0;
                for (; nk - c > 16; c += 32) qk_8x32(qs, Dh, kt, s, (int)(g * 8), c, KB);
                if (c < nk) qk_8x16(qs, Dh, kt, s, (int)(g * 8), c, KB);
            }
            // Online softmax, row by row: P = exp(S - m_new), masked keys get P = 0.
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
                __mmask16 tail = (__mmask16)((1u << (valid % 16)) - 1);
                __m512 mx = _mm512_set1_ps(-INFINITY);
                int64_t j = 0;
                for (; j + 16 <= valid; j += 16) mx = _mm512_max_ps(mx, _mm512_load_ps(srow + j));
                if (j < valid) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_load_ps(srow + j));
                float bm = _mm512_reduce_max_ps(mx);
                float mnew = m[i] > bm ? m[i] : bm;
                // e^0 is exactly 1: no exponential where the running maximum stands
                float corr = m[i] == -INFINITY ? 0.0f : m[i] == mnew ? 1.0f : lumen_expf((m[i] - mnew) * 0.693147180559945309f);
                __m512 mn = _mm512_set1_ps(mnew), sum = _mm512_setzero_ps();
                // without a causal mask every row's keys are the block's nk: lanes past it are never
                // read by P·V; with one, P·V reads up to the longest row, so all KB lanes are written
                const int64_t jn = causal ? KB : (valid + 15) / 16 * 16;
                for (j = 0; j < jn; j += 16) {
                    __mmask16 keep = j + 16 <= valid ? (__mmask16)0xFFFF : (j < valid ? tail : (__mmask16)0);
                    __m512 pv = _mm512_maskz_mov_ps(keep, exp2_nonpos16(_mm512_sub_ps(_mm512_load_ps(srow + j), mn)));
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
            for (int64_t g = 0; g < groups; g++) {
                for (int64_t d0 = 0; d0 < dhp; d0 += 48) {
                    int nv = dhp - d0 >= 48 ? 3 : (int)((dhp - d0) / 16);
                    if (nv == 3) pv_8x3(s, vpb, dhp, pvKeys, o, (int)(g * 8), d0, KB);
                    else if (nv == 2) pv_8x2(s, vpb, dhp, pvKeys, o, (int)(g * 8), d0, KB);
                    else pv_8x1(s, vpb, dhp, pvKeys, o, (int)(g * 8), d0, KB);
                }
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            const __m512 inv = _mm512_set1_ps(1.0f / l[i]);
            float *dst = out + (b * Lq + q0 + i) * ldo + h * Dh;
            for (int64_t d = 0; d < Dh; d += 16) {
                __mmask16 lanes = Dh - d >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (Dh - d)) - 1);
                _mm512_mask_storeu_ps(dst + d, lanes, _mm512_mul_ps(_mm512_load_ps(o + i * dhp + d), inv));
            }
        }
    }
    return 0;
}
#endif
