import CVulkan
import Foundation

/// A message the Khronos validation layer (or the driver) sent through VK_EXT_debug_utils.
public struct VulkanValidationMessage: Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable { case warning, error }
    public let severity: Severity
    /// "validation", "performance" or "general".
    public let kind: String
    public let message: String
    public var description: String { "[\(severity.rawValue)/\(kind)] \(message)" }
}

/// Every warning and error the debug messenger reported, in order.
final class ValidationLog: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [VulkanValidationMessage] = []

    func append(_ m: VulkanValidationMessage) {
        lock.lock()
        messages.append(m)
        lock.unlock()
        if ProcessInfo.processInfo.environment["LUMEN_VULKAN_VALIDATION_ECHO"] == "1" {
            FileHandle.standardError.write(Data("vulkan: \(m)\n".utf8))
        }
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return messages.count
    }

    func since(_ start: Int) -> [VulkanValidationMessage] {
        lock.lock()
        defer { lock.unlock() }
        return Array(messages[min(start, messages.count)...])
    }
}

/// The messenger callback: records warnings and errors into the ValidationLog passed as user data.
let debugMessengerCallback: PFN_vkDebugUtilsMessengerCallbackEXT = { severity, types, data, user in
    guard let user, let data else { return 0 }
    let log = Unmanaged<ValidationLog>.fromOpaque(user).takeUnretainedValue()
    let sev: VulkanValidationMessage.Severity =
        severity.rawValue & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue != 0 ? .error : .warning
    let kind: String
    if types & VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue != 0 {
        kind = "validation"
    } else if types & VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue != 0 {
        kind = "performance"
    } else {
        kind = "general"
    }
    let text = data.pointee.pMessage.map { String(cString: $0) } ?? "(no message)"
    log.append(VulkanValidationMessage(severity: sev, kind: kind, message: text))
    return 0
}
