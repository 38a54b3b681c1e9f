import CLumenFiles
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing a file so that it is never seen half-written, never clobbers anything through a planted
/// link and leaves nothing behind when the process is stopped: the bytes go to a new temporary file
/// beside the target, created exclusively under a random name (O_CREAT | O_EXCL | O_NOFOLLOW, as
/// mkstemp, mode 0644 less the umask), registered for removal by the CLI's signal handlers, synced
/// and renamed over the target. rename(2) replaces a link at the target itself, never what it
/// points to.
public enum AtomicFile {
    /// A temporary file being written; `commit` renames it into place, `discard` removes it.
    public struct Temporary {
        public let path: String
        public let fd: Int32
        fileprivate let slot: Int32
    }

    /// Creates `.NAME.RANDOM.tmp` in the folder of `path`.
    public static func createTemporary(for path: String) throws -> Temporary {
        let folder = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        for _ in 0..<100 {
            var rng = SystemRandomNumberGenerator()
            let random = String((0..<12).map { _ in alphabet.randomElement(using: &rng)! })
            let tmp = (folder.isEmpty ? "" : folder + "/") + ".\(name).\(random).tmp"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            if fd >= 0 { return Temporary(path: tmp, fd: fd, slot: lumen_tmp_register(tmp)) }
            if errno != EEXIST { throw FileError.cannotWrite(path: path, reason: "cannot create a file in \(folder.isEmpty ? "." : folder): \(errnoString())") }
        }
        throw FileError.cannotWrite(path: path, reason: "no free temporary name in \(folder.isEmpty ? "." : folder)")
    }

    /// Syncs, closes and renames the temporary over `path`.
    public static func commit(_ tmp: Temporary, to path: String) throws {
        defer { lumen_tmp_unregister(tmp.slot) }
        let synced = fsync(tmp.fd) == 0 ? nil : errnoString()
        let closed = close(tmp.fd) == 0 ? nil : errnoString()
        if let reason = synced ?? closed {
            unlink(tmp.path)
            throw FileError.cannotWrite(path: path, reason: reason)
        }
        guard rename(tmp.path, path) == 0 else {
            let reason = errnoString()
            unlink(tmp.path)
            throw FileError.cannotWrite(path: path, reason: reason)
        }
    }

    /// Closes and removes the temporary (after a failed write).
    public static func discard(_ tmp: Temporary) {
        close(tmp.fd)
        unlink(tmp.path)
        lumen_tmp_unregister(tmp.slot)
    }

    /// Writes `data` to `path` atomically.
    public static func write(_ data: Data, to path: String) throws {
        let tmp = try createTemporary(for: path)
        var failure: String?
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(tmp.fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errnoString()
                    return
                }
                offset += n
            }
        }
        if let failure {
            discard(tmp)
            throw FileError.cannotWrite(path: path, reason: failure)
        }
        try commit(tmp, to: path)
    }

    /// Checks before any work that `path` can be written: its folder exists, is a folder and
    /// accepts a new file (probed by creating and removing a temporary, which also catches a
    /// read-only file system and permissions that access(2) would misjudge), and `path` itself
    /// is not a folder or another non-regular file.
    public static func checkWritable(_ path: String) throws {
        let folder = (path as NSString).deletingLastPathComponent
        let shown = folder.isEmpty ? "." : folder
        var st = stat()
        guard stat(shown, &st) == 0 else {
            throw FileError.cannotWrite(path: path, reason: "the folder \(shown) does not exist (\(errnoString()))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw FileError.cannotWrite(path: path, reason: "\(shown) is \(RegularFile.kind(st.st_mode)), not a folder")
        }
        if lstat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG, (st.st_mode & S_IFMT) != S_IFLNK {
            throw FileError.cannotWrite(path: path, reason: "it is \(RegularFile.kind(st.st_mode)), not a file")
        }
        let probe = try createTemporary(for: path)
        discard(probe)
    }

    /// Installs the SIGINT, SIGTERM and SIGHUP handlers that remove the temporaries in flight
    /// before the process dies of the signal (for command-line tools; a library leaves signals
    /// to its host).
    public static func removeTemporariesOnSignals() {
        _ = lumen_tmp_install_signal_handlers()
    }
}
