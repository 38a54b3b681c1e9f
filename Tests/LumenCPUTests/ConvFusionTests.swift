import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

/// Elementwise ops fused into the convolution before them (ConvFusion, lumen_conv2d_ex): against
/// float64 references, bit for bit against the same ops run as steps of their own, and left
/// unfused where fusing would be wrong; on every instruction set of this CPU.
final class ConvFusionTests: XCTestCase {
    private func gemmTolerance(_ k: Int) -> Double { 2e-6 * Double(k).squareRoot() + 1e-6 }

    struct Case {
        var batch = 1, c = 64, h = 19, w = 23, o = 64, stride = 1
        var residual = true, affine: (Float, Float)? = nil, clamp: (Float, Float)? = (0, .greatestFiniteMagnitude)
        var bias = true
        var fusedName: String {
            (["conv2d"] + [residual ? "add" : nil, affine != nil ? "affine" : nil, clamp != nil ? "clamp" : nil].compactMap { $0 })
                .joined(separator: "+")
        }
    }

    /// conv (3×3, padding 1) → [+ r] → [affine] → [clamp]; `alsoConv`: the convolution's own value
    /// is an output too, which keeps every op a step of its own.
    func build(_ t: Case, seed: UInt64, alsoConv: Bool) throws -> (Graph, [Value], [String: Tensor], [Double]) {
        let g = Graph()
        let x = try g.input("x", shape: [t.batch, t.c, t.h, t.w])
        let (wt, wref) = try randomTensor([t.o, t.c, 3, 3], dtype: .f16, seed: seed, scale: 0.2)
        let (bt, bref) = try randomTensor([t.o], seed: seed + 1)
        let conv = try g.conv2d(x, weight: try g.constant(wt), bias: t.bias ? try g.constant(bt) : nil, stride: t.stride, padding: 1)
        let (xt, xref) = try randomTensor([t.batch, t.c, t.h, t.w], seed: seed + 2)
        var ref = Reference.conv2d(xref, wref, t.bias ? bref : nil, batch: t.batch, c: t.c, h: t.h, wd: t.w, o: t.o, kh: 3, kw: 3,
                                   stride: t.stride, pad: 1).out
        var y = conv
        var inputs = ["x": xt]
        if t.residual {
            let r = try g.input("r", shape: conv.shape)
            let (rt, rref) = try randomTensor(conv.shape, seed: seed + 3)
            inputs["r"] = rt
            y = try g.add(y, r)
            ref = zip(ref, rref).map { $0 + $1 }
        }
        if let (a, b) = t.affine {
            y = try g.affine(y, multiplier: a, addend: b)
            ref = ref.map { $0 * Double(a) + Double(b) }
        }
        if let (lo, hi) = t.clamp {
            y = try g.clamp(y, min: lo, max: hi)
            ref = ref.map { Swift.min(Swift.max($0, Double(lo)), Double(hi)) }
        }
        return (g, alsoConv ? [y, conv] : [y], inputs, ref)
    }

    func testFusedChainsEqualFloat64AndTheUnfusedOpsBitForBit() throws {
        let cases: [Case] = [
            Case(),                                                      // TAESD's block end: conv → add → ReLU, K = 576 (two K blocks)
            Case(residual: false),                                       // conv → ReLU
            Case(residual: false, affine: (2, -1), clamp: nil),          // TAESD's last conv → ×2 − 1
            Case(batch: 2, c: 13, h: 8, w: 8, o: 37, affine: (0.5, 0.25), clamp: (-0.3, 0.4)),  // small images: one GEMM over the batch
            Case(batch: 3, c: 20, h: 9, w: 7, o: 3, stride: 2, bias: false),  // 3 rows: edge tiles only
            Case(c: 300, h: 5, w: 6, o: 29, clamp: (-0.5, 0.5)),          // K = 2700: several K blocks
        ]
        try forEachInstructionSet { isa in
            for (i, t) in cases.enumerated() {
                let (g, outs, inputs, ref) = try build(t, seed: UInt64(40 + 10 * i), alsoConv: false)
                let program = try XCTUnwrap(try CPUExecutor().compile(g, outputs: outs) as? CPUProgram)
                XCTAssertEqual(program.stepNames, [t.fusedName], "case \(i) \(isa): fused into one step")
                let fused = try program.run(inputs)[outs[0]]!.toFloats()
                assertClose(fused, ref, atol: gemmTolerance(9 * t.c) * 2, rtol: 1e-5, "case \(i) \(isa)")

                let (g2, outs2, _, _) = try build(t, seed: UInt64(40 + 10 * i), alsoConv: true)
                let apart = try CPUExecutor().compile(g2, outputs: outs2)
                XCTAssertFalse(try XCTUnwrap(apart as? CPUProgram).stepNames.contains(t.fusedName), "case \(i): not fused")
                let unfused = try apart.run(inputs)[outs2[0]]!.toFloats()
                XCTAssertEqual(fused.map(\.bitPattern), unfused.map(\.bitPattern), "case \(i) \(isa): fused and unfused differ")
                for threads in [1, 3] {
                    let other = try CPUExecutor(threads: threads).compile(g, outputs: outs).run(inputs)[outs[0]]!.toFloats()
                    XCTAssertEqual(other.map(\.bitPattern), fused.map(\.bitPattern), "case \(i) \(isa): \(threads) threads")
                }
            }
        }
    }

    /// NaN in the residual stays NaN through the fused ReLU, as Swift's max keeps it in the
    /// unfused clamp; infinities clamp to the bounds.
    func testNonFiniteResidualsAsTheUnfusedOps() throws {
        try forEachInstructionSet { isa in
            let t = Case(c: 16, h: 6, w: 37, o: 20, clamp: (0, 3))
            let (g, outs, inputs, _) = try build(t, seed: 7, alsoConv: false)
            var r = inputs["r"]!.toFloats()
            for i in stride(from: 0, to: r.count, by: 7) { r[i] = [Float.nan, .infinity, -.infinity][i % 3] }
            var given = inputs
            given["r"] = try Tensor(shape: inputs["r"]!.shape, values: r)
            let fused = try CPUExecutor().compile(g, outputs: outs).run(given)[outs[0]]!.toFloats()
            let (g2, outs2, _, _) = try build(t, seed: 7, alsoConv: true)
            let unfused = try CPUExecutor().compile(g2, outputs: outs2).run(given)[outs2[0]]!.toFloats()
            XCTAssertEqual(fused.map(\.bitPattern), unfused.map(\.bitPattern), isa)
            XCTAssertTrue(fused.contains { $0.isNaN } && fused.contains(3) && fused.contains(0), isa)
        }
    }

    /// Not fused: an add whose other operand is computed after the convolution, a convolution read
    /// twice, and an add whose result lives in the other operand's buffer. The results still
    /// equal float64.
    func testChainsThatMustNotFuseStayApart() throws {
        let (wt, wref) = try randomTensor([8, 5, 3, 3], dtype: .f16, seed: 3)
        let (xt, xref) = try randomTensor([1, 5, 7, 9], seed: 4)
        let (rt, rref) = try randomTensor([1, 8, 7, 9], seed: 5)
        let c = Reference.conv2d(xref, wref, nil, batch: 1, c: 5, h: 7, wd: 9, o: 8, kh: 3, kw: 3, stride: 1, pad: 1).out
        // (graph, output, the steps it must have, reference)
        func later() throws -> (Graph, Value) {  // conv, then the add's other operand, then the add
            let g = Graph()
            let x = try g.input("x", shape: [1, 5, 7, 9]), r = try g.input("r", shape: [1, 8, 7, 9])
            let conv = try g.conv2d(x, weight: try g.constant(wt), padding: 1)
            return (g, try g.add(conv, try g.affine(r, multiplier: 2, addend: 0)))
        }
        func twice() throws -> (Graph, Value) {  // the convolution read by the clamp and the add
            let g = Graph()
            let conv = try g.conv2d(try g.input("x", shape: [1, 5, 7, 9]), weight: try g.constant(wt), padding: 1)
            return (g, try g.add(conv, try g.clamp(conv, min: 0, max: 1)))
        }
        func otherBuffer() throws -> (Graph, Value) {  // add(r', conv): the sum takes r''s buffer (r' dies there)
            let g = Graph()
            let x = try g.input("x", shape: [1, 5, 7, 9]), r = try g.input("r", shape: [1, 8, 7, 9])
            let r2 = try g.affine(r, multiplier: 2, addend: 0)
            let conv = try g.conv2d(x, weight: try g.constant(wt), padding: 1)
            return (g, try g.add(r2, conv))
        }
        let sum = zip(c, rref).map { $0 + 2 * $1 }
        let cases: [(String, () throws -> (Graph, Value), [String], [Double])] = [
            ("later operand", later, ["conv2d", "affine", "add"], sum),
            ("read twice", twice, ["conv2d", "clamp", "add"], c.map { $0 + Swift.min(Swift.max($0, 0), 1) }),
            ("other buffer", otherBuffer, ["affine", "conv2d", "add"], sum),
        ]
        try forEachInstructionSet { isa in
            for (what, make, steps, ref) in cases {
                let (g, y) = try make()
                let program = try XCTUnwrap(try CPUExecutor().compile(g, outputs: [y]) as? CPUProgram)
                XCTAssertEqual(program.stepNames, steps, "\(isa): \(what)")
                let out = try program.run(["x": xt, "r": rt])
                assertClose(try XCTUnwrap(out[y]).toFloats(), ref, atol: 1e-5, rtol: 1e-5, "\(isa): \(what)")
            }
        }
    }
}
