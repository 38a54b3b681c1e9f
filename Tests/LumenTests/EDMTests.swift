import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// Models in the EDM formulation (Playground v2.5, CosXL) against diffusers
/// (tools/make_edm_fixtures.py): tiny-sdxl with Playground's VAE statistics and scaling factor and
/// an EDM scheduler, through `lumen generate`. Lumen ran DPM-Solver++ (or Euler) on a beta schedule
/// in place of the EDM schedulers, with a notice, and decoded without `latents_mean`/`latents_std`.
final class EDMTests: XCTestCase {
    static var dir: String { Fixtures.root + "/edm" }
    static let cases = ["playground", "dpm-sde", "dpm-heun-exponential", "dpm-order3", "dpm-sigma-min", "dpm-v", "euler", "euler-cosxl",
                        "euler-continuous", "img2img", "inpaint", "controlnet-img2img", "controlnet-inpaint"]

    /// tiny-sdxl with the fixture's VAE config and `scheduler`'s config (the weights linked).
    func folder(scheduler: String, in dir: String) throws -> String {
        let fm = FileManager.default, model = Fixtures.root + "/tiny-sdxl", folder = dir + "/" + scheduler
        try fm.createDirectory(atPath: folder + "/scheduler", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: folder + "/vae", withIntermediateDirectories: true)
        for part in ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet"] {
            try fm.createSymbolicLink(atPath: folder + "/" + part, withDestinationPath: model + "/" + part)
        }
        try fm.createSymbolicLink(atPath: folder + "/vae/diffusion_pytorch_model.safetensors",
                                  withDestinationPath: model + "/vae/diffusion_pytorch_model.safetensors")
        try fm.copyItem(atPath: Self.dir + "/vae/config.json", toPath: folder + "/vae/config.json")
        let config = Self.dir + "/" + scheduler + "/scheduler_config.json"
        try fm.copyItem(atPath: config, toPath: folder + "/scheduler/scheduler_config.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model + "/model_index.json"))) as! [String: Any]
        index["scheduler"] = ["diffusers", try XCTUnwrap(SchedulerConfig(path: config).className)]
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: folder + "/model_index.json"))
        return folder
    }

    func testEDMModelsMatchDiffusers() throws {
        let dir = NSTemporaryDirectory() + "lumen-edm-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        for name in Self.cases {
            let fields = try DiffusersRequest(ref, key: name)
            var args = [fields.prompt, "--model", try folder(scheduler: name, in: dir),
                        "--negative-prompt", try XCTUnwrap(fields.fields["negative_prompt"] as? String),
                        "--width", "64", "--height", "64"] + fields.arguments
            if let init_ = fields.fields["init"] as? String {
                args += ["--init-image", Fixtures.root + "/" + init_, "--strength", "\(try XCTUnwrap(fields.fields["strength"] as? Double))"]
            }
            if let mask = fields.fields["mask"] as? String { args += ["--mask", Fixtures.root + "/" + mask] }
            if let control = fields.fields["control"] as? String {
                let scale = try XCTUnwrap(fields.fields["control_scale"] as? Double)
                args += ["--control", Fixtures.root + "/tiny-controlnet-xl:" + Fixtures.root + "/" + control + ":\(scale)"]
            }
            try assertCLIDraws(args, to: dir + "/\(name).png", like: "image." + name, in: ref)
        }
    }

    /// The schedules against the formulas in float64: Karras' ρ-interpolation and the exponential
    /// spacing between σ_max and σ_min, c_noise = ¼ ln σ, c_in and the initial noise scale.
    func testSchedulesAgainstFloat64() throws {
        var c = SchedulerConfig()
        (c.sigmaMin, c.sigmaMax, c.rho) = (0.002, 80, 7)
        let n = 10
        let karras = (0..<n).map { i -> Double in
            let ramp = Double(i) / Double(n - 1)
            return pow(pow(80, 1 / 7) + ramp * (pow(0.002, 1 / 7) - pow(80, 1 / 7)), 7)
        }
        for scheduler in [try EDMEulerScheduler(config: c, steps: n) as any Scheduler, try EDMDPMSolverMultistepScheduler(config: c, steps: n)] {
            XCTAssertEqual(scheduler.sigmas.count, n + 1)
            XCTAssertEqual(scheduler.sigmas[n], 0)
            for i in 0..<n {
                // float32 (the DPM class's ramp and powers are float32): measured 1.5e-6 relative at most
                XCTAssertEqual(Double(scheduler.sigmas[i]), karras[i], accuracy: 4e-6 * karras[i])
                XCTAssertEqual(Double(scheduler.timesteps[i]), 0.25 * Foundation.log(karras[i]), accuracy: 1e-5)
            }
            XCTAssertEqual(Double(scheduler.initNoiseSigma), (80.0 * 80 + 1).squareRoot(), accuracy: 1e-4)
            let x = scheduler.scaleModelInput([1, -2], step: 3)
            XCTAssertEqual(Double(x[1]), -2 / (karras[3] * karras[3] + 0.25).squareRoot(), accuracy: 1e-6)
        }
        c.sigmaSchedule = .exponential
        let exponential = try EDMEulerScheduler(config: c, steps: n).sigmas
        for i in 0..<n {
            let want = Foundation.exp(Foundation.log(80) + Double(i) / Double(n - 1) * (Foundation.log(0.002) - Foundation.log(80)))
            XCTAssertEqual(Double(exponential[i]), want, accuracy: 4e-6 * want)
        }
    }

    /// Options the EDM classes lack, and the configs diffusers turns into NaN latents, are refused by name.
    func testRefusals() throws {
        var c = SchedulerConfig()
        c.predictionType = "sample"
        XCTAssertThrowsError(try EDMEulerScheduler(config: c, steps: 5)) { XCTAssertTrue("\($0)".contains("prediction_type"), "\($0)") }
        c = SchedulerConfig()
        (c.solverOrder, c.finalSigmasType) = (3, .sigmaMin)
        XCTAssertThrowsError(try EDMDPMSolverMultistepScheduler(config: c, steps: 16)) {
            XCTAssertTrue("\($0)".contains("divides by that step's size, about 0"), "\($0)")
        }
        XCTAssertNoThrow(try EDMDPMSolverMultistepScheduler(config: c, steps: 14))  // the last step first order (lower_order_final)
        (c.solverOrder, c.solverType) = (2, .heun)
        XCTAssertThrowsError(try EDMDPMSolverMultistepScheduler(config: c, steps: 20))
        (c.solverOrder, c.algorithmType, c.finalSigmasType) = (3, .sdeDpmsolverPlusPlus, nil)
        XCTAssertThrowsError(try EDMDPMSolverMultistepScheduler(config: c, steps: 5)) { XCTAssertTrue("\($0)".contains("solver_order"), "\($0)") }
        c = SchedulerConfig()
        c.sigmaData = 0
        XCTAssertThrowsError(try EDMEulerScheduler(config: c, steps: 5)) { XCTAssertTrue("\($0)".contains("sigma_data"), "\($0)") }
        XCTAssertEqual(try SchedulerKind.resolve(className: "EDMDPMSolverMultistepScheduler", path: nil).kind, .edmDpmpp2m)
        XCTAssertNil(try SchedulerKind.resolve(className: "EDMEulerScheduler", path: nil).notice)
    }

    /// A Playground v2.5 single file (an SDXL base file with `edm_mean` and `edm_std`, diffusers'
    /// "playground-v2-5") gets that repository's configs without --config: the EDM DPM-Solver++
    /// scheduler, VAE scaling 0.5 and the file's statistics; with --config, the folder's configs
    /// (here those of the Playground fixture: tiny-sdxl-single-f16 holds tiny-sdxl's values, so the
    /// image is diffusers' `playground` one).
    func testPlaygroundSingleFile() throws {
        let dir = NSTemporaryDirectory() + "lumen-edm-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let source = try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-single-f16.safetensors")
        let (mean, std): ([Float], [Float]) = ([-1.6574, 1.886, -1.383, 2.5155], [8.4927, 5.9022, 6.5498, 5.2299])
        func write(_ path: String, extra: [(String, Tensor)]) throws {
            try SafetensorsWriter.write(try source.names.map { ($0, try source.tensor($0)) } + extra, to: path)
        }
        let file = dir + "/playground.safetensors"
        try write(file, extra: [("edm_mean", try Tensor(shape: [1, 4, 1, 1], values: mean)), ("edm_std", try Tensor(shape: [1, 4, 1, 1], values: std))])
        let model = try StableDiffusionModel.load(path: file)
        XCTAssertEqual(model.singleFileDefaults, .playground)
        XCTAssertEqual(model.vaeConfig.latentsMean, mean)
        XCTAssertEqual(model.vaeConfig.latentsStd, std)
        XCTAssertEqual(model.vaeConfig.scalingFactor, 0.5)
        XCTAssertEqual(model.schedulerDefaults?.className, "EDMDPMSolverMultistepScheduler")
        XCTAssertTrue(model.recognised.contains { $0.contains("Playground v2.5") }, "\(model.recognised)")
        // The fixture's Playground config is the class's defaults, which are the repository's.
        let fixture = try SchedulerConfig(path: Self.dir + "/playground/scheduler_config.json")
        let defaults = try XCTUnwrap(model.schedulerDefaults)
        XCTAssertEqual([fixture.sigmaMin, fixture.sigmaMax, fixture.sigmaData, fixture.rho], [defaults.sigmaMin, defaults.sigmaMax, defaults.sigmaData, defaults.rho])
        XCTAssertEqual(fixture.solverOrder, defaults.solverOrder)
        let pipeline = try Pipeline(modelPath: file, backend: .cpu)
        XCTAssertEqual(pipeline.schedulerKind(for: GenerationRequest(prompt: "x")), .edmDpmpp2m)
        XCTAssertEqual(pipeline.notices, [])

        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        var request = try DiffusersRequest(ref, key: "playground").request
        request.negativePrompt = try XCTUnwrap(DiffusersRequest(ref, key: "playground").fields["negative_prompt"] as? String)
        let configured = try Pipeline(modelPath: file, backend: .cpu, configFolder: try folder(scheduler: "playground", in: dir))
        try assertDraws(configured, request, like: "image.playground", in: ref, maxPixelError: 1)

        // edm_mean alone, or statistics that are not one finite value per channel, are refused naming the tensor.
        for (name, extra, expected) in [("mean-only", [("edm_mean", try Tensor(shape: [1, 4, 1, 1], values: mean))], "without edm_std"),
                                        ("zero-std", [("edm_mean", try Tensor(shape: [1, 4, 1, 1], values: mean)),
                                                      ("edm_std", try Tensor(shape: [1, 4, 1, 1], values: [1, 0, 1, 1]))], "tensor edm_std")] {
            try write(dir + "/\(name).safetensors", extra: extra)
            XCTAssertThrowsError(try StableDiffusionModel.load(path: dir + "/\(name).safetensors")) {
                XCTAssertTrue("\($0)".contains(expected), "\(name): \($0)")
            }
        }
    }

    /// A scheduler of the other formulation (a beta-schedule one on an EDM model, an EDM one on
    /// another model) runs, as diffusers' from_config runs it, with a notice that says why the
    /// image will not be what the model draws.
    func testOtherFormulationIsNoticed() throws {
        let dir = NSTemporaryDirectory() + "lumen-edm-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let playground = try Pipeline(modelPath: try folder(scheduler: "playground", in: dir), backend: .cpu)
        var r = GenerationRequest(prompt: "x")
        XCTAssertEqual(playground.notices(for: r).filter { $0.contains("EDM") }, [])
        r.scheduler = .dpmpp2mKarras
        XCTAssertTrue(playground.notices(for: r).contains { $0.contains("on an EDM model") }, "\(playground.notices(for: r))")
        r.scheduler = .edmEuler
        XCTAssertEqual(playground.notices(for: r).filter { $0.contains("EDM") }, [])
        let sdxl = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu)
        XCTAssertTrue(sdxl.notices(for: r).contains { $0.contains("is for EDM-trained models") }, "\(sdxl.notices(for: r))")
    }

    /// A VAE config whose statistics do not fit its latents is refused naming the field.
    func testLatentStatisticsAreChecked() throws {
        let dir = NSTemporaryDirectory() + "lumen-edm-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folder = try folder(scheduler: "playground", in: dir)
        let path = folder + "/vae/config.json"
        for (field, value, expected) in [("latents_std", "[1, 2, 0, 1]", "latents_std[2]"), ("latents_mean", "[1, 2]", "one per latent channel")] {
            var text = try String(contentsOfFile: Self.dir + "/vae/config.json", encoding: .utf8)
            let range = try XCTUnwrap(text.range(of: "\"\(field)\": \\[[^\\]]*\\]", options: .regularExpression))
            text.replaceSubrange(range, with: "\"\(field)\": \(value)")
            try FileManager.default.removeItem(atPath: path)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try Pipeline(modelPath: folder, backend: .cpu)) { XCTAssertTrue("\($0)".contains(expected), "\($0)") }
        }
    }
}
