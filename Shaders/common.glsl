// Shared helpers of the Lumen compute kernels.
//
// Indexing: every binding is at most maxStorageBufferRange bytes (a 32-bit quantity), so an
// element index inside one binding always fits in 32 bits; the executor refuses larger bindings
// before any kernel runs. Offsets between tensors live in the descriptors, not in the kernels.

// A weight-like operand stored as f32 words (WDT 0) or as packed f16 pairs (WDT 1). Reading f16
// through unpackHalf2x16 needs neither 16-bit storage nor shaderFloat16, so every device can
// keep f16 weights at half the memory.
#define LOAD_PACKED(buf, i, wdt) \
    ((wdt) == 0u ? uintBitsToFloat(buf[(i)]) : unpackHalf2x16(buf[(i) >> 1u])[(i) & 1u])

// Grid-stride loops: a kernel dispatched with at most 65535 groups still covers every element.
#define GLOBAL_INDEX (gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x)
#define GLOBAL_STRIDE (gl_NumWorkGroups.x * gl_WorkGroupSize.x)

float gelu_erf(float x) {
    // erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7): GLSL has no erf.
    float z = abs(x) * 0.70710678118654752;
    float t = 1.0 / (1.0 + 0.3275911 * z);
    float poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    float e = 1.0 - poly * exp(-z * z);
    float erfv = x < 0.0 ? -e : e;
    return 0.5 * x * (1.0 + erfv);
}

float gelu_tanh(float x) {
    float u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    // tanh saturates long before 15; clamping avoids exp overflow inside some drivers' tanh.
    return 0.5 * x * (1.0 + tanh(clamp(u, -15.0, 15.0)));
}

float silu(float x) { return x / (1.0 + exp(-x)); }
