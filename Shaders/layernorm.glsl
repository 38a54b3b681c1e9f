// Layer normalisation over the last dimension, one workgroup per row (grid-stride over rows).
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer G { float gamma[]; };
layout(std430, binding = 2) readonly buffer B { float beta[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint rows, D, affine; float eps; } p;

#include "common.glsl"
#include "reduce.glsl"

void main() {
    uint t = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
        uint base = row * p.D;
        float s = 0.0;
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) s += float(x[base + i]);
        float mean = wg_sum(s) / float(p.D);
        float q = 0.0;
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) { float d = float(x[base + i]) - mean; q += d * d; }
        float rstd = inversesqrt(wg_sum(q) / float(p.D) + p.eps);
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) {
            float v = (float(x[base + i]) - mean) * rstd;
            if (p.affine != 0u) v = v * gamma[i] + beta[i];
            y[base + i] = ACT(v);
        }
    }
}
