import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The second-pass seam (`denoisingEnd`, `initLatents`, `denoisingStart`) against diffusers'
/// SDXL base-to-refiner handoff (tools/make_handoff_fixtures.py): a generation stopped at 0.7 of
/// the schedule and finished by an image-to-image pass from its latents, on the tiny SDXL model.
final class SecondPassTests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/handoff-reference.safetensors") } }

    /// Both passes as diffusers runs them, for Euler and Euler ancestral (whose second pass draws
    /// its steps' noise from a generator seeded anew).
    func testHandoffMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let split = try XCTUnwrap(Double(ref.metadata["split"] ?? ""))
            let pipeline = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
            for (name, scheduler) in [("euler", SchedulerKind.euler), ("euler-a", .eulerAncestral)] {
                var first = try DiffusersRequest(ref, key: "pipeline").request
                first.scheduler = scheduler
                first.denoisingEnd = split
                var steps: [Int] = []
                let latents = try pipeline.latents(for: first) { event in
                    if case .step(let k, let n, _) = event { steps.append(k); XCTAssertEqual(n, 5) }
                }
                XCTAssertEqual(steps, [1, 2, 3, 4, 5], "8 leading steps from 876: 876…376 are at or above the cutoff 300")
                let want = try ref.tensor("\(name).latents").toFloats()
                let got = latents.toFloats()
                XCTAssertEqual(latents.shape, [1, 4, 8, 8])
                let worst = zip(got, want).map { abs($0 - $1) }.max()!
                // The latents at σ ≈ 3 are ~30 in size; the f32 UNet agrees with diffusers to ~1e-6 relative.
                XCTAssertLessThan(worst, 2e-3, "\(name): first pass latents")

                var second = try DiffusersRequest(ref, key: "pipeline").request
                second.width = nil
                second.height = nil
                second.scheduler = scheduler
                second.initLatents = Latents(latents)
                second.denoisingStart = split
                steps = []
                let image = try pipeline.generate(second) { event in
                    if case .step(let k, _, _) = event { steps.append(k) }
                }[0]
                XCTAssertEqual(steps, [1, 2, 3], "the three steps below the cutoff")
                let d = pixelDifference(image.pixels.map(Int.init), try DiffusersRequest.pixels(ref, "\(name).image"))
                XCTAssertLessThanOrEqual(d.largest, 1, name)
                XCTAssertLessThan(d.mean, 1, name)
            }
        }
    }

    /// The loop over a range of steps is the same loop: a deterministic run split in two gives the
    /// whole run's latents to the bit, and diffusers' whole run's image.
    func testSplitRunIsTheWholeRun() throws {
        let ref = try Self.reference
        let pipeline = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        let whole = try DiffusersRequest(ref, key: "pipeline").request
        var first = whole
        first.denoisingEnd = 0.7
        var second = whole
        second.initLatents = Latents(try pipeline.latents(for: first))
        second.denoisingStart = 0.7
        XCTAssertEqual(try pipeline.latents(for: second).toFloats(), try pipeline.latents(for: whole).toFloats())
        try assertDraws(pipeline, second, like: "euler.whole", in: ref, maxPixelError: 1)
    }

    /// Ill-formed second passes are refused by name before any work.
    func testBadSecondPassesAreRefused() throws {
        let pipeline = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        var r = GenerationRequest(prompt: "x")
        r.steps = 8
        func refused(_ r: GenerationRequest, _ words: String, line: UInt = #line) {
            XCTAssertThrowsError(try pipeline.latents(for: r), line: line) {
                XCTAssertTrue("\($0)".contains(words), "\($0)", line: line)
            }
        }
        var a = r; a.denoisingEnd = 1.5
        refused(a, "denoising end must be in (0, 1)")
        var b = r; b.denoisingStart = 0.5
        refused(b, "denoising start needs init latents")
        var c = r; c.initLatents = Latents(try Tensor(shape: [1, 4, 4, 4], values: [Float](repeating: 0, count: 64)))
        c.width = 64; c.height = 64
        refused(c, "init latents are [1, 4, 4, 4]; expected [1, 4, 8, 8]")
        var d = r; d.initLatents = Latents(try Tensor(shape: [1, 4, 8, 8], values: [Float](repeating: 0, count: 256)))
        d.denoisingStart = 0.8; d.denoisingEnd = 0.5
        refused(d, "denoising start 0.8 must be below denoising end 0.5")
        var e = d; e.denoisingEnd = nil; e.denoisingStart = 0.999
        refused(e, "leaves no step to run")
    }
}
