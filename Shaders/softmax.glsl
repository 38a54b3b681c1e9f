// Softmax over the last dimension, one workgroup per row (grid-stride over rows).
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint rows, D; } p;

#include "common.glsl"
#include "reduce.glsl"

void main() {
    uint t = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
        uint base = row * p.D;
        float m = -3.402823466e38;
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) m = max(m, float(x[base + i]));
        m = wg_max(m);
        float s = 0.0;
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) s += exp(float(x[base + i]) - m);
        float inv = 1.0 / wg_sum(s);
        for (uint i = t; i < p.D; i += gl_WorkGroupSize.x) y[base + i] = ACT(exp(float(x[base + i]) - m) * inv);
    }
}
