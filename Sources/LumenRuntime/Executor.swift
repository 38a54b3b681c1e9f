/// Something that turns a graph into a runnable program: the CPU executor, the Vulkan executor.
///
/// Compiling plans memory and prepares kernels once for the graph's shapes; the program then
/// runs any number of times with new inputs.
public protocol Executor: AnyObject, Sendable {
    /// "cpu", "vulkan".
    var backendName: String { get }
    /// Which kind of executor this is.
    var backendKind: BackendKind { get }
    /// Whether the executor keeps weights in half precision (a GPU's f16 weights), so that a
    /// model folder's `.fp16` files give it the same values for half the reading.
    var prefersHalfPrecisionWeights: Bool { get }
    func compile(_ graph: Graph, outputs: [Value]) throws -> any Program
    /// `compile`, with `fullPrecision` asking for f32 activations whatever the executor's own
    /// choice (a network that overflows f16, such as SDXL's VAE: diffusers' `force_upcast`).
    func compile(_ graph: Graph, outputs: [Value], fullPrecision: Bool) throws -> any Program
    /// The largest tensor one kernel can bind, in bytes (Vulkan: maxStorageBufferRange); nil: no limit.
    var maxTensorBytes: Int? { get }
    /// What this executor's programs may take, weights and activations together.
    func memoryBudget() throws -> MemoryBudget
    /// The activation bytes a program compiled for `outputs` of `graph` would hold (no allocation).
    func plannedActivationBytes(_ graph: Graph, outputs: [Value]) -> Int
}

/// The executors Lumen has.
public enum BackendKind: String, Sendable, Hashable, CaseIterable {
    case cpu, vulkan
}

extension Executor {
    public var prefersHalfPrecisionWeights: Bool { false }
    /// Executors whose activations are never stored in f16 compile as they always do.
    public func compile(_ graph: Graph, outputs: [Value], fullPrecision: Bool) throws -> any Program {
        try compile(graph, outputs: outputs)
    }
    public var maxTensorBytes: Int? { nil }
    /// `LUMEN_MEMORY_BUDGET`, else the RAM this process can have.
    public func memoryBudget() throws -> MemoryBudget { try MemoryBudget.fromEnvironment(or: .availableRAM()) }
    /// Every computed value sharing buffers by lifetime, none written in place.
    public func plannedActivationBytes(_ graph: Graph, outputs: [Value]) -> Int {
        ActivationPlan(graph: graph, outputs: outputs, worksInPlace: { _ in false }).totalBytes
    }
}

/// A compiled graph.
public protocol Program: AnyObject {
    /// The run-time inputs the graph declares.
    var inputs: [(name: String, shape: Shape, dtype: DType)] { get }
    /// Runs the graph; every declared input must be given with its declared shape and type.
    func run(_ inputs: [String: Tensor]) throws -> ProgramOutputs
}

/// The tensors a program produced, looked up by the values they were compiled for.
public struct ProgramOutputs: Sendable {
    public let values: [Value]
    public let tensors: [Tensor]

    public init(values: [Value], tensors: [Tensor]) {
        self.values = values
        self.tensors = tensors
    }

    /// The tensor computed for `value`; nil when the program was not compiled to produce it.
    public subscript(_ value: Value) -> Tensor? {
        values.firstIndex(of: value).map { tensors[$0] }
    }
}
