#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// matmul_coopmat_v8.comp with the tensor-core fragments replaced by scalar code: the same
// 16-byte loads, shared layout, bounds, batch strides and epilogue, runnable on any device with
// 16-bit storage. It exists to test those parts on lavapipe (which has no cooperative matrices);
// the executor never picks it by itself. Invocation i of the 256 is lane i % 32 of "subgroup"
// i / 32 whatever the device's subgroup size, and owns column wn0 + lane of its 64×32 part.
#include "gemm_v8.glsl"

float halfAt(uint tile, uint index) {   // tile 0: As, 1: Bs; index in halves
    uvec4 v = tile == 0u ? As[index >> 3] : Bs[index >> 3];
    return unpackHalf2x16(v[(index >> 1) & 3u])[index & 1u];
}

void main() {
    setBases();
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint tid = gl_LocalInvocationID.x, sg = tid / 32u, lane = tid % 32u;
    uint wm0 = (sg / (BN / WN)) * WM, wn0 = (sg % (BN / WN)) * WN;
    float acc[WM];
    [[unroll]] for (uint r = 0u; r < WM; r++) acc[r] = 0.0;
    uvec4 ra[2], rb[2];
    loadChunks(m0, n0, kBegin, ra, rb);
    for (uint k0 = kBegin; k0 < kEnd; k0 += BK) {
        storeChunks(ra, rb);
        barrier();
        if (k0 + BK < kEnd) loadChunks(m0, n0, k0 + BK, ra, rb);
        uint col = wn0 + lane;
        for (uint kk = 0u; kk < BK; kk++) {
            float bv = BCOL == 1u ? halfAt(1u, col * AS4 * 8u + kk) : halfAt(1u, kk * BS4 * 8u + col);
            for (uint r = 0u; r < WM; r++) acc[r] += halfAt(0u, (wm0 + r) * AS4 * 8u + kk) * bv;
        }
        barrier();
    }
    for (uint r = 0u; r < WM; r++) storeC(m0 + wm0 + r, n0 + wn0 + lane, acc[r]);
}
