import CVulkan
import LumenRuntime

/// What a Vulkan device offers, as `lumen devices` lists it.
public struct VulkanDeviceInfo: Sendable, Hashable, CustomStringConvertible {
    /// Position in the loader's enumeration (the index `LUMEN_VULKAN_DEVICE` and `device:` take).
    public let index: Int
    public let name: String
    /// "discrete", "integrated", "virtual", "cpu" or "other".
    public let type: String
    /// A discrete or integrated GPU, as opposed to a Vulkan driver that runs on the CPU (lavapipe).
    public var isGPU: Bool { type == "discrete" || type == "integrated" }
    public let apiVersion: String
    public let driverVersion: UInt32
    public let shaderFloat16: Bool
    public let storageBuffer16BitAccess: Bool
    public let subgroupSize: Int
    /// Subgroup arithmetic in compute shaders (the reductions' fast path).
    public let subgroupArithmetic: Bool
    public let maxStorageBufferRange: Int
    public let maxComputeSharedMemorySize: Int
    /// Bytes of device-local memory (the largest device-local heap).
    public let deviceLocalBytes: Int
    public let timestampsSupported: Bool

    public var description: String {
        let mib = { (b: Int) in "\(b >> 20) MiB" }
        return "vulkan:\(index) \(name) (\(type), Vulkan \(apiVersion)): shaderFloat16 \(shaderFloat16), "
            + "16-bit storage \(storageBuffer16BitAccess), subgroup size \(subgroupSize)"
            + (subgroupArithmetic ? " (arithmetic)" : " (no arithmetic)")
            + ", maxStorageBufferRange \(mib(maxStorageBufferRange)), shared memory \(maxComputeSharedMemorySize >> 10) KiB"
            + ", device-local memory \(mib(deviceLocalBytes))"
    }

    var typeRank: Int {
        switch type {
        case "discrete": return 0
        case "integrated": return 1
        case "virtual": return 2
        case "cpu": return 3
        default: return 4
        }
    }
}

extension VulkanDeviceInfo {
    /// Reads a physical device's properties and features.
    static func query(_ fn: inout LumenVkFunctions, _ pd: VkPhysicalDevice, index: Int) -> VulkanDeviceInfo {
        var props = VkPhysicalDeviceProperties()
        fn.vkGetPhysicalDeviceProperties(pd, &props)

        var subgroup = VkPhysicalDeviceSubgroupProperties()
        subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES
        var props2 = VkPhysicalDeviceProperties2()
        props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
        withUnsafeMutablePointer(to: &subgroup) { sg in
            props2.pNext = UnsafeMutableRawPointer(sg)
            fn.vkGetPhysicalDeviceProperties2(pd, &props2)
        }

        var storage16 = VkPhysicalDevice16BitStorageFeatures()
        storage16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES
        var f16 = VkPhysicalDeviceShaderFloat16Int8Features()
        f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES
        var features2 = VkPhysicalDeviceFeatures2()
        features2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
        // The float16 struct is core only from 1.2; older devices are asked about 16-bit storage alone.
        let hasF16Struct = props.apiVersion >= vkVersion(1, 2)
        withUnsafeMutablePointer(to: &f16) { f16p in
            withUnsafeMutablePointer(to: &storage16) { s16 in
                if hasF16Struct { s16.pointee.pNext = UnsafeMutableRawPointer(f16p) }
                features2.pNext = UnsafeMutableRawPointer(s16)
                fn.vkGetPhysicalDeviceFeatures2(pd, &features2)
            }
        }

        var mem = VkPhysicalDeviceMemoryProperties()
        fn.vkGetPhysicalDeviceMemoryProperties(pd, &mem)
        var localBytes = 0
        withUnsafeBytes(of: mem.memoryHeaps) { raw in
            let heaps = raw.bindMemory(to: VkMemoryHeap.self)
            for i in 0..<Int(mem.memoryHeapCount)
            where heaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue != 0 {
                localBytes = max(localBytes, Int(heaps[i].size))
            }
        }

        let type: String
        switch props.deviceType {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: type = "discrete"
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: type = "integrated"
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: type = "virtual"
        case VK_PHYSICAL_DEVICE_TYPE_CPU: type = "cpu"
        default: type = "other"
        }
        let arithmetic = subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT.rawValue != 0
            && subgroup.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT.rawValue != 0
            && subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT.rawValue != 0
        return VulkanDeviceInfo(
            index: index, name: cString(props.deviceName), type: type,
            apiVersion: vkVersionString(props.apiVersion), driverVersion: props.driverVersion,
            shaderFloat16: hasF16Struct && f16.shaderFloat16 != 0,
            storageBuffer16BitAccess: storage16.storageBuffer16BitAccess != 0,
            subgroupSize: Int(subgroup.subgroupSize), subgroupArithmetic: arithmetic,
            maxStorageBufferRange: Int(props.limits.maxStorageBufferRange),
            maxComputeSharedMemorySize: Int(props.limits.maxComputeSharedMemorySize),
            deviceLocalBytes: localBytes,
            timestampsSupported: props.limits.timestampPeriod > 0)
    }
}
