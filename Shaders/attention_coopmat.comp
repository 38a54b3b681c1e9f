#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_EXT_control_flow_attributes : require
// Fused multi-head attention on tensor cores (GL_NV_cooperative_matrix), flash-attention style:
// a workgroup of NSG subgroups takes 16·NSG queries of one (batch, head), each subgroup 16 of
// them, and streams keys and values through shared memory BKV (32 or 64) at a time, loaded 8
// halves (16 bytes) per load: the executor uses it only where the head size and the row width
// are multiples of 8. Per block, a subgroup computes its 16×BKV scores S = (scale·Q)·Kᵀ on the tensor cores (f16 operands, f32
// sums), its lanes update the online softmax (two lanes per query row: running maximum, sum,
// and the rescaling of the output rows kept in shared memory as f32), and the tensor cores add
// P·V to the output. The head size is padded with zeros to DHP, a multiple of 16 (SD's 40, 80
// and 160 become 48, 80 and 160). Not causal (the executor keeps causal attention on the scalar
// kernels). The executor uses it only in f16-activation programs, after the tensor-core check.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NSG = 4;
layout(constant_id = 2) const uint DH = 64;
layout(constant_id = 3) const uint DHP = 64;
layout(constant_id = 4) const uint BKV = 32;   // 32 or 64

layout(std430, binding = 0) readonly buffer Q { ACT q[]; };
layout(std430, binding = 1) readonly buffer Kb { ACT k[]; };
layout(std430, binding = 2) readonly buffer Vb { ACT v[]; };
layout(std430, binding = 3) writeonly buffer O { ACT o[]; };
// The same keys and values as 16-byte chunks (the executor binds them twice).
layout(std430, binding = 4) readonly buffer K4 { uvec4 k4[]; };
layout(std430, binding = 5) readonly buffer V4 { uvec4 v4[]; };
layout(push_constant) uniform P { uint Lq, Lk, heads, width, causal; float scale; } p;

// Padded strides (elements) that keep every fragment on a 16-byte boundary; KV4 counts uvec4s.
const uint QS = DHP + 8u, KS = DHP + 8u, OS = DHP + 4u, SS = BKV + 4u, PS = BKV + 8u;
const uint KS4 = KS / 8u, DH4 = DH / 8u, NF = BKV / 16u, HALF = BKV / 2u;
shared float16_t Qs[16u * NSG * QS];
shared uvec4 KV4[BKV * KS4];
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
        for (uint i = tid; i < BKV * KS4; i += wg) {
            uint j = i / KS4, c = i % KS4, key = k0 + j;
            KV4[i] = (key < p.Lk && c < DH4) ? k4[((b * p.Lk + key) * p.width + h * DH) / 8u + c] : uvec4(0u);
        }
        barrier();
        FRAG32 sf[NF];
        [[unroll]] for (uint f = 0u; f < NF; f++) sf[f] = FRAG32(0.0);
        for (uint df = 0u; df < DHP; df += 16u) {
            FRAG16 qa;
            coopMatLoadNV(qa, Qs, qRow * QS + df, QS, false);
            [[unroll]] for (uint f = 0u; f < NF; f++) {
                // Kᵀ (d, key) is K (key, d) read column-major.
                FRAG16 kt;
                coopMatLoadNV(kt, KV4, (16u * f * KS + df) / 8u, KS4, true);
                sf[f] = coopMatMulAddNV(qa, kt, sf[f]);
            }
        }
        [[unroll]] for (uint f = 0u; f < NF; f++) coopMatStoreNV(sf[f], Ss, sBase + 16u * f, SS, false);
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        uint nk = min(BKV, p.Lk - k0);
        float tmax = -1e30;
        for (uint j = 0u; j < HALF; j++) {
            uint c = half_ * HALF + j;
            if (c < nk) tmax = max(tmax, Ss[sBase + r * SS + c]);
        }
        tmax = max(tmax, subgroupShuffleXor(tmax, 1u));
        float mnew = max(m, tmax), corr = exp(m - mnew), sum = 0.0;
        for (uint j = 0u; j < HALF; j++) {
            uint c = half_ * HALF + j;
            float pj = c < nk ? exp(Ss[sBase + r * SS + c] - mnew) : 0.0;
            sum += pj;
            Ps[pBase + r * PS + c] = float16_t(pj);
        }
        sum += subgroupShuffleXor(sum, 1u);
        l = l * corr + sum;
        m = mnew;
        for (uint c = half_; c < DHP; c += 2u) Os[oBase + r * OS + c] *= corr;

        barrier();
        for (uint i = tid; i < BKV * KS4; i += wg) {
            uint j = i / KS4, c = i % KS4, key = k0 + j;
            KV4[i] = (key < p.Lk && c < DH4) ? v4[((b * p.Lk + key) * p.width + h * DH) / 8u + c] : uvec4(0u);
        }
        barrier();
        FRAG16 pf[NF];
        [[unroll]] for (uint f = 0u; f < NF; f++) coopMatLoadNV(pf[f], Ps, pBase + 16u * f, PS, false);
        for (uint df = 0u; df < DHP; df += 16u) {
            FRAG32 acc;
            coopMatLoadNV(acc, Os, oBase + df, OS, false);
            [[unroll]] for (uint f = 0u; f < NF; f++) {
                FRAG16 vf;
                coopMatLoadNV(vf, KV4, (16u * f * KS + df) / 8u, KS4, false);
                acc = coopMatMulAddNV(pf[f], vf, acc);
            }
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
