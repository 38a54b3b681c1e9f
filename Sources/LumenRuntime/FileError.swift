/// Errors opening, reading or writing a file. Each names the path.
public enum FileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A FIFO, socket, device or folder where a file was expected: never opened for reading, as
    /// reading a FIFO or a terminal blocks until someone writes to it.
    case notRegularFile(path: String, kind: String)
    case cannotRead(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    /// The file is larger than the reader accepts.
    case tooLarge(path: String, bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .notRegularFile(let path, let kind): return "\(path): is \(kind), not a regular file"
        case .cannotRead(let path, let reason): return "\(path): cannot read: \(reason)"
        case .cannotWrite(let path, let reason): return "\(path): cannot write: \(reason)"
        case .tooLarge(let path, let bytes, let limit): return "\(path): \(bytes) bytes is larger than the \(limit) bytes allowed"
        }
    }

    /// The message without the path (for errors of other types that name the path themselves).
    public var reason: String {
        switch self {
        case .notRegularFile(_, let kind): return "is \(kind), not a regular file"
        case .cannotRead(_, let reason), .cannotWrite(_, let reason): return reason
        case .tooLarge(_, let bytes, let limit): return "\(bytes) bytes is larger than the \(limit) bytes allowed"
        }
    }
}
