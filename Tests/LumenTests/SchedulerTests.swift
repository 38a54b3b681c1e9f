import Foundation
import Lumen
import XCTest

/// Schedulers against diffusers 0.42.1, step by step. The fixture holds, per configuration, the
/// timesteps, sigmas, initial latents, and for every step the (fake) model output diffusers was given,
/// the noise it drew and the latents it returned. Lumen replays the same model outputs and noise and
/// must land on the same latents.
///
/// Tolerance: relative error (largest |difference| over the largest |value|) at most 1e-6 per step on
/// the whole trajectory. Lumen performs the same float32 operations in the same order as torch, so most
/// steps agree to the bit; what remains comes from the few values diffusers derives in numpy float64
/// or with libm/Sleef transcendental functions (Karras sigmas, log-sigmas, exp(-h) in DPM-Solver),
/// a few float32 ulps (~1e-7) at most, which the steps carry forward without growing.
final class SchedulerTests: XCTestCase {
    static let tolerance = 1e-6

    private func config(_ dict: Any?) throws -> SchedulerConfig {
        let data = try JSONSerialization.data(withJSONObject: try XCTUnwrap(dict))
        return try JSONDecoder().decode(SchedulerConfig.self, from: data)
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], _ what: String, tolerance: Double = tolerance,
                             file: StaticString = #filePath, line: UInt = #line) -> Double {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        guard actual.count == expected.count else { return .infinity }
        let error = relativeError(actual, expected)
        XCTAssertLessThanOrEqual(error, tolerance, "\(what): relative error \(error)", file: file, line: line)
        return error
    }

    func testTrajectoriesMatchDiffusers() throws {
        let fixture = try GenerationFixtures.json("schedulers")
        let records = try XCTUnwrap(fixture["trajectories"] as? [[String: Any]])
        XCTAssertGreaterThan(records.count, 50)
        var worst = 0.0, worstFree = 0.0
        var bitExactSteps = 0, totalSteps = 0
        for record in records {
            let kindName = try XCTUnwrap(record["kind"] as? String)
            let kind = try XCTUnwrap(SchedulerKind(rawValue: kindName))
            let steps = try XCTUnwrap(record["steps"] as? Int)
            let cfg = try config(record["config"])
            let label = "\(kindName) \(record["config"].map { "\($0)" } ?? "") steps \(steps)"
            var scheduler = try kind.make(config: cfg, steps: steps)

            let timesteps = try XCTUnwrap(record["timesteps"] as? [Double])
            XCTAssertEqual(scheduler.timesteps.count, timesteps.count, label)
            for (a, e) in zip(scheduler.timesteps, timesteps) {
                // Integer grids must agree exactly; Euler's Karras timesteps are fractional (numpy float64
                // interpolation of float32 log-sigmas), compared to 1e-4.
                XCTAssertEqual(a, Float(e), accuracy: e == e.rounded() && kind != .euler ? 0 : 1e-4, "\(label) timesteps")
            }
            if let sigmas = record["sigmas"] as? [Double] {
                worst = max(worst, assertClose(scheduler.sigmas, sigmas.map { Float($0) }, "\(label) sigmas"))
            }
            let initSigma = try XCTUnwrap(record["init_noise_sigma"] as? Double)
            XCTAssertEqual(Double(scheduler.initNoiseSigma), initSigma, accuracy: 1e-6 * initSigma, "\(label) init sigma")

            var latents = try GenerationFixtures.floats(record["initial"])
            // A second run that never resyncs to diffusers' latents: the error after the whole
            // trajectory, which the issue bounds at 1e-5.
            var freeRunning = latents
            var freeScheduler = scheduler
            let noiseSeed = try XCTUnwrap(record["noise_seed"] as? Int)
            var generator = TorchGenerator(seed: UInt64(noiseSeed))
            let trajectory = try XCTUnwrap(record["trajectory"] as? [[String: Any]])
            for (i, step) in trajectory.enumerated() {
                if let input = step["model_input"] {
                    worst = max(worst, assertClose(scheduler.scaleModelInput(latents, step: i),
                                                   try GenerationFixtures.floats(input), "\(label) model input \(i)"))
                }
                var noise: [Float]?
                if let recorded = step["noise"] {
                    noise = try GenerationFixtures.floats(recorded)
                    // The noise diffusers drew is what Lumen's generator draws from the same seed.
                    XCTAssertEqual(generator.randn(count: latents.count), noise, "\(label) noise \(i)")
                }
                XCTAssertEqual(scheduler.needsNoise(step: i), noise != nil, "\(label) needsNoise \(i)")
                let output = try GenerationFixtures.floats(step["model_output"])
                let expected = try GenerationFixtures.floats(step["sample"])
                freeRunning = freeScheduler.step(modelOutput: output, sample: freeRunning, step: i, noise: noise)
                latents = scheduler.step(modelOutput: output, sample: latents, step: i, noise: noise)
                worst = max(worst, assertClose(latents, expected, "\(label) step \(i)"))
                totalSteps += 1
                if zip(latents, expected).allSatisfy({ $0.bitPattern == $1.bitPattern }) { bitExactSteps += 1 }
                // Continue from diffusers' latents, so one step's error is not charged to the next.
                latents = expected
                if let denoised = step["denoised"], i == trajectory.count - 1 {
                    XCTAssertEqual(latents, try GenerationFixtures.floats(denoised), "\(label) LCM returns denoised last")
                }
            }
            worstFree = max(worstFree, assertClose(freeRunning, latents, "\(label) free-running end", tolerance: 1e-5))
        }
        print("SchedulerTests: worst relative error per step \(worst), after a free-running trajectory \(worstFree); \(bitExactSteps) of \(totalSteps) steps bit-exact")
    }

    func testImageToImageStartAndNoise() throws {
        let fixture = try GenerationFixtures.json("schedulers")
        let records = try XCTUnwrap(fixture["img2img"] as? [[String: Any]])
        for record in records {
            let kindName = try XCTUnwrap(record["kind"] as? String)
            let kind = try XCTUnwrap(SchedulerKind(rawValue: kindName))
            let steps = try XCTUnwrap(record["steps"] as? Int)
            let strength = try XCTUnwrap(record["strength"] as? Double)
            let scheduler = try kind.make(config: try config(record["config"]), steps: steps)
            let first = DDIMScheduler.firstStep(steps: steps, strength: strength)
            XCTAssertEqual(first, record["first_step"] as? Int, kindName)
            let timesteps = try XCTUnwrap(record["timesteps"] as? [Double])
            // Compared as float32: Foundation's JSON number parsing can be an ulp off in double.
            let mine = Array(scheduler.timesteps.dropFirst(first))
            XCTAssertEqual(mine.count, timesteps.count, kindName)
            for (i, (a, e)) in zip(mine, timesteps.map { Float($0) }).enumerated() where a != e {
                XCTFail("\(kindName) \(steps) steps: timestep \(i) is \(a), diffusers \(e)")
            }
            let noisy = scheduler.addNoise(original: try GenerationFixtures.floats(record["original"]),
                                           noise: try GenerationFixtures.floats(record["noise"]), step: first)
            _ = assertClose(noisy, try GenerationFixtures.floats(record["noisy"]), "\(kindName) add_noise")
        }
        XCTAssertEqual(DDIMScheduler.firstStep(steps: 50, strength: 0.8), 10)
        XCTAssertEqual(DDIMScheduler.firstStep(steps: 50, strength: 1.0), 0)
        XCTAssertEqual(DDIMScheduler.firstStep(steps: 10, strength: 0.0), 10)
    }

    func testTrainingScheduleIsBitExact() throws {
        let fixture = try GenerationFixtures.json("schedulers")
        let schedules = try XCTUnwrap(fixture["schedules"] as? [String: [String: Any]])
        for (name, entry) in schedules {
            let scheduler = try DDIMScheduler(config: try config(entry["config"]), steps: 10)
            let expected = try GenerationFixtures.floats(entry["alphas_cumprod"])
            XCTAssertEqual(scheduler.alphasCumprod.map(\.bitPattern), expected.map(\.bitPattern), "\(name) alphas_cumprod")
        }
    }

    func testConfigFileAndErrors() throws {
        let config = try SchedulerConfig(path: Fixtures.tinyFolder + "/scheduler/scheduler_config.json")
        XCTAssertEqual(config.className, "PNDMScheduler")
        XCTAssertEqual(config.stepsOffset, 1)
        XCTAssertEqual(config.skipPrkSteps, true)
        XCTAssertEqual(SchedulerKind(diffusersClassName: "PNDMScheduler"), .pndm)
        XCTAssertEqual(SchedulerKind(diffusersClassName: "DPMSolverMultistepScheduler", useKarrasSigmas: true), .dpmpp2mKarras)
        XCTAssertNil(SchedulerKind(diffusersClassName: "DPMSolverSDEScheduler"))
        let scheduler = try SchedulerKind.pndm.make(config: config, steps: 10)
        XCTAssertEqual(scheduler.timesteps.count, 11)

        // A value outside diffusers' set fails when the config is read, naming the field and the
        // cases; one diffusers has but Lumen does not compute fails when a scheduler is made.
        XCTAssertThrowsError(try JSONDecoder().decode(SchedulerConfig.self, from: Data(#"{"beta_schedule": "sigmoid-ish"}"#.utf8))) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("beta_schedule \"sigmoid-ish\" is not supported") && text.contains("squaredcos_cap_v2"), text)
        }
        var bad = SchedulerConfig()
        bad.betaSchedule = .sigmoid
        XCTAssertThrowsError(try SchedulerKind.euler.make(config: bad, steps: 10)) {
            XCTAssertEqual($0 as? SchedulerError,
                           .unsupported(option: "beta_schedule", value: "sigmoid",
                                        supported: ["linear", "scaled_linear", "squaredcos_cap_v2"]))
        }
        XCTAssertThrowsError(try SchedulerKind.ddim.make(steps: 0)) {
            XCTAssertEqual($0 as? SchedulerError, .invalidSteps(0))
        }
        XCTAssertThrowsError(try SchedulerConfig(path: "/nonexistent/scheduler_config.json")) {
            guard case .unreadable(let path, _)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
            XCTAssertEqual(path, "/nonexistent/scheduler_config.json")
        }
    }
}
