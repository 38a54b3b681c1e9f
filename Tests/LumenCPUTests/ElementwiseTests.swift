import Foundation
import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

final class ElementwiseTests: XCTestCase {
    func testActivations() throws {
        // Values spread over [-12, 12], where the tails of GELU and SiLU are exercised.
        let xv = randomValues(4099, seed: 9, scale: 12) + [0, -0.5, 0.5, 30, -30, -80, 80]
        let xd = xv.map(Double.init)
        try forEachInstructionSet { isa in
            let g = Graph()
            let x = try g.input("x", shape: [xv.count])
            let outs = try [g.silu(x), g.gelu(x), g.gelu(x, approximateTanh: true), g.quickGelu(x)]
            let got = try runCPU(g, outs, ["x": try Tensor(xv)])
            assertClose(got[0], xd.map(Reference.silu), atol: 1e-6, rtol: 2e-6, "silu \(isa)")
            assertClose(got[1], xd.map(Reference.gelu), atol: 1e-6, rtol: 2e-6, "gelu \(isa)")
            assertClose(got[2], xd.map(Reference.geluTanh), atol: 1e-6, rtol: 2e-6, "gelu-tanh \(isa)")
            assertClose(got[3], xd.map(Reference.quickGelu), atol: 1e-6, rtol: 2e-6, "quick-gelu \(isa)")
        }
    }

    /// Each activation alone in its graph, so the executor writes it over its input (the case that
    /// ran the kernels' scalar loop before they were marked safe to vectorise in place), at sizes
    /// around every vector width and its tails.
    func testActivationsInPlaceAtOddSizes() throws {
        let ops: [(String, (Graph, Value) throws -> Value, (Double) -> Double)] = [
            ("silu", { try $0.silu($1) }, Reference.silu),
            ("gelu", { try $0.gelu($1) }, Reference.gelu),
            ("gelu-tanh", { try $0.gelu($1, approximateTanh: true) }, Reference.geluTanh),
            ("quick-gelu", { try $0.quickGelu($1) }, Reference.quickGelu),
        ]
        try forEachInstructionSet { isa in
            for n in [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 127, 1001] {
                var xv = randomValues(n, seed: UInt64(100 + n), scale: 10)
                for (i, v) in [Float(0), -30, 30, -90, 90].enumerated() where i < n { xv[(i * 7) % n] = v }
                let xd = xv.map(Double.init)
                for (name, op, ref) in ops {
                    let g = Graph()
                    let x = try g.input("x", shape: [n])
                    let y = try op(g, x)
                    let program = try CPUExecutor().compile(g, outputs: [y]) as! CPUProgram
                    XCTAssertEqual(program.activationBytes, n * 4, "\(name) \(n): expected to run in place")
                    let got = try program.run(["x": try Tensor(xv)])[y]!.toFloats()
                    assertClose(got, xd.map(ref), atol: 1e-6, rtol: 2e-6, "\(name) in place n=\(n) \(isa)")
                }
            }
        }
    }

    func testGEGLU() throws {
        try forEachInstructionSet { isa in
            // 37 wide: shorter than one interleaved step of four vectors (the loop's remainder
            // only); 150: two whole AVX-512 steps of 64 and a remainder.
            for (rows, d) in [(13, 37), (5, 150)] {
                let g = Graph()
                let x = try g.input("x", shape: [1, rows, 2 * d])
                let y = try g.geglu(x)
                let (xt, xd) = try randomTensor(x.shape, seed: 12, scale: 4)
                let got = try runCPU(g, [y], ["x": xt])[0]
                var expected: [Double] = []
                for r in 0..<rows {
                    for i in 0..<d { expected.append(xd[r * 2 * d + i] * Reference.gelu(xd[r * 2 * d + d + i])) }
                }
                assertClose(got, expected, atol: 1e-6, rtol: 2e-6, "geglu \(rows)x\(d) \(isa)")
            }
        }
    }

    func testBinaryBroadcasting() throws {
        let cases: [(Shape, Shape)] = [([2, 3, 5, 7], [2, 3, 5, 7]), ([2, 3, 5, 7], [3, 1, 1]), ([2, 3, 5, 7], [2, 3, 1, 1]),
                                       ([4, 1, 6], [5, 1]), ([7], [1]), ([1], [3, 4]), ([2, 1, 3], [1, 4, 1])]
        for (i, (sa, sb)) in cases.enumerated() {
            for op in BinaryOp.allCases {
                let g = Graph()
                let a = try g.input("a", shape: sa), b = try g.input("b", shape: sb)
                let y = try g.binary(op, a, b)
                let (at, ad) = try randomTensor(sa, seed: UInt64(i))
                var (bt, bd) = try randomTensor(sb, seed: UInt64(50 + i))
                if op == .div {  // keep divisors away from zero
                    bd = bd.map { $0 + ($0 < 0 ? -1 : 1) }
                    bt = try Tensor(shape: sb, values: bd.map(Float.init))
                }
                let got = try runCPU(g, [y], ["a": at, "b": bt])[0]
                // Reference: index arithmetic of NumPy broadcasting.
                let out = y.shape
                let r = out.rank
                let pa = [Int](repeating: 1, count: r - sa.rank) + sa.dims, pb = [Int](repeating: 1, count: r - sb.rank) + sb.dims
                let stA = Shape(pa).strides, stB = Shape(pb).strides
                var expected: [Double] = []
                for flat in 0..<out.count {
                    var rem = flat, ia = 0, ib = 0
                    for d in stride(from: r - 1, through: 0, by: -1) {
                        let idx = rem % out[d]
                        rem /= out[d]
                        if pa[d] != 1 { ia += idx * stA[d] }
                        if pb[d] != 1 { ib += idx * stB[d] }
                    }
                    let (x, z) = (ad[ia], bd[ib])
                    switch op {
                    case .add: expected.append(x + z)
                    case .sub: expected.append(x - z)
                    case .mul: expected.append(x * z)
                    case .div: expected.append(x / z)
                    }
                }
                assertClose(got, expected, atol: 1e-7, rtol: 1e-6, "\(op) \(sa) \(sb)")
            }
        }
    }

    func testDataMovementOps() throws {
        let g = Graph()
        let x = try g.input("x", shape: [2, 3, 4, 5])
        let z = try g.input("z", shape: [2, 2, 4, 5])
        let permuted = try g.permute(x, [0, 2, 3, 1])
        let transposed = try g.transpose(x, 1, -1)
        let cat = try g.concat([x, z], axis: 1)
        let up = try g.upsampleNearest2x(x)
        let sliced = try g.slice(x, axis: 2, start: 1, length: 2)
        let reshaped = try g.reshape(try g.affine(x, multiplier: 2, addend: -1), [6, 20])
        let (xt, xd) = try randomTensor(x.shape, seed: 1)
        let (zt, zd) = try randomTensor(z.shape, seed: 2)
        let out = try runCPU(g, [permuted, transposed, cat, up, sliced, reshaped], ["x": xt, "z": zt])
        func xi(_ n: Int, _ c: Int, _ h: Int, _ w: Int) -> Double { xd[((n * 3 + c) * 4 + h) * 5 + w] }
        var p: [Double] = [], t: [Double] = [], u: [Double] = [], s: [Double] = []
        for n in 0..<2 { for h in 0..<4 { for w in 0..<5 { for c in 0..<3 { p.append(xi(n, c, h, w)) } } } }
        for n in 0..<2 { for w in 0..<5 { for h in 0..<4 { for c in 0..<3 { t.append(xi(n, c, h, w)) } } } }
        for n in 0..<2 { for c in 0..<3 { for h in 0..<8 { for w in 0..<10 { u.append(xi(n, c, h / 2, w / 2)) } } } }
        for n in 0..<2 { for c in 0..<3 { for h in 1..<3 { for w in 0..<5 { s.append(xi(n, c, h, w)) } } } }
        let c = Array(xd[0..<60]) + Array(zd[0..<40]) + Array(xd[60..<120]) + Array(zd[40..<80])
        assertClose(out[0], p, atol: 0, rtol: 0, "permute")
        assertClose(out[1], t, atol: 0, rtol: 0, "transpose")
        assertClose(out[2], c, atol: 0, rtol: 0, "concat")
        assertClose(out[3], u, atol: 0, rtol: 0, "upsample")
        assertClose(out[4], s, atol: 0, rtol: 0, "slice")
        assertClose(out[5], xd.map { 2 * $0 - 1 }, atol: 1e-7, rtol: 1e-7, "affine+reshape")
    }

    func testTimestepEmbeddingMatchesFormula() throws {
        for (flip, shift, dim) in [(true, Float(0), 320), (false, Float(1), 33), (true, Float(1), 8)] {
            let g = Graph()
            let t = try g.input("t", shape: [3])
            let y = try g.timestepEmbedding(t, TimestepEmbeddingParameters(dim: dim, flipSinToCos: flip, downscaleFreqShift: shift))
            let steps: [Float] = [999, 500.5, 1]
            let got = try runCPU(g, [y], ["t": try Tensor(steps)])[0]
            let half = dim / 2
            var expected: [Double] = []
            for ts in steps {
                var sinPart: [Double] = [], cosPart: [Double] = []
                for i in 0..<half {
                    let f = exp(-log(10000.0) * Double(i) / (Double(half) - Double(shift)))
                    sinPart.append(sin(Double(ts) * f))
                    cosPart.append(cos(Double(ts) * f))
                }
                expected += flip ? cosPart + sinPart : sinPart + cosPart
                if dim % 2 == 1 { expected.append(0) }
            }
            // Arguments reach ~1000 rad: f32 rounding of t·f (≈6e-5 rad) bounds the agreement.
            assertClose(got, expected, atol: 2e-4, rtol: 0, "timestep embedding dim \(dim)")
        }
    }

    func testEmbeddingLookupAndBadIDs() throws {
        let g = Graph()
        let ids = try g.input("ids", shape: [2, 3], dtype: .i32)
        let (table, tref) = try randomTensor([10, 6], dtype: .f16, seed: 4)
        let y = try g.embedding(ids, table: try g.constant(table))
        let idv: [Int32] = [0, 9, 3, 3, 7, 1]
        let got = try runCPU(g, [y], ["ids": try Tensor(shape: [2, 3], indices: idv)])[0]
        let expected = idv.flatMap { id in tref[(Int(id) * 6)..<(Int(id) * 6 + 6)] }
        assertClose(got, expected, atol: 0, rtol: 0, "embedding")
        XCTAssertThrowsError(try runCPU(g, [y], ["ids": try Tensor(shape: [2, 3], indices: [0, 1, 2, 10, 4, 5])])) { error in
            guard case LumenError.invalidArgument(let op, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "embedding")
        }
    }
}
