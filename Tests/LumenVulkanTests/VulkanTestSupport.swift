import Foundation
import LumenCPU
import LumenRuntime
import LumenVulkan
import XCTest
import LumenTestSupport

/// A random tensor in [-scale, scale), stored as `dtype`.
func random(_ shape: Shape, dtype: DType = .f32, seed: UInt64, scale: Float = 1) throws -> Tensor {
    var rng = SplitMix64(seed: seed)
    let values = (0..<shape.count).map { _ in Float.random(in: -scale..<scale, using: &rng) }
    return try Tensor(shape: shape, values: values, dtype: dtype)
}

/// The executor under test: validation on, activations poisoned with NaN before every run.
/// Nil (with the reason) when this machine has no Vulkan loader or device.
private let sharedExecutor: Result<VulkanExecutor, Error> = {
    do {
        _ = try VulkanExecutor.devices()
    } catch {
        return .failure(error)
    }
    return Result {
        try VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true))
    }
}()

/// The same device with f16 activations, where it has 16-bit storage buffers.
private let sharedExecutorF16: VulkanExecutor? = {
    guard case .success(let e) = sharedExecutor, e.device.storageBuffer16BitAccess else { return nil }
    return try? VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true, activations: .f16))
}()

/// The f16-activation executor, or nil where the device cannot store f16.
func vulkanExecutorF16() -> VulkanExecutor? { sharedExecutorF16 }

/// The Vulkan executor, or an XCTSkip when no loader or device exists here. A device that exists
/// but cannot be opened (or lacks the validation layer) is a failure, not a skip.
func vulkanExecutor() throws -> VulkanExecutor {
    switch sharedExecutor {
    case .success(let e): return e
    case .failure(let error):
        if case LumenError.backendUnavailable(_, let reason) = error,
           (try? VulkanExecutor.devices()) == nil {
            throw XCTSkip("no Vulkan loader or device on this machine (\(reason)); install mesa-vulkan-drivers for lavapipe")
        }
        throw error
    }
}

class VulkanTestCase: XCTestCase {
    var vulkan: VulkanExecutor!
    var messagesBefore = 0

    override func setUpWithError() throws {
        vulkan = try vulkanExecutor()
        messagesBefore = vulkan.validationMessages.count
    }

    override func tearDown() {
        if let vulkan {
            let messages = vulkan.validationMessages.dropFirst(messagesBefore)
            // The f16 executor shares this device context and so its message log.
            XCTAssertTrue(messages.isEmpty, "validation messages:\n" + messages.map(\.description).joined(separator: "\n"))
        }
        super.tearDown()
    }

    /// Builds a graph, runs it on the CPU executor (the oracle) and on Vulkan, and compares every
    /// output elementwise: |vulkan − cpu| ≤ atol + rtol·|cpu|. Unwritten (poisoned) elements are
    /// NaN and fail. Where the device stores f16, the graph runs again with f16 activations
    /// against `f16` tolerances (nil: the f32 ones, for ops that only move values).
    func compare(_ what: String, atol: Double, rtol: Double, f16: (atol: Double, rtol: Double)?,
                 inputs: [String: Tensor], file: StaticString = #filePath, line: UInt = #line,
                 _ build: (Graph) throws -> [Value]) throws {
        let graph = Graph()
        let outputs = try build(graph)
        let cpu = try CPUExecutor(threads: 2).compile(graph, outputs: outputs).run(inputs)
        var runs: [(String, VulkanExecutor, Double, Double)] = [("f32", vulkan, atol, rtol)]
        if let e16 = vulkanExecutorF16() { runs.append(("f16", e16, f16?.atol ?? atol, f16?.rtol ?? rtol)) }
        for (variant, executor, atol, rtol) in runs {
            let program = try executor.compile(graph, outputs: outputs)
            let gpu = try program.run(inputs)
            for (i, v) in outputs.enumerated() {
                let expected = cpu[v]!.toFloats()
                // Values that only move (f16 runs with f32 tolerances) are compared after the
                // same rounding to f16 the device applies.
                let reference = variant == "f16" && f16 == nil && cpu[v]!.dtype == .f32
                    ? expected.map { HalfConversion.halfToFloat(HalfConversion.floatToHalf($0)) } : expected
                assertClose(gpu[v]!.toFloats(), reference, atol: atol, rtol: rtol,
                            "\(what) [\(variant) activations] output \(i) \(v.shape)", file: file, line: line)
            }
        }
    }
}

func assertClose(_ actual: [Float], _ expected: [Float], atol: Double, rtol: Double, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): element count", file: file, line: line)
    guard actual.count == expected.count else { return }
    var worst = 0.0, worstIndex = -1
    for i in 0..<actual.count {
        let a = Double(actual[i]), e = Double(expected[i])
        guard a.isFinite || !e.isFinite else {
            XCTFail("\(what): element \(i) is \(a), expected \(e)", file: file, line: line)
            return
        }
        let excess = abs(a - e) / (atol + rtol * abs(e))
        if excess > worst { worst = excess; worstIndex = i }
    }
    if ProcessInfo.processInfo.environment["LUMEN_TEST_REPORT"] == "1" {
        print("worst \(what): excess \(worst)")
    }
    if worst > 1 {
        XCTFail("\(what): element \(worstIndex) is \(actual[worstIndex]), expected \(expected[worstIndex]) "
                + "(error \(abs(Double(actual[worstIndex]) - Double(expected[worstIndex]))), atol \(atol), rtol \(rtol))",
                file: file, line: line)
    }
}

/// Tolerance of the f16-activation runs: every stored activation is rounded to f16 (relative
/// error ≤ 2⁻¹¹ ≈ 4.9e-4), and an output carries a few such roundings of unit-scale values
/// (input, intermediates, output); 4e-3 is about eight of them. Measured worst cases in these
/// tests: ~1.2e-3 (linear, K = 53), ~1e-3 (the transformer and ResNet blocks).
let TOL16 = (atol: 4e-3, rtol: 4e-3)
