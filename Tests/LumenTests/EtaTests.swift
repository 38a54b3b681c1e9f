import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// diffusers' `eta` (DDIM's fresh-noise share, TCD's gamma) and the TCD scheduler against
/// diffusers' pipelines (tools/make_eta_fixtures.py), through `lumen generate`. Lumen had no eta
/// (DDIM ran deterministic whatever was asked) and ran LCM, with a notice, in TCD's place.
final class EtaTests: XCTestCase {
    static var dir: String { Fixtures.root + "/eta" }

    func testEtaAndTCDMatchDiffusers() throws {
        let dir = NSTemporaryDirectory() + "lumen-eta-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        let tcdFolder = try Fixtures.folder(dir + "/tiny-sd-tcd", model: Fixtures.tinyFolder,
                                            schedulerConfig: Self.dir + "/tcd/scheduler_config.json")
        for name in ["tcd", "tcd-eta", "tcd-img2img", "sdxl-tcd-eta", "ddim-eta"] {
            let fields = try DiffusersRequest(ref, key: name)
            let model = try XCTUnwrap(fields.fields["model"] as? String)
            var args = [fields.prompt, "--model", model == "eta/tcd" ? tcdFolder : Fixtures.root + "/" + model,
                        "--negative-prompt", try XCTUnwrap(fields.fields["negative_prompt"] as? String),
                        "--eta", "\(try XCTUnwrap(fields.fields["eta"] as? Double))"] + fields.arguments
            if let w = fields.fields["width"] as? Int, let h = fields.fields["height"] as? Int { args += ["--width", "\(w)", "--height", "\(h)"] }
            if let scheduler = fields.fields["scheduler"] as? String { args += ["--scheduler", scheduler] }
            if let init_ = fields.fields["init"] as? String {
                args += ["--init-image", Fixtures.root + "/" + init_, "--strength", "\(try XCTUnwrap(fields.fields["strength"] as? Double))"]
            }
            try assertCLIDraws(args, to: dir + "/\(name).png", like: "image." + name, in: ref)
        }
    }

    /// eta outside 0…1 is refused by the CLI and the library, naming it.
    func testEtaRange() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        for bad: Float in [-0.1, 1.5, .nan] {
            var r = GenerationRequest(prompt: "x")
            (r.steps, r.eta, r.scheduler) = (1, bad, .ddim)
            XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("eta must be 0…1"), "\($0)") }
        }
        let (status, _, stderr) = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--eta", "2",
                                                "-o", NSTemporaryDirectory() + "lumen-eta-\(UUID().uuidString).png"])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(stderr.contains("--eta 2.0: expected 0…1"), stderr)
        XCTAssertThrowsError(try TCDScheduler(steps: 4, eta: 1.5))
        XCTAssertEqual(try SchedulerKind.resolve(className: "TCDScheduler", path: nil).kind, .tcd)
    }

    /// TCD's grid is LCM's, and with γ = 0 its step moves the clean estimate to the next timestep
    /// (DDIM's deterministic step), checked in float64.
    func testTCDStepAgainstFloat64() throws {
        var c = SchedulerConfig()
        (c.betaSchedule, c.betaStart, c.betaEnd) = (.scaledLinear, 0.00085, 0.012)
        var tcd = try TCDScheduler(config: c, steps: 4)
        XCTAssertEqual(tcd.timesteps, try LCMScheduler(config: c, steps: 4).timesteps)
        XCTAssertEqual(tcd.timesteps, [999, 759, 499, 259])
        // ᾱ in float64 from the scaled-linear betas.
        var product = 1.0
        let alphas = (0..<1000).map { i -> Double in
            let b = pow(0.00085.squareRoot() + Double(i) / 999 * (0.012.squareRoot() - 0.00085.squareRoot()), 2)
            product *= 1 - b
            return product
        }
        let x: [Float] = [0.7, -1.3], eps: [Float] = [0.2, 0.9]
        let next = tcd.step(modelOutput: eps, sample: x, step: 1, noise: nil)
        let (a, aS) = (alphas[759], alphas[499])
        for i in 0..<2 {
            let x0 = (Double(x[i]) - (1 - a).squareRoot() * Double(eps[i])) / a.squareRoot()
            let want = aS.squareRoot() * x0 + (1 - aS).squareRoot() * Double(eps[i])
            XCTAssertEqual(Double(next[i]), want, accuracy: 2e-5 * max(1, abs(want)))  // float32 ᾱ and arithmetic
        }
    }
}
