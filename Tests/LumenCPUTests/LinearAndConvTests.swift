import CLumenCPU
import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

/// GEMM-family ops against float64 references, on every instruction set of this CPU.
final class LinearAndConvTests: XCTestCase {
    /// f32 accumulation over K terms of magnitude ≤ 1: error grows like √K · ε.
    private func gemmTolerance(_ k: Int) -> Double { 2e-6 * Double(k).squareRoot() + 1e-6 }

    func testLinearOddAndSDShapes() throws {
        let shapes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (7, 13, 33), (13, 7, 300), (77, 33, 154), (2, 1280, 320),
                                                   (154, 768, 768), (4096, 320, 320)]
        try forEachInstructionSet { isa in
            for (i, s) in shapes.enumerated() {
                if isa != "avx512" && s.m * s.n * s.k > 50_000_000 { continue }  // big shape on the fast path only
                for dtype in [DType.f32, .f16, .bf16] {
                    let g = Graph()
                    let x = try g.input("x", shape: [s.m, s.k])
                    let (wt, wref) = try randomTensor([s.n, s.k], dtype: dtype, seed: UInt64(10 + i))
                    let (bt, bref) = try randomTensor([s.n], seed: UInt64(20 + i))
                    let withBias = i % 2 == 0
                    let y = try g.linear(x, weight: try g.constant(wt), bias: withBias ? try g.constant(bt) : nil)
                    let (xt, xref) = try randomTensor([s.m, s.k], seed: UInt64(30 + i))
                    let got = try runCPU(g, [y], ["x": xt])[0]
                    let expected = Reference.linear(xref, wref, withBias ? bref : nil, m: s.m, n: s.n, k: s.k)
                    assertClose(got, expected, atol: gemmTolerance(s.k), rtol: 1e-5, "linear \(s) \(dtype) \(isa)")
                }
            }
        }
    }

    /// The AVX2 GEMM's two loop orders (chosen by the L2 size: B micro-panel in L1 below 896 KiB,
    /// B block in L2 above), each on shapes with several M, N and K blocks and ragged edges, with
    /// 1 and 2 threads, linear and convolution.
    func testGEMMLoopOrderForSmallAndLargeL2() throws {
        let saved = lumen_cpu_l2_bytes()
        defer { _ = lumen_cpu_set_l2_bytes(saved) }
        // K = 530: several K blocks; K = 301: one K block of 320 where the L2 is large (AVX2)
        let cases = try [(301, 1100, 530), (97, 530, 301)].enumerated().map { i, s in
            let (m, n, k) = s
            let g = Graph()
            let x = try g.input("x", shape: [m, k])
            let (wt, wref) = try randomTensor([n, k], dtype: .f16, seed: UInt64(90 + 3 * i))
            let (bt, bref) = try randomTensor([n], seed: UInt64(91 + 3 * i))
            let y = try g.linear(x, weight: try g.constant(wt), bias: try g.constant(bt))
            let (xt, xref) = try randomTensor([m, k], seed: UInt64(92 + 3 * i))
            return (g, y, xt, k, Reference.linear(xref, wref, bref, m: m, n: n, k: k))
        }
        try forEachInstructionSet { isa in
            for l2 in [256 * 1024, 512 * 1024, 2048 * 1024] {
                XCTAssertEqual(lumen_cpu_set_l2_bytes(Int64(l2)), Int64(l2))
                for (g, y, xt, k, expected) in cases {
                    for threads in [1, 2] {
                        let got = try runCPU(g, [y], ["x": xt], threads: threads)[0]
                        assertClose(got, expected, atol: gemmTolerance(k), rtol: 1e-5,
                                    "linear K \(k) L2 \(l2) threads \(threads) \(isa)")
                    }
                }
                try checkConv(batch: 2, c: 37, h: 23, w: 29, o: 157, k: 3, stride: 1, pad: 1, dtype: .f16, bias: true,
                              seed: 93, what: "conv L2 \(l2) \(isa)")
            }
        }
    }

    func testLinearOnBatchedInputAndThreadCounts() throws {
        // [2, 5, 19] · [23, 19]ᵀ with 1, 2 and 3 threads: every split covers every output once.
        let g = Graph()
        let x = try g.input("x", shape: [2, 5, 19])
        let (wt, wref) = try randomTensor([23, 19], dtype: .f16, seed: 3)
        let y = try g.linear(x, weight: try g.constant(wt))
        let (xt, xref) = try randomTensor([2, 5, 19], seed: 4)
        let expected = Reference.linear(xref, wref, nil, m: 10, n: 23, k: 19)
        for threads in [1, 2, 3] {
            let got = try runCPU(g, [y], ["x": xt], threads: threads)[0]
            assertClose(got, expected, atol: gemmTolerance(19), rtol: 1e-5, "linear threads \(threads)")
        }
    }

    func testBatchedMatmulWithTransposesAndBroadcast() throws {
        try forEachInstructionSet { isa in
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let (m, n, k) = (9, 14, 37)
                let g = Graph()
                let aShape: Shape = ta ? [3, 1, k, m] : [3, 1, m, k]
                let bShape: Shape = tb ? [2, n, k] : [2, k, n]
                let a = try g.input("a", shape: aShape), b = try g.input("b", shape: bShape)
                let y = try g.matmul(a, b, transposeA: ta, transposeB: tb, alpha: 0.5)
                XCTAssertEqual(y.shape, [3, 2, m, n])
                let (at, aref) = try randomTensor(aShape, seed: 5)
                let (bt, bref) = try randomTensor(bShape, seed: 6)
                let got = try runCPU(g, [y], ["a": at, "b": bt])[0]
                var expected: [Double] = []
                for i in 0..<3 {
                    for j in 0..<2 {
                        for r in 0..<m {
                            for c in 0..<n {
                                var s = 0.0
                                for p in 0..<k {
                                    let av = ta ? aref[i * k * m + p * m + r] : aref[i * m * k + r * k + p]
                                    let bv = tb ? bref[j * n * k + c * k + p] : bref[j * k * n + p * n + c]
                                    s += av * bv
                                }
                                expected.append(0.5 * s)
                            }
                        }
                    }
                }
                assertClose(got, expected, atol: gemmTolerance(k), rtol: 1e-5, "matmul ta \(ta) tb \(tb) \(isa)")
            }
        }
    }

    func testConv2dOddShapesStridesAndPadding() throws {
        struct Case { let batch, c, h, w, o, k, stride, pad: Int }
        let cases = [
            Case(batch: 1, c: 1, h: 1, w: 1, o: 1, k: 1, stride: 1, pad: 0),
            Case(batch: 2, c: 5, h: 13, w: 11, o: 7, k: 3, stride: 1, pad: 1),
            Case(batch: 2, c: 7, h: 13, w: 17, o: 9, k: 3, stride: 2, pad: 1),
            Case(batch: 1, c: 33, h: 9, w: 7, o: 13, k: 1, stride: 1, pad: 0),
            Case(batch: 1, c: 3, h: 19, w: 8, o: 37, k: 3, stride: 1, pad: 0),
            Case(batch: 2, c: 37, h: 7, w: 19, o: 5, k: 3, stride: 2, pad: 0),
        ]
        try forEachInstructionSet { isa in
            for (i, t) in cases.enumerated() {
                for dtype in [DType.f32, .f16, .bf16] {
                    try checkConv(batch: t.batch, c: t.c, h: t.h, w: t.w, o: t.o, k: t.k, stride: t.stride, pad: t.pad,
                                  dtype: dtype, bias: i % 2 == 1, seed: UInt64(100 + i), what: "\(isa) \(dtype) case \(i)")
                }
            }
        }
    }

    func testConv2dSDChannelCounts() throws {
        // SD 1.5's channel counts at a reduced spatial size (the float64 reference is slow), on the
        // automatic choice of path whatever LUMEN_CONV_WINOGRAD says (forced, F(4×4) would take
        // 320 → 320 at 12×12, whose bound WinogradConvTests states).
        let mode = lumen_cpu_conv_winograd()
        _ = lumen_cpu_set_conv_winograd(1)
        defer { _ = lumen_cpu_set_conv_winograd(mode) }
        try checkConv(batch: 1, c: 320, h: 12, w: 12, o: 320, k: 3, stride: 1, pad: 1, dtype: .f16, bias: true, seed: 200, what: "320->320")
        try checkConv(batch: 2, c: 1280, h: 4, w: 4, o: 1280, k: 3, stride: 1, pad: 1, dtype: .f16, bias: true, seed: 201, what: "1280->1280")
        try checkConv(batch: 1, c: 640, h: 8, w: 8, o: 640, k: 3, stride: 2, pad: 1, dtype: .f16, bias: true, seed: 202, what: "640 down")
        try checkConv(batch: 1, c: 640, h: 8, w: 8, o: 1280, k: 1, stride: 1, pad: 0, dtype: .f16, bias: true, seed: 203, what: "640->1280 1x1")
    }

    private func checkConv(batch: Int, c: Int, h: Int, w: Int, o: Int, k: Int, stride: Int, pad: Int, dtype: DType,
                           bias: Bool, seed: UInt64, what: String) throws {
        let g = Graph()
        let x = try g.input("x", shape: [batch, c, h, w])
        let (wt, wref) = try randomTensor([o, c, k, k], dtype: dtype, seed: seed)
        let (bt, bref) = try randomTensor([o], seed: seed + 1)
        let y = try g.conv2d(x, weight: try g.constant(wt), bias: bias ? try g.constant(bt) : nil, stride: stride, padding: pad)
        let (xt, xref) = try randomTensor([batch, c, h, w], seed: seed + 2)
        let got = try runCPU(g, [y], ["x": xt])[0]
        let ref = Reference.conv2d(xref, wref, bias ? bref : nil, batch: batch, c: c, h: h, wd: w, o: o, kh: k, kw: k,
                                   stride: stride, pad: pad)
        XCTAssertEqual(y.shape, [batch, o, ref.oh, ref.ow])
        assertClose(got, ref.out, atol: gemmTolerance(c * k * k), rtol: 1e-5, "conv2d \(what)")
    }
}
