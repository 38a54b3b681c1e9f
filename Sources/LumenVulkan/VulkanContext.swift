import CVulkan
import Foundation
import LumenRuntime

/// One Vulkan instance and logical device, shared by every executor that asks for the same
/// device and validation setting (creating an instance with validation costs a noticeable
/// fraction of a second). Holds the compiled pipelines, which programs reuse.
final class VulkanContext: @unchecked Sendable {
    var fn = LumenVkFunctions()
    let instance: VkInstance
    let physicalDevice: VkPhysicalDevice
    let device: VkDevice
    let queue: VkQueue
    let queueFamily: UInt32
    let info: VulkanDeviceInfo
    let limits: VkPhysicalDeviceLimits
    let memoryProperties: VkPhysicalDeviceMemoryProperties
    let timestampValidBits: UInt32
    let validation: Bool
    let log = ValidationLog()
    /// Whether the tensor-core kernels (`*_coopmat.comp`: VK_NV_cooperative_matrix, 16×16×16
    /// f16 fragments accumulating in f32, subgroups of 32) can run here: the device offers the
    /// shape and the features, and they were enabled when the device was created.
    let cooperativeMatrix: Bool
    /// What the first use of the tensor-core kernels found (`VulkanExecutor` checks them once
    /// against the scalar kernels on a small random problem before any program uses them).
    enum TensorCoreCheck: Sendable, Equatable { case unchecked, passed, failed(String) }
    var tensorCoreCheck: TensorCoreCheck {
        get { checkLock.lock(); defer { checkLock.unlock() }; return _tensorCoreCheck }
        set { checkLock.lock(); defer { checkLock.unlock() }; _tensorCoreCheck = newValue }
    }
    private var _tensorCoreCheck = TensorCoreCheck.unchecked
    /// The attention kernel's own verdict, from the same check (it may fail alone).
    var tensorCoreAttention: TensorCoreCheck {
        get { checkLock.lock(); defer { checkLock.unlock() }; return _tensorCoreAttention }
        set { checkLock.lock(); defer { checkLock.unlock() }; _tensorCoreAttention = newValue }
    }
    private var _tensorCoreAttention = TensorCoreCheck.unchecked
    /// The 16-byte-load GEMM and the im2col convolutions (judged apart from the implicit kernels).
    var tensorCoreVector: TensorCoreCheck {
        get { checkLock.lock(); defer { checkLock.unlock() }; return _tensorCoreVector }
        set { checkLock.lock(); defer { checkLock.unlock() }; _tensorCoreVector = newValue }
    }
    private var _tensorCoreVector = TensorCoreCheck.unchecked
    let checkLock = NSLock()
    /// Held while the check runs, so that it runs once.
    let tensorCoreCheckRun = NSLock()
    /// Device memory allocated now and at most so far (every MemoryBlock of every program).
    private(set) var allocatedBytes = 0
    private(set) var peakAllocatedBytes = 0
    private let allocationLock = NSLock()

    /// Starts a new peak from what is allocated now.
    func resetPeakAllocation() {
        allocationLock.lock()
        defer { allocationLock.unlock() }
        peakAllocatedBytes = allocatedBytes
    }

    func noteAllocation(_ bytes: Int) {
        allocationLock.lock()
        defer { allocationLock.unlock() }
        allocatedBytes += bytes
        peakAllocatedBytes = max(peakAllocatedBytes, allocatedBytes)
    }
    private var messenger: VkDebugUtilsMessengerEXT?
    let pipelineCache: VkPipelineCache
    private let cacheURL: URL?
    /// Pipelines created since the cache file was last written.
    private var unsavedPipelines = 0
    let commandPool: VkCommandPool

    /// Serialises queue submission and the caches below.
    let lock = NSLock()
    private var layouts: [Int: (VkDescriptorSetLayout, VkPipelineLayout)] = [:]
    private var modules: [String: VkShaderModule] = [:]
    private var pipelines: [String: VkPipeline] = [:]

    /// Bytes every binding offset is aligned to.
    var bindingAlignment: Int { max(256, Int(limits.minStorageBufferOffsetAlignment)) }
    static let pushConstantBytes = 128

    // MARK: - Shared contexts

    private static let sharedLock = NSLock()
    nonisolated(unsafe) private static var shared: [String: VulkanContext] = [:]

    static func shared(device: Int?, validation: Bool) throws -> VulkanContext {
        sharedLock.lock()
        defer { sharedLock.unlock() }
        let key = "\(device.map(String.init) ?? "auto")/\(validation)"
        if let c = shared[key] { return c }
        let c = try VulkanContext(device: device, validation: validation)
        shared[key] = c
        return c
    }

    // MARK: - Instance

    /// Opens the loader and fills the global entry points.
    static func loadGlobal() throws -> LumenVkFunctions {
        guard lumen_vk_open() == 0 else {
            throw LumenError.backendUnavailable(
                backend: "vulkan", reason: "no Vulkan loader: \(String(cString: lumen_vk_open_error()))")
        }
        var fn = LumenVkFunctions()
        lumen_vk_load_global(&fn)
        guard fn.vkCreateInstance != nil else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "the Vulkan loader has no vkCreateInstance")
        }
        return fn
    }

    static func instanceLayers(_ fn: inout LumenVkFunctions) -> [String] {
        var count: UInt32 = 0
        _ = fn.vkEnumerateInstanceLayerProperties(&count, nil)
        var props = [VkLayerProperties](repeating: VkLayerProperties(), count: Int(count))
        _ = fn.vkEnumerateInstanceLayerProperties(&count, &props)
        return props.prefix(Int(count)).map { cString($0.layerName) }
    }

    static func instanceExtensions(_ fn: inout LumenVkFunctions, layer: String? = nil) -> [String] {
        var count: UInt32 = 0
        _ = fn.vkEnumerateInstanceExtensionProperties(layer, &count, nil)
        var props = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
        _ = fn.vkEnumerateInstanceExtensionProperties(layer, &count, &props)
        return props.prefix(Int(count)).map { cString($0.extensionName) }
    }

    /// Creates an instance (with the validation layer and a debug messenger when asked).
    static func createInstance(_ fn: inout LumenVkFunctions, validation: Bool, log: ValidationLog?)
        throws -> (VkInstance, VkDebugUtilsMessengerEXT?)
    {
        var layers: [String] = []
        var extensions: [String] = []
        if validation {
            guard instanceLayers(&fn).contains("VK_LAYER_KHRONOS_validation") else {
                throw LumenError.backendUnavailable(
                    backend: "vulkan",
                    reason: "validation was asked for but VK_LAYER_KHRONOS_validation is not installed (Debian: vulkan-validationlayers)")
            }
            layers.append("VK_LAYER_KHRONOS_validation")
            guard (instanceExtensions(&fn) + instanceExtensions(&fn, layer: "VK_LAYER_KHRONOS_validation"))
                .contains("VK_EXT_debug_utils")
            else {
                throw LumenError.backendUnavailable(backend: "vulkan", reason: "validation needs VK_EXT_debug_utils, which is missing")
            }
            extensions.append("VK_EXT_debug_utils")
        }
        var instanceVersion: UInt32 = vkVersion(1, 0)
        if let enumerate = fn.vkEnumerateInstanceVersion { _ = enumerate(&instanceVersion) }
        guard instanceVersion >= vkVersion(1, 1) else {
            throw LumenError.backendUnavailable(
                backend: "vulkan", reason: "the Vulkan loader offers \(vkVersionString(instanceVersion)); Lumen needs 1.1")
        }
        let layerNames = CStringArray(layers), extNames = CStringArray(extensions)
        let appName = CStringArray(["Lumen"])
        var app = VkApplicationInfo()
        app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
        app.pApplicationName = appName.pointers[0]
        app.pEngineName = appName.pointers[0]
        app.apiVersion = min(instanceVersion, vkVersion(1, 3))

        var messengerInfo = VkDebugUtilsMessengerCreateInfoEXT()
        messengerInfo.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT
        messengerInfo.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT.rawValue
            | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue
        messengerInfo.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT.rawValue
            | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue
            | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue
        messengerInfo.pfnUserCallback = debugMessengerCallback
        if let log { messengerInfo.pUserData = Unmanaged.passUnretained(log).toOpaque() }

        var instance: VkInstance?
        let result: VkResult = withUnsafePointer(to: &app) { appPtr in
            withUnsafePointer(to: &messengerInfo) { msgPtr in
                layerNames.pointers.withUnsafeBufferPointer { lp in
                    extNames.pointers.withUnsafeBufferPointer { ep in
                        var ci = VkInstanceCreateInfo()
                        ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
                        // Chained so that messages during instance creation are recorded too.
                        if validation { ci.pNext = UnsafeRawPointer(msgPtr) }
                        ci.pApplicationInfo = appPtr
                        ci.enabledLayerCount = layerNames.count
                        ci.ppEnabledLayerNames = lp.baseAddress
                        ci.enabledExtensionCount = extNames.count
                        ci.ppEnabledExtensionNames = ep.baseAddress
                        return fn.vkCreateInstance(&ci, nil, &instance)
                    }
                }
            }
        }
        if result == VK_ERROR_INCOMPATIBLE_DRIVER {
            throw LumenError.backendUnavailable(
                backend: "vulkan",
                reason: "no Vulkan driver is installed (vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER); install the GPU vendor's driver, or mesa-vulkan-drivers for lavapipe")
        }
        try vkCheck(result, "vkCreateInstance")
        guard let instance else { throw LumenError.backendUnavailable(backend: "vulkan", reason: "vkCreateInstance returned no instance") }
        lumen_vk_load_instance(&fn, instance)
        var messenger: VkDebugUtilsMessengerEXT?
        if validation {
            try vkCheck(fn.vkCreateDebugUtilsMessengerEXT(instance, &messengerInfo, nil, &messenger),
                        "vkCreateDebugUtilsMessengerEXT")
        }
        return (instance, messenger)
    }

    static func physicalDevices(_ fn: inout LumenVkFunctions, _ instance: VkInstance) throws -> [VkPhysicalDevice] {
        var count: UInt32 = 0
        try vkCheck(fn.vkEnumeratePhysicalDevices(instance, &count, nil), "vkEnumeratePhysicalDevices")
        var devices = [VkPhysicalDevice?](repeating: nil, count: Int(count))
        try vkCheck(fn.vkEnumeratePhysicalDevices(instance, &count, &devices), "vkEnumeratePhysicalDevices")
        return devices.prefix(Int(count)).compactMap { $0 }
    }

    /// The devices the loader sees, without creating a logical device.
    static func listDevices() throws -> [VulkanDeviceInfo] {
        var fn = try loadGlobal()
        let (instance, _) = try createInstance(&fn, validation: false, log: nil)
        defer { fn.vkDestroyInstance(instance, nil) }
        return try physicalDevices(&fn, instance).enumerated().map { VulkanDeviceInfo.query(&fn, $1, index: $0) }
    }

    /// The device an executor uses: `requested`, else `LUMEN_VULKAN_DEVICE`, else the first
    /// discrete GPU (then integrated, virtual, CPU).
    static func chooseDevice(_ infos: [VulkanDeviceInfo], requested: Int?) throws -> Int {
        guard !infos.isEmpty else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "the Vulkan loader found no device (is a driver such as mesa-vulkan-drivers installed?)")
        }
        var index = requested
        if index == nil, let env = ProcessInfo.processInfo.environment["LUMEN_VULKAN_DEVICE"], !env.isEmpty {
            guard let i = Int(env) else {
                throw LumenError.invalidArgument(op: "vulkan", detail: "LUMEN_VULKAN_DEVICE='\(env)' is not a device index")
            }
            index = i
        }
        if let index {
            guard infos.indices.contains(index) else {
                throw LumenError.backendUnavailable(
                    backend: "vulkan", reason: "device \(index) asked for, but only \(infos.count) device(s) exist (see `lumen devices`)")
            }
            return index
        }
        return infos.min { ($0.typeRank, $0.index) < ($1.typeRank, $1.index) }!.index
    }

    // MARK: - Device

    private init(device requested: Int?, validation: Bool) throws {
        self.validation = validation
        var f = try VulkanContext.loadGlobal()
        let (instance, messenger) = try VulkanContext.createInstance(&f, validation: validation, log: log)
        self.instance = instance
        self.messenger = messenger
        let physicals = try VulkanContext.physicalDevices(&f, instance)
        let infos = physicals.enumerated().map { VulkanDeviceInfo.query(&f, $1, index: $0) }
        let index = try VulkanContext.chooseDevice(infos, requested: requested)
        let pd = physicals[index]
        physicalDevice = pd
        info = infos[index]
        var props = VkPhysicalDeviceProperties()
        f.vkGetPhysicalDeviceProperties(pd, &props)
        guard props.apiVersion >= vkVersion(1, 1) else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "\(info.name) offers Vulkan \(info.apiVersion); Lumen needs 1.1")
        }
        limits = props.limits
        var mem = VkPhysicalDeviceMemoryProperties()
        f.vkGetPhysicalDeviceMemoryProperties(pd, &mem)
        memoryProperties = mem

        var familyCount: UInt32 = 0
        f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &familyCount, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(familyCount))
        f.vkGetPhysicalDeviceQueueFamilyProperties(pd, &familyCount, &families)
        // Prefer a compute-only family (async compute on discrete GPUs), else any with compute.
        let compute = VK_QUEUE_COMPUTE_BIT.rawValue, graphics = VK_QUEUE_GRAPHICS_BIT.rawValue
        guard let family = families.indices.first(where: { families[$0].queueFlags & compute != 0 && families[$0].queueFlags & graphics == 0 })
            ?? families.indices.first(where: { families[$0].queueFlags & compute != 0 })
        else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "\(info.name) has no compute queue")
        }
        queueFamily = UInt32(family)
        timestampValidBits = families[family].timestampValidBits

        var priority: Float = 1
        var device: VkDevice?
        // 16-bit storage buffers (for the f16-activation kernels) are enabled where offered; the
        // tensor-core kernels' features (f16 arithmetic, the Vulkan memory model, NV cooperative
        // matrices) and extension where the device has all of them.
        let tensorCores = VulkanContext.tensorCoreSupport(&f, instance, pd, info: infos[index], apiVersion: props.apiVersion)
        var storage16 = VkPhysicalDevice16BitStorageFeatures()
        storage16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
        storage16.storageBuffer16BitAccess = infos[index].storageBuffer16BitAccess ? 1 : 0
        var f16 = VkPhysicalDeviceShaderFloat16Int8Features()
        f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES
        f16.shaderFloat16 = 1
        var memoryModel = VkPhysicalDeviceVulkanMemoryModelFeatures()
        memoryModel.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES
        memoryModel.vulkanMemoryModel = 1
        var coop = VkPhysicalDeviceCooperativeMatrixFeaturesNV()
        coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV
        coop.cooperativeMatrix = 1
        let extensionNames = CStringArray(tensorCores ? ["VK_NV_cooperative_matrix"] : [])
        let result: VkResult = withUnsafePointer(to: &priority) { pp in
            var qi = VkDeviceQueueCreateInfo()
            qi.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
            qi.queueFamilyIndex = UInt32(family)
            qi.queueCount = 1
            qi.pQueuePriorities = pp
            return withUnsafePointer(to: &qi) { qp in
                withUnsafeMutablePointer(to: &coop) { cp in
                    withUnsafeMutablePointer(to: &memoryModel) { mp in
                        withUnsafeMutablePointer(to: &f16) { fp in
                            withUnsafeMutablePointer(to: &storage16) { sp in
                                if tensorCores {
                                    mp.pointee.pNext = UnsafeMutableRawPointer(cp)
                                    fp.pointee.pNext = UnsafeMutableRawPointer(mp)
                                    sp.pointee.pNext = UnsafeMutableRawPointer(fp)
                                }
                                return extensionNames.pointers.withUnsafeBufferPointer { ep in
                                    var ci = VkDeviceCreateInfo()
                                    ci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                                    ci.pNext = UnsafeRawPointer(sp)
                                    ci.queueCreateInfoCount = 1
                                    ci.pQueueCreateInfos = qp
                                    ci.enabledExtensionCount = extensionNames.count
                                    ci.ppEnabledExtensionNames = ep.baseAddress
                                    return f.vkCreateDevice(pd, &ci, nil, &device)
                                }
                            }
                        }
                    }
                }
            }
        }
        cooperativeMatrix = tensorCores
        try vkCheck(result, "vkCreateDevice on \(info.name)")
        guard let device else { throw LumenError.backendUnavailable(backend: "vulkan", reason: "vkCreateDevice returned no device") }
        self.device = device
        if let missing = lumen_vk_load_device(&f, device) {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "the driver lacks \(String(cString: missing))")
        }
        var queue: VkQueue?
        f.vkGetDeviceQueue(device, UInt32(family), 0, &queue)
        self.queue = queue!

        cacheURL = PipelineCacheFile.url(for: info, vendorID: props.vendorID, deviceID: props.deviceID)
        let saved = PipelineCacheFile.load(cacheURL) ?? Data()
        var cache: VkPipelineCache?
        let cacheResult: VkResult = saved.withUnsafeBytes { raw in
            var pci = VkPipelineCacheCreateInfo()
            pci.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
            pci.initialDataSize = raw.count
            pci.pInitialData = raw.baseAddress
            return f.vkCreatePipelineCache(device, &pci, nil, &cache)
        }
        try vkCheck(cacheResult, "vkCreatePipelineCache")
        pipelineCache = cache!

        var cpi = VkCommandPoolCreateInfo()
        cpi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        cpi.queueFamilyIndex = UInt32(family)
        cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue
        var pool: VkCommandPool?
        try vkCheck(f.vkCreateCommandPool(device, &cpi, nil, &pool), "vkCreateCommandPool")
        commandPool = pool!
        fn = f
    }

    /// Whether the device can run the tensor-core kernels: VK_NV_cooperative_matrix with a
    /// 16×16×16 f16·f16 + f32 → f32 subgroup shape, the cooperativeMatrix, vulkanMemoryModel and
    /// shaderFloat16 features, subgroups of exactly 32 (the kernels' tile layout), Vulkan 1.2+.
    /// `LUMEN_VULKAN_COOPMAT=0` says no without asking.
    static func tensorCoreSupport(_ f: inout LumenVkFunctions, _ instance: VkInstance, _ pd: VkPhysicalDevice,
                                  info: VulkanDeviceInfo, apiVersion: UInt32) -> Bool {
        if ProcessInfo.processInfo.environment["LUMEN_VULKAN_COOPMAT"] == "0" { return false }
        guard apiVersion >= vkVersion(1, 2), info.shaderFloat16, info.subgroupSize == 32 else { return false }
        let details = VulkanDeviceDetails.query(&f, instance, pd, info: info)
        guard details.has("VK_NV_cooperative_matrix"),
              details.cooperativeMatrixNV.contains(where: {
                  $0.m == 16 && $0.n == 16 && $0.k == 16 && $0.a == "f16" && $0.b == "f16" && $0.c == "f32"
                      && $0.result == "f32" && $0.scope == "subgroup" })
        else { return false }
        var memoryModel = VkPhysicalDeviceVulkanMemoryModelFeatures()
        memoryModel.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES
        var coop = VkPhysicalDeviceCooperativeMatrixFeaturesNV()
        coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV
        var features2 = VkPhysicalDeviceFeatures2()
        features2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
        withUnsafeMutablePointer(to: &coop) { cp in
            withUnsafeMutablePointer(to: &memoryModel) { mp in
                mp.pointee.pNext = UnsafeMutableRawPointer(cp)
                features2.pNext = UnsafeMutableRawPointer(mp)
                f.vkGetPhysicalDeviceFeatures2(pd, &features2)
            }
        }
        return memoryModel.vulkanMemoryModel != 0 && coop.cooperativeMatrix != 0
    }

    // MARK: - Pipelines

    /// The descriptor set layout and pipeline layout for `bindings` storage buffers and the
    /// push-constant block every kernel shares.
    func layout(bindings: Int) throws -> (VkDescriptorSetLayout, VkPipelineLayout) {
        lock.lock()
        defer { lock.unlock() }
        if let l = layouts[bindings] { return l }
        var entries = (0..<bindings).map { i -> VkDescriptorSetLayoutBinding in
            var b = VkDescriptorSetLayoutBinding()
            b.binding = UInt32(i)
            b.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            b.descriptorCount = 1
            b.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
            return b
        }
        var setLayout: VkDescriptorSetLayout?
        let r1: VkResult = entries.withUnsafeMutableBufferPointer { ep in
            var ci = VkDescriptorSetLayoutCreateInfo()
            ci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
            ci.bindingCount = UInt32(bindings)
            ci.pBindings = UnsafePointer(ep.baseAddress)
            return fn.vkCreateDescriptorSetLayout(device, &ci, nil, &setLayout)
        }
        try vkCheck(r1, "vkCreateDescriptorSetLayout")
        var range = VkPushConstantRange()
        range.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
        range.offset = 0
        range.size = UInt32(VulkanContext.pushConstantBytes)
        var pipelineLayout: VkPipelineLayout?
        let r2: VkResult = withUnsafePointer(to: &setLayout) { sp in
            withUnsafePointer(to: &range) { rp in
                var ci = VkPipelineLayoutCreateInfo()
                ci.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
                ci.setLayoutCount = 1
                ci.pSetLayouts = sp
                ci.pushConstantRangeCount = 1
                ci.pPushConstantRanges = rp
                return fn.vkCreatePipelineLayout(device, &ci, nil, &pipelineLayout)
            }
        }
        try vkCheck(r2, "vkCreatePipelineLayout")
        let l = (setLayout!, pipelineLayout!)
        layouts[bindings] = l
        return l
    }

    /// A compute pipeline for one kernel and one set of specialization constants (ids 0, 1, …),
    /// built once per context and reused by every program.
    func pipeline(_ kernel: String, specialization: [UInt32], bindings: Int) throws -> VkPipeline {
        let (_, pipelineLayout) = try layout(bindings: bindings)
        lock.lock()
        defer { lock.unlock() }
        let key = "\(kernel)|\(bindings)|" + specialization.map(String.init).joined(separator: ",")
        if let p = pipelines[key] { return p }
        let module = try shaderModule(kernel)
        var entries = specialization.indices.map { i -> VkSpecializationMapEntry in
            VkSpecializationMapEntry(constantID: UInt32(i), offset: UInt32(i * 4), size: 4)
        }
        var data = specialization
        let entryName = CStringArray(["main"])
        var pipeline: VkPipeline?
        let result: VkResult = entries.withUnsafeMutableBufferPointer { ep in
            data.withUnsafeMutableBytes { dp in
                var spec = VkSpecializationInfo()
                spec.mapEntryCount = UInt32(ep.count)
                spec.pMapEntries = UnsafePointer(ep.baseAddress)
                spec.dataSize = dp.count
                spec.pData = UnsafeRawPointer(dp.baseAddress)
                return withUnsafePointer(to: &spec) { specPtr in
                    var stage = VkPipelineShaderStageCreateInfo()
                    stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
                    stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
                    stage.module = module
                    stage.pName = entryName.pointers[0]
                    stage.pSpecializationInfo = specialization.isEmpty ? nil : specPtr
                    var ci = VkComputePipelineCreateInfo()
                    ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
                    ci.stage = stage
                    ci.layout = pipelineLayout
                    ci.basePipelineIndex = -1
                    return fn.vkCreateComputePipelines(device, pipelineCache, 1, &ci, nil, &pipeline)
                }
            }
        }
        try vkCheck(result, "vkCreateComputePipelines for kernel \(kernel)")
        pipelines[key] = pipeline!
        unsavedPipelines += 1
        return pipeline!
    }

    /// Writes the pipeline cache to disk when pipelines were built since the last write.
    func savePipelineCache() {
        lock.lock()
        defer { lock.unlock() }
        guard unsavedPipelines > 0, cacheURL != nil else { return }
        unsavedPipelines = 0
        var size = 0
        guard fn.vkGetPipelineCacheData(device, pipelineCache, &size, nil) == VK_SUCCESS, size > 0 else { return }
        var data = Data(count: size)
        let r: VkResult = data.withUnsafeMutableBytes { fn.vkGetPipelineCacheData(device, pipelineCache, &size, $0.baseAddress) }
        guard r == VK_SUCCESS else { return }
        PipelineCacheFile.save(data.prefix(size), to: cacheURL)
    }

    /// An invalid call on purpose (a zero-sized buffer), for tests that check the messenger.
    func provokeValidationError() {
        var bi = VkBufferCreateInfo()
        bi.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        bi.size = 0
        bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue
        bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        if fn.vkCreateBuffer(device, &bi, nil, &buffer) == VK_SUCCESS, let buffer {
            fn.vkDestroyBuffer(device, buffer, nil)
        }
    }

    private func shaderModule(_ kernel: String) throws -> VkShaderModule {
        if let m = modules[kernel] { return m }
        guard let code = SPIRVModules.all[kernel] else {
            throw LumenError.invalidArgument(op: "vulkan", detail: "no SPIR-V module named \(kernel) was built")
        }
        var module: VkShaderModule?
        let result: VkResult = code.withUnsafeBufferPointer { cp in
            var ci = VkShaderModuleCreateInfo()
            ci.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
            ci.codeSize = cp.count * 4
            ci.pCode = cp.baseAddress
            return fn.vkCreateShaderModule(device, &ci, nil, &module)
        }
        try vkCheck(result, "vkCreateShaderModule \(kernel)")
        modules[kernel] = module!
        return module!
    }

    // MARK: - Memory types

    /// A memory type allowed by `bits` with all of `required` (and, where possible, `preferred`).
    func memoryType(bits: UInt32, required: UInt32, preferred: UInt32 = 0) -> UInt32? {
        let types = withUnsafeBytes(of: memoryProperties.memoryTypes) { Array($0.bindMemory(to: VkMemoryType.self)) }
        let n = Int(memoryProperties.memoryTypeCount)
        for want in [required | preferred, required] {
            for i in 0..<n where bits & (1 << UInt32(i)) != 0 && types[i].propertyFlags & want == want {
                return UInt32(i)
            }
        }
        return nil
    }

    // MARK: - Submission

    /// Submits a recorded command buffer and waits for it.
    func submitAndWait(_ cmd: VkCommandBuffer, fence: VkFence) throws {
        lock.lock()
        defer { lock.unlock() }
        var f: VkFence? = fence
        try vkCheck(fn.vkResetFences(device, 1, &f), "vkResetFences")
        var c: VkCommandBuffer? = cmd
        let r: VkResult = withUnsafePointer(to: &c) { cp in
            var si = VkSubmitInfo()
            si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
            si.commandBufferCount = 1
            si.pCommandBuffers = cp
            return fn.vkQueueSubmit(queue, 1, &si, fence)
        }
        try vkCheck(r, "vkQueueSubmit")
        try vkCheck(fn.vkWaitForFences(device, 1, &f, 1, UInt64.max), "vkWaitForFences")
    }

    func makeFence() throws -> VkFence {
        var ci = VkFenceCreateInfo()
        ci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
        var f: VkFence?
        try vkCheck(fn.vkCreateFence(device, &ci, nil, &f), "vkCreateFence")
        return f!
    }

    func allocateCommandBuffer() throws -> VkCommandBuffer {
        var ai = VkCommandBufferAllocateInfo()
        ai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
        ai.commandPool = commandPool
        ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
        ai.commandBufferCount = 1
        var cmd: VkCommandBuffer?
        lock.lock()
        defer { lock.unlock() }
        try vkCheck(fn.vkAllocateCommandBuffers(device, &ai, &cmd), "vkAllocateCommandBuffers")
        return cmd!
    }

    func freeCommandBuffer(_ cmd: VkCommandBuffer) {
        lock.lock()
        defer { lock.unlock() }
        var c: VkCommandBuffer? = cmd
        fn.vkFreeCommandBuffers(device, commandPool, 1, &c)
    }
}
