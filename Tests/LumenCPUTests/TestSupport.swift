import LumenCPU
import LumenRuntime
import XCTest
import LumenTestSupport

/// Random values in [-scale, scale) (never constant, never all zero).
func randomValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float.random(in: -scale..<scale, using: &rng) }
}

/// A random tensor stored as `dtype`, and its stored values widened exactly to Double (so the
/// reference sees the same rounded weights the kernels see).
func randomTensor(_ shape: Shape, dtype: DType = .f32, seed: UInt64, scale: Float = 1) throws -> (Tensor, [Double]) {
    let t = try Tensor(shape: shape, values: randomValues(shape.count, seed: seed, scale: scale), dtype: dtype)
    return (t, t.toFloats().map(Double.init))
}

/// Compiles and runs `outputs` of `graph` on the CPU executor.
func runCPU(_ graph: Graph, _ outputs: [Value], _ inputs: [String: Tensor], threads: Int? = nil) throws -> [[Float]] {
    let program = try CPUExecutor(threads: threads).compile(graph, outputs: outputs)
    let result = try program.run(inputs)
    return outputs.map { result[$0]!.toFloats() }
}

/// Asserts |actual - expected| <= atol + rtol * |expected| elementwise, and reports the worst.
func assertClose(_ actual: [Float], _ expected: [Double], atol: Double, rtol: Double, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): element count", file: file, line: line)
    guard actual.count == expected.count else { return }
    var worst = 0.0, worstIndex = -1
    for i in 0..<actual.count {
        let a = Double(actual[i]), e = expected[i]
        guard a.isFinite else {
            XCTFail("\(what): element \(i) is \(a), expected \(e)", file: file, line: line)
            return
        }
        let excess = abs(a - e) / (atol + rtol * abs(e))
        if excess > worst { worst = excess; worstIndex = i }
    }
    if worst > 1 {
        XCTFail("\(what): element \(worstIndex) is \(actual[worstIndex]), expected \(expected[worstIndex]) "
                + "(error \(abs(Double(actual[worstIndex]) - expected[worstIndex])), atol \(atol), rtol \(rtol))",
                file: file, line: line)
    }
}
