#version 450
#extension GL_GOOGLE_include_directive : require
#include "act.glsl"
// C = alpha · A·B (+ bias) on tensor cores (GL_NV_cooperative_matrix, 16×16×16 f16 fragments,
// f32 accumulators), with gemm_v8.glsl's 16-byte loads and tile. Used for linear layers,
// matmuls and convolutions (as GEMMs over an im2col buffer, or directly for 1×1) in programs
// with f16 activations and f16 weights, once the kernels passed their check on the device.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#include "gemm_v8.glsl"

#define FRAG16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FRAG32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
const uint FM = WM / 16u, FN = WN / 16u;
shared float Cs[(THREADS / 32u) * 256u];

void main() {
    setBases();
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm0 = (sg / (BN / WN)) * WM, wn0 = (sg % (BN / WN)) * WN;

    FRAG32 acc[FM * FN];
    [[unroll]] for (uint i = 0u; i < FM * FN; i++) acc[i] = FRAG32(0.0);
    uvec4 ra[2], rb[2];
    loadChunks(m0, n0, kBegin, ra, rb);
    for (uint k0 = kBegin; k0 < kEnd; k0 += BK) {
        storeChunks(ra, rb);
        barrier();
        if (k0 + BK < kEnd) loadChunks(m0, n0, k0 + BK, ra, rb);
        [[unroll]] for (uint kk = 0u; kk < BK; kk += 16u) {
            FRAG16 fa[FM];
            FRAG16 fb[FN];
            // Offsets and strides count uvec4 elements of the shared arrays (8 halves each).
            [[unroll]] for (uint i = 0u; i < FM; i++)
                coopMatLoadNV(fa[i], As, (wm0 + i * 16u) * AS4 + kk / 8u, AS4, false);
            [[unroll]] for (uint j = 0u; j < FN; j++) {
                if (BCOL == 1u) coopMatLoadNV(fb[j], Bs, (wn0 + j * 16u) * AS4 + kk / 8u, AS4, true);
                else coopMatLoadNV(fb[j], Bs, kk * BS4 + (wn0 + j * 16u) / 8u, BS4, false);
            }
            [[unroll]] for (uint i = 0u; i < FM; i++)
                [[unroll]] for (uint j = 0u; j < FN; j++) acc[i * FN + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * FN + j]);
        }
        barrier();
    }

    // Each fragment through this subgroup's 16×16 scratch; every lane writes 8 of its elements.
    uint scratch = sg * 256u;
    [[unroll]] for (uint i = 0u; i < FM; i++) {
        [[unroll]] for (uint j = 0u; j < FN; j++) {
            coopMatStoreNV(acc[i * FN + j], Cs, scratch, 16u, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint t = 0u; t < 8u; t++) {
                uint e = lane + 32u * t;
                storeC(m0 + wm0 + i * 16u + e / 16u, n0 + wn0 + j * 16u + e % 16u, Cs[scratch + e]);
            }
            subgroupBarrier();
        }
    }
}
