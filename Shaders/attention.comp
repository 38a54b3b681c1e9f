#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Fused multi-head attention with an online softmax (FlashAttention's recurrence): a workgroup
// takes BQ queries of one (batch, head) and streams keys and values through shared memory BKV at
// a time. The Lq × Lk score matrix never exists; only a BQ × BKV tile of it, in shared memory.
//
// Each query is served by TPQ = DH / DPT invocations: together they compute the query's scores
// against the tile (each a share of the keys, full dot products from shared memory), then each
// keeps the running output for its own DPT dimensions. So an invocation holds DPT accumulators,
// not DH, and head sizes of 80 or 160 stay in registers. The softmax statistics (running max and
// sum) are kept, identically, by every invocation of a query; each score is exponentiated once. All sizes are specialization
// constants; the workgroup size must be BQ · DH / DPT.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BQ = 16;
layout(constant_id = 2) const uint BKV = 16;
layout(constant_id = 3) const uint DH = 64;
layout(constant_id = 4) const uint DPT = 8;

layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer Kb { ACT k[]; };
layout(std430, binding = 2) readonly buffer Vb { ACT v[]; };
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
layout(push_constant) uniform P { uint Lq, Lk, heads, width, causal; float scale; } p;

const uint TPQ = DH / DPT;
const uint QS = DH + 1;  // padded row stride of Qs and Ks: rows start in different banks
shared float Qs[BQ * QS];
shared float Ks[BKV * QS];
shared float Vs[BKV * DH];
shared float Ss[BQ * BKV];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint ql = tid / TPQ, part = tid % TPQ;
    uint bh = gl_WorkGroupID.y, b = bh / p.heads, h = bh % p.heads;
    uint q0 = gl_WorkGroupID.x * BQ;
    uint qi = q0 + ql;
    bool live = qi < p.Lq;
    uint d0 = part * DPT;

    for (uint i = tid; i < BQ * DH; i += gl_WorkGroupSize.x) {
        uint r = i / DH, d = i % DH, qq = q0 + r;
        Qs[r * QS + d] = qq < p.Lq ? float(q[(b * p.Lq + qq) * p.width + h * DH + d]) * p.scale : 0.0;
    }
    float acc[DPT];
    for (uint d = 0u; d < DPT; d++) acc[d] = 0.0;
    float m = -1e30, l = 0.0;

    // With a causal mask, no query of this workgroup sees a key past its last query.
    uint kend = p.causal != 0u ? min(p.Lk, min(p.Lq, q0 + BQ)) : p.Lk;
    for (uint k0 = 0u; k0 < kend; k0 += BKV) {
        barrier();  // the previous tile is no longer read
        for (uint i = tid; i < BKV * DH; i += gl_WorkGroupSize.x) {
            uint j = i / DH, d = i % DH, key = k0 + j;
            uint off = (b * p.Lk + key) * p.width + h * DH + d;
            Ks[j * QS + d] = key < p.Lk ? float(k[off]) : 0.0;
            Vs[i] = key < p.Lk ? float(v[off]) : 0.0;
        }
        barrier();
        for (uint j = part; j < BKV; j += TPQ) {
            float dot = 0.0;
            for (uint d = 0u; d < DH; d++) dot = fma(Qs[ql * QS + d], Ks[j * QS + d], dot);
            Ss[ql * BKV + j] = dot;
        }
        barrier();
        // Softmax of the tile: every invocation of a query reads the row maximum, then each
        // exponentiates its own share of the row in place (one exp per score), then all of them
        // accumulate their dimensions.
        uint nk = live ? min(BKV, kend - k0) : 0u;
        if (p.causal != 0u && live) nk = qi >= k0 ? min(nk, qi - k0 + 1u) : 0u;
        float mnew = m;
        for (uint j = 0u; j < nk; j++) mnew = max(mnew, Ss[ql * BKV + j]);
        barrier();
        for (uint j = part; j < nk; j += TPQ) Ss[ql * BKV + j] = exp(Ss[ql * BKV + j] - mnew);
        barrier();
        if (nk > 0u) {
            float corr = exp(m - mnew);
            l *= corr;
            for (uint d = 0u; d < DPT; d++) acc[d] *= corr;
            for (uint j = 0u; j < nk; j++) {
                float pj = Ss[ql * BKV + j];
                l += pj;
                for (uint d = 0u; d < DPT; d++) acc[d] = fma(pj, Vs[j * DH + d0 + d], acc[d]);
            }
            m = mnew;
        }
    }
    if (live) {
        float inv = 1.0 / l;
        uint oBase = (b * p.Lq + qi) * p.width + h * DH + d0;
        for (uint d = 0u; d < DPT; d++) o[oBase + d] = ACT(acc[d] * inv);
    }
}
