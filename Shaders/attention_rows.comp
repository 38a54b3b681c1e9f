#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Fused multi-head attention with an online softmax, one query per invocation: a workgroup
// takes gl_WorkGroupSize.x queries of one (batch, head) and streams keys and values through
// shared memory BKV at a time; each invocation keeps its query and output row (DH values each)
// in registers and rescales the output when the running maximum grows. The Lq × Lk score matrix
// never exists. Fewer barriers than attention.comp, more registers per invocation: the executor
// uses it for small head sizes (see AttentionTiles).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BKV = 16;
layout(constant_id = 2) const uint DH = 64;

layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer Kb { ACT k[]; };
layout(std430, binding = 2) readonly buffer Vb { ACT v[]; };
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
layout(push_constant) uniform P { uint Lq, Lk, heads, width, causal; float scale; } p;

shared float Ks[BKV * DH];
shared float Vs[BKV * DH];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint bh = gl_WorkGroupID.y, b = bh / p.heads, h = bh % p.heads;
    uint q0 = gl_WorkGroupID.x * gl_WorkGroupSize.x;
    uint qi = q0 + tid;
    bool live = qi < p.Lq;

    float qr[DH], acc[DH];
    uint qBase = (b * p.Lq + min(qi, p.Lq - 1u)) * p.width + h * DH;
    for (uint d = 0u; d < DH; d++) { qr[d] = float(q[qBase + d]) * p.scale; acc[d] = 0.0; }
    float m = -1e30, l = 0.0;

    uint kend = p.causal != 0u ? min(p.Lk, min(p.Lq, q0 + gl_WorkGroupSize.x)) : p.Lk;
    for (uint k0 = 0u; k0 < kend; k0 += BKV) {
        for (uint i = tid; i < BKV * DH; i += gl_WorkGroupSize.x) {
            uint j = i / DH, d = i % DH, key = k0 + j;
            uint off = (b * p.Lk + key) * p.width + h * DH + d;
            Ks[i] = key < p.Lk ? float(k[off]) : 0.0;
            Vs[i] = key < p.Lk ? float(v[off]) : 0.0;
        }
        barrier();
        if (live) {
            uint nk = min(BKV, kend - k0);
            if (p.causal != 0u) nk = qi >= k0 ? min(nk, qi - k0 + 1u) : 0u;
            float s[BKV];
            float tmax = -1e30;
            for (uint j = 0u; j < nk; j++) {
                float dot = 0.0;
                for (uint d = 0u; d < DH; d++) dot = fma(qr[d], Ks[j * DH + d], dot);
                s[j] = dot;
                tmax = max(tmax, dot);
            }
            if (nk > 0u) {
                float mnew = max(m, tmax);
                float corr = exp(m - mnew);
                l *= corr;
                for (uint d = 0u; d < DH; d++) acc[d] *= corr;
                for (uint j = 0u; j < nk; j++) {
                    float pj = exp(s[j] - mnew);
                    l += pj;
                    for (uint d = 0u; d < DH; d++) acc[d] = fma(pj, Vs[j * DH + d], acc[d]);
                }
                m = mnew;
            }
        }
        barrier();
    }
    if (live) {
        float inv = 1.0 / l;
        uint oBase = (b * p.Lq + qi) * p.width + h * DH;
        for (uint d = 0u; d < DH; d++) o[oBase + d] = ACT(acc[d] * inv);
    }
}
