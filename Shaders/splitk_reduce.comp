#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// The second half of a split-K GEMM (gemm_v8.glsl with SPLIT 1): C[entry, m, n] = alpha · Σ over
// slices of part[((s · entries + entry) · M + m) · N + n] (+ bias per row or column), stored at
// cs · entry + c0 + m · ldc + n in the activation type. One invocation per element, grid-stride.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BIAS_ROWS = 0;
layout(std430, binding = 0) readonly buffer Part { float part[]; };
layout(std430, binding = 1) readonly buffer Bias { float bias[]; };
layout(std430, binding = 2) writeonly buffer C { ACT c[]; };
layout(push_constant) uniform P {
    uint M, N, slices, entries, ldc, cs, c0, hasBias;
    float alpha;
} p;

#include "common.glsl"

void main() {
    uint count = p.entries * p.M * p.N, plane = p.entries * p.M * p.N;
    for (uint i = GLOBAL_INDEX; i < count; i += GLOBAL_STRIDE) {
        uint n = i % p.N, m = (i / p.N) % p.M, e = i / (p.N * p.M);
        float v = 0.0;
        for (uint s = 0u; s < p.slices; s++) v += part[s * plane + i];
        v *= p.alpha;
        if (p.hasBias != 0u) v += bias[BIAS_ROWS == 1u ? m : n];
        c[e * p.cs + p.c0 + m * p.ldc + n] = ACT(v);
    }
}
