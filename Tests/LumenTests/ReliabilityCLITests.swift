import Foundation
import Lumen
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Issue #21 on the real `lumen` binary: a FIFO anywhere a file is read, an output that cannot be
/// written, a thread count out of range or a SIGTERM mid-run each end promptly with a message
/// naming the input, an exit status (never a crash signal) and no file left behind.
final class ReliabilityCLITests: TemporaryDirectoryTestCase {
    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: CLITests.binary) else {
            return XCTFail("lumen binary not found at \(CLITests.binary)")
        }
        try super.setUpWithError()
    }

    override func tearDownWithError() throws {
        if let dir { _ = chmod(dir, 0o755) }
        try super.tearDownWithError()
    }

    struct Run {
        var status: Int32
        var signalled: Bool
        var timedOut: Bool
        var stderr: String
        var seconds: Double
    }

    /// Runs `lumen` with stdout and stderr in files (a pipe nobody reads could block it), killed
    /// after `timeout` seconds; `whileRunning` is called with the process once it has started.
    @discardableResult
    func lumen(_ args: [String], env: [String: String] = [:], timeout: Double = 20,
               whileRunning: ((Process, _ stderrPath: String) -> Void)? = nil) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.binary)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let errPath = dir + "/stderr-\(UUID().uuidString).txt"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let err = FileHandle(forWritingAtPath: errPath)!
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        let started = Date()
        try p.run()
        whileRunning?(p, errPath)
        var timedOut = false
        while p.isRunning {
            if Date().timeIntervalSince(started) > timeout {
                timedOut = true
                kill(p.processIdentifier, SIGKILL)
                break
            }
            usleep(20_000)
        }
        p.waitUntilExit()
        try? err.close()
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: errPath)
        return Run(status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal, timedOut: timedOut,
                   stderr: stderr, seconds: Date().timeIntervalSince(started))
    }

    /// A clean failure: no timeout, no signal, a status in 1..<128, `mention` in the message.
    func assertFailsCleanly(_ r: Run, mentioning mention: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, "\(what): still running after \(Int(r.seconds)) s", file: file, line: line)
        XCTAssertFalse(r.signalled, "\(what): killed by signal \(r.status)", file: file, line: line)
        XCTAssertTrue((1..<128).contains(r.status), "\(what): exit status \(r.status)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(mention), "\(what): '\(r.stderr)' should name \(mention)", file: file, line: line)
    }

    func mkfifo(_ name: String) throws -> String {
        let path = dir + "/" + name
        guard Glibc.mkfifo(path, 0o644) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return path
    }

    // MARK: - Item 6: FIFOs

    func testFIFOsAreRefusedPromptly() throws {
        let fifo = try mkfifo("model.safetensors")
        let out = dir + "/out.png"
        let tiny = Fixtures.tinyFolder
        let cases: [(String, [String])] = [
            ("info FIFO", ["info", fifo]),
            ("generate --model FIFO", ["generate", "x", "--model", fifo, "--steps", "1", "-o", out]),
            ("generate --vae FIFO", ["generate", "x", "--model", tiny, "--vae", fifo, "--steps", "1", "-o", out]),
            ("generate --init-image FIFO", ["generate", "x", "--model", tiny, "--init-image", fifo, "--steps", "1", "-o", out]),
            ("info --config FIFO folder", ["info", Fixtures.tinySingleFile, "--config", try folderWithFIFO(replacing: "unet/config.json")]),
            ("info folder with a FIFO config", ["info", try folderWithFIFO(replacing: "vae/config.json")]),
            ("generate --lora FIFO", ["generate", "x", "--model", tiny, "--lora", fifo, "--steps", "1", "-o", out]),
            ("generate with a FIFO vocabulary", ["generate", "x", "--model", try folderWithFIFO(replacing: "tokenizer/vocab.json"), "--steps", "1", "-o", out]),
        ]
        for (what, args) in cases {
            let r = try lumen(args)
            assertFailsCleanly(r, mentioning: what.contains("folder") || what.contains("vocabulary") ? "FIFO" : fifo, what)
            XCTAssertTrue(r.stderr.contains("FIFO"), "\(what): '\(r.stderr)' should say it is a FIFO")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(what) wrote an output")
        }
        // A folder where a file is expected.
        let folder = try lumen(["generate", "x", "--model", tiny, "--init-image", dir, "--steps", "1", "-o", out])
        assertFailsCleanly(folder, mentioning: "\(dir!): cannot read the image: is a folder", "--init-image FOLDER")
    }

    /// A copy of the tiny model (links to its parts) with `file` replaced by a FIFO.
    private func folderWithFIFO(replacing file: String) throws -> String {
        let fm = FileManager.default
        let folder = dir + "/model-\(UUID().uuidString.prefix(8))"
        let part = (file as NSString).deletingLastPathComponent
        for entry in try fm.contentsOfDirectory(atPath: Fixtures.tinyFolder) {
            let source = Fixtures.tinyFolder + "/" + entry
            if entry == part {
                try fm.createDirectory(atPath: folder + "/" + entry, withIntermediateDirectories: true)
                for f in try fm.contentsOfDirectory(atPath: source) where f != (file as NSString).lastPathComponent {
                    try fm.createSymbolicLink(atPath: folder + "/\(entry)/\(f)", withDestinationPath: source + "/" + f)
                }
            } else {
                try fm.createDirectory(atPath: folder, withIntermediateDirectories: true)
                try fm.createSymbolicLink(atPath: folder + "/" + entry, withDestinationPath: source)
            }
        }
        guard Glibc.mkfifo(folder + "/" + file, 0o644) == 0 else { throw POSIXError(.EIO) }
        return folder
    }

    func testThreadCountsAreBounded() throws {
        let bench = try lumen(["bench", "--threads", "100000", "--op", "gelu", "--min-seconds", "0"])
        assertFailsCleanly(bench, mentioning: "--threads 100000", "bench --threads 100000")
        XCTAssertLessThan(bench.seconds, 10)
        let env = try lumen(["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "1", "-o", dir + "/t.png"],
                            env: ["LUMEN_THREADS": "100000"])
        assertFailsCleanly(env, mentioning: "LUMEN_THREADS=100000", "LUMEN_THREADS=100000")
        let text = try lumen(["bench", "--op", "gelu"], env: ["LUMEN_THREADS": "lots"])
        assertFailsCleanly(text, mentioning: "LUMEN_THREADS=lots", "LUMEN_THREADS=lots")
    }

    // MARK: - Item 9: the output path, checked before the model loads

    func testUnwritableOutputFailsBeforeAnyStep() throws {
        try FileManager.default.createDirectory(atPath: dir + "/x.png", withIntermediateDirectories: true)
        var cases: [(String, String)] = [
            ("missing folder", dir + "/nosuchdir/x.png"),
            ("output is a folder", dir + "/x.png"),
        ]
        // Root writes into a chmod 555 folder, so as root the read-only case is /proc, which
        // refuses new files to everyone.
        if getuid() == 0 {
            cases.append(("read-only folder (/proc)", "/proc/lumen-\(getpid()).png"))
        } else {
            try FileManager.default.createDirectory(atPath: dir + "/ro", withIntermediateDirectories: true)
            XCTAssertEqual(chmod(dir + "/ro", 0o555), 0)
            cases.append(("read-only folder", dir + "/ro/x.png"))
        }
        for (what, out) in cases {
            let r = try lumen(["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "200", "-o", out])
            assertFailsCleanly(r, mentioning: out, what)
            XCTAssertFalse(r.stderr.contains("steps,") || r.stderr.contains("step "), "\(what): a step ran: \(r.stderr)")
            XCTAssertLessThan(r.seconds, 10, what)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/x.png"), [], "nothing written into the folder")
    }

    // MARK: - Items 7, 8, 12: the PNG written

    /// Links planted at the temporary names an older Lumen used and at the output itself are
    /// never written through: the victim keeps its bytes, the output is a regular file.
    func testPlantedLinksAreNotFollowed() throws {
        let victim = dir + "/victim.txt"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        let out = dir + "/out.png"
        // The old name was .NAME.PID.tmp: plant it for the next few hundred PIDs.
        let base = Int(getpid())
        for pid in base..<(base + 300) {
            try FileManager.default.createSymbolicLink(atPath: dir + "/.out.png.\(pid).tmp", withDestinationPath: victim)
        }
        try FileManager.default.createSymbolicLink(atPath: out, withDestinationPath: victim)
        let r = try lumen(["generate", "猫と犬 🐱🐶 au café", "--model", Fixtures.tinyFolder, "--steps", "2", "--seed", "1",
                           "--width", "32", "--height", "32", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious")
        let attributes = try FileManager.default.attributesOfItem(atPath: out)
        XCTAssertEqual(attributes[.type] as? FileAttributeType, .typeRegular)
        // Item 12: the prompt round-trips exactly, as UTF-8 iTXt.
        let (_, _, text) = try RGBImage.readPNGWithText(out)
        let parameters = try XCTUnwrap(text.first { $0.key == "parameters" }?.value)
        XCTAssertTrue(parameters.hasPrefix("猫と犬 🐱🐶 au café\nSteps: 2"), parameters)
        XCTAssertNotNil(try Data(contentsOf: URL(fileURLWithPath: out)).range(of: Data("iTXtparameters".utf8)))
    }

    /// SIGTERM mid-run: the process dies of the signal, leaving neither a PNG nor a temporary.
    func testSIGTERMLeavesNoFiles() throws {
        let out = dir + "/killed.png"
        let r = try lumen(["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "1000", "--scheduler", "euler",
                           "--width", "128", "--height", "128",
                           "-o", out], timeout: 60) { p, stderrPath in
            // Wait for the first line after the model loaded (or 15 s), then a little into the steps.
            let start = Date()
            while Date().timeIntervalSince(start) < 15,
                  !((try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "").contains("steps,") {
                usleep(50_000)
            }
            usleep(300_000)
            kill(p.processIdentifier, SIGTERM)
        }
        XCTAssertTrue(r.signalled, "expected death by SIGTERM, got status \(r.status): \(r.stderr)")
        XCTAssertEqual(r.status, SIGTERM)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertEqual(left.filter { $0.hasSuffix(".tmp") || $0.hasSuffix(".png") }, [])
    }
}
