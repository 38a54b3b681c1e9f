/// The storage type of a tensor's elements.
///
/// Activations are computed in `f32`; weights are usually held in `f16` (or `bf16`) and widened
/// where a kernel packs them. Integer types carry token ids and the buffers some checkpoints hold.
public enum DType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case f32
    case f16
    case bf16
    case i32
    case i64

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i64: return 8
        }
    }

    /// Whether the type holds real numbers (the types a weight can be stored in).
    public var isFloatingPoint: Bool {
        switch self {
        case .f32, .f16, .bf16: return true
        case .i32, .i64: return false
        }
    }

    public var description: String { rawValue }
}
