import CVulkan
import Foundation
import LumenRuntime

/// Setting a compiled program up on the device (weight upload, descriptor sets, the recorded
/// command buffer) and running it.
extension VulkanProgram {
    // MARK: - Setup

    /// Copies every pending constant to its device range through a host-visible staging block
    /// of at most 32 MiB, converting tensors to their device type piece by piece.
    func uploadConstants() throws {
        func size(_ u: Upload) -> Int {
            switch u {
            case .bytes(let b): return b.count
            case .tensor(let t, let target): return t.count * target.size
            }
        }
        let total = pendingUploads.reduce(0) { $0 + size($1.upload) }
        guard total > 0 else { return }
        // LUMEN_VULKAN_UPLOAD_CHUNK (bytes) shrinks the staging block, for testing the pieces.
        let limit = ProcessInfo.processInfo.environment["LUMEN_VULKAN_UPLOAD_CHUNK"].flatMap { Int($0) }.map { max(16, $0 / 4 * 4) }
        let chunk = min(alignUp(total, 4), limit ?? 32 << 20)
        let block = try MemoryBlock(context, size: chunk, hostVisible: true, purpose: "weight upload staging")
        let cmd = try context.allocateCommandBuffer()
        defer { context.freeCommandBuffer(cmd) }
        let fence = try context.makeFence()
        defer { context.fn.vkDestroyFence(context.device, fence, nil) }
        var regions: [(VkBufferCopy, VkBuffer)] = []
        var used = 0
        func flush() throws {
            guard !regions.isEmpty else { return }
            var begin = VkCommandBufferBeginInfo()
            begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
            begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue
            try vkCheck(context.fn.vkBeginCommandBuffer(cmd, &begin), "vkBeginCommandBuffer")
            for (region, target) in regions {
                var r = region
                context.fn.vkCmdCopyBuffer(cmd, block.buffer, target, 1, &r)
            }
            try vkCheck(context.fn.vkEndCommandBuffer(cmd), "vkEndCommandBuffer")
            try context.submitAndWait(cmd, fence: fence)
            regions.removeAll()
            used = 0
        }
        /// Stages `count` units of `unit` bytes (at most what fits), returning how many it took.
        func stage(unit: Int, count: Int, dstOffset: Int, target: VkBuffer,
                   write: (UnsafeMutableRawPointer, Int) -> Void) throws -> Int {
            if (chunk - used) / unit == 0 { try flush() }
            let n = min(count, (chunk - used) / unit)
            write(block.mapped! + used, n)
            regions.append((VkBufferCopy(srcOffset: UInt64(used), dstOffset: UInt64(dstOffset), size: UInt64(n * unit)), target))
            used = min(chunk, alignUp(used + n * unit, 4))
            return n
        }
        for (upload, range) in pendingUploads {
            switch upload {
            case .bytes(let data):
                var done = 0
                while done < data.count {
                    let start = done
                    done += try stage(unit: 1, count: data.count - start, dstOffset: range.offset + start, target: range.buffer) { dst, n in
                        data.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress! + start, byteCount: n) }
                    }
                }
            case .tensor(let t, let target):
                var done = 0
                while done < t.count {
                    let start = done
                    done += try stage(unit: target.size, count: t.count - start, dstOffset: range.offset + start * target.size,
                                      target: range.buffer) { dst, n in
                        convertElements(t, from: start, count: n, to: target, into: dst)
                    }
                }
            }
        }
        try flush()
        pendingUploads = []
    }

    func buildDescriptorSets() throws {
        let fn = context.fn, device = context.device
        let total = dispatches.reduce(0) { $0 + $1.bindings.count }
        guard !dispatches.isEmpty else { return }
        var size = VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount: UInt32(max(total, 1)))
        var pci = VkDescriptorPoolCreateInfo()
        pci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
        pci.maxSets = UInt32(dispatches.count)
        pci.poolSizeCount = 1
        var pool: VkDescriptorPool?
        try withUnsafePointer(to: &size) { sp in
            pci.pPoolSizes = sp
            try vkCheck(fn.vkCreateDescriptorPool(device, &pci, nil, &pool), "vkCreateDescriptorPool")
        }
        descriptorPool = pool
        var layouts: [VkDescriptorSetLayout?] = dispatches.map { $0.setLayout }
        var sets = [VkDescriptorSet?](repeating: nil, count: dispatches.count)
        try layouts.withUnsafeMutableBufferPointer { lp in
            var ai = VkDescriptorSetAllocateInfo()
            ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
            ai.descriptorPool = pool
            ai.descriptorSetCount = UInt32(lp.count)
            ai.pSetLayouts = UnsafePointer(lp.baseAddress)
            try vkCheck(fn.vkAllocateDescriptorSets(device, &ai, &sets), "vkAllocateDescriptorSets")
        }
        descriptorSets = sets.map { $0! }
        var infos: [VkDescriptorBufferInfo] = []
        for d in dispatches {
            for b in d.bindings {
                infos.append(VkDescriptorBufferInfo(buffer: b.range.buffer, offset: UInt64(b.range.offset), range: UInt64(b.range.size)))
            }
        }
        infos.withUnsafeBufferPointer { ip in
            var writes: [VkWriteDescriptorSet] = []
            var k = 0
            for (i, d) in dispatches.enumerated() {
                for j in 0..<d.bindings.count {
                    var w = VkWriteDescriptorSet()
                    w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                    w.dstSet = descriptorSets[i]
                    w.dstBinding = UInt32(j)
                    w.descriptorCount = 1
                    w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                    w.pBufferInfo = ip.baseAddress! + k
                    writes.append(w)
                    k += 1
                }
            }
            fn.vkUpdateDescriptorSets(device, UInt32(writes.count), writes, 0, nil)
        }
    }

    func memoryBarrier(_ cmd: VkCommandBuffer, from srcStage: UInt32, _ srcAccess: UInt32,
                               to dstStage: UInt32, _ dstAccess: UInt32) {
        var b = VkMemoryBarrier()
        b.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        b.srcAccessMask = srcAccess
        b.dstAccessMask = dstAccess
        context.fn.vkCmdPipelineBarrier(cmd, srcStage, dstStage, 0, 1, &b, 0, nil, 0, nil)
    }

    /// Records the program once: (poison), input copies, every dispatch with the barriers its
    /// hazards need, output copies.
    func record() throws {
        let fn = context.fn
        let cmd = try context.allocateCommandBuffer()
        commandBuffer = cmd
        fence = try context.makeFence()
        let profiling = options.profile && context.timestampValidBits > 0
        if profiling {
            queryCount = dispatches.count + 1
            var qi = VkQueryPoolCreateInfo()
            qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
            qi.queryType = VK_QUERY_TYPE_TIMESTAMP
            qi.queryCount = UInt32(queryCount)
            var qp: VkQueryPool?
            try vkCheck(fn.vkCreateQueryPool(context.device, &qi, nil, &qp), "vkCreateQueryPool")
            queryPool = qp
        }
        let transfer = VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue, compute = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue
        let shaderRW = VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
        let transferW = VK_ACCESS_TRANSFER_WRITE_BIT.rawValue, transferR = VK_ACCESS_TRANSFER_READ_BIT.rawValue

        var begin = VkCommandBufferBeginInfo()
        begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        try vkCheck(fn.vkBeginCommandBuffer(cmd, &begin), "vkBeginCommandBuffer")
        if let queryPool { fn.vkCmdResetQueryPool(cmd, queryPool, 0, UInt32(queryCount)) }
        if options.poisonActivations {
            // NaN in the activation type (two f16 NaNs per word with f16 activations).
            let nan: UInt32 = act16 ? 0x7E00_7E00 : 0x7FC0_0000
            for r in slotRanges { fn.vkCmdFillBuffer(cmd, r.buffer, UInt64(r.offset), UInt64(r.size), nan) }
            memoryBarrier(cmd, from: transfer, transferW, to: transfer, transferW)
        }
        for c in inputCopies where c.bytes > 0 {
            var region = VkBufferCopy(srcOffset: UInt64(c.staging), dstOffset: UInt64(c.ref.range.offset), size: UInt64(c.bytes))
            fn.vkCmdCopyBuffer(cmd, staging!.buffer, c.ref.range.buffer, 1, &region)
        }
        memoryBarrier(cmd, from: transfer, transferW, to: compute, shaderRW)
        if let queryPool { fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, queryPool, 0) }

        // Hazards by slot since the last barrier: a read after a write (RAW) or a write after a
        // read or write (WAR/WAW, as slots are reused) needs a barrier; independent dispatches
        // run without one.
        var written = Set<Int>(), read = Set<Int>()
        for (i, d) in dispatches.enumerated() {
            let reads = Set(d.bindings.map(\.slot)).subtracting(d.writes).subtracting([-1])
            if profiling || !reads.isDisjoint(with: written) || !d.writes.isDisjoint(with: written)
                || !d.writes.isDisjoint(with: read)
            {
                memoryBarrier(cmd, from: compute, shaderRW, to: compute, shaderRW)
                written.removeAll()
                read.removeAll()
            }
            written.formUnion(d.writes)
            read.formUnion(reads)
            fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d.pipeline)
            var set: VkDescriptorSet? = descriptorSets[i]
            fn.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d.layout, 0, 1, &set, 0, nil)
            if !d.push.isEmpty {
                d.push.withUnsafeBytes { p in
                    fn.vkCmdPushConstants(cmd, d.layout, VK_SHADER_STAGE_COMPUTE_BIT.rawValue, 0, UInt32(p.count), p.baseAddress)
                }
            }
            fn.vkCmdDispatch(cmd, d.groups.0, d.groups.1, d.groups.2)
            if let queryPool { fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, queryPool, UInt32(i + 1)) }
        }
        memoryBarrier(cmd, from: compute | transfer, shaderRW | transferW, to: transfer, transferR)
        for c in outputCopies {
            var region = VkBufferCopy(srcOffset: UInt64(c.ref.range.offset), dstOffset: UInt64(c.staging),
                                      size: UInt64(outputValues[c.index].shape.count * storageType(outputValues[c.index].id).size))
            if region.size > 0 { fn.vkCmdCopyBuffer(cmd, c.ref.range.buffer, staging!.buffer, 1, &region) }
        }
        memoryBarrier(cmd, from: transfer, transferW, to: VK_PIPELINE_STAGE_HOST_BIT.rawValue, VK_ACCESS_HOST_READ_BIT.rawValue)
        try vkCheck(fn.vkEndCommandBuffer(cmd), "vkEndCommandBuffer")
    }

    // MARK: - Run

    public func run(_ given: [String: Tensor]) throws -> ProgramOutputs {
        lock.lock()
        defer { lock.unlock() }
        for spec in inputs {
            guard let t = given[spec.name] else { throw LumenError.missingInput(name: spec.name) }
            guard t.shape == spec.shape, t.dtype == spec.dtype else {
                throw LumenError.inputMismatch(
                    name: spec.name, expected: "\(spec.dtype)[\(spec.shape)]", got: "\(t.dtype)[\(t.shape)]")
            }
        }
        for (name, vocab) in idChecks {
            for (i, id) in given[name]!.toInts().enumerated() where id < 0 || id >= vocab {
                throw LumenError.invalidArgument(
                    op: "embedding", detail: "id \(id) at position \(i) of input '\(name)' is outside the table of \(vocab) rows")
            }
        }
        let base = staging!.mapped!
        for c in inputCopies {
            let t = given[c.name]!
            if storageType(c.node) == .f16 {
                let dst = (base + c.staging).assumingMemoryBound(to: UInt16.self)
                t.withUnsafeBytes { raw in
                    let src = raw.bindMemory(to: Float.self)
                    for i in 0..<src.count { dst[i] = HalfConversion.floatToHalf(src[i]) }
                }
            } else {
                t.withUnsafeBytes { (base + c.staging).copyMemory(from: $0.baseAddress!, byteCount: c.bytes) }
            }
        }
        try context.submitAndWait(commandBuffer!, fence: fence!)
        if queryPool != nil { try readProfile() }

        var results: [Tensor] = []
        var copyAt: [Int: Int] = [:]
        for c in outputCopies { copyAt[c.index] = c.staging }
        for (i, v) in outputValues.enumerated() {
            if let t = hostOutputs[i] { results.append(t); continue }
            var out = try Tensor(zeros: v.shape, dtype: v.dtype)
            let src = base + copyAt[i]!
            if storageType(v.id) == .f16 && v.dtype == .f32 {
                let halves = UnsafePointer(src.assumingMemoryBound(to: UInt16.self))
                try out.withUnsafeMutableBytes { raw in
                    let dst = raw.bindMemory(to: Float.self)
                    for j in 0..<dst.count { dst[j] = HalfConversion.halfToFloat(halves[j]) }
                }
            } else {
                try out.withUnsafeMutableBytes { if $0.count > 0 { $0.baseAddress!.copyMemory(from: src, byteCount: $0.count) } }
            }
            results.append(out)
        }
        return ProgramOutputs(values: outputValues, tensors: results)
    }

    func readProfile() throws {
        var stamps = [UInt64](repeating: 0, count: queryCount)
        let flags = VK_QUERY_RESULT_64_BIT.rawValue | VK_QUERY_RESULT_WAIT_BIT.rawValue
        try stamps.withUnsafeMutableBytes { p in
            try vkCheck(context.fn.vkGetQueryPoolResults(context.device, queryPool, 0, UInt32(queryCount), p.count,
                                                        p.baseAddress, 8, flags), "vkGetQueryPoolResults")
        }
        let bits = context.timestampValidBits
        let mask: UInt64 = bits >= 64 ? UInt64.max : (UInt64(1) << UInt64(bits)) - 1
        let period = Double(context.limits.timestampPeriod) * 1e-9
        lastProfile = dispatches.indices.map { i in
            (dispatches[i].op, Double((stamps[i + 1] &- stamps[i]) & mask) * period)
        }
        lastGPUSeconds = Double((stamps[queryCount - 1] &- stamps[0]) & mask) * period
        if options.printProfile { printProfile() }
    }

    /// The last run's GPU time per op (summed over dispatches), slowest first, to stderr.
    public func printProfile() {
        var total: [String: (Double, Int)] = [:]
        for (op, s) in lastProfile { total[op, default: (0, 0)].0 += s; total[op, default: (0, 0)].1 += 1 }
        var text = "vulkan profile (\(context.info.name), GPU timestamps):\n"
        text += "op                      dispatches    time (ms)\n"
        for (op, (s, n)) in total.sorted(by: { $0.value.0 > $1.value.0 }) {
            text += op.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "%10d %12.3f\n", n, s * 1000)
        }
        text += String(format: "total (first dispatch to last)     %12.3f\n", (lastGPUSeconds ?? 0) * 1000)
        FileHandle.standardError.write(Data(text.utf8))
    }
}
