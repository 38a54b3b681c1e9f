import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Scheduler options against diffusers' StableDiffusionPipeline loading tiny-sd with each config as
/// its scheduler (tools/make_scheduler_option_fixtures.py). Lumen drew PNDM without
/// `skip_prk_steps` as if it were set, ignored DPM-Solver's `use_lu_lambdas`,
/// `use_exponential_sigmas` and `lambda_min_clipped` and Euler's `use_exponential_sigmas`
/// (15–52 levels off at this size: the options against the same configs without them in diffusers),
/// and refused DPM++ 2M SDE and `final_sigmas_type` "sigma_min". Folders with UniPC, DEIS or
/// single-step DPM-Solver++ ran DPM++ 2M in their place; with Heun, LMS or DPM2, Euler; with DPM2 a,
/// Euler a (Heun is the
/// first scheduler with two evaluations a step, so its image-to-image cases check the pipeline's
/// second-order start); DPM++ 2M SDE is also a kind of its own
/// (`--scheduler dpmpp-2m-sde[-karras]`).
final class SchedulerOptionFixtureTests: XCTestCase {
    static var dir: String { Fixtures.root + "/scheduler-options" }
    static let cases = ["pndm-prk", "euler-pndm-prk", "dpmpp-sde", "dpmpp-sde-karras-heun", "dpmpp-lu", "dpmpp-exponential",
                        "dpmpp-sigma-min", "dpmpp-lambda-clipped", "euler-exponential",
                        "unipc", "unipc-order3-karras", "unipc-bh1-sigma-min", "pndm-unipc", "pndm-dpmpp-2m-sde", "pndm-dpmpp-2m-sde-karras",
                        "deis", "deis-order3-karras", "pndm-deis",
                        "heun", "heun-karras-leading", "lms", "pndm-heun", "pndm-lms", "heun-img2img", "lms-img2img",
                        "kdpm2", "kdpm2-a-karras", "pndm-kdpm2-a", "kdpm2-a-img2img",
                        "singlestep", "singlestep-sde-karras", "singlestep-img2img"]

    /// tiny-sd with `config` as its scheduler (the other parts linked, model_index.json naming the class).
    func tinyFolder(scheduler config: String, in dir: String) throws -> String {
        try Fixtures.folder(dir + "/" + (config as NSString).lastPathComponent, model: Fixtures.tinyFolder,
                            schedulerConfig: Self.dir + "/" + config + "/scheduler_config.json")
    }

    func testSchedulerOptionsMatchDiffusers() throws {
        let dir = NSTemporaryDirectory() + "lumen-scheduler-options-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try SafetensorsFile(path: Self.dir + "/reference.safetensors")
        for name in Self.cases {
            let pipeline = try Pipeline(modelPath: try tinyFolder(scheduler: name, in: dir), backend: .cpu)
            let fields = try DiffusersRequest(ref, key: name)
            var request = fields.request
            request.scheduler = (fields.fields["scheduler"] as? String).flatMap(SchedulerKind.init(rawValue:))
            if let init_ = fields.fields["init"] as? String {
                request.initImage = try InitImage(pngPath: Fixtures.root + "/" + init_)
                request.strength = Float(try XCTUnwrap(fields.fields["strength"] as? Double))
                (request.width, request.height) = (nil, nil)
            }
            try assertDraws(pipeline, request, like: "image." + name, in: ref, maxPixelError: 1)
        }
    }

    /// The Runge-Kutta start's timesteps as diffusers 0.42.1 lays them out
    /// (`PNDMScheduler(steps_offset=1, skip_prk_steps=False, timestep_spacing=…).set_timesteps(10)`), and
    /// the refusal of fewer than 4 steps (diffusers fails on them with a broadcasting error).
    func testPNDMRungeKuttaTimesteps() throws {
        var c = SchedulerConfig()
        c.stepsOffset = 1
        c.skipPrkSteps = false
        // leading: _timesteps 1, 101 … 901; the last 4 and their midpoints (+50) doubled but for the
        // first and last, reversed, then the PLMS part from 601 down.
        XCTAssertEqual(try PNDMScheduler(config: c, steps: 10).timesteps.map { Int($0) },
                       [901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1])
        c.timestepSpacing = "trailing"  // 999's midpoint would be past the schedule, but it is the entry dropped
        XCTAssertEqual(try PNDMScheduler(config: c, steps: 10).timesteps.map { Int($0) },
                       [999, 949, 949, 899, 899, 849, 849, 799, 799, 749, 749, 699, 699, 599, 499, 399, 299, 199, 99])
        XCTAssertThrowsError(try PNDMScheduler(config: c, steps: 3)) { error in
            XCTAssertTrue("\(error)".contains("needs at least 4"), "\(error)")
        }
        c.skipPrkSteps = true
        XCTAssertEqual(try PNDMScheduler(config: c, steps: 10).timesteps.count, 11)
    }

    /// Options diffusers has and Lumen does not are refused by name, never ignored.
    func testUnimplementedOptionsAreRefusedByName() throws {
        var beta = SchedulerConfig()
        beta.useBetaSigmas = true
        var flow = SchedulerConfig()
        flow.useFlowSigmas = true
        for (kind, config, option) in [(SchedulerKind.euler, beta, "use_beta_sigmas"), (.dpmpp2m, beta, "use_beta_sigmas"),
                                       (.dpmpp2m, flow, "use_flow_sigmas")] {
            XCTAssertThrowsError(try kind.make(config: config, steps: 5)) { error in
                XCTAssertTrue("\(error)".contains(option), "\(error)")
            }
        }
        // Euler a has none of these options: diffusers' from_config drops them, and so does Lumen.
        XCTAssertNoThrow(try SchedulerKind.eulerAncestral.make(config: beta, steps: 5))
    }

    /// UniPC configs on which diffusers' last step to sigma 0 computes 0 · ∞ (NaN latents) are
    /// refused with the field and the way out; with final_sigmas_type "sigma_min" they run.
    func testUniPCConfigsThatEndInNaNAreRefused() throws {
        var bh1 = SchedulerConfig()
        bh1.solverType = .bh1
        var noise = SchedulerConfig()
        noise.predictX0 = false
        var highOrderEnd = SchedulerConfig()
        highOrderEnd.lowerOrderFinal = false
        for (config, field) in [(bh1, "solver_type"), (noise, "predict_x0"), (highOrderEnd, "lower_order_final")] {
            XCTAssertThrowsError(try SchedulerKind.unipc.make(config: config, steps: 8)) { error in
                XCTAssertTrue("\(error)".contains("field \(field)") && "\(error)".contains("sigma_min"), "\(error)")
            }
            var fixed = config
            fixed.finalSigmasType = .sigmaMin
            XCTAssertNoThrow(try SchedulerKind.unipc.make(config: fixed, steps: 8))
        }
    }
}
