// Lumen CPU kernels: the hot loops of the CPU executor, in C so that each instruction set
// (AVX-512, AVX2+FMA+F16C, portable) gets its own code path chosen at run time. The Swift
// executor owns shapes, scheduling and memory; every function here is handed plain pointers.
//
// Threading model: a kernel that takes (task, ntasks) does the share `task` of 0..<ntasks of
// the whole job; the caller runs all tasks on its thread pool. The split is the kernel's
// choice (rows, columns or images), so callers never need to know the blocking.
#ifndef LUMEN_CPU_H
#define LUMEN_CPU_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// Instruction-set selection
// ---------------------------------------------------------------------------------------------

typedef enum {
    LUMEN_ISA_GENERIC = 0,  // portable C (any CPU, arm64 included)
    LUMEN_ISA_AVX2 = 1,     // x86-64 with AVX2 + FMA + F16C
    LUMEN_ISA_AVX512 = 2,   // x86-64 with AVX-512 F/BW/DQ/VL (+ FMA, F16C)
} lumen_isa;

/// The best instruction set this CPU supports.
int lumen_cpu_detect_isa(void);
/// The instruction set the kernels use now (detected, or lowered by lumen_cpu_set_isa).
int lumen_cpu_isa(void);
/// Lower (never raise beyond what the CPU has) the instruction set the kernels use; returns the
/// level actually set. Tests use it to run every path on one machine. The environment variable
/// LUMEN_CPU_ISA=generic|avx2|avx512 does the same at start-up.
int lumen_cpu_set_isa(int isa);
/// "generic", "avx2" or "avx512".
const char *lumen_isa_name(int isa);

/// The per-core L2 cache size the GEMM blocking is chosen for, in bytes: CPUID leaf 0x80000006
/// (ECX bits 31:16, KiB; AMD and Intel both report it), 256 KiB when the CPU does not say, or
/// what lumen_cpu_set_l2_bytes / LUMEN_CPU_L2_KIB set.
int64_t lumen_cpu_l2_bytes(void);
/// Sets the L2 size the blocking assumes (0 = detect again); returns the size now in force. Tests
/// use it to run both GEMM loop orders on one machine.
int64_t lumen_cpu_set_l2_bytes(int64_t bytes);

/// The CPUs this process may run on (sched_getaffinity: taskset, a container's cpuset): returns
/// how many there are and writes the first `max` of their ids (ascending) to `cpus`; -1 where the
/// mask cannot be read (or off Linux).
int lumen_cpu_affinity(int *cpus, int max);

/// Whether this CPU can compute in bf16: AVX512_BF16 (CPUID leaf 7 subleaf 1, EAX bit 5) on top
/// of the AVX-512 level with the OS saving the AVX-512 state. Always 0 on other architectures.
int lumen_cpu_bf16_supported(void);
/// Turns bf16 compute on or off (process-wide) for lumen_linear (M > 4 rows), lumen_conv2d (at
/// least 192 output channels; fewer stay f32, where packing dominates) and lumen_matmul_f32: both operands are rounded to bfloat16 (round to nearest even) while they
/// are packed, multiplied in pairs along K with VDPBF16PS and accumulated in f32; outputs, bias
/// and epilogues stay f32. It takes effect only while the CPU has AVX512_BF16 and the kernels'
/// level is avx512 (see lumen_cpu_set_isa); returns whether bf16 compute is now on. Off by
/// default, or on from the first use when the environment variable LUMEN_CPU_BF16=1 is set.
/// When off, results are bit-for-bit those of the f32 kernels.
int lumen_cpu_set_bf16(int enabled);
/// Whether bf16 compute is on now (requested, supported, and the level is avx512).
int lumen_cpu_bf16(void);

// ---------------------------------------------------------------------------------------------
// Storage types of weights
// ---------------------------------------------------------------------------------------------

typedef enum {
    LUMEN_DT_F32 = 0,
    LUMEN_DT_F16 = 1,
    LUMEN_DT_BF16 = 2,
} lumen_dtype;

/// Converts `count` elements of `src` (stored as `dtype`) to f32.
void lumen_convert_to_f32(const void *src, int dtype, float *dst, int64_t count);
/// Converts f32 to IEEE half (round to nearest even) / bfloat16 (round to nearest even).
void lumen_f32_to_f16(const float *src, uint16_t *dst, int64_t count);
void lumen_f32_to_bf16(const float *src, uint16_t *dst, int64_t count);

// ---------------------------------------------------------------------------------------------
// GEMM family (gemm.c, conv.c)
// ---------------------------------------------------------------------------------------------

/// Linear layer: y[m*ldy + n] = sum_k x[m*ldx + k] * w[n*ldw + k] (+ bias[n]) (+ y[m*ldy + n]
/// when `accumulate` is non-zero). x is f32, w is stored as `wdtype` (PyTorch's [out, in]
/// layout) and converted while packing; bias is f32 or NULL.
void lumen_linear(const float *x, int64_t ldx,
                  const void *w, int wdtype, int64_t ldw,
                  const float *bias,
                  float *y, int64_t ldy,
                  int64_t M, int64_t N, int64_t K,
                  int accumulate, int task, int ntasks);

/// f32 matrix product of two activations: c[m*ldc + n] = alpha * sum_k A(m,k) * B(k,n), where
/// A(m,k) = transA ? a[k*lda + m] : a[m*lda + k] and B(k,n) = transB ? b[n*ldb + k] : b[k*ldb + n].
void lumen_matmul_f32(const float *a, int64_t lda, int transA,
                      const float *b, int64_t ldb, int transB,
                      float *c, int64_t ldc,
                      int64_t M, int64_t N, int64_t K,
                      float alpha, int task, int ntasks);

/// 2-D convolution (cross-correlation, as PyTorch) over a batch of NCHW images, as an implicit
/// GEMM: no im2col buffer of the whole input is ever built.
/// x: [batch, C, H, W] f32; w: [O, C, KH, KW] stored as `wdtype`; bias: [O] f32 or NULL;
/// y: [batch, O, OH, OW] f32 with OH = (H + 2*PH - KH)/SH + 1, OW likewise.
void lumen_conv2d(const float *x, int64_t batch, int64_t C, int64_t H, int64_t W,
                  const void *w, int wdtype, const float *bias,
                  float *y, int64_t O, int64_t KH, int64_t KW,
                  int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                  int64_t OH, int64_t OW,
                  int task, int ntasks);

/// Ops fused after a convolution (lumen_conv2d_ex), applied to each output value in this order:
/// + residual (an f32 tensor laid out as y, [batch, O, OH, OW]; NULL: none), then, with `affine`,
/// v * mul + add, then, with `clamp`, min(max(v, lo), hi) as Swift's min and max compute it (NaN
/// stays NaN). Each rounds as the separate op would: the results equal the unfused ops' bit for bit.
/// The residual may overlap neither x nor y (y holds partial sums before the residual is read).
typedef struct {
    const float *residual;
    int affine;
    float mul, add;
    int clamp;
    float lo, hi;
} lumen_conv_epilogue;

/// lumen_conv2d with fused ops after it (`epilogue` may be NULL: none).
void lumen_conv2d_ex(const float *x, int64_t batch, int64_t C, int64_t H, int64_t W,
                     const void *w, int wdtype, const float *bias,
                     float *y, int64_t O, int64_t KH, int64_t KW,
                     int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                     int64_t OH, int64_t OW, const lumen_conv_epilogue *epilogue,
                     int task, int ntasks);

/// Direct 3x3 convolutions (stride 1, padding 1, AVX2 and AVX-512): lumen_conv2d computes these
/// from the input rows, without the implicit GEMM's gathered panels, where that is faster (mode 1,
/// the default), never (0), or wherever the geometry allows (2; tests). LUMEN_CONV_DIRECT=0|1|2
/// sets it at start-up. Returns the mode now in force.
int lumen_cpu_set_conv_direct(int mode);
/// Whether lumen_conv2d takes the direct path for this geometry now (ISA, mode and bf16 included).
int lumen_conv2d_uses_direct(int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                             int64_t SH, int64_t SW, int64_t PH, int64_t PW);

/// Winograd 3x3 convolutions (stride 1, padding 1; conv_winograd.c): F(4x4, 3x3) or F(2x2, 3x3),
/// the alpha^2 products as GEMMs. Run in phases with a barrier between them: plan, allocate
/// `scratch_floats` floats (64-byte aligned), then for each phase in order call
/// lumen_winograd_run_phase on every task. The mode: 0 never, 1 where it is faster (default),
/// 2 wherever the geometry allows (tests); LUMEN_CONV_WINOGRAD=0|1|2 sets it at start-up.
typedef struct {
    int64_t batch, C, H, W, O;
    int64_t m;                  // output tile side: 6, 4 or 2
    int64_t TH, TW;             // tiles per image column / row
    int64_t strips_per_block;   // tile rows (of all images) per tile block
    int64_t tb_tiles;           // tiles per tile block (the GEMMs' rows)
    int64_t ob;                 // output channels per block
    int64_t n_tblocks, n_oblocks;
    int64_t scratch_floats;
    // Fused mode (small weights): phase 0 transforms all the weights into the scratch, phase 1
    // has every task take units of tb_tiles consecutive tiles (in the order image, tile row, tile
    // column) through all three steps in its own cache.
    int64_t fused;
    // Fused mode with the GEMM's packing done by the transforms (pack_nr > 0): phase 0 writes U
    // in the GEMM's B panels of pack_nr output channels, the input transform writes V as the GEMM's
    // A rows at stride pack_ks, for the level `isa` the plan was made for.
    int64_t pack_nr, pack_ks, pack_mr, isa;
} lumen_winograd_plan;

int lumen_cpu_set_conv_winograd(int mode);
/// The Winograd mode in force (LUMEN_CONV_WINOGRAD or the last lumen_cpu_set_conv_winograd).
int lumen_cpu_conv_winograd(void);
/// The most scratch (floats) a plan may use: 12 M (48 MB) by default (<= 0 restores it). Larger
/// problems run in several blocks of tiles and of output channels. Returns the budget in force.
int64_t lumen_cpu_set_winograd_budget(int64_t floats);
/// Fused mode: -1 where it is faster (default), 0 never, 1 wherever the weights' transforms fit
/// its 4 MB (tests, A/B runs). Returns the setting in force.
int lumen_cpu_set_winograd_fused(int pref);
/// Plans the convolution of [batch, C, H, W] by O x C x KH x KW weights; returns 1 when the
/// Winograd path takes it (ISA, mode, bf16 compute and geometry checked), 0 otherwise. `m`: 0
/// chooses (6 in the fused mode at large images, else 4 where the scratch budget allows, else 2),
/// 2, 4 or 6 asks for that tile size.
int lumen_winograd_plan_make(int64_t batch, int64_t C, int64_t H, int64_t W, int64_t O,
                             int64_t KH, int64_t KW, int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                             int m, lumen_winograd_plan *plan);
int64_t lumen_winograd_phases(const lumen_winograd_plan *plan);
/// One phase on one task; y = conv(x) + bias, then the epilogue (NULL: none) as lumen_conv2d_ex.
void lumen_winograd_run_phase(const lumen_winograd_plan *plan, int64_t phase, const float *x,
                              const void *w, int wdtype, const float *bias, float *y,
                              const lumen_conv_epilogue *epilogue, float *scratch, int task,
                              int ntasks);
/// All phases on the calling thread with its own scratch (tools and tests).
void lumen_conv2d_winograd(const lumen_winograd_plan *plan, const float *x, const void *w,
                           int wdtype, const float *bias, float *y,
                           const lumen_conv_epilogue *epilogue);

/// Measures the f32 FMA rate one thread reaches with the given instruction set (GFLOP/s,
/// counting an FMA as 2 FLOPs), running for about `seconds`. Used to report kernels' fraction
/// of the machine's peak.
double lumen_measure_fma_gflops(int isa, double seconds);

// ---------------------------------------------------------------------------------------------
// Normalisation, softmax, attention, elementwise (kernels.c, attention.c)
// ---------------------------------------------------------------------------------------------

/// Group norm over x [batch, C, S] (S = spatial size): for each (image, group) the mean and
/// variance of its C/groups * S values (f32 statistics, two passes), then gamma/beta per channel
/// (either may be NULL), then SiLU when `silu` is non-zero. Tasks split (image, group) pairs.
void lumen_group_norm(const float *x, float *y, int64_t batch, int64_t C, int64_t S,
                      int64_t groups, float eps, const float *gamma, const float *beta,
                      int silu, int task, int ntasks);

/// Layer norm over the last dimension D of `rows` rows.
void lumen_layer_norm(const float *x, float *y, int64_t rows, int64_t D, float eps,
                      const float *gamma, const float *beta, int task, int ntasks);

/// Softmax over the last dimension D of `rows` rows (max-subtracted, f32).
void lumen_softmax(const float *x, float *y, int64_t rows, int64_t D, int task, int ntasks);

/// Fused multi-head attention with an online softmax (no Lq x Lk score matrix is stored).
/// q: [B, Lq, heads*Dh] with row stride ldq, k/v: [B, Lk, heads*Dh] with row strides ldk/ldv,
/// out: [B, Lq, heads*Dh] with row stride ldo. Batch strides are Lq*ldq etc. `causal` masks
/// key j > query i (keys and queries aligned at the start). Tasks split (batch, head, q-block).
/// Returns 0, or -1 when the thread's scratch memory could not be allocated (nothing written).
int lumen_attention(const float *q, int64_t ldq, const float *k, int64_t ldk,
                     const float *v, int64_t ldv, float *out, int64_t ldo,
                     int64_t B, int64_t Lq, int64_t Lk, int64_t heads, int64_t Dh,
                     float scale, int causal, int task, int ntasks);

/// The AVX2 attention kernel's keys per block for sequences longer than 128 keys: 64 by default
/// (its scores, queries and outputs then about fill a 32 KiB L1), or LUMEN_ATTN_KEY_BLOCK at
/// start-up, for A/B runs on CPUs with other L1 sizes (tools/avx2-check.sh). Accepts 8 to 128
/// (anything else, 0 included, restores 64); returns the size in force.
int lumen_cpu_set_attention_key_block(int keys);

typedef enum {
    LUMEN_UNARY_SILU = 0,
    LUMEN_UNARY_GELU_ERF = 1,
    LUMEN_UNARY_GELU_TANH = 2,
    LUMEN_UNARY_QUICK_GELU = 3,
} lumen_unary;

/// y[i] = f(x[i]) for i in [begin, end).
void lumen_unary_f32(int op, const float *x, float *y, int64_t begin, int64_t end);

/// GEGLU: x [rows, 2*D] -> y [rows, D], y = x[:, :D] * gelu_erf(x[:, D:]).
void lumen_geglu(const float *x, float *y, int64_t rows, int64_t D, int64_t rowBegin, int64_t rowEnd);

#ifdef __cplusplus
}
#endif

#endif
