// Vectorisable scalar maths shared by the elementwise, normalisation and attention kernels.
// Written so that clang's loop vectoriser can turn loops over them into SIMD code for whichever
// instruction set the enclosing function targets (no libm calls inside hot loops).
#ifndef LUMEN_VECMATH_H
#define LUMEN_VECMATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define LUMEN_INLINE static inline __attribute__((always_inline))

LUMEN_INLINE float lumen_bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/// e^x with a relative error of a few ulp over the f32 range; inputs below -87.3 give ~1e-38
/// (not exactly 0), above 88.7 give ~3e38.
LUMEN_INLINE float lumen_expf(float x) {
    // Two selects, each of which clang emits as one max or min instruction (their operand order
    // keeps a NaN): written as one nested ?: it became a compare, a min and a blend, and SiLU with
    // AVX2 took 10.2 cycles per 8 floats instead of 9.1 (Zen 5, L1-resident, one thread).
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    // n = round(x / ln 2) by adding 1.5 * 2^23 + 127: the sum's low mantissa bits hold n + 127,
    // which shifted into the exponent field make 2^n (no floor, no conversion to integer: 3 fewer
    // vector operations than floor + convert + add, the rest of e^x's 19).
    const float shifter = 12582912.0f + 127.0f;
    float t = x * 1.44269504088896341f + shifter;
    uint32_t tb;
    memcpy(&tb, &t, 4);
    float n = t - shifter;
    float r = x - n * 0.693359375f;          // ln2 split in a high part exact in f32 ...
    r = r + n * 2.12194440e-4f;               // ... and the low remainder
    // Minimax polynomial for e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * lumen_bits_to_float(tb << 23);
}

LUMEN_INLINE float lumen_sigmoidf(float x) { return 1.0f / (1.0f + lumen_expf(-x)); }

/// erfc(z) for z >= 0 with a fractional error below 1.2e-7 (Numerical Recipes' Chebyshev fit).
LUMEN_INLINE float lumen_erfc_pos(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * lumen_expf(-z * z + p);
}

/// GELU, exact (erf) form: 0.5 x (1 + erf(x/√2)) = 0.5 x erfc(-x/√2).
LUMEN_INLINE float lumen_gelu_erf(float x) {
    float z = fabsf(x) * 0.70710678118654752f;
    float c = lumen_erfc_pos(z);                       // erfc(|x|/√2)
    float erfc_neg = x >= 0.0f ? 2.0f - c : c;          // erfc(-x/√2)
    return 0.5f * x * erfc_neg;
}

/// GELU, tanh approximation: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
LUMEN_INLINE float lumen_gelu_tanh(float x) {
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    // 1 + tanh(u) = 2 sigmoid(2u)
    return x * lumen_sigmoidf(2.0f * u);
}

LUMEN_INLINE float lumen_silu(float x) { return x * lumen_sigmoidf(x); }
LUMEN_INLINE float lumen_quick_gelu(float x) { return x * lumen_sigmoidf(1.702f * x); }

// Put before a loop whose iteration i reads only element i of its inputs before writing element i of
// its output, where the output may be the input itself (the executor runs these ops in place).
// Without it clang guards the vectorised loop with a check that the arrays do not overlap, which an
// in-place call fails, and runs the scalar remainder loop over the whole array (7x slower for SiLU).
// Four vectors are interleaved: the exp/erfc chains are long and dependent, and one vector per
// iteration left GELU and SiLU latency-bound (GELU 1.3-1.4x faster interleaved).
#if defined(__clang__)
#define LUMEN_VECTORIZE_INPLACE _Pragma("clang loop vectorize(assume_safety) interleave_count(4)")
#else
#define LUMEN_VECTORIZE_INPLACE
#endif

// Instantiates `body` (an always-inline function taking the arguments `args`) once per
// instruction set, plus a dispatcher named `name` that picks by lumen_cpu_isa().
#if defined(__x86_64__)
#define LUMEN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define LUMEN_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define LUMEN_DISPATCH(name, params, args)                                         \
    LUMEN_TARGET_AVX512 static void name##_avx512 params { name##_body args; }     \
    LUMEN_TARGET_AVX2 static void name##_avx2 params { name##_body args; }         \
    static void name##_generic params { name##_body args; }                        \
    static void name##_dispatch params {                                           \
        int isa = lumen_cpu_isa();                                                 \
        if (isa >= LUMEN_ISA_AVX512) name##_avx512 args;                           \
        else if (isa >= LUMEN_ISA_AVX2) name##_avx2 args;                          \
        else name##_generic args;                                                  \
    }
#else
#define LUMEN_DISPATCH(name, params, args)                                         \
    static void name##_dispatch params { name##_body args; }
#endif

#endif
