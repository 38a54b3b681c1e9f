import CVulkan
import Foundation
import LumenRuntime

/// Where the VkPipelineCache is kept between processes: `$LUMEN_VULKAN_PIPELINE_CACHE` (a file
/// path; "0" or "" disables it), else `$XDG_CACHE_HOME/lumen` or `~/.cache/lumen`, one file per
/// device and driver version. The driver checks the header and ignores data it did not write.
enum PipelineCacheFile {
    static func url(for info: VulkanDeviceInfo, vendorID: UInt32, deviceID: UInt32) -> URL? {
        let env = ProcessInfo.processInfo.environment
        if let path = env["LUMEN_VULKAN_PIPELINE_CACHE"] {
            return path.isEmpty || path == "0" ? nil : URL(fileURLWithPath: path)
        }
        let base: URL
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty {
            base = URL(fileURLWithPath: xdg)
        } else if let home = env["HOME"], !home.isEmpty {
            base = URL(fileURLWithPath: home).appendingPathComponent(".cache")
        } else {
            return nil
        }
        let name = String(format: "vulkan-pipelines-%04x-%04x-%08x.bin", vendorID, deviceID, info.driverVersion)
        return base.appendingPathComponent("lumen").appendingPathComponent(name)
    }

    /// The cache's bytes (nil for a missing file, or a FIFO or device planted in its place).
    static func load(_ url: URL?) -> Data? {
        guard let url else { return nil }
        return try? RegularFile.read(url.path, limit: 1 << 30)
    }

    /// Writes the cache atomically through `AtomicFile` (an exclusive temporary renamed over the
    /// old one, never through a link); failures are ignored, a cache is only an optimisation.
    static func save(_ data: Data, to url: URL?) {
        guard let url, !data.isEmpty else { return }
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? AtomicFile.write(data, to: url.path)
    }
}
