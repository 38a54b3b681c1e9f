import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A `multipart/form-data` body (RFC 7578), as OpenAI's `POST /v1/images/edits` takes it: text
/// fields and file parts. Parsing is bounded: the body was already bounded by `--max-body`;
/// here the number of parts and each part's header bytes are too, and every malformed body is a
/// 400 in OpenAI's error shape naming the part (`param`) when one is known.
struct MultipartForm {
    struct Part {
        /// The `name` of its `Content-Disposition: form-data`.
        let name: String
        /// Present for file parts (may be empty).
        let filename: String?
        let contentType: String?
        let body: Data
    }

    struct Limits {
        /// Parts in one body (OpenAI's edits take a dozen fields and up to 16 images).
        var maxParts = 64
        /// Bytes of one part's header block (its lines up to the blank line).
        var maxHeaderBytes = 8 << 10
    }

    let parts: [Part]

    /// The boundary of a `Content-Type: multipart/form-data; boundary=…` header, or a 400.
    static func boundary(contentType: String?) throws -> String {
        guard let contentType else {
            throw invalid("no Content-Type: expected multipart/form-data with a boundary")
        }
        let pieces = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard pieces.first?.lowercased() == "multipart/form-data" else {
            throw invalid("Content-Type \"\(pieces.first ?? "")\": expected multipart/form-data (file parts `image` and `mask`, text fields)")
        }
        for piece in pieces.dropFirst() {
            guard let eq = piece.firstIndex(of: "="), piece[..<eq].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else { continue }
            var value = piece[piece.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            // RFC 2046: 1 to 70 characters.
            guard (1...70).contains(value.utf8.count), !value.contains("\r"), !value.contains("\n") else {
                throw invalid("the multipart boundary must be 1 to 70 characters on one line")
            }
            return value
        }
        throw invalid("Content-Type multipart/form-data without a boundary parameter")
    }

    init(body: Data, boundary: String, limits: Limits = Limits()) throws {
        let delimiter = Array("--\(boundary)".utf8)
        let crlf: [UInt8] = [13, 10]
        var parts: [Part] = []
        try body.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            let n = bytes.count
            func find(_ pattern: [UInt8], from start: Int, limit: Int? = nil) -> Int? {
                let end = min(n, limit.map { start + $0 } ?? n)
                guard start <= end, end - start >= pattern.count, let base = bytes.baseAddress else { return nil }
                // memchr to each candidate first byte, memcmp for the rest (Glibc's memmem is a
                // GNU extension Swift does not import).
                return pattern.withUnsafeBytes { p -> Int? in
                    var i = start
                    let last = end - pattern.count
                    while i <= last {
                        guard let hit = memchr(base + i, Int32(pattern[0]), last - i + 1) else { return nil }
                        let j = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                        if memcmp(base + j, p.baseAddress!, pattern.count) == 0 { return j }
                        i = j + 1
                    }
                    return nil
                }
            }
            func startsWith(_ pattern: [UInt8], at i: Int) -> Bool {
                i + pattern.count <= n && (0..<pattern.count).allSatisfy { bytes[i + $0] == pattern[$0] }
            }
            // The first delimiter starts the body or a line (anything before it is preamble).
            var at: Int
            if startsWith(delimiter, at: 0) {
                at = 0
            } else if let i = find(crlf + delimiter, from: 0) {
                at = i + 2
            } else {
                throw Self.invalid("the body has no part: the boundary \"\(boundary)\" never occurs")
            }
            while true {
                at += delimiter.count
                if startsWith([45, 45], at: at) { break }  // "--": the closing delimiter
                // Transport padding (spaces, tabs) may follow a delimiter before its line ends.
                while at < n, bytes[at] == 32 || bytes[at] == 9 { at += 1 }
                guard startsWith(crlf, at: at) else {
                    throw Self.invalid(at >= n ? "the body ends without the closing boundary \"--\(boundary)--\""
                                       : "a boundary line is followed by other text")
                }
                at += 2
                guard parts.count < limits.maxParts else {
                    throw Self.invalid("more than \(limits.maxParts) parts in the form")
                }
                let headerEnd: Int
                if startsWith(crlf, at: at) {
                    headerEnd = at  // no headers at all
                } else if let e = find(crlf + crlf, from: at, limit: limits.maxHeaderBytes + 4) {
                    headerEnd = e + 2
                } else {
                    throw Self.invalid(n - at > limits.maxHeaderBytes
                                       ? "a part's headers are longer than \(limits.maxHeaderBytes) bytes"
                                       : "the body ends inside a part's headers")
                }
                let header = String(decoding: UnsafeBufferPointer(rebasing: bytes[at..<headerEnd]), as: UTF8.self)
                let contentStart = headerEnd + 2
                guard let contentEnd = find(crlf + delimiter, from: contentStart) else {
                    throw Self.invalid("the body ends inside a part: no boundary \"--\(boundary)\" after it")
                }
                parts.append(try Self.part(header: header, body: Data(UnsafeBufferPointer(rebasing: bytes[contentStart..<contentEnd]))))
                at = contentEnd + 2
            }
        }
        self.parts = parts
    }

    private static func part(header: String, body: Data) throws -> Part {
        var disposition: String?
        var contentType: String?
        for line in header.components(separatedBy: "\r\n") where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else {
                throw invalid("a part's header line has no colon: \"\(line.prefix(80))\"")
            }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-disposition" { disposition = value }
            if name == "content-type" { contentType = value }
        }
        guard let disposition else { throw invalid("a part has no Content-Disposition header") }
        let parameters = dispositionParameters(disposition)
        guard parameters.type == "form-data", let name = parameters.values["name"], !name.isEmpty else {
            throw invalid("a part's Content-Disposition is not form-data with a name: \"\(disposition.prefix(120))\"")
        }
        return Part(name: name, filename: parameters.values["filename"], contentType: contentType, body: body)
    }

    /// `form-data; name="image"; filename="a.png"` → ("form-data", [name: image, filename: a.png]);
    /// quoted values may hold `;` and backslash-escaped quotes.
    static func dispositionParameters(_ value: String) -> (type: String, values: [String: String]) {
        var chars = Substring(value)
        func skipSpaces() { while let c = chars.first, c == " " || c == "\t" { chars.removeFirst() } }
        var type = ""
        while let c = chars.first, c != ";" { type.append(c); chars.removeFirst() }
        var values: [String: String] = [:]
        while !chars.isEmpty {
            chars.removeFirst()  // ";"
            skipSpaces()
            var key = ""
            while let c = chars.first, c != "=", c != ";" { key.append(c); chars.removeFirst() }
            var v = ""
            if chars.first == "=" {
                chars.removeFirst()
                skipSpaces()
                if chars.first == "\"" {
                    chars.removeFirst()
                    while let c = chars.first {
                        chars.removeFirst()
                        if c == "\"" { break }
                        if c == "\\", let next = chars.first { v.append(next); chars.removeFirst(); continue }
                        v.append(c)
                    }
                    while let c = chars.first, c != ";" { chars.removeFirst() }
                } else {
                    while let c = chars.first, c != ";" { v.append(c); chars.removeFirst() }
                    v = v.trimmingCharacters(in: .whitespaces)
                }
            }
            let k = key.trimmingCharacters(in: .whitespaces).lowercased()
            if !k.isEmpty, values[k] == nil { values[k] = v }
        }
        return (type.trimmingCharacters(in: .whitespaces).lowercased(), values)
    }

    private static func invalid(_ message: String, param: String? = nil) -> APIError {
        APIError(status: .badRequest, message: "invalid multipart/form-data body: \(message)", param: param, code: "invalid_multipart")
    }

    /// The parts named `name` (OpenAI's lists are sent as repeated `name` or `name[]` parts).
    func parts(named names: String...) -> [Part] { parts.filter { names.contains($0.name) } }

    /// The text fields (parts without a filename, but for the `files` names) as strings; a field
    /// given twice is a 400.
    func textFields(excluding files: Set<String>) throws -> [String: String] {
        var fields: [String: String] = [:]
        for p in parts where p.filename == nil && !files.contains(p.name) {
            guard fields[p.name] == nil else {
                throw APIError(status: .badRequest, message: "\(p.name): given more than once", param: p.name)
            }
            guard let s = String(data: p.body, encoding: .utf8) else {
                throw APIError(status: .badRequest, message: "\(p.name): expected UTF-8 text", param: p.name)
            }
            fields[p.name] = s
        }
        return fields
    }
}
