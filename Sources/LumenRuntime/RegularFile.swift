import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opening files for reading without ever blocking: a FIFO, socket, device or folder given where
/// a file is expected is refused with a typed error instead of an `open(2)` or `read(2)` that
/// waits forever for a writer.
public enum RegularFile {
    /// Opens `path` read-only and returns the descriptor (the caller closes it). The path is
    /// checked with stat(2) first (so opening a device has no side effect), then opened with
    /// O_NONBLOCK (so a FIFO swapped in meanwhile cannot block) and checked again with fstat(2) on
    /// the descriptor itself; O_NONBLOCK is cleared before returning.
    public static func openForReading(_ path: String) throws -> Int32 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw FileError.cannotRead(path: path, reason: errnoString()) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileError.notRegularFile(path: path, kind: kind(st.st_mode)) }
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileError.cannotRead(path: path, reason: errnoString()) }
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            let error = FileError.notRegularFile(path: path, kind: kind(st.st_mode))
            close(fd)
            throw error
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }

    /// The whole file, refused when larger than `limit` bytes.
    public static func read(_ path: String, limit: Int = 1 << 30) throws -> Data {
        let fd = try openForReading(path)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError.cannotRead(path: path, reason: errnoString()) }
        guard Int(st.st_size) <= limit else { throw FileError.tooLarge(path: path, bytes: Int(st.st_size), limit: limit) }
        var data = Data(capacity: Int(st.st_size))
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError.cannotRead(path: path, reason: errnoString())
            }
            if n == 0 { return data }
            guard data.count + n <= limit else { throw FileError.tooLarge(path: path, bytes: data.count + n, limit: limit) }
            data.append(contentsOf: chunk[0..<n])
        }
    }

    /// Throws when `path` exists and is not a regular file (a symbolic link to one is fine); a
    /// missing path passes, for callers that report absence their own way.
    public static func checkIfPresent(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FileError.notRegularFile(path: path, kind: kind(st.st_mode)) }
    }

    /// "a FIFO", "a folder", … for a stat mode.
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFDIR: return "a folder"
        case S_IFLNK: return "a symbolic link"
        case S_IFREG: return "a regular file"
        default: return "not a file"
        }
    }
}

func errnoString(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
