@_exported import LumenCPU
@_exported import LumenRuntime
@_exported import LumenVulkan

/// Lumen, a text-to-image diffusion engine: the tensor runtime, its executors and (as they
/// land) the models, schedulers and pipelines.
public enum Lumen {
    /// The engine's version.
    public static let version = "0.1.0"

    /// The executors this build can run here, best first: a Vulkan GPU, then the CPU executor,
    /// then a Vulkan driver that itself runs on the CPU (lavapipe), which is slower.
    public static func availableBackends() -> [String] {
        let devices = (try? VulkanExecutor.devices()) ?? []
        if devices.contains(where: { $0.type == "discrete" || $0.type == "integrated" }) { return ["vulkan", "cpu"] }
        return devices.isEmpty ? ["cpu"] : ["cpu", "vulkan"]
    }
}
