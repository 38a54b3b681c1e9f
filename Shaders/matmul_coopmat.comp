#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// Batched C = alpha · A·B (+ bias per column) on tensor cores: matmul.comp's operands, strides,
// batch dimensions and push constants, with coopmat_gemm.glsl's tile. The workgroup size
// (specialization constant 0) must be coopmat_gemm.glsl's THREADS (256); B may be f32 or
// packed f16 (WDT). Built only where glslang knows GL_NV_cooperative_matrix; used only on
// devices that offer it (VK_NV_cooperative_matrix with 16×16×16 f16·f16+f32, subgroups of 32).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WDT = 0;

layout(std430, binding = 0) readonly buffer A { ACT a[]; };
layout(std430, binding = 1) readonly buffer Bw { uint b[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer C { ACT c[]; };
layout(push_constant) uniform P {
    uint M, N, K, sam, sak, sbk, sbn, hasBias;
    float alpha;
    uint bd1, bd2;
    uint as0, as1, as2;
    uint bs0, bs1, bs2;
} p;

#include "common.glsl"

uint aBase, bBase, cBase;
#define GEMM_M p.M
#define GEMM_N p.N
#define GEMM_K p.K
float loadA(uint m, uint k) { return float(a[aBase + m * p.sam + k * p.sak]); }
float loadB(uint k, uint n) { return LOAD_PACKED(b, bBase + k * p.sbk + n * p.sbn, WDT); }
bool aKContiguous() { return p.sak == 1u; }
bool bNContiguous() { return p.sbn == 1u; }
void storeC(uint m, uint n, float v) {
    v *= p.alpha;
    if (p.hasBias != 0u) v += bias[n];
    c[cBase + m * p.N + n] = ACT(v);
}

#include "coopmat_gemm.glsl"

void main() {
    uint z = gl_WorkGroupID.z;
    uint z2 = z % p.bd2, z1 = (z / p.bd2) % p.bd1, z0 = z / (p.bd2 * p.bd1);
    aBase = z0 * p.as0 + z1 * p.as1 + z2 * p.as2;
    bBase = z0 * p.bs0 + z1 * p.bs1 + z2 * p.bs2;
    cBase = z * p.M * p.N;
    gemmTile(gl_WorkGroupID.y * BM, gl_WorkGroupID.x * BN);
}
