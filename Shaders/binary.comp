#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// y = a ∘ b with broadcasting: the executor merges dimensions and gives each operand a stride
// per output dimension (0 where it broadcasts); the output is contiguous.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 0;  // 0 add, 1 sub, 2 mul, 3 div
layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer B { ACT b[]; };
layout(std430, binding = 2) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count, dims[6], sa[6], sb[6]; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint r = i, oa = 0u, ob = 0u;
        for (int d = 5; d >= 0; d--) {
            uint idx = r % p.dims[d];
            r /= p.dims[d];
            oa += idx * p.sa[d];
            ob += idx * p.sb[d];
        }
        float va = float(a[oa]);
        float vb = float(b[ob]);
        float v;
        if (OP == 0u) v = va + vb;
        else if (OP == 1u) v = va - vb;
        else if (OP == 2u) v = va * vb;
        else v = va / vb;
        y[i] = ACT(v);
    }
}
