// Instruction-set detection and selection, dtype conversions, and the FMA peak probe.
#include "gemm_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#if LUMEN_X86
#include <cpuid.h>
#endif

// ---------------------------------------------------------------------------------------------
// Detection / selection
// ---------------------------------------------------------------------------------------------

#if LUMEN_X86
static uint64_t lumen_xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));  // xgetbv
    return ((uint64_t)edx << 32) | eax;
}
#endif

static int lumen_detect_uncached(void) {
#if LUMEN_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LUMEN_ISA_GENERIC;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) return LUMEN_ISA_GENERIC;
    uint64_t xcr0 = lumen_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return LUMEN_ISA_GENERIC;  // OS saves XMM+YMM
    if (__get_cpuid_max(0, NULL) < 7) return LUMEN_ISA_GENERIC;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (!avx2) return LUMEN_ISA_GENERIC;
    int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (f && dq && bw && vl && (xcr0 & 0xe6) == 0xe6) return LUMEN_ISA_AVX512;  // + opmask/ZMM state
    return LUMEN_ISA_AVX2;
#else
    return LUMEN_ISA_GENERIC;
#endif
}

static int g_detected = -1;  // atomics (relaxed): detection is idempotent
static int g_isa = -1;

int lumen_cpu_detect_isa(void) {
    int d = __atomic_load_n(&g_detected, __ATOMIC_RELAXED);
    if (d < 0) {
        d = lumen_detect_uncached();
        __atomic_store_n(&g_detected, d, __ATOMIC_RELAXED);
    }
    return d;
}

static int lumen_parse_isa(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "generic")) return LUMEN_ISA_GENERIC;
    if (!strcmp(s, "avx2")) return LUMEN_ISA_AVX2;
    if (!strcmp(s, "avx512")) return LUMEN_ISA_AVX512;
    return -1;
}

static int lumen_isa_init(void) {
    int isa = lumen_cpu_detect_isa();
    int want = lumen_parse_isa(getenv("LUMEN_CPU_ISA"));
    if (want >= 0 && want < isa) isa = want;
    int expected = -1;
    // First initialiser wins; a concurrent lumen_cpu_set_isa is never overwritten.
    if (!__atomic_compare_exchange_n(&g_isa, &expected, isa, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        isa = expected;
    return isa;
}

int lumen_isa_current(void) {
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
    return isa >= 0 ? isa : lumen_isa_init();
}

int lumen_cpu_isa(void) { return lumen_isa_current(); }

int lumen_cpu_set_isa(int isa) {
    int d = lumen_cpu_detect_isa();
    if (isa < LUMEN_ISA_GENERIC) isa = LUMEN_ISA_GENERIC;
    if (isa > d) isa = d;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    return isa;
}

// L2 size per core (the GEMM blocking's choice of loop order depends on it).
static int64_t lumen_detect_l2_uncached(void) {
    const char *e = getenv("LUMEN_CPU_L2_KIB");
    if (e && atol(e) > 0) return (int64_t)atol(e) * 1024;
#if LUMEN_X86
    unsigned a, b, c, d;
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000006u) {
        __cpuid(0x80000006u, a, b, c, d);
        int64_t kib = (int64_t)(c >> 16);
        if (kib > 0) return kib * 1024;
    }
#endif
    return 256 * 1024;
}

static int64_t g_l2 = -1;

int64_t lumen_cpu_l2_bytes(void) {
    int64_t v = __atomic_load_n(&g_l2, __ATOMIC_RELAXED);
    if (v < 0) {
        v = lumen_detect_l2_uncached();
        __atomic_store_n(&g_l2, v, __ATOMIC_RELAXED);
    }
    return v;
}

int64_t lumen_cpu_set_l2_bytes(int64_t bytes) {
    __atomic_store_n(&g_l2, bytes > 0 ? bytes : lumen_detect_l2_uncached(), __ATOMIC_RELAXED);
    return lumen_cpu_l2_bytes();
}

// bf16 compute: CPUID.(EAX=7,ECX=1):EAX bit 5 (AVX512_BF16), on top of the AVX-512 level (which
// already checked that the OS saves the opmask and ZMM state).
static int lumen_detect_bf16_uncached(void) {
#if LUMEN_X86
    if (lumen_cpu_detect_isa() != LUMEN_ISA_AVX512) return 0;
    unsigned a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    if (a < 1) return 0;  // no subleaf 1
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
#else
    return 0;
#endif
}

static int g_bf16_hw = -1;  // CPU has AVX512_BF16 (cached)
static int g_bf16 = -1;     // requested: -1 = not yet read from LUMEN_CPU_BF16

static int lumen_bf16_hw(void) {
    int h = __atomic_load_n(&g_bf16_hw, __ATOMIC_RELAXED);
    if (h < 0) {
        h = lumen_detect_bf16_uncached();
        __atomic_store_n(&g_bf16_hw, h, __ATOMIC_RELAXED);
    }
    return h;
}

static int lumen_bf16_requested(void) {
    int r = __atomic_load_n(&g_bf16, __ATOMIC_RELAXED);
    if (r < 0) {
        const char *e = getenv("LUMEN_CPU_BF16");
        int want = e && !strcmp(e, "1");
        int expected = -1;
        // first initialiser wins; a concurrent lumen_cpu_set_bf16 is never overwritten
        if (!__atomic_compare_exchange_n(&g_bf16, &expected, want, 0, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED))
            want = expected;
        r = want;
    }
    return r;
}

int lumen_bf16_active(void) {
    return lumen_bf16_requested() && lumen_isa_current() == LUMEN_ISA_AVX512 && lumen_bf16_hw();
}

int lumen_cpu_bf16_supported(void) { return lumen_bf16_hw() && lumen_isa_current() == LUMEN_ISA_AVX512; }

int lumen_cpu_bf16(void) { return lumen_bf16_active(); }

int lumen_cpu_set_bf16(int enabled) {
    __atomic_store_n(&g_bf16, enabled ? 1 : 0, __ATOMIC_RELAXED);
    return lumen_bf16_active();
}

const char *lumen_isa_name(int isa) {
    switch (isa) {
    case LUMEN_ISA_AVX2: return "avx2";
    case LUMEN_ISA_AVX512: return "avx512";
    default: return "generic";
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

static void cvt_to_f32_generic(const void *src, int dtype, float *dst, int64_t i, int64_t n) {
    if (dtype == LUMEN_DT_F16) {
        const uint16_t *s = (const uint16_t *)src;
        for (; i < n; ++i) dst[i] = lumen_h2f(s[i]);
    } else if (dtype == LUMEN_DT_BF16) {
        const uint16_t *s = (const uint16_t *)src;
        for (; i < n; ++i) dst[i] = lumen_bf2f(s[i]);
    } else {
        const float *s = (const float *)src;
        for (; i < n; ++i) dst[i] = s[i];
    }
}

#if LUMEN_X86
LUMEN_TARGET_AVX512 static int64_t cvt_to_f32_avx512(const void *src, int dtype, float *dst,
                                                     int64_t n) {
    int64_t i = 0;
    const uint16_t *s = (const uint16_t *)src;
    if (dtype == LUMEN_DT_F16) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    } else if (dtype == LUMEN_DT_BF16) {
        for (; i + 16 <= n; i += 16) {
            __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        }
    }
    return i;
}

LUMEN_TARGET_AVX2 static int64_t cvt_to_f32_avx2(const void *src, int dtype, float *dst,
                                                 int64_t n) {
    int64_t i = 0;
    const uint16_t *s = (const uint16_t *)src;
    if (dtype == LUMEN_DT_F16) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    } else if (dtype == LUMEN_DT_BF16) {
        for (; i + 8 <= n; i += 8) {
            __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        }
    }
    return i;
}

LUMEN_TARGET_AVX512 static int64_t f32_to_f16_avx512(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

LUMEN_TARGET_AVX2 static int64_t f32_to_f16_avx2(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

LUMEN_TARGET_AVX512 static int64_t f32_to_bf16_avx512(const float *src, uint16_t *dst,
                                                      int64_t n) {
    int64_t i = 0;
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff),
                  q = _mm512_set1_epi32(0x40);
    for (; i + 16 <= n; i += 16) {
        __m512i x = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, absm), inf);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), one);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(bias, lsb)), 16);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), q);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
    return i;
}

LUMEN_TARGET_AVX2 static int64_t f32_to_bf16_avx2(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff),
                  q = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, absm), inf);
        __m256i hi = _mm256_srli_epi32(x, 16);
        __m256i lsb = _mm256_and_si256(hi, one);
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(bias, lsb)), 16);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, q), nan);
        __m256i p = _mm256_packus_epi32(r, r);            // lanes: r0..3 r0..3 | r4..7 r4..7
        p = _mm256_permute4x64_epi64(p, 0x08);            // r0..3 r4..7 in the low 128 bits
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(p));
    }
    return i;
}
#endif

void lumen_convert_to_f32(const void *src, int dtype, float *dst, int64_t count) {
    int64_t i = 0;
    if (count <= 0) return;
#if LUMEN_X86
    int isa = lumen_isa_current();
    if (isa == LUMEN_ISA_AVX512) i = cvt_to_f32_avx512(src, dtype, dst, count);
    else if (isa == LUMEN_ISA_AVX2) i = cvt_to_f32_avx2(src, dtype, dst, count);
#endif
    if (dtype == LUMEN_DT_F32 && i == 0) {
        memcpy(dst, src, (size_t)count * 4);
        return;
    }
    cvt_to_f32_generic(src, dtype, dst, i, count);
}

void lumen_f32_to_f16(const float *src, uint16_t *dst, int64_t count) {
    int64_t i = 0;
#if LUMEN_X86
    int isa = lumen_isa_current();
    if (isa == LUMEN_ISA_AVX512) i = f32_to_f16_avx512(src, dst, count);
    else if (isa == LUMEN_ISA_AVX2) i = f32_to_f16_avx2(src, dst, count);
#endif
    for (; i < count; ++i) dst[i] = lumen_f2h(src[i]);
}

void lumen_f32_to_bf16(const float *src, uint16_t *dst, int64_t count) {
    int64_t i = 0;
#if LUMEN_X86
    int isa = lumen_isa_current();
    if (isa == LUMEN_ISA_AVX512) i = f32_to_bf16_avx512(src, dst, count);
    else if (isa == LUMEN_ISA_AVX2) i = f32_to_bf16_avx2(src, dst, count);
#endif
    for (; i < count; ++i) dst[i] = lumen_f2bf(src[i]);
}

// ---------------------------------------------------------------------------------------------
// FMA peak probe
// ---------------------------------------------------------------------------------------------

static double lumen_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile float g_fma_sink;

#if LUMEN_X86
// 16 independent chains: covers 4-cycle latency x 2 pipes twice over.
LUMEN_TARGET_AVX512 static double fma_probe_avx512(int64_t iters) {
    __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    __m512 c0 = _mm512_set1_ps(1.0f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    __m512 c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
    for (int64_t i = 0; i < iters; ++i) {
#define F(c) c = _mm512_fmadd_ps(c, m, a)
        F(c0); F(c1); F(c2); F(c3); F(c4); F(c5); F(c6); F(c7);
        F(c8); F(c9); F(c10); F(c11); F(c12); F(c13); F(c14); F(c15);
#undef F
        __asm__ volatile("" : "+v"(c0), "+v"(c8));  // keep the loop as written
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                             _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                                       _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15))));
    g_fma_sink = _mm512_reduce_add_ps(s);
    return (double)iters * 16.0 * 16.0 * 2.0;
}

// 14 independent chains of ymm (+ 2 constants = all 16 registers): covers an FMA latency of up to
// 7 cycles on two pipes, so the loop is throughput-bound on every AVX2 core (Haswell 5, Zen 1-3 4-5).
LUMEN_TARGET_AVX2 static double fma_probe_avx2(int64_t iters) {
    __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(1.0f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    __m256 c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0;
    for (int64_t i = 0; i < iters; ++i) {
#define F(c) c = _mm256_fmadd_ps(c, m, a)
        F(c0); F(c1); F(c2); F(c3); F(c4); F(c5); F(c6); F(c7); F(c8); F(c9); F(c10); F(c11);
        F(c12); F(c13);
#undef F
        __asm__ volatile("" : "+x"(c0), "+x"(c8));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    s = _mm256_add_ps(s, _mm256_add_ps(c12, c13));
    float t[8];
    _mm256_storeu_ps(t, s);
    g_fma_sink = t[0] + t[7];
    return (double)iters * 14.0 * 8.0 * 2.0;
}
#endif

// Portable probe: 8 chains of 4-wide vectors (the compiler's baseline SIMD).
typedef float lumen_v4 __attribute__((vector_size(16)));
static double fma_probe_generic(int64_t iters) {
    lumen_v4 m = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, a = {1e-7f, 1e-7f, 1e-7f, 1e-7f};
    lumen_v4 c[8];
    for (int j = 0; j < 8; ++j) c[j] = (lumen_v4){1.0f, 1.0f, 1.0f, 1.0f};
    for (int64_t i = 0; i < iters; ++i) {
        for (int j = 0; j < 8; ++j) c[j] = c[j] * m + a;
    }
    lumen_v4 s = c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7];
    g_fma_sink = s[0] + s[3];
    return (double)iters * 8.0 * 4.0 * 2.0;
}

static double fma_probe(int isa, int64_t iters) {
#if LUMEN_X86
    if (isa == LUMEN_ISA_AVX512) return fma_probe_avx512(iters);
    if (isa == LUMEN_ISA_AVX2) return fma_probe_avx2(iters);
#else
    (void)isa;
#endif
    return fma_probe_generic(iters);
}

// The rate of the fastest of many short windows (each well under a millisecond), not the mean over
// the whole time: on a shared machine the mean counts the time this thread was descheduled or
// slowed by a neighbour, which under-reads the peak and let kernels (timed by their median run)
// read above 100% of it. No window can run faster than the hardware, so the best one is the peak.
double lumen_measure_fma_gflops(int isa, double seconds) {
    if (isa > lumen_cpu_detect_isa()) isa = lumen_cpu_detect_isa();
    if (seconds <= 0) seconds = 0.05;
    const int64_t chunk = 1 << 14;
    double t0 = lumen_now(), t = t0;
    // Warm-up (clock ramp, AVX-512 licence) for ~10% of the time, not counted.
    while (t - t0 < seconds * 0.1) {
        fma_probe(isa, chunk);
        t = lumen_now();
    }
    t0 = t;
    double best = 0;
    do {
        const double w0 = t;
        const double flops = fma_probe(isa, chunk);
        t = lumen_now();
        if (t > w0 && flops / (t - w0) > best) best = flops / (t - w0);
    } while (t - t0 < seconds);
    return best * 1e-9;
}
