/// Elementwise functions of one tensor.
public enum UnaryOp: String, Sendable, Hashable, CaseIterable {
    case silu
    /// GELU with the exact erf form (PyTorch's default).
    case gelu
    /// GELU with the tanh approximation (`approximate="tanh"`).
    case geluTanh
    /// x * sigmoid(1.702 x), as in CLIP.
    case quickGelu
}

/// Elementwise functions of two tensors, with NumPy broadcasting.
public enum BinaryOp: String, Sendable, Hashable, CaseIterable {
    case add, sub, mul, div
}

/// Parameters of a 2-D convolution.
public struct Conv2DParameters: Sendable, Hashable {
    public var strideH: Int, strideW: Int
    public var padH: Int, padW: Int
    public init(stride: Int = 1, padding: Int = 0) {
        self.init(strideH: stride, strideW: stride, padH: padding, padW: padding)
    }
    public init(strideH: Int, strideW: Int, padH: Int, padW: Int) {
        self.strideH = strideH
        self.strideW = strideW
        self.padH = padH
        self.padW = padW
    }
}

/// Parameters of the sinusoidal timestep embedding, as diffusers' `get_timestep_embedding`.
public struct TimestepEmbeddingParameters: Sendable, Hashable {
    public var dim: Int
    public var flipSinToCos: Bool
    public var downscaleFreqShift: Float
    public var scale: Float
    public var maxPeriod: Float
    public init(dim: Int, flipSinToCos: Bool = true, downscaleFreqShift: Float = 0, scale: Float = 1,
                maxPeriod: Float = 10000) {
        self.dim = dim
        self.flipSinToCos = flipSinToCos
        self.downscaleFreqShift = downscaleFreqShift
        self.scale = scale
        self.maxPeriod = maxPeriod
    }
}

/// One typed operation of a `Graph`. Operands are the node's `inputs`, in the order each case
/// documents.
public enum Op: Sendable {
    /// A tensor given at run time by name.
    case input(name: String)
    /// A tensor fixed at graph-building time (weights).
    case constant(Tensor)
    /// y = x · wᵀ (+ bias); inputs: x [..., K], w [N, K] (any float dtype), bias [N]?.
    case linear(hasBias: Bool)
    /// Batched product of two f32 tensors [..., M, K] · [..., K, N] (transposes applied first),
    /// scaled by alpha; leading dimensions broadcast.
    case matmul(transposeA: Bool, transposeB: Bool, alpha: Float)
    /// inputs: x [N, C, H, W], w [O, C, KH, KW] (any float dtype), bias [O]?.
    case conv2d(Conv2DParameters, hasBias: Bool)
    /// inputs: x [N, C, ...], gamma [C]?, beta [C]? (both or neither).
    case groupNorm(groups: Int, eps: Float, silu: Bool, affine: Bool)
    /// Over the last dimension; inputs: x, gamma?, beta? (both or neither).
    case layerNorm(eps: Float, affine: Bool)
    /// Over the last dimension.
    case softmax
    /// Multi-head scaled-dot-product attention; inputs q [B, Lq, H·D], k [B, Lk, H·D],
    /// v [B, Lk, H·D]; output [B, Lq, H·D].
    case attention(heads: Int, causal: Bool, scale: Float)
    case unary(UnaryOp)
    /// x [..., 2D] → first half × gelu(second half).
    case geglu
    case binary(BinaryOp)
    /// y = x · multiplier + addend.
    case affine(multiplier: Float, addend: Float)
    /// y = min(max(x, lower), upper).
    case clamp(lower: Float, upper: Float)
    case concat(axis: Int)
    /// Nearest-neighbour 2× upsampling of [N, C, H, W].
    case upsampleNearest2x
    /// Nearest-neighbour resize of [N, C, H, W] to [N, C, height, width], PyTorch's
    /// `interpolate(size=…, mode="nearest")` (source index ⌊dst · in/out⌋).
    case resizeNearest(height: Int, width: Int)
    /// Zero padding of [N, C, H, W] on each side.
    case pad(top: Int, bottom: Int, left: Int, right: Int)
    /// t [N] → [N, dim].
    case timestepEmbedding(TimestepEmbeddingParameters)
    /// A view with another shape (no copy).
    case reshape
    case permute([Int])
    /// A contiguous range along one axis.
    case slice(axis: Int, start: Int, length: Int)
    /// inputs: ids (i32) [...], table [V, D] (any float dtype) → [..., D].
    case embedding

    /// A short name for errors, profiles and benchmarks.
    public var name: String {
        switch self {
        case .input: return "input"
        case .constant: return "constant"
        case .linear: return "linear"
        case .matmul: return "matmul"
        case .conv2d: return "conv2d"
        case .groupNorm: return "group-norm"
        case .layerNorm: return "layer-norm"
        case .softmax: return "softmax"
        case .attention: return "attention"
        case .unary(let u): return u.rawValue
        case .geglu: return "geglu"
        case .binary(let b): return b.rawValue
        case .affine: return "affine"
        case .clamp: return "clamp"
        case .concat: return "concat"
        case .upsampleNearest2x: return "upsample-nearest-2x"
        case .resizeNearest: return "resize-nearest"
        case .pad: return "pad"
        case .timestepEmbedding: return "timestep-embedding"
        case .reshape: return "reshape"
        case .permute: return "permute"
        case .slice: return "slice"
        case .embedding: return "embedding"
        }
    }
}
