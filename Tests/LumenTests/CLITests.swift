import Foundation
import Lumen
import XCTest

/// The real `lumen` binary: outputs, the parameters chunk, and bad input (a clear message, a
/// non-zero exit, no output file).
final class CLITests: TemporaryDirectoryTestCase {
    /// `lumen` is built beside the test bundle.
    static let binary: String = {
        let dir = Bundle.main.bundleURL.path.hasSuffix(".xctest") ? Bundle.main.bundleURL.deletingLastPathComponent().path
            : URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        return dir + "/lumen"
    }()

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            return XCTFail("lumen binary not found at \(Self.binary)")
        }
        try super.setUpWithError()
    }

    @discardableResult
    private func lumen(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runLumen(args)
    }

    func testGenerateWritesAPNGWithParameters() throws {
        let out = dir + "/a.png"
        let r = try lumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "3", "--seed", "42",
                           "--width", "48", "--height", "32", "--negative-prompt", "blurry", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (image, _) = try RGBImage.readPNG(out)
        XCTAssertEqual([image.width, image.height], [48, 32])
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        let text = "tEXtparameters\0a red circle\nNegative prompt: blurry\nSteps: 3, Sampler: PLMS, CFG scale: 7.5, Seed: 42, Size: 48x32"
        XCTAssertNotNil(data.range(of: Data(text.utf8)), "parameters chunk")
        // The same seed gives the same file; the library gives the same pixels.
        let out2 = dir + "/b.png"
        XCTAssertEqual(try lumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "3", "--seed", "42",
                                  "--width", "48", "--height", "32", "--negative-prompt", "blurry", "-o", out2]).status, 0)
        XCTAssertEqual(try RGBImage.readPNG(out2).image, image)
    }

    func testDefaultModelCountAndJSON() throws {
        let out = dir + "/n.png"
        let r = try lumen(["generate", "a blue square", "--steps", "2", "--seed", "1", "--count", "2", "--json", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stderr.contains("noise"), "the built-in model is the trained demo model: \(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["images"] as? [String], [dir + "/n-1.png", dir + "/n-2.png"])
        XCTAssertEqual(json["seed"] as? Int, 1)
        for p in json["images"] as! [String] { XCTAssertNoThrow(try RGBImage.readPNG(p)) }
    }

    func testBadInputFailsClearlyAndWritesNothing() throws {
        let out = dir + "/bad.png"
        let base = ["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "2", "-o", out]
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: dir + "/corrupt.png"))
        let cases: [([String], String)] = [
            (["--scheduler", "warp"], "scheduler"),
            (["--width", "60"], "multiples of 8"),
            (["--steps", "0"], "steps"),
            (["--init-image", Fixtures.root + "/images/init64.png", "--strength", "1.5"], "strength"),
            (["--init-image", dir + "/missing.png"], "missing.png"),
            (["--init-image", dir + "/corrupt.png"], "corrupt.png"),
            (["--backend", "tpu"], "backend"),
            (["--backend", "cpu", "--device", "0"], "--device"),
            (["--precision", "fp8"], "precision"),
            (["--device", "99"], "device 99"),  // a device given means Vulkan: never a silent CPU fallback
        ]
        for (extra, expected) in cases {
            let r = try lumen(base + extra)
            XCTAssertNotEqual(r.status, 0, "\(extra) should fail")
            XCTAssertTrue(r.stderr.lowercased().contains(expected.lowercased()), "\(extra): message '\(r.stderr)' should mention \(expected)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(extra) left an output file")
        }
        let missing = try lumen(["generate", "x", "--model", dir + "/no-such-model", "-o", out])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no-such-model"), missing.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        // Nothing half-written lies around either.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tmp") }, [])
    }

    /// `--prediction-type` reaches the scheduler: the tiny SD 2.x model (v-prediction) read as
    /// epsilon draws what diffusers draws with prediction_type "epsilon" (SD2FixtureTests' reference).
    func testPredictionTypeFlag() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/tiny-sd2-reference.safetensors")
        let call = try DiffusersRequest(ref, key: "pipeline")
        let out = dir + "/eps.png"
        let r = try lumen(["generate", call.prompt, "--model", Fixtures.root + "/tiny-sd2", "--backend", "cpu"] + call.arguments
                          + ["--prediction-type", "epsilon", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let pixels = try RGBImage.readPNG(out).image.pixels.map(Int.init)
        XCTAssertLessThanOrEqual(pixelDifference(pixels, try DiffusersRequest.pixels(ref, "pipeline.image_as_epsilon")).largest, 1)
        XCTAssertGreaterThan(pixelDifference(pixels, try DiffusersRequest.pixels(ref, "pipeline.image")).largest, 10)
    }

    /// SDXL: no `--negative-prompt` is diffusers' negative_prompt=None (zero unconditional inputs),
    /// `--negative-prompt ""` an encoded empty prompt; each draws diffusers' image for that call.
    func testEmptyNegativePromptIsNotNoNegativePrompt() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-reference.safetensors")
        let call = try DiffusersRequest(ref, key: "pipeline")
        for (flags, name) in [([], "pipeline.image"), (["--negative-prompt", ""], "pipeline.image_empty_negative")] {
            let out = dir + "/xl-\(flags.count).png"
            let r = try lumen(["generate", call.prompt, "--model", Fixtures.root + "/tiny-sdxl", "--backend", "cpu"] + call.arguments
                              + ["--width", "\(call.fields["width"] as! Int)", "--height", "\(call.fields["height"] as! Int)"] + flags + ["-o", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            let pixels = try RGBImage.readPNG(out).image.pixels.map(Int.init)
            let d = pixelDifference(pixels, try DiffusersRequest.pixels(ref, name))
            XCTAssertLessThanOrEqual(d.largest, 1, "\(name) \(flags)")
            XCTAssertLessThan(d.mean, 1, "\(name) \(flags)")
        }
    }

    /// `--lora PATH:STRENGTH` draws what diffusers draws with that adapter weight (LoRATests' reference);
    /// a missing LoRA file is named and nothing is written.
    func testLoRAFlag() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/lora/reference.safetensors")
        let call = try DiffusersRequest(ref, key: "request")
        let out = dir + "/lora.png"
        let common = ["generate", call.prompt, "--model", Fixtures.tinyFolder, "--backend", "cpu", "-o", out] + call.arguments
        let r = try lumen(common + ["--lora", Fixtures.root + "/lora/tiny-kohya.safetensors:0.6"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let pixels = try RGBImage.readPNG(out).image.pixels.map(Int.init)
        XCTAssertLessThanOrEqual(pixelDifference(pixels, try DiffusersRequest.pixels(ref, "image.scale_0_6")).largest, 1)
        try FileManager.default.removeItem(atPath: out)
        let missing = try lumen(common + ["--lora", dir + "/no-such-lora.safetensors"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no-such-lora.safetensors"), missing.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testInfoAndImg2Img() throws {
        let r = try lumen(["info", Fixtures.tinySingleFile])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Stable Diffusion 1.x") && r.stdout.contains("single-file"), r.stdout)
        let out = dir + "/i2i.png"
        let g = try lumen(["generate", "a purple circle", "--model", Fixtures.tinyFolder, "--init-image", Fixtures.root + "/images/init64.png",
                           "--strength", "0.5", "--steps", "4", "--seed", "3", "-o", out])
        XCTAssertEqual(g.status, 0, g.stderr)
        let (image, _) = try RGBImage.readPNG(out)
        XCTAssertEqual([image.width, image.height], [64, 64], "the init image's size")
        XCTAssertNotNil(try Data(contentsOf: URL(fileURLWithPath: out)).range(of: Data("Denoising strength: 0.5".utf8)))
    }

    /// `lumen eval` on the built-in demo model: a table of the figures, the JSON file, scoring a
    /// folder of images, and bad input.
    func testEval() throws {
        let saved = dir + "/eval", json = dir + "/eval.json"
        let r = try lumen(["eval", "--limit", "3", "--steps", "4", "--save", saved, "--json", json])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("r_precision") && r.stdout.contains("held-out prompts: 3 of"), r.stdout)
        let figures = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
        XCTAssertEqual(figures["n"] as? Int, 3)
        XCTAssertNotNil((figures["figures"] as? [String: Double])?["colour"])
        let pngs = try FileManager.default.contentsOfDirectory(atPath: saved).filter { $0.hasSuffix(".png") }
        XCTAssertEqual(pngs.count, 3)
        // The same images scored from the folder give the same row of figures.
        let again = try lumen(["eval", "--limit", "3", "--score-dir", saved])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(r.stdout.split(separator: "\n").last?.split(separator: " ").suffix(9),
                       again.stdout.split(separator: "\n").last?.split(separator: " ").suffix(9))
        try Data("index\tseed\tcaption\n0\t1\ta teapot on a table\n".utf8).write(to: URL(fileURLWithPath: dir + "/bad.tsv"))
        let bad = try lumen(["eval", "--prompts", dir + "/bad.tsv"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("bad.tsv") && bad.stderr.contains("teapot"), bad.stderr)
        let empty = try lumen(["eval", "--limit", "2", "--score-dir", dir + "/nothing-here"])
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.stderr.contains("nothing-here"), empty.stderr)
    }

    /// Under `taskset` (or a container's cpuset) the default is one thread per allowed core, not
    /// one per online CPU of the machine; `LUMEN_THREADS` still overrides it.
    func testThreadsFollowTheAffinityMask() throws {
        let taskset = "/usr/bin/taskset"
        guard FileManager.default.isExecutableFile(atPath: taskset) else { throw XCTSkip("no taskset (util-linux)") }
        let r = try runLumen(["-c", "0", Self.binary, "devices"], environment: ["LUMEN_THREADS": "", "LUMEN_TASKS_PER_THREAD": ""],
                             executable: taskset)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = r.stdout.split(separator: "\n").first.map(String.init) ?? ""
        XCTAssertTrue(line.hasPrefix("cpu: 1 core (1 logical CPU"), line)
        XCTAssertTrue(line.contains("threads 1,"), line)
        let set = try runLumen(["-c", "0", Self.binary, "devices"], environment: ["LUMEN_THREADS": "3", "LUMEN_TASKS_PER_THREAD": ""],
                               executable: taskset)
        XCTAssertTrue(set.stdout.contains("threads 3,"), set.stdout)
        // The products' split into tasks, where it is more than one per thread.
        let split = try runLumen(["devices"], environment: ["LUMEN_THREADS": "2", "LUMEN_TASKS_PER_THREAD": "4"])
        XCTAssertTrue(split.stdout.contains("threads 2 (4 tasks each),"), split.stdout)
        // `lumen generate` says what the CPU runs with.
        let out = dir + "/one-thread.png"
        let g = try runLumen(["-c", "0", Self.binary, "generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "1",
                              "--width", "32", "--height", "32", "--backend", "cpu", "-o", out], environment: ["LUMEN_THREADS": "", "LUMEN_CPU_ISA": "generic"], executable: taskset)
        XCTAssertEqual(g.status, 0, g.stderr)
        XCTAssertTrue(g.stderr.contains(", cpu (generic, 1 thread)\n"), g.stderr)
    }
}
