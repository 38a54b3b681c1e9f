// 2-D convolution as an implicit GEMM per image:
//   Y[O, OH*OW] = W[O, C*KH*KW] x Im2col[C*KH*KW, OH*OW]
// The A operand (weights, f32/f16/bf16) is packed by the shared row packer (converted to f32);
// the B operand is gathered panel by panel (KC rows x NR output pixels) straight from the input,
// with zeros for padding, so no im2col buffer of the whole image is ever built. A 1x1, stride-1,
// unpadded convolution packs the input rows directly.
#include "gemm_internal.h"

typedef struct {
    int64_t j, len, oh, ow;
} conv_seg;

// Splits the output pixels [p0, p0+n) into runs that stay in one output row.
static int conv_segments(int64_t p0, int64_t n, int64_t OW, conv_seg *seg) {
    int ns = 0;
    int64_t j = 0, p = p0;
    while (j < n) {
        int64_t oh = p / OW, ow = p % OW;
        int64_t len = OW - ow;
        if (len > n - j) len = n - j;
        seg[ns].j = j; seg[ns].len = len; seg[ns].oh = oh; seg[ns].ow = ow;
        ++ns;
        j += len;
        p += len;
    }
    return ns;
}

// Portable im2col panel gather (also used by the AVX2 level).
static void pack_im2col_generic(const lumen_src *s, int isa, int64_t i0, int64_t cnt, int64_t k0,
                                int64_t kc, int width, float *out) {
    (void)isa;
    const float *x = (const float *)s->p;
    const int64_t H = s->H, W = s->W, KH = s->KH, KW = s->KW, SH = s->SH, SW = s->SW;
    const int64_t PH = s->PH, PW = s->PW, OW = s->OW;
    const int64_t npan = (cnt + width - 1) / width;
    conv_seg seg[64];
    for (int64_t pan = 0; pan < npan; ++pan) {
        float *o = out + pan * kc * width;
        int64_t n = cnt - pan * width;
        if (n > width) n = width;
        int ns = conv_segments(i0 + pan * width, n, OW, seg);
        int64_t c = k0 / (KH * KW), r = k0 % (KH * KW);
        int64_t kh = r / KW, kw = r % KW;
        for (int64_t k = 0; k < kc; ++k) {
            float *ok = o + k * width;
            const float *xc = x + c * H * W;
            for (int si = 0; si < ns; ++si) {
                float *d = ok + seg[si].j;
                const int64_t len = seg[si].len;
                const int64_t ih = seg[si].oh * SH - PH + kh;
                if (ih < 0 || ih >= H) {
                    for (int64_t l = 0; l < len; ++l) d[l] = 0.0f;
                    continue;
                }
                const float *row = xc + ih * W;
                const int64_t iw0 = seg[si].ow * SW - PW + kw;
                if (SW == 1) {
                    int64_t lo = -iw0 > 0 ? -iw0 : 0, hi = W - iw0 < len ? W - iw0 : len;
                    if (lo > len) lo = len;
                    if (hi < lo) hi = lo;
                    int64_t l = 0;
                    for (; l < lo; ++l) d[l] = 0.0f;
                    const float *src = row + iw0;
                    for (; l < hi; ++l) d[l] = src[l];
                    for (; l < len; ++l) d[l] = 0.0f;
                } else {
                    for (int64_t l = 0; l < len; ++l) {
                        int64_t iw = iw0 + l * SW;
                        d[l] = (iw >= 0 && iw < W) ? row[iw] : 0.0f;
                    }
                }
            }
            for (int64_t j = n; j < width; ++j) ok[j] = 0.0f;
            if (++kw == KW) {
                kw = 0;
                if (++kh == KH) { kh = 0; ++c; }
            }
        }
    }
}

#if LUMEN_X86
static inline uint32_t conv_range_mask(int64_t lo, int64_t hi) {  // bits [lo, hi) of 0..31
    if (lo < 0) lo = 0;
    if (hi > 32) hi = 32;
    if (hi <= lo) return 0;
    uint32_t up = hi >= 32 ? 0xffffffffu : ((1u << hi) - 1u);
    return up & ~((1u << lo) - 1u);
}

LUMEN_TARGET_AVX512 static void pack_im2col_avx512(const lumen_src *s, int isa, int64_t i0,
                                                   int64_t cnt, int64_t k0, int64_t kc, int width,
                                                   float *out) {
    const int64_t SW = s->SW;
    if (SW > 2) {
        pack_im2col_generic(s, isa, i0, cnt, k0, kc, width, out);
        return;
    }
    const float *x = (const float *)s->p;
    const int64_t H = s->H, W = s->W, KH = s->KH, KW = s->KW, SH = s->SH;
    const int64_t PH = s->PH, PW = s->PW, OW = s->OW;
    const int64_t npan = (cnt + width - 1) / width;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    // Chunks of <= 16 pixels that stay in one output row.
    conv_seg ch[96];
    for (int64_t pan = 0; pan < npan; ++pan) {
        float *o = out + pan * kc * width;
        int64_t n = cnt - pan * width;
        if (n > width) n = width;
        conv_seg seg[64];
        int ns = conv_segments(i0 + pan * width, n, OW, seg), nch = 0;
        for (int si = 0; si < ns; ++si)
            for (int64_t l = 0; l < seg[si].len; l += 16) {
                ch[nch] = seg[si];
                ch[nch].j += l;
                ch[nch].ow += l;
                ch[nch].len = seg[si].len - l < 16 ? seg[si].len - l : 16;
                ++nch;
            }
        // zero tail lanes [n, width)
        int64_t c = k0 / (KH * KW), r = k0 % (KH * KW);
        int64_t kh = r / KW, kw = r % KW;
        for (int64_t k = 0; k < kc; ++k) {
            float *ok = o + k * width;
            if (n < width)
                for (int64_t j = n; j < width; j += 16) {
                    int64_t z = width - j < 16 ? width - j : 16;
                    _mm512_mask_storeu_ps(ok + j, (__mmask16)((1u << z) - 1u), _mm512_setzero_ps());
                }
            const float *xc = x + c * H * W;
            for (int ci = 0; ci < nch; ++ci) {
                const int64_t len = ch[ci].len;
                const __mmask16 sm = (__mmask16)((1u << len) - 1u);
                const int64_t ih = ch[ci].oh * SH - PH + kh;
                const int64_t iw0 = ch[ci].ow * SW - PW + kw;
                __m512 v;
                if (ih < 0 || ih >= H) {
                    v = _mm512_setzero_ps();
                } else {
                    // address row + iw0 may lie before the row; masked lanes never touch memory
                    const float *src = (const float *)((uintptr_t)(xc + ih * W) + (uintptr_t)(iw0 * 4));
                    if (SW == 1) {
                        __mmask16 m = (__mmask16)conv_range_mask(-iw0, W - iw0 < len ? W - iw0 : len);
                        v = _mm512_maskz_loadu_ps(m, src);
                    } else {
                        uint32_t m = conv_range_mask(-iw0, W - iw0 < 2 * len - 1 ? W - iw0 : 2 * len - 1);
                        __m512 lo = _mm512_maskz_loadu_ps((__mmask16)(m & 0xffffu), src);
                        __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), src + 16);
                        v = _mm512_permutex2var_ps(lo, even, hi);
                    }
                }
                _mm512_mask_storeu_ps(ok + ch[ci].j, sm, v);
            }
            if (++kw == KW) {
                kw = 0;
                if (++kh == KH) { kh = 0; ++c; }
            }
        }
    }
}
#endif

void lumen_conv2d(const float *x, int64_t batch, int64_t C, int64_t H, int64_t W, const void *w,
                  int wdtype, const float *bias, float *y, int64_t O, int64_t KH, int64_t KW,
                  int64_t SH, int64_t SW, int64_t PH, int64_t PW, int64_t OH, int64_t OW,
                  int task, int ntasks) {
    if (batch <= 0 || O <= 0 || OH <= 0 || OW <= 0) return;
    if (ntasks < 1) { ntasks = 1; task = 0; }
    const int isa = lumen_isa_current();
    const int64_t M = O, N = OH * OW, K = C * KH * KW;
    lumen_gemm_op op;
    memset(&op, 0, sizeof op);
    op.a.kind = LUMEN_SRC_ROWS; op.a.dtype = wdtype; op.a.p = w; op.a.ld = K;
    const int direct = KH == 1 && KW == 1 && SH == 1 && SW == 1 && PH == 0 && PW == 0 &&
                       OH == H && OW == W;
    if (direct) {
        op.b.kind = LUMEN_SRC_COLS; op.b.dtype = LUMEN_DT_F32; op.b.ld = H * W;
    } else {
        op.b.kind = LUMEN_SRC_CUSTOM;
#if LUMEN_X86
        op.b.custom = isa == LUMEN_ISA_AVX512 ? pack_im2col_avx512 : pack_im2col_generic;
#else
        op.b.custom = pack_im2col_generic;
#endif
        op.b.C = C; op.b.H = H; op.b.W = W; op.b.KH = KH; op.b.KW = KW;
        op.b.SH = SH; op.b.SW = SW; op.b.PH = PH; op.b.PW = PW; op.b.OH = OH; op.b.OW = OW;
    }
    op.ldc = N;
    op.bias_m = bias;
    op.alpha = 1.0f;
    op.accumulate = 0;

    // Whole images per task when the batch divides well, otherwise every task takes a share
    // (rows or pixel columns) of every image.
    int64_t b0 = 0, b1 = batch, m0 = 0, m1 = M, n0 = 0, n1 = N;
    if (ntasks > 1) {
        if (batch % ntasks == 0 || batch >= 4 * ntasks) {
            b0 = batch * task / ntasks;
            b1 = batch * (task + 1) / ntasks;
        } else {
            lumen_gemm_split(isa, M, N, task, ntasks, &m0, &m1, &n0, &n1);
        }
    }
    for (int64_t b = b0; b < b1; ++b) {
        op.b.p = x + b * C * H * W;
        op.c = y + b * O * N;
        lumen_gemm_run(&op, isa, m0, m1, n0, n1, K);
    }
}
