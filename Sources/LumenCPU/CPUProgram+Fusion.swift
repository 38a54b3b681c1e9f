import CLumenCPU
import LumenRuntime

/// Elementwise ops folded into the convolution before them (`lumen_conv2d_ex`'s epilogue): a
/// residual add, an affine map and a clamp (ReLU is a clamp) applied to each output as the GEMM
/// writes it, instead of as passes of their own over the whole tensor (TAESD runs three ReLUs and
/// an add per block over 64 × 512 × 512 floats at its last level). The results are the unfused ops'
/// bit for bit: each fused op rounds as its own step would.
///
/// A chain conv → [add] → [affine] → [clamp] is fused when each link is the only reader of the
/// one before (and no link before the last is an output), every link lives in the convolution's
/// buffer (the activation plan put it there because it works in place), and the add's other
/// operand has the output's shape and is there before the convolution runs (an input, a constant
/// or a value computed before it).
struct ConvFusion {
    struct Epilogue {
        /// The value added to the convolution's output, or nil.
        var residual: Int?
        var affine: (multiplier: Float, addend: Float)?
        var clamp: (lower: Float, upper: Float)?
        /// The last node of the chain: its value is what the fused step writes.
        var last: Int
    }

    /// Convolutions with fused ops after them.
    private(set) var epilogues: [Int: Epilogue] = [:]
    /// Nodes computed by a convolution's epilogue (they get no step of their own).
    private(set) var absorbed: Set<Int> = []

    /// Whether a value is there when the step of node `step` runs: inputs are copied in before
    /// the first step, constants are always there, other values once their own step has run.
    private static func isReady(_ n: Node, before step: Int) -> Bool {
        switch n.op {
        case .input, .constant: return true
        default: return n.id < step
        }
    }

    /// Nothing fused.
    static let none = ConvFusion()

    private init() {}

    init(graph: Graph, outputs: [Value], needed: [Bool], root: [Int], bufferOf: [Int: Int]) {
        let nodes = graph.nodes
        let isOutput = Set(outputs.map { root[$0.id] })
        var readers = [[Int]](repeating: [], count: nodes.count)
        for n in nodes where needed[n.id] {
            for i in n.inputs { readers[i].append(n.id) }
        }
        for c in nodes where needed[c.id] {
            guard case .conv2d = c.op, c.dtype == .f32, let buffer = bufferOf[c.id] else { continue }
            var epilogue = Epilogue(last: c.id)
            var stage = 0  // 0: an add may come; 1: an affine; 2: a clamp; 3: done
            var current = c.id
            chain: while stage < 3, readers[current].count == 1, !isOutput.contains(current) {
                let u = nodes[readers[current][0]]
                guard u.shape == c.shape, u.dtype == .f32, bufferOf[u.id] == buffer else { break }
                switch u.op {
                case .binary(.add) where stage == 0 && u.inputs.count == 2:
                    let other = u.inputs[0] == current ? u.inputs[1] : u.inputs[0]
                    guard other != current, nodes[other].shape == u.shape, nodes[other].dtype == .f32,
                          Self.isReady(nodes[root[other]], before: c.id), bufferOf[root[other]] != buffer else { break chain }
                    epilogue.residual = other
                    stage = 1
                case .affine(let a, let b) where stage <= 1:
                    epilogue.affine = (a, b)
                    stage = 2
                case .clamp(let lower, let upper) where stage <= 2:
                    epilogue.clamp = (lower, upper)
                    stage = 3
                default:
                    break chain
                }
                absorbed.insert(u.id)
                current = u.id
            }
            if current != c.id {
                epilogue.last = current
                epilogues[c.id] = epilogue
            }
        }
    }
}
