import Foundation
import LumenRuntime

/// Where a model's weights come from, by their canonical (diffusers/transformers) names.
public protocol WeightStore: AnyObject {
    /// The weight `name`, which must have `shape`.
    func tensor(_ name: String, shape: Shape) throws -> Tensor
}

/// Weights read from one or more safetensors files. `aliases` gives, for a canonical name, the
/// names to try in the files (for example with and without transformers' `text_model.` prefix,
/// or the original Stable Diffusion names of a single-file checkpoint).
public final class SafetensorsWeights: WeightStore {
    public let files: [SafetensorsFile]
    /// The prefix of this network's tensors when its files hold several networks (a single-file
    /// checkpoint: `model.diffusion_model.`, …), nil when every tensor of the files is its own.
    public let scope: String?
    private let aliases: (String) -> [String]
    /// Canonical names that were read, for `lumen info` and for checking a file was used fully.
    public private(set) var used: Set<String> = []
    /// Applied to every tensor read (canonical name, tensor as stored): LoRA merging.
    var transform: ((String, Tensor) throws -> Tensor)?

    public init(files: [SafetensorsFile], scope: String? = nil, aliases: @escaping (String) -> [String] = { [$0] }) {
        self.files = files
        self.scope = scope
        self.aliases = aliases
    }

    /// An alias naming part of a stored tensor: `name#rows:i/n` is the `i`-th of `n` equal runs of
    /// rows (along dimension 0) of `name`, e.g. OpenCLIP's fused `in_proj_weight` [3·D, D], whose
    /// rows are q, then k, then v. The part shares the file's bytes.
    public static func rowPart(_ name: String, _ i: Int, of n: Int) -> String { "\(name)#rows:\(i)/\(n)" }

    static func parseRowPart(_ alias: String) -> (name: String, part: Int, parts: Int)? {
        guard let hash = alias.range(of: "#rows:", options: .backwards) else { return nil }
        let spec = alias[hash.upperBound...].split(separator: "/")
        guard spec.count == 2, let i = Int(spec[0]), let n = Int(spec[1]), n > 0, (0..<n).contains(i) else { return nil }
        return (String(alias[..<hash.lowerBound]), i, n)
    }

    public func tensor(_ name: String, shape: Shape) throws -> Tensor {
        for alias in aliases(name) {
            let part = Self.parseRowPart(alias)
            let candidate = part?.name ?? alias
            for f in files where f.entries[candidate] != nil {
                var t = try f.tensor(candidate)
                if let part {
                    let rows = t.shape.dims.first ?? 0
                    guard rows % part.parts == 0 else {
                        throw ModelFileError.wrongShape(path: f.path, tensor: candidate, expected: shape, got: t.shape)
                    }
                    let dims = [rows / part.parts] + t.shape.dims.dropFirst()
                    let partBytes = dims.reduce(1, *) * t.dtype.size
                    t = try Tensor(shape: Shape(dims), dtype: t.dtype, storage: t.storage,
                                   byteOffset: t.byteOffset + part.part * partBytes)
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
        throw ModelFileError.missingTensor(path: where_, tensor: aliases(name).first.map { Self.parseRowPart($0)?.name ?? $0 } ?? name)
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
