import Foundation
import LumenCPU
import LumenRuntime
import LumenVulkan
import XCTest

/// The executor itself: devices, SPIR-V validity, replay, limits and errors.
final class ExecutorTests: VulkanTestCase {
    func testDeviceListing() throws {
        let devices = try VulkanExecutor.devices()
        XCTAssertFalse(devices.isEmpty)
        XCTAssertTrue(devices.contains(vulkan.device))
        for d in devices {
            XCTAssertGreaterThan(d.subgroupSize, 0, "\(d)")
            XCTAssertGreaterThan(d.maxStorageBufferRange, 0, "\(d)")
        }
        XCTAssertTrue(vulkan.validationEnabled)
    }

    /// The messenger records what the validation layer reports (so "no messages" means something).
    func testValidationMessagesAreRecorded() throws {
        let before = vulkan.validationMessages.count
        vulkan._provokeValidationMessageForTesting()
        let new = vulkan.validationMessages.dropFirst(before)
        XCTAssertTrue(new.contains { $0.severity == .error && $0.message.contains("VkBufferCreateInfo") },
                      "expected an error about the zero-sized buffer, got \(Array(new))")
        messagesBefore = vulkan.validationMessages.count  // expected ones; tearDown checks the rest
    }

    /// Every embedded module passes spirv-val (for the Vulkan 1.1 environment it was built for).
    /// Every kernel in Shaders/ is in the binary, in both activation variants. (SwiftPM replans
    /// the shader plugin only when it replans the package: a .comp added since the last build is
    /// missing until `touch Package.swift`; this says so instead of a failure at run time.)
    func testEveryShaderIsBuiltIn() throws {
        let shaders = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Shaders")
        let names = try FileManager.default.contentsOfDirectory(atPath: shaders.path)
            .filter { $0.hasSuffix(".comp") }.map { String($0.dropLast(5)) }
        XCTAssertGreaterThan(names.count, 15)
        let modules = VulkanExecutor.spirvModules
        for name in names {
            XCTAssertNotNil(modules[name], "Shaders/\(name).comp is not built in (a stale build plan? touch Package.swift)")
            XCTAssertNotNil(modules[name + "_f16"], "Shaders/\(name).comp's f16 variant is not built in")
        }
    }

    func testSPIRVModulesValidate() throws {
        let tool = "/usr/bin/spirv-val"
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw XCTSkip("spirv-val is not installed (Debian: spirv-tools)")
        }
        let modules = VulkanExecutor.spirvModules
        XCTAssertGreaterThanOrEqual(modules.count, 15)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lumen-spirv-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, words) in modules.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(words.first, 0x0723_0203, "\(name): SPIR-V magic")
            let file = dir.appendingPathComponent("\(name).spv")
            try words.withUnsafeBytes { try Data($0).write(to: file) }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = ["--target-env", "vulkan1.1", file.path]
            let pipe = Pipe()
            p.standardError = pipe
            p.standardOutput = pipe
            try p.run()
            p.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(p.terminationStatus, 0, "spirv-val \(name): \(out)")
        }
    }

    /// One recorded command buffer replayed with new inputs gives each run's own result.
    func testReplayWithNewInputs() throws {
        let g = Graph()
        let x = try g.input("x", shape: [3, 17]), w = try g.constant(try random([9, 17], dtype: .f16, seed: 40))
        let y = try g.softmax(try g.linear(x, weight: w))
        let program = try vulkan.compile(g, outputs: [y])
        let cpu = try CPUExecutor(threads: 2).compile(g, outputs: [y])
        for seed in 41...44 as ClosedRange<UInt64> {
            let input = try random([3, 17], seed: seed)
            assertClose(try program.run(["x": input])[y]!.toFloats(), try cpu.run(["x": input])[y]!.toFloats(),
                        atol: 1e-6, rtol: 1e-4, "run with seed \(seed)")
        }
    }

    /// Inputs declared after other values are uploaded before the first dispatch; their buffers
    /// must not be shared with values computed earlier.
    func testLateInputIsNotOverwritten() throws {
        try compare("late input", atol: 1e-6, rtol: 1e-6, f16: TOL16, inputs: ["a": try random([64], seed: 45), "b": try random([64], seed: 46)]) { g in
            let a = try g.input("a", shape: [64])
            let s = try g.silu(try g.silu(a))
            let b = try g.input("b", shape: [64])
            return [try g.add(s, b)]
        }
    }

    func testOutputsThatAreInputsOrConstants() throws {
        let c = try random([4, 3], dtype: .f16, seed: 47)
        try compare("passthrough", atol: 0, rtol: 0, f16: nil, inputs: ["x": try random([4, 3], seed: 48)]) { g in
            let x = try g.input("x", shape: [4, 3])
            return [x, try g.reshape(x, [12]), try g.constant(c), try g.reshape(try g.constant(c), [3, 4])]
        }
    }

    /// Weights pass through a small staging block in many pieces (with conversions).
    func testWeightUploadInPieces() throws {
        setenv("LUMEN_VULKAN_UPLOAD_CHUNK", "100", 1)
        defer { unsetenv("LUMEN_VULKAN_UPLOAD_CHUNK") }
        for dtype in [DType.f32, .f16, .bf16] {
            let w = try random([29, 53], dtype: dtype, seed: 51), b = try random([29], dtype: dtype, seed: 52)
            try compare("linear \(dtype) uploaded in pieces", atol: 2e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": try random([7, 53], seed: 53)]) { g in
                [try g.linear(try g.input("x", shape: [7, 53]), weight: try g.constant(w), bias: try g.constant(b))]
            }
        }
    }

    func testBindingLargerThanMaxStorageBufferRangeIsRefused() throws {
        let limit = vulkan.device.maxStorageBufferRange
        let count = limit / 4 + 1024
        let g = Graph()
        let x = try g.input("big", shape: [count])
        let y = try g.silu(x)
        XCTAssertThrowsError(try vulkan.compile(g, outputs: [y])) { error in
            guard case LumenError.outOfMemory(let bytes, let detail) = error else {
                return XCTFail("expected outOfMemory, got \(error)")
            }
            XCTAssertEqual(bytes, count * 4)
            XCTAssertTrue(detail.contains("maxStorageBufferRange"), detail)
            XCTAssertTrue(detail.contains("'big'"), detail)
        }
    }

    func testBadInputsAndIdsThrow() throws {
        let g = Graph()
        let ids = try g.input("ids", shape: [3], dtype: .i32)
        let e = try g.embedding(ids, table: try g.constant(try random([5, 4], seed: 49)))
        let program = try vulkan.compile(g, outputs: [e])
        XCTAssertThrowsError(try program.run([:])) { XCTAssertEqual($0 as? LumenError, .missingInput(name: "ids")) }
        XCTAssertThrowsError(try program.run(["ids": try Tensor(shape: [3], indices: [0, 5, 1])])) { error in
            guard case LumenError.invalidArgument(let op, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(op, "embedding")
        }
        XCTAssertThrowsError(try program.run(["ids": try Tensor([1, 2, 3])])) { error in
            guard case LumenError.inputMismatch = error else { return XCTFail("\(error)") }
        }
    }

    /// With profiling on, every dispatch has a GPU time.
    func testProfileTimestamps() throws {
        let e = try VulkanExecutor(validation: true, options: .init(profile: true, printProfile: false))
        let g = Graph()
        let x = try g.input("x", shape: [8, 32])
        let y = try g.gelu(try g.layerNorm(try g.silu(x)))
        let program = try XCTUnwrap(try e.compile(g, outputs: [y]) as? VulkanProgram)
        _ = try program.run(["x": try random([8, 32], seed: 50)])
        XCTAssertEqual(program.lastProfile.map(\.op), ["silu", "layer-norm", "gelu"])
        XCTAssertNotNil(program.lastGPUSeconds)
        program.printProfile()  // exercises the LUMEN_PROFILE table (to stderr)
        XCTAssertTrue(e.validationMessages.isEmpty, "\(e.validationMessages)")
    }
}

extension ExecutorTests {
    func testPeakMeasurement() throws {
        let peak = try vulkan.measurePeak()
        XCTAssertGreaterThan(peak.gflops, 0)
        XCTAssertGreaterThan(peak.gbps, 0)
    }

    /// Programs on one device run from several threads at once (submission is serialised).
    func testConcurrentPrograms() throws {
        let graphs = try (0..<3).map { i -> (Graph, Value, Tensor) in
            let g = Graph()
            let x = try g.input("x", shape: [5, 33])
            let y = try g.layerNorm(try g.linear(x, weight: try g.constant(try random([33, 33], dtype: .f16, seed: UInt64(60 + i)))))
            return (g, y, try random([5, 33], seed: UInt64(70 + i)))
        }
        let programs = try graphs.map { try vulkan.compile($0.0, outputs: [$0.1]) }
        let expected = try graphs.map { try CPUExecutor(threads: 1).compile($0.0, outputs: [$0.1]).run(["x": $0.2])[$0.1]!.toFloats() }
        let lock = NSLock()
        var results = [[Float]?](repeating: nil, count: 3 * 4)
        DispatchQueue.concurrentPerform(iterations: 12) { i in
            let k = i % 3
            let r = try? programs[k].run(["x": graphs[k].2])[graphs[k].1]!.toFloats()
            lock.lock()
            results[i] = r
            lock.unlock()
        }
        for i in 0..<12 {
            assertClose(try XCTUnwrap(results[i]), expected[i % 3], atol: 1e-4, rtol: 1e-4, "concurrent run \(i)")
        }
    }
}

extension ExecutorTests {
    /// With `.auto` activations an f16 overflow (1e5 · x leaves f16's range) makes the program
    /// recompile itself with f32 activations and return the f32 result.
    func testAutoPrecisionFallsBackOnOverflow() throws {
        guard vulkan.device.storageBuffer16BitAccess else { throw XCTSkip("no 16-bit storage on \(vulkan.device.name)") }
        let e = try VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true, activations: .auto))
        let g = Graph()
        let x = try g.input("x", shape: [4, 9])
        let y = try g.affine(try g.affine(x, multiplier: 1e5), multiplier: 1e-5, addend: 0.5)
        let program = try XCTUnwrap(try e.compile(g, outputs: [y]) as? PrecisionFallbackProgram)
        XCTAssertTrue(program.current.usesF16Activations)
        let input = try random([4, 9], seed: 54)
        let out = try program.run(["x": input])[y]!.toFloats()
        XCTAssertTrue(program.fellBack)
        XCTAssertFalse(program.current.usesF16Activations)
        assertClose(out, input.toFloats().map { $0 * 1e5 * 1e-5 + 0.5 }, atol: 1e-5, rtol: 1e-5, "after fallback")
        // A graph that stays in range keeps f16.
        let g2 = Graph()
        let x2 = try g2.input("x", shape: [4, 9])
        let y2 = try g2.silu(x2)
        let p2 = try XCTUnwrap(try e.compile(g2, outputs: [y2]) as? PrecisionFallbackProgram)
        _ = try p2.run(["x": input])
        XCTAssertFalse(p2.fellBack)
    }
}
