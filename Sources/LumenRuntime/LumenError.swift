/// Errors of the tensor runtime and its executors. Each carries what a person needs to act:
/// which op, tensor or input, and what was expected.
public enum LumenError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An op was given operands whose shapes do not fit together.
    case shapeMismatch(op: String, detail: String)
    /// An op or executor was given a type it does not handle.
    case unsupportedDType(op: String, dtype: DType, expected: String)
    /// A parameter is out of range (a group count that does not divide the channels, …).
    case invalidArgument(op: String, detail: String)
    /// An input the program needs was not given, or has the wrong shape or type.
    case missingInput(name: String)
    case inputMismatch(name: String, expected: String, got: String)
    /// A requested output is not a value of the compiled graph.
    case unknownValue(id: Int, detail: String)
    /// A tensor's bytes do not match its shape and type.
    case invalidTensor(detail: String)
    /// The backend cannot run here (no device, not built in).
    case backendUnavailable(backend: String, reason: String)
    /// Memory for a buffer could not be obtained.
    case outOfMemory(bytes: Int, detail: String)

    public var description: String {
        switch self {
        case .shapeMismatch(let op, let detail): return "\(op): shape mismatch: \(detail)"
        case .unsupportedDType(let op, let dtype, let expected):
            return "\(op): unsupported dtype \(dtype); expected \(expected)"
        case .invalidArgument(let op, let detail): return "\(op): invalid argument: \(detail)"
        case .missingInput(let name): return "input '\(name)' was not given"
        case .inputMismatch(let name, let expected, let got):
            return "input '\(name)': expected \(expected), got \(got)"
        case .unknownValue(let id, let detail): return "value %\(id): \(detail)"
        case .invalidTensor(let detail): return "invalid tensor: \(detail)"
        case .backendUnavailable(let backend, let reason):
            return "backend \(backend) is unavailable: \(reason)"
        case .outOfMemory(let bytes, let detail):
            return "out of memory allocating \(bytes) bytes: \(detail)"
        }
    }
}
