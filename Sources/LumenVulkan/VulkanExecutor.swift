import CVulkan
import Foundation
import LumenRuntime

/// Runs graphs on a Vulkan device with the GLSL kernels of `Shaders/`.
///
/// Compiling a graph uploads its weights once, plans activation memory by lifetime, builds the
/// pipelines and descriptor sets, and records one command buffer; each run uploads only the
/// inputs, replays that command buffer and downloads the outputs.
public final class VulkanExecutor: Executor, @unchecked Sendable {
    public let backendName = "vulkan"
    public let backendKind = BackendKind.vulkan
    /// Weights live on the device in f16.
    public var prefersHalfPrecisionWeights: Bool { true }
    let context: VulkanContext
    /// Options that change how programs are compiled.
    public struct Options: Sendable, Hashable {
        /// Record GPU timestamps around every dispatch (LUMEN_PROFILE=1 turns it on); each run
        /// then prints a per-op table to stderr unless `printProfile` is false.
        public var profile: Bool
        public var printProfile: Bool
        /// Fill every activation buffer with NaN before each run, so that an element a kernel
        /// fails to write shows up in the output (for tests; costs a fill per buffer).
        public var poisonActivations: Bool
        /// How activations are stored on the device (`LUMEN_VULKAN_ACTIVATIONS=f32|f16|auto`).
        /// Unless chosen here or there, the executor picks for its device: `auto` (f16, with the
        /// f32 fallback on overflow) where the device has the tensor-core kernels (on the H200 a UNet
        /// step at 512 took 57 ms so against 207 ms with f32, docs/vulkan.md), f32 elsewhere (f16 on
        /// the scalar kernels was no faster there: 209 ms).
        public var activations: ActivationPrecision {
            didSet { activationsChosen = true }
        }
        /// Whether `activations` was chosen (argument, environment or assignment), not defaulted.
        public private(set) var activationsChosen: Bool
        /// The attention kernel; nil picks by head size (`rows` up to 64, `split` above).
        public var attentionKernel: AttentionKernel?
        /// Use the shared-memory reductions even where the device has subgroup arithmetic (to
        /// test the fallback that devices without it run).
        public var forceSharedMemoryReductions: Bool
        /// Bind activations of at most this many bytes, below the device's maxStorageBufferRange
        /// (`LUMEN_VULKAN_MAX_ACTIVATION_BINDING`): lets a test or a user on a large-limit device
        /// exercise what a device with a small limit gets (VAE tiling, chunked feed-forwards).
        public var maxActivationBinding: Int?
        /// Tensor cores for matmul, linear and conv2d (`LUMEN_VULKAN_COOPMAT=0` turns them off):
        /// used in programs with f16 activations on devices with VK_NV_cooperative_matrix, once
        /// they have agreed with the scalar kernels on this device.
        public var tensorCores: TensorCores
        /// Set while the executor checks the tensor-core kernels themselves.
        var checkingTensorCores = false
        /// Which tensor-core GEMM serves linear layers, matmuls and convolutions
        /// (`LUMEN_VULKAN_GEMM`); nil: the 16-byte-load kernel wherever its alignment holds
        /// (convolutions through an im2col buffer), the implicit kernels elsewhere.
        public var gemmKernel: GemmKernel?
        /// The im2col buffer's size limit in bytes (the convolution is split into column chunks
        /// that fit); 64 MiB unless set (tests set it small to exercise the chunks).
        public var im2colChunkBytes: Int?
        /// The vector GEMM serves grids of at least this many 128×128 tiles
        /// (`LUMEN_VULKAN_V8_MIN_TILES`, default 1: every grid).
        public var vectorGemmMinTiles: Int
        /// The vector GEMM splits K across workgroups when its grid has at most half this many
        /// tiles, aiming at about this many workgroups (`LUMEN_VULKAN_SPLITK_GROUPS`, default
        /// 128: a little under the H200's 132 multiprocessors; 0 turns splitting off).
        public var splitKGroups: Int
        public init(profile: Bool? = nil, printProfile: Bool = true, poisonActivations: Bool = false,
                    activations: ActivationPrecision? = nil, attentionKernel: AttentionKernel? = nil,
                    forceSharedMemoryReductions: Bool = false, maxActivationBinding: Int? = nil) {
            let env = ProcessInfo.processInfo.environment
            self.profile = profile ?? (env["LUMEN_PROFILE"] == "1")
            self.printProfile = printProfile
            self.poisonActivations = poisonActivations
            let fromEnv = env["LUMEN_VULKAN_ACTIVATIONS"].flatMap(ActivationPrecision.init(rawValue:))
            self.activations = activations ?? fromEnv ?? .f32
            self.activationsChosen = activations != nil || fromEnv != nil
            self.tensorCores = env["LUMEN_VULKAN_COOPMAT"] == "0" ? .off : .auto
            self.attentionKernel = attentionKernel
            self.forceSharedMemoryReductions = forceSharedMemoryReductions
            self.maxActivationBinding = maxActivationBinding ?? env["LUMEN_VULKAN_MAX_ACTIVATION_BINDING"].flatMap { Int($0) }
            self.gemmKernel = env["LUMEN_VULKAN_GEMM"].flatMap(GemmKernel.init(rawValue:))
            self.vectorGemmMinTiles = env["LUMEN_VULKAN_V8_MIN_TILES"].flatMap { Int($0) } ?? 1
            self.splitKGroups = env["LUMEN_VULKAN_SPLITK_GROUPS"].flatMap { Int($0) } ?? 128
        }
    }
    /// The tensor-core GEMM variants (see `Options.gemmKernel`).
    public enum GemmKernel: String, Sendable, Hashable {
        /// matmul_coopmat_v8 (16-byte loads) where aligned; convolutions through im2col.
        case vector
        /// Only the implicit kernels (matmul_coopmat, conv2d_coopmat: scalar loads, the conv's
        /// gather inside the tile loader), as before the vector kernel.
        case implicit
        /// The vector kernel's loads and layout with scalar arithmetic instead of tensor cores
        /// (matmul_v8_emulated), on any device with f16 activations: for testing on lavapipe.
        case emulated
    }
    /// Storage of activations on the device. Arithmetic, norms' statistics and softmax are f32
    /// in every case; f16 halves the memory traffic and size at about 3 decimal digits.
    public enum ActivationPrecision: String, Sendable, Hashable {
        case f32
        /// Needs `storageBuffer16BitAccess`; compiling fails with `backendUnavailable` without it.
        case f16
        /// f16 where the device has 16-bit storage buffers, f32 otherwise; a program whose f16 run
        /// overflows recompiles itself with f32 (`PrecisionFallbackProgram`).
        case auto
    }

    public enum TensorCores: String, Sendable, Hashable {
        case auto, off
    }

    /// The two fused attention kernels (both online-softmax, neither materialises the scores).
    public enum AttentionKernel: String, Sendable, Hashable {
        /// One query per invocation, its row in registers (Shaders/attention_rows.comp).
        case rows
        /// Each query split over head-size/8 invocations (Shaders/attention.comp): fewer
        /// registers for large heads, more barriers.
        case split
    }

    public var options: Options
    private let messageStart: Int

    /// Whether programs compiled now store activations as f16.
    public var usesF16Activations: Bool {
        switch options.activations {
        case .f32: return false
        case .f16, .auto: return device.storageBuffer16BitAccess
        }
    }

    /// - Parameters:
    ///   - device: index in `VulkanExecutor.devices()`; nil picks `LUMEN_VULKAN_DEVICE` or else
    ///     the first discrete GPU.
    ///   - validation: enable VK_LAYER_KHRONOS_validation and record its messages
    ///     (`LUMEN_VULKAN_VALIDATION=1` turns it on too).
    public init(device: Int? = nil, validation: Bool? = nil, options: Options = Options()) throws {
        let v = validation ?? (ProcessInfo.processInfo.environment["LUMEN_VULKAN_VALIDATION"] == "1")
        context = try VulkanContext.shared(device: device, validation: v)
        var options = options
        if !options.activationsChosen, options.tensorCores == .auto, context.cooperativeMatrix,
           context.info.storageBuffer16BitAccess {
            options.activations = .auto
        }
        self.options = options
        messageStart = context.log.count
    }

    /// The device this executor runs on.
    public var device: VulkanDeviceInfo { context.info }
    /// The largest activation tensor (bytes) a program may bind: the device's
    /// maxStorageBufferRange, or `options.maxActivationBinding` when that is lower.
    public var activationBindingLimit: Int { min(device.maxStorageBufferRange, options.maxActivationBinding ?? .max) }
    public var maxTensorBytes: Int? { activationBindingLimit }
    /// Device memory this executor's programs hold now, and the most they have held.
    public var allocatedDeviceBytes: Int { context.allocatedBytes }
    public var peakAllocatedDeviceBytes: Int { context.peakAllocatedBytes }
    /// Starts a new peak from what is allocated now (the device and its memory may be shared by
    /// several executors of the process).
    public func resetPeakAllocatedDeviceBytes() { context.resetPeakAllocation() }
    /// `LUMEN_MEMORY_BUDGET`, else the device's largest device-local heap.
    public func memoryBudget() throws -> MemoryBudget {
        try MemoryBudget.fromEnvironment(or: MemoryBudget(bytes: context.info.deviceLocalBytes,
                                                          source: "device-local memory of \(context.info.name)"))
    }
    /// Whether the validation layer is on.
    public var validationEnabled: Bool { context.validation }
    /// Warnings and errors the validation layer reported since this executor was created
    /// (the log is shared with executors on the same device, so concurrent users may appear).
    public var validationMessages: [VulkanValidationMessage] { context.log.since(messageStart) }

    /// Makes one invalid Vulkan call on purpose (a zero-sized buffer) so a test can check that
    /// validation messages reach `validationMessages`. Not for any other use.
    public func _provokeValidationMessageForTesting() { context.provokeValidationError() }

    /// Every Vulkan device the loader sees; throws `backendUnavailable` (with the reason) when
    /// there is no loader or no device.
    public static func devices() throws -> [VulkanDeviceInfo] {
        let list = try VulkanContext.listDevices()
        guard !list.isEmpty else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "the Vulkan loader found no device")
        }
        return list
    }

    /// The SPIR-V of every kernel built into this binary, by name (for inspection and `spirv-val`).
    public static var spirvModules: [String: [UInt32]] { SPIRVModules.all }

    /// The index a `VulkanExecutor()` without a device argument would use (honouring
    /// `LUMEN_VULKAN_DEVICE`).
    public static func defaultDeviceIndex() throws -> Int {
        try VulkanContext.chooseDevice(try devices(), requested: nil)
    }

    /// True when a Vulkan device can be used here (probed once per process).
    public static let isAvailable: Bool = (try? devices())?.isEmpty == false

    /// With `fullPrecision`, f32 activations even when the options ask for f16 (or `auto`).
    public func compile(_ graph: Graph, outputs: [Value], fullPrecision: Bool) throws -> any Program {
        guard fullPrecision else { return try compile(graph, outputs: outputs) }
        return try VulkanProgram(context: context, graph: graph, outputs: outputs, options: options, f16Activations: false)
    }

    public func compile(_ graph: Graph, outputs: [Value]) throws -> any Program {
        if options.activations == .f16 && !device.storageBuffer16BitAccess {
            throw LumenError.backendUnavailable(
                backend: "vulkan", reason: "f16 activations need storageBuffer16BitAccess, which \(device.name) lacks")
        }
        if usesF16Activations { checkTensorCoresOnce() }
        let program = try VulkanProgram(context: context, graph: graph, outputs: outputs, options: options,
                                        f16Activations: usesF16Activations)
        guard options.activations == .auto, program.act16 else { return program }
        return PrecisionFallbackProgram(f16: program) { [context, options] in
            try VulkanProgram(context: context, graph: graph, outputs: outputs, options: options, f16Activations: false)
        }
    }
}
