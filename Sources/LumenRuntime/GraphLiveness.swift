/// What an executor needs to plan memory for a graph compiled to some outputs: which nodes the
/// outputs depend on, which buffer each value lives in when reshapes are views of their
/// operands, and the last node that reads each buffer.
public struct GraphLiveness: Sendable {
    /// Whether each node is needed by the outputs.
    public let needed: [Bool]
    /// The node whose buffer holds each node's value (itself, or a reshape's operand's root).
    public let root: [Int]
    /// For each root, the last needed node reading it: `nodes.count` for outputs (live to the end),
    /// -1 when nothing reads it.
    public let lastUse: [Int]

    public init(graph: Graph, outputs: [Value]) {
        let nodes = graph.nodes
        var needed = [Bool](repeating: false, count: nodes.count)
        var stack = outputs.map(\.id)
        while let i = stack.popLast() {
            if needed[i] { continue }
            needed[i] = true
            stack.append(contentsOf: nodes[i].inputs)
        }
        var root = Array(0..<nodes.count)
        for n in nodes where needed[n.id] {
            if case .reshape = n.op { root[n.id] = root[n.inputs[0]] }
        }
        var lastUse = [Int](repeating: -1, count: nodes.count)
        for n in nodes where needed[n.id] {
            for i in n.inputs { lastUse[root[i]] = max(lastUse[root[i]], n.id) }
        }
        for v in outputs { lastUse[root[v.id]] = nodes.count }
        self.needed = needed
        self.root = root
        self.lastUse = lastUse
    }

    /// Roots whose buffer can be released after each node (the node is their last reader).
    public var releases: [Int: [Int]] {
        var out = [Int: [Int]]()
        for (r, last) in lastUse.enumerated() where last >= 0 && last < root.count && root[r] == r {
            out[last, default: []].append(r)
        }
        return out
    }
}
