import Foundation
import Lumen
import XCTest

/// Every scheduler at the edges of the step counts the CLI accepts (1…1000), on Stable Diffusion's
/// scheduler config ("leading" spacing, steps_offset 1) and on each class's defaults: it either
/// builds a schedule whose every timestep is a training timestep and runs every step to finite
/// latents, or refuses with a typed error (where diffusers fails or refuses too). Never a trap.
final class SchedulerStepCountTests: XCTestCase {
    static let counts = [1, 2, 999, 1000]

    func sdConfig() throws -> SchedulerConfig {
        try SchedulerConfig(path: Fixtures.tinyFolder + "/scheduler/scheduler_config.json")
    }

    /// Runs all of a scheduler's steps on a small sample; the model output is a fixed fraction of
    /// the sample (any finite prediction will do: the point is the indexing and arithmetic).
    private func run(_ kind: SchedulerKind, _ config: SchedulerConfig, steps: Int) throws -> (any Scheduler)? {
        let scheduler: any Scheduler
        do {
            scheduler = try kind.make(config: config, steps: steps)
        } catch let error as SchedulerError {
            guard case .unsupportedSteps(let s, let detail) = error else { throw error }
            XCTAssertEqual(s, steps)
            XCTAssertFalse(detail.isEmpty)
            return nil
        }
        let n = config.numTrainTimesteps ?? 1000
        // The UNet sees timesteps 0…n; diffusers' leading DPM-Solver grid reaches n (999 steps).
        // The EDM schedulers' timesteps are ¼ ln σ, continuous and negative below σ = 1.
        let edm = kind == .edmEuler || kind == .edmDpmpp2m
        for t in scheduler.timesteps { XCTAssert(edm ? t.isFinite : t >= 0 && t <= Float(n), "\(kind) \(steps): timestep \(t)") }
        XCTAssert(scheduler.sigmas.allSatisfy(\.isFinite), "\(kind) \(steps): sigmas")
        var s = scheduler
        var latents: [Float] = [0.5, -1.2, 0.3, 2.0].map { $0 * s.initNoiseSigma }
        let noise: [Float] = [0.1, -0.4, 0.8, -0.2]
        for i in 0..<s.timesteps.count {
            let input = s.scaleModelInput(latents, step: i)
            latents = s.step(modelOutput: input.map { $0 * 0.1 }, sample: latents, step: i,
                             noise: s.needsNoise(step: i) ? noise : nil)
        }
        XCTAssert(latents.allSatisfy(\.isFinite), "\(kind) \(steps): latents \(latents)")
        return s
    }

    func testEverySchedulerAtTheEdgesOfTheStepRange() throws {
        let sd = try sdConfig()
        for kind in SchedulerKind.allCases {
            for steps in Self.counts {
                _ = try run(kind, sd, steps: steps)
                _ = try run(kind, SchedulerConfig(), steps: steps)
            }
        }
    }

    /// Every count the CLI accepts, 1…1000, on Stable Diffusion's config: runs or is refused,
    /// never traps. (Karras grids look every sigma up in the 1000 training sigmas, so they are
    /// sampled every 37 counts to keep this fast.)
    func testEveryStepCountOnStableDiffusionsConfig() throws {
        let sd = try sdConfig()
        var refused: [SchedulerKind: [Int]] = [:]
        for kind in SchedulerKind.allCases {
            let karras = kind == .dpmpp2mKarras || kind == .dpmpp2mSdeKarras
            let counts = karras ? Array(stride(from: 1, through: 1000, by: 37)) + [1000] : Array(1...1000)
            for steps in counts where try run(kind, sd, steps: steps) == nil {
                refused[kind, default: []].append(steps)
            }
        }
        // Only the counts whose grids leave the schedule, and LCM's beyond original_inference_steps.
        XCTAssertEqual(refused[.ddim], [1000])
        XCTAssertEqual(refused[.ddpm], [1000])
        XCTAssertEqual(refused[.pndm], [1000])
        XCTAssertEqual(refused[.dpmpp2m], [999, 1000])
        XCTAssertEqual(refused[.dpmpp2mSde], [999, 1000])
        XCTAssertEqual(refused[.unipc], [999, 1000])  // the same grid as DPM-Solver++'s
        XCTAssertEqual(refused[.deis], [999, 1000])
        XCTAssertNil(refused[.heun])  // Euler's grid, doubled
        XCTAssertNil(refused[.kdpm2])
        XCTAssertNil(refused[.kdpm2Ancestral])
        XCTAssertEqual(refused[.dpmppSinglestep], [1000])  // always linspace: 1001 points over 0…999 repeat one
        XCTAssertEqual(refused[.lms], [1000])  // leading's timestep 1000 repeats 999's sigma: a Lagrange node twice
        XCTAssertNil(refused[.dpmpp2mSdeKarras])
        XCTAssertEqual(refused[.lcm], Array(51...1000))
        XCTAssertNil(refused[.euler])
        XCTAssertNil(refused[.eulerAncestral])
        XCTAssertNil(refused[.dpmpp2mKarras])
        XCTAssertNil(refused[.edmEuler])  // no training timesteps: σ_max…σ_min at any count
        XCTAssertNil(refused[.edmDpmpp2m])
    }

    /// What runs and what is refused on Stable Diffusion's config, and why.
    func testWhichCountsAreRefusedOnStableDiffusionsConfig() throws {
        let sd = try sdConfig()
        // "leading" with steps_offset 1 at 1000 steps asks for timestep 1000 of 0…999: diffusers'
        // DDIM, DDPM and PNDM fail with an IndexError; Lumen says so and names the largest count.
        for kind in [SchedulerKind.ddim, .ddpm, .pndm] {
            XCTAssertThrowsError(try kind.make(config: sd, steps: 1000)) {
                guard case .unsupportedSteps(1000, let detail)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
                XCTAssertTrue(detail.contains("timestep 1000"), detail)
                XCTAssertTrue(detail.contains("at most 999 steps"), detail)
            }
            XCTAssertEqual(try kind.make(config: sd, steps: 999).timesteps.max(), 999)
        }
        // DPM-Solver++ "leading" (ratio n // (steps + 1)): 999 steps reach timestep 1000, whose sigma
        // np.interp holds at timestep 999's, so the first step has size 0 and the second-order update
        // divides by it (NaN in diffusers); 1000 steps put every step at timestep 1. Both refused.
        for steps in [999, 1000] {
            XCTAssertThrowsError(try SchedulerKind.dpmpp2m.make(config: sd, steps: steps)) {
                guard case .unsupportedSteps(steps, let detail)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
                XCTAssertTrue(detail.contains("same sigma") && detail.contains("at most 998 steps"), detail)
            }
        }
        XCTAssertEqual(try SchedulerKind.dpmpp2m.make(config: sd, steps: 998).timesteps.first, 999)
        // linspace (the class default) rounds 1001 points over 0…999: two timesteps repeat at 1000 steps.
        XCTAssertNotNil(try run(.dpmpp2m, SchedulerConfig(), steps: 999))
        XCTAssertNil(try run(.dpmpp2m, SchedulerConfig(), steps: 1000))
        // Euler-type and Karras grids interpolate their sigmas: every count runs.
        for kind in [SchedulerKind.euler, .eulerAncestral, .dpmpp2mKarras] {
            XCTAssertNotNil(try run(kind, sd, steps: 1000), "\(kind)")
        }
        // LCM: diffusers' own refusal beyond original_inference_steps (50).
        XCTAssertThrowsError(try SchedulerKind.lcm.make(config: sd, steps: 999)) {
            guard case .unsupportedSteps(999, let detail)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
            XCTAssertTrue(detail.contains("is smaller than `num_inference_steps`: 999"), detail)
        }
        XCTAssertEqual(try SchedulerKind.lcm.make(config: sd, steps: 50).timesteps.count, 50)
        // More steps than training timesteps: diffusers' DDIM message.
        var small = sd
        small.numTrainTimesteps = 100
        XCTAssertThrowsError(try SchedulerKind.ddim.make(config: small, steps: 101)) {
            guard case .unsupportedSteps(101, let detail)? = $0 as? SchedulerError else { return XCTFail("\($0)") }
            XCTAssertTrue(detail.contains("cannot be larger than `self.config.train_timesteps`: 100"), detail)
        }
        // Trailing spacing has no offset problem: 1000 steps is every training timestep.
        var trailing = sd
        trailing.timestepSpacing = "trailing"
        XCTAssertEqual(try SchedulerKind.ddim.make(config: trailing, steps: 1000).timesteps, (0..<1000).reversed().map(Float.init))
    }

    func testConfigRangesAreCheckedWithTheField() throws {
        func expectInvalid(_ field: String, _ edit: (inout SchedulerConfig) -> Void, file: StaticString = #filePath, line: UInt = #line) {
            var c = SchedulerConfig()
            edit(&c)
            XCTAssertThrowsError(try SchedulerKind.euler.make(config: c, steps: 10), file: file, line: line) {
                guard case .invalidValue(nil, let f, _, _)? = $0 as? SchedulerError else { return XCTFail("\($0)", file: file, line: line) }
                XCTAssertEqual(f, field, file: file, line: line)
            }
        }
        expectInvalid("num_train_timesteps") { $0.numTrainTimesteps = 1_000_000_000 }
        expectInvalid("num_train_timesteps") { $0.numTrainTimesteps = 1 }
        expectInvalid("beta_end") { $0.betaEnd = 1.5 }
        expectInvalid("beta_start") { $0.betaStart = 0 }
        expectInvalid("beta_start") { $0.betaStart = .nan }
        expectInvalid("trained_betas") { $0.trainedBetas = [0.1, 0.2] }
        expectInvalid("trained_betas[1]") { $0.numTrainTimesteps = 3; $0.trainedBetas = [0.1, 1.0, 0.2] }
        expectInvalid("steps_offset") { $0.stepsOffset = -1 }
        expectInvalid("original_inference_steps") { $0.originalInferenceSteps = 0 }

        // From a file: the path and field are in the message.
        let dir = NSTemporaryDirectory() + "lumen-sched-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/scheduler_config.json"
        try Data(#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1e10}"#.utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SchedulerConfig(path: path)) {
            let message = "\($0)"
            XCTAssertTrue(message.contains(path) && message.contains("num_train_timesteps") && message.contains("100000"), message)
        }
    }

    func testClassNames() throws {
        XCTAssertEqual(try SchedulerKind.resolve(className: "DDIMScheduler", path: "x").kind, .ddim)
        XCTAssertNil(try SchedulerKind.resolve(className: "DDIMScheduler", path: "x").notice)
        // A class Lumen lacks runs a substitute, with a notice naming both.
        let sde = try SchedulerKind.resolve(className: "DPMSolverSDEScheduler", path: "s.json")
        XCTAssertEqual(sde.kind, .eulerAncestral)
        XCTAssertTrue(sde.notice?.contains("DPMSolverSDEScheduler") == true && sde.notice?.contains("Euler a") == true, "\(sde)")
        // The EDM classes are implemented (they ran DPM++ 2M and Euler on a beta schedule before).
        XCTAssertEqual(try SchedulerKind.resolve(className: "EDMDPMSolverMultistepScheduler", path: nil, useKarrasSigmas: true).kind, .edmDpmpp2m)
        XCTAssertNil(try SchedulerKind.resolve(className: "EDMDPMSolverMultistepScheduler", path: "s.json").notice)
        XCTAssertEqual(try SchedulerKind.resolve(className: "DPMSolverSinglestepScheduler", path: nil).kind, .dpmppSinglestep)
        // UniPC, DEIS and DPM++ 2M SDE are implemented: no notice.
        XCTAssertEqual(try SchedulerKind.resolve(className: "DEISMultistepScheduler", path: "s.json").kind, .deis)
        XCTAssertEqual(try SchedulerKind.resolve(className: "UniPCMultistepScheduler", path: "s.json").kind, .unipc)
        XCTAssertNil(try SchedulerKind.resolve(className: "UniPCMultistepScheduler", path: "s.json").notice)
        XCTAssertEqual(try SchedulerKind.resolve(className: "DPMSolverMultistepScheduler", path: nil, useKarrasSigmas: true, stochastic: true).kind,
                       .dpmpp2mSdeKarras)
        XCTAssertEqual(try SchedulerKind.resolve(className: "EDMEulerScheduler", path: nil).kind, .edmEuler)
        XCTAssertEqual(try SchedulerKind.resolve(className: "KDPM2DiscreteScheduler", path: nil).kind, .kdpm2)
        XCTAssertEqual(try SchedulerKind.resolve(className: "HeunDiscreteScheduler", path: nil).kind, .heun)
        XCTAssertThrowsError(try SchedulerKind.resolve(className: "Foo", path: "s.json")) {
            XCTAssertEqual($0 as? SchedulerError, .unknownScheduler(name: "Foo", path: "s.json"))
            XCTAssertTrue("\($0)".contains("DDIMScheduler") && "\($0)".contains("s.json"), "\($0)")
        }
    }
}
