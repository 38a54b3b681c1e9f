extension Graph {
    /// Floating-point operations a node performs (an FMA counts 2); 0 for the memory-bound ops,
    /// whose cost is their bytes.
    public func flops(of node: Node) -> Double {
        let s = node.shape
        switch node.op {
        case .linear:
            let k = nodes[node.inputs[1]].shape[1]
            return 2 * Double(s.count) * Double(k)
        case .matmul(let ta, _, _):
            let a = nodes[node.inputs[0]].shape
            let k = ta ? a.dim(-2) : a.dim(-1)
            return 2 * Double(s.count) * Double(k)
        case .conv2d:
            let w = nodes[node.inputs[1]].shape
            return 2 * Double(s.count) * Double(w[1] * w[2] * w[3])
        case .attention:
            let k = nodes[node.inputs[1]].shape
            // Q·Kᵀ and P·V: 2 · 2 · Lq · Lk · width per batch (width = heads · head size).
            return 4 * Double(s.count) * Double(k[1])
        default:
            return 0
        }
    }

    /// The op family a node belongs to in performance breakdowns.
    public func costCategory(of node: Node) -> String {
        switch node.op {
        case .linear, .matmul: return "gemm"
        case .conv2d: return "convolution"
        case .attention: return "attention"
        case .groupNorm, .layerNorm, .softmax: return "norms"
        case .input, .constant, .reshape: return "none"
        default: return "elementwise"
        }
    }

    /// Total FLOPs of the nodes the given outputs depend on.
    public func flops(for outputs: [Value]) -> Double {
        var needed = Set<Int>()
        var stack = outputs.map(\.id)
        while let i = stack.popLast() {
            if needed.insert(i).inserted { stack.append(contentsOf: nodes[i].inputs) }
        }
        return needed.reduce(0) { $0 + flops(of: nodes[$1]) }
    }
}
