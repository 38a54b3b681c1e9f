import CVulkan
import Foundation
import LumenRuntime

/// Throws a typed error when a Vulkan call fails; memory exhaustion becomes `outOfMemory`.
func vkCheck(_ result: VkResult, _ what: @autoclosure () -> String, bytes: Int = 0) throws {
    if result == VK_SUCCESS { return }
    if result == VK_ERROR_OUT_OF_DEVICE_MEMORY || result == VK_ERROR_OUT_OF_HOST_MEMORY {
        throw LumenError.outOfMemory(bytes: bytes, detail: "Vulkan: \(what()) (\(vkResultName(result)))")
    }
    throw LumenError.backendUnavailable(backend: "vulkan", reason: "\(what()) failed: \(vkResultName(result))")
}

func vkResultName(_ r: VkResult) -> String {
    switch r {
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY"
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED"
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST"
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT"
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT"
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT"
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER"
    case VK_TIMEOUT: return "VK_TIMEOUT"
    default: return "VkResult \(r.rawValue)"
    }
}

func vkVersion(_ major: UInt32, _ minor: UInt32, _ patch: UInt32 = 0) -> UInt32 {
    (major << 22) | (minor << 12) | patch
}

func vkVersionString(_ v: UInt32) -> String { "\(v >> 22 & 0x7F).\(v >> 12 & 0x3FF).\(v & 0xFFF)" }

/// A fixed-size C char array (imported as a tuple) as a String.
func cString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let bytes = raw.prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// C strings that live as long as this object (for the name arrays Vulkan create-infos take).
final class CStringArray {
    let pointers: [UnsafePointer<CChar>?]
    init(_ strings: [String]) { pointers = strings.map { UnsafePointer(strdup($0)) } }
    deinit { for p in pointers { free(UnsafeMutablePointer(mutating: p)) } }
    var count: UInt32 { UInt32(pointers.count) }
}

func alignUp(_ x: Int, _ a: Int) -> Int { (x + a - 1) / a * a }
