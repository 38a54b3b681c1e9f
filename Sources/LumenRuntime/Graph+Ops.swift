import Foundation

extension Graph {
    private func requireF32(_ v: Value, _ op: String, _ role: String) throws {
        guard v.dtype == .f32 else {
            throw LumenError.unsupportedDType(op: op, dtype: v.dtype, expected: "f32 \(role)")
        }
    }

    private func requireFloat(_ v: Value, _ op: String, _ role: String) throws {
        guard v.dtype.isFloatingPoint else {
            throw LumenError.unsupportedDType(op: op, dtype: v.dtype, expected: "f32, f16 or bf16 \(role)")
        }
    }

    private func requireVector(_ v: Value?, length: Int, _ op: String, _ role: String) throws {
        guard let v else { return }
        try requireFloat(v, op, role)
        guard v.shape.count == length, v.shape.rank >= 1 else {
            throw LumenError.shapeMismatch(op: op, detail: "\(role) has shape \(v.shape), expected [\(length)]")
        }
    }

    /// A linear layer: x [..., K] · wᵀ with w [N, K] in PyTorch's layout, plus an optional bias [N].
    public func linear(_ x: Value, weight w: Value, bias: Value? = nil) throws -> Value {
        try requireF32(x, "linear", "input")
        try requireFloat(w, "linear", "weight")
        guard x.shape.rank >= 1, w.shape.rank == 2 else {
            throw LumenError.shapeMismatch(op: "linear", detail: "input \(x.shape), weight \(w.shape); expected [..., K] and [N, K]")
        }
        guard x.shape.dim(-1) == w.shape[1] else {
            throw LumenError.shapeMismatch(
                op: "linear", detail: "input has \(x.shape.dim(-1)) features, weight \(w.shape) expects \(w.shape[1])")
        }
        try requireVector(bias, length: w.shape[0], "linear", "bias")
        var out = x.shape
        out[out.rank - 1] = w.shape[0]
        return try append(.linear(hasBias: bias != nil), [x, w] + (bias.map { [$0] } ?? []), shape: out, dtype: .f32)
    }

    /// Batched matrix product of two f32 tensors; the leading dimensions broadcast.
    public func matmul(_ a: Value, _ b: Value, transposeA: Bool = false, transposeB: Bool = false,
                       alpha: Float = 1) throws -> Value {
        try requireF32(a, "matmul", "operand")
        try requireF32(b, "matmul", "operand")
        guard a.shape.rank >= 2, b.shape.rank >= 2 else {
            throw LumenError.shapeMismatch(op: "matmul", detail: "operands \(a.shape) and \(b.shape) need rank ≥ 2")
        }
        let m = transposeA ? a.shape.dim(-1) : a.shape.dim(-2)
        let ka = transposeA ? a.shape.dim(-2) : a.shape.dim(-1)
        let kb = transposeB ? b.shape.dim(-1) : b.shape.dim(-2)
        let n = transposeB ? b.shape.dim(-2) : b.shape.dim(-1)
        guard ka == kb else {
            throw LumenError.shapeMismatch(op: "matmul", detail: "inner dimensions differ: \(a.shape) · \(b.shape) (K \(ka) vs \(kb))")
        }
        let batch = try broadcastShapes(Shape(Array(a.shape.dims.dropLast(2))), Shape(Array(b.shape.dims.dropLast(2))), op: "matmul")
        return try append(.matmul(transposeA: transposeA, transposeB: transposeB, alpha: alpha), [a, b],
                          shape: Shape(batch.dims + [m, n]), dtype: .f32)
    }

    /// 2-D convolution of x [N, C, H, W] with w [O, C, KH, KW] and an optional bias [O].
    public func conv2d(_ x: Value, weight w: Value, bias: Value? = nil, stride: Int = 1, padding: Int = 0) throws -> Value {
        try conv2d(x, weight: w, bias: bias, parameters: Conv2DParameters(stride: stride, padding: padding))
    }

    public func conv2d(_ x: Value, weight w: Value, bias: Value? = nil, parameters p: Conv2DParameters) throws -> Value {
        try requireF32(x, "conv2d", "input")
        try requireFloat(w, "conv2d", "weight")
        guard x.shape.rank == 4, w.shape.rank == 4 else {
            throw LumenError.shapeMismatch(op: "conv2d", detail: "input \(x.shape), weight \(w.shape); expected [N, C, H, W] and [O, C, KH, KW]")
        }
        guard x.shape[1] == w.shape[1] else {
            throw LumenError.shapeMismatch(op: "conv2d", detail: "input has \(x.shape[1]) channels, weight \(w.shape) expects \(w.shape[1])")
        }
        guard p.strideH > 0, p.strideW > 0, p.padH >= 0, p.padW >= 0 else {
            throw LumenError.invalidArgument(op: "conv2d", detail: "stride must be positive and padding non-negative")
        }
        let oh = (x.shape[2] + 2 * p.padH - w.shape[2]) / p.strideH + 1
        let ow = (x.shape[3] + 2 * p.padW - w.shape[3]) / p.strideW + 1
        guard x.shape[2] + 2 * p.padH >= w.shape[2], x.shape[3] + 2 * p.padW >= w.shape[3], oh > 0, ow > 0 else {
            throw LumenError.shapeMismatch(op: "conv2d", detail: "kernel \(w.shape[2])x\(w.shape[3]) larger than padded input \(x.shape)")
        }
        try requireVector(bias, length: w.shape[0], "conv2d", "bias")
        return try append(.conv2d(p, hasBias: bias != nil), [x, w] + (bias.map { [$0] } ?? []),
                          shape: [x.shape[0], w.shape[0], oh, ow], dtype: .f32)
    }

    /// Group normalisation of x [N, C, ...] with optional per-channel affine and fused SiLU.
    public func groupNorm(_ x: Value, groups: Int, weight: Value? = nil, bias: Value? = nil, eps: Float = 1e-5,
                          silu: Bool = false) throws -> Value {
        try requireF32(x, "group-norm", "input")
        guard x.shape.rank >= 2 else {
            throw LumenError.shapeMismatch(op: "group-norm", detail: "input \(x.shape) needs [N, C, ...]")
        }
        guard groups > 0, x.shape[1] % groups == 0 else {
            throw LumenError.invalidArgument(op: "group-norm", detail: "\(groups) groups do not divide \(x.shape[1]) channels")
        }
        guard (weight == nil) == (bias == nil) else {
            throw LumenError.invalidArgument(op: "group-norm", detail: "give both weight and bias, or neither")
        }
        try requireVector(weight, length: x.shape[1], "group-norm", "weight")
        try requireVector(bias, length: x.shape[1], "group-norm", "bias")
        let operands = [x] + (weight.map { [$0, bias!] } ?? [])
        return try append(.groupNorm(groups: groups, eps: eps, silu: silu, affine: weight != nil), operands,
                          shape: x.shape, dtype: .f32)
    }

    /// Layer normalisation over the last dimension.
    public func layerNorm(_ x: Value, weight: Value? = nil, bias: Value? = nil, eps: Float = 1e-5) throws -> Value {
        try requireF32(x, "layer-norm", "input")
        guard x.shape.rank >= 1 else { throw LumenError.shapeMismatch(op: "layer-norm", detail: "scalar input") }
        guard (weight == nil) == (bias == nil) else {
            throw LumenError.invalidArgument(op: "layer-norm", detail: "give both weight and bias, or neither")
        }
        try requireVector(weight, length: x.shape.dim(-1), "layer-norm", "weight")
        try requireVector(bias, length: x.shape.dim(-1), "layer-norm", "bias")
        let operands = [x] + (weight.map { [$0, bias!] } ?? [])
        return try append(.layerNorm(eps: eps, affine: weight != nil), operands, shape: x.shape, dtype: .f32)
    }

    /// Softmax over the last dimension.
    public func softmax(_ x: Value) throws -> Value {
        try requireF32(x, "softmax", "input")
        guard x.shape.rank >= 1 else { throw LumenError.shapeMismatch(op: "softmax", detail: "scalar input") }
        return try append(.softmax, [x], shape: x.shape, dtype: .f32)
    }

    /// Multi-head scaled-dot-product attention on [B, L, heads·D] tensors (the layout before
    /// the heads are split). `scale` defaults to 1/√D.
    public func attention(query q: Value, key k: Value, value v: Value, heads: Int, causal: Bool = false,
                          scale: Float? = nil) throws -> Value {
        for t in [q, k, v] { try requireF32(t, "attention", "operand") }
        guard q.shape.rank == 3, k.shape.rank == 3, v.shape.rank == 3 else {
            throw LumenError.shapeMismatch(op: "attention", detail: "q \(q.shape), k \(k.shape), v \(v.shape); expected [B, L, H·D]")
        }
        guard heads > 0, q.shape[2] % heads == 0 else {
            throw LumenError.invalidArgument(op: "attention", detail: "\(heads) heads do not divide width \(q.shape[2])")
        }
        guard k.shape == v.shape, q.shape[0] == k.shape[0], q.shape[2] == k.shape[2] else {
            throw LumenError.shapeMismatch(op: "attention", detail: "q \(q.shape), k \(k.shape), v \(v.shape) do not agree")
        }
        let d = q.shape[2] / heads
        return try append(.attention(heads: heads, causal: causal, scale: scale ?? 1 / Float(d).squareRoot()),
                          [q, k, v], shape: q.shape, dtype: .f32)
    }

    public func unary(_ op: UnaryOp, _ x: Value) throws -> Value {
        try requireF32(x, op.rawValue, "input")
        return try append(.unary(op), [x], shape: x.shape, dtype: .f32)
    }
    public func silu(_ x: Value) throws -> Value { try unary(.silu, x) }
    public func gelu(_ x: Value, approximateTanh: Bool = false) throws -> Value {
        try unary(approximateTanh ? .geluTanh : .gelu, x)
    }
    public func quickGelu(_ x: Value) throws -> Value { try unary(.quickGelu, x) }

    /// GEGLU on an already projected x [..., 2D]: x[..., :D] · gelu(x[..., D:]).
    public func geglu(_ x: Value) throws -> Value {
        try requireF32(x, "geglu", "input")
        guard x.shape.rank >= 1, x.shape.dim(-1) % 2 == 0 else {
            throw LumenError.shapeMismatch(op: "geglu", detail: "last dimension of \(x.shape) must be even")
        }
        var out = x.shape
        out[out.rank - 1] /= 2
        return try append(.geglu, [x], shape: out, dtype: .f32)
    }

    /// Elementwise op with NumPy broadcasting. Float constants of any storage type are accepted.
    public func binary(_ op: BinaryOp, _ a: Value, _ b: Value) throws -> Value {
        try requireFloat(a, op.rawValue, "operand")
        try requireFloat(b, op.rawValue, "operand")
        let shape = try broadcastShapes(a.shape, b.shape, op: op.rawValue)
        return try append(.binary(op), [a, b], shape: shape, dtype: .f32)
    }
    public func add(_ a: Value, _ b: Value) throws -> Value { try binary(.add, a, b) }
    public func mul(_ a: Value, _ b: Value) throws -> Value { try binary(.mul, a, b) }

    /// x · multiplier + addend.
    public func affine(_ x: Value, multiplier: Float, addend: Float = 0) throws -> Value {
        try requireF32(x, "affine", "input")
        return try append(.affine(multiplier: multiplier, addend: addend), [x], shape: x.shape, dtype: .f32)
    }

    /// min(max(x, min), max).
    public func clamp(_ x: Value, min lower: Float, max upper: Float) throws -> Value {
        try requireF32(x, "clamp", "input")
        guard lower <= upper else {
            throw LumenError.invalidArgument(op: "clamp", detail: "lower bound \(lower) above upper bound \(upper)")
        }
        return try append(.clamp(lower: lower, upper: upper), [x], shape: x.shape, dtype: .f32)
    }

    /// Concatenation along `axis` (negative counts from the end).
    public func concat(_ values: [Value], axis: Int) throws -> Value {
        guard let first = values.first else {
            throw LumenError.invalidArgument(op: "concat", detail: "no operands")
        }
        let r = first.shape.rank
        let ax = axis < 0 ? axis + r : axis
        guard ax >= 0, ax < r else {
            throw LumenError.invalidArgument(op: "concat", detail: "axis \(axis) out of range for rank \(r)")
        }
        var total = 0
        for v in values {
            try requireF32(v, "concat", "operand")
            guard v.shape.rank == r,
                  (0..<r).allSatisfy({ $0 == ax || v.shape[$0] == first.shape[$0] })
            else {
                throw LumenError.shapeMismatch(op: "concat", detail: "\(v.shape) does not match \(first.shape) off axis \(ax)")
            }
            total += v.shape[ax]
        }
        var out = first.shape
        out[ax] = total
        return try append(.concat(axis: ax), values, shape: out, dtype: .f32)
    }

    /// Nearest-neighbour 2× upsampling of [N, C, H, W].
    public func upsampleNearest2x(_ x: Value) throws -> Value {
        try requireF32(x, "upsample", "input")
        guard x.shape.rank == 4 else {
            throw LumenError.shapeMismatch(op: "upsample-nearest-2x", detail: "input \(x.shape); expected [N, C, H, W]")
        }
        return try append(.upsampleNearest2x, [x], shape: [x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2], dtype: .f32)
    }

    /// Nearest-neighbour resize of [N, C, H, W] to the given size (2× exactly uses the
    /// dedicated upsampling op).
    public func resizeNearest(_ x: Value, height: Int, width: Int) throws -> Value {
        try requireF32(x, "resize-nearest", "input")
        guard x.shape.rank == 4, height > 0, width > 0 else {
            throw LumenError.shapeMismatch(op: "resize-nearest", detail: "input \(x.shape) to \(height)x\(width); expected [N, C, H, W] and a positive size")
        }
        if height == 2 * x.shape[2] && width == 2 * x.shape[3] { return try upsampleNearest2x(x) }
        return try append(.resizeNearest(height: height, width: width), [x],
                          shape: [x.shape[0], x.shape[1], height, width], dtype: .f32)
    }

    /// Zero padding of [N, C, H, W].
    public func pad(_ x: Value, top: Int, bottom: Int, left: Int, right: Int) throws -> Value {
        try requireF32(x, "pad", "input")
        guard x.shape.rank == 4, min(top, bottom, left, right) >= 0 else {
            throw LumenError.invalidArgument(op: "pad", detail: "input \(x.shape), padding \(top),\(bottom),\(left),\(right); expected [N, C, H, W] and non-negative padding")
        }
        return try append(.pad(top: top, bottom: bottom, left: left, right: right), [x],
                          shape: [x.shape[0], x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right], dtype: .f32)
    }

    /// Sinusoidal embedding of timesteps t [N] → [N, dim].
    public func timestepEmbedding(_ t: Value, _ p: TimestepEmbeddingParameters) throws -> Value {
        try requireF32(t, "timestep-embedding", "timesteps")
        guard t.shape.rank == 1 else {
            throw LumenError.shapeMismatch(op: "timestep-embedding", detail: "timesteps \(t.shape); expected [N]")
        }
        guard p.dim >= 2, Float(p.dim / 2) != p.downscaleFreqShift else {
            throw LumenError.invalidArgument(op: "timestep-embedding", detail: "dim \(p.dim) too small for the shift \(p.downscaleFreqShift)")
        }
        return try append(.timestepEmbedding(p), [t], shape: [t.shape[0], p.dim], dtype: .f32)
    }

    /// A view with another shape of the same element count; one dimension may be -1.
    public func reshape(_ x: Value, _ shape: Shape) throws -> Value {
        var dims = shape.dims
        if let i = dims.firstIndex(of: -1) {
            let known = dims.enumerated().filter { $0.offset != i }.map(\.element).reduce(1, *)
            guard known > 0, x.shape.count % known == 0 else {
                throw LumenError.shapeMismatch(op: "reshape", detail: "cannot view \(x.shape) as \(shape)")
            }
            dims[i] = x.shape.count / known
        }
        guard dims.allSatisfy({ $0 >= 0 }), Shape(dims).count == x.shape.count else {
            throw LumenError.shapeMismatch(op: "reshape", detail: "cannot view \(x.shape) (\(x.shape.count) elements) as \(shape)")
        }
        return try append(.reshape, [x], shape: Shape(dims), dtype: x.dtype)
    }

    /// Reorders the axes: output axis i is input axis `order[i]`.
    public func permute(_ x: Value, _ order: [Int]) throws -> Value {
        try requireF32(x, "permute", "input")
        guard order.count == x.shape.rank, Set(order) == Set(0..<x.shape.rank) else {
            throw LumenError.invalidArgument(op: "permute", detail: "\(order) is not a permutation of the \(x.shape.rank) axes of \(x.shape)")
        }
        return try append(.permute(order), [x], shape: Shape(order.map { x.shape[$0] }), dtype: .f32)
    }

    /// Swaps two axes.
    public func transpose(_ x: Value, _ a: Int, _ b: Int) throws -> Value {
        let r = x.shape.rank
        let (a, b) = (a < 0 ? a + r : a, b < 0 ? b + r : b)
        guard a >= 0, a < r, b >= 0, b < r else {
            throw LumenError.invalidArgument(op: "transpose", detail: "axes \(a), \(b) out of range for \(x.shape)")
        }
        var order = Array(0..<r)
        order.swapAt(a, b)
        return try permute(x, order)
    }

    /// `length` entries starting at `start` along `axis`.
    public func slice(_ x: Value, axis: Int, start: Int, length: Int) throws -> Value {
        try requireFloat(x, "slice", "input")
        let r = x.shape.rank
        let ax = axis < 0 ? axis + r : axis
        guard ax >= 0, ax < r, start >= 0, length >= 0, start + length <= x.shape[ax] else {
            throw LumenError.invalidArgument(op: "slice", detail: "[\(start), \(start + length)) on axis \(axis) of \(x.shape)")
        }
        var out = x.shape
        out[ax] = length
        return try append(.slice(axis: ax, start: start, length: length), [x], shape: out, dtype: .f32)
    }

    /// Splits along `axis` into `parts` equal pieces (PyTorch's `chunk`).
    public func chunk(_ x: Value, parts: Int, axis: Int) throws -> [Value] {
        let n = x.shape.dim(axis)
        guard parts > 0, n % parts == 0 else {
            throw LumenError.invalidArgument(op: "chunk", detail: "\(parts) parts do not divide \(n) along axis \(axis) of \(x.shape)")
        }
        return try (0..<parts).map { try slice(x, axis: axis, start: $0 * n / parts, length: n / parts) }
    }

    /// Rows of `table` [V, D] picked by the i32 `ids`.
    public func embedding(_ ids: Value, table: Value) throws -> Value {
        guard ids.dtype == .i32 else {
            throw LumenError.unsupportedDType(op: "embedding", dtype: ids.dtype, expected: "i32 ids")
        }
        try requireFloat(table, "embedding", "table")
        guard table.shape.rank == 2 else {
            throw LumenError.shapeMismatch(op: "embedding", detail: "table \(table.shape); expected [V, D]")
        }
        return try append(.embedding, [ids, table], shape: Shape(ids.shape.dims + [table.shape[1]]), dtype: .f32)
    }
}

/// NumPy broadcasting of two shapes.
public func broadcastShapes(_ a: Shape, _ b: Shape, op: String) throws -> Shape {
    let r = max(a.rank, b.rank)
    var out = [Int](repeating: 1, count: r)
    for i in 0..<r {
        let da = i < r - a.rank ? 1 : a[i - (r - a.rank)]
        let db = i < r - b.rank ? 1 : b[i - (r - b.rank)]
        guard da == db || da == 1 || db == 1 else {
            throw LumenError.shapeMismatch(op: op, detail: "\(a) and \(b) do not broadcast")
        }
        out[i] = da == 1 ? db : da
    }
    return Shape(out)
}
