#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// 2-D convolution as an implicit GEMM (no im2col buffer): per image, C[O, OH·OW] = W[O, C·KH·KW] ·
// X̂[C·KH·KW, OH·OW], where X̂ is gathered from x on the fly while the shared-memory tile is
// loaded (zero outside the padded border). Same tiling as matmul.comp; W may be f32 or packed
// f16 (WDT). The workgroup size must be (BM/TM)·(BN/TN). The gather's index arithmetic is
// strength-reduced: a host table gives each k = (c, ky, kx) its offset c·H·W + ky·W + kx and
// (ky, kx), and each invocation keeps the (oy·sh − ph, ox·sw − pw) of its current output column,
// recomputed only when the column changes (its column stays the same for the whole K loop when
// BN divides the workgroup size), so no element costs an integer division.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 4;
layout(constant_id = 6) const uint WDT = 0;

layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer Wt { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(std430, binding = 4) readonly buffer KTab { ivec2 ktab[]; };   // (offset, ky << 16 | kx) per k
layout(push_constant) uniform P {
    uint C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, hasBias;
} p;

#include "common.glsl"

const uint TX = BN / TN;
const uint TY = BM / TM;
shared float As[BK * BM];
shared float Bs[BK * BN];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, img = gl_WorkGroupID.z;
    uint K = p.C * p.KH * p.KW, N = p.OH * p.OW, khw = p.KH * p.KW;
    uint xBase = img * p.C * p.H * p.W;
    uint tx = tid % TX, ty = tid / TX;

    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;
    uint colN = 0xffffffffu;
    int colY = 0, colX = 0;

    for (uint k0 = 0u; k0 < K; k0 += BK) {
        for (uint i = tid; i < BM * BK; i += gl_WorkGroupSize.x) {
            uint mm = i / BK, kk = i % BK;
            uint gm = m0 + mm, gk = k0 + kk;
            As[kk * BM + mm] = (gm < p.O && gk < K) ? LOAD_PACKED(w, gm * K + gk, WDT) : 0.0;
        }
        for (uint i = tid; i < BN * BK; i += gl_WorkGroupSize.x) {
            uint nn = i % BN, kk = i / BN;
            uint gn = n0 + nn, gk = k0 + kk;
            float v = 0.0;
            if (gn < N && gk < K) {
                if (gn != colN) {
                    colN = gn;
                    colY = int((gn / p.OW) * p.sh) - int(p.ph);
                    colX = int((gn % p.OW) * p.sw) - int(p.pw);
                }
                ivec2 t = ktab[gk];
                int iy = colY + (t.y >> 16), ix = colX + (t.y & 0xffff);
                if (iy >= 0 && iy < int(p.H) && ix >= 0 && ix < int(p.W))
                    v = float(x[xBase + uint(t.x + colY * int(p.W) + colX)]);
            }
            Bs[kk * BN + nn] = v;
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float ra[TM], rb[TN];
            for (uint i = 0u; i < TM; i++) ra[i] = As[kk * BM + ty + i * TY];
            for (uint j = 0u; j < TN; j++) rb[j] = Bs[kk * BN + tx + j * TX];
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i * TN + j] = fma(ra[i], rb[j], acc[i * TN + j]);
        }
        barrier();
    }
    uint yBase = img * p.O * N;
    for (uint i = 0u; i < TM; i++) {
        uint gm = m0 + ty + i * TY;
        if (gm >= p.O) continue;
        float bv = p.hasBias != 0u ? bias[gm] : 0.0;
        for (uint j = 0u; j < TN; j++) {
            uint gn = n0 + tx + j * TX;
            if (gn < N) y[yBase + gm * N + gn] = ACT(acc[i * TN + j] + bv);
        }
    }
}
