/// Errors reading model files. Each names the file, and the tensor where there is one.
public enum ModelFileError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    /// The file is not a well-formed safetensors (or config) file.
    case malformed(path: String, detail: String)
    case unsupportedDType(path: String, tensor: String, dtype: String, expected: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: Shape, got: Shape)
    /// A file a model folder must have is absent.
    case missingFile(path: String, detail: String)
    /// The files are readable but hold something Lumen cannot run (pickle, another family, …).
    case unsupported(path: String, detail: String)
    /// A config field holds a value outside the range the model can be built with.
    case invalidValue(path: String, field: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason): return "\(path): cannot open: \(reason)"
        case .malformed(let path, let detail): return "\(path): not a valid file: \(detail)"
        case .unsupportedDType(let path, let tensor, let dtype, let expected):
            return "\(path): tensor '\(tensor)' has dtype \(dtype); expected \(expected)"
        case .missingTensor(let path, let tensor): return "\(path): tensor '\(tensor)' is missing"
        case .wrongShape(let path, let tensor, let expected, let got):
            return "\(path): tensor '\(tensor)' has shape [\(got)]; the model's config expects [\(expected)]"
        case .missingFile(let path, let detail): return "\(path): \(detail)"
        case .unsupported(let path, let detail): return "\(path): \(detail)"
        case .invalidValue(let path, let field, let value, let expected):
            return "\(path): field \(field): \(value); expected \(expected)"
        }
    }
}
