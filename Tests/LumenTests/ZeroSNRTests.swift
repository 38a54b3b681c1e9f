import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// Zero-terminal-SNR models (Lin et al. 2023): a v-prediction folder whose scheduler config has
/// `rescale_betas_zero_snr` and "trailing" spacing, drawn with each scheduler, and diffusers'
/// `guidance_rescale` on SD 2.x and SDXL, against diffusers (tools/make_zero_snr_fixtures.py).
/// Lumen refused such a config ("unsupported scheduler rescale_betas_zero_snr") and had no
/// guidance rescale.
final class ZeroSNRTests: XCTestCase {
    static var dir: String { Fixtures.root + "/zero-snr" }

    /// tiny-sd2 with a zero-SNR config (`ddim-trailing` or `pndm`) as its scheduler (the other parts
    /// linked, model_index.json naming the class).
    func zeroSNRFolder(in dir: String, config: String = "ddim-trailing") throws -> String {
        try Fixtures.folder(dir + "/tiny-sd2-zero-snr-" + config, model: Fixtures.root + "/tiny-sd2",
                            schedulerConfig: Self.dir + "/" + config + "/scheduler_config.json")
    }

    func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        let fields = try DiffusersRequest(ref, key: name)
        var request = fields.request
        request.scheduler = (fields.fields["scheduler"] as? String).flatMap(SchedulerKind.init(rawValue:))
        request.guidanceRescale = Float(fields.fields["guidance_rescale"] as! Double)
        return request
    }

    func testZeroSNRFolderWithEachSchedulerMatchesDiffusers() throws {
        let dir = NSTemporaryDirectory() + "lumen-zero-snr-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try SchedulerConfig(path: Self.dir + "/ddim-trailing/scheduler_config.json")
        XCTAssertEqual(config.rescaleBetasZeroSnr, true, "the fixture is a zero-SNR config")
        XCTAssertEqual(config.timestepSpacing, "trailing")
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        let pipeline = try Pipeline(modelPath: try zeroSNRFolder(in: dir), backend: .cpu)
        for name in ["ddim", "ddim-rescaled", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-karras", "ddpm"] {
            try assertDraws(pipeline, try request(ref, name), like: "image." + name, in: ref, maxPixelError: 1)
        }
        // PNDM has no rescale_betas_zero_snr: the value is ignored, as diffusers' from_config drops it.
        let pndm = try Pipeline(modelPath: try zeroSNRFolder(in: dir, config: "pndm"), backend: .cpu)
        XCTAssertEqual(try SchedulerConfig(path: Self.dir + "/pndm/scheduler_config.json").rescaleBetasZeroSnr, true)
        try assertDraws(pndm, try request(ref, "pndm"), like: "image.pndm", in: ref, maxPixelError: 1)
    }

    /// An epsilon prediction at the zero-signal timestep is a typed error naming the cause before
    /// the first step (it was a NaN error after it, suggesting a lower guidance scale); Euler,
    /// whose estimate does not divide by √ᾱ, runs.
    func testEpsilonAtZeroSignalIsRefusedWithTheReason() throws {
        let dir = NSTemporaryDirectory() + "lumen-zero-snr-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pipeline = try Pipeline(modelPath: try zeroSNRFolder(in: dir), backend: .cpu)
        var r = GenerationRequest(prompt: "a small green square")
        (r.width, r.height, r.steps, r.predictionType) = (64, 64, 3, .epsilon)
        for kind in [SchedulerKind.ddim, .ddpm] {
            r.scheduler = kind
            XCTAssertThrowsError(try pipeline.generate(r)) { error in
                XCTAssertTrue("\(error)".contains("starts at timestep 999, which rescale_betas_zero_snr leaves with no signal"), "\(error)")
            }
        }
        r.scheduler = .euler
        XCTAssertEqual(try pipeline.generate(r).count, 1)
        r.scheduler = .ddim
        r.predictionType = nil  // the folder's v-prediction
        XCTAssertEqual(try pipeline.generate(r).count, 1)
    }

    func testSDXLGuidanceRescaleMatchesDiffusers() throws {
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu)
        let rescaled = try request(ref, "sdxl-rescaled")
        XCTAssertEqual(rescaled.guidanceRescale, 0.7)
        try assertDraws(pipeline, rescaled, like: "image.sdxl-rescaled", in: ref, maxPixelError: 1)
    }

    /// The schedule itself against diffusers' formula evaluated in float64: √ᾱ of the first
    /// timestep kept, of the last 0, and the classes' treatment of that 0.
    func testRescaledScheduleAgainstFloat64() throws {
        var c = SchedulerConfig()
        c.betaSchedule = .scaledLinear
        c.betaStart = 0.00085
        c.betaEnd = 0.012
        c.timestepSpacing = "trailing"
        let plainConfig = c
        c.rescaleBetasZeroSnr = true
        let rescaled = try DDIMScheduler(config: c, steps: 10).alphasCumprod
        let plain = try DDIMScheduler(config: plainConfig, steps: 10).alphasCumprod
        // float64 reference of rescale_zero_terminal_snr from the unrescaled ᾱ.
        let roots = plain.map { Double($0).squareRoot() }
        let (first, last) = (roots[0], roots[roots.count - 1])
        let expected = roots.map { r -> Double in let s = (r - last) * first / (first - last); return s * s }
        XCTAssertEqual(rescaled.count, 1000)
        XCTAssertEqual(rescaled[999], 0, "zero terminal SNR")
        XCTAssertEqual(rescaled[0], plain[0], "the first ᾱ is unchanged")
        for (i, (got, want)) in zip(rescaled, expected).enumerated() {
            // float32 roundings of √, the shift, the scale and the ratios: measured 1.2e-6 relative at most
            XCTAssertEqual(Double(got), want, accuracy: 4e-6 * want + 1e-9, "ᾱ[\(i)]")
        }
        // Euler and DPM-Solver++ put 2⁻²⁴ in place of the last ᾱ: a first sigma of √((1 − 2⁻²⁴) / 2⁻²⁴) ≈ 4096.
        XCTAssertEqual(try EulerDiscreteScheduler(config: c, steps: 10).sigmas[0], 4096, accuracy: 0.01)
        XCTAssertEqual(try DPMSolverMultistepScheduler(config: c, steps: 10).sigmas[0], 4096, accuracy: 0.01)
        XCTAssertLessThan(try EulerDiscreteScheduler(config: plainConfig, steps: 10).sigmas[0], 20)
    }

    func testGuidanceRescaleRange() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        for bad: Float in [-0.1, 1.5, .nan, .infinity] {
            var r = GenerationRequest(prompt: "x")
            r.steps = 1
            r.guidanceRescale = bad
            XCTAssertThrowsError(try pipeline.generate(r)) { error in
                XCTAssertTrue("\(error)".contains("guidance rescale must be 0…1"), "\(error)")
            }
        }
        let (status, _, stderr) = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--guidance-rescale", "2", "-o", NSTemporaryDirectory() + "lumen-rescale-\(UUID().uuidString).png"])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(stderr.contains("--guidance-rescale 2.0: expected 0…1"), stderr)
    }
}
