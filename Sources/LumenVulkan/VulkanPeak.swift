import CVulkan
import Foundation
import LumenRuntime

/// A device's measured ceilings, for reporting kernels as a fraction of what the device can do.
public struct VulkanPeak: Sendable, Codable {
    /// f32 FMA rate of a register-only kernel (Shaders/peak.comp).
    public let gflops: Double
    /// Bandwidth of an elementwise kernel over a buffer far larger than any cache (read + write).
    public let gbps: Double
    /// The bytes one bandwidth run moved (read + written).
    public var bandwidthBytes: Int = 0
}

extension VulkanExecutor {
    /// Measures the f32 FMA peak and the memory bandwidth of this device with GPU timestamps
    /// (wall clock where the queue has none).
    /// `bandwidthBytes`: what one bandwidth run moves, read and written (each of the two buffers
    /// holds half, bounded by maxStorageBufferRange); 1 GiB and more is far beyond any GPU's caches.
    public func measurePeak(bandwidthBytes: Int = 64 << 20) throws -> VulkanPeak {
        let gflops = try context.measureFMA()
        // Bandwidth: y = 2x + 1.
        let count = min(bandwidthBytes / 2, device.maxStorageBufferRange) / 4
        let g = Graph()
        let x = try g.input("x", shape: [count])
        let y = try g.affine(x, multiplier: 2, addend: 1)
        var opts = options
        opts.profile = true
        opts.printProfile = false
        opts.poisonActivations = false
        opts.activations = .f32
        let program = try VulkanProgram(context: context, graph: g, outputs: [y], options: opts, f16Activations: false)
        let input = try Tensor(zeros: [count])
        var best = Double.infinity
        for _ in 0..<4 {
            let t0 = Date()
            _ = try program.run(["x": input])
            best = min(best, program.lastGPUSeconds ?? Date().timeIntervalSince(t0))
        }
        return VulkanPeak(gflops: gflops, gbps: Double(2 * count * 4) / best / 1e9, bandwidthBytes: 2 * count * 4)
    }
}

extension VulkanContext {
    /// GFLOP/s of the peak kernel, growing the work until a run takes at least 20 ms.
    func measureFMA() throws -> Double {
        let wg = 256, groups = 1024
        let out = try MemoryBlock(self, size: wg * groups * 4, hostVisible: false, purpose: "peak measurement")
        let pipeline = try self.pipeline("peak", specialization: [UInt32(wg)], bindings: 1)
        let (setLayout, layout) = try self.layout(bindings: 1)

        var size = VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount: 1)
        var pci = VkDescriptorPoolCreateInfo()
        pci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
        pci.maxSets = 1
        pci.poolSizeCount = 1
        var pool: VkDescriptorPool?
        try withUnsafePointer(to: &size) { sp in
            pci.pPoolSizes = sp
            try vkCheck(fn.vkCreateDescriptorPool(device, &pci, nil, &pool), "vkCreateDescriptorPool")
        }
        defer { fn.vkDestroyDescriptorPool(device, pool, nil) }
        var set: VkDescriptorSet?
        var sl: VkDescriptorSetLayout? = setLayout
        var ai = VkDescriptorSetAllocateInfo()
        ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
        ai.descriptorPool = pool
        ai.descriptorSetCount = 1
        try withUnsafePointer(to: &sl) { lp in
            ai.pSetLayouts = lp
            try vkCheck(fn.vkAllocateDescriptorSets(device, &ai, &set), "vkAllocateDescriptorSets")
        }
        var info = VkDescriptorBufferInfo(buffer: out.buffer, offset: 0, range: UInt64(out.size))
        withUnsafePointer(to: &info) { ip in
            var w = VkWriteDescriptorSet()
            w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
            w.dstSet = set
            w.dstBinding = 0
            w.descriptorCount = 1
            w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            w.pBufferInfo = ip
            fn.vkUpdateDescriptorSets(device, 1, &w, 0, nil)
        }

        let timestamps = timestampValidBits > 0
        var queryPool: VkQueryPool?
        if timestamps {
            var qi = VkQueryPoolCreateInfo()
            qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
            qi.queryType = VK_QUERY_TYPE_TIMESTAMP
            qi.queryCount = 2
            try vkCheck(fn.vkCreateQueryPool(device, &qi, nil, &queryPool), "vkCreateQueryPool")
        }
        defer { if let queryPool { fn.vkDestroyQueryPool(device, queryPool, nil) } }
        let cmd = try allocateCommandBuffer()
        defer { freeCommandBuffer(cmd) }
        let fence = try makeFence()
        defer { fn.vkDestroyFence(device, fence, nil) }

        var iters: UInt32 = 64
        var best = 0.0
        for _ in 0..<12 {
            var begin = VkCommandBufferBeginInfo()
            begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
            begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue
            try vkCheck(fn.vkBeginCommandBuffer(cmd, &begin), "vkBeginCommandBuffer")
            if let queryPool {
                fn.vkCmdResetQueryPool(cmd, queryPool, 0, 2)
                fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queryPool, 0)
            }
            fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline)
            fn.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, nil)
            var push: [UInt32] = [iters, Float(0.5).bitPattern]
            push.withUnsafeMutableBytes { p in
                fn.vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT.rawValue, 0, UInt32(p.count), p.baseAddress)
            }
            fn.vkCmdDispatch(cmd, UInt32(groups), 1, 1)
            if let queryPool { fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, queryPool, 1) }
            try vkCheck(fn.vkEndCommandBuffer(cmd), "vkEndCommandBuffer")
            let t0 = Date()
            try submitAndWait(cmd, fence: fence)
            var seconds = Date().timeIntervalSince(t0)
            if let queryPool {
                var stamps = [UInt64](repeating: 0, count: 2)
                try stamps.withUnsafeMutableBytes { p in
                    try vkCheck(fn.vkGetQueryPoolResults(device, queryPool, 0, 2, p.count, p.baseAddress, 8,
                                                         VK_QUERY_RESULT_64_BIT.rawValue | VK_QUERY_RESULT_WAIT_BIT.rawValue),
                                "vkGetQueryPoolResults")
                }
                let mask: UInt64 = timestampValidBits >= 64 ? .max : (1 << UInt64(timestampValidBits)) - 1
                seconds = Double((stamps[1] &- stamps[0]) & mask) * Double(limits.timestampPeriod) * 1e-9
            }
            let flops = Double(wg * groups) * Double(iters) * 64
            if seconds < 0.02 && iters < (1 << 24) {
                iters *= 4
                continue
            }
            best = max(best, flops / seconds / 1e9)
            if best > 0 && seconds >= 0.02 { break }
        }
        return best
    }
}
