/// Something that turns a graph into a runnable program: the CPU executor, the Vulkan executor.
///
/// Compiling plans memory and prepares kernels once for the graph's shapes; the program then
/// runs any number of times with new inputs.
public protocol Executor: AnyObject, Sendable {
    /// "cpu", "vulkan".
    var backendName: String { get }
    func compile(_ graph: Graph, outputs: [Value]) throws -> any Program
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
