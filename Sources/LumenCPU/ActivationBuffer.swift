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
