// Group normalisation of x [N, C, spatial], one workgroup per (group, image); statistics in f32
// with two passes (mean, then the mean of squared deviations) as the reference computes them,
// and the SiLU that usually follows fused into the store.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer G { float gamma[]; };
layout(std430, binding = 2) readonly buffer B { float beta[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint C, spatial, groups, affine, fuseSilu; float eps; } p;

#include "common.glsl"
#include "reduce.glsl"

void main() {
    uint g = gl_WorkGroupID.x, n = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
    uint cpg = p.C / p.groups;
    uint len = cpg * p.spatial;
    uint base = (n * p.C + g * cpg) * p.spatial;
    float s = 0.0;
    for (uint i = t; i < len; i += gl_WorkGroupSize.x) s += float(x[base + i]);
    float mean = wg_sum(s) / float(len);
    float q = 0.0;
    for (uint i = t; i < len; i += gl_WorkGroupSize.x) { float d = float(x[base + i]) - mean; q += d * d; }
    float rstd = inversesqrt(wg_sum(q) / float(len) + p.eps);
    for (uint i = t; i < len; i += gl_WorkGroupSize.x) {
        float v = (float(x[base + i]) - mean) * rstd;
        if (p.affine != 0u) { uint c = g * cpg + i / p.spatial; v = v * gamma[c] + beta[c]; }
        y[base + i] = ACT(p.fuseSilu != 0u ? silu(v) : v);
    }
}
