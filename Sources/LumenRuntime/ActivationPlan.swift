/// Where each value of a graph lives when activation buffers are shared by lifetime: a value
/// takes the smallest free buffer that holds it (or, when none does, the largest free one,
/// enlarged) and gives it back after its last use; inputs are live from the start; reshapes are
/// views; an op that `worksInPlace` may write over an operand that dies there. Planning allocates
/// nothing, so a pipeline can ask what a graph will need before compiling it.
public struct ActivationPlan: Sendable {
    /// For each computed node: the buffer holding its value (constants have none).
    public let bufferOf: [Int: Int]
    /// Each buffer's size in bytes.
    public let capacities: [Int]
    /// The graph's inputs the outputs need, in graph order: name, node and bytes.
    public let inputs: [(name: String, node: Int, bytes: Int)]
    /// Every declared input, needed or not (name, shape, dtype).
    public let declaredInputs: [(name: String, shape: Shape, dtype: DType)]

    /// All buffers together.
    public var totalBytes: Int { capacities.reduce(0, +) }

    /// `bytes` gives a value's size (default: its element count × its dtype's size; an executor
    /// that stores activations in another type says so).
    public init(graph: Graph, outputs: [Value], worksInPlace: (Op) -> Bool,
                bytes: (Node) -> Int = { $0.shape.count * $0.dtype.size }) {
        let nodes = graph.nodes
        let live = GraphLiveness(graph: graph, outputs: outputs)
        let needed = live.needed, root = live.root, lastUse = live.lastUse
        let releaseAt = live.releases
        var planner = Planner()
        var bufferOf: [Int: Int] = [:]
        var handedOver = Set<Int>()
        var inputs: [(String, Int, Int)] = []
        var declared: [(String, Shape, DType)] = []
        // Inputs are copied in before the first step, so they are live from the start: their
        // buffers are taken before any step's, wherever the graph declared them.
        for n in nodes where needed[n.id] {
            if case .input(let name) = n.op {
                bufferOf[n.id] = planner.acquire(bytes: bytes(n))
                declared.append((name, n.shape, n.dtype))
                inputs.append((name, n.id, n.shape.count * n.dtype.size))
            }
        }
        for n in nodes where needed[n.id] {
            switch n.op {
            case .constant, .input: break
            case .reshape:
                if let b = bufferOf[root[n.id]] { bufferOf[n.id] = b }
            default:
                var donor: Int? = nil
                if worksInPlace(n.op) {
                    for i in n.inputs where donor == nil && lastUse[root[i]] == n.id && nodes[i].shape == n.shape
                        && nodes[i].dtype == n.dtype && bufferOf[root[i]] != nil {
                        donor = i
                    }
                }
                if let donor {
                    bufferOf[n.id] = bufferOf[root[donor]]
                    handedOver.insert(root[donor])
                } else {
                    bufferOf[n.id] = planner.acquire(bytes: bytes(n))
                }
            }
            for r in releaseAt[n.id] ?? [] where !handedOver.contains(r) {
                if let b = bufferOf[r] { planner.release(b) }
            }
        }
        // Inputs declared but not needed by the outputs are still accepted (and ignored).
        for (name, value) in graph.inputs where !needed[value.id] {
            declared.append((name, value.shape, value.dtype))
        }
        self.bufferOf = bufferOf
        self.capacities = planner.capacities
        self.inputs = inputs
        self.declaredInputs = declared
    }

    private struct Planner {
        var capacities: [Int] = []
        var free: [Int] = []

        mutating func acquire(bytes: Int) -> Int {
            var best: Int? = nil
            for (slot, b) in free.enumerated() where capacities[b] >= bytes {
                if best == nil || capacities[b] < capacities[free[best!]] { best = slot }
            }
            if let best { return free.remove(at: best) }
            if let largest = free.indices.max(by: { capacities[free[$0]] < capacities[free[$1]] }) {
                let b = free.remove(at: largest)
                capacities[b] = bytes
                return b
            }
            capacities.append(bytes)
            return capacities.count - 1
        }

        mutating func release(_ buffer: Int) { free.append(buffer) }
    }
}
