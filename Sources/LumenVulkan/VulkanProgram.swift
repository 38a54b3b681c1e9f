import CVulkan
import Foundation
import LumenRuntime

/// A graph compiled for a Vulkan device (see `VulkanExecutor`). Runs are serialised.
public final class VulkanProgram: Program {
    public let inputs: [(name: String, shape: Shape, dtype: DType)]
    /// Device memory the program holds for activations and for weights.
    public private(set) var activationBytes = 0
    public private(set) var weightBytes = 0
    /// Kernel dispatches per run (an op may take several, a reshape none).
    public var dispatchCount: Int { dispatches.count }
    /// The kernel of each dispatch, in order (e.g. `conv2d_coopmat_f16`).
    public var dispatchedKernels: [String] { dispatches.map(\.kernel) }
    /// GPU time of each dispatch in the last run (with profiling on), in execution order.
    public internal(set) var lastProfile: [(op: String, seconds: Double)] = []
    /// GPU time from the first dispatch's start to the last one's end in the last run (profiling on).
    public internal(set) var lastGPUSeconds: Double?

    /// A value's bytes on the device and the activation slot holding it (-1: a constant).
    struct Ref {
        let range: BufferRange
        let slot: Int
    }

    struct Dispatch {
        let op: String
        /// The SPIR-V module's name (with `_f16` for f16 activations).
        let kernel: String
        let pipeline: VkPipeline
        let layout: VkPipelineLayout
        let setLayout: VkDescriptorSetLayout
        let bindings: [Ref]
        let writes: Set<Int>
        let push: [UInt32]
        let groups: (UInt32, UInt32, UInt32)
    }

    let context: VulkanContext
    let graph: Graph
    let options: VulkanExecutor.Options
    /// Activations stored as f16 (kernels' `_f16` variants).
    let act16: Bool
    /// Whether this program stores activations as f16.
    public var usesF16Activations: Bool { act16 }
    /// How each slot-held value (by root) is stored on the device.
    var storage: [Int: DType] = [:]
    let outputValues: [Value]
    var dispatches: [Dispatch] = []

    // Storage plan.
    var root: [Int] = []
    var slotOf: [Int: Int] = [:]
    var slotRanges: [BufferRange] = []
    var constants: [String: BufferRange] = [:]
    /// Constants waiting for the upload at the end of compilation: host bytes, or a tensor
    /// converted to its device type piece by piece while it is copied (no second host copy).
    enum Upload {
        case bytes([UInt8])
        case tensor(Tensor, DType)
    }
    var pendingUploads: [(upload: Upload, range: BufferRange)] = []
    /// The convolutions' gather tables, one per input geometry and kernel size.
    var gatherTables: [[Int]: Ref] = [:]
    /// The convolutions' im2col buffer (VulkanProgram+VectorGemm.swift), once one needs it.
    var im2colScratchRef: Ref?
    /// The split-K partial sums (VulkanProgram+VectorGemm.swift), once a GEMM is split.
    var splitKScratchRef: Ref?
    var inputCopies: [(name: String, node: Int, bytes: Int, staging: Int, ref: Ref)] = []
    var outputCopies: [(index: Int, staging: Int, ref: Ref)] = []
    var hostOutputs: [Int: Tensor] = [:]
    /// Inputs feeding embeddings, whose ids are checked on the host before a run.
    var idChecks: [(input: String, vocab: Int)] = []

    var weightArena: Arena!
    var activationArena: Arena!
    var staging: MemoryBlock?
    var dummy: Ref!
    var descriptorPool: VkDescriptorPool?
    var descriptorSets: [VkDescriptorSet] = []
    var commandBuffer: VkCommandBuffer?
    var fence: VkFence?
    var queryPool: VkQueryPool?
    var queryCount = 0
    let lock = NSLock()

    init(context: VulkanContext, graph: Graph, outputs: [Value], options: VulkanExecutor.Options,
         f16Activations: Bool) throws {
        self.context = context
        self.act16 = f16Activations
        self.graph = graph
        self.options = options
        self.outputValues = outputs
        guard !outputs.isEmpty else {
            throw LumenError.invalidArgument(op: "compile", detail: "no outputs requested")
        }
        for v in outputs { _ = try graph.node(v) }
        let nodes = graph.nodes

        let live = GraphLiveness(graph: graph, outputs: outputs)
        let needed = live.needed, lastUse = live.lastUse
        root = live.root

        // Storage types: ids stay i32; with f16 activations every other value is f16, except an
        // input read only as timesteps (rounding 999.5 to f16 would move its embedding).
        var consumers = [[Op]](repeating: [], count: nodes.count)
        for n in nodes where needed[n.id] {
            if case .reshape = n.op { continue }
            for i in n.inputs { consumers[root[i]].append(n.op) }
        }
        for n in nodes where needed[n.id] {
            switch n.op {
            case .constant, .reshape: continue
            default: break
            }
            if n.dtype == .i32 || n.dtype == .i64 {
                storage[n.id] = n.dtype
            } else if case .input = n.op, !consumers[n.id].isEmpty, consumers[n.id].allSatisfy({
                if case .timestepEmbedding = $0 { return true } else { return false }
            }) {
                storage[n.id] = .f32
            } else {
                storage[n.id] = act16 ? .f16 : .f32
            }
        }

        // Slots by lifetime (the runtime's planner, as the CPU executor's; no op writes in place
        // here). Inputs are uploaded before the first dispatch, so their slots are taken first.
        let plan = ActivationPlan(graph: graph, outputs: outputs, worksInPlace: { _ in false },
                                  bytes: { [storage] n in n.shape.count * storage[n.id]!.size })
        slotOf = plan.bufferOf
        inputs = plan.declaredInputs

        // Refuse oversized bindings before any memory is taken.
        for n in nodes where needed[n.id] {
            switch n.op {
            case .constant, .reshape: break
            default: try checkRange(n.shape.count * storage[n.id]!.size, id: n.id, role: "value", activation: true)
            }
        }
        let blockLimit = 64 << 20
        let align = context.bindingAlignment
        let activationTotal = plan.capacities.reduce(0) { $0 + alignUp(max($1, 4), align) }
        var constantTotal = 4096
        // f16 weights stay f16 on the device; everything else is counted at 4 bytes an element.
        for n in nodes where needed[n.id] {
            if case .constant(let t) = n.op { constantTotal += alignUp(t.count * (t.dtype == .f16 ? 2 : 4), align) }
        }
        // Say what the graph needs before running out of it.
        if activationTotal + constantTotal > context.info.deviceLocalBytes {
            throw LumenError.outOfMemory(
                bytes: activationTotal + constantTotal,
                detail: "the graph needs \(activationTotal >> 20) MiB of activations and about \(constantTotal >> 20) MiB of weights; "
                    + "\(context.info.name) has \(context.info.deviceLocalBytes >> 20) MiB of device-local memory")
        }
        activationArena = Arena(context, hostVisible: false, blockSize: min(blockLimit, max(activationTotal, 4096)),
                                purpose: "activations")
        slotRanges = try plan.capacities.map { try activationArena.allocate($0) }
        weightArena = Arena(context, hostVisible: false, blockSize: min(blockLimit, constantTotal), purpose: "weights")
        let zero = try weightArena.allocate(16)
        pendingUploads.append((.bytes([UInt8](repeating: 0, count: 16)), zero))
        dummy = Ref(range: zero, slot: -1)

        for n in nodes where needed[n.id] { try makeDispatches(n) }

        // Inputs and outputs pass through one host-visible staging block.
        var stagingSize = 0
        for n in nodes where needed[n.id] {
            guard case .input(let name) = n.op else { continue }
            let bytes = n.shape.count * storage[n.id]!.size
            inputCopies.append((name, n.id, bytes, stagingSize, try ref(n.id, role: "input '\(name)'")))
            stagingSize = alignUp(stagingSize + bytes, 64)
        }
        for (i, v) in outputs.enumerated() {
            let r = root[v.id]
            if case .constant(let t) = nodes[r].op {
                hostOutputs[i] = try t.reshaped(v.shape)
                continue
            }
            outputCopies.append((i, stagingSize, try ref(v.id, role: "output")))
            stagingSize = alignUp(stagingSize + v.shape.count * storageType(v.id).size, 64)
        }
        staging = try MemoryBlock(context, size: max(stagingSize, 64), hostVisible: true, purpose: "input/output staging")
        activationBytes = activationArena.reservedBytes
        weightBytes = weightArena.reservedBytes

        try uploadConstants()
        try buildDescriptorSets()
        try record()
        context.savePipelineCache()
    }

    deinit {
        let fn = context.fn, device = context.device
        if let commandBuffer { context.freeCommandBuffer(commandBuffer) }
        if let fence { fn.vkDestroyFence(device, fence, nil) }
        if let descriptorPool { fn.vkDestroyDescriptorPool(device, descriptorPool, nil) }
        if let queryPool { fn.vkDestroyQueryPool(device, queryPool, nil) }
    }

    // MARK: - Values

    /// How a slot-held value is stored on the device.
    func storageType(_ id: Int) -> DType { storage[root[id]] ?? graph.nodes[id].dtype }

    /// The device bytes of a computed value or input; a constant as an activation operand.
    func ref(_ id: Int, role: String) throws -> Ref {
        let node = graph.nodes[id]
        if let slot = slotOf[root[id]] {
            let bytes = node.shape.count * storageType(id).size
            try checkRange(bytes, id: id, role: role, activation: true)
            let r = slotRanges[slot]
            return Ref(range: BufferRange(block: r.block, offset: r.offset, size: alignUp(max(bytes, 4), 4)), slot: slot)
        }
        return try constant(id, form: .activation, role: role).ref
    }

    /// A value read as an activation operand (in the activation storage type).
    func act(_ id: Int, role: String) throws -> Ref { try ref(id, role: role) }

    /// A per-channel parameter (bias, norm weight): always f32.
    func param(_ id: Int, role: String) throws -> Ref {
        if slotOf[root[id]] != nil {
            guard storageType(id) == .f32 else {
                throw LumenError.unsupportedDType(op: role, dtype: .f16,
                                                  expected: "a constant or f32 value (computed parameters need f32 activations)")
            }
            return try ref(id, role: role)
        }
        return try constant(id, form: .parameter, role: role).ref
    }

    /// A value read through the kernels' packed loads: f16 stays f16 (WDT 1), f32 and bf16 are
    /// f32 words (WDT 0); a computed value in its storage type.
    func weight(_ id: Int, role: String) throws -> (ref: Ref, wdt: UInt32) {
        if slotOf[root[id]] != nil { return (try ref(id, role: role), storageType(id) == .f16 ? 1 : 0) }
        return try constant(id, form: .weight, role: role)
    }

    enum ConstantForm { case weight, parameter, activation }

    private func constant(_ id: Int, form: ConstantForm, role: String) throws -> (ref: Ref, wdt: UInt32) {
        let r = root[id]
        guard case .constant(let tensor) = graph.nodes[r].op else {
            throw LumenError.unknownValue(id: id, detail: "value has no storage (internal planning error)")
        }
        let target: DType
        switch (tensor.dtype, form) {
        case (.i32, _), (.i64, _): target = .i32
        case (.f16, .weight): target = .f16
        case (_, .activation): target = act16 ? .f16 : .f32
        default: target = .f32
        }
        let wdt: UInt32 = target == .f16 ? 1 : 0
        let key = "\(r)/\(target)"
        if let range = constants[key] { return (Ref(range: range, slot: -1), wdt) }
        let bytes = tensor.count * target.size
        try checkRange(bytes, id: id, role: role)
        let range = try weightArena.allocate(bytes)
        pendingUploads.append((.tensor(tensor, target), range))
        constants[key] = range
        return (Ref(range: range, slot: -1), wdt)
    }

    /// A small constant the program computes on the host (timestep frequencies).
    func hostConstant(_ data: [UInt8]) throws -> Ref {
        let range = try weightArena.allocate(max(data.count, 4))
        pendingUploads.append((.bytes(data.isEmpty ? [0, 0, 0, 0] : data), range))
        return Ref(range: range, slot: -1)
    }

    var dummyRef: Ref { dummy }

    private func checkRange(_ bytes: Int, id: Int, role: String, activation: Bool = false) throws {
        let device = Int(context.limits.maxStorageBufferRange)
        let limit = activation ? min(device, options.maxActivationBinding ?? device) : device
        guard bytes <= limit else {
            let n = graph.nodes[id]
            let what = limit < device ? "this executor binds activations of at most \(limit) bytes (Options.maxActivationBinding; \(context.info.name)'s maxStorageBufferRange is \(device))"
                : "\(context.info.name) binds at most maxStorageBufferRange = \(limit) bytes"
            throw LumenError.outOfMemory(
                bytes: bytes,
                detail: "value %\(id)\(n.label.map { " '\($0)'" } ?? "") (\(n.op.name) \(n.dtype)[\(n.shape)], \(role)) "
                    + "needs a \(bytes)-byte binding; " + what)
        }
    }

    func addIdCheck(ids: Int, vocab: Int) throws {
        let r = root[ids]
        switch graph.nodes[r].op {
        case .input(let name): idChecks.append((name, vocab))
        case .constant(let t):
            for (i, id) in t.toInts().enumerated() where id < 0 || id >= vocab {
                throw LumenError.invalidArgument(op: "embedding", detail: "id \(id) at position \(i) is outside the table of \(vocab) rows")
            }
        default: break
        }
    }

    /// Adds one kernel dispatch.
    func dispatch(_ op: String, _ kernel: String, spec: [UInt32], bindings: [Ref], writes: [Ref], push: [UInt32],
                  groups: (Int, Int, Int)) throws {
        precondition(push.count * 4 <= VulkanContext.pushConstantBytes, "push constants of \(kernel) too large")
        let maxGroups = context.limits.maxComputeWorkGroupCount
        guard groups.0 <= Int(maxGroups.0), groups.1 <= Int(maxGroups.1), groups.2 <= Int(maxGroups.2) else {
            throw LumenError.invalidArgument(
                op: op, detail: "needs \(groups) workgroups; \(context.info.name) allows at most \(maxGroups)")
        }
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 { return }
        let kernel = act16 ? kernel + "_f16" : kernel
        let pipeline = try context.pipeline(kernel, specialization: spec, bindings: bindings.count)
        let (setLayout, layout) = try context.layout(bindings: bindings.count)
        dispatches.append(Dispatch(op: op, kernel: kernel, pipeline: pipeline, layout: layout, setLayout: setLayout, bindings: bindings,
                                   writes: Set(writes.map(\.slot)), push: push,
                                   groups: (UInt32(groups.0), UInt32(groups.1), UInt32(groups.2))))
    }

}

/// Writes `count` elements of `t` from element `start` into `dst` as `target` (f32, f16 or i32).
func convertElements(_ t: Tensor, from start: Int, count: Int, to target: DType, into dst: UnsafeMutableRawPointer) {
    t.withUnsafeBytes { raw in
        let src = raw.baseAddress!
        if t.dtype == target {
            dst.copyMemory(from: src + start * target.size, byteCount: count * target.size)
            return
        }
        func load(_ i: Int) -> Float {
            switch t.dtype {
            case .f32: return src.load(fromByteOffset: 4 * i, as: Float.self)
            case .f16: return HalfConversion.halfToFloat(src.load(fromByteOffset: 2 * i, as: UInt16.self))
            case .bf16: return HalfConversion.bfloatToFloat(src.load(fromByteOffset: 2 * i, as: UInt16.self))
            case .i32: return Float(src.load(fromByteOffset: 4 * i, as: Int32.self))
            case .i64: return Float(src.load(fromByteOffset: 8 * i, as: Int64.self))
            }
        }
        switch target {
        case .f16:
            let d = dst.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { d[i] = HalfConversion.floatToHalf(load(start + i)) }
        case .i32:
            // Ids stored as i64 are narrowed (only embedding ids are integer).
            let d = dst.assumingMemoryBound(to: Int32.self)
            for i in 0..<count {
                let j = start + i
                d[i] = t.dtype == .i64 ? Int32(truncatingIfNeeded: src.load(fromByteOffset: 8 * j, as: Int64.self)) : Int32(load(j))
            }
        default:
            let d = dst.assumingMemoryBound(to: Float.self)
            for i in 0..<count { d[i] = load(start + i) }
        }
    }
}
