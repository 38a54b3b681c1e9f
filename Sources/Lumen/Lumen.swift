@_exported import LumenCPU
@_exported import LumenRuntime
@_exported import LumenVulkan

/// Lumen, a text-to-image diffusion engine: the tensor runtime, its executors and (as they
/// land) the models, schedulers and pipelines.
public enum Lumen {
    /// The engine's version.
    public static let version = "0.1.0"

    /// The executors this build can run here, best first.
    public static func availableBackends() -> [String] {
        VulkanExecutor.isAvailable ? ["vulkan", "cpu"] : ["cpu"]
    }
}
