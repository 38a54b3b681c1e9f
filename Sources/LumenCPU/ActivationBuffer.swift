#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LumenRuntime

/// One 64-byte aligned activation buffer of a compiled program; several values whose lifetimes
/// do not overlap share it.
final class ActivationBuffer {
    let bytes: UnsafeMutableRawPointer
    let capacity: Int

    init(capacity: Int) throws {
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 64, max(capacity, 64)) == 0, let p else {
            throw LumenError.outOfMemory(bytes: capacity, detail: "CPU activation buffer")
        }
        bytes = p
        self.capacity = capacity
    }

    deinit { free(bytes) }
}

/// Assigns activation buffers to values by lifetime: a value takes the smallest free buffer that
/// holds it (or, when none does, the largest free one, enlarged), and gives it back after its
/// last use. Buffers are allocated only after planning, so enlarging costs nothing.
struct BufferPlanner {
    private(set) var capacities: [Int] = []
    private var free: [Int] = []

    mutating func acquire(bytes: Int) -> Int {
        var best: Int? = nil
        for (slot, b) in free.enumerated() where capacities[b] >= bytes {
            if best == nil || capacities[b] < capacities[free[best!]] { best = slot }
        }
        if let best { return free.remove(at: best) }
        if let largest = free.indices.max(by: { capacities[free[$0]] < capacities[free[$1]] }) {
            let b = free.remove(at: largest)
            capacities[b] = bytes
            return b
        }
        capacities.append(bytes)
        return capacities.count - 1
    }

    mutating func release(_ buffer: Int) { free.append(buffer) }
}
