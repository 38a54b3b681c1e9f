#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// y[p, i, j] = x[p, rows[i], cols[j]], or 0 where an index is negative: nearest-neighbour resizing
// and zero padding of [N, C, H, W] planes, with the index tables computed on the host.
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer R { int rows[]; };
layout(std430, binding = 2) readonly buffer Cb { int cols[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count, H, W, OH, OW; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint j = i % p.OW, r = i / p.OW;
        uint oi = r % p.OH, plane = r / p.OH;
        int sr = rows[oi], sc = cols[j];
        float v = (sr >= 0 && sc >= 0) ? float(x[(plane * p.H + uint(sr)) * p.W + uint(sc)]) : 0.0;
        y[i] = ACT(v);
    }
}
