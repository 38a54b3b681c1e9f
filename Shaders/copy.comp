#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// A strided copy over up to six dimensions: dst[dOff + Σ i·ds] = src[sOff + Σ i·ss]. Permute,
// slice, concat (one copy per operand) and nearest upsampling (source strides of 0) are all this.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer S { ACT src[]; };
layout(std430, binding = 1) writeonly buffer D { ACT dst[]; };
layout(push_constant) uniform P { uint count, sOff, dOff, dims[6], ss[6], ds[6]; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint r = i, so = p.sOff, dof = p.dOff;
        for (int d = 5; d >= 0; d--) {
            uint idx = r % p.dims[d];
            r /= p.dims[d];
            so += idx * p.ss[d];
            dof += idx * p.ds[d];
        }
        dst[dof] = src[so];
    }
}
