#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A handle to a tensor a `Graph` computes: its node, shape and type.
public struct Value: Sendable, Hashable, CustomStringConvertible {
    public let id: Int
    public let shape: Shape
    public let dtype: DType
    let graphID: Int

    public var description: String { "%\(id): \(dtype)[\(shape)]" }
}

/// One node of a graph: an op, its operands and the shape and type it produces.
public struct Node: Sendable {
    public let id: Int
    public let op: Op
    public let inputs: [Int]
    public let shape: Shape
    public let dtype: DType
    /// Optional name (inputs, weights) for errors and profiles.
    public let label: String?
}

/// A list of typed op nodes in the order model code emitted them (which is a topological
/// order). Model code builds a graph once; an executor compiles it once and runs it many times.
///
/// Builder methods check their operands and throw `LumenError` on a mismatch, so a model
/// error surfaces where the model code emits the op.
public final class Graph: @unchecked Sendable {
    private static let counter = Counter()
    public let id: Int
    public private(set) var nodes: [Node] = []
    private var inputNames: Set<String> = []

    public init() { id = Graph.counter.next() }

    /// The node behind a value of this graph.
    public func node(_ v: Value) throws -> Node {
        guard v.graphID == id, v.id >= 0, v.id < nodes.count else {
            throw LumenError.unknownValue(id: v.id, detail: "not a value of this graph")
        }
        return nodes[v.id]
    }

    /// The value of the node with the given id.
    public func value(of nodeID: Int) -> Value {
        let n = nodes[nodeID]
        return Value(id: n.id, shape: n.shape, dtype: n.dtype, graphID: id)
    }

    /// Named run-time inputs, in the order they were declared.
    public var inputs: [(name: String, value: Value)] {
        nodes.compactMap { n in
            if case .input(let name) = n.op { return (name, value(of: n.id)) }
            return nil
        }
    }

    @discardableResult
    func append(_ op: Op, _ operands: [Value], shape: Shape, dtype: DType, label: String? = nil) throws -> Value {
        for v in operands where v.graphID != id || v.id >= nodes.count {
            throw LumenError.unknownValue(id: v.id, detail: "operand of \(op.name) is not a value of this graph")
        }
        let node = Node(id: nodes.count, op: op, inputs: operands.map(\.id), shape: shape, dtype: dtype, label: label)
        nodes.append(node)
        return Value(id: node.id, shape: shape, dtype: dtype, graphID: id)
    }

    /// Declares a tensor given at run time.
    public func input(_ name: String, shape: Shape, dtype: DType = .f32) throws -> Value {
        guard !inputNames.contains(name) else {
            throw LumenError.invalidArgument(op: "input", detail: "an input named '\(name)' already exists")
        }
        guard dtype == .f32 || dtype == .i32 else {
            throw LumenError.unsupportedDType(op: "input '\(name)'", dtype: dtype, expected: "f32 or i32")
        }
        inputNames.insert(name)
        return try append(.input(name: name), [], shape: shape, dtype: dtype, label: name)
    }

    /// Adds a tensor fixed at build time (a weight), in whatever float type it is stored.
    public func constant(_ tensor: Tensor, name: String? = nil) throws -> Value {
        try append(.constant(tensor), [], shape: tensor.shape, dtype: tensor.dtype, label: name)
    }
}

final class Counter: @unchecked Sendable {
    private var value = 0
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    func next() -> Int {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        value += 1
        return value
    }
}
