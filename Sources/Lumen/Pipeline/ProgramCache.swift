import LumenRuntime

/// A compiled network and the values it returns, in the order its graph built them.
struct CompiledNetwork {
    let program: any Program
    let outputs: [Value]

    /// Runs the program and returns its outputs in order.
    func run(_ inputs: [String: Tensor]) throws -> [Tensor] {
        let result = try program.run(inputs)
        return outputs.map { result[$0]! }
    }
}

/// The pipeline's compiled networks, keyed by stage and shape (`ProgramKey`), and the graphs built
/// for a memory plan that a request then compiles (building a graph twice would merge LoRAs twice).
/// Every stage gets its programs here and lets go of them by stage.
final class ProgramCache {
    let executor: any Executor
    private var programs: [ProgramKey: CompiledNetwork] = [:]
    /// Graphs built for the plan, handed to `network` when the request compiles them; those it does
    /// not compile (tile sizes not chosen) are dropped when the request ends (`dropPlannedGraphs`).
    private var plannedGraphs: [ProgramKey: (Graph, [Value])] = [:]
    private var plannedActivations: [ProgramKey: Int] = [:]

    init(executor: any Executor) {
        self.executor = executor
    }

    /// The program under `key`, compiled from the planned graph or from `build` on first use.
    /// `fullPrecision`: f32 activations whatever the executor would choose (`Executor.compile(_:outputs:fullPrecision:)`).
    func network(_ key: ProgramKey, fullPrecision: Bool = false, _ build: (Graph) throws -> [Value]) throws -> CompiledNetwork {
        if let p = programs[key] { return p }
        let (g, outputs) = try plannedGraphs.removeValue(forKey: key) ?? {
            let g = Graph()
            return (g, try build(g))
        }()
        let entry = CompiledNetwork(program: try executor.compile(g, outputs: outputs, fullPrecision: fullPrecision), outputs: outputs)
        programs[key] = entry
        return entry
    }

    /// Activation bytes of the program under `key`: 0 when it is compiled and held, otherwise what
    /// the executor would allocate for it (memoized). The graph is kept for `network`.
    func plannedBytes(_ key: ProgramKey, _ build: (Graph) throws -> [Value]) throws -> Int {
        if programs[key] != nil { return 0 }
        if let known = plannedActivations[key] { return known }
        let g = Graph()
        let outputs = try build(g)
        plannedGraphs[key] = (g, outputs)
        let bytes = executor.plannedActivationBytes(g, outputs: outputs)
        plannedActivations[key] = bytes
        return bytes
    }

    /// Lets go of one program (and its activation memory).
    func drop(_ key: ProgramKey) { programs[key] = nil }

    /// Lets go of every program of the stages not in `stages`.
    func keepOnly(_ stages: Set<ProgramKey.Stage>) { programs = programs.filter { stages.contains($0.key.stage) } }

    func dropAll() { programs.removeAll() }

    func dropPlannedGraphs() { plannedGraphs.removeAll() }
}
