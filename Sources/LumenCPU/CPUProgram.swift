import CLumenCPU
import Foundation
import LumenRuntime

/// A graph compiled for the CPU: values are assigned to activation buffers by lifetime, weight
/// pointers and kernel arguments are resolved once, and `run` replays the steps.
///
/// A program runs one request at a time (its buffers are shared by the steps); concurrent calls
/// to `run` are serialised.
public final class CPUProgram: Program {
    public let inputs: [(name: String, shape: Shape, dtype: DType)]
    /// Bytes of activation memory the program holds (all buffers together).
    public let activationBytes: Int
    /// Per-step op names, in execution order, for profiling.
    public var stepNames: [String] { steps.map(\.name) }
    /// The graph node each step computes, in execution order.
    public var stepNodeIDs: [Int] { steps.map(\.node) }

    struct Step {
        let name: String
        let run: () throws -> Void
        var node = -1

        init(name: String, run: @escaping () throws -> Void) {
            self.name = name
            self.run = run
        }
    }

    let graph: Graph
    private let outputValues: [Value]
    private var steps: [Step] = []
    private var buffers: [ActivationBuffer] = []
    /// For each node: the buffer holding its value (nil for constants).
    private var bufferOf: [Int: Int] = [:]
    /// Constants widened to f32 for the ops that read them as activations.
    private var widened: [Int: Tensor] = [:]
    private var inputBuffers: [(name: String, node: Int, bytes: Int)] = []
    /// Elementwise ops computed by the convolution before them.
    private(set) var fusion = ConvFusion.none
    private let pool: ThreadPool
    private let lock = NSLock()
    /// Applied (process-wide, lumen_cpu_set_bf16) for the duration of every run; nil: left alone.
    private let computePrecision: CPUComputePrecision?
    /// Scratch of the Winograd convolutions: one buffer, as the steps run one at a time (nil: none).
    private(set) var winogradScratch: ActivationBuffer?
    private(set) var winogradScratchFloats: Int64 = 0

    init(graph: Graph, outputs: [Value], pool: ThreadPool, computePrecision: CPUComputePrecision? = nil) throws {
        self.graph = graph
        self.pool = pool
        self.computePrecision = computePrecision
        self.outputValues = outputs
        guard !outputs.isEmpty else {
            throw LumenError.invalidArgument(op: "compile", detail: "no outputs requested")
        }
        for v in outputs { _ = try graph.node(v) }
        let nodes = graph.nodes

        // Only what the outputs depend on is computed; buffers are shared by lifetime.
        let plan = ActivationPlan(graph: graph, outputs: outputs, worksInPlace: Self.worksInPlace)
        let liveness = GraphLiveness(graph: graph, outputs: outputs)
        let needed = liveness.needed
        bufferOf = plan.bufferOf
        inputBuffers = plan.inputs
        inputs = plan.declaredInputs
        buffers = try plan.capacities.map { try ActivationBuffer(capacity: $0) }
        let scratchBytes = Self.winogradScratchBytes(graph, needed: needed)
        if scratchBytes > 0 {
            winogradScratch = try ActivationBuffer(capacity: scratchBytes)
            winogradScratchFloats = Int64(scratchBytes / 4)
        }
        activationBytes = plan.totalBytes + scratchBytes

        fusion = ConvFusion(graph: graph, outputs: outputs, needed: needed, root: liveness.root, bufferOf: bufferOf)
        for n in nodes where needed[n.id] && !fusion.absorbed.contains(n.id) {
            if var step = try makeStep(n) {
                step.node = n.id
                steps.append(step)
            }
        }
    }

    /// Bytes of scratch the graph's convolutions need on the Winograd path (the largest one's plan;
    /// 0 where none takes it on this CPU and mode). A run that plans more falls back to
    /// lumen_conv2d for that convolution.
    static func winogradScratchBytes(_ graph: Graph, needed: [Bool]) -> Int {
        var most: Int64 = 0
        for n in graph.nodes where needed[n.id] {
            guard case .conv2d(let p, _) = n.op else { continue }
            let xs = graph.nodes[n.inputs[0]].shape, ws = graph.nodes[n.inputs[1]].shape
            var plan = lumen_winograd_plan()
            if lumen_winograd_plan_make(Int64(xs[0]), Int64(xs[1]), Int64(xs[2]), Int64(xs[3]), Int64(ws[0]), Int64(ws[2]),
                                        Int64(ws[3]), Int64(p.strideH), Int64(p.strideW), Int64(p.padH), Int64(p.padW),
                                        0, &plan) != 0 {
                most = max(most, plan.scratch_floats)
            }
        }
        return Int(most) * 4
    }

    /// Ops whose kernels read each element (or each normalised row or group) before writing it,
    /// so the output may share its operand's buffer.
    static func worksInPlace(_ op: Op) -> Bool {
        switch op {
        case .unary, .binary, .affine, .clamp, .groupNorm, .layerNorm, .softmax: return true
        default: return false
        }
    }

    public func run(_ given: [String: Tensor]) throws -> ProgramOutputs {
        try run(given, stepTimes: nil)
    }

    /// Runs the program and returns, besides the outputs, the seconds each step took (in step
    /// order, named by op): the per-op profile, without the input and output copies.
    public func profile(_ given: [String: Tensor]) throws -> (outputs: ProgramOutputs, steps: [(name: String, seconds: Double)]) {
        var times: [Double] = []
        let outputs = try run(given, stepTimes: &times)
        return (outputs, zip(steps.map(\.name), times).map { ($0, $1) })
    }

    private func run(_ given: [String: Tensor], stepTimes: UnsafeMutablePointer<[Double]>?) throws -> ProgramOutputs {
        lock.lock()
        defer { lock.unlock() }
        if let computePrecision {
            // process-wide in the kernels: set for this run, the previous setting restored after
            let previous = lumen_cpu_bf16()
            _ = lumen_cpu_set_bf16(computePrecision == .bf16 ? 1 : 0)
            defer { _ = lumen_cpu_set_bf16(previous) }
            return try runSteps(given, stepTimes: stepTimes)
        }
        return try runSteps(given, stepTimes: stepTimes)
    }

    private func runSteps(_ given: [String: Tensor], stepTimes: UnsafeMutablePointer<[Double]>?) throws -> ProgramOutputs {
        for spec in inputs {
            guard let t = given[spec.name] else { throw LumenError.missingInput(name: spec.name) }
            guard t.shape == spec.shape, t.dtype == spec.dtype else {
                throw LumenError.inputMismatch(
                    name: spec.name, expected: "\(spec.dtype)[\(spec.shape)]", got: "\(t.dtype)[\(t.shape)]")
            }
        }
        for (name, node, bytes) in inputBuffers {
            let dst = buffers[bufferOf[node]!].bytes
            given[name]!.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        }
        if let stepTimes {
            for step in steps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try step.run()
                stepTimes.pointee.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
            }
        } else {
            for step in steps { try step.run() }
        }
        var results: [Tensor] = []
        for v in outputValues {
            var out = try Tensor(zeros: v.shape, dtype: v.dtype)
            let src = try rawPointer(v.id, f32: v.dtype == .f32)
            try out.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: src, byteCount: $0.count) }
            results.append(out)
        }
        return ProgramOutputs(values: outputValues, tensors: results)
    }

    // MARK: - Pointers

    /// The bytes of a node's value. Constants read as activations are widened to f32 once.
    func rawPointer(_ id: Int, f32: Bool) throws -> UnsafeMutableRawPointer {
        if let b = bufferOf[id] { return buffers[b].bytes }
        var node = graph.nodes[id]
        while case .reshape = node.op { node = graph.nodes[node.inputs[0]] }
        guard case .constant(let tensor) = node.op else {
            throw LumenError.unknownValue(id: id, detail: "value has no storage (internal planning error)")
        }
        if !f32 || tensor.dtype == .f32 || !tensor.dtype.isFloatingPoint {
            return tensor.storage.bytes + tensor.byteOffset
        }
        if let w = widened[node.id] { return w.storage.bytes + w.byteOffset }
        let w = try tensor.converted(to: .f32)
        widened[node.id] = w
        return w.storage.bytes + w.byteOffset
    }

    func f32(_ id: Int) throws -> UnsafeMutablePointer<Float> {
        try rawPointer(id, f32: true).assumingMemoryBound(to: Float.self)
    }

    /// A weight in its stored type, with the kernels' dtype code.
    func weight(_ id: Int) throws -> (UnsafeRawPointer, Int32) {
        let dtype = graph.nodes[id].dtype
        let code: lumen_dtype
        switch dtype {
        case .f32: code = LUMEN_DT_F32
        case .f16: code = LUMEN_DT_F16
        case .bf16: code = LUMEN_DT_BF16
        default:
            throw LumenError.unsupportedDType(op: "weight", dtype: dtype, expected: "f32, f16 or bf16")
        }
        if bufferOf[id] != nil && dtype != .f32 {
            throw LumenError.unsupportedDType(op: "weight", dtype: dtype, expected: "f32 for a computed weight")
        }
        return (UnsafeRawPointer(try rawPointer(id, f32: false)), Int32(code.rawValue))
    }

    func optionalF32(_ node: Node, _ index: Int) throws -> UnsafeMutablePointer<Float>? {
        index < node.inputs.count ? try f32(node.inputs[index]) : nil
    }

    func shape(_ id: Int) -> Shape { graph.nodes[id].shape }

    var threads: Int { pool.threads }
    /// Tasks per matrix product or convolution (`ThreadPool.tasksPerThread` per thread).
    var productTasks: Int { pool.productTasks }
    var threadPool: ThreadPool { pool }
}
