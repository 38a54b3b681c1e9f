#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
#extension GL_KHR_shader_subgroup_arithmetic : require
// Layer normalisation over the last dimension, one subgroup per row (see rownorm_subgroup.glsl).
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer G { float gamma[]; };
layout(std430, binding = 2) readonly buffer B { float beta[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(push_constant) uniform P { uint rows, D, affine; float eps; } p;

#include "common.glsl"
#include "rownorm_subgroup.glsl"

void main() {
    ROWS_BEGIN {
        uint base = row * p.D;
        float s = 0.0;
        LANE_LOOP(i) s += float(x[base + i]);
        float mean = subgroupAdd(s) / float(p.D);
        float q = 0.0;
        LANE_LOOP(i) { float d = float(x[base + i]) - mean; q += d * d; }
        float rstd = inversesqrt(subgroupAdd(q) / float(p.D) + p.eps);
        LANE_LOOP(i) {
            float v = (float(x[base + i]) - mean) * rstd;
            if (p.affine != 0u) v = v * gamma[i] + beta[i];
            y[base + i] = ACT(v);
        }
    }
}
