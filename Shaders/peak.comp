#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// The device's f32 FMA rate: eight independent vec4 FMA chains per invocation, in registers,
// for `iters` iterations (64 FLOPs × 4 lanes per iteration); one store keeps the work alive.
// Used by `lumen bench --backend vulkan` for the "of peak" column, not by any graph.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { uint iters; float seed; } p;

void main() {
    vec4 base = vec4(p.seed) + vec4(float(gl_LocalInvocationID.x) * 1e-7);
    vec4 c0 = base, c1 = base + 0.001, c2 = base + 0.002, c3 = base + 0.003;
    vec4 c4 = base + 0.004, c5 = base + 0.005, c6 = base + 0.006, c7 = base + 0.007;
    const vec4 m = vec4(0.99990), k = vec4(0.0001);
    for (uint i = 0u; i < p.iters; i++) {
        c0 = fma(c0, m, k); c1 = fma(c1, m, k); c2 = fma(c2, m, k); c3 = fma(c3, m, k);
        c4 = fma(c4, m, k); c5 = fma(c5, m, k); c6 = fma(c6, m, k); c7 = fma(c7, m, k);
    }
    vec4 s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
    o[gl_WorkGroupID.x * gl_WorkGroupSize.x + gl_LocalInvocationID.x] = s.x + s.y + s.z + s.w;
}
