#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// GEGLU on x [rows, 2D]: y[r, j] = x[r, j] · gelu(x[r, D + j]).
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint count, D; } p;

#include "common.glsl"

void main() {
    for (uint i = GLOBAL_INDEX; i < p.count; i += GLOBAL_STRIDE) {
        uint r = i / p.D, j = i % p.D;
        uint base = r * 2u * p.D;
        y[i] = ACT(float(x[base + j]) * gelu_erf(float(x[base + p.D + j])));
    }
}
