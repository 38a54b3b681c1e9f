// The GEMM tile with 16-byte loads, shared by matmul_coopmat_v8.comp (tensor cores) and
// matmul_v8_emulated.comp (the same loads and layout, the fragments computed by scalar code, so
// that everything but the tensor-core instructions runs and is tested on any device).
//
// C[M, N] = alpha · A[M, K] · B[K, N] (+ bias), every operand f16: A row-major (K contiguous,
// row stride lda); B either K rows of N (BCOL 0, row stride ldb: an activation, or a
// convolution's im2col buffer) or N rows of K (BCOL 1: a linear layer's [out, in] weight); C
// row-major with row stride ldc, in the activation storage type. The executor uses it only when
// K, lda, ldb and every batch stride are multiples of 8 halves (one uvec4) and the bindings'
// offsets are 16-byte aligned, so a 16-byte chunk is either wholly inside K or wholly past it; a
// chunk that starts inside N but runs past it (BCOL 0, N not a multiple of 8) reads columns of
// the row's padding, whose products land only in columns of C that are not stored.
//
// A workgroup of 8 subgroups of 32 computes a 128×128 tile, each subgroup 64×32; K is walked in
// steps of 32: the next step's chunks are loaded into registers (two uvec4 per operand per
// invocation) while this step's tile, in shared memory with rows padded by 8 halves, is used.
//
// Split K (SPLIT 1, for grids too small to fill the device): workgroup z = entry · slices + s
// sums only K range s (kSlice long, a multiple of 32) and writes its f32 partial tile, without
// alpha or bias, to part[((s · entries + entry) · M + m) · N + n]; splitk_reduce.comp adds the
// slices and applies the epilogue.
#extension GL_EXT_control_flow_attributes : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BCOL = 0;       // B stored as N rows of K
layout(constant_id = 2) const uint BIAS_ROWS = 0;  // bias per row of C (a convolution's channel), else per column
layout(constant_id = 3) const uint SPLIT = 0;      // write f32 partial sums of one K range to part

layout(std430, binding = 0) readonly buffer A { uvec4 a[]; };
layout(std430, binding = 1) readonly buffer B { uvec4 b[]; };
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer C { ACT c[]; };
layout(std430, binding = 4) writeonly buffer Part { float part[]; };
layout(push_constant) uniform P {
    uint M, N, K, lda, ldb, ldc, hasBias;
    float alpha;
    uint bd1, bd2;
    uint as0, as1, as2;
    uint bs0, bs1, bs2;
    uint cs, c0;
    uint slices, kSlice, entries;
} p;

const uint BM = 128, BN = 128, BK = 32;
const uint WM = 64, WN = 32;
const uint THREADS = 256;
// Row strides of the shared tiles in uvec4 (8 halves): K-major tiles hold BK + 8 halves a row,
// the N-major B tile BN + 8.
const uint AS4 = (BK + 8u) / 8u, BS4 = (BN + 8u) / 8u;
shared uvec4 As[BM * AS4];
shared uvec4 Bs[BM * AS4];   // BCOL 0 uses BK * BS4 = 544 of its 640

uint aBase, bBase, cBase, entry, slice, kBegin, kEnd;

// This invocation's two chunks of each operand for the step at k0, zero outside the matrices.
void loadChunks(uint m0, uint n0, uint k0, inout uvec4 ra[2], inout uvec4 rb[2]) {
    uint tid = gl_LocalInvocationID.x;
    [[unroll]] for (uint t = 0u; t < 2u; t++) {
        uint q = tid + t * THREADS;
        uint row = q >> 2, kc = (q & 3u) * 8u;
        uint gm = m0 + row, gk = k0 + kc;
        ra[t] = (gm < p.M && gk < kEnd) ? a[(aBase + gm * p.lda + gk) >> 3] : uvec4(0u);
        if (BCOL == 1u) {
            uint gn = n0 + row;
            rb[t] = (gn < p.N && gk < kEnd) ? b[(bBase + gn * p.ldb + gk) >> 3] : uvec4(0u);
        } else {
            uint krow = q >> 4, nc = (q & 15u) * 8u;
            uint gk2 = k0 + krow, gn = n0 + nc;
            rb[t] = (gk2 < kEnd && gn < p.N) ? b[(bBase + gk2 * p.ldb + gn) >> 3] : uvec4(0u);
        }
    }
}

void storeChunks(uvec4 ra[2], uvec4 rb[2]) {
    uint tid = gl_LocalInvocationID.x;
    [[unroll]] for (uint t = 0u; t < 2u; t++) {
        uint q = tid + t * THREADS;
        As[(q >> 2) * AS4 + (q & 3u)] = ra[t];
        if (BCOL == 1u) Bs[(q >> 2) * AS4 + (q & 3u)] = rb[t];
        else Bs[(q >> 4) * BS4 + (q & 15u)] = rb[t];
    }
}

// The epilogue of one element of C.
void storeC(uint m, uint n, float v) {
    if (m >= p.M || n >= p.N) return;
    if (SPLIT == 1u) {
        part[((slice * p.entries + entry) * p.M + m) * p.N + n] = v;
        return;
    }
    v *= p.alpha;
    if (p.hasBias != 0u) v += bias[BIAS_ROWS == 1u ? m : n];
    c[cBase + m * p.ldc + n] = ACT(v);
}

void setBases() {
    uint z = gl_WorkGroupID.z / p.slices;
    entry = z;
    slice = gl_WorkGroupID.z % p.slices;
    kBegin = slice * p.kSlice;
    kEnd = min(p.K, kBegin + p.kSlice);
    uint z2 = z % p.bd2, z1 = (z / p.bd2) % p.bd1, z0 = z / (p.bd2 * p.bd1);
    aBase = z0 * p.as0 + z1 * p.as1 + z2 * p.as2;
    bBase = z0 * p.bs0 + z1 * p.bs1 + z2 * p.bs2;
    cBase = z * p.cs + p.c0;
}
