import Foundation
import Lumen
import XCTest

/// The committed fixtures made by tools/make_fixtures.py (diffusers/transformers as the oracle).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    static var tinyFolder: String { root + "/tiny-sd" }
    static var tinySingleFile: String { root + "/tiny-sd.safetensors" }
    static var reference: String { root + "/tiny-sd-reference.safetensors" }

    static func referenceTensor(_ name: String) throws -> Tensor {
        try SafetensorsFile(path: reference).tensor(name)
    }

    /// A folder at `folder` with `model`'s networks and tokenizer linked and `schedulerConfig` (a
    /// scheduler_config.json) as its scheduler, model_index.json naming that class.
    static func folder(_ folder: String, model: String, schedulerConfig: String) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder + "/scheduler", withIntermediateDirectories: true)
        for part in ["text_encoder", "tokenizer", "unet", "vae"] {
            try fm.createSymbolicLink(atPath: folder + "/" + part, withDestinationPath: model + "/" + part)
        }
        try fm.copyItem(atPath: schedulerConfig, toPath: folder + "/scheduler/scheduler_config.json")
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model + "/model_index.json"))) as! [String: Any]
        index["scheduler"] = ["diffusers", try XCTUnwrap(SchedulerConfig(path: schedulerConfig).className)]
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: folder + "/model_index.json"))
        return folder
    }
}

/// Largest |a - e| over the largest |e|: the error relative to the output's scale.
func relativeError(_ actual: [Float], _ expected: [Float]) -> Double {
    precondition(actual.count == expected.count)
    var maxDiff = 0.0, maxRef = 0.0
    for i in 0..<actual.count {
        maxDiff = max(maxDiff, abs(Double(actual[i]) - Double(expected[i])))
        maxRef = max(maxRef, abs(Double(expected[i])))
    }
    return actual.contains(where: { !$0.isFinite }) ? .infinity : maxDiff / max(maxRef, 1e-30)
}

func assertRelativeError(_ actual: Tensor, _ expected: Tensor, below bound: Double, _ what: String,
                         file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, what, file: file, line: line)
    guard actual.shape == expected.shape else { return }
    let err = relativeError(actual.toFloats(), expected.toFloats())
    XCTAssertLessThan(err, bound, "\(what): relative error \(err)", file: file, line: line)
}

/// The Vulkan executor with the validation layer on, or an XCTSkip where this machine has no
/// Vulkan loader or device (CI installs lavapipe, so there it runs).
func testVulkanExecutor() throws -> VulkanExecutor {
    guard let devices = try? VulkanExecutor.devices(), !devices.isEmpty else {
        throw XCTSkip("no Vulkan loader or device here; install mesa-vulkan-drivers for lavapipe")
    }
    return try VulkanExecutor(validation: true)
}

/// The same with `options` (validation on).
func testVulkanExecutor(options: VulkanExecutor.Options) throws -> VulkanExecutor {
    _ = try testVulkanExecutor()
    return try VulkanExecutor(validation: true, options: options)
}

/// A StableDiffusionPipeline call recorded as JSON in a fixture's metadata (prompt,
/// negative_prompt, num_inference_steps, guidance_scale, width, height, seed), and diffusers'
/// numpy images of it in 8-bit levels as its PIL conversion makes them (round(255·x)).
struct DiffusersRequest {
    let fields: [String: Any]

    init(_ file: SafetensorsFile, key: String) throws {
        guard let json = file.metadata[key],
              let fields = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw ModelFileError.malformed(path: file.path, detail: "no JSON request under __metadata__['\(key)']")
        }
        self.fields = fields
    }

    var prompt: String { fields["prompt"] as! String }

    var request: GenerationRequest {
        var r = GenerationRequest(prompt: prompt)
        r.negativePrompt = fields["negative_prompt"] as? String
        r.steps = fields["num_inference_steps"] as! Int
        r.guidanceScale = Float(fields["guidance_scale"] as! Double)
        r.width = fields["width"] as? Int
        r.height = fields["height"] as? Int
        r.seed = UInt64(fields["seed"] as! Int)
        return r
    }

    /// The same call as `lumen generate` arguments (after the prompt).
    var arguments: [String] {
        ["--steps", "\(fields["num_inference_steps"] as! Int)", "--guidance", "\(fields["guidance_scale"] as! Double)",
         "--seed", "\(fields["seed"] as! Int)"]
    }

    static func pixels(_ file: SafetensorsFile, _ name: String) throws -> [Int] {
        try file.tensor(name).toFloats().map { Int(($0 * 255).rounded()) }
    }
}

/// Largest and mean absolute difference of two 8-bit images.
func pixelDifference(_ a: [Int], _ b: [Int]) -> (largest: Int, mean: Double) {
    precondition(a.count == b.count, "images of \(a.count) and \(b.count) values")
    let d = zip(a, b).map { abs($0 - $1) }
    return (d.max() ?? 0, Double(d.reduce(0, +)) / Double(max(d.count, 1)))
}

/// `pipeline` draws for `request` what diffusers drew (`name` in `ref`): no 8-bit level off by
/// more than `maxPixelError`, and a mean difference under one level.
func assertDraws(_ pipeline: Pipeline, _ request: GenerationRequest, like name: String, in ref: SafetensorsFile,
                 maxPixelError: Int, file: StaticString = #filePath, line: UInt = #line) throws {
    let d = pixelDifference(try pipeline.generate(request)[0].pixels.map(Int.init), try DiffusersRequest.pixels(ref, name))
    let what = "\(name): \((pipeline.model.path as NSString).lastPathComponent) on \(pipeline.executor.backendName)"
    XCTAssertLessThanOrEqual(d.largest, maxPixelError, what, file: file, line: line)
    XCTAssertLessThan(d.mean, 1, "\(what): mean difference of 1/255 or more", file: file, line: line)
}

/// `lumen generate` with `args` (everything but `-o`) draws into `out` what diffusers drew (`name`
/// in `ref`): it succeeds without running a substitute scheduler, no 8-bit level is off by more than
/// `maxPixelError`, and the mean difference is under one level.
func assertCLIDraws(_ args: [String], to out: String, like name: String, in ref: SafetensorsFile, maxPixelError: Int = 1,
                    file: StaticString = #filePath, line: UInt = #line) throws {
    let (status, _, stderr) = try runLumen(["generate"] + args + ["-o", out])
    XCTAssertEqual(status, 0, "\(name): \(stderr)", file: file, line: line)
    XCTAssertFalse(stderr.contains("does not implement"), "\(name): a substitute ran: \(stderr)", file: file, line: line)
    guard status == 0 else { return }
    let d = pixelDifference(try RGBImage.readPNG(out).image.pixels.map(Int.init), try DiffusersRequest.pixels(ref, name))
    XCTAssertLessThanOrEqual(d.largest, maxPixelError, name, file: file, line: line)
    XCTAssertLessThan(d.mean, 1, "\(name): mean difference of 1/255 or more", file: file, line: line)
}

/// Runs the `lumen` binary built beside the tests (or another `executable`) with `args` and extra
/// environment variables, and returns its exit status and what it printed.
@discardableResult
func runLumen(_ args: [String], environment: [String: String] = [:],
              executable: String = CLITests.binary) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// The request a fixture script stored as JSON under `name` in the reference's metadata: prompt,
/// negative_prompt, steps, guidance, seed, scheduler, and count, strength, width, height where
/// given; and the fields, for what a test reads beyond those.
func fixtureRequest(_ ref: SafetensorsFile, _ name: String) throws -> (GenerationRequest, [String: Any]) {
    guard let json = ref.metadata[name],
          let fields = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
        throw ModelFileError.malformed(path: ref.path, detail: "no JSON request under __metadata__['\(name)']")
    }
    var r = GenerationRequest(prompt: fields["prompt"] as! String)
    r.negativePrompt = fields["negative_prompt"] as? String
    r.steps = fields["steps"] as! Int
    r.guidanceScale = Float(fields["guidance"] as! Double)
    r.seed = UInt64(fields["seed"] as! Int)
    r.scheduler = (fields["scheduler"] as? String).flatMap(SchedulerKind.init(rawValue:))
    if let count = fields["count"] as? Int { r.count = count }
    if let strength = fields["strength"] as? Double { r.strength = Float(strength) }
    r.width = fields["width"] as? Int
    r.height = fields["height"] as? Int
    return (r, fields)
}

/// `pipeline` gives for `request` the latents (`name.latents`, within `latentBound`) and the
/// 8-bit images (`name.image`, no level off by more than `maxPixelError`, mean under one level)
/// a fixture script recorded from diffusers.
func assertMatchesFixture(_ pipeline: Pipeline, _ request: GenerationRequest, _ name: String, in ref: SafetensorsFile,
                          latentBound: Float, maxPixelError: Int, file: StaticString = #filePath, line: UInt = #line) throws {
    let what = "\(name) on \(pipeline.executor.backendName)"
    let want = try ref.tensor("\(name).latents")
    let got = try pipeline.latents(for: request)
    XCTAssertEqual(got.shape, want.shape, what, file: file, line: line)
    let worst = zip(got.toFloats(), want.toFloats()).map { abs($0 - $1) }.max() ?? .infinity
    XCTAssertLessThan(worst, latentBound, "\(what): latents", file: file, line: line)
    let images = try pipeline.generate(request)
    let pixels = try ref.rawBytes("\(name).image").map(Int.init)
    let per = pixels.count / max(images.count, 1)
    for (k, image) in images.enumerated() {
        guard image.pixels.count == per else {
            return XCTFail("\(what), image \(k): \(image.width)x\(image.height) has \(image.pixels.count) values; diffusers' has \(per)", file: file, line: line)
        }
        let d = pixelDifference(image.pixels.map(Int.init), Array(pixels[(k * per)..<((k + 1) * per)]))
        XCTAssertLessThanOrEqual(d.largest, maxPixelError, "\(what), image \(k)", file: file, line: line)
        XCTAssertLessThan(d.mean, 1, "\(what), image \(k)", file: file, line: line)
    }
}
