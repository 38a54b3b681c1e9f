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

/// conv 3×3 (f16 weights, bias) → + residual → affine (× 1.5 − 0.25) → clamp to [−0.6, 0.7], the
/// chain the convolution kernels fuse into their stores: the graph, its inputs and the float64
/// reference of its output (seeds `seed` to `seed + 3`).
struct FusedConvCase {
    let graph = Graph()
    let output: Value
    let inputs: [String: Tensor]
    let reference: [Double]

    init(batch b: Int, c: Int, h: Int, w: Int, o: Int, seed: UInt64) throws {
        let x = try graph.input("x", shape: [b, c, h, w])
        let r = try graph.input("r", shape: [b, o, h, w])
        let (wt, wref) = try randomTensor([o, c, 3, 3], dtype: .f16, seed: seed, scale: 0.3)
        let (bt, bref) = try randomTensor([o], seed: seed + 1)
        let conv = try graph.conv2d(x, weight: try graph.constant(wt), bias: try graph.constant(bt), stride: 1, padding: 1)
        output = try graph.clamp(try graph.affine(try graph.add(conv, r), multiplier: 1.5, addend: -0.25), min: -0.6, max: 0.7)
        let (xt, xref) = try randomTensor([b, c, h, w], seed: seed + 2)
        let (rt, rref) = try randomTensor([b, o, h, w], seed: seed + 3)
        inputs = ["x": xt, "r": rt]
        let convRef = Reference.conv2d(xref, wref, bref, batch: b, c: c, h: h, wd: w, o: o, kh: 3, kw: 3, stride: 1, pad: 1).out
        reference = zip(convRef, rref).map { Swift.min(Swift.max(($0 + $1) * 1.5 - 0.25, -0.6), 0.7) }
    }
}
