#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes behind one or more tensors: 64-byte aligned memory the storage owns, or memory
/// owned elsewhere (a mapped file) kept alive by `owner`.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    private let owner: AnyObject?
    private let ownsBytes: Bool
    /// True for memory that must not be written (a read-only file mapping): writers copy first.
    public let isReadOnly: Bool

    /// Allocates `byteCount` zeroed bytes.
    public init(byteCount: Int) throws {
        var p: UnsafeMutableRawPointer? = nil
        let n = max(byteCount, 64)
        guard posix_memalign(&p, 64, n) == 0, let bytes = p else {
            throw LumenError.outOfMemory(bytes: byteCount, detail: "tensor storage")
        }
        memset(bytes, 0, n)
        self.bytes = bytes
        self.byteCount = byteCount
        self.owner = nil
        self.ownsBytes = true
        self.isReadOnly = false
    }

    /// Wraps memory owned by `owner` (for example a memory-mapped weight file).
    public init(borrowing bytes: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject, readOnly: Bool) {
        self.bytes = bytes
        self.byteCount = byteCount
        self.owner = owner
        self.ownsBytes = false
        self.isReadOnly = readOnly
    }

    deinit {
        if ownsBytes { free(bytes) }
    }
}
