import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors file, memory-mapped: tensors are views of the mapping (nothing is copied), and
/// the header is checked in full when the file is opened: its length, its JSON, every entry's
/// dtype and shape, and that every byte range matches its shape, lies inside the file and overlaps
/// no other.
public final class SafetensorsFile: @unchecked Sendable {
    /// An entry of the header.
    public struct Entry: Sendable, Hashable {
        /// The dtype as the file spells it ("F16", "BF16", "I64", …).
        public let fileDType: String
        /// The runtime type it is read as, or nil for types Lumen does not compute with (F64, I8,
        /// BOOL, …). Float8 entries are read as f16, which holds every float8 value exactly.
        public let dtype: DType?
        public let shape: Shape
        /// Byte range relative to the start of the data section.
        public let begin: Int
        public let end: Int
    }

    public let path: String
    public let entries: [String: Entry]
    /// The free-form `__metadata__` map.
    public let metadata: [String: String]
    /// Tensor names in file order.
    public var names: [String] { entries.keys.sorted { entries[$0]!.begin < entries[$1]!.begin } }

    private let mapping: Mapping
    private let dataOffset: Int

    /// Element sizes of the dtypes the format defines.
    static let elementSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
        "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    ]
    static let runtimeTypes: [String: DType] = ["F32": .f32, "F16": .f16, "BF16": .bf16, "I32": .i32, "I64": .i64,
                                                "F8_E4M3": .f16, "F8_E5M2": .f16]

    /// The largest header read: the safetensors library's own limit (100 MB).
    public static let maxHeaderBytes = 100_000_000
    /// The most tensors a file may hold: 40 times an SDXL single-file checkpoint with its EMA
    /// copy (about 2,500 tensors), and more than any published safetensors shard, while the
    /// parsed header of that many entries stays within a few hundred megabytes.
    public static let maxEntries = 100_000
    /// A header is an object of objects holding arrays: three levels. A little slack is allowed;
    /// deeper nesting is refused before the JSON parser recurses into it.
    static let maxHeaderDepth = 8

    public init(path: String) throws {
        self.path = path
        mapping = try Mapping(path: path)
        let size = mapping.size
        guard size >= 8 else {
            throw ModelFileError.malformed(path: path, detail: "\(size) bytes is shorter than the 8-byte header length")
        }
        let headerLength = mapping.bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw ModelFileError.malformed(
                path: path, detail: "header length \(headerLength) bytes exceeds the limit of \(Self.maxHeaderBytes) bytes (the safetensors library's limit)")
        }
        guard headerLength <= UInt64(size - 8) else {
            throw ModelFileError.malformed(path: path, detail: "header length \(headerLength) exceeds the file's \(size - 8) remaining bytes (truncated file?)")
        }
        guard headerLength >= 2 else {
            throw ModelFileError.malformed(path: path, detail: "header length \(headerLength) is too short for a JSON object")
        }
        dataOffset = 8 + Int(headerLength)
        let dataSize = size - dataOffset
        // Counted before JSONSerialization builds its objects, which take tens of times the
        // header's size: a header of millions of empty entries would otherwise take gigabytes.
        let shape = Self.scanHeader(UnsafeRawBufferPointer(start: mapping.bytes + 8, count: Int(headerLength)))
        guard shape.depth <= Self.maxHeaderDepth else {
            throw ModelFileError.malformed(path: path, detail: "header nests JSON deeper than the \(Self.maxHeaderDepth) levels a safetensors header has")
        }
        guard shape.entries <= Self.maxEntries + 1 else {  // + 1: __metadata__
            throw ModelFileError.malformed(path: path, detail: "header has \(shape.entries) entries, more than the limit of \(Self.maxEntries) tensors")
        }
        let headerData = Data(bytes: mapping.bytes + 8, count: Int(headerLength))
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw ModelFileError.malformed(path: path, detail: "header is not valid JSON")
        }
        guard let object = json as? [String: Any] else {
            throw ModelFileError.malformed(path: path, detail: "header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw ModelFileError.malformed(path: path, detail: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw ModelFileError.malformed(path: path, detail: "__metadata__ value for '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries[name] = try Self.parseEntry(name, value, path: path, dataSize: dataSize)
        }
        // Byte ranges may not overlap.
        let sorted = entries.sorted { ($0.value.begin, $0.value.end) < ($1.value.begin, $1.value.end) }
        for i in sorted.indices.dropFirst() where sorted[i].value.begin < sorted[i - 1].value.end {
            throw ModelFileError.malformed(
                path: path, detail: "tensors '\(sorted[i - 1].key)' and '\(sorted[i].key)' overlap in the data section")
        }
        self.entries = entries
        self.metadata = metadata
    }

    private static func parseEntry(_ name: String, _ value: Any, path: String, dataSize: Int) throws -> Entry {
        guard let e = value as? [String: Any] else {
            throw ModelFileError.malformed(path: path, detail: "entry '\(name)' is not an object")
        }
        guard let dt = e["dtype"] as? String else {
            throw ModelFileError.malformed(path: path, detail: "entry '\(name)' has no dtype string")
        }
        guard let elementSize = elementSizes[dt] else {
            throw ModelFileError.unsupportedDType(path: path, tensor: name, dtype: dt, expected: "one of \(elementSizes.keys.sorted().joined(separator: ", "))")
        }
        guard let rawShape = e["shape"] as? [Any], let offsets = e["data_offsets"] as? [Any], offsets.count == 2 else {
            throw ModelFileError.malformed(path: path, detail: "entry '\(name)' needs a shape array and two data_offsets")
        }
        var dims: [Int] = []
        var count = 1
        for d in rawShape {
            guard let n = exactInt(d), n >= 0 else {
                throw ModelFileError.malformed(path: path, detail: "entry '\(name)' has an invalid dimension \(d)")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: n)
            guard !overflow else {
                throw ModelFileError.malformed(path: path, detail: "entry '\(name)' has a shape too large: \(rawShape)")
            }
            dims.append(n)
            count = product
        }
        guard let begin = exactInt(offsets[0]), let end = exactInt(offsets[1]), begin >= 0, begin <= end else {
            throw ModelFileError.malformed(path: path, detail: "entry '\(name)' has invalid data_offsets \(offsets)")
        }
        guard end <= dataSize else {
            throw ModelFileError.malformed(path: path, detail: "entry '\(name)' ends at byte \(end) of a \(dataSize)-byte data section (truncated file?)")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
        guard !overflow, bytes == end - begin else {
            throw ModelFileError.malformed(
                path: path, detail: "entry '\(name)': \(dt)\(dims) needs \(count) × \(elementSize) bytes, data_offsets give \(end - begin)")
        }
        return Entry(fileDType: dt, dtype: runtimeTypes[dt], shape: Shape(dims), begin: begin, end: end)
    }

    /// The number of members of the top-level JSON object (its colons outside strings at depth 1)
    /// and the deepest nesting, in one pass without allocating.
    static func scanHeader(_ bytes: UnsafeRawBufferPointer) -> (entries: Int, depth: Int) {
        var depth = 0, deepest = 0, entries = 0
        var inString = false, escaped = false
        for b in bytes {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                deepest = max(deepest, depth)
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: ":") where depth == 1: entries += 1
            default: break
            }
        }
        return (entries, deepest)
    }

    /// JSON numbers arrive as NSNumber; accept only exact non-fractional integers.
    private static func exactInt(_ v: Any) -> Int? {
        if let n = v as? Int { return n }
        if let d = v as? Double, d == d.rounded(), abs(d) < 9e15 { return Int(d) }
        return nil
    }

    /// The tensor named `name`, as a view of the mapping (a copy when its bytes are not aligned
    /// to its element size; float8 tensors as f16 copies, each value exact, as torch widens them).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw ModelFileError.missingTensor(path: path, tensor: name) }
        guard let dtype = e.dtype else {
            throw ModelFileError.unsupportedDType(path: path, tensor: name, dtype: e.fileDType, expected: "F32, F16, BF16, F8_E4M3, F8_E5M2, I32 or I64")
        }
        let start = mapping.bytes + dataOffset + e.begin
        if let table = Float8.halfTable(e.fileDType) {
            var out = try Tensor(zeros: e.shape, dtype: .f16)
            let count = e.end - e.begin
            try out.withUnsafeMutableBytes { raw in
                let dst = raw.bindMemory(to: UInt16.self)
                for i in 0..<count { dst[i] = table[Int(start.load(fromByteOffset: i, as: UInt8.self))] }
            }
            return out
        }
        let storage = TensorStorage(borrowing: start, byteCount: e.end - e.begin, owner: mapping, readOnly: true)
        let view = try Tensor(shape: e.shape, dtype: dtype, storage: storage)
        if Int(bitPattern: start) % dtype.size == 0 { return view }
        var copy = try Tensor(zeros: e.shape, dtype: dtype)
        try copy.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: start, byteCount: e.end - e.begin) }
        return copy
    }

    /// The raw bytes of an entry of any dtype (for types Lumen does not compute with, such as U8).
    public func rawBytes(_ name: String) throws -> [UInt8] {
        guard let e = entries[name] else { throw ModelFileError.missingTensor(path: path, tensor: name) }
        return Array(UnsafeRawBufferPointer(start: mapping.bytes + dataOffset + e.begin, count: e.end - e.begin))
    }

    /// The tensor, checked against the shape a model expects.
    public func tensor(_ name: String, shape: Shape) throws -> Tensor {
        let t = try tensor(name)
        guard t.shape == shape else {
            throw ModelFileError.wrongShape(path: path, tensor: name, expected: shape, got: t.shape)
        }
        return t
    }

    /// Drops the file's pages from this process's resident memory (they stay in the page cache
    /// and fault back in if a tensor is read again): a one-shot pipeline calls it when a network
    /// is done, so the UNet's weights are not resident while the VAE decodes.
    public func dropResidentPages() {
        mapping.dropResidentPages()
    }

    /// A read-only private mapping of a whole file.
    final class Mapping: @unchecked Sendable {
        let bytes: UnsafeMutableRawPointer
        let size: Int

        init(path: String) throws {
            let fd: Int32
            do { fd = try RegularFile.openForReading(path) } catch let error as FileError {
                throw ModelFileError.cannotOpen(path: path, reason: error.reason)
            }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else {
                throw ModelFileError.cannotOpen(path: path, reason: String(cString: strerror(errno)))
            }
            size = Int(st.st_size)
            if size == 0 {
                bytes = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
                return
            }
            let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else {
                throw ModelFileError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
            }
            bytes = p
        }

        func dropResidentPages() {
            if size > 0 { _ = madvise(bytes, size, MADV_DONTNEED) }
        }

        deinit {
            if size == 0 { bytes.deallocate() } else { munmap(bytes, size) }
        }
    }
}
