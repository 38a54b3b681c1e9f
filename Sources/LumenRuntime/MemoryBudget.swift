import Foundation

/// How much memory an executor's programs may take (weights, activations and staging together),
/// and where the figure comes from, so that a pipeline can decide before any work whether a
/// request fits and what to tile.
public struct MemoryBudget: Sendable, Hashable, Codable, CustomStringConvertible {
    public var bytes: Int
    /// Bytes already in use against it when it was asked for (for host memory, this process's
    /// resident set: the process, its libraries and whatever it holds).
    public var inUse: Int
    /// Where the figure comes from ("LUMEN_MEMORY_BUDGET", "available RAM", a device's memory…).
    public var source: String

    public init(bytes: Int, inUse: Int = 0, source: String) {
        self.bytes = bytes
        self.inUse = inUse
        self.source = source
    }

    public var description: String { "\(MemoryBudget.format(bytes)) (\(source))" }

    /// `LUMEN_MEMORY_BUDGET` when set (bytes, or a number with K, M, G or T), else `fallback`.
    /// A value that does not parse is an error naming the variable.
    public static func fromEnvironment(or fallback: @autoclosure () -> MemoryBudget) throws -> MemoryBudget {
        guard let text = ProcessInfo.processInfo.environment["LUMEN_MEMORY_BUDGET"], !text.isEmpty else { return fallback() }
        guard let bytes = parse(text) else {
            throw LumenError.invalidArgument(op: "LUMEN_MEMORY_BUDGET",
                                             detail: "'\(text)' is not a size; expected bytes or a number with K, M, G or T (e.g. 6G)")
        }
        var budget = fallback()
        budget.bytes = bytes
        budget.source = "LUMEN_MEMORY_BUDGET"
        return budget
    }

    /// Bytes from "123", "512M", "6G", "1.5T" (binary units); nil for anything else or a size
    /// that is not positive.
    public static func parse(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
        var number = Substring(t), scale = 1.0
        if let last = t.last, let u = units[last] {
            number = t.dropLast()
            scale = u
        } else if t.hasSuffix("B"), let u = units[t.dropLast().last ?? " "] {
            number = t.dropLast(2)
            scale = u
        }
        guard let value = Double(number), value.isFinite, value > 0 else { return nil }
        let bytes = value * scale
        guard bytes < 9e18 else { return nil }
        return Int(bytes)
    }

    /// The memory this process may still grow into plus what it holds now: MemAvailable from
    /// /proc/meminfo (memory the kernel can give without swapping) + this process's resident set.
    public static func availableRAM() -> MemoryBudget {
        let available = ProcessMemory.meminfo("MemAvailable") ?? ProcessMemory.meminfo("MemTotal") ?? (8 << 30)
        let resident = ProcessMemory.residentBytes ?? 0
        return MemoryBudget(bytes: available + resident, inUse: resident,
                            source: "available RAM: MemAvailable \(format(available)) + this process's \(format(resident))")
    }

    public static func format(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b >= Double(1 << 30) { return String(format: "%.2f GiB", b / Double(1 << 30)) }
        if b >= Double(1 << 20) { return String(format: "%.1f MiB", b / Double(1 << 20)) }
        return String(format: "%.0f KiB", b / 1024)
    }
}

/// This process's memory as Linux reports it.
public enum ProcessMemory {
    /// Resident set now (VmRSS).
    public static var residentBytes: Int? { status("VmRSS") }
    /// Peak resident set so far (VmHWM).
    public static var peakResidentBytes: Int? { status("VmHWM") }

    static func status(_ key: String) -> Int? { kilobytes(key, in: "/proc/self/status") }
    static func meminfo(_ key: String) -> Int? { kilobytes(key, in: "/proc/meminfo") }

    private static func kilobytes(_ key: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return nil
    }
}
