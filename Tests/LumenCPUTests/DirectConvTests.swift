import CLumenCPU
import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

/// The direct 3×3 convolution (conv_direct.c: stride 1, padding 1, computed from a ring of padded
/// input rows, AVX2 and AVX-512) against float64 references: forced onto odd shapes (partial
/// tiles, one-row and one-column images, channel counts around the tile heights, several images,
/// 1–4 threads, the split of channel panels between tasks), with the fused ops after it, and the
/// automatic choice of path on the shapes it was measured on.
final class DirectConvTests: XCTestCase {
    private func gemmTolerance(_ k: Int) -> Double { 2e-6 * Double(k).squareRoot() + 1e-6 }
    private let vectorSets = testedInstructionSets.filter { $0 != "generic" }

    private var winogradMode: Int32 = 1

    override func setUp() {
        super.setUp()
        winogradMode = lumen_cpu_conv_winograd()
        _ = lumen_cpu_set_conv_winograd(0)  // the graphs below test the direct kernel, not the Winograd path
    }

    override func tearDown() {
        _ = lumen_cpu_set_conv_direct(1)
        _ = lumen_cpu_set_conv_winograd(winogradMode)  // as the environment set it
        super.tearDown()
    }

    struct Case { let batch, c, h, w, o: Int }

    private func check(_ t: Case, dtype: DType, bias: Bool, threads: Int, seed: UInt64, _ what: String) throws {
        let g = Graph()
        let x = try g.input("x", shape: [t.batch, t.c, t.h, t.w])
        let (wt, wref) = try randomTensor([t.o, t.c, 3, 3], dtype: dtype, seed: seed)
        let (bt, bref) = try randomTensor([t.o], seed: seed + 1)
        let y = try g.conv2d(x, weight: try g.constant(wt), bias: bias ? try g.constant(bt) : nil, stride: 1, padding: 1)
        let (xt, xref) = try randomTensor([t.batch, t.c, t.h, t.w], seed: seed + 2)
        let got = try runCPU(g, [y], ["x": xt], threads: threads)[0]
        let ref = Reference.conv2d(xref, wref, bias ? bref : nil, batch: t.batch, c: t.c, h: t.h, wd: t.w, o: t.o,
                                   kh: 3, kw: 3, stride: 1, pad: 1)
        assertClose(got, ref.out, atol: gemmTolerance(t.c * 9), rtol: 1e-5, what)
    }

    func testForcedDirectConvolutionAgainstFloat64() throws {
        let cases = [
            Case(batch: 1, c: 1, h: 1, w: 1, o: 1),      // one pixel: every neighbour is padding
            Case(batch: 1, c: 3, h: 5, w: 7, o: 2),      // narrower than a tile
            Case(batch: 2, c: 5, h: 3, w: 33, o: 15),    // a 1-pixel last tile; 14 + 1 and 6 + 6 + 3 channel panels
            Case(batch: 1, c: 8, h: 4, w: 17, o: 29),    // AVX2: 16 + 1 columns
            Case(batch: 3, c: 13, h: 2, w: 48, o: 7),    // two rows, three images in one call
            Case(batch: 2, c: 16, h: 1, w: 16, o: 14),   // one row (top and bottom rows skipped at once)
            Case(batch: 1, c: 64, h: 6, w: 40, o: 64),   // TAESD's channels
            Case(batch: 1, c: 64, h: 9, w: 64, o: 3),    // an RGB head
            // wide tiles (up to 3 channels with AVX2, 7 with AVX-512): 32 + 13 and 45 columns, the
            // last tile's mask over two and three vectors
            Case(batch: 2, c: 9, h: 4, w: 45, o: 3),
        ]
        XCTAssertEqual(lumen_cpu_set_conv_direct(2), 2)
        try forEachInstructionSet { isa in
            for (i, t) in cases.enumerated() {
                XCTAssertEqual(lumen_conv2d_uses_direct(Int64(t.c), Int64(t.h), Int64(t.w), Int64(t.o), 3, 3, 1, 1, 1, 1) != 0,
                               isa != "generic", "direct path taken for \(t) on \(isa)")
                for (j, dtype) in [DType.f32, .f16, .bf16].enumerated() {
                    let threads = 1 + (i + j) % 3
                    try check(t, dtype: dtype, bias: (i + j) % 2 == 0, threads: threads, seed: UInt64(300 + 10 * i + j),
                              "direct conv \(t) \(dtype) threads \(threads) \(isa)")
                }
            }
        }
    }

    /// 320 → 320 with 3 and 4 threads: every task packing all 921,600 weights would cost more than
    /// its share of the work, so tasks split the channel panels as well as the rows.
    func testChannelPanelsSplitBetweenTasks() throws {
        XCTAssertEqual(lumen_cpu_set_conv_direct(2), 2)
        try forEachInstructionSet(vectorSets) { isa in
            for threads in [2, 3, 4] {
                try check(Case(batch: 1, c: 320, h: 3, w: 20, o: 320), dtype: .f16, bias: true, threads: threads, seed: 400,
                          "direct conv 320->320 threads \(threads) \(isa)")
            }
        }
    }

    /// conv → + residual → affine → clamp, fused into the direct kernel's stores, partial tiles
    /// included.
    func testFusedOpsAfterDirectConvolution() throws {
        XCTAssertEqual(lumen_cpu_set_conv_direct(2), 2)
        let c = 9
        // 17 output channels; 3 (an RGB head: the wide tiles)
        for (o, seed) in [(17, UInt64(500)), (3, 510)] {
            let t = try FusedConvCase(batch: 2, c: c, h: 5, w: 37, o: o, seed: seed)
            try forEachInstructionSet { isa in
                for threads in [1, 2] {
                    let got = try runCPU(t.graph, [t.output], t.inputs, threads: threads)[0]
                    // 1.5× the convolution's bound: the affine map scales its error
                    assertClose(got, t.reference, atol: 1.5 * gemmTolerance(c * 9), rtol: 1e-5,
                                "fused direct conv o \(o) threads \(threads) \(isa)")
                }
            }
        }
    }

    /// Where the automatic choice takes the direct kernel (measured with tools/kernel_harness.c conv):
    /// TAESD's and the VAE's 3×3 convolutions and an RGB head, not 4 input channels, not the UNet's
    /// 1280 → 1280, never strided or unpadded ones, never on the portable path.
    func testAutomaticChoice() throws {
        XCTAssertEqual(lumen_cpu_set_conv_direct(1), 1)
        try forEachInstructionSet { isa in
            let vector = isa != "generic"
            func uses(_ c: Int, _ o: Int, _ hw: Int, stride: Int = 1, pad: Int = 1) -> Bool {
                lumen_conv2d_uses_direct(Int64(c), Int64(hw), Int64(hw), Int64(o), 3, 3, Int64(stride), Int64(stride),
                                         Int64(pad), Int64(pad)) != 0
            }
            XCTAssertEqual(uses(64, 64, 512), vector, isa)
            XCTAssertEqual(uses(64, 3, 512), vector, isa)
            XCTAssertEqual(uses(128, 128, 512), vector, isa)
            XCTAssertEqual(uses(512, 512, 64), vector, isa)
            XCTAssertEqual(uses(640, 640, 32), vector, isa)
            XCTAssertFalse(uses(4, 64, 64), isa)
            XCTAssertFalse(uses(1280, 1280, 16), isa)
            XCTAssertFalse(uses(64, 64, 512, stride: 2), isa)
            XCTAssertFalse(uses(64, 64, 512, pad: 0), isa)
        }
        XCTAssertEqual(lumen_cpu_set_conv_direct(0), 0)
        XCTAssertEqual(lumen_conv2d_uses_direct(64, 512, 512, 64, 3, 3, 1, 1, 1, 1), 0)
    }
}
