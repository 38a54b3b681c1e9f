import Foundation
import LumenRuntime

/// A program compiled with f16 activations that falls back to f32 activations by itself: when a
/// run gives an infinite or NaN output from finite inputs (an activation overflowed f16's range,
/// as the VAE can), the graph is compiled again with f32 activations, the run is repeated, and
/// every later run uses f32. `VulkanExecutor` returns it for `activations: .auto`.
public final class PrecisionFallbackProgram: Program {
    public var inputs: [(name: String, shape: Shape, dtype: DType)] { current.inputs }
    /// The program runs now use (f16 until a fallback, then f32).
    public private(set) var current: VulkanProgram
    /// Whether runs have moved to f32 activations.
    public private(set) var fellBack = false
    private let compileF32: () throws -> VulkanProgram
    private let lock = NSLock()

    init(f16 program: VulkanProgram, compileF32: @escaping () throws -> VulkanProgram) {
        current = program
        self.compileF32 = compileF32
    }

    public func run(_ inputs: [String: Tensor]) throws -> ProgramOutputs {
        lock.lock()
        defer { lock.unlock() }
        let out = try current.run(inputs)
        guard !fellBack, out.tensors.contains(where: Self.hasNonFinite),
              !inputs.values.contains(where: Self.hasNonFinite)
        else { return out }
        FileHandle.standardError.write(Data(
            "vulkan: f16 activations overflowed (non-finite output from finite inputs); recompiling with f32 activations\n".utf8))
        current = try compileF32()
        fellBack = true
        return try current.run(inputs)
    }

    static func hasNonFinite(_ t: Tensor) -> Bool {
        guard t.dtype.isFloatingPoint else { return false }
        return t.toFloats().contains { !$0.isFinite }
    }
}
