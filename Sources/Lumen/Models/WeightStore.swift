import Foundation
import LumenRuntime

/// Where a model's weights come from, by their canonical (diffusers/transformers) names.
public protocol WeightStore: AnyObject {
    /// The weight `name`, which must have `shape`.
    func tensor(_ name: String, shape: Shape) throws -> Tensor
}

/// Where a canonical weight is stored in a file: a whole tensor under `name`, or one of `parts`
/// equal runs of its rows (along dimension 0), e.g. OpenCLIP's fused `in_proj_weight` [3·D, D],
/// whose rows are q, then k, then v. A part shares the file's bytes.
public struct StoredTensor: Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    public let name: String
    /// The part (`index` of `count`), nil for the whole tensor.
    public let rows: RowPart?
    /// Stored as the transpose of the canonical matrix (OpenCLIP's `text_projection` [in, out],
    /// which it multiplies from the right, where transformers has a Linear weight [out, in]).
    public let transposed: Bool

    public struct RowPart: Hashable, Sendable {
        public let index: Int
        public let count: Int
    }

    public init(_ name: String) {
        self.name = name
        rows = nil
        transposed = false
    }

    public init(stringLiteral name: String) { self.init(name) }

    /// The `index`-th of `count` equal runs of rows of `name`.
    public static func rows(_ index: Int, of count: Int, in name: String) -> StoredTensor {
        precondition(count > 0 && (0..<count).contains(index), "row part \(index) of \(count)")
        return StoredTensor(name: name, rows: RowPart(index: index, count: count), transposed: false)
    }

    /// The 2-D tensor `name`, read transposed.
    public static func transposed(_ name: String) -> StoredTensor {
        StoredTensor(name: name, rows: nil, transposed: true)
    }

    private init(name: String, rows: RowPart?, transposed: Bool) {
        self.name = name
        self.rows = rows
        self.transposed = transposed
    }

    /// A transformers text-encoder weight with and without the `text_model.` prefix (transformers 4
    /// writes it; transformers 5 drops it).
    static func transformersText(_ name: String) -> [StoredTensor] {
        let prefix = "text_model."
        return name.hasPrefix(prefix) ? [StoredTensor(name), StoredTensor(String(name.dropFirst(prefix.count)))] : [StoredTensor(name)]
    }

    public var description: String {
        transposed ? "\(name) (transposed)" : rows.map { "\(name) (rows, part \($0.index + 1) of \($0.count))" } ?? name
    }
}

/// Weights read from one or more safetensors files. `aliases` gives, for a canonical name, the
/// names to try in the files (for example with and without transformers' `text_model.` prefix,
/// or the original Stable Diffusion names of a single-file checkpoint).
public final class SafetensorsWeights: WeightStore {
    public let files: [SafetensorsFile]
    /// The prefix of this network's tensors when its files hold several networks (a single-file
    /// checkpoint: `model.diffusion_model.`, …), nil when every tensor of the files is its own.
    public let scope: String?
    private let aliases: (String) -> [StoredTensor]
    /// Canonical names that were read, for `lumen info` and for checking a file was used fully.
    public private(set) var used: Set<String> = []
    /// Applied to every tensor read (canonical name, tensor as stored): LoRA merging.
    var transform: ((String, Tensor) throws -> Tensor)?

    public init(files: [SafetensorsFile], scope: String? = nil, aliases: @escaping (String) -> [StoredTensor] = { [StoredTensor($0)] }) {
        self.files = files
        self.scope = scope
        self.aliases = aliases
    }

    public func tensor(_ name: String, shape: Shape) throws -> Tensor {
        for alias in aliases(name) {
            let candidate = alias.name
            for f in files where f.entries[candidate] != nil {
                var t = try f.tensor(candidate)
                if let part = alias.rows {
                    let rows = t.shape.dims.first ?? 0
                    guard rows % part.count == 0 else {
                        throw ModelFileError.wrongShape(path: f.path, tensor: candidate, expected: shape, got: t.shape)
                    }
                    let dims = [rows / part.count] + t.shape.dims.dropFirst()
                    let partBytes = dims.reduce(1, *) * t.dtype.size
                    t = try Tensor(shape: Shape(dims), dtype: t.dtype, storage: t.storage,
                                   byteOffset: t.byteOffset + part.index * partBytes)
                }
                if alias.transposed {
                    guard t.shape.rank == 2, shape.rank == 2, t.shape[0] == shape[1], t.shape[1] == shape[0] else {
                        throw ModelFileError.wrongShape(path: f.path, tensor: candidate, expected: Shape([shape.dims.last ?? 0, shape.dims.first ?? 0]), got: t.shape)
                    }
                    t = try Self.transpose(t)
                }
                if t.shape != shape && t.shape.count == shape.count
                    && t.shape.dims.filter({ $0 != 1 }) == shape.dims.filter({ $0 != 1 }) {
                    // Same values in another layout of unit dimensions: the original VAE stores its
                    // attention projections as 1×1 convolutions [C, C, 1, 1] where diffusers has [C, C].
                    t = try t.reshaped(shape)
                }
                guard t.shape == shape else {
                    throw ModelFileError.wrongShape(path: f.path, tensor: candidate, expected: shape, got: t.shape)
                }
                used.insert(name)
                return try transform?(name, t) ?? t
            }
        }
        let where_ = files.map(\.path).joined(separator: ", ")
        throw ModelFileError.missingTensor(path: where_, tensor: aliases(name).first?.name ?? name)
    }

    /// A copy of the matrix `t` [R, C] as [C, R], element bytes moved as they are (any dtype).
    static func transpose(_ t: Tensor) throws -> Tensor {
        let r = t.shape[0], c = t.shape[1], size = t.dtype.size
        var out = try Tensor(zeros: [c, r], dtype: t.dtype)
        try t.withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { dst in
                for i in 0..<r {
                    for j in 0..<c {
                        (dst.baseAddress! + (j * r + i) * size).copyMemory(from: src.baseAddress! + (i * c + j) * size, byteCount: size)
                    }
                }
            }
        }
        return out
    }
}

/// Deterministic random weights in f16 for building full-size architectures without a file
/// (benchmarks, architecture tests). Scales keep activations in a sane range: projections and
/// convolutions ~ U(-1, 1)/√fan_in, norm scales around 1, biases small.
public final class RandomWeights: WeightStore {
    public let dtype: DType
    private let seed: UInt64
    /// Parameters handed out so far (each name counted once).
    public private(set) var parameterCount = 0
    private var seen: Set<String> = []

    public init(seed: UInt64 = 0, dtype: DType = .f16) {
        self.seed = seed
        self.dtype = dtype
    }

    public func tensor(_ name: String, shape: Shape) throws -> Tensor {
        if seen.insert(name).inserted { parameterCount += shape.count }
        var state = seed ^ 0x9E37_79B9_7F4A_7C15
        for b in name.utf8 { state = (state ^ UInt64(b)) &* 0x100_0000_01B3 }
        let isNormScale = shape.rank == 1 && name.hasSuffix(".weight")
        let isBias = name.hasSuffix(".bias")
        let fanIn = shape.rank >= 2 ? shape.dims.dropFirst().reduce(1, *) : 1
        let scale: Float = name.contains("embedding") ? 0.02 : isNormScale ? 0.1 : isBias ? 0.05 : 1 / Float(fanIn).squareRoot()
        let offset: Float = isNormScale ? 1 : 0
        var t = try Tensor(zeros: shape, dtype: dtype)
        let count = shape.count
        let dtype = self.dtype
        try t.withUnsafeMutableBytes { raw in
            for i in 0..<count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                let u = Float(state >> 40) / Float(1 << 24) * 2 - 1
                let v = offset + scale * u
                switch dtype {
                case .f16: raw.storeBytes(of: HalfConversion.floatToHalf(v), toByteOffset: 2 * i, as: UInt16.self)
                case .bf16: raw.storeBytes(of: HalfConversion.floatToBfloat(v), toByteOffset: 2 * i, as: UInt16.self)
                default: raw.storeBytes(of: v, toByteOffset: 4 * i, as: Float.self)
                }
            }
        }
        return t
    }
}

/// A scope of a model's weights (a name prefix) and the graph its ops go into.
struct Module {
    let graph: Graph
    let weights: WeightStore
    let prefix: String
    /// The largest intermediate tensor (bytes, at 4 a value) the executor can bind, where it has a
    /// limit: blocks whose intermediates would exceed it compute in chunks.
    var maxTensorBytes: Int?

    init(graph: Graph, weights: WeightStore, prefix: String = "", maxTensorBytes: Int? = nil) {
        self.graph = graph
        self.weights = weights
        self.prefix = prefix
        self.maxTensorBytes = maxTensorBytes
    }

    func child(_ name: String) -> Module {
        Module(graph: graph, weights: weights, prefix: prefix.isEmpty ? name : prefix + "." + name, maxTensorBytes: maxTensorBytes)
    }

    func param(_ name: String, _ shape: Shape) throws -> Value {
        let full = prefix.isEmpty ? name : prefix + "." + name
        return try graph.constant(try weights.tensor(full, shape: shape), name: full)
    }

    func linear(_ x: Value, _ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true) throws -> Value {
        let m = child(name)
        return try graph.linear(x, weight: try m.param("weight", [outFeatures, inFeatures]),
                                bias: bias ? try m.param("bias", [outFeatures]) : nil)
    }

    func conv(_ x: Value, _ name: String, in inChannels: Int, out outChannels: Int, kernel: Int, stride: Int = 1,
              padding: Int? = nil, bias: Bool = true) throws -> Value {
        let m = child(name)
        return try graph.conv2d(x, weight: try m.param("weight", [outChannels, inChannels, kernel, kernel]),
                                bias: bias ? try m.param("bias", [outChannels]) : nil,
                                stride: stride, padding: padding ?? kernel / 2)
    }

    func groupNorm(_ x: Value, _ name: String, channels: Int, groups: Int, eps: Float, silu: Bool = false) throws -> Value {
        let m = child(name)
        return try graph.groupNorm(x, groups: groups, weight: try m.param("weight", [channels]),
                                   bias: try m.param("bias", [channels]), eps: eps, silu: silu)
    }

    func layerNorm(_ x: Value, _ name: String, dim: Int, eps: Float) throws -> Value {
        let m = child(name)
        return try graph.layerNorm(x, weight: try m.param("weight", [dim]), bias: try m.param("bias", [dim]), eps: eps)
    }
}
