import Foundation
import Lumen
import LumenRuntime
import XCTest

/// Issue #21 through the real `lumen` binary: hostile numbers are refused with a message naming the
/// flag, file or field, with a status below 128 (no signal), and nothing is written.
final class CLIHostileNumbersTests: TemporaryDirectoryTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: CLITests.binary) else {
            return XCTFail("lumen binary not found at \(CLITests.binary)")
        }
        try super.setUpWithError()
    }

    @discardableResult
    private func lumen(_ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runLumen(args, environment: environment)
    }

    /// Fails (status 1…127, not a signal), mentions every string in `mentions`, writes no output.
    private func assertRefused(_ args: [String], _ mentions: [String], environment: [String: String] = [:], out: String,
                               line: UInt = #line) throws {
        let r = try lumen(args, environment: environment)
        XCTAssertTrue(r.status > 0 && r.status < 128, "\(args): status \(r.status), \(r.stderr)", line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "\(args): '\(r.stderr)' should mention \(m)", line: line) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(args) wrote an output", line: line)
    }

    func testHostileFlagsNameTheFlag() throws {
        let out = dir + "/x.png"
        let base = ["generate", "a red circle on a blue background", "-o", out]
        let lora = Fixtures.root + "/lora/tiny-kohya.safetensors"
        try assertRefused(base + ["--guidance", "1e38"], ["--guidance"], out: out)
        try assertRefused(base + ["--width", "9223372036854775800", "--height", "64"], ["--width"], out: out)
        try assertRefused(base + ["--count=-3"], ["--count"], out: out)
        try assertRefused(base + ["--steps", "100000"], ["--steps"], out: out)
        try assertRefused(base + ["--model", Fixtures.tinyFolder, "--lora", lora + ":1e30"], ["--lora", "strength"], out: out)
        try assertRefused(base + ["--model", Fixtures.tinyFolder, "--lora", lora + ":abc"], ["'abc' is not a number"], out: out)
        try assertRefused(base + ["--model", Fixtures.tinyFolder, "--config", Fixtures.tinyFolder], ["--config", "diffusers folder"], out: out)
        try assertRefused(base, ["LUMEN_THREADS=eight"], environment: ["LUMEN_THREADS": "eight"], out: out)
        try assertRefused(base, ["LUMEN_CPU_ISA=avx9000", "avx512"], environment: ["LUMEN_CPU_ISA": "avx9000"], out: out)
    }

    func testHostileModelFilesNameTheFileAndField() throws {
        let out = dir + "/x.png"
        // UNet weights holding NaN: the first UNet step is named, no image is written.
        let poisoned = dir + "/nan.safetensors"
        let original = try SafetensorsFile(path: Fixtures.tinySingleFile)
        try SafetensorsWriter.write(try original.names.map { name -> (name: String, tensor: Tensor) in
            let t = try original.tensor(name)
            guard name.hasPrefix("model.diffusion_model.") else { return (name, t) }
            return (name, try Tensor(shape: t.shape, values: [Float](repeating: .nan, count: t.count)))
        }, to: poisoned)
        try assertRefused(["generate", "x", "--model", poisoned, "--config", Fixtures.tinyFolder, "--steps", "1", "-o", out],
                          ["UNet at step 1 of 1", "NaN"], out: out)
        // A config field out of range: generate and info refuse alike.
        let folder = dir + "/tiny"
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder, toPath: folder)
        let config = folder + "/unet/config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(of: "\"attention_head_dim\": 2", with: "\"attention_head_dim\": 0")
            .write(toFile: config, atomically: true, encoding: .utf8)
        try assertRefused(["generate", "x", "--model", folder, "-o", out], [config, "attention_head_dim"], out: out)
        try assertRefused(["info", folder], [config, "attention_head_dim"], out: out)
        // An unknown scheduler class lists the supported ones; info refuses it too.
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder + "/unet/config.json", toPath: config + ".ok")
        try FileManager.default.removeItem(atPath: config)
        try FileManager.default.moveItem(atPath: config + ".ok", toPath: config)
        let sched = folder + "/scheduler/scheduler_config.json"
        try String(contentsOfFile: sched, encoding: .utf8).replacingOccurrences(of: "PNDMScheduler", with: "Foo")
            .write(toFile: sched, atomically: true, encoding: .utf8)
        try assertRefused(["info", folder], ["Foo", "DDIMScheduler"], out: out)
        try String(contentsOfFile: sched, encoding: .utf8).replacingOccurrences(of: "Foo", with: "DPMSolverSDEScheduler")
            .write(toFile: sched, atomically: true, encoding: .utf8)
        let r = try lumen(["generate", "x", "--model", folder, "--steps", "2", "--width", "16", "--height", "16", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("DPMSolverSDEScheduler") && r.stderr.contains("Euler a"), r.stderr)
        let info = try lumen(["info", folder])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stderr.contains("DPMSolverSDEScheduler") && info.stderr.contains("Euler a"), info.stderr)
    }

    /// 1000 steps, the most the CLI accepts: Euler runs them (on the tiny model, 16×16, to stay
    /// fast); the built-in model's DDIM config ("leading", steps_offset 1) cannot, and says why.
    func testThousandSteps() throws {
        let out = dir + "/k.png"
        let r = try lumen(["generate", "x", "--model", Fixtures.tinyFolder, "--scheduler", "euler", "--steps", "1000",
                           "--width", "16", "--height", "16", "--seed", "1", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNoThrow(try RGBImage.readPNG(out))
        let out2 = dir + "/d.png"
        try assertRefused(["generate", "x", "--steps", "1000", "-o", out2], ["timestep 1000", "at most 999 steps"], out: out2)
    }

    func testLongPromptNoticeAndEvalSaveOntoAFile() throws {
        let out = dir + "/p.png"
        let long = Array(repeating: "red", count: 90).joined(separator: " ")
        let r = try lumen(["generate", long, "--model", Fixtures.tinyFolder, "--steps", "1", "--width", "16", "--height", "16", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("90 tokens; only the first 75"), r.stderr)
        let file = dir + "/taken"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        let e = try lumen(["eval", "--limit", "1", "--save", file])
        XCTAssertTrue(e.status > 0 && e.status < 128, e.stderr)
        XCTAssertTrue(e.stderr.contains("--save") && e.stderr.contains("folder"), e.stderr)
    }
}
