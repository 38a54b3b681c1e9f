import Foundation
import Lumen
import XCTest

/// The CLI pieces the GPU check (tools/gpu-check.sh) reads: `lumen devices --verbose`,
/// `lumen bench --backend vulkan --check`, and `lumen` started as `lumen-bench`. On lavapipe
/// in CI; skipped where there is no Vulkan device.
final class GPUCheckCLITests: XCTestCase {
    func run(_ executable: String, _ args: [String], environment: [String: String] = [:]) throws
        -> (status: Int32, stdout: String, stderr: String) {
        try runLumen(args, environment: environment, executable: executable)
    }

    func requireVulkan() throws {
        guard let devices = try? VulkanExecutor.devices(), !devices.isEmpty else {
            throw XCTSkip("no Vulkan loader or device here; install mesa-vulkan-drivers for lavapipe")
        }
    }

    /// Each device: its summary line, then indented `key: value` lines with every extension of
    /// interest as yes/no, the subgroup size control, limits, and one line per matrix shape.
    func testDevicesVerboseParses() throws {
        try requireVulkan()
        let r = try run(CLITests.binary, ["devices", "--verbose"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.first?.hasPrefix("cpu: ") == true, r.stdout)
        let deviceLines = lines.filter { $0.hasPrefix("vulkan:") }
        XCTAssertEqual(deviceLines.count, try VulkanExecutor.devices().count, r.stdout)
        XCTAssertEqual(deviceLines.filter { $0.hasSuffix("[default]") }.count, 1, r.stdout)
        var extensions: [String: String] = [:]
        var limits: [String: String] = [:]
        for line in lines where line.hasPrefix("  ") && !line.hasPrefix("    ") {
            let parts = line.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            XCTAssertEqual(parts.count, 2, "not `key: value`: \(line)")
            guard parts.count == 2 else { continue }
            if parts[0].hasPrefix("extension ") { extensions[String(parts[0].dropFirst(10))] = parts[1] }
            if parts[0].hasPrefix("limit ") { limits[String(parts[0].dropFirst(6))] = parts[1] }
        }
        for e in ["VK_KHR_cooperative_matrix", "VK_NV_cooperative_matrix", "VK_NV_cooperative_matrix2", "VK_EXT_subgroup_size_control"] {
            XCTAssertTrue(["yes", "no"].contains(extensions[e] ?? ""), "\(e): \(extensions[e] ?? "missing")")
        }
        XCTAssertNotNil(Int(limits["maxStorageBufferRange"] ?? ""), r.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  subgroup size control: ") }, r.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  cooperative matrix KHR shapes: ") }, r.stdout)
        // The short listing stays one line per device.
        let short = try run(CLITests.binary, ["devices"])
        XCTAssertEqual(short.stdout.split(separator: "\n").count, 1 + deviceLines.count, short.stdout)
    }

    /// `bench --check` on lavapipe with the validation layer on: every kernel's relative error
    /// against the CPU executor is small (f32 activations), and no validation message appears.
    func testBenchCheckAgreesWithTheCPU() throws {
        try requireVulkan()
        let r = try run(CLITests.binary, ["bench", "--backend", "vulkan", "--check", "--small", "--min-seconds", "0", "--json",
                                          "--op", "matmul", "--op", "attention", "--op", "group-norm", "--op", "silu"],
                        environment: ["LUMEN_VULKAN_VALIDATION": "1", "LUMEN_VULKAN_ACTIVATIONS": "f32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], r.stdout)
        XCTAssertEqual(Set(rows.compactMap { $0["op"] as? String }), ["matmul", "attention", "group-norm", "group-norm-silu", "silu"])
        XCTAssertTrue(rows.contains { ($0["shape"] as? String)?.hasPrefix("2x") == true }, "batch-2 shapes")
        for row in rows {
            let err = try XCTUnwrap(row["rel_error"] as? Double, "\(row)")
            XCTAssertLessThan(err, 1e-4, "\(row)")
        }
        // --check is refused for the CPU backend.
        XCTAssertNotEqual(try run(CLITests.binary, ["bench", "--check", "--op", "silu"]).status, 0)
    }

    /// `lumen-bench model --backend vulkan --compare-cpu` on a small model folder: each phase
    /// reports Vulkan GPU time and a small relative error against the CPU executor.
    func testModelBenchOnVulkanComparesWithTheCPU() throws {
        try requireVulkan()
        let dir = NSTemporaryDirectory() + "lumen-bench-model-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/lumen-bench", withDestinationPath: CLITests.binary)
        let r = try run(dir + "/lumen-bench", ["model", "--backend", "vulkan", "--compare-cpu", "--model-folder", Fixtures.tinyFolder,
                                               "--sizes", "32,16", "--phases", "text,unet,vae", "--runs", "1", "--json"],
                        environment: ["LUMEN_VULKAN_ACTIVATIONS": "f32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], r.stdout)
        XCTAssertEqual(rows.compactMap { $0["phase"] as? String }, ["text-encode", "unet-step-32", "unet-step-16", "vae-decode-32"])
        for row in rows {
            XCTAssertEqual(row["backend"] as? String, "vulkan")
            XCTAssertGreaterThan(row["gpu_seconds"] as? Double ?? 0, 0, "\(row)")
            XCTAssertLessThan(try XCTUnwrap(row["rel_error_vs_cpu"] as? Double, "\(row)"), 1e-4, "\(row)")
        }
        // --compare-cpu needs the Vulkan backend.
        XCTAssertNotEqual(try run(dir + "/lumen-bench", ["model", "--compare-cpu", "--model-folder", Fixtures.tinyFolder]).status, 0)
    }

    /// Under the name lumen-bench, `lumen` is lumen-bench (the pack carries one binary).
    func testStartedAsLumenBenchItIsLumenBench() throws {
        let dir = NSTemporaryDirectory() + "lumen-bench-link-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(atPath: dir + "/lumen-bench", withDestinationPath: CLITests.binary)
        let r = try run(dir + "/lumen-bench", ["model", "--help"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("--compare-cpu"), r.stdout)
        XCTAssertTrue(r.stdout.contains("--model-folder"), r.stdout)
    }
}
