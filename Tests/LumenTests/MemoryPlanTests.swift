import Foundation
import Lumen
import XCTest

/// The memory plan a request gets before any work, and what follows from it: the VAE decodes
/// whole whenever that fits (as diffusers does, whatever the VAE's sample_size), tiles only
/// when a tensor cannot bind or the budget is exceeded, and a request that cannot fit is refused
/// before its first step. The plan is checked against what the process and the device really took.
final class MemoryPlanTests: TemporaryDirectoryTestCase {
    /// A VAE whose sample_size (32) is smaller than the image: `auto` used to tile a 64×64
    /// generation (13/255 mean from diffusers); diffusers never tiles unless asked, and its
    /// untiled decode does not read sample_size, so its image for these weights is the
    /// pipeline fixture's. Lumen now draws that image by default.
    func testSmallSampleSizeVAEDecodesWholeAsDiffusers() throws {
        let path = dir + "/tiny"
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder, toPath: path)
        let configPath = path + "/vae/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        config["sample_size"] = 32
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))

        let pipeline = try Pipeline(modelPath: path, backend: .cpu)
        XCTAssertEqual(pipeline.model.vaeConfig.sampleSize, 32)
        let file = try SafetensorsFile(path: PipelineTests.reference)
        let c = try JSONDecoder().decode(PipelineTests.Case.self, from: Data(file.metadata["euler-cfg"]!.utf8))
        var r = GenerationRequest(prompt: c.prompt)
        r.negativePrompt = c.negative_prompt
        (r.steps, r.guidanceScale, r.width, r.height, r.seed) = (c.steps, c.guidance, c.width, c.height, c.seed)
        r.scheduler = SchedulerKind(rawValue: c.scheduler)
        XCTAssertNil(try pipeline.vaeTileLayout(for: r), "auto decodes whole what fits")
        let pixels = try pipeline.generate(r)[0].pixels.map(Int.init)
        let expected = try file.rawBytes("euler-cfg.image").map(Int.init)
        let d = pixelDifference(pixels, expected)
        XCTAssertLessThanOrEqual(d.largest, 1)
        XCTAssertLessThan(d.mean, 1)
    }

    /// A budget the whole decoder exceeds gets the largest tile that fits, and says why; a
    /// budget nothing fits is refused before the first step.
    func testBudgetChoosesTilesOrRefusesBeforeTheFirstStep() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        pipeline.retainsPrograms = false
        var r = GenerationRequest(prompt: "a red circle")
        (r.width, r.height, r.steps) = (256, 256, 2)
        let whole = try pipeline.memoryPlan(for: r)
        XCTAssertNil(whole.decodeTiles)
        XCTAssertTrue(whole.fits)
        let decode = try XCTUnwrap(whole.stages.last)
        XCTAssertEqual(decode.name, "decoding")
        XCTAssertGreaterThan(decode.activations, 0)

        // Between the peak with the smallest tiles and the peak decoding whole.
        var smallest = r
        smallest.vaeTiling = .tiles(sampleSize: 32)
        let floor = try pipeline.memoryPlan(for: smallest).peak
        XCTAssertLessThan(floor, whole.peak)
        let tight = (floor + whole.peak) / 2
        pipeline.memoryBudget = MemoryBudget(bytes: tight, inUse: whole.baseline, source: "test")
        let tiled = try pipeline.memoryPlan(for: r)
        let tiles = try XCTUnwrap(tiled.decodeTiles, "\(tiled)")
        XCTAssertLessThan(tiles.sampleTileSize, 256)
        XCTAssertEqual(tiles.sampleTileSize % 32, 0)
        XCTAssertTrue(tiled.fits, "\(tiled)")
        XCTAssertLessThanOrEqual(tiled.peak, tight)
        XCTAssertTrue(tiled.decisions.contains { $0.contains("decodes in") && $0.contains("budget") }, "\(tiled.decisions)")
        XCTAssertEqual(try pipeline.generate(r)[0].width, 256)

        pipeline.memoryBudget = MemoryBudget(bytes: whole.baseline + 4096, inUse: whole.baseline, source: "test")
        var steps = 0
        XCTAssertThrowsError(try pipeline.generate(r) { if case .step = $0 { steps += 1 } }) { error in
            guard case GenerationError.insufficientMemory(let plan) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(plan.contains("denoising"), plan)
        }
        XCTAssertEqual(steps, 0, "refused before the first step")
    }

    /// The plan's peak against the process's own peak resident set (VmHWM), for the real binary:
    /// a whole generation whose decoder dominates, and image-to-image.
    func testPlanMatchesMeasuredPeakOnCPU() throws {
        for args in [["--width", "512", "--height", "512"], ["--init-image", Fixtures.root + "/images/init64.png", "--steps", "3"]] {
            let r = try runLumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--backend", "cpu", "--steps", "1",
                                  "--json", "-o", dir + "/out.png"] + args)
            XCTAssertEqual(r.status, 0, r.stderr)
            let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let planned = Double(try XCTUnwrap(summary["planned_peak_bytes"] as? Int))
            let measured = Double(try XCTUnwrap(summary["peak_resident_bytes"] as? Int))
            XCTAssertLessThan(abs(planned - measured) / measured, 0.15, "\(args): planned \(planned), measured \(measured)")
        }
    }

    /// On lavapipe the plan's peak against the device memory the executor allocated.
    func testPlanMatchesAllocatedDeviceMemoryOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan)
        pipeline.retainsPrograms = false
        var r = GenerationRequest(prompt: "a red circle")
        (r.width, r.height, r.steps) = (256, 256, 1)
        let plan = try pipeline.memoryPlan(for: r)
        let before = vulkan.allocatedDeviceBytes  // what other executors on this device still hold
        vulkan.resetPeakAllocatedDeviceBytes()
        _ = try pipeline.generate(r)
        let measured = Double(vulkan.peakAllocatedDeviceBytes - before), planned = Double(plan.peak)
        XCTAssertLessThan(abs(planned - measured) / measured, 0.15, "planned \(planned), allocated \(measured)\n\(plan)")
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// `--dry-run` prints the plan and writes nothing; a budget nothing fits fails before any step.
    func testDryRunAndBudgetFlags() throws {
        let out = dir + "/x.png"
        let plan = try runLumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--dry-run", "-o", out])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        XCTAssertTrue(plan.stdout.contains("memory plan") && plan.stdout.contains("decoding"), plan.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let refused = try runLumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--memory-budget", "1M", "-o", out])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertLessThan(refused.status, 128)
        XCTAssertTrue(refused.stderr.contains("not enough memory"), refused.stderr)
        XCTAssertFalse(refused.stderr.contains("step 1/"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let bad = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--memory-budget", "lots"])
        XCTAssertTrue(bad.stderr.contains("--memory-budget"), bad.stderr)
    }
}
