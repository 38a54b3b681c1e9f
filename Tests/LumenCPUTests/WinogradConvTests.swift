import CLumenCPU
import LumenCPU
import LumenRuntime
import LumenTestSupport
import XCTest

/// Winograd 3×3 convolutions (conv_winograd.c: F(4×4, 3×3) and F(2×2, 3×3), stride 1, padding 1)
/// against float64 references: both tile sizes on partial tiles, images narrower than the 8-column
/// transposes, several images, f32/f16/bf16 weights, 1–3 tasks per phase, plans split into several
/// blocks of tiles and of output channels by a small scratch budget; through the executor with the
/// fused ops after it; and the automatic choice on the shapes it was measured on.
final class WinogradConvTests: XCTestCase {
    private let vectorSets = testedInstructionSets.filter { $0 != "generic" }

    /// The bound: the GEMM family's (2e-6·√k + 1e-6) times a factor for the transforms. Measured
    /// (24 random f16-weight problems, 16–1280 channels, the worst |error| beyond rtol over that GEMM
    /// bound): F(2×2) 0.48, F(4×4) 3.1, and 4.3 for LinearAndConvTests' 320 → 320 at 12×12 forced
    /// onto F(4×4). F(4×4)'s transforms scale values by up to 8 (A^T) and 2.5 (B^T) around the sums,
    /// so its rounding errors grow with them (tools/kernel_harness.c winograd at the UNet's shapes:
    /// F(2×2) 5e-7, F(4×4) 3–5e-6 of the largest output; the direct kernel and the GEMM 1–4e-6).
    private func tolerance(_ k: Int, m: Int) -> Double {
        (m == 6 ? WinogradConvTests.f6Factor : m == 4 ? 8.0 : 1.0) * (2e-6 * Double(k).squareRoot() + 1e-6)
    }

    /// F(6×6)'s factor. Its points reach ±2 and ±1/2 in both B^T and A^T (entries up to 32 and 5.25),
    /// so its errors are larger: measured with the factor at 1, the worst |error| over the GEMM bound
    /// in these tests was 5.0 (392 channels; 4.0–4.8 at 24–64), against F(4×4)'s 4.3; at the
    /// TAESD/VAE shapes tools/kernel_harness.c winograd gives 8–10e-6 of the largest output against
    /// F(4×4)'s 2e-6. 12 leaves F(4×4)'s margin over its measurement.
    static let f6Factor = 12.0

    private var winogradMode: Int32 = 1

    override func setUp() {
        super.setUp()
        winogradMode = lumen_cpu_conv_winograd()
    }

    override func tearDown() {
        _ = lumen_cpu_set_conv_winograd(winogradMode)  // as the environment set it
        _ = lumen_cpu_set_winograd_budget(0)
        _ = lumen_cpu_set_winograd_fused(-1)
        super.tearDown()
    }

    struct Case { let batch, c, h, w, o: Int }

    /// Runs the plan's phases in order, each on `tasks` tasks one after the other (as the thread
    /// pool would between its barriers).
    private func runPhases(_ plan: inout lumen_winograd_plan, x: [Float], w: Tensor, bias: [Float]?, y: inout [Float],
                           tasks: Int) {
        var scratch = [Float](repeating: .nan, count: Int(plan.scratch_floats))
        let wdt: Int32 = w.dtype == .f32 ? 0 : w.dtype == .f16 ? 1 : 2
        w.withUnsafeBytes { wp in
            for phase in 0..<lumen_winograd_phases(&plan) {
                for t in 0..<tasks {
                    lumen_winograd_run_phase(&plan, phase, x, wp.baseAddress, wdt, bias, &y, nil, &scratch, Int32(t), Int32(tasks))
                }
            }
        }
    }

    private func check(_ t: Case, m: Int, dtype: DType, bias: Bool, tasks: Int, seed: UInt64, budget: Int64 = 0,
                       fused: Bool = false, blocks: ((Int64, Int64)) -> Bool = { _ in true },
                       units: ((lumen_winograd_plan) -> Bool)? = nil, _ what: String) throws {
        _ = lumen_cpu_set_winograd_budget(budget)
        var plan = lumen_winograd_plan()
        XCTAssertEqual(lumen_winograd_plan_make(Int64(t.batch), Int64(t.c), Int64(t.h), Int64(t.w), Int64(t.o), 3, 3, 1, 1, 1, 1,
                                                Int32(m), &plan), 1, "\(what): planned")
        XCTAssertEqual(plan.m, Int64(m), what)
        XCTAssertEqual(plan.fused, fused ? 1 : 0, "\(what): fused mode")
        if let units { XCTAssertTrue(units(plan), "\(what): units of \(plan.tb_tiles) tiles") }
        XCTAssertTrue(blocks((plan.n_tblocks, plan.n_oblocks)), "\(what): blocks \(plan.n_tblocks) × \(plan.n_oblocks)")
        let (wt, wref) = try randomTensor([t.o, t.c, 3, 3], dtype: dtype, seed: seed)
        let (bt, bref) = try randomTensor([t.o], seed: seed + 1)
        let (xt, xref) = try randomTensor([t.batch, t.c, t.h, t.w], seed: seed + 2)
        var y = [Float](repeating: .nan, count: t.batch * t.o * t.h * t.w)
        runPhases(&plan, x: xt.toFloats(), w: wt, bias: bias ? bt.toFloats() : nil, y: &y, tasks: tasks)
        let ref = Reference.conv2d(xref, wref, bias ? bref : nil, batch: t.batch, c: t.c, h: t.h, wd: t.w, o: t.o,
                                   kh: 3, kw: 3, stride: 1, pad: 1)
        assertClose(y, ref.out, atol: tolerance(t.c * 9, m: m), rtol: 1e-5, what)
    }

    func testBothTileSizesAgainstFloat64() throws {
        let cases = [
            Case(batch: 1, c: 8, h: 1, w: 1, o: 8),       // one pixel: every neighbour is padding
            Case(batch: 1, c: 8, h: 5, w: 7, o: 16),      // narrower than a transpose, partial tiles
            Case(batch: 2, c: 16, h: 9, w: 19, o: 8),     // 8 + 8 + 3 columns, a 1-row last tile
            Case(batch: 3, c: 24, h: 6, w: 16, o: 40),    // three images
            Case(batch: 1, c: 64, h: 13, w: 30, o: 24),   // more channels than one vector
            // fused: more input channels than one packed GEMM block takes (AVX2 256, AVX-512 384),
            // so the products go through lumen_gemm_run instead of the transforms' packed operands
            Case(batch: 1, c: 392, h: 6, w: 10, o: 16),
        ]
        XCTAssertEqual(lumen_cpu_set_conv_winograd(2), 2)
        try forEachInstructionSet(vectorSets) { isa in
            for fused in [0, 1] {
                XCTAssertEqual(lumen_cpu_set_winograd_fused(Int32(fused)), Int32(fused))
                for (i, t) in cases.enumerated() {
                    for m in [6, 4, 2] {
                        let dtype = [DType.f32, .f16, .bf16][(i + m + fused) % 3], tasks = 1 + (i + m / 2 + fused) % 3
                        try check(t, m: m, dtype: dtype, bias: (i + m / 2) % 2 == 0, tasks: tasks, seed: UInt64(600 + 10 * i + m),
                                  fused: fused == 1, "F(\(m)) \(t) \(dtype) tasks \(tasks) fused \(fused) \(isa)")
                    }
                }
            }
        }
    }

    /// A small budget splits the work: the tiles in blocks (the weights transformed once), the
    /// output channels in blocks (the inputs transformed once), or both (the weight transforms
    /// redone for every tile block). Which one a budget gives is the plan's cost model's choice;
    /// the cases below cover all three.
    func testBlocksOfTilesAndChannels() throws {
        XCTAssertEqual(lumen_cpu_set_conv_winograd(2), 2)
        XCTAssertEqual(lumen_cpu_set_winograd_fused(0), 0)
        // (output channels, budget / (alpha² · 64), tiles split, channels split) per tile size (the
        // budgets include the planes' padding to an odd number of cache lines)
        let cases: [Int: [(o: Int, units: Int64, tiles: Bool, channels: Bool)]] = [
            4: [(64, 100, true, false), (136, 100, true, true), (136, 220, false, true)],
            2: [(64, 100, true, false), (136, 100, true, true), (136, 200, true, true)],
        ]
        try forEachInstructionSet(vectorSets) { isa in
            for m in [4, 2] {
                for (i, k) in cases[m]!.enumerated() {
                    let t = Case(batch: 2, c: 64, h: 20, w: 24, o: k.o)
                    try check(t, m: m, dtype: .f16, bias: true, tasks: 1 + i % 3, seed: UInt64(700 + i), budget: Int64((m + 2) * (m + 2) * 64) * k.units,
                              blocks: { ($0.0 > 1) == k.tiles && ($0.1 > 1) == k.channels },
                              "F(\(m)) \(t) budget \(k.units) \(isa)")
                }
            }
        }
    }

    /// The fused mode's units of tiles with the L2 pinned at 1 MiB (so 64 → 64 units hold up to
    /// 108–112 tiles of F(4×4), 56–60 of F(6×6)): runs of consecutive tiles in whole GEMM
    /// micro-panels that cross from one image to the next (narrow images), start in the middle of a
    /// strip and end in the next, or cut one wide strip (the last unit partial); at least 8 units
    /// where there are tiles for 8 whole panels; 1–3 tasks.
    func testFusedUnitsOfTiles() throws {
        XCTAssertEqual(lumen_cpu_set_conv_winograd(2), 2)
        XCTAssertEqual(lumen_cpu_set_winograd_fused(1), 1)
        let l2 = lumen_cpu_l2_bytes()
        _ = lumen_cpu_set_l2_bytes(1 << 20)
        defer { _ = lumen_cpu_set_l2_bytes(l2) }
        let cases = [Case(batch: 2, c: 64, h: 48, w: 20, o: 64), Case(batch: 1, c: 64, h: 40, w: 100, o: 64),
                     Case(batch: 1, c: 64, h: 3, w: 4 * 150 + 3, o: 64)]
        try forEachInstructionSet(vectorSets) { isa in
            for m in [6, 4, 2] {
                for (i, t) in cases.enumerated() {
                    let tw = Int64((t.w + m - 1) / m), tiles = Int64(t.batch * ((t.h + m - 1) / m)) * tw
                    try check(t, m: m, dtype: .f16, bias: true, tasks: 1 + (i + m) % 3, seed: UInt64(750 + 10 * i + m), fused: true,
                              units: { p in
                                  let units = (tiles + p.tb_tiles - 1) / p.tb_tiles
                                  return p.pack_mr > 0 && p.tb_tiles % p.pack_mr == 0 && (tiles < 8 * p.pack_mr || units >= 8)
                                      && (i != 1 || p.tb_tiles % tw != 0)  // the second case: units start mid-strip
                              },
                              "fused F(\(m)) \(t) \(isa)")
                }
            }
        }
    }

    /// conv → + residual → affine → clamp through the executor, fused into the output transform,
    /// in both modes.
    func testFusedOpsThroughTheExecutor() throws {
        XCTAssertEqual(lumen_cpu_set_conv_winograd(2), 2)
        let (b, c, h, w, o) = (2, 16, 11, 21, 24)
        let t = try FusedConvCase(batch: b, c: c, h: h, w: w, o: o, seed: 800)
        try forEachInstructionSet(vectorSets) { isa in
            for (threads, fused) in [(1, 0), (2, 0), (1, 1), (2, 1)] {
                XCTAssertEqual(lumen_cpu_set_winograd_fused(Int32(fused)), Int32(fused))
                let program = try CPUExecutor(threads: threads).compile(t.graph, outputs: [t.output]) as! CPUProgram
                XCTAssertGreaterThan(program.activationBytes, 4 * (b * o * h * w + b * c * h * w), "scratch counted \(isa)")
                XCTAssertEqual(program.activationBytes, CPUExecutor().plannedActivationBytes(t.graph, outputs: [t.output]),
                               "planned = allocated \(isa)")
                let got = try program.run(t.inputs)[t.output]!.toFloats()
                // 1.5× the convolution's bound: the affine map scales its error
                assertClose(got, t.reference, atol: 1.5 * tolerance(c * 9, m: 4), rtol: 1e-5,
                            "fused winograd conv threads \(threads) fused mode \(fused) \(isa)")
            }
        }
    }

    /// The automatic choice (measured with tools/kernel_harness.c winograd): the UNet's and the
    /// VAE's convolutions, F(4×4) from 24 pixels a side and F(2×2) from 12 (with AVX2 from 6; with AVX-512 for
    /// three times as many input channels as output ones), from 64 channels; with AVX-512 below
    /// 256 channels only in the fused mode; F(6×6) in the fused mode from 128 pixels; never on the
    /// portable path, strided, unpadded, with channel counts that are not multiples of 8, or when
    /// turned off.
    func testAutomaticChoice() throws {
        XCTAssertEqual(lumen_cpu_set_conv_winograd(1), 1)
        func tile(_ c: Int, _ o: Int, _ hw: Int, stride: Int = 1, pad: Int = 1) -> Int64 {
            var plan = lumen_winograd_plan()
            guard lumen_winograd_plan_make(2, Int64(c), Int64(hw), Int64(hw), Int64(o), 3, 3, Int64(stride), Int64(stride),
                                           Int64(pad), Int64(pad), 0, &plan) != 0 else { return 0 }
            XCTAssertLessThanOrEqual(plan.scratch_floats, 12 << 20)
            return plan.m
        }
        try forEachInstructionSet { isa in
            let vector = isa != "generic"
            XCTAssertEqual(tile(320, 320, 64), vector ? 4 : 0, isa)
            XCTAssertEqual(tile(1920, 640, 32), isa == "avx2" ? 4 : isa == "avx512" ? 2 : 0, isa)
            XCTAssertEqual(tile(640, 320, 64), vector ? 4 : 0, isa)
            XCTAssertEqual(tile(2560, 1280, 16), vector ? 2 : 0, isa)
            XCTAssertEqual(tile(512, 512, 128), vector ? 4 : 0, isa)
            XCTAssertEqual(tile(1280, 1280, 8), isa == "avx2" ? 2 : 0, isa)  // AVX2: F(2×2) from 6 pixels
            XCTAssertEqual(tile(2560, 1280, 8), isa == "avx2" ? 2 : 0, isa)
            XCTAssertEqual(tile(1280, 1280, 6), isa == "avx2" ? 2 : 0, isa)
            XCTAssertEqual(tile(1280, 1280, 4), 0, isa)
            XCTAssertEqual(tile(64, 64, 256), vector ? 6 : 0, isa)   // fused, from 128 pixels F(6×6)
            XCTAssertEqual(tile(128, 128, 512), vector ? 6 : 0, isa)  // fused
            XCTAssertEqual(tile(64, 64, 128), vector ? 6 : 0, isa)   // fused
            XCTAssertEqual(tile(64, 64, 64), vector ? 4 : 0, isa)    // fused
            XCTAssertEqual(tile(256, 256, 256), vector ? 4 : 0, isa)  // too many weights to fuse F(6×6) or F(4×4)
            XCTAssertEqual(tile(64, 64, 16), isa == "avx2" ? 2 : 0, isa)
            XCTAssertEqual(tile(256, 128, 64), isa == "avx2" ? 4 : 0, isa)  // too many weights to fuse
            XCTAssertEqual(tile(32, 32, 256), 0, isa)
            XCTAssertEqual(tile(4, 320, 64), 0, isa)
            XCTAssertEqual(tile(320, 320, 64, stride: 2), 0, isa)
            XCTAssertEqual(tile(320, 320, 64, pad: 0), 0, isa)
            XCTAssertEqual(tile(324, 320, 64), 0, isa)
        }
        XCTAssertEqual(lumen_cpu_set_conv_winograd(0), 0)
        XCTAssertEqual(tile(320, 320, 64), 0)
    }
}
