#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Batched C = alpha · A·B (+ bias per column), tiled through shared memory: a workgroup computes
// a BM×BN tile of C, each invocation a TM×TN block of it held in registers, K walked in BK steps.
// A(m, k) = a[aBase + m·sam + k·sak] and B(k, n) = b[bBase + k·sbk + n·sbn], so transposed
// operands and PyTorch's [N, K] linear weights need no copy. B may be f32 or packed f16 (WDT).
// The workgroup size must be (BM/TM)·(BN/TN).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 4;
layout(constant_id = 6) const uint WDT = 0;

layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer Bw { uint b[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer C { ACT c[]; };
layout(push_constant) uniform P {
    uint M, N, K, sam, sak, sbk, sbn, hasBias;
    float alpha;
    uint bd1, bd2;           // batch dims 1 and 2 (dim 0 is implied by the dispatch)
    uint as0, as1, as2;      // batch strides of A
    uint bs0, bs1, bs2;      // batch strides of B
} p;

#include "common.glsl"

const uint TX = BN / TN;
const uint TY = BM / TM;
shared float As[BK * BM];
shared float Bs[BK * BN];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, z = gl_WorkGroupID.z;
    uint z2 = z % p.bd2, z1 = (z / p.bd2) % p.bd1, z0 = z / (p.bd2 * p.bd1);
    uint aBase = z0 * p.as0 + z1 * p.as1 + z2 * p.as2;
    uint bBase = z0 * p.bs0 + z1 * p.bs1 + z2 * p.bs2;
    uint tx = tid % TX, ty = tid / TX;

    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;

    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        // Tile loads walk the operand's contiguous axis with consecutive invocations.
        for (uint i = tid; i < BM * BK; i += gl_WorkGroupSize.x) {
            uint mm = p.sak == 1u ? i / BK : i % BM;
            uint kk = p.sak == 1u ? i % BK : i / BM;
            uint gm = m0 + mm, gk = k0 + kk;
            As[kk * BM + mm] = (gm < p.M && gk < p.K) ? float(a[aBase + gm * p.sam + gk * p.sak]) : 0.0;
        }
        for (uint i = tid; i < BN * BK; i += gl_WorkGroupSize.x) {
            uint nn = p.sbk == 1u ? i / BK : i % BN;
            uint kk = p.sbk == 1u ? i % BK : i / BN;
            uint gn = n0 + nn, gk = k0 + kk;
            Bs[kk * BN + nn] = (gn < p.N && gk < p.K) ? LOAD_PACKED(b, bBase + gk * p.sbk + gn * p.sbn, WDT) : 0.0;
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float ra[TM], rb[TN];
            // Rows ty + i·TY and columns tx + j·TX: neighbouring invocations read neighbouring words.
            for (uint i = 0u; i < TM; i++) ra[i] = As[kk * BM + ty + i * TY];
            for (uint j = 0u; j < TN; j++) rb[j] = Bs[kk * BN + tx + j * TX];
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i * TN + j] = fma(ra[i], rb[j], acc[i * TN + j]);
        }
        barrier();
    }
    uint cBase = z * p.M * p.N;
    for (uint i = 0u; i < TM; i++) {
        uint gm = m0 + ty + i * TY;
        if (gm >= p.M) continue;
        for (uint j = 0u; j < TN; j++) {
            uint gn = n0 + tx + j * TX;
            if (gn >= p.N) continue;
            float v = acc[i * TN + j] * p.alpha;
            if (p.hasBias != 0u) v += bias[gn];
            c[cBase + gm * p.N + gn] = ACT(v);
        }
    }
}
