// 2-D convolution as an implicit GEMM per image:
//   Y[O, OH*OW] = W[O, C*KH*KW] x Im2col[C*KH*KW, OH*OW]
// The A operand (weights, f32/f16/bf16) is packed by the shared row packer (converted to f32);
// the B operand is gathered panel by panel (KC rows x NR output pixels) straight from the input,
// with zeros for padding, so no im2col buffer of the whole image is ever built. A 1x1, stride-1,
// unpadded convolution packs the input rows directly.
#include "gemm_internal.h"


// A run of <= maxlen output pixels of one output row, inside one packed panel.
typedef struct {
    int64_t off;   // offset of its first lane in the packed block: pan*kc*width + j
    int64_t xoff;  // offset of its image in the input: b*C*H*W
    int32_t len;   // pixels
    int32_t ih;    // oh*SH - PH (kh is added per k)
    int32_t iw;    // ow*SW - PW (kw is added per k)
    int32_t pad_;
} conv_chunk;

static int64_t conv_chunks(const lumen_src *s, int64_t i0, int64_t cnt, int64_t kc, int width,
                           int maxlen, conv_chunk *ch) {
    const int64_t OW = s->OW, NI = s->OH * s->OW, IS = s->C * s->H * s->W;
    int64_t n = 0;
    for (int64_t pan = 0; pan * width < cnt; ++pan) {
        int64_t m = cnt - pan * width;
        if (m > width) m = width;
        int64_t j = 0, p = i0 + pan * width;
        while (j < m) {
            int64_t b = p / NI, q = p - b * NI;
            int64_t oh = q / OW, ow = q % OW;
            int64_t len = OW - ow;
            if (len > m - j) len = m - j;
            if (len > maxlen) len = maxlen;
            ch[n].off = pan * kc * width + j;
            ch[n].xoff = b * IS;
            ch[n].len = (int32_t)len;
            ch[n].ih = (int32_t)(oh * s->SH - s->PH);
            ch[n].iw = (int32_t)(ow * s->SW - s->PW);
            ch[n].pad_ = 0;
            ++n;
            j += len;
            p += len;
        }
    }
    return n;
}

// Chunk table (thread-local scratch) and zeroing of the partial last panel.
static conv_chunk *conv_prepare(const lumen_src *s, int64_t i0, int64_t cnt, int64_t kc,
                                int width, int maxlen, int64_t *nch, float *out) {
    conv_chunk *ch = (conv_chunk *)lumen_tl_buffer(2, (size_t)(cnt + 8) * (sizeof(conv_chunk) / 4));
    *nch = conv_chunks(s, i0, cnt, kc, width, maxlen, ch);
    if (cnt % width) {
        int64_t last = cnt / width;
        memset(out + last * kc * width, 0, (size_t)(kc * width) * sizeof(float));
    }
    return ch;
}

// Portable im2col panel gather (also used by the AVX2 level). k runs outermost so that every
// k sweeps along one input row for all the block's pixels.
static void pack_im2col_generic(const lumen_src *s, int isa, int64_t i0, int64_t cnt, int64_t k0,
                                int64_t kc, int width, float *out) {
    (void)isa;
    const float *x = (const float *)s->p;
    const int64_t H = s->H, W = s->W, KH = s->KH, KW = s->KW, SW = s->SW;
    int64_t nch;
    const conv_chunk *ch = conv_prepare(s, i0, cnt, kc, width, width, &nch, out);
    int64_t c = k0 / (KH * KW), r = k0 % (KH * KW);
    int64_t kh = r / KW, kw = r % KW;
    for (int64_t k = 0; k < kc; ++k) {
        const float *xc = x + c * H * W;
        for (int64_t ci = 0; ci < nch; ++ci) {
            float *d = out + ch[ci].off + k * width;
            const float *xi = xc + ch[ci].xoff;
            const int64_t len = ch[ci].len;
            const int64_t ih = ch[ci].ih + kh;
            if (ih < 0 || ih >= H) {
                for (int64_t l = 0; l < len; ++l) d[l] = 0.0f;
                continue;
            }
            const float *row = xi + ih * W;
            const int64_t iw0 = ch[ci].iw + kw;
            if (SW == 1) {
                int64_t lo = -iw0 > 0 ? -iw0 : 0, hi = W - iw0 < len ? W - iw0 : len;
                if (lo > len) lo = len;
                if (hi < lo) hi = lo;
                int64_t l = 0;
                for (; l < lo; ++l) d[l] = 0.0f;
                for (; l < hi; ++l) d[l] = row[iw0 + l];
                for (; l < len; ++l) d[l] = 0.0f;
            } else {
                for (int64_t l = 0; l < len; ++l) {
                    int64_t iw = iw0 + l * SW;
                    d[l] = (iw >= 0 && iw < W) ? row[iw] : 0.0f;
                }
            }
        }
        if (++kw == KW) {
            kw = 0;
            if (++kh == KH) { kh = 0; ++c; }
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
    const int64_t H = s->H, W = s->W, KH = s->KH, KW = s->KW;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    int64_t nch;
    const conv_chunk *ch = conv_prepare(s, i0, cnt, kc, width, 16, &nch, out);
    int64_t c = k0 / (KH * KW), r = k0 % (KH * KW);
    int64_t kh = r / KW, kw = r % KW;
    for (int64_t k = 0; k < kc; ++k) {
        const float *xc = x + c * H * W;
        float *ok = out + k * width;
        for (int64_t ci = 0; ci < nch; ++ci) {
            const int64_t len = ch[ci].len;
            const __mmask16 sm = (__mmask16)((1u << len) - 1u);
            const int64_t ih = ch[ci].ih + kh;
            const int64_t iw0 = ch[ci].iw + kw;
            __m512 v;
            if (ih < 0 || ih >= H) {
                v = _mm512_setzero_ps();
            } else {
                // the address may lie before the row; masked-off lanes never touch memory
                const float *src = (const float *)((uintptr_t)(xc + ch[ci].xoff + ih * W) + (uintptr_t)(iw0 * 4));
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
            _mm512_mask_storeu_ps(ok + ch[ci].off, sm, v);
        }
        if (++kw == KW) {
            kw = 0;
            if (++kh == KH) { kh = 0; ++c; }
        }
    }
}
#endif

void lumen_conv2d(const float *x, int64_t batch, int64_t C, int64_t H, int64_t W, const void *w,
                  int wdtype, const float *bias, float *y, int64_t O, int64_t KH, int64_t KW,
                  int64_t SH, int64_t SW, int64_t PH, int64_t PW, int64_t OH, int64_t OW,
                  int task, int ntasks) {
    lumen_conv2d_ex(x, batch, C, H, W, w, wdtype, bias, y, O, KH, KW, SH, SW, PH, PW, OH, OW, NULL,
                    task, ntasks);
}

void lumen_conv2d_ex(const float *x, int64_t batch, int64_t C, int64_t H, int64_t W, const void *w,
                     int wdtype, const float *bias, float *y, int64_t O, int64_t KH, int64_t KW,
                     int64_t SH, int64_t SW, int64_t PH, int64_t PW, int64_t OH, int64_t OW,
                     const lumen_conv_epilogue *epilogue, int task, int ntasks) {
    if (batch <= 0 || O <= 0 || OH <= 0 || OW <= 0) return;
    if (ntasks < 1) { ntasks = 1; task = 0; }
    const int isa = lumen_isa_current();
    if (lumen_conv3x3_direct_takes(isa, C, H, W, O, KH, KW, SH, SW, PH, PW, OH, OW)) {
        lumen_conv3x3_direct(isa, x, batch, C, H, W, w, wdtype, bias, y, O, epilogue, task, ntasks);
        return;
    }
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
    if (epilogue) {
        op.residual = epilogue->residual;
        op.post_affine = epilogue->affine != 0;
        op.post_mul = epilogue->mul;
        op.post_add = epilogue->add;
        op.post_clamp = epilogue->clamp != 0;
        op.post_lo = epilogue->lo;
        op.post_hi = epilogue->hi;
    }
    op.alpha = 1.0f;
    op.accumulate = 0;
    // bf16 packs each B panel twice (gathered as f32, then rounded into K-pairs), which costs
    // about as much per output row as the dot products save below ~192 output channels
    // (128 -> 128 at 256x256: 0.8x; 192 -> 192: 1.3x; 320 -> 320: 1.5x), so those stay f32.
    op.f32_only = M < LUMEN_CONV_BF16_MIN_O;

    const lumen_blocking bl = lumen_gemm_blocking(isa);
    if (batch > 1 && K > 0 && N % bl.nr == 0 && N < bl.nc) {
        // Small images: all images form one GEMM of batch*N columns, so the weights are packed
        // once per call instead of once per image; tasks split rows or columns of that.
        op.b.kind = LUMEN_SRC_CUSTOM;
#if LUMEN_X86
        op.b.custom = isa == LUMEN_ISA_AVX512 ? pack_im2col_avx512 : pack_im2col_generic;
#else
        op.b.custom = pack_im2col_generic;
#endif
        op.b.C = C; op.b.H = H; op.b.W = W; op.b.KH = KH; op.b.KW = KW;
        op.b.SH = SH; op.b.SW = SW; op.b.PH = PH; op.b.PW = PW; op.b.OH = OH; op.b.OW = OW;
        op.b.p = x;
        op.c = y;
        op.col_group = N;
        op.col_group_stride = O * N;
        int64_t m0, m1, n0, n1;
        lumen_gemm_split(isa, M, batch * N, task, ntasks, &m0, &m1, &n0, &n1);
        lumen_gemm_run(&op, isa, m0, m1, n0, n1, K);
        return;
    }

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
        if (epilogue && epilogue->residual) op.residual = epilogue->residual + b * O * N;
        lumen_gemm_run(&op, isa, m0, m1, n0, n1, K);
    }
}
