import CLumenCPU
import LumenCPU
import LumenRuntime
import XCTest

/// bf16 compute (CPUExecutor(computePrecision: .bf16)): the GEMM family rounds both operands to
/// bfloat16 while packing and accumulates their exact products in f32. Checked two ways:
/// - against a float64 reference on the bf16-ROUNDED operands: the only error left is f32
///   accumulation, so the f32 tests' tolerance applies unchanged;
/// - against the float64 reference on the unrounded operands: the relative error (L2) that the
///   rounding costs, printed, and bounded at 8e-3 (two bf16 units of roundoff, 2^-7; random
///   operands measure about 2e-3).
/// Skipped where the CPU lacks AVX512_BF16.
final class BF16Tests: XCTestCase {
    private func gemmTolerance(_ k: Int) -> Double { 2e-6 * Double(k).squareRoot() + 1e-6 }
    private let roundingBound = 8e-3

    /// The instruction set in force before the test (LUMEN_CPU_ISA may have lowered it): tearDown
    /// restores this one. (It used to restore the *detected* set, and XCTest runs tearDown after a
    /// setUp that skips: under LUMEN_CPU_ISA=avx2 every later test of the process ran AVX-512.)
    private var startInstructionSet: String?

    override func setUpWithError() throws {
        startInstructionSet = CPUExecutor.instructionSet
        guard CPUExecutor.bf16Supported else { throw XCTSkip("this CPU has no AVX512_BF16") }
    }

    override func tearDown() {
        _ = lumen_cpu_set_bf16(0)
        if let start = startInstructionSet { _ = try? CPUExecutor.setInstructionSet(start) }
        XCTAssertEqual(CPUExecutor.instructionSet, startInstructionSet, "the instruction set in force is restored")
    }

    /// Rounds an f32 value to bfloat16, nearest even (as VCVTNE2PS2BF16 does for normal numbers).
    private func bf16(_ v: Double) -> Double {
        let u = Float(v).bitPattern
        return Double(Float(bitPattern: (u &+ 0x7fff &+ ((u >> 16) & 1)) & 0xffff_0000))
    }

    private func relativeError(_ a: [Float], _ e: [Double]) -> Double {
        var num = 0.0, den = 0.0
        for i in 0..<a.count {
            num += (Double(a[i]) - e[i]) * (Double(a[i]) - e[i])
            den += e[i] * e[i]
        }
        return (num / max(den, 1e-300)).squareRoot()
    }

    private func run(_ g: Graph, _ y: Value, _ inputs: [String: Tensor], threads: Int, _ precision: CPUComputePrecision?) throws -> [Float] {
        try CPUExecutor(threads: threads, computePrecision: precision).compile(g, outputs: [y]).run(inputs)[y]!.toFloats()
    }

    func testLinearAgainstRoundedAndExactReferences() throws {
        let shapes: [(m: Int, n: Int, k: Int)] = [(5, 1, 1), (7, 13, 33), (13, 7, 300), (29, 65, 771), (77, 33, 154),
                                                   (154, 768, 768), (100, 45, 1601), (4096, 320, 320)]
        for (i, s) in shapes.enumerated() {
            for dtype in [DType.f32, .f16, .bf16] {
                let g = Graph()
                let x = try g.input("x", shape: [s.m, s.k])
                let (wt, wref) = try randomTensor([s.n, s.k], dtype: dtype, seed: UInt64(10 + i))
                let (bt, bref) = try randomTensor([s.n], seed: UInt64(20 + i))
                let withBias = i % 2 == 0
                let y = try g.linear(x, weight: try g.constant(wt), bias: withBias ? try g.constant(bt) : nil)
                let (xt, xref) = try randomTensor([s.m, s.k], seed: UInt64(30 + i))
                let rounded = Reference.linear(xref.map(bf16), wref.map(bf16), withBias ? bref : nil, m: s.m, n: s.n, k: s.k)
                let exact = Reference.linear(xref, wref, withBias ? bref : nil, m: s.m, n: s.n, k: s.k)
                for threads in (s.m * s.n * s.k > 50_000_000 ? [2] : [1, 2, 3]) {
                    let got = try run(g, y, ["x": xt], threads: threads, .bf16)
                    let what = "bf16 linear \(s) \(dtype) threads \(threads)"
                    assertClose(got, rounded, atol: gemmTolerance(s.k), rtol: 1e-5, what)
                    let err = relativeError(got, exact)
                    XCTAssertLessThan(err, roundingBound, "\(what): relative error vs unrounded \(err)")
                    if threads == 2 { print(String(format: "%@: relative error vs unrounded operands %.2e", what, err)) }
                }
            }
        }
    }

    func testConvAgainstRoundedAndExactReferences() throws {
        struct Case { let batch, c, h, w, o, k, stride, pad: Int }
        // bf16 convolutions need at least 192 output channels (fewer stay f32: see the last test)
        let cases = [
            Case(batch: 1, c: 1, h: 1, w: 1, o: 192, k: 1, stride: 1, pad: 0),
            Case(batch: 2, c: 5, h: 13, w: 11, o: 193, k: 3, stride: 1, pad: 1),
            Case(batch: 2, c: 7, h: 13, w: 17, o: 201, k: 3, stride: 2, pad: 1),
            Case(batch: 1, c: 33, h: 9, w: 7, o: 197, k: 1, stride: 1, pad: 0),
            Case(batch: 1, c: 3, h: 19, w: 8, o: 211, k: 3, stride: 1, pad: 0),
            Case(batch: 2, c: 37, h: 7, w: 19, o: 205, k: 3, stride: 2, pad: 0),
            // SD 1.5's channel counts at reduced spatial sizes
            Case(batch: 1, c: 320, h: 12, w: 12, o: 320, k: 3, stride: 1, pad: 1),
            Case(batch: 2, c: 1280, h: 4, w: 4, o: 1280, k: 3, stride: 1, pad: 1),
            Case(batch: 1, c: 640, h: 8, w: 8, o: 640, k: 3, stride: 2, pad: 1),
            Case(batch: 2, c: 640, h: 8, w: 8, o: 1280, k: 1, stride: 1, pad: 0),
        ]
        for (i, t) in cases.enumerated() {
            let big = t.c >= 320
            for dtype in (big ? [DType.f16] : [.f32, .f16, .bf16]) {
                let g = Graph()
                let x = try g.input("x", shape: [t.batch, t.c, t.h, t.w])
                let (wt, wref) = try randomTensor([t.o, t.c, t.k, t.k], dtype: dtype, seed: UInt64(100 + i))
                let (bt, bref) = try randomTensor([t.o], seed: UInt64(150 + i))
                let bias = i % 2 == 1
                let y = try g.conv2d(x, weight: try g.constant(wt), bias: bias ? try g.constant(bt) : nil, stride: t.stride, padding: t.pad)
                let (xt, xref) = try randomTensor([t.batch, t.c, t.h, t.w], seed: UInt64(200 + i))
                func ref(_ xs: [Double], _ ws: [Double]) -> [Double] {
                    Reference.conv2d(xs, ws, bias ? bref : nil, batch: t.batch, c: t.c, h: t.h, wd: t.w, o: t.o,
                                     kh: t.k, kw: t.k, stride: t.stride, pad: t.pad).out
                }
                let rounded = ref(xref.map(bf16), wref.map(bf16)), exact = ref(xref, wref)
                for threads in (big ? [2] : [1, 2, 3]) {
                    let got = try run(g, y, ["x": xt], threads: threads, .bf16)
                    let what = "bf16 conv case \(i) (\(t.c)->\(t.o) k\(t.k) s\(t.stride)) \(dtype) threads \(threads)"
                    assertClose(got, rounded, atol: gemmTolerance(t.c * t.k * t.k), rtol: 1e-5, what)
                    let err = relativeError(got, exact)
                    XCTAssertLessThan(err, roundingBound, "\(what): relative error vs unrounded \(err)")
                    if threads == 2 { print(String(format: "%@: relative error vs unrounded operands %.2e", what, err)) }
                }
            }
        }
    }

    func testMatmulWithTransposes() throws {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (m, n, k) = (19, 45, 77)
            let g = Graph()
            let aShape: Shape = ta ? [k, m] : [m, k], bShape: Shape = tb ? [n, k] : [k, n]
            let a = try g.input("a", shape: aShape), b = try g.input("b", shape: bShape)
            let y = try g.matmul(a, b, transposeA: ta, transposeB: tb, alpha: 0.5)
            let (at, aref) = try randomTensor(aShape, seed: 5), (bt, bref) = try randomTensor(bShape, seed: 6)
            var expected: [Double] = []
            for r in 0..<m {
                for c in 0..<n {
                    var s = 0.0
                    for p in 0..<k {
                        s += bf16(ta ? aref[p * m + r] : aref[r * k + p]) * bf16(tb ? bref[c * k + p] : bref[p * n + c])
                    }
                    expected.append(0.5 * s)
                }
            }
            let got = try run(g, y, ["a": at, "b": bt], threads: 2, .bf16)
            assertClose(got, expected, atol: gemmTolerance(k), rtol: 1e-5, "bf16 matmul ta \(ta) tb \(tb)")
        }
    }

    /// Convolutions with fewer than 192 output channels stay f32 in bf16 mode (their packing
    /// would cost more than the dot products save): bit-for-bit the f32 result.
    func testNarrowConvStaysF32() throws {
        for (i, o) in [1, 7, 64, 191].enumerated() {
            let g = Graph()
            let x = try g.input("x", shape: [2, 9, 13, 11])
            let (wt, _) = try randomTensor([o, 9, 3, 3], dtype: .f16, seed: UInt64(300 + i))
            let y = try g.conv2d(x, weight: try g.constant(wt), bias: nil, stride: 1, padding: 1)
            let (xt, _) = try randomTensor([2, 9, 13, 11], seed: UInt64(310 + i))
            XCTAssertEqual(try run(g, y, ["x": xt], threads: 2, .bf16), try run(g, y, ["x": xt], threads: 2, .f32), "conv 9->\(o)")
        }
    }

    /// Off (the default) is bit-for-bit the f32 kernels, before and after a bf16 run; linear
    /// layers with at most 4 rows stay f32 in bf16 mode; the setting is restored after a run;
    /// below the avx512 level bf16 cannot be turned on.
    func testOffIsBitExactAndSettingIsScoped() throws {
        let g = Graph()
        let x = try g.input("x", shape: [37, 300])
        let (wt, _) = try randomTensor([70, 300], dtype: .f16, seed: 1)
        let y = try g.linear(x, weight: try g.constant(wt))
        let x4 = try g.input("x4", shape: [4, 300])
        let y4 = try g.linear(x4, weight: try g.constant(wt))
        let (xt, _) = try randomTensor([37, 300], seed: 2)
        let (x4t, _) = try randomTensor([4, 300], seed: 3)
        let inputs = ["x": xt, "x4": x4t]
        func outputs(_ p: CPUComputePrecision?) throws -> [[Float]] {
            let r = try CPUExecutor(threads: 2, computePrecision: p).compile(g, outputs: [y, y4]).run(inputs)
            return [r[y]!.toFloats(), r[y4]!.toFloats()]
        }
        XCTAssertFalse(CPUExecutor.bf16Active)
        let before = try outputs(nil)
        XCTAssertEqual(try outputs(.f32), before)
        let bf = try outputs(.bf16)
        XCTAssertFalse(CPUExecutor.bf16Active, "restored after the run")
        XCTAssertNotEqual(bf[0], before[0], "bf16 changes the M > 4 product")
        XCTAssertEqual(bf[1], before[1], "M <= 4 stays f32")
        XCTAssertEqual(try outputs(nil), before)

        XCTAssertEqual(lumen_cpu_set_bf16(1), 1)
        XCTAssertEqual(try outputs(nil)[0], bf[0], "process-wide switch, same kernels")
        XCTAssertEqual(try outputs(.f32), before, "an f32 executor overrides it for its run")
        XCTAssertEqual(lumen_cpu_bf16(), 1, "and restores it")
        _ = try CPUExecutor.setInstructionSet("avx2")
        XCTAssertEqual(lumen_cpu_bf16(), 0, "bf16 needs the avx512 level")
        XCTAssertEqual(lumen_cpu_set_bf16(1), 0)
        _ = try CPUExecutor.setInstructionSet("avx512")
        XCTAssertEqual(lumen_cpu_bf16(), 1)
        XCTAssertEqual(lumen_cpu_set_bf16(0), 0)
        XCTAssertEqual(try outputs(nil), before)
    }
}
