// The tensor-core GEMM tile shared by matmul_coopmat.comp and conv2d_coopmat.comp
// (GL_NV_cooperative_matrix: f16 operands, f32 accumulators). A workgroup of 8 subgroups of 32
// computes a BM×BN tile of C = A·B; each subgroup a WM×WN part of it as FM×FN 16×16 fragments.
// K is walked in BK steps: the next step's operands are loaded from memory into registers while
// the tensor cores work on this step's tile in shared memory (f16, rows padded by 8 halves so that
// fragment rows fall in different banks and every fragment starts on a 16-byte boundary).
//
// The including kernel defines, before this file: GEMM_M, GEMM_N, GEMM_K (the sizes),
// float loadA(uint m, uint k), float loadB(uint k, uint n) (zero is never asked for: the tile
// loader checks the bounds), bool aKContiguous(), bool bNContiguous() (which axis consecutive
// invocations should walk when loading), and void storeC(uint m, uint n, float v) (the epilogue).
// Operands are rounded to f16 on their way into shared memory: the executor uses these kernels
// only for programs whose activations are stored as f16 already (and weights are f16).
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_control_flow_attributes : require

const uint BM = 128, BN = 128, BK = 32;
const uint WM = 64, WN = 32;
const uint FM = WM / 16, FN = WN / 16;
const uint THREADS = (BM / WM) * (BN / WN) * 32;
const uint AS = BK + 8, BS = BN + 8;
const uint PER_A = BM * BK / THREADS, PER_B = BK * BN / THREADS;

shared float16_t As[BM * AS];
shared float16_t Bs[BK * BS];
shared float Cs[(THREADS / 32) * 256];

#define FRAG16 fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FRAG32 fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

// Element t of this invocation's share of the A tile: (row, k) inside the tile.
uvec2 aSlot(uint t, bool kContig) {
    uint i = gl_LocalInvocationID.x + t * THREADS;
    return kContig ? uvec2(i / BK, i % BK) : uvec2(i % BM, i / BM);
}
// Element t of the B tile: (k, column) inside the tile.
uvec2 bSlot(uint t, bool nContig) {
    uint i = gl_LocalInvocationID.x + t * THREADS;
    return nContig ? uvec2(i / BN, i % BN) : uvec2(i % BK, i / BK);
}

void gemmTile(uint m0, uint n0) {
    uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    uint wm0 = (sg / (BN / WN)) * WM, wn0 = (sg % (BN / WN)) * WN;
    bool aK = aKContiguous(), bN = bNContiguous();

    FRAG32 acc[FM * FN];
    [[unroll]] for (uint i = 0u; i < FM * FN; i++) acc[i] = FRAG32(0.0);

    float ra[PER_A], rb[PER_B];
    [[unroll]] for (uint t = 0u; t < PER_A; t++) {
        uvec2 s = aSlot(t, aK);
        uint gm = m0 + s.x, gk = s.y;
        ra[t] = (gm < GEMM_M && gk < GEMM_K) ? loadA(gm, gk) : 0.0;
    }
    [[unroll]] for (uint t = 0u; t < PER_B; t++) {
        uvec2 s = bSlot(t, bN);
        uint gk = s.x, gn = n0 + s.y;
        rb[t] = (gk < GEMM_K && gn < GEMM_N) ? loadB(gk, gn) : 0.0;
    }

    for (uint k0 = 0u; k0 < GEMM_K; k0 += BK) {
        [[unroll]] for (uint t = 0u; t < PER_A; t++) {
            uvec2 s = aSlot(t, aK);
            As[s.x * AS + s.y] = float16_t(ra[t]);
        }
        [[unroll]] for (uint t = 0u; t < PER_B; t++) {
            uvec2 s = bSlot(t, bN);
            Bs[s.x * BS + s.y] = float16_t(rb[t]);
        }
        barrier();
        uint k1 = k0 + BK;
        if (k1 < GEMM_K) {
            [[unroll]] for (uint t = 0u; t < PER_A; t++) {
                uvec2 s = aSlot(t, aK);
                uint gm = m0 + s.x, gk = k1 + s.y;
                ra[t] = (gm < GEMM_M && gk < GEMM_K) ? loadA(gm, gk) : 0.0;
            }
            [[unroll]] for (uint t = 0u; t < PER_B; t++) {
                uvec2 s = bSlot(t, bN);
                uint gk = k1 + s.x, gn = n0 + s.y;
                rb[t] = (gk < GEMM_K && gn < GEMM_N) ? loadB(gk, gn) : 0.0;
            }
        }
        [[unroll]] for (uint kk = 0u; kk < BK; kk += 16u) {
            FRAG16 fa[FM];
            FRAG16 fb[FN];
            [[unroll]] for (uint i = 0u; i < FM; i++) coopMatLoadNV(fa[i], As, (wm0 + i * 16u) * AS + kk, AS, false);
            [[unroll]] for (uint j = 0u; j < FN; j++) coopMatLoadNV(fb[j], Bs, kk * BS + wn0 + j * 16u, BS, false);
            [[unroll]] for (uint i = 0u; i < FM; i++)
                [[unroll]] for (uint j = 0u; j < FN; j++) acc[i * FN + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * FN + j]);
        }
        barrier();
    }

    // Epilogue: each fragment goes through this subgroup's 16×16 scratch, then every lane writes
    // 8 of its elements (16 consecutive columns per row: coalesced runs).
    uint scratch = sg * 256u;
    [[unroll]] for (uint i = 0u; i < FM; i++) {
        [[unroll]] for (uint j = 0u; j < FN; j++) {
            coopMatStoreNV(acc[i * FN + j], Cs, scratch, 16u, false);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint t = 0u; t < 8u; t++) {
                uint e = lane + 32u * t;
                uint gm = m0 + wm0 + i * 16u + e / 16u, gn = n0 + wn0 + j * 16u + e % 16u;
                if (gm < GEMM_M && gn < GEMM_N) storeC(gm, gn, Cs[scratch + e]);
            }
            subgroupBarrier();
        }
    }
}
