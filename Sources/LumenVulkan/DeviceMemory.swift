import CVulkan
import LumenRuntime

/// One VkDeviceMemory with one VkBuffer over all of it; tensors are ranges of the buffer.
final class MemoryBlock {
    let context: VulkanContext
    let memory: VkDeviceMemory
    let buffer: VkBuffer
    let size: Int
    /// Host address of the block when it is host-visible and mapped.
    let mapped: UnsafeMutableRawPointer?

    init(_ context: VulkanContext, size: Int, hostVisible: Bool, purpose: String) throws {
        self.context = context
        self.size = size
        let device = context.device
        var bi = VkBufferCreateInfo()
        bi.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        bi.size = VkDeviceSize(size)
        bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue
            | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue
        bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        try vkCheck(context.fn.vkCreateBuffer(device, &bi, nil, &buffer), "vkCreateBuffer (\(size) bytes for \(purpose))", bytes: size)
        var req = VkMemoryRequirements()
        context.fn.vkGetBufferMemoryRequirements(device, buffer, &req)
        let hostFlags = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        let type = hostVisible
            ? context.memoryType(bits: req.memoryTypeBits, required: hostFlags, preferred: VK_MEMORY_PROPERTY_HOST_CACHED_BIT.rawValue)
            : context.memoryType(bits: req.memoryTypeBits, required: VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue)
                ?? context.memoryType(bits: req.memoryTypeBits, required: 0)
        guard let type else {
            context.fn.vkDestroyBuffer(device, buffer, nil)
            throw LumenError.outOfMemory(bytes: size, detail: "no suitable Vulkan memory type for \(purpose)")
        }
        var ai = VkMemoryAllocateInfo()
        ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        ai.allocationSize = req.size
        ai.memoryTypeIndex = type
        var memory: VkDeviceMemory?
        let r = context.fn.vkAllocateMemory(device, &ai, nil, &memory)
        if r != VK_SUCCESS {
            context.fn.vkDestroyBuffer(device, buffer, nil)
            throw LumenError.outOfMemory(
                bytes: size, detail: "Vulkan device memory for \(purpose) on \(context.info.name) (\(vkResultName(r)); "
                    + "device-local memory \(context.info.deviceLocalBytes >> 20) MiB)")
        }
        try vkCheck(context.fn.vkBindBufferMemory(device, buffer, memory, 0), "vkBindBufferMemory")
        var ptr: UnsafeMutableRawPointer?
        if hostVisible {
            try vkCheck(context.fn.vkMapMemory(device, memory, 0, UInt64.max, 0, &ptr), "vkMapMemory")
        }
        self.memory = memory!
        self.buffer = buffer!
        self.mapped = ptr
        allocated = Int(req.size)
        context.noteAllocation(allocated)
    }

    /// Bytes of device memory this block holds.
    private let allocated: Int

    deinit {
        if mapped != nil { context.fn.vkUnmapMemory(context.device, memory) }
        context.fn.vkDestroyBuffer(context.device, buffer, nil)
        context.fn.vkFreeMemory(context.device, memory, nil)
        context.noteAllocation(-allocated)
    }
}

/// A range of a memory block: what a descriptor binds and a copy reads or writes.
struct BufferRange {
    let block: MemoryBlock
    let offset: Int
    let size: Int
    var buffer: VkBuffer { block.buffer }
}

/// Sub-allocates a program's tensors from a few large blocks (bump allocation; a program frees
/// its memory all at once). A tensor larger than the block size gets a block of its own.
final class Arena {
    let context: VulkanContext
    let hostVisible: Bool
    let blockSize: Int
    let purpose: String
    private(set) var blocks: [MemoryBlock] = []
    private var cursor = 0
    private(set) var reservedBytes = 0

    init(_ context: VulkanContext, hostVisible: Bool, blockSize: Int = 64 << 20, purpose: String) {
        self.context = context
        self.hostVisible = hostVisible
        self.blockSize = blockSize
        self.purpose = purpose
    }

    func allocate(_ bytes: Int) throws -> BufferRange {
        let size = alignUp(max(bytes, 4), 4)
        let align = context.bindingAlignment
        if let last = blocks.last, alignUp(cursor, align) + size <= last.size {
            let offset = alignUp(cursor, align)
            cursor = offset + size
            return BufferRange(block: last, offset: offset, size: size)
        }
        let block = try MemoryBlock(context, size: max(blockSize, alignUp(size, align)), hostVisible: hostVisible, purpose: purpose)
        reservedBytes += block.size
        // A block of its own for a large tensor does not become the current block.
        if size > blockSize, let last = blocks.last {
            blocks.insert(block, at: blocks.count - 1)
            _ = last
        } else {
            blocks.append(block)
            cursor = size
        }
        return BufferRange(block: block, offset: 0, size: size)
    }
}
