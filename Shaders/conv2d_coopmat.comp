#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// 2-D convolution as an implicit GEMM on tensor cores: conv2d.comp's C[O, OH·OW] = W[O, C·KH·KW] ·
// X̂[C·KH·KW, OH·OW] with its push constants, and coopmat_gemm.glsl's tile. The workgroup size
// (specialization constant 0) must be coopmat_gemm.glsl's THREADS (256); W may be f32 or packed
// f16 (WDT).
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WDT = 0;

layout(std430, binding = 0) readonly buffer X { ACT x[]; };
layout(std430, binding = 1) readonly buffer Wt { uint w[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { ACT y[]; };
layout(std430, binding = 4) readonly buffer KTab { ivec2 ktab[]; };   // (offset, ky << 16 | kx) per k, as conv2d.comp
layout(push_constant) uniform P {
    uint C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, hasBias;
} p;

#include "common.glsl"

uint xBase, yBase, convK, convN;
#define GEMM_M p.O
#define GEMM_N convN
#define GEMM_K convK
float loadA(uint m, uint k) { return LOAD_PACKED(w, m * convK + k, WDT); }
// The gather without divisions (see conv2d.comp): the k table, and this invocation's current
// output column's (oy·sh − ph, ox·sw − pw), recomputed only when the column changes (never inside
// the K loop: coopmat_gemm.glsl's B loader gives each invocation one column).
uint colN = 0xffffffffu;
int colY = 0, colX = 0;
float loadB(uint k, uint n) {
    if (n != colN) {
        colN = n;
        colY = int((n / p.OW) * p.sh) - int(p.ph);
        colX = int((n % p.OW) * p.sw) - int(p.pw);
    }
    ivec2 t = ktab[k];
    int iy = colY + (t.y >> 16), ix = colX + (t.y & 0xffff);
    if (iy < 0 || iy >= int(p.H) || ix < 0 || ix >= int(p.W)) return 0.0;
    return float(x[xBase + uint(t.x + colY * int(p.W) + colX)]);
}
bool aKContiguous() { return true; }
bool bNContiguous() { return true; }
void storeC(uint m, uint n, float v) {
    if (p.hasBias != 0u) v += bias[m];
    y[yBase + m * convN + n] = ACT(v);
}

#include "coopmat_gemm.glsl"

void main() {
    uint img = gl_WorkGroupID.z;
    convK = p.C * p.KH * p.KW;
    convN = p.OH * p.OW;
    xBase = img * p.C * p.H * p.W;
    yBase = img * p.O * convN;
    gemmTile(gl_WorkGroupID.y * BM, gl_WorkGroupID.x * BN);
}
