// Fused multi-head attention with an online softmax (the flash-attention recurrence): for a
// block of queries, key/value blocks stream through while a running maximum, a running sum and
// the output accumulate, so memory stays O(block) instead of O(Lq x Lk).
#include <stdlib.h>
#include "lumen_cpu.h"
#include "vecmath.h"

enum { BQ = 32, BK = 128 };

typedef struct {
    float *kt;    // [Dh, BK]   key block transposed, so score rows vectorise over keys
    float *s;     // [BQ, BK]   scores, then probabilities
    float *o;     // [BQ, Dh]   output accumulator
    float *q;     // [BQ, Dh]   scaled queries
    int64_t dh;
} attn_scratch;

static _Thread_local attn_scratch scratch;

#if defined(__x86_64__)
int lumen_attention_avx512(const float *q, int64_t ldq, const float *k, int64_t ldk,
                           const float *v, int64_t ldv, float *out, int64_t ldo,
                           int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                           float scale, int causal, int task, int ntasks);
int lumen_attention_avx2(const float *q, int64_t ldq, const float *k, int64_t ldk,
                         const float *v, int64_t ldv, float *out, int64_t ldo,
                         int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                         float scale, int causal, int task, int ntasks);
#endif

static int ensure_scratch(int64_t dh) {
    if (scratch.dh >= dh) return 1;
    free(scratch.kt); free(scratch.s); free(scratch.o); free(scratch.q);
    scratch.kt = aligned_alloc(64, (size_t)(((dh * BK * 4) + 63) / 64 * 64));
    scratch.s = aligned_alloc(64, (size_t)BQ * BK * 4);
    scratch.o = aligned_alloc(64, (size_t)(((BQ * dh * 4) + 63) / 64 * 64));
    scratch.q = aligned_alloc(64, (size_t)(((BQ * dh * 4) + 63) / 64 * 64));
    if (!scratch.kt || !scratch.s || !scratch.o || !scratch.q) { scratch.dh = 0; return 0; }
    scratch.dh = dh;
    return 1;
}

LUMEN_INLINE void attention_body(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                 const float *v, int64_t ldv, float *out, int64_t ldo,
                                 int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                                 float scale, int causal, int task, int ntasks,
                                 float *kt, float *s, float *o, float *qs) {
    int64_t qblocks = (Lq + BQ - 1) / BQ;
    int64_t items = B * heads * qblocks;
    int64_t begin = items * task / ntasks, end = items * (task + 1) / ntasks;
    for (int64_t item = begin; item < end; item++) {
        int64_t qb = item % qblocks, h = (item / qblocks) % heads, b = item / (qblocks * heads);
        int64_t q0 = qb * BQ, nq = Lq - q0 < BQ ? Lq - q0 : BQ;
        const float *qbase = q + b * Lq * ldq + h * Dh;
        const float *kbase = k + b * Lk * ldk + h * Dh;
        const float *vbase = v + b * Lk * ldv + h * Dh;
        float mrow[BQ], lrow[BQ];
        for (int64_t i = 0; i < nq; i++) {
            for (int64_t d = 0; d < Dh; d++) qs[i * Dh + d] = qbase[(q0 + i) * ldq + d] * scale;
            for (int64_t d = 0; d < Dh; d++) o[i * Dh + d] = 0.0f;
            mrow[i] = -INFINITY;
            lrow[i] = 0.0f;
        }
        int64_t kend = causal ? (q0 + nq < Lk ? q0 + nq : Lk) : Lk;
        for (int64_t k0 = 0; k0 < kend; k0 += BK) {
            int64_t nk = kend - k0 < BK ? kend - k0 : BK;
            for (int64_t j = 0; j < nk; j++)
                for (int64_t d = 0; d < Dh; d++) kt[d * BK + j] = kbase[(k0 + j) * ldk + d];
            for (int64_t i = 0; i < nq; i++) {
                float *srow = s + i * BK;
                for (int64_t j = 0; j < BK; j++) srow[j] = 0.0f;
                const float *qi = qs + i * Dh;
                for (int64_t d = 0; d < Dh; d++) {
                    float qd = qi[d];
                    const float *ktd = kt + d * BK;
                    for (int64_t j = 0; j < BK; j++) srow[j] += qd * ktd[j];
                }
                int64_t valid = nk;
                if (causal) {
                    int64_t lim = q0 + i - k0 + 1;  // keys k0+j with j < lim are visible
                    if (lim < valid) valid = lim;
                }
                float bm = -INFINITY;
                for (int64_t j = 0; j < valid; j++) bm = srow[j] > bm ? srow[j] : bm;
                if (valid <= 0) continue;
                float mnew = mrow[i] > bm ? mrow[i] : bm;
                float corr = lumen_expf(mrow[i] - mnew);  // mrow = -inf the first time: 0
                if (mrow[i] == -INFINITY) corr = 0.0f;
                float psum = 0.0f;
                for (int64_t j = 0; j < valid; j++) {
                    float p = lumen_expf(srow[j] - mnew);
                    srow[j] = p;
                    psum += p;
                }
                mrow[i] = mnew;
                lrow[i] = lrow[i] * corr + psum;
                float *oi = o + i * Dh;
                for (int64_t d = 0; d < Dh; d++) oi[d] *= corr;
                for (int64_t j = 0; j < valid; j++) {
                    float p = srow[j];
                    const float *vj = vbase + (k0 + j) * ldv;
                    for (int64_t d = 0; d < Dh; d++) oi[d] += p * vj[d];
                }
            }
        }
        for (int64_t i = 0; i < nq; i++) {
            float inv = 1.0f / lrow[i];
            float *dst = out + (b * Lq + q0 + i) * ldo + h * Dh;
            for (int64_t d = 0; d < Dh; d++) dst[d] = o[i * Dh + d] * inv;
        }
    }
}
LUMEN_DISPATCH(attention,
    (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
     float *out, int64_t ldo, int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
     float scale, int causal, int task, int ntasks, float *kt, float *s, float *o, float *qs),
    (q, ldq, k, ldk, v, ldv, out, ldo, B, Lq, Lk, heads, Dh, scale, causal, task, ntasks, kt, s, o, qs))

int lumen_attention(const float *q, int64_t ldq, const float *k, int64_t ldk,
                    const float *v, int64_t ldv, float *out, int64_t ldo,
                    int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                    float scale, int causal, int task, int ntasks) {
#if defined(__x86_64__)
    if (lumen_cpu_isa() >= LUMEN_ISA_AVX512)
        return lumen_attention_avx512(q, ldq, k, ldk, v, ldv, out, ldo, B, Lq, Lk, heads, Dh, scale, causal, task, ntasks);
    if (lumen_cpu_isa() >= LUMEN_ISA_AVX2)
        return lumen_attention_avx2(q, ldq, k, ldk, v, ldv, out, ldo, B, Lq, Lk, heads, Dh, scale, causal, task, ntasks);
#endif
    if (!ensure_scratch(Dh)) return -1;
    attention_dispatch(q, ldq, k, ldk, v, ldv, out, ldo, B, Lq, Lk, heads, Dh, scale, causal,
                       task, ntasks, scratch.kt, scratch.s, scratch.o, scratch.q);
    return 0;
}
