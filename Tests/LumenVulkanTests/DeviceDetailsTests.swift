import Foundation
import LumenRuntime
import LumenVulkan
import XCTest

/// `VulkanExecutor.deviceDetails()` (what `lumen devices --verbose` prints) agrees with the
/// device listing and reads consistent values on the device at hand (lavapipe in CI).
final class DeviceDetailsTests: VulkanTestCase {
    func testDetailsMatchTheListingAndAreConsistent() throws {
        let details = try VulkanExecutor.deviceDetails()
        let devices = try VulkanExecutor.devices()
        XCTAssertEqual(details.map(\.info), devices)
        for d in details {
            XCTAssertFalse(d.extensions.isEmpty, "\(d.info.name)")
            XCTAssertEqual(d.extensions, d.extensions.sorted())
            // Every extension of interest is reported, each as yes or no, matching the list.
            let lines = d.lines
            for e in VulkanDeviceDetails.extensionsOfInterest {
                XCTAssertTrue(lines.contains("  extension \(e): \(d.has(e) ? "yes" : "no")"), "\(e) in\n\(lines.joined(separator: "\n"))")
            }
            // 16-bit storage as an extension (or core 1.1 feature) is there when the feature is.
            if d.info.storageBuffer16BitAccess { XCTAssertTrue(d.has("VK_KHR_16bit_storage")) }
            if let range = d.subgroupSizeRange {
                XCTAssertTrue(range.contains(d.info.subgroupSize), "subgroup size \(d.info.subgroupSize) outside \(range)")
            }
            let limits = Dictionary(d.limits.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(limits["maxStorageBufferRange"], String(d.info.maxStorageBufferRange))
            XCTAssertEqual(limits["maxComputeSharedMemorySize"], String(d.info.maxComputeSharedMemorySize))
            XCTAssertGreaterThanOrEqual(Int(limits["maxComputeWorkGroupInvocations"] ?? "") ?? 0, 128)
            // Cooperative-matrix shapes exist exactly where the extension does, and are sane.
            if !d.has("VK_KHR_cooperative_matrix") { XCTAssertTrue(d.cooperativeMatrixKHR.isEmpty) }
            if !d.has("VK_NV_cooperative_matrix") { XCTAssertTrue(d.cooperativeMatrixNV.isEmpty) }
            for s in d.cooperativeMatrixKHR + d.cooperativeMatrixNV {
                XCTAssertTrue(s.m > 0 && s.n > 0 && s.k > 0, "\(s)")
                XCTAssertFalse(s.a.hasPrefix("type"), "unknown component type in \(s)")
            }
        }
    }
}
