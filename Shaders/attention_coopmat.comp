#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
// Fused multi-head attention on tensor cores (GL_NV_cooperative_matrix), flash-attention style:
// a workgroup of NSG subgroups takes 16·NSG queries of one (batch, head), each subgroup 16 of
// them, and streams keys and values through shared memory BKV = 32 at a time. Per block, a
// subgroup computes its 16×32 scores S = (scale·Q)·Kᵀ on the tensor cores (f16 operands, f32
// sums), its lanes update the online softmax (two lanes per query row: running maximum, sum,
// and the rescaling of the output rows kept in shared memory as f32), and the tensor cores add
// P·V to the output. The head size is padded with zeros to DHP, a multiple of 16 (SD's 40, 80
// and 160 become 48, 80 and 160). Not causal (the executor keeps causal attention on the scalar
// kernels). The executor uses it only in f16-activation programs, after the tensor-core check.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NSG = 4;
layout(constant_id = 2) const uint DH = 64;
layout(constant_id = 3) const uint DHP = 64;

layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer Kb { ACT k[]; };
layout(std430, binding = 2) readonly buffer Vb { ACT v[]; };
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
layout(push_constant) uniform P { uint Lq, Lk, heads, width, causal; float scale; } p;

const uint BKV = 32u;
// Padded strides (elements) that keep every fragment on a 16-byte boundary.
const uint QS = DHP + 8u, KS = DHP + 8u, OS = DHP + 4u, SS = BKV + 4u, PS = BKV + 8u;
shared float16_t Qs[16u * NSG * QS];
shared float16_t KVs[BKV * KS];
shared float Os[NSG * 16u * OS];
shared float Ss[NSG * 16u * SS];
shared float16_t Ps[NSG * 16u * PS];

#define FRAG16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FRAG32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

void main() {
    uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint BQ = 16u * NSG;
    uint bh = gl_WorkGroupID.y, b = bh / p.heads, h = bh % p.heads;
    uint q0 = gl_WorkGroupID.x * BQ;

    for (uint i = tid; i < BQ * DHP; i += wg) {
        uint r = i / DHP, d = i % DHP, qi = q0 + r;
        float val = (qi < p.Lq && d < DH) ? float(q[(b * p.Lq + qi) * p.width + h * DH + d]) * p.scale : 0.0;
        Qs[r * QS + d] = float16_t(val);
    }
    for (uint i = tid; i < NSG * 16u * OS; i += wg) Os[i] = 0.0;

    uint r = lane >> 1u, half_ = lane & 1u;   // this lane's query row (of the subgroup's 16) and half of it
    uint sBase = sg * 16u * SS, pBase = sg * 16u * PS, oBase = sg * 16u * OS, qRow = sg * 16u;
    float m = -1e30, l = 0.0;

    for (uint k0 = 0u; k0 < p.Lk; k0 += BKV) {
        barrier();
        for (uint i = tid; i < BKV * DHP; i += wg) {
            uint j = i / DHP, d = i % DHP, key = k0 + j;
            KVs[j * KS + d] = float16_t((key < p.Lk && d < DH) ? float(k[(b * p.Lk + key) * p.width + h * DH + d]) : 0.0);
        }
        barrier();
        FRAG32 s0 = FRAG32(0.0), s1 = FRAG32(0.0);
        for (uint df = 0u; df < DHP; df += 16u) {
            FRAG16 qa, kt0, kt1;
            coopMatLoadNV(qa, Qs, qRow * QS + df, QS, false);
            // Kᵀ (d, key) is K (key, d) read column-major.
            coopMatLoadNV(kt0, KVs, df, KS, true);
            coopMatLoadNV(kt1, KVs, 16u * KS + df, KS, true);
            s0 = coopMatMulAddNV(qa, kt0, s0);
            s1 = coopMatMulAddNV(qa, kt1, s1);
        }
        coopMatStoreNV(s0, Ss, sBase, SS, false);
        coopMatStoreNV(s1, Ss, sBase + 16u, SS, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        uint nk = min(BKV, p.Lk - k0);
        float tmax = -1e30;
        for (uint j = 0u; j < 16u; j++) {
            uint c = half_ * 16u + j;
            if (c < nk) tmax = max(tmax, Ss[sBase + r * SS + c]);
        }
        tmax = max(tmax, subgroupShuffleXor(tmax, 1u));
        float mnew = max(m, tmax), corr = exp(m - mnew), sum = 0.0;
        for (uint j = 0u; j < 16u; j++) {
            uint c = half_ * 16u + j;
            float pj = c < nk ? exp(Ss[sBase + r * SS + c] - mnew) : 0.0;
            sum += pj;
            Ps[pBase + r * PS + c] = float16_t(pj);
        }
        sum += subgroupShuffleXor(sum, 1u);
        l = l * corr + sum;
        m = mnew;
        for (uint c = half_; c < DHP; c += 2u) Os[oBase + r * OS + c] *= corr;

        barrier();
        for (uint i = tid; i < BKV * DHP; i += wg) {
            uint j = i / DHP, d = i % DHP, key = k0 + j;
            KVs[j * KS + d] = float16_t((key < p.Lk && d < DH) ? float(v[(b * p.Lk + key) * p.width + h * DH + d]) : 0.0);
        }
        barrier();
        FRAG16 p0, p1;
        coopMatLoadNV(p0, Ps, pBase, PS, false);
        coopMatLoadNV(p1, Ps, pBase + 16u, PS, false);
        for (uint df = 0u; df < DHP; df += 16u) {
            FRAG32 acc;
            FRAG16 v0, v1;
            coopMatLoadNV(acc, Os, oBase + df, OS, false);
            coopMatLoadNV(v0, KVs, df, KS, false);
            coopMatLoadNV(v1, KVs, 16u * KS + df, KS, false);
            acc = coopMatMulAddNV(p0, v0, acc);
            acc = coopMatMulAddNV(p1, v1, acc);
            coopMatStoreNV(acc, Os, oBase + df, OS, false);
        }
    }
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    uint qi = q0 + qRow + r;
    if (qi < p.Lq) {
        float inv = 1.0 / l;
        for (uint d = half_; d < DH; d += 2u) o[(b * p.Lq + qi) * p.width + h * DH + d] = ACT(Os[oBase + r * OS + d] * inv);
    }
}
