#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A dense, row-major tensor in host memory.
///
/// `Tensor` is a value: mutating one copy (through `withUnsafeMutableBytes`) never changes
/// another, although copies share their storage until one of them is written.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: Shape
    public let dtype: DType
    public private(set) var storage: TensorStorage
    public private(set) var byteOffset: Int

    public var count: Int { shape.count }
    public var byteCount: Int { shape.count * dtype.size }

    /// Wraps existing storage; throws when the bytes do not cover the shape.
    public init(shape: Shape, dtype: DType, storage: TensorStorage, byteOffset: Int = 0) throws {
        guard shape.dims.allSatisfy({ $0 >= 0 }) else {
            throw LumenError.invalidTensor(detail: "negative dimension in shape \(shape)")
        }
        guard byteOffset >= 0, byteOffset + shape.count * dtype.size <= storage.byteCount else {
            throw LumenError.invalidTensor(
                detail: "\(dtype) tensor of shape \(shape) needs \(shape.count * dtype.size) bytes "
                    + "at offset \(byteOffset), storage has \(storage.byteCount)")
        }
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// A zero-filled tensor.
    public init(zeros shape: Shape, dtype: DType = .f32) throws {
        try self.init(shape: shape, dtype: dtype, storage: TensorStorage(byteCount: shape.count * dtype.size))
    }

    /// A tensor holding `values`, stored as `dtype` (f32, f16 or bf16; 16-bit types round to
    /// nearest even).
    public init(shape: Shape, values: [Float], dtype: DType = .f32) throws {
        guard values.count == shape.count else {
            throw LumenError.invalidTensor(
                detail: "\(values.count) values given for shape \(shape) (\(shape.count) elements)")
        }
        try self.init(zeros: shape, dtype: dtype)
        let p = storage.bytes
        switch dtype {
        case .f32:
            values.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        case .f16:
            let d = p.assumingMemoryBound(to: UInt16.self)
            for i in 0..<values.count { d[i] = HalfConversion.floatToHalf(values[i]) }
        case .bf16:
            let d = p.assumingMemoryBound(to: UInt16.self)
            for i in 0..<values.count { d[i] = HalfConversion.floatToBfloat(values[i]) }
        case .i32, .i64:
            throw LumenError.unsupportedDType(
                op: "Tensor(values:)", dtype: dtype, expected: "f32, f16 or bf16 (use Tensor(shape:indices:))")
        }
    }

    /// An integer tensor (token ids, timesteps given as integers).
    public init(shape: Shape, indices: [Int32]) throws {
        guard indices.count == shape.count else {
            throw LumenError.invalidTensor(
                detail: "\(indices.count) values given for shape \(shape) (\(shape.count) elements)")
        }
        try self.init(zeros: shape, dtype: .i32)
        indices.withUnsafeBytes { storage.bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A scalar or vector f32 tensor, for convenience in tests and small inputs.
    public init(_ values: [Float], shape: Shape? = nil) throws {
        try self.init(shape: shape ?? [values.count], values: values, dtype: .f32)
    }

    /// The same bytes seen with another shape of the same element count.
    public func reshaped(_ newShape: Shape) throws -> Tensor {
        guard newShape.count == shape.count else {
            throw LumenError.shapeMismatch(
                op: "reshape", detail: "cannot view \(shape) (\(shape.count) elements) as \(newShape)")
        }
        return try Tensor(shape: newShape, dtype: dtype, storage: storage, byteOffset: byteOffset)
    }

    /// The elements widened to f32 (integers converted by value).
    public func toFloats() -> [Float] {
        let n = count
        let base = storage.bytes + byteOffset
        switch dtype {
        case .f32:
            return Array(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: n))
        case .f16:
            let s = base.assumingMemoryBound(to: UInt16.self)
            return (0..<n).map { HalfConversion.halfToFloat(s[$0]) }
        case .bf16:
            let s = base.assumingMemoryBound(to: UInt16.self)
            return (0..<n).map { HalfConversion.bfloatToFloat(s[$0]) }
        case .i32:
            let s = base.assumingMemoryBound(to: Int32.self)
            return (0..<n).map { Float(s[$0]) }
        case .i64:
            let s = base.assumingMemoryBound(to: Int64.self)
            return (0..<n).map { Float(s[$0]) }
        }
    }

    /// The elements as integers (for i32/i64 tensors; floats are truncated).
    public func toInts() -> [Int] {
        let base = storage.bytes + byteOffset
        switch dtype {
        case .i32:
            let s = base.assumingMemoryBound(to: Int32.self)
            return (0..<count).map { Int(s[$0]) }
        case .i64:
            let s = base.assumingMemoryBound(to: Int64.self)
            return (0..<count).map { Int(s[$0]) }
        default:
            return toFloats().map { Int($0) }
        }
    }

    /// This tensor converted to another floating-point storage type.
    public func converted(to target: DType) throws -> Tensor {
        if target == dtype { return self }
        return try Tensor(shape: shape, values: toFloats(), dtype: target)
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.bytes + byteOffset, count: byteCount))
    }

    /// Writes into this tensor's bytes, first copying them if another tensor shares them.
    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        if !isKnownUniquelyReferenced(&storage) || storage.isReadOnly {
            let copy = try TensorStorage(byteCount: byteCount)
            copy.bytes.copyMemory(from: storage.bytes + byteOffset, byteCount: byteCount)
            storage = copy
            byteOffset = 0
        }
        return try body(UnsafeMutableRawBufferPointer(start: storage.bytes + byteOffset, count: byteCount))
    }

    public var description: String { "Tensor<\(dtype)>[\(shape)]" }
}
