import Foundation

/// Writes tensors as a safetensors file (8-byte header length, JSON header, data), atomically:
/// the bytes go through `AtomicFile` (an exclusive temporary beside the target, renamed into place).
public enum SafetensorsWriter {
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, t) in tensors {
            let code: String
            switch t.dtype {
            case .f32: code = "F32"
            case .f16: code = "F16"
            case .bf16: code = "BF16"
            case .i32: code = "I32"
            case .i64: code = "I64"
            }
            header[name] = ["dtype": code, "shape": t.shape.dims, "data_offsets": [offset, offset + t.byteCount]] as [String: Any]
            offset += t.byteCount
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }  // pad with spaces so the data is aligned
        var file = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for (_, t) in tensors { t.withUnsafeBytes { file.append(contentsOf: $0) } }
        do { try AtomicFile.write(file, to: path) } catch let error as FileError {
            throw ModelFileError.cannotOpen(path: path, reason: "cannot write: \(error.reason)")
        }
    }
}
