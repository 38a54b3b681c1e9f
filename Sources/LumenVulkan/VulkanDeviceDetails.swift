import CVulkan
import LumenRuntime

/// What `lumen devices --verbose` prints about a device beyond `VulkanDeviceInfo`: the
/// extensions a faster kernel would need (cooperative matrices, subgroup size control), the
/// compute limits, and the cooperative-matrix shapes the driver offers. Read once before a GPU
/// run, so that the kernels to write next are chosen from what the device says it has.
public struct VulkanDeviceDetails: Sendable, Hashable {
    public let info: VulkanDeviceInfo
    /// Every device extension, sorted by name.
    public let extensions: [String]
    /// Compute limits, in the order printed (name, value).
    public let limits: [Limit]
    /// VK_EXT_subgroup_size_control (core in 1.3): the subgroup sizes a pipeline may require.
    public let subgroupSizeRange: ClosedRange<Int>?
    /// vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR, where VK_KHR_cooperative_matrix is there.
    public let cooperativeMatrixKHR: [CooperativeMatrixShape]
    /// vkGetPhysicalDeviceCooperativeMatrixPropertiesNV, where VK_NV_cooperative_matrix is there.
    public let cooperativeMatrixNV: [CooperativeMatrixShape]

    public struct Limit: Sendable, Hashable {
        public let name: String
        public let value: String
    }

    /// One M×N×K shape: A (M×K) times B (K×N) plus C gives the result, in these component types.
    public struct CooperativeMatrixShape: Sendable, Hashable, CustomStringConvertible {
        public let m, n, k: Int
        public let a, b, c, result: String
        public let saturatingAccumulation: Bool
        public let scope: String
        public var description: String {
            "\(m)x\(n)x\(k) A \(a) B \(b) C \(c) -> \(result), scope \(scope)" + (saturatingAccumulation ? ", saturating" : "")
        }
    }

    /// The extensions that matter for the next kernels, and whether the device has each.
    public static let extensionsOfInterest = [
        "VK_KHR_cooperative_matrix", "VK_NV_cooperative_matrix", "VK_NV_cooperative_matrix2",
        "VK_EXT_subgroup_size_control", "VK_KHR_shader_float16_int8", "VK_KHR_16bit_storage",
        "VK_KHR_shader_integer_dot_product", "VK_KHR_shader_bfloat16", "VK_EXT_memory_budget",
        "VK_KHR_buffer_device_address", "VK_EXT_shader_atomic_float",
    ]

    public func has(_ ext: String) -> Bool { extensions.contains(ext) }

    /// The report as lines: `key: value`, and one `  coopmat-khr: …` line per shape.
    public var lines: [String] {
        var out = [info.description]
        for e in Self.extensionsOfInterest { out.append("  extension \(e): \(has(e) ? "yes" : "no")") }
        if let r = subgroupSizeRange {
            out.append("  subgroup size control: \(r.lowerBound)...\(r.upperBound)")
        } else {
            out.append("  subgroup size control: no")
        }
        for l in limits { out.append("  limit \(l.name): \(l.value)") }
        out.append("  cooperative matrix KHR shapes: \(has("VK_KHR_cooperative_matrix") ? String(cooperativeMatrixKHR.count) : "no extension")")
        for s in cooperativeMatrixKHR { out.append("    coopmat-khr \(s)") }
        out.append("  cooperative matrix NV shapes: \(has("VK_NV_cooperative_matrix") ? String(cooperativeMatrixNV.count) : "no extension")")
        for s in cooperativeMatrixNV { out.append("    coopmat-nv \(s)") }
        out.append("  extensions (\(extensions.count)): " + extensions.joined(separator: " "))
        return out
    }
}

extension VulkanExecutor {
    /// The details of every device the loader sees (`lumen devices --verbose`).
    public static func deviceDetails() throws -> [VulkanDeviceDetails] {
        var fn = try VulkanContext.loadGlobal()
        let (instance, _) = try VulkanContext.createInstance(&fn, validation: false, log: nil)
        defer { fn.vkDestroyInstance(instance, nil) }
        return try VulkanContext.physicalDevices(&fn, instance).enumerated().map { i, pd in
            VulkanDeviceDetails.query(&fn, instance, pd, info: VulkanDeviceInfo.query(&fn, pd, index: i))
        }
    }
}

extension VulkanDeviceDetails {
    static func query(_ fn: inout LumenVkFunctions, _ instance: VkInstance, _ pd: VkPhysicalDevice,
                      info: VulkanDeviceInfo) -> VulkanDeviceDetails {
        var count: UInt32 = 0
        _ = fn.vkEnumerateDeviceExtensionProperties(pd, nil, &count, nil)
        var exts = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
        _ = fn.vkEnumerateDeviceExtensionProperties(pd, nil, &count, &exts)
        let extensions = exts.prefix(Int(count)).map { cString($0.extensionName) }.sorted()

        var props = VkPhysicalDeviceProperties()
        fn.vkGetPhysicalDeviceProperties(pd, &props)
        let l = props.limits
        func triple(_ t: (UInt32, UInt32, UInt32)) -> String { "\(t.0) x \(t.1) x \(t.2)" }
        var limits: [Limit] = [
            Limit(name: "maxComputeWorkGroupInvocations", value: "\(l.maxComputeWorkGroupInvocations)"),
            Limit(name: "maxComputeWorkGroupSize", value: triple(l.maxComputeWorkGroupSize)),
            Limit(name: "maxComputeWorkGroupCount", value: triple(l.maxComputeWorkGroupCount)),
            Limit(name: "maxComputeSharedMemorySize", value: "\(l.maxComputeSharedMemorySize)"),
            Limit(name: "maxStorageBufferRange", value: "\(l.maxStorageBufferRange)"),
            Limit(name: "maxPushConstantsSize", value: "\(l.maxPushConstantsSize)"),
            Limit(name: "maxBoundDescriptorSets", value: "\(l.maxBoundDescriptorSets)"),
            Limit(name: "maxPerStageDescriptorStorageBuffers", value: "\(l.maxPerStageDescriptorStorageBuffers)"),
            Limit(name: "minStorageBufferOffsetAlignment", value: "\(l.minStorageBufferOffsetAlignment)"),
            Limit(name: "maxMemoryAllocationCount", value: "\(l.maxMemoryAllocationCount)"),
            Limit(name: "timestampPeriod", value: "\(l.timestampPeriod)"),
            Limit(name: "driverVersion", value: "\(info.driverVersion) (0x\(String(info.driverVersion, radix: 16)))"),
            Limit(name: "deviceLocalBytes", value: "\(info.deviceLocalBytes)"),
        ]

        // VkPhysicalDeviceMaintenance3Properties (core 1.1): the largest single allocation.
        var maint3 = VkPhysicalDeviceMaintenance3Properties()
        maint3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES
        var sizeControl = VkPhysicalDeviceSubgroupSizeControlProperties()
        sizeControl.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES
        let hasSizeControl = extensions.contains("VK_EXT_subgroup_size_control") || props.apiVersion >= vkVersion(1, 3)
        var props2 = VkPhysicalDeviceProperties2()
        props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
        withUnsafeMutablePointer(to: &sizeControl) { sc in
            withUnsafeMutablePointer(to: &maint3) { m3 in
                if hasSizeControl { m3.pointee.pNext = UnsafeMutableRawPointer(sc) }
                props2.pNext = UnsafeMutableRawPointer(m3)
                fn.vkGetPhysicalDeviceProperties2(pd, &props2)
            }
        }
        limits.append(Limit(name: "maxMemoryAllocationSize", value: "\(maint3.maxMemoryAllocationSize)"))
        let range: ClosedRange<Int>? = hasSizeControl && sizeControl.minSubgroupSize > 0
            && sizeControl.minSubgroupSize <= sizeControl.maxSubgroupSize
            ? Int(sizeControl.minSubgroupSize)...Int(sizeControl.maxSubgroupSize) : nil
        if hasSizeControl {
            limits.append(Limit(name: "maxComputeWorkgroupSubgroups", value: "\(sizeControl.maxComputeWorkgroupSubgroups)"))
        }

        let khr = extensions.contains("VK_KHR_cooperative_matrix")
            ? cooperativeMatrixShapes(&fn, instance, pd, function: "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR",
                                      sType: 1_000_506_001, khr: true) : []
        let nv = extensions.contains("VK_NV_cooperative_matrix")
            ? cooperativeMatrixShapes(&fn, instance, pd, function: "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV",
                                      sType: 1_000_249_001, khr: false) : []
        return VulkanDeviceDetails(info: info, extensions: extensions, limits: limits, subgroupSizeRange: range,
                                   cooperativeMatrixKHR: khr, cooperativeMatrixNV: nv)
    }

    /// Reads the cooperative-matrix properties through raw memory: the Vulkan headers this builds
    /// against (1.3.239) predate VK_KHR_cooperative_matrix. Both structs are `sType, pNext`
    /// followed by 32-bit fields: KHR has M, N, K, A, B, C, Result, saturatingAccumulation, scope
    /// (56 bytes); NV has M, N, K, A, B, C, D, scope (48 bytes).
    static func cooperativeMatrixShapes(_ fn: inout LumenVkFunctions, _ instance: VkInstance, _ pd: VkPhysicalDevice,
                                        function: String, sType: UInt32, khr: Bool) -> [CooperativeMatrixShape] {
        typealias Query = @convention(c) (VkPhysicalDevice?, UnsafeMutablePointer<UInt32>?, UnsafeMutableRawPointer?) -> VkResult
        guard let raw = function.withCString({ fn.vkGetInstanceProcAddr(instance, $0) }) else { return [] }
        let query = unsafeBitCast(raw, to: Query.self)
        var count: UInt32 = 0
        guard query(pd, &count, nil) == VK_SUCCESS, count > 0, count < 4096 else { return [] }
        let stride = khr ? 56 : 48
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: stride * Int(count), alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: stride * Int(count))
        for i in 0..<Int(count) { buffer.storeBytes(of: sType, toByteOffset: i * stride, as: UInt32.self) }
        let result = query(pd, &count, buffer)
        guard result == VK_SUCCESS || result == VK_INCOMPLETE else { return [] }
        return (0..<Int(count)).map { i in
            let u = { (field: Int) in buffer.load(fromByteOffset: i * stride + 16 + 4 * field, as: UInt32.self) }
            return CooperativeMatrixShape(
                m: Int(u(0)), n: Int(u(1)), k: Int(u(2)),
                a: componentType(u(3)), b: componentType(u(4)), c: componentType(u(5)), result: componentType(u(6)),
                saturatingAccumulation: khr && u(7) != 0, scope: scopeName(u(khr ? 8 : 7)))
        }
    }

    static func componentType(_ v: UInt32) -> String {
        switch v {
        case 0: return "f16"
        case 1: return "f32"
        case 2: return "f64"
        case 3: return "s8"
        case 4: return "s16"
        case 5: return "s32"
        case 6: return "s64"
        case 7: return "u8"
        case 8: return "u16"
        case 9: return "u32"
        case 10: return "u64"
        case 1_000_141_000: return "bf16"
        case 1_000_491_000: return "s8-packed"
        case 1_000_491_001: return "u8-packed"
        case 1_000_491_002: return "e4m3"
        case 1_000_491_003: return "e5m2"
        default: return "type\(v)"
        }
    }

    static func scopeName(_ v: UInt32) -> String {
        switch v {
        case 1: return "device"
        case 2: return "workgroup"
        case 3: return "subgroup"
        case 5: return "queue-family"
        default: return "scope\(v)"
        }
    }
}
