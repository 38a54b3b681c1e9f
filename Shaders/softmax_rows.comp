#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
#extension GL_KHR_shader_subgroup_arithmetic : require
// Softmax over the last dimension, one subgroup per row (see rownorm_subgroup.glsl).
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint rows, D; } p;

#include "common.glsl"
#include "rownorm_subgroup.glsl"

void main() {
    ROWS_BEGIN {
        uint base = row * p.D;
        float m = -3.402823466e38;
        LANE_LOOP(i) m = max(m, float(x[base + i]));
        m = subgroupMax(m);
        float s = 0.0;
        LANE_LOOP(i) s += exp(float(x[base + i]) - m);
        float inv = 1.0 / subgroupAdd(s);
        LANE_LOOP(i) y[base + i] = ACT(exp(float(x[base + i]) - m) * inv);
    }
}
