@_exported import LumenCPU
@_exported import LumenRuntime
@_exported import LumenVulkan

/// Lumen, a text-to-image diffusion engine: the tensor runtime, its executors, the models,
/// schedulers and pipelines.
public enum Lumen {
    /// The engine's version.
    public static let version = "0.1.0"
}
